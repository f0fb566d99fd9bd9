//! The ledger in a real DynamoDB (moto): two concurrent invocations of one finding produce one
//! containment and one record; a containment in force never expires from the table.

use std::sync::Arc;

use quell_aws::ledger::DynamoLedger;
use quell_aws::{AwsClients, AwsExecutor, Fixed};
use quell_core::clock::FixedClock;
use quell_core::policy::Mode;
use quell_core::report::Status;
use quell_core::{ActionKind, Context, Policy, plan_input};
use quell_ledger::{Ledger, State};
use quell_tests::NOW;
use quell_tests::{MOTO_ACCOUNT, moto_sdk, unique};

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
    let key = format!("arn:aws:iam::{MOTO_ACCOUNT}:user/{user}");
    let entries = ledger.list(Some(&key)).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, State::Done);
    let q = entries[0]
        .actions
        .iter()
        .find(|r| r.kind == ActionKind::QuarantineUser)
        .unwrap();
    assert_eq!(q.inverse.as_ref().unwrap().call(), "iam:DetachUserPolicy");
    // The finding index finds it too.
    assert_eq!(
        ledger.by_finding(&entries[0].finding).await.unwrap().len(),
        1
    );
    // Both invocations took a breaker slot beside their claim; the one that lost the claim
    // gave its slot back: one containment, one slot.
    assert_eq!(
        ledger
            .slots(&format!("aws:{MOTO_ACCOUNT}"), &quell_ledger::hour_of(NOW))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_containment_in_force_never_expires_and_a_released_one_does_after_a_year() {
    let cfg = moto_sdk().await;
    let table = unique("quell-ledger");
    let ledger = DynamoLedger::new(&cfg, &table);
    assert!(ledger.ensure_table().await.unwrap());
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let ttl_of = |pk: String| {
        let ddb = ddb.clone();
        let table = table.clone();
        async move {
            ddb.get_item()
                .table_name(table)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
                .key(
                    "sk",
                    aws_sdk_dynamodb::types::AttributeValue::S("f-1".into()),
                )
                .send()
                .await
                .unwrap()
                .item()
                .unwrap()
                .get("ttl")
                .and_then(|v| v.as_n().ok())
                .map(|n| n.parse::<i64>().unwrap())
        }
    };
    let principal = format!("arn:aws:iam::{MOTO_ACCOUNT}:user/kept");
    let mut entry = quell_tests::ledger_entry(&principal, "f-1");
    assert!(ledger.put(&entry, None).await.unwrap());
    assert_eq!(ttl_of(principal.clone()).await, None, "in force: no ttl");
    assert!(
        quell_ledger::mark_released(&ledger, &entry, "oncall", NOW)
            .await
            .unwrap()
    );
    let ttl = ttl_of(principal.clone()).await.expect("released: a ttl");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(ttl > now + 360 * 24 * 3600, "about a year out: {ttl}");
    // Contained again (a new severity): in force, so the ttl is gone again.
    entry.version = 3;
    entry.state = State::Done;
    assert!(ledger.put(&entry, Some(2)).await.unwrap());
    assert_eq!(ttl_of(principal).await, None);
}

/// A row that does not parse (written by hand, by an older or a foreign writer) is reported and
/// skipped: the listing, and so the hourly release and `quell ledger list`, go on.
#[tokio::test]
async fn a_row_that_does_not_parse_never_stops_a_scan() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let cfg = moto_sdk().await;
    let table = unique("quell-ledger");
    let ledger = DynamoLedger::new(&cfg, &table);
    assert!(ledger.ensure_table().await.unwrap());
    let principal = format!("arn:aws:iam::{MOTO_ACCOUNT}:user/readable");
    assert!(
        ledger
            .put(&quell_tests::ledger_entry(&principal, "f-1"), None)
            .await
            .unwrap()
    );
    aws_sdk_dynamodb::Client::new(&cfg)
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S(principal.clone()))
        .item("sk", AttributeValue::S("f-garbage".into()))
        .item("body", AttributeValue::S("{\"principal\": 42".into()))
        .item("version", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let all = ledger.list(None).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let one = ledger.list(Some(&principal)).await.unwrap();
    assert_eq!(one.len(), 1);
}
