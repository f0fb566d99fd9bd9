//! Containing a person who signs in through IAM Identity Center, against moto's sso-admin and
//! identitystore: the deny keyed on the identity store user id in every permission set assigned
//! to the user or their groups, idempotence, the check after containment, the release, and a
//! forged row.

use aws_sdk_identitystore::types::{MemberId, Name};
use aws_sdk_ssoadmin::types::{PrincipalType, TargetType};
use quell_aws::identity_center::{self as idc, STATEMENT_SID};
use quell_core::plan::ActionKind;
use quell_core::report::Status;
use quell_core::{Context, plan_input};
use quell_tests::{MOTO_ACCOUNT, NOW, enforce, event, unique};
use serde_json::{Value, json};

struct World {
    sso: aws_sdk_ssoadmin::Client,
    instance: String,
    user: String,
    user_id: String,
    /// Assigned to the user directly; no inline policy before quell's.
    admin: String,
    /// Assigned to the user's group; an inline policy of its own.
    read_only: String,
    read_only_policy: Value,
}

/// A new permission set of the instance; its ARN.
async fn permission_set(sso: &aws_sdk_ssoadmin::Client, instance: &str, prefix: &str) -> String {
    // moto echoes a missing SessionDuration as the number 3600; AWS, and the SDK, speak ISO 8601.
    sso.create_permission_set()
        .instance_arn(instance)
        .name(unique(prefix))
        .session_duration("PT1H")
        .send()
        .await
        .unwrap()
        .permission_set()
        .unwrap()
        .permission_set_arn()
        .unwrap()
        .to_string()
}

async fn world() -> World {
    let cfg = quell_tests::sdk().await;
    let sso = aws_sdk_ssoadmin::Client::new(&cfg);
    let store = aws_sdk_identitystore::Client::new(&cfg);
    let inst = sso.list_instances().send().await.unwrap();
    let inst = &inst.instances()[0];
    let instance = inst.instance_arn().unwrap().to_string();
    let identity_store = inst.identity_store_id().unwrap().to_string();
    let user = format!("{}@example.com", unique("priya"));
    let user_id = store
        .create_user()
        .identity_store_id(&identity_store)
        .user_name(&user)
        .display_name("Priya Nair")
        .name(
            Name::builder()
                .given_name("Priya")
                .family_name("Nair")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .user_id()
        .to_string();
    let group = store
        .create_group()
        .identity_store_id(&identity_store)
        .display_name(unique("platform"))
        .send()
        .await
        .unwrap()
        .group_id()
        .to_string();
    store
        .create_group_membership()
        .identity_store_id(&identity_store)
        .group_id(&group)
        .member_id(MemberId::UserId(user_id.clone()))
        .send()
        .await
        .unwrap();
    let admin = permission_set(&sso, &instance, "Admin").await;
    let read_only = permission_set(&sso, &instance, "ReadOnly").await;
    let read_only_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "NoBilling", "Effect": "Deny", "Action": "aws-portal:*", "Resource": "*"}]});
    // Written by a human, with their own layout: a release must give back these very bytes.
    sso.put_inline_policy_to_permission_set()
        .instance_arn(&instance)
        .permission_set_arn(&read_only)
        .inline_policy(serde_json::to_string_pretty(&read_only_policy).unwrap())
        .send()
        .await
        .unwrap();
    for (set, kind, principal, account) in [
        (&admin, PrincipalType::User, &user_id, MOTO_ACCOUNT),
        (&read_only, PrincipalType::Group, &group, "444455556666"),
    ] {
        sso.create_account_assignment()
            .instance_arn(&instance)
            .permission_set_arn(set)
            .principal_type(kind)
            .principal_id(principal)
            .target_type(TargetType::AwsAccount)
            .target_id(account)
            .send()
            .await
            .unwrap();
    }
    World {
        sso,
        instance,
        user,
        user_id,
        admin,
        read_only,
        read_only_policy,
    }
}

impl World {
    async fn inline_text(&self, set: &str) -> String {
        self.sso
            .get_inline_policy_for_permission_set()
            .instance_arn(&self.instance)
            .permission_set_arn(set)
            .send()
            .await
            .unwrap()
            .inline_policy()
            .unwrap_or_default()
            .to_string()
    }

    async fn inline(&self, set: &str) -> Value {
        let o = self
            .sso
            .get_inline_policy_for_permission_set()
            .instance_arn(&self.instance)
            .permission_set_arn(set)
            .send()
            .await
            .unwrap();
        match o.inline_policy() {
            Some(t) if !t.trim().is_empty() => serde_json::from_str(t).unwrap(),
            _ => Value::Null,
        }
    }

    /// GuardDuty reporting this person's permission-set session as compromised.
    fn finding(&self) -> Value {
        let mut v: Value =
            serde_json::from_slice(&event("guardduty/identity-center-session.json")).unwrap();
        let d = &mut v["detail"]["resource"]["accessKeyDetails"];
        d["principalId"] = json!(format!("AROAZ4XQ7PLMSSOADMIN1:{}", self.user));
        v["detail"]["accountId"] = json!(MOTO_ACCOUNT);
        v["detail"]["id"] = json!(unique("finding"));
        v
    }
}

/// Enforce, with Identity Center administered in moto's account.
fn policy() -> quell_core::Policy {
    let mut p = enforce();
    p.aws.identity_center.account = Some(MOTO_ACCOUNT.into());
    p
}

async fn contain(v: &Value) -> (quell_core::report::Report, Vec<quell_ledger::Entry>) {
    use quell_ledger::Ledger;
    let policy = policy();
    let plan = plan_input(v.to_string().as_bytes(), &policy, &Context::default()).unwrap();
    let ledger = quell_ledger::memory::MemoryLedger::default();
    let gated = quell_ledger::gate(&ledger, plan, &policy, NOW)
        .await
        .unwrap();
    let exec = quell_tests::aws_executor(policy.clone(), NOW).await;
    let report = exec.execute(&gated.plan).await;
    quell_ledger::record(&ledger, &gated.claims, &report, NOW)
        .await
        .unwrap();
    (report, ledger.list(None).await.unwrap())
}

fn outcome(r: &quell_core::report::Report, kind: ActionKind) -> &quell_core::report::Outcome {
    &r.results
        .iter()
        .find(|x| x.action.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {:?}", r.results))
        .outcome
}

#[tokio::test]
async fn a_compromised_identity_center_session_denies_the_person_in_every_permission_set() {
    let w = world().await;
    let v = w.finding();
    let (report, entries) = contain(&v).await;
    let deny = outcome(&report, ActionKind::DenyIdentityCenterUser);
    assert_eq!(deny.status, Status::Applied, "{deny:?}");
    // Portal and CLI sessions: no API ends them, and the plan says so.
    assert!(report.results.iter().any(
        |r| r.action.kind == ActionKind::Notify && r.action.reason.contains("Active sessions")
    ));
    // Both permission sets (the user's own, and the group's) deny this user id, and only it;
    // the read-only set keeps its own statement.
    for set in [&w.admin, &w.read_only] {
        let doc = w.inline(set).await;
        assert_eq!(
            idc::denied_users(&doc),
            std::slice::from_ref(&w.user_id),
            "{doc}"
        );
    }
    let ro = w.inline(&w.read_only).await;
    assert_eq!(ro["Statement"][0], w.read_only_policy["Statement"][0]);
    assert_eq!(ro["Statement"][1]["Sid"], STATEMENT_SID);
    assert_eq!(
        ro["Statement"][1]["Condition"]["StringEquals"]["identitystore:UserId"],
        json!([w.user_id])
    );

    // The same finding again changes nothing.
    let (again, _) = contain(&v).await;
    assert_eq!(
        outcome(&again, ActionKind::DenyIdentityCenterUser).status,
        Status::AlreadyInState
    );

    // Someone removes the deny from one permission set: the check finds it and denies again.
    let exec = quell_tests::aws_executor(policy(), NOW).await;
    let protect = quell_aws::release::Protection {
        policy: exec.policy(),
        ctx: exec.ctx(),
    };
    w.sso
        .delete_inline_policy_from_permission_set()
        .instance_arn(&w.instance)
        .permission_set_arn(&w.admin)
        .send()
        .await
        .unwrap();
    let steps = quell_aws::release::verify(exec.source(), &entries, true, &protect).await;
    assert!(
        steps.iter().any(|s| s.what.contains(&w.admin)
            && s.outcome.status == Status::Applied
            && s.outcome.detail.contains("denied again")),
        "{steps:?}"
    );
    assert_eq!(
        idc::denied_users(&w.inline(&w.admin).await),
        std::slice::from_ref(&w.user_id)
    );

    // A forged row naming another person's id lifts nothing.
    let mut forged = entries[0].clone();
    for r in &mut forged.actions {
        if let Some(i) = &mut r.inverse {
            let mut p = i.params();
            p["UserId"] = json!("00000000-0000-4000-8000-00000000beef");
            *i = quell_tests::inverse(&i.call(), p);
        }
    }
    let refused = quell_aws::release::release(exec.source(), &forged, false).await;
    assert!(
        refused
            .iter()
            .any(|s| s.outcome.error_code.as_deref() == Some("RefusedForgedEntry")),
        "{refused:?}"
    );
    assert_eq!(
        idc::denied_users(&w.inline(&w.read_only).await),
        std::slice::from_ref(&w.user_id)
    );

    // The release takes the user out: the read-only set is back as it was, and the admin set,
    // which had no inline policy, has none again.
    let steps = quell_aws::release::release(exec.source(), &entries[0], false).await;
    assert!(
        steps.iter().any(|s| s.outcome.status == Status::Applied),
        "{steps:?}"
    );
    assert_eq!(
        w.inline_text(&w.read_only).await,
        serde_json::to_string_pretty(&w.read_only_policy).unwrap(),
        "byte for byte"
    );
    assert_eq!(w.inline(&w.admin).await, Value::Null);
}

#[tokio::test]
async fn two_people_contained_at_once_share_the_statement_and_a_third_is_untouched() {
    let w = world().await;
    let cfg = quell_tests::sdk().await;
    let store = aws_sdk_identitystore::Client::new(&cfg);
    let identity_store = w.sso.list_instances().send().await.unwrap().instances()[0]
        .identity_store_id()
        .unwrap()
        .to_string();
    // Chen holds the admin permission set too; Bob holds one of his own.
    let person = |name: String| {
        let store = store.clone();
        let identity_store = identity_store.clone();
        async move {
            store
                .create_user()
                .identity_store_id(&identity_store)
                .user_name(&name)
                .display_name(&name)
                .name(Name::builder().given_name("A").family_name("B").build())
                .send()
                .await
                .unwrap()
                .user_id()
                .to_string()
        }
    };
    let chen = format!("{}@example.com", unique("chen"));
    let chen_id = person(chen.clone()).await;
    let bob = format!("{}@example.com", unique("bob"));
    let bob_id = person(bob.clone()).await;
    let bobs_set = permission_set(&w.sso, &w.instance, "BobOnly").await;
    for (set, id) in [(&w.admin, &chen_id), (&bobs_set, &bob_id)] {
        w.sso
            .create_account_assignment()
            .instance_arn(&w.instance)
            .permission_set_arn(set)
            .principal_type(PrincipalType::User)
            .principal_id(id)
            .target_type(TargetType::AwsAccount)
            .target_id(MOTO_ACCOUNT)
            .send()
            .await
            .unwrap();
    }
    let mut second = w.finding();
    second["detail"]["resource"]["accessKeyDetails"]["principalId"] =
        json!(format!("AROAZ4XQ7PLMSSOADMIN1:{chen}"));
    second["detail"]["id"] = json!(unique("finding"));
    let first = w.finding();
    let (a, b) = tokio::join!(contain(&first), contain(&second));
    for (r, _) in [&a, &b] {
        assert_eq!(
            outcome(r, ActionKind::DenyIdentityCenterUser).status,
            Status::Applied
        );
    }
    let mut both = vec![w.user_id.clone(), chen_id.clone()];
    both.sort();
    assert_eq!(idc::denied_users(&w.inline(&w.admin).await), both);
    assert_eq!(
        w.inline(&bobs_set).await,
        Value::Null,
        "bob's permission set is untouched"
    );
}

#[tokio::test]
async fn a_break_glass_identity_center_user_is_never_denied_and_pages_a_human() {
    let w = world().await;
    let mut policy = policy();
    policy
        .protected
        .push(quell_core::policy::Pattern::new(&w.user).unwrap());
    let plan = plan_input(
        w.finding().to_string().as_bytes(),
        &policy,
        &Context::default(),
    )
    .unwrap();
    assert!(
        plan.actions
            .iter()
            .all(|a| a.kind != ActionKind::DenyIdentityCenterUser),
        "{:?}",
        plan.actions
    );
    assert!(plan.actions.iter().any(|a| a.kind == ActionKind::Notify));
    let exec = quell_tests::aws_executor(policy, NOW).await;
    exec.execute(&plan).await;
    assert_eq!(w.inline(&w.admin).await, Value::Null);
}

#[test]
fn a_runbook_names_an_identity_center_user_by_user_name() {
    let req = quell_tests::event_json("runbook/contain-identity-center-user.json");
    let plan = plan_input(req.to_string().as_bytes(), &policy(), &Context::default()).unwrap();
    let kinds: Vec<ActionKind> = plan.actions.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [ActionKind::DenyIdentityCenterUser, ActionKind::Notify]
    );
    assert_eq!(
        quell_ledger::principal_key(&plan.findings[0].subjects[0], "aws").as_deref(),
        Some("aws:identity-center:user/marco.rossi@example.com")
    );
    // A disable_key runbook has nothing to disable on a person: a human hears it.
    let mut key = req.clone();
    key["runbook"] = json!("disable_key");
    let plan = plan_input(key.to_string().as_bytes(), &policy(), &Context::default()).unwrap();
    assert!(plan.actions.iter().all(|a| a.kind == ActionKind::Notify));
}

#[tokio::test]
async fn a_person_named_by_identity_store_user_id_is_keyed_and_denied_by_user_name() {
    use quell_pipeline::Executor;
    let w = world().await;
    let req = json!({"runbook": "contain", "principal": w.user_id, "principal_type": "identity_center_user",
        "account": MOTO_ACCOUNT, "reason": "SEC-4432: by id", "id": unique("f")});
    let plan = plan_input(req.to_string().as_bytes(), &policy(), &Context::default()).unwrap();
    let exec = quell_tests::aws_executor(policy(), NOW).await;
    let plan = exec.resolve(plan).await;
    assert_eq!(
        quell_ledger::principal_key(&plan.findings[0].subjects[0], "aws").as_deref(),
        Some(format!("aws:identity-center:user/{}", w.user).as_str()),
        "the user name, read before the claim"
    );
    let report = exec.execute(&plan).await;
    assert_eq!(
        outcome(&report, ActionKind::DenyIdentityCenterUser).status,
        Status::Applied
    );
    assert_eq!(
        idc::denied_users(&w.inline(&w.admin).await),
        std::slice::from_ref(&w.user_id)
    );
}
