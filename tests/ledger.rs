//! The ledger in a real DynamoDB (moto): two concurrent invocations of one finding produce one
//! containment and one record.

use std::sync::Arc;

use quell_aws::ledger::DynamoLedger;
use quell_aws::{AwsClients, AwsExecutor, Fixed};
use quell_core::clock::FixedClock;
use quell_core::policy::Mode;
use quell_core::report::Status;
use quell_core::{ActionKind, Context, Policy, plan_input};
use quell_ledger::{Ledger, State};
use quell_tests::{MOTO_ACCOUNT, moto_sdk, unique};

const NOW: time::OffsetDateTime = time::macros::datetime!(2026-11-23 12:00:00 UTC);

#[tokio::test]
async fn two_concurrent_invocations_of_one_finding_make_one_containment_and_one_record() {
    let cfg = moto_sdk().await;
    let ledger = DynamoLedger::new(&cfg, &unique("quell-ledger"));
    assert!(ledger.ensure_table().await.unwrap());
    let iam = aws_sdk_iam::Client::new(&cfg);
    let user = unique("raced");
    iam.create_user().user_name(&user).send().await.unwrap();
    let policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    let req = format!(
        r#"{{"runbook":"quarantine","principal":"arn:aws:iam::{MOTO_ACCOUNT}:user/{user}","reason":"race","id":"{}"}}"#,
        unique("finding")
    );
    let plan = plan_input(req.as_bytes(), &policy, &Context::default()).unwrap();
    let invocation = || async {
        let exec = AwsExecutor::new(
            Fixed(AwsClients::new(&cfg)),
            policy.clone(),
            Context::default(),
            Arc::new(FixedClock(NOW)),
        );
        let gated = quell_ledger::gate(&ledger, plan.clone(), &policy, NOW)
            .await
            .unwrap();
        let report = exec.execute(&gated.plan).await;
        quell_ledger::record(&ledger, &gated.claims, &report, NOW)
            .await
            .unwrap();
        (gated.claims.len(), report)
    };
    let ((a, ra), (b, rb)) = tokio::join!(invocation(), invocation());
    assert_eq!(a + b, 1, "exactly one invocation holds the containment");
    let applied = [ra, rb]
        .iter()
        .flat_map(|r| r.results.iter())
        .filter(|r| {
            r.action.kind == ActionKind::QuarantineUser && r.outcome.status == Status::Applied
        })
        .count();
    assert_eq!(applied, 1);
    let key = format!("aws:{MOTO_ACCOUNT}:user/{user}");
    let entries = ledger.list(Some(&key)).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, State::Done);
    let q = entries[0]
        .actions
        .iter()
        .find(|r| r.kind == ActionKind::QuarantineUser)
        .unwrap();
    assert_eq!(q.inverse.as_ref().unwrap().call, "iam:DetachUserPolicy");
    // The finding index finds it too.
    assert_eq!(
        ledger.by_finding(&entries[0].finding).await.unwrap().len(),
        1
    );
}
