use super::memory::MemoryLedger;
use super::*;
use quell_core::policy::Mode;
use quell_core::{Context, plan_input};

const NOW: OffsetDateTime = time::macros::datetime!(2026-11-23 12:00:00 UTC);

fn enforce() -> Policy {
    Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    }
}

fn contain(user: &str, finding: &str) -> Plan {
    let req = format!(
        r#"{{"runbook":"contain","principal":"arn:aws:iam::111122223333:user/{user}","reason":"t","id":"{finding}"}}"#
    );
    plan_input(req.as_bytes(), &enforce(), &Context::default()).unwrap()
}

fn done(plan: &Plan) -> Report {
    let results = plan
        .actions
        .iter()
        .map(|a| quell_core::report::ActionResult {
            action: a.clone(),
            outcome: quell_core::report::Outcome::applied(
                "done",
                Some(Inverse::Aws(quell_core::report::AwsInverse::LoginProfile {
                    user: "x".into(),
                })),
            ),
        })
        .collect();
    Report::new(plan, "t".into(), results)
}

#[test]
fn keys_name_the_principal_a_subject_belongs_to() {
    let key = |s: &str| key_of_argument(s, None);
    assert_eq!(
        key("arn:aws:iam::111122223333:user/ops/alice").as_deref(),
        Some("arn:aws:iam::111122223333:user/alice")
    );
    assert_eq!(
        key("arn:aws:sts::111122223333:assumed-role/web/i-0abc").as_deref(),
        Some("arn:aws:iam::111122223333:role/web")
    );
    assert_eq!(
        key("Ana@Contoso.com").as_deref(),
        Some("azure:user/ana@contoso.com")
    );
    assert_eq!(key("not a principal"), None);
    let session = Subject::RoleSession {
        account: "111122223333".into(),
        name: "web".into(),
        id: None,
        session: "s".into(),
        access_key_id: None,
    };
    assert_eq!(
        principal_key(&session, "aws").as_deref(),
        Some("arn:aws:iam::111122223333:role/web")
    );
}

#[tokio::test]
async fn a_claim_is_won_once_and_a_redelivery_runs_again_without_counting() {
    let ledger = MemoryLedger::default();
    let policy = enforce();
    let plan = contain("alice", "f1");
    let first = gate(&ledger, plan.clone(), &policy, NOW).await.unwrap();
    assert_eq!(first.claims.len(), 1);
    // A concurrent invocation of the same finding while the claim holds: withheld.
    let second = gate(&ledger, plan.clone(), &policy, NOW).await.unwrap();
    assert!(second.claims.is_empty());
    assert!(second.plan.actions.is_empty(), "{:?}", second.plan.actions);
    assert!(
        second
            .plan
            .skipped
            .iter()
            .all(|s| s.reason.contains("another invocation"))
    );
    record(&ledger, &first.claims, &done(&first.plan), NOW)
        .await
        .unwrap();
    // After it is recorded, a re-delivery runs again (idempotent actions) and is one record.
    let again = gate(&ledger, plan, &policy, NOW).await.unwrap();
    assert_eq!(again.claims.len(), 1);
    assert_eq!(ledger.list(None).await.unwrap().len(), 1);
    assert_eq!(
        ledger
            .slots("aws:111122223333", "2026-11-23T12")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_released_principal_is_not_contained_again_by_the_same_finding() {
    let ledger = MemoryLedger::default();
    let policy = enforce();
    let g = gate(&ledger, contain("bob", "f2"), &policy, NOW)
        .await
        .unwrap();
    record(&ledger, &g.claims, &done(&g.plan), NOW)
        .await
        .unwrap();
    let e = ledger
        .get("arn:aws:iam::111122223333:user/bob", "f2")
        .await
        .unwrap()
        .unwrap();
    assert!(
        mark_released(&ledger, &e, "oncall@example.com", NOW)
            .await
            .unwrap()
    );
    let again = gate(&ledger, contain("bob", "f2"), &policy, NOW)
        .await
        .unwrap();
    assert!(again.claims.is_empty());
    let notify = again
        .plan
        .actions
        .iter()
        .find(|a| a.kind == ActionKind::Notify)
        .unwrap();
    assert!(
        notify.reason.contains("released by oncall@example.com"),
        "{}",
        notify.reason
    );
    // A new finding contains again.
    let new = gate(&ledger, contain("bob", "f3"), &policy, NOW)
        .await
        .unwrap();
    assert_eq!(new.claims.len(), 1);
}

#[tokio::test]
async fn the_breaker_withholds_past_the_cap_and_says_so() {
    let ledger = MemoryLedger::default();
    let mut policy = enforce();
    policy.breaker.max_containments_per_account_per_hour = 3;
    let mut contained = 0;
    for i in 0..5 {
        let g = gate(
            &ledger,
            contain(&format!("u{i}"), &format!("f{i}")),
            &policy,
            NOW,
        )
        .await
        .unwrap();
        if g.claims.is_empty() {
            let n = g
                .plan
                .actions
                .iter()
                .find(|a| a.kind == ActionKind::Notify)
                .unwrap();
            assert!(n.reason.contains("breaker is open"), "{}", n.reason);
            assert!(g.plan.actions.iter().all(|a| !a.kind.is_containment()));
        } else {
            contained += 1;
        }
    }
    assert_eq!(contained, 3);
    // No ledger entry for what was withheld.
    assert_eq!(ledger.list(None).await.unwrap().len(), 3);
    // The next hour has its own count.
    let later = NOW + time::Duration::hours(1);
    let g = gate(&ledger, contain("u9", "f9"), &policy, later)
        .await
        .unwrap();
    assert_eq!(g.claims.len(), 1);
}

#[tokio::test]
async fn dry_run_plans_pass_untouched() {
    let ledger = MemoryLedger::default();
    let mut plan = contain("carol", "f4");
    plan.mode = Mode::DryRun;
    let g = gate(&ledger, plan.clone(), &Policy::default(), NOW)
        .await
        .unwrap();
    assert_eq!(g.plan.actions, plan.actions);
    assert!(ledger.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_family_with_release_after_hours_gives_its_containments_an_expiry() {
    let event = include_bytes!("../../../events/guardduty/iamuser-tor-caller-akia.json");
    let mut policy = enforce();
    let ledger = MemoryLedger::default();
    let plan = plan_input(event, &policy, &Context::default()).unwrap();
    let gated = gate(&ledger, plan, &policy, NOW).await.unwrap();
    assert!(!gated.claims.is_empty());
    assert!(gated.claims.iter().all(|c| c.entry.expires.is_none()));

    policy.families.credential_compromise.release_after_hours = Some(24);
    let ledger = MemoryLedger::default();
    let plan = plan_input(event, &policy, &Context::default()).unwrap();
    let gated = gate(&ledger, plan, &policy, NOW).await.unwrap();
    assert!(!gated.claims.is_empty());
    for c in &gated.claims {
        assert_eq!(c.entry.expires.as_deref(), Some("2026-11-24T12:00:00Z"));
    }
    // A runbook request is a human's decision: it never expires by itself.
    let plan = contain("alice", "f-manual");
    let gated = gate(&ledger, plan, &policy, NOW).await.unwrap();
    assert!(gated.claims.iter().all(|c| c.entry.expires.is_none()));
}

fn held(principal: &str, finding: &str, at: &str, expires: Option<&str>) -> Entry {
    Entry {
        principal: principal.into(),
        finding: finding.into(),
        scope: "aws:111122223333".into(),
        state: State::Done,
        severity: SeverityLabel::High,
        trigger: "guardduty".into(),
        at: at.into(),
        updated: at.into(),
        lease_until: None,
        delivery: None,
        actions: vec![],
        released_at: None,
        released_by: None,
        expires: expires.map(str::to_string),
        version: 2,
        history: vec![],
        stored_at: None,
    }
}

#[test]
fn a_principal_expires_only_when_every_containment_in_force_on_it_has() {
    let a = "arn:aws:iam::111122223333:user/a";
    let b = "arn:aws:iam::111122223333:user/b";
    let c = "arn:aws:iam::111122223333:user/c";
    let entries = vec![
        // a: two findings, both expired: released, newest first.
        held(
            a,
            "f1",
            "2026-11-20T10:00:00Z",
            Some("2026-11-21T10:00:00Z"),
        ),
        held(
            a,
            "f2",
            "2026-11-21T10:00:00Z",
            Some("2026-11-22T10:00:00Z"),
        ),
        // b: one expired, a newer one not yet: kept (releasing would undo the newer one too).
        held(
            b,
            "f3",
            "2026-11-20T10:00:00Z",
            Some("2026-11-21T10:00:00Z"),
        ),
        held(
            b,
            "f4",
            "2026-11-23T11:00:00Z",
            Some("2026-11-24T11:00:00Z"),
        ),
        // c: expired, but also held by a containment without expiry: kept.
        held(
            c,
            "f5",
            "2026-11-20T10:00:00Z",
            Some("2026-11-21T10:00:00Z"),
        ),
        held(c, "f6", "2026-11-20T11:00:00Z", None),
    ];
    let due = expired(&entries, NOW);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].0, a);
    let findings: Vec<&str> = due[0].1.iter().map(|e| e.finding.as_str()).collect();
    assert_eq!(findings, ["f2", "f1"]);
    // Released entries do not count, and a stale claim (an invocation died mid-way) holds.
    let mut released = held(b, "f4", "2026-11-23T11:00:00Z", None);
    released.state = State::Released;
    let mut claimed = held(
        c,
        "f7",
        "2026-11-20T10:00:00Z",
        Some("2026-11-21T10:00:00Z"),
    );
    claimed.state = State::Claimed;
    let due = expired(
        &[
            held(
                b,
                "f3",
                "2026-11-20T10:00:00Z",
                Some("2026-11-21T10:00:00Z"),
            ),
            released,
            claimed,
        ],
        NOW,
    );
    let principals: Vec<&str> = due.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(principals, [b]);
}

#[tokio::test]
async fn a_row_keyed_the_old_way_is_found_and_kept_under_its_key() {
    let ledger = MemoryLedger::default();
    let policy = enforce();
    // A row written before keys carried the partition.
    let g = gate(&ledger, contain("olga", "f9"), &policy, NOW)
        .await
        .unwrap();
    record(&ledger, &g.claims, &done(&g.plan), NOW)
        .await
        .unwrap();
    let new_key = "arn:aws:iam::111122223333:user/olga";
    let mut e = ledger.get(new_key, "f9").await.unwrap().unwrap();
    assert!(ledger.delete(new_key, "f9", e.version).await.unwrap());
    e.principal = "aws:111122223333:user/olga".into();
    e.version = 1;
    assert!(ledger.put(&e, None).await.unwrap());
    // The re-delivery finds it: it runs again on that row, and counts no new containment.
    let again = gate(&ledger, contain("olga", "f9"), &policy, NOW)
        .await
        .unwrap();
    assert_eq!(again.claims.len(), 1);
    assert_eq!(
        again.claims[0].entry.principal,
        "aws:111122223333:user/olga"
    );
    assert!(!again.plan.actions.is_empty());
    record(&ledger, &again.claims, &done(&again.plan), NOW)
        .await
        .unwrap();
    let key = PrincipalKey::parse(new_key).unwrap();
    let all = list_principal(&ledger, &key).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(ledger.get(new_key, "f9").await.unwrap().is_none());
}

/// GuardDuty keeps one finding id for repeated occurrences: after a release, the same
/// occurrence re-delivered is withheld, and a later occurrence contains again.
#[tokio::test]
async fn an_occurrence_after_a_release_contains_again_and_the_same_one_does_not() {
    let ledger = MemoryLedger::default();
    let policy = enforce();
    let finding = |last_seen: &str| {
        let mut v: serde_json::Value = serde_json::from_str(include_str!(
            "../../../events/guardduty/iamuser-tor-caller-akia.json"
        ))
        .unwrap();
        v["detail"]["service"]["eventLastSeen"] = last_seen.into();
        plan_input(v.to_string().as_bytes(), &policy, &Context::default()).unwrap()
    };
    let g = gate(&ledger, finding("2026-11-23T11:50:00Z"), &policy, NOW)
        .await
        .unwrap();
    record(&ledger, &g.claims, &done(&g.plan), NOW)
        .await
        .unwrap();
    let e = ledger.list(None).await.unwrap().remove(0);
    let released_at = NOW + time::Duration::hours(1);
    assert!(
        mark_released(&ledger, &e, "oncall@example.com", released_at)
            .await
            .unwrap()
    );
    // The same occurrence, re-delivered after the release: withheld.
    let again = gate(
        &ledger,
        finding("2026-11-23T11:50:00Z"),
        &policy,
        released_at,
    )
    .await
    .unwrap();
    assert!(again.claims.is_empty());
    // The attacker back an hour later, same finding id: contained again.
    let later = NOW + time::Duration::hours(2);
    let back = gate(&ledger, finding("2026-11-23T13:30:00Z"), &policy, later)
        .await
        .unwrap();
    assert_eq!(back.claims.len(), 1);
    assert!(
        back.claims[0]
            .entry
            .history
            .iter()
            .any(|h| h.contains("a new occurrence at 2026-11-23T13:30:00Z")),
        "{:?}",
        back.claims[0].entry.history
    );
}

/// One GuardDuty detection arrives three times: from GuardDuty, and as Security Hub's ASFF and
/// OCSF copies, each with its own id. It is one containment, and takes one breaker slot.
#[tokio::test]
async fn a_guardduty_detection_and_its_security_hub_copies_are_one_containment() {
    let ledger = MemoryLedger::default();
    let policy = enforce();
    let (gd_id, key, user) = (
        "d1f3b5a7c9e14b2d8f6a4c2e0b9d7f15",
        "AKIAZ4XQ7PLMCJ3N8R2T",
        "ci-deployer",
    );
    let arn = format!(
        "arn:aws:guardduty:us-east-1:111122223333:detector/a2b5c8d1e4f7a0b3c6d9e2f5a8b1c4d7/finding/{gd_id}"
    );
    let gd: serde_json::Value = serde_json::from_str(include_str!(
        "../../../events/guardduty/iamuser-tor-caller-akia.json"
    ))
    .unwrap();
    let mut asff: serde_json::Value = serde_json::from_str(include_str!(
        "../../../events/securityhub/imported-guardduty-access-key.json"
    ))
    .unwrap();
    let f = &mut asff["detail"]["findings"][0];
    f["Id"] = arn.clone().into();
    f["Resources"][0]["Id"] = format!("AWS::IAM::AccessKey:{key}").into();
    f["Resources"][0]["Details"]["AwsIamAccessKey"]["AccessKeyId"] = key.into();
    f["Resources"][0]["Details"]["AwsIamAccessKey"]["PrincipalName"] = user.into();
    let mut ocsf: serde_json::Value = serde_json::from_str(include_str!(
        "../../../events/securityhub/v2-guardduty-detection-access-key.json"
    ))
    .unwrap();
    let f = &mut ocsf["detail"]["findings"][0];
    f["finding_info"]["uid"] = arn.into();
    f["actor"]["user"]["name"] = user.into();
    f["actor"]["user"]["credential_uid"] = key.into();
    f["resources"][0]["uid"] = key.into();
    let mut claims = Vec::new();
    for v in [gd, asff, ocsf] {
        let plan = plan_input(v.to_string().as_bytes(), &policy, &Context::default()).unwrap();
        let g = gate(&ledger, plan, &policy, NOW).await.unwrap();
        record(&ledger, &g.claims, &done(&g.plan), NOW)
            .await
            .unwrap();
        claims.extend(g.claims.into_iter().map(|c| c.containment.finding));
    }
    assert_eq!(claims, [gd_id, gd_id, gd_id]);
    assert_eq!(ledger.list(None).await.unwrap().len(), 1);
    assert_eq!(
        ledger
            .slots("aws:111122223333", &hour_of(NOW))
            .await
            .unwrap(),
        1
    );
}

/// A run that claimed and then could not record gives its claims back: the entry is `failed`
/// with no lease, and the next delivery takes it over at once instead of waiting.
#[tokio::test]
async fn a_claim_given_back_is_taken_over_at_once() {
    let ledger = MemoryLedger::default();
    let policy = enforce();
    let mut plan = contain("gina", "f7");
    plan.delivery = Some("event:1".into());
    let g = gate(&ledger, plan, &policy, NOW).await.unwrap();
    abandon(&ledger, &g.claims, NOW).await;
    let e = ledger
        .get("arn:aws:iam::111122223333:user/gina", "f7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.state, State::Failed);
    assert_eq!(e.lease_until, None);
    let mut other = contain("gina", "f7");
    other.delivery = Some("event:2".into());
    let again = gate(&ledger, other, &policy, NOW).await.unwrap();
    assert_eq!(again.claims.len(), 1, "another delivery proceeds at once");
    // A claim another run has moved on since is left alone.
    abandon(&ledger, &g.claims, NOW).await;
    let e = ledger
        .get("arn:aws:iam::111122223333:user/gina", "f7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.state, State::Claimed);
}
