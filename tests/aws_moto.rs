//! The AWS executor against a real AWS API emulator (moto_server): seed IAM state, run a plan,
//! assert what moto holds afterwards, run it again and assert nothing changes.

use std::sync::Arc;

use aws_sdk_iam::types::StatusType;
use quell_aws::{AwsExecutor, Fixed, docs};
use quell_core::clock::FixedClock;
use quell_core::policy::{Mode, SessionScope};
use quell_core::report::{Report, Status};
use quell_core::{ActionKind, Context, Plan, Policy, plan_input};
use quell_tests::{MOTO_ACCOUNT, event, unique};
use quell_tests::{NOW, enforce, iam, sdk};
use serde_json::{Value, json};
use time::OffsetDateTime;

async fn executor(policy: Policy, now: OffsetDateTime) -> AwsExecutor<Fixed> {
    quell_tests::aws_executor(policy, now).await
}

fn plan(input: &Value, policy: &Policy) -> Plan {
    plan_input(input.to_string().as_bytes(), policy, &Context::default()).unwrap()
}

fn status_of(r: &Report, kind: ActionKind) -> Vec<Status> {
    r.results
        .iter()
        .filter(|x| x.action.kind == kind)
        .map(|x| x.outcome.status)
        .collect()
}

/// Runs twice; the second run must change nothing.
async fn run_twice(exec: &AwsExecutor<Fixed>, plan: &Plan) -> Report {
    let first = exec.execute(plan).await;
    let second = exec.execute(plan).await;
    for r in &second.results {
        if r.action.kind == ActionKind::Notify {
            continue;
        }
        assert!(
            matches!(r.outcome.status, Status::AlreadyInState | Status::Skipped),
            "second run changed {} {}: {:?}",
            r.action.kind.as_str(),
            r.action.target.label(),
            r.outcome
        );
    }
    first
}

async fn new_user(iam: &aws_sdk_iam::Client, prefix: &str) -> (String, Vec<String>) {
    let user = unique(prefix);
    iam.create_user().user_name(&user).send().await.unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let k = iam
            .create_access_key()
            .user_name(&user)
            .send()
            .await
            .unwrap();
        keys.push(k.access_key().unwrap().access_key_id().to_string());
    }
    (user, keys)
}

async fn key_status(iam: &aws_sdk_iam::Client, user: &str) -> Vec<(String, StatusType)> {
    let out = iam.list_access_keys().user_name(user).send().await.unwrap();
    out.access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap().to_string(),
                k.status().unwrap().clone(),
            )
        })
        .collect()
}

async fn user_policy(iam: &aws_sdk_iam::Client, user: &str, name: &str) -> Option<Value> {
    let out = iam
        .get_user_policy()
        .user_name(user)
        .policy_name(name)
        .send()
        .await
        .ok()?;
    docs::parse(out.policy_document())
}

async fn role_policy(iam: &aws_sdk_iam::Client, role: &str, name: &str) -> Option<Value> {
    let out = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .ok()?;
    docs::parse(out.policy_document())
}

/// The managed policies attached to a user or role.
async fn attached(
    iam: &aws_sdk_iam::Client,
    user: Option<&str>,
    role: Option<&str>,
) -> Vec<String> {
    let arns = match (user, role) {
        (Some(u), _) => iam
            .list_attached_user_policies()
            .user_name(u)
            .send()
            .await
            .unwrap()
            .attached_policies()
            .to_vec(),
        (None, Some(r)) => iam
            .list_attached_role_policies()
            .role_name(r)
            .send()
            .await
            .unwrap()
            .attached_policies()
            .to_vec(),
        _ => vec![],
    };
    arns.iter()
        .filter_map(|p| p.policy_arn().map(str::to_string))
        .collect()
}

const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

async fn new_role(iam: &aws_sdk_iam::Client, name: &str, path: &str) -> String {
    let trust = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]});
    let out = iam
        .create_role()
        .role_name(name)
        .path(path)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    out.role().unwrap().role_id().to_string()
}

fn tor_event(user: &str, key: &str) -> Value {
    let mut v: Value =
        serde_json::from_slice(&event("guardduty/iamuser-tor-caller-akia.json")).unwrap();
    let d = &mut v["detail"]["resource"]["accessKeyDetails"];
    d["userName"] = json!(user);
    d["accessKeyId"] = json!(key);
    v["detail"]["accountId"] = json!(MOTO_ACCOUNT);
    v["detail"]["id"] = json!(unique("finding"));
    v
}

#[tokio::test]
async fn compromised_key_is_deactivated_exactly_and_sessions_revoked_and_user_tagged() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "tor").await;
    let input = tor_event(&user, &keys[0]);
    let policy = enforce();
    let p = plan(&input, &policy);
    let exec = executor(policy, NOW).await;
    let report = run_twice(&exec, &p).await;

    assert_eq!(
        status_of(&report, ActionKind::DeactivateAccessKey),
        [Status::Applied]
    );
    let keys_now = key_status(&iam, &user).await;
    assert!(
        keys_now.contains(&(keys[0].clone(), StatusType::Inactive)),
        "{keys_now:?}"
    );
    assert!(
        keys_now.contains(&(keys[1].clone(), StatusType::Active)),
        "the other key must stay active: {keys_now:?}"
    );

    let doc = user_policy(&iam, &user, docs::USER_REVOKE_POLICY)
        .await
        .expect("revocation policy");
    let st = &doc["Statement"][0];
    assert_eq!(st["Effect"], "Deny");
    assert_eq!(st["Action"], "*");
    assert_eq!(
        st["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-11-23T12:00:00Z"
    );

    let tags = iam.list_user_tags().user_name(&user).send().await.unwrap();
    let tag = tags
        .tags()
        .iter()
        .find(|t| t.key() == docs::QUARANTINE_TAG)
        .expect("tag");
    let finding = input["detail"]["id"].as_str().unwrap();
    assert_eq!(tag.value(), format!("{finding} 2026-11-23T12:00:00Z"));

    let inverse = report.results[0].outcome.inverse.as_ref().expect("inverse");
    assert_eq!(inverse.call(), "iam:UpdateAccessKey");
    assert_eq!(inverse.params()["Status"], "Active");
}

#[tokio::test]
async fn a_key_without_its_user_is_resolved_and_the_owner_is_checked() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "nouser").await;
    let req =
        json!({"runbook":"disable_key","principal":keys[1],"account":MOTO_ACCOUNT,"reason":"test"});
    let policy = enforce();
    let report = run_twice(&executor(policy.clone(), NOW).await, &plan(&req, &policy)).await;
    assert_eq!(
        status_of(&report, ActionKind::DeactivateAccessKey),
        [Status::Applied]
    );
    assert!(
        key_status(&iam, &user)
            .await
            .contains(&(keys[1].clone(), StatusType::Inactive))
    );

    // The same request on a break-glass user's key: resolved, found protected, untouched.
    let (bg, bg_keys) = new_user(&iam, "breakglass-ops").await;
    let req = json!({"runbook":"disable_key","principal":bg_keys[0],"account":MOTO_ACCOUNT,"reason":"test"});
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&plan(&req, &policy))
        .await;
    let r = &report.results[0];
    assert_eq!(r.outcome.status, Status::Skipped);
    assert!(
        r.outcome.detail.contains("protected principal"),
        "{:?}",
        r.outcome
    );
    assert!(
        key_status(&iam, &bg)
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Active)
    );
}

#[tokio::test]
async fn stolen_instance_credentials_revoke_only_that_session() {
    let iam = iam().await;
    let role = unique("web-ec2");
    let role_id = new_role(&iam, &role, "/").await;
    let mut v: Value = serde_json::from_slice(&event(
        "guardduty/instance-credential-exfiltration-outside.json",
    ))
    .unwrap();
    let d = &mut v["detail"]["resource"]["accessKeyDetails"];
    d["userName"] = json!(role);
    d["principalId"] = json!(format!("{role_id}:i-0a7c3e9f1b2d4e6f8"));
    v["detail"]["accountId"] = json!(MOTO_ACCOUNT);
    let policy = enforce();
    let p = plan(&v, &policy);
    let report = run_twice(&executor(policy, NOW).await, &p).await;
    assert_eq!(
        status_of(&report, ActionKind::RevokeRoleSession),
        [Status::Applied]
    );
    let userid = format!("{role_id}:i-0a7c3e9f1b2d4e6f8");
    let doc = role_policy(&iam, &role, docs::SESSION_REVOKE_POLICY)
        .await
        .expect("session policy");
    // Bound to the instance by default: denied unless used from its own VPC and private IP.
    let statements = doc["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{doc}");
    for st in statements {
        let cond = &st["Condition"];
        assert_eq!(cond["StringEquals"]["aws:userid"], userid.as_str());
        assert_eq!(
            cond["DateLessThan"]["aws:TokenIssueTime"],
            "2026-11-23T12:00:00Z"
        );
        assert_eq!(cond["Null"]["ec2:SourceInstanceARN"], "false");
    }
    assert_eq!(
        statements[0]["Condition"]["StringNotEquals"]["aws:ec2InstanceSourceVPC"],
        "${aws:SourceVpc}"
    );
    assert_eq!(
        statements[1]["Condition"]["StringNotEquals"]["aws:ec2InstanceSourcePrivateIPv4"],
        "${aws:VpcSourceIp}"
    );
    assert!(
        role_policy(&iam, &role, docs::ROLE_REVOKE_POLICY)
            .await
            .is_none(),
        "the whole role must not be revoked"
    );
}

#[tokio::test]
async fn role_scope_revokes_every_session_and_a_later_finding_moves_the_cutoff() {
    let iam = iam().await;
    let role = unique("batch");
    let role_id = new_role(&iam, &role, "/").await;
    let mut v: Value = serde_json::from_slice(&event(
        "guardduty/instance-credential-exfiltration-inside.json",
    ))
    .unwrap();
    let d = &mut v["detail"]["resource"]["accessKeyDetails"];
    d["userName"] = json!(role);
    d["principalId"] = json!(format!("{role_id}:i-04f1d2c3b4a596877"));
    v["detail"]["accountId"] = json!(MOTO_ACCOUNT);
    let mut policy = enforce();
    policy.aws.session_scope = SessionScope::Role;
    let report = run_twice(&executor(policy.clone(), NOW).await, &plan(&v, &policy)).await;
    assert_eq!(
        status_of(&report, ActionKind::RevokeRoleSessions),
        [Status::Applied]
    );
    let doc = role_policy(&iam, &role, docs::ROLE_REVOKE_POLICY)
        .await
        .unwrap();
    assert_eq!(
        doc["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-11-23T12:00:00Z"
    );

    // Another finding whose activity predates the cut-off is already covered.
    v["detail"]["id"] = json!(unique("older"));
    v["detail"]["service"]["eventLastSeen"] = json!("2026-11-23T11:40:00.000Z");
    let report = executor(policy.clone(), NOW + time::Duration::hours(1))
        .await
        .execute(&plan(&v, &policy))
        .await;
    assert_eq!(
        status_of(&report, ActionKind::RevokeRoleSessions),
        [Status::AlreadyInState]
    );

    // A new finding of activity after the cut-off extends it; the inverse restores the old one.
    v["detail"]["id"] = json!(unique("later"));
    v["detail"]["service"]["eventLastSeen"] = json!("2026-11-23T12:40:00.000Z");
    let later = NOW + time::Duration::hours(1);
    let report = executor(policy.clone(), later)
        .await
        .execute(&plan(&v, &policy))
        .await;
    let r = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::RevokeRoleSessions)
        .unwrap();
    assert_eq!(r.outcome.status, Status::Applied);
    let inv = r.outcome.inverse.as_ref().unwrap();
    assert_eq!(inv.call(), "iam:PutRolePolicy");
    assert_eq!(
        inv.params()["PolicyDocument"]["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-11-23T12:00:00Z"
    );
    let doc = role_policy(&iam, &role, docs::ROLE_REVOKE_POLICY)
        .await
        .unwrap();
    assert_eq!(
        doc["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-11-23T13:00:00Z"
    );
}

#[tokio::test]
async fn quarantine_attaches_the_deny_all_policy_to_users_and_roles() {
    let iam = iam().await;
    let (user, _) = new_user(&iam, "contractor").await;
    let role = unique("lambda-x");
    new_role(&iam, &role, "/").await;
    let policy = enforce();
    for principal in [
        format!("arn:aws:iam::{MOTO_ACCOUNT}:user/{user}"),
        format!("arn:aws:iam::{MOTO_ACCOUNT}:role/{role}"),
    ] {
        let req = json!({"runbook":"quarantine","principal":principal,"reason":"test"});
        let report = run_twice(&executor(policy.clone(), NOW).await, &plan(&req, &policy)).await;
        assert_eq!(
            report.results[0].outcome.status,
            Status::Applied,
            "{:?}",
            report.results[0]
        );
    }
    assert_eq!(attached(&iam, Some(&user), None).await, [DENY_ALL]);
    assert_eq!(attached(&iam, None, Some(&role)).await, [DENY_ALL]);
}

#[tokio::test]
async fn login_profile_is_deleted_only_when_policy_asks() {
    let iam = iam().await;
    let (user, _) = new_user(&iam, "console").await;
    iam.create_login_profile()
        .user_name(&user)
        .password("Quell-test-Passw0rd!")
        .send()
        .await
        .unwrap();
    let mut v: Value =
        serde_json::from_slice(&event("guardduty/console-login-no-key.json")).unwrap();
    v["detail"]["resource"]["accessKeyDetails"]["userName"] = json!(user);
    v["detail"]["accountId"] = json!(MOTO_ACCOUNT);

    let policy = enforce();
    let p = plan(&v, &policy);
    assert!(
        p.actions
            .iter()
            .all(|a| a.kind != ActionKind::DeleteLoginProfile)
    );

    let mut policy = enforce();
    policy.aws.delete_login_profile = true;
    let report = run_twice(&executor(policy.clone(), NOW).await, &plan(&v, &policy)).await;
    assert_eq!(
        status_of(&report, ActionKind::DeleteLoginProfile),
        [Status::Applied]
    );
    assert!(
        iam.get_login_profile()
            .user_name(&user)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn dormant_keys_are_judged_by_the_injected_clock() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "dormant").await;
    iam.update_access_key()
        .user_name(&user)
        .access_key_id(&keys[1])
        .status(StatusType::Inactive)
        .send()
        .await
        .unwrap();
    let req = json!({"runbook":"disable_dormant_keys","principal":format!("arn:aws:iam::{MOTO_ACCOUNT}:user/{user}"),"reason":"test"});
    let policy = enforce();
    let p = plan(&req, &policy);
    let real_now = OffsetDateTime::now_utc();

    // Ten days after creation: nothing is dormant under the 90-day default.
    let report = executor(policy.clone(), real_now + time::Duration::days(10))
        .await
        .execute(&p)
        .await;
    assert_eq!(
        status_of(&report, ActionKind::DeactivateDormantAccessKeys),
        [Status::AlreadyInState]
    );
    assert!(
        key_status(&iam, &user)
            .await
            .contains(&(keys[0].clone(), StatusType::Active))
    );

    // A hundred days later, the never-used key is dormant; the inactive one is not touched again.
    let report = run_twice(
        &executor(policy.clone(), real_now + time::Duration::days(100)).await,
        &p,
    )
    .await;
    let r = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::DeactivateDormantAccessKeys)
        .unwrap();
    assert_eq!(r.outcome.status, Status::Applied);
    assert!(
        r.outcome.detail.contains(&keys[0]) && !r.outcome.detail.contains(&keys[1]),
        "{}",
        r.outcome.detail
    );
    assert!(
        key_status(&iam, &user)
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Inactive)
    );
}

#[tokio::test]
async fn the_exemption_tag_stops_every_action() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "exempt").await;
    iam.tag_user()
        .user_name(&user)
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("quell:exempt")
                .value("SEC-1 approved")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let policy = enforce();
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&plan(&tor_event(&user, &keys[0]), &policy))
        .await;
    for r in &report.results {
        assert_eq!(r.outcome.status, Status::Skipped, "{r:?}");
        assert!(r.outcome.detail.contains("exemption tag quell:exempt"));
    }
    assert!(
        key_status(&iam, &user)
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Active)
    );
    assert!(
        user_policy(&iam, &user, docs::USER_REVOKE_POLICY)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn service_linked_roles_are_never_modified_even_when_named_otherwise() {
    let iam = iam().await;
    let role = unique("looks-normal");
    new_role(&iam, &role, "/aws-service-role/example.amazonaws.com/").await;
    let req = json!({"runbook":"quarantine","principal":format!("arn:aws:iam::{MOTO_ACCOUNT}:role/aws-service-role/example.amazonaws.com/{role}"),"reason":"test"});
    let policy = enforce();
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&plan(&req, &policy))
        .await;
    assert_eq!(report.results[0].outcome.status, Status::Skipped);
    assert!(report.results[0].outcome.detail.contains("service-linked"));
    assert!(attached(&iam, None, Some(&role)).await.is_empty());
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "dry").await;
    let policy = Policy::default();
    assert_eq!(policy.mode, Mode::DryRun);
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&plan(&tor_event(&user, &keys[0]), &policy))
        .await;
    assert!(
        report
            .results
            .iter()
            .all(|r| r.outcome.status == Status::DryRun)
    );
    assert!(
        key_status(&iam, &user)
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Active)
    );
    assert!(
        user_policy(&iam, &user, docs::USER_REVOKE_POLICY)
            .await
            .is_none()
    );
    assert!(
        iam.list_user_tags()
            .user_name(&user)
            .send()
            .await
            .unwrap()
            .tags()
            .is_empty()
    );
}

#[tokio::test]
async fn one_failure_does_not_hide_the_others() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "partial").await;
    // A Custom Action batch: one finding names a user that does not exist, one a real key.
    let mut v: Value =
        serde_json::from_slice(&event("securityhub/custom-action-batch-two-findings.json"))
            .unwrap();
    let ghost = &mut v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamAccessKey"];
    ghost["PrincipalName"] = json!("no-such-user-quell");
    ghost["AccountId"] = json!(MOTO_ACCOUNT);
    v["detail"]["findings"][0]["AwsAccountId"] = json!(MOTO_ACCOUNT);
    let real = tor_event(&user, &keys[0]);
    let mut policy = enforce();
    policy.aws.update_securityhub = false;
    let mut batch = quell_core::normalize(v.to_string().as_bytes()).unwrap();
    batch.findings.truncate(1);
    batch.findings.extend(
        quell_core::normalize(real.to_string().as_bytes())
            .unwrap()
            .findings,
    );
    let p = quell_core::plan(batch, &policy, &Context::default());
    let report = executor(policy, NOW).await.execute(&p).await;
    let keys_actions: Vec<(&str, Status, Option<&str>)> = report
        .results
        .iter()
        .filter(|r| r.action.kind == ActionKind::DeactivateAccessKey)
        .map(|r| {
            (
                r.action.finding.as_str(),
                r.outcome.status,
                r.outcome.error_code.as_deref(),
            )
        })
        .collect();
    assert_eq!(keys_actions.len(), 2, "{keys_actions:?}");
    assert!(
        keys_actions
            .iter()
            .any(|(_, s, c)| *s == Status::Failed && *c == Some("NoSuchEntity")),
        "{keys_actions:?}"
    );
    assert!(
        keys_actions.iter().any(|(_, s, _)| *s == Status::Applied),
        "{keys_actions:?}"
    );
    assert!(
        key_status(&iam, &user)
            .await
            .contains(&(keys[0].clone(), StatusType::Inactive))
    );
    assert_eq!(
        report.summary.failed,
        report
            .results
            .iter()
            .filter(|r| r.outcome.status == Status::Failed)
            .count()
    );
}

#[tokio::test]
async fn the_audit_event_reaches_the_bus_with_the_report() {
    let cfg = sdk().await;
    let eb = aws_sdk_eventbridge::Client::new(&cfg);
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let (bus, url) = quell_tests::bus_to_queue(
        &cfg,
        r#"{"source": ["quell"], "detail-type": ["Identity Containment Report"]}"#,
    )
    .await;

    let iam = iam().await;
    let (user, keys) = new_user(&iam, "audited").await;
    let policy = enforce();
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&plan(&tor_event(&user, &keys[0]), &policy))
        .await;
    quell_aws::audit::publish(&eb, &bus, &report).await.unwrap();

    let msgs = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(msgs.messages()[0].body().unwrap()).unwrap();
    assert_eq!(body["source"], "quell");
    assert_eq!(body["detail-type"], "Identity Containment Report");
    assert_eq!(body["detail"]["summary"]["applied"], 3);
    assert_eq!(
        body["detail"]["results"][0]["action"]["kind"],
        "deactivate_access_key"
    );
    assert_eq!(
        body["detail"]["results"][0]["outcome"]["inverse"]["call"],
        "iam:UpdateAccessKey"
    );
}

/// Clients acting in `account` through an assumed role, as a member account would be reached.
async fn clients_in(account: &str) -> aws_sdk_iam::Client {
    let sts = aws_sdk_sts::Client::new(&sdk().await);
    let out = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/SeedRole"))
        .role_session_name("seed")
        .send()
        .await
        .unwrap();
    let c = out.credentials().unwrap();
    let creds = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "seed",
    );
    let cfg = sdk()
        .await
        .into_builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
        .build();
    aws_sdk_iam::Client::new(&cfg)
}

#[tokio::test]
async fn a_member_account_is_reached_through_the_member_role() {
    let member = "444455556666";
    let iam_member = clients_in(member).await;
    let user = unique("member-user");
    iam_member
        .create_user()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    // moto's server mode does not isolate accounts for assumed-role credentials, so this test
    // cannot show the user is invisible from quell's own account; it drives the real
    // AssumeRoleProvider path (role ARN, session name, credentials) end to end.

    let policy = enforce();
    let source = quell_aws::Accounts::new(
        sdk().await,
        MOTO_ACCOUNT,
        "aws",
        &policy.aws.member_role_name,
    );
    assert_eq!(
        source.member_role_arn(member),
        "arn:aws:iam::444455556666:role/QuellMemberRole"
    );
    let exec = AwsExecutor::new(
        source,
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
    );
    let req = json!({"runbook": "quarantine", "principal": format!("arn:aws:iam::{member}:user/{user}"), "reason": "test"});
    let report = exec.execute(&plan(&req, &policy)).await;
    assert_eq!(
        report.results[0].outcome.status,
        Status::Applied,
        "{:?}",
        report.results[0]
    );
    assert_eq!(attached(&iam_member, Some(&user), None).await, [DENY_ALL]);
}

#[tokio::test]
async fn identity_center_roles_are_never_modified() {
    let iam = iam().await;
    let role = unique("AWSReservedSSO_Admin");
    new_role(&iam, &role, "/aws-reserved/sso.amazonaws.com/").await;
    // Addressed as a plain role (a runbook with the role's ARN minus the reserved prefix
    // would be planned as notify); the executor refuses it by its path too.
    let mut policy = enforce();
    policy.aws.quarantine_roles = true;
    let p = quell_core::Plan {
        mode: Mode::Enforce,
        partition: "aws".into(),
        delivery: None,
        findings: vec![],
        actions: vec![quell_core::Action {
            kind: ActionKind::QuarantineRole,
            cloud: quell_core::Cloud::Aws,
            target: quell_core::Target::Subject(quell_core::Subject::IamRole {
                account: MOTO_ACCOUNT.into(),
                name: role.clone(),
            }),
            reason: "test".into(),
            finding: "f".into(),
            via: None,
        }],
        skipped: vec![],
        ignored: vec![],
    };
    let report = executor(policy, NOW).await.execute(&p).await;
    assert_eq!(report.results[0].outcome.status, Status::Skipped);
    assert!(
        report.results[0].outcome.detail.contains("Identity Center"),
        "{:?}",
        report.results[0]
    );
    assert!(attached(&iam, None, Some(&role)).await.is_empty());
}

/// The size IAM counts for all of a role's inline policies.
async fn inline_total(iam: &aws_sdk_iam::Client, role: &str) -> usize {
    let names = iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap()
        .policy_names()
        .to_vec();
    let mut total = 0;
    for n in names {
        let doc = iam
            .get_role_policy()
            .role_name(role)
            .policy_name(&n)
            .send()
            .await
            .unwrap();
        total += docs::policy_size(doc.policy_document());
    }
    total
}

#[tokio::test]
async fn a_later_occurrence_of_the_same_finding_moves_the_cutoff_forward() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "restolen").await;
    let mut v = tor_event(&user, &keys[0]);
    v["detail"]["service"]["eventLastSeen"] = json!("2026-11-23T11:58:00.000Z");
    let policy = enforce();
    let cutoff = |iam: aws_sdk_iam::Client, user: String| async move {
        user_policy(&iam, &user, docs::USER_REVOKE_POLICY)
            .await
            .unwrap()["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
            .clone()
    };
    run_twice(&executor(policy.clone(), NOW).await, &plan(&v, &policy)).await;
    assert_eq!(
        cutoff(iam.clone(), user.clone()).await,
        "2026-11-23T12:00:00Z"
    );

    // GuardDuty folds a new occurrence into the same finding id: a later eventLastSeen.
    let later = NOW + time::Duration::hours(2);
    v["detail"]["service"]["eventLastSeen"] = json!("2026-11-23T13:30:00.000Z");
    v["detail"]["service"]["count"] = json!(2);
    let report = executor(policy.clone(), later)
        .await
        .execute(&plan(&v, &policy))
        .await;
    assert_eq!(
        status_of(&report, ActionKind::RevokeUserSessions),
        [Status::Applied]
    );
    assert_eq!(
        cutoff(iam.clone(), user.clone()).await,
        "2026-11-23T14:00:00Z"
    );

    // The same occurrence re-delivered later still changes nothing.
    let report = executor(policy.clone(), later + time::Duration::hours(1))
        .await
        .execute(&plan(&v, &policy))
        .await;
    assert_eq!(
        status_of(&report, ActionKind::RevokeUserSessions),
        [Status::AlreadyInState]
    );
}

#[tokio::test]
async fn sixty_session_revocations_stay_within_the_inline_quota_and_quarantine_still_lands() {
    let iam = iam().await;
    let role = unique("busy-role");
    let role_id = new_role(&iam, &role, "/").await;
    let mut policy = enforce();
    policy.max_actions = 1000;
    let mut fell_back = 0;
    for i in 0..60 {
        let req = json!({
            "runbook": "revoke_sessions",
            "principal": format!("arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/{role}/worker-session-{i:03}"),
            "role_id": role_id,
            "reason": "SEC-60: sessions seen from a scanner",
            "id": format!("finding-{i}"),
        });
        let now = NOW + time::Duration::minutes(i);
        let report = executor(policy.clone(), now)
            .await
            .execute(&plan(&req, &policy))
            .await;
        let r = report
            .results
            .iter()
            .find(|r| r.action.kind == ActionKind::RevokeRoleSession)
            .unwrap();
        assert_eq!(r.outcome.status, Status::Applied, "{i}: {:?}", r.outcome);
        if r.outcome.detail.contains("every session of the role") {
            fell_back += 1;
        }
        let total = inline_total(&iam, &role).await;
        assert!(total <= docs::ROLE_INLINE_QUOTA, "{i}: {total}");
    }
    assert!(
        fell_back >= 1,
        "60 revocations must hit the quota at least once"
    );
    // The role-wide revocation covers the sessions it subsumed.
    assert!(
        role_policy(&iam, &role, docs::ROLE_REVOKE_POLICY)
            .await
            .is_some()
    );

    let req = json!({"runbook":"quarantine","principal":format!("arn:aws:iam::{MOTO_ACCOUNT}:role/{role}"),"reason":"test"});
    let report = executor(policy.clone(), NOW + time::Duration::hours(2))
        .await
        .execute(&plan(&req, &policy))
        .await;
    assert_eq!(report.results[0].outcome.status, Status::Applied);
    assert_eq!(attached(&iam, None, Some(&role)).await, [DENY_ALL]);
}

#[tokio::test]
async fn expired_session_revocations_are_pruned() {
    let iam = iam().await;
    let role = unique("prune-role");
    let role_id = new_role(&iam, &role, "/").await;
    let policy = enforce();
    let revoke = |session: &str, id: &str| json!({"runbook":"revoke_sessions","principal":format!("arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/{role}/{session}"),"role_id":role_id,"reason":"t","id":id});
    executor(policy.clone(), NOW)
        .await
        .execute(&plan(&revoke("old", "f-old"), &policy))
        .await;
    // Thirteen hours later no token the first statement denies can still be valid.
    let report = executor(policy.clone(), NOW + time::Duration::hours(13))
        .await
        .execute(&plan(&revoke("new", "f-new"), &policy))
        .await;
    assert!(
        report.results[0].outcome.detail.contains("1 expired"),
        "{:?}",
        report.results[0]
    );
    let doc = role_policy(&iam, &role, docs::SESSION_REVOKE_POLICY)
        .await
        .unwrap();
    let sts = doc["Statement"].as_array().unwrap();
    assert_eq!(sts.len(), 1);
    assert_eq!(
        sts[0]["Condition"]["StringEquals"]["aws:userid"],
        format!("{role_id}:new")
    );
}

#[tokio::test]
async fn a_recreated_role_is_skipped_by_its_role_id() {
    let iam = iam().await;
    let role = unique("recreated");
    let old_id = new_role(&iam, &role, "/").await;
    iam.delete_role().role_name(&role).send().await.unwrap();
    let new_id = new_role(&iam, &role, "/").await;
    assert_ne!(old_id, new_id);
    let mut v: Value = serde_json::from_slice(&event(
        "guardduty/instance-credential-exfiltration-outside.json",
    ))
    .unwrap();
    let d = &mut v["detail"]["resource"]["accessKeyDetails"];
    d["userName"] = json!(role);
    d["principalId"] = json!(format!("{old_id}:i-0a7c3e9f1b2d4e6f8"));
    v["detail"]["accountId"] = json!(MOTO_ACCOUNT);
    let policy = enforce();
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&plan(&v, &policy))
        .await;
    let r = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::RevokeRoleSession)
        .unwrap();
    assert_eq!(r.outcome.status, Status::Skipped);
    assert!(
        r.outcome.detail.contains("deleted and recreated"),
        "{}",
        r.outcome.detail
    );
    assert!(
        role_policy(&iam, &role, docs::SESSION_REVOKE_POLICY)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_stolen_temporary_key_names_or_deactivates_the_users_long_term_keys() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "minted").await;
    let mut v: Value =
        serde_json::from_slice(&event("guardduty/iamuser-malicious-ip-temporary-key.json"))
            .unwrap();
    v["detail"]["resource"]["accessKeyDetails"]["userName"] = json!(user);
    v["detail"]["accountId"] = json!(MOTO_ACCOUNT);
    v["detail"]["id"] = json!(unique("asia"));

    let policy = enforce();
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&plan(&v, &policy))
        .await;
    let notice = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::Notify)
        .unwrap();
    assert!(
        notice.outcome.detail.contains(&keys[0]) && notice.outcome.detail.contains(&keys[1]),
        "{}",
        notice.outcome.detail
    );
    assert!(
        key_status(&iam, &user)
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Active)
    );

    let mut policy = enforce();
    policy.aws.deactivate_long_term_keys = true;
    let report = run_twice(&executor(policy.clone(), NOW).await, &plan(&v, &policy)).await;
    assert_eq!(
        status_of(&report, ActionKind::DeactivateLongTermKeys),
        [Status::Applied]
    );
    assert!(
        key_status(&iam, &user)
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Inactive)
    );
}

#[tokio::test]
async fn protection_matches_the_real_arn_with_its_path() {
    let iam = iam().await;
    let user = unique("oncall");
    iam.create_user()
        .user_name(&user)
        .path("/breakglass/")
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key()
        .unwrap()
        .access_key_id()
        .to_string();
    let mut policy = enforce();
    // A list that replaces the defaults, protecting a path the finding does not show.
    policy.protected =
        vec![quell_core::policy::Pattern::new("arn:aws:iam::*:user/breakglass/*").unwrap()];
    let p = plan(&tor_event(&user, &key), &policy);
    assert!(
        p.skipped.is_empty(),
        "the planner cannot see the path: {:?}",
        p.skipped
    );
    let report = executor(policy, NOW).await.execute(&p).await;
    for r in &report.results {
        assert_eq!(r.outcome.status, Status::Skipped, "{r:?}");
        assert!(
            r.outcome.detail.contains("user/breakglass/*"),
            "{}",
            r.outcome.detail
        );
    }
    assert!(
        key_status(&iam, &user)
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Active)
    );
}

#[tokio::test]
async fn quell_roles_stay_protected_when_the_policy_replaces_the_protected_list() {
    let iam = iam().await;
    let role = unique("quell-guardduty-us-east-1");
    new_role(&iam, &role, "/").await;
    let mut policy = enforce();
    policy.protected = vec![quell_core::policy::Pattern::new("nobody").unwrap()];
    let req = json!({"runbook":"contain","principal":format!("arn:aws-us-gov:iam::{MOTO_ACCOUNT}:role/{role}"),"reason":"test"});
    let p = plan(&req, &policy);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(p.skipped[0].reason.contains("quell's own roles"));
    // Executor-time too, whatever the plan says.
    let forced = quell_core::Plan {
        mode: Mode::Enforce,
        partition: "aws".into(),
        delivery: None,
        findings: vec![],
        actions: vec![quell_core::Action {
            kind: ActionKind::QuarantineRole,
            cloud: quell_core::Cloud::Aws,
            target: quell_core::Target::Subject(quell_core::Subject::IamRole {
                account: MOTO_ACCOUNT.into(),
                name: role.clone(),
            }),
            reason: "test".into(),
            finding: "f".into(),
            via: None,
        }],
        skipped: vec![],
        ignored: vec![],
    };
    let report = executor(policy, NOW).await.execute(&forced).await;
    assert_eq!(report.results[0].outcome.status, Status::Skipped);
    assert!(attached(&iam, None, Some(&role)).await.is_empty());
}

#[tokio::test]
async fn a_5000_user_sweep_report_reaches_the_bus_in_parts() {
    let cfg = sdk().await;
    let eb = aws_sdk_eventbridge::Client::new(&cfg);
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let (bus, url) = quell_tests::bus_to_queue(
        &cfg,
        r#"{"source": ["quell"], "detail-type": ["Dormant Credential Sweep Report"]}"#,
    )
    .await;
    let keys: Vec<Value> = (0..5000)
        .map(|i| {
            json!({"user": format!("contractor-{i:05}"), "slot": 1, "access_key_id": format!("AKIAEXAMPLE{i:09}"),
                   "dormancy": {"verdict": "dormant", "since": "2025-01-01T00:00:00Z", "never_used": false},
                   "outcome": {"status": "applied", "detail": format!("deactivated AKIAEXAMPLE{i:09} of contractor-{i:05}")}})
        })
        .collect();
    let report = json!({"account": MOTO_ACCOUNT, "swept_at": "2026-11-23T12:00:00Z", "users": 5000, "keys": keys, "passwords": [], "roles": []});
    assert!(report.to_string().len() > 256 * 1024);
    quell_aws::audit::publish_detail(&eb, &bus, quell_aws::audit::SWEEP_REPORT, &report, vec![])
        .await
        .unwrap();
    let mut seen = 0;
    let mut parts = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let msgs = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if msgs.messages().is_empty() {
            break;
        }
        for m in msgs.messages() {
            let body: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            seen += body["detail"]["keys"].as_array().unwrap().len();
            parts.insert(body["detail"]["part"]["index"].as_u64().unwrap());
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(seen, 5000);
    assert!(parts.len() >= 2, "{parts:?}");
}

/// Contains `v` under `policy` with a ledger, as the edges do; returns the ledger's entries.
async fn contained(v: &Value, policy: &Policy) -> Vec<quell_ledger::Entry> {
    use quell_ledger::Ledger;
    let ledger = quell_ledger::memory::MemoryLedger::default();
    let gated = quell_ledger::gate(&ledger, plan(v, policy), policy, NOW)
        .await
        .unwrap();
    let report = executor(policy.clone(), NOW)
        .await
        .execute(&gated.plan)
        .await;
    quell_ledger::record(&ledger, &gated.claims, &report, NOW)
        .await
        .unwrap();
    ledger.list(None).await.unwrap()
}

#[tokio::test]
async fn verify_puts_back_a_removed_role_revocation_and_reports_a_changed_trust_policy() {
    let iam = iam().await;
    let exec = executor(enforce(), NOW).await;
    let detail = |v: &mut Value, role: &str, role_id: &str, session: &str| {
        let d = &mut v["detail"]["resource"]["accessKeyDetails"];
        d["userName"] = json!(role);
        d["principalId"] = json!(format!("{role_id}:{session}"));
        v["detail"]["accountId"] = json!(MOTO_ACCOUNT);
    };
    let outcomes = |steps: &[quell_ledger::Step]| -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{:?} {}", s.outcome.status, s.outcome.detail))
            .collect()
    };

    // One stolen EC2 session, revoked on its own (bound to the instance by default).
    let role = unique("web-ec2");
    let role_id = new_role(&iam, &role, "/").await;
    let mut v: Value = serde_json::from_slice(&event(
        "guardduty/instance-credential-exfiltration-outside.json",
    ))
    .unwrap();
    detail(&mut v, &role, &role_id, "i-0a7c3e9f1b2d4e6f8");
    let entries = contained(&v, &enforce()).await;
    let checked = check(&exec, &entries, true).await;
    assert!(
        outcomes(&checked)
            .iter()
            .any(|o| o.starts_with("AlreadyInState session i-0a7c3e9f1b2d4e6f8 is still denied")),
        "{:?}",
        outcomes(&checked)
    );
    // Someone with IAM rights deletes quell's revocation.
    iam.delete_role_policy()
        .role_name(&role)
        .policy_name(docs::SESSION_REVOKE_POLICY)
        .send()
        .await
        .unwrap();
    let report = check(&exec, &entries, false).await;
    assert!(
        outcomes(&report)
            .iter()
            .any(|o| o.starts_with("DryRun would put back")),
        "{:?}",
        outcomes(&report)
    );
    assert!(
        role_policy(&iam, &role, docs::SESSION_REVOKE_POLICY)
            .await
            .is_none()
    );
    let fixed = check(&exec, &entries, true).await;
    assert!(
        outcomes(&fixed)
            .iter()
            .any(|o| o.starts_with("Applied attacker persistence")),
        "{:?}",
        outcomes(&fixed)
    );
    // Put back denied wherever used: no instance-bound exception for whoever removed it.
    let doc = role_policy(&iam, &role, docs::SESSION_REVOKE_POLICY)
        .await
        .unwrap();
    let st = &doc["Statement"][0];
    assert_eq!(
        st["Condition"]["StringEquals"]["aws:userid"],
        format!("{role_id}:i-0a7c3e9f1b2d4e6f8")
    );
    assert_eq!(
        st["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-11-23T12:00:00Z"
    );
    assert!(st["Condition"]["StringNotEquals"].is_null(), "{doc}");

    // Every session of a role revoked (session_scope = role).
    let role = unique("batch");
    let role_id = new_role(&iam, &role, "/").await;
    let mut v: Value = serde_json::from_slice(&event(
        "guardduty/instance-credential-exfiltration-inside.json",
    ))
    .unwrap();
    detail(&mut v, &role, &role_id, "i-04f1d2c3b4a596877");
    let mut policy = enforce();
    policy.aws.session_scope = SessionScope::Role;
    let entries = contained(&v, &policy).await;
    iam.delete_role_policy()
        .role_name(&role)
        .policy_name(docs::ROLE_REVOKE_POLICY)
        .send()
        .await
        .unwrap();
    let fixed = check(&exec, &entries, true).await;
    assert!(
        outcomes(&fixed).iter().any(|o| o.starts_with(&format!(
            "Applied attacker persistence: {} was removed",
            docs::ROLE_REVOKE_POLICY
        ))),
        "{:?}",
        outcomes(&fixed)
    );
    assert!(
        role_policy(&iam, &role, docs::ROLE_REVOKE_POLICY)
            .await
            .is_some()
    );
    // Weakened instead of removed: the cut-off moved back to 2000 (no token is that old).
    iam.put_role_policy()
        .role_name(&role)
        .policy_name(docs::ROLE_REVOKE_POLICY)
        .policy_document(docs::revoke_older_sessions(
            "Weakened",
            "2000-01-01T00:00:00Z",
        ))
        .send()
        .await
        .unwrap();
    let fixed = check(&exec, &entries, true).await;
    assert!(
        outcomes(&fixed).iter().any(|o| o.starts_with(&format!(
            "Applied attacker persistence: {} was weakened",
            docs::ROLE_REVOKE_POLICY
        ))),
        "{:?}",
        outcomes(&fixed)
    );
    let restored = role_policy(&iam, &role, docs::ROLE_REVOKE_POLICY)
        .await
        .unwrap();
    assert!(
        docs::revocation(&restored).is_some_and(|r| r.cutoff.as_str() >= "2026-11-23T12:00:00Z"),
        "{restored}"
    );
    let again = check(&exec, &entries, true).await;
    assert!(
        again.iter().all(|s| s.outcome.status != Status::Applied),
        "{:?}",
        outcomes(&again)
    );
    assert!(
        outcomes(&again)
            .iter()
            .any(|o| o.contains("trust policy is unchanged")),
        "{:?}",
        outcomes(&again)
    );
    // Someone backdoors the trust policy: reported for review, never rewritten by quell.
    let backdoor = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999988887777:root"}, "Action": "sts:AssumeRole"}]});
    iam.update_assume_role_policy()
        .role_name(&role)
        .policy_document(backdoor.to_string())
        .send()
        .await
        .unwrap();
    let found = check(&exec, &entries, true).await;
    assert!(
        outcomes(&found)
            .iter()
            .any(|o| o.starts_with("Skipped attacker persistence?")
                && o.contains("now also trusts arn:aws:iam::999988887777:root")),
        "{:?}",
        outcomes(&found)
    );
    let trust = iam
        .get_role()
        .role_name(&role)
        .send()
        .await
        .unwrap()
        .role()
        .unwrap()
        .assume_role_policy_document()
        .unwrap()
        .to_string();
    assert!(
        docs::parse(&trust)
            .unwrap()
            .to_string()
            .contains("999988887777")
    );
    // An inline policy put on the role since: reported, left in place.
    iam.put_role_policy()
        .role_name(&role)
        .policy_name("ops-extra")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let found = check(&exec, &entries, true).await;
    assert!(
        outcomes(&found).iter().any(|o| o
            .starts_with("Skipped attacker persistence? permissions added")
            && o.contains("inline ops-extra")
            && !o.contains(docs::ROLE_REVOKE_POLICY)),
        "{:?}",
        outcomes(&found)
    );
    assert!(role_policy(&iam, &role, "ops-extra").await.is_some());
}

#[tokio::test]
async fn verify_reports_a_policy_attached_to_a_contained_user_since() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "attached").await;
    let entries = contained(&tor_event(&user, &keys[0]), &enforce()).await;
    let exec = executor(enforce(), NOW).await;
    let before = check(&exec, &entries, false).await;
    assert!(
        before.iter().any(|s| s.outcome.detail
            == "no policy, group membership or policy version added since the containment"),
        "{:?}",
        before.iter().map(|s| &s.outcome.detail).collect::<Vec<_>>()
    );
    let arn = attach_new_policy(&iam, &user, "backdoor", "*").await;
    let after = check(&exec, &entries, true).await;
    assert!(
        after.iter().any(|s| s.outcome.status == Status::Skipped
            && s.outcome.detail.contains(&format!("attached {arn}"))),
        "{:?}",
        after.iter().map(|s| &s.outcome.detail).collect::<Vec<_>>()
    );
    // Left in place: only a human can tell a backdoor from a change someone meant.
    assert!(attached(&iam, Some(&user), None).await.contains(&arn));
}

#[tokio::test]
async fn verify_reports_a_group_joined_and_a_policy_changed_in_place_since() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "inplace").await;
    // A customer-managed policy the user held before the compromise.
    let doc = |action: &str| {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})
            .to_string()
    };
    let arn = attach_new_policy(&iam, &user, "ops", "s3:GetObject").await;
    let entries = contained(&tor_event(&user, &keys[0]), &enforce()).await;
    let exec = executor(enforce(), NOW).await;
    let quiet = check(&exec, &entries, false).await;
    assert!(
        quiet
            .iter()
            .all(|s| !s.outcome.detail.contains("persistence?")),
        "{:?}",
        quiet.iter().map(|s| &s.outcome.detail).collect::<Vec<_>>()
    );
    // The attacker joins an admin group and rewrites the policy the user already holds: no
    // new attachment, yet both grant.
    let group = unique("admins");
    iam.create_group().group_name(&group).send().await.unwrap();
    iam.add_user_to_group()
        .group_name(&group)
        .user_name(&user)
        .send()
        .await
        .unwrap();
    iam.create_policy_version()
        .policy_arn(&arn)
        .policy_document(doc("*"))
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    let found = check(&exec, &entries, true).await;
    let detail = found
        .iter()
        .find(|s| s.outcome.detail.contains("persistence?"))
        .map(|s| s.outcome.detail.clone())
        .unwrap_or_default();
    assert!(
        detail.contains(&format!("added to groups {group}")),
        "{detail}"
    );
    assert!(
        detail.contains(&format!(
            "changed in place {arn} (default version v1 -> v2)"
        )),
        "{detail}"
    );
}

#[tokio::test]
async fn a_release_never_writes_back_a_document_that_could_allow() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "forged").await;
    let entries = contained(&tor_event(&user, &keys[0]), &enforce()).await;
    let exec = executor(enforce(), NOW).await;
    // Someone who can write the ledger turns the revocation's inverse into an Allow *.
    let mut forged = entries[0].clone();
    let revoke = forged
        .actions
        .iter_mut()
        .find(|r| r.kind == ActionKind::RevokeUserSessions)
        .expect("a session revocation");
    revoke.inverse = Some(quell_tests::inverse(
        "iam:PutUserPolicy",
        json!({"UserName": user, "PolicyName": docs::USER_REVOKE_POLICY,
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}}),
    ));
    let steps = quell_aws::release::release(exec.source(), &forged, false).await;
    assert!(
        steps.iter().any(|s| s.outcome.status == Status::Skipped
            && s.outcome.detail.contains("not a deny-only revocation")),
        "{:?}",
        steps.iter().map(|s| &s.outcome.detail).collect::<Vec<_>>()
    );
    // The user's revocation is still quell's deny; nothing allows.
    let doc = user_policy(&iam, &user, docs::USER_REVOKE_POLICY)
        .await
        .unwrap();
    assert!(docs::deny_only(&doc), "{doc}");
}

/// Rows forged by anyone who can write the ledger: an undo aimed at another principal, a
/// managed policy other than AWSDenyAll, a key of another user. Each is refused loudly (a
/// failed step, so the entry stays in force and a human hears of it) and nothing is changed.
#[tokio::test]
async fn a_release_acts_only_on_the_entrys_own_principal() {
    let iam = iam().await;
    let mut policy = enforce();
    policy.aws.quarantine_users = true;
    let (user, keys) = new_user(&iam, "forger").await;
    let entries = contained(&tor_event(&user, &keys[0]), &policy).await;
    let exec = executor(policy.clone(), NOW).await;
    let refused = |steps: &[quell_ledger::Step]| {
        steps.iter().any(|s| {
            s.outcome.status == Status::Failed
                && s.outcome.error_code.as_deref() == Some("RefusedForgedEntry")
        })
    };
    // A human quarantined the break-glass admin by hand.
    let (human, human_keys) = new_user(&iam, "quarantined-by-hand").await;
    iam.attach_user_policy()
        .user_name(&human)
        .policy_arn(DENY_ALL)
        .send()
        .await
        .unwrap();
    // 1. The quarantine's undo aimed at that human, in this user's entry.
    let mut aimed = entries[0].clone();
    let q = aimed
        .actions
        .iter_mut()
        .find(|r| r.kind == ActionKind::QuarantineUser)
        .expect("a quarantine");
    q.target = quell_core::Target::Subject(quell_core::Subject::IamUser {
        account: MOTO_ACCOUNT.into(),
        name: human.clone(),
    });
    q.inverse = Some(quell_tests::inverse(
        "iam:DetachUserPolicy",
        json!({"UserName": human, "PolicyArn": DENY_ALL}),
    ));
    let steps = quell_aws::release::release(exec.source(), &aimed, false).await;
    assert!(refused(&steps), "{steps:?}");
    assert_eq!(attached(&iam, Some(&human), None).await, [DENY_ALL]);
    // 2. A managed policy other than AWSDenyAll: the user's own guardrail stays.
    let guardrail = iam
        .create_policy()
        .policy_name(unique("team-guardrail"))
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"s3:*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    iam.attach_user_policy()
        .user_name(&user)
        .policy_arn(&guardrail)
        .send()
        .await
        .unwrap();
    let mut other_policy = entries[0].clone();
    other_policy
        .actions
        .iter_mut()
        .find(|r| r.kind == ActionKind::QuarantineUser)
        .unwrap()
        .inverse = Some(quell_tests::inverse(
        "iam:DetachUserPolicy",
        json!({"UserName": user, "PolicyArn": guardrail}),
    ));
    let steps = quell_aws::release::release(exec.source(), &other_policy, false).await;
    assert!(refused(&steps), "{steps:?}");
    assert!(attached(&iam, Some(&user), None).await.contains(&guardrail));
    // 3. Another user's key, to reactivate: it stays inactive.
    iam.update_access_key()
        .user_name(&human)
        .access_key_id(&human_keys[0])
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .unwrap();
    let mut foreign_key = entries[0].clone();
    foreign_key
        .actions
        .iter_mut()
        .find(|r| r.kind == ActionKind::DeactivateAccessKey)
        .expect("a key deactivation")
        .inverse = Some(quell_tests::inverse(
        "iam:UpdateAccessKey",
        json!({"UserName": user, "AccessKeyId": human_keys[0], "Status": "Active"}),
    ));
    let steps = quell_aws::release::release(exec.source(), &foreign_key, true).await;
    assert!(refused(&steps), "{steps:?}");
    assert!(
        key_status(&iam, &human)
            .await
            .contains(&(human_keys[0].clone(), StatusType::Inactive))
    );
    // The genuine entry still releases.
    let steps = quell_aws::release::release(exec.source(), &entries[0], false).await;
    assert!(!refused(&steps), "{steps:?}");
    assert!(
        !attached(&iam, Some(&user), None)
            .await
            .contains(&DENY_ALL.to_string())
    );
}

/// The check after containment, with the executor's own protection rules.
/// Creates a customer-managed policy allowing `action` and attaches it to `user`; its ARN.
async fn attach_new_policy(
    iam: &aws_sdk_iam::Client,
    user: &str,
    prefix: &str,
    action: &str,
) -> String {
    let arn = iam
        .create_policy()
        .policy_name(unique(prefix))
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    iam.attach_user_policy()
        .user_name(user)
        .policy_arn(&arn)
        .send()
        .await
        .unwrap();
    arn
}

async fn check(
    exec: &AwsExecutor<quell_aws::Fixed>,
    entries: &[quell_ledger::Entry],
    fix: bool,
) -> Vec<quell_ledger::Step> {
    let protect = quell_aws::release::Protection {
        policy: exec.policy(),
        ctx: exec.ctx(),
    };
    quell_aws::release::verify(exec.source(), entries, fix, &protect).await
}

/// A forged entry plus any verify message cannot make verify write to a protected principal,
/// and without quell's own tag on the principal the check cannot date "created since": it
/// reports, and deactivates nothing.
#[tokio::test]
async fn verify_never_writes_a_protected_principal_and_dates_containment_by_quells_tag() {
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "breakglass-admin").await;
    let forged = quell_ledger::Entry {
        at: "1970-01-01T00:00:00Z".into(),
        actions: vec![quell_ledger::Recorded {
            kind: ActionKind::QuarantineUser,
            target: quell_core::Target::Subject(quell_core::Subject::IamUser {
                account: MOTO_ACCOUNT.into(),
                name: user.clone(),
            }),
            status: Status::Applied,
            detail: "attached".into(),
            inverse: Some(quell_tests::inverse(
                "iam:DetachUserPolicy",
                json!({"UserName": user, "PolicyArn": "arn:aws:iam::aws:policy/AWSDenyAll"}),
            )),
        }],
        ..quell_tests::ledger_entry(
            &format!("arn:aws:iam::{MOTO_ACCOUNT}:user/{user}"),
            "forged-verify",
        )
    };
    let key_active = |k: String| {
        let iam = iam.clone();
        let user = user.clone();
        async move {
            key_status(&iam, &user)
                .await
                .contains(&(k, StatusType::Active))
        }
    };
    // Protected by the policy: nothing is written, whatever the row says.
    let mut protected = enforce();
    protected.protected =
        vec![quell_core::policy::Pattern::new("arn:aws:iam::*:user/breakglass-*").unwrap()];
    let exec = executor(protected, NOW).await;
    let steps = check(&exec, std::slice::from_ref(&forged), true).await;
    assert!(
        steps
            .iter()
            .any(|s| s.outcome.detail.contains("is protected")),
        "{steps:?}"
    );
    assert!(
        steps.iter().all(|s| s.outcome.status != Status::Applied),
        "{steps:?}"
    );
    assert!(key_active(keys[0].clone()).await);
    assert!(attached(&iam, Some(&user), None).await.is_empty());
    // Not protected, but no quell:quarantined tag names the entry: it is only a row. Nothing
    // is dated from it (the row says 1970) and nothing is written: no key deactivated as "new",
    // no quarantine "re-attached".
    let exec = executor(enforce(), NOW).await;
    let steps = check(&exec, std::slice::from_ref(&forged), true).await;
    assert!(
        steps
            .iter()
            .any(|s| s.outcome.detail.contains("cannot be dated")),
        "{steps:?}"
    );
    assert!(
        steps.iter().all(|s| s.outcome.status != Status::Applied),
        "{steps:?}"
    );
    assert!(key_active(keys[0].clone()).await);
    assert!(key_active(keys[1].clone()).await);
    assert!(attached(&iam, Some(&user), None).await.is_empty());
}

/// A key named without its user is resolved to the user before the ledger claim, so the
/// containment is keyed (and checked later) as the user's.
#[tokio::test]
async fn a_bare_key_is_keyed_by_its_user() {
    use quell_ledger::Ledger;
    let iam = iam().await;
    let (user, keys) = new_user(&iam, "bare-key").await;
    let req = json!({"runbook": "disable_key", "principal": keys[0], "account": MOTO_ACCOUNT,
        "reason": "SEC-12: key in a public gist", "id": unique("bare")});
    let policy = enforce();
    let plan =
        quell_core::plan_input(req.to_string().as_bytes(), &policy, &Context::default()).unwrap();
    let ledger = quell_ledger::memory::MemoryLedger::default();
    let exec = executor(policy.clone(), NOW).await;
    let clock = FixedClock(NOW);
    let pipeline = quell_tests::memory_pipeline(&policy, &clock, &ledger, &exec);
    let answer = pipeline.contain(plan).await;
    assert!(
        matches!(answer, quell_pipeline::Answer::Done(_)),
        "{:?}",
        answer.to_json()
    );
    let entries = ledger.list(None).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].principal,
        format!("arn:aws:iam::{MOTO_ACCOUNT}:user/{user}")
    );
}
