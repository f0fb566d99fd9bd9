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
                Some(Inverse {
                    call: "x".into(),
                    params: serde_json::json!({}),
                }),
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
        Some("aws:111122223333:user/alice")
    );
    assert_eq!(
        key("arn:aws:sts::111122223333:assumed-role/web/i-0abc").as_deref(),
        Some("aws:111122223333:role/web")
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
        principal_key(&session).as_deref(),
        Some("aws:111122223333:role/web")
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
        .get("aws:111122223333:user/bob", "f2")
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
