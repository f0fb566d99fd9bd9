//! The Lambda edge, fed with `events/` files, against moto: seeded principals are contained,
//! a second invocation changes nothing, foreign and malformed events are rejected without a
//! retry, and retryable failures fail the invocation.

use std::sync::Arc;

use aws_sdk_iam::types::StatusType;
use quell_aws::{AwsClients, AwsExecutor, Fixed};
use quell_core::clock::FixedClock;
use quell_core::policy::Mode;
use quell_core::{Context, Policy};
use quell_lambda::{Accepts, Edge, EdgeError, load_policy};
use quell_tests::event;
use quell_tests::{NOW, sdk};
use serde_json::{Value, json};

async fn edge(accepts: Accepts, mode: Mode) -> Edge<Fixed> {
    let policy = Policy {
        mode,
        ..Policy::default()
    };
    edge_with(accepts, policy, NOW).await
}

async fn edge_with(accepts: Accepts, policy: Policy, now: time::OffsetDateTime) -> Edge<Fixed> {
    edge_audited(accepts, policy, now, None).await
}

/// [`edge_with`] publishing to an audit bus.
async fn edge_audited(
    accepts: Accepts,
    policy: Policy,
    now: time::OffsetDateTime,
    audit: Option<(aws_sdk_eventbridge::Client, String)>,
) -> Edge<Fixed> {
    let cfg = sdk().await;
    let clients = AwsClients::new(&cfg);
    let executor = AwsExecutor::new(
        Fixed(clients.clone()),
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(now)),
    );
    Edge::new(accepts, policy, Context::default(), Fixed(clients), audit).with_executor(executor)
}

fn load(file: &str) -> Value {
    serde_json::from_slice(&event(file)).unwrap()
}

/// Creates `user` with two keys; returns the key ids.
async fn seed_user(iam: &aws_sdk_iam::Client, user: &str) -> Vec<String> {
    iam.create_user().user_name(user).send().await.unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let k = iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .unwrap();
        keys.push(k.access_key().unwrap().access_key_id().to_string());
    }
    keys
}

async fn statuses(iam: &aws_sdk_iam::Client, user: &str) -> Vec<(String, StatusType)> {
    iam.list_access_keys()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap().to_string(),
                k.status().unwrap().clone(),
            )
        })
        .collect()
}

fn outcome_statuses(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["action"]["kind"].as_str().unwrap(),
                r["outcome"]["status"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn guardduty_function_contains_the_seeded_user_and_is_idempotent() {
    let iam = aws_sdk_iam::Client::new(&sdk().await);
    let keys = seed_user(&iam, "ci-deployer").await;
    let mut ev = load("guardduty/iamuser-tor-caller-akia.json");
    ev["detail"]["resource"]["accessKeyDetails"]["accessKeyId"] = json!(keys[0]);
    let edge = edge(Accepts::Guardduty, Mode::Enforce).await;

    let first = edge.handle(ev.clone()).await.unwrap();
    assert_eq!(
        outcome_statuses(&first),
        [
            "deactivate_access_key applied",
            "revoke_user_sessions applied",
            "tag_principal applied"
        ]
    );
    let second = edge.handle(ev).await.unwrap();
    assert_eq!(
        outcome_statuses(&second),
        [
            "deactivate_access_key already_in_state",
            "revoke_user_sessions already_in_state",
            "tag_principal already_in_state"
        ]
    );
    let s = statuses(&iam, "ci-deployer").await;
    assert!(
        s.contains(&(keys[0].clone(), StatusType::Inactive))
            && s.contains(&(keys[1].clone(), StatusType::Active))
    );
}

#[tokio::test]
async fn securityhub_function_contains_the_key_in_an_imported_finding() {
    let iam = aws_sdk_iam::Client::new(&sdk().await);
    let keys = seed_user(&iam, "devops-tkim").await;
    let mut ev = load("securityhub/imported-guardduty-access-key.json");
    let r = &mut ev["detail"]["findings"][0]["Resources"][0];
    r["Id"] = json!(format!("AWS::IAM::AccessKey:{}", keys[1]));
    r["Details"]["AwsIamAccessKey"]["AccessKeyId"] = json!(keys[1]);
    // Security Hub's BatchUpdateFindings is not in moto (tests/aws_mocks.rs covers it).
    let mut policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    policy.aws.update_securityhub = false;
    let edge = edge_with(Accepts::Securityhub, policy, NOW).await;
    let report = edge.handle(ev).await.unwrap();
    assert_eq!(report["summary"]["applied"], 3, "{report}");
    assert!(
        statuses(&iam, "devops-tkim")
            .await
            .contains(&(keys[1].clone(), StatusType::Inactive))
    );
    assert!(
        statuses(&iam, "devops-tkim")
            .await
            .contains(&(keys[0].clone(), StatusType::Active))
    );
}

#[tokio::test]
async fn access_analyzer_function_deactivates_dormant_keys_and_is_idempotent() {
    let iam = aws_sdk_iam::Client::new(&sdk().await);
    seed_user(&iam, "legacy-ftp-sync").await;
    let ev = load("access-analyzer/unused-access-key.json");
    let policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    // The keys were just created and never used: 100 days on, both are dormant.
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(100);
    let edge = edge_with(Accepts::AccessAnalyzer, policy, later).await;
    let report = edge.handle(ev.clone()).await.unwrap();
    assert_eq!(
        outcome_statuses(&report),
        [
            "deactivate_dormant_access_keys applied",
            "tag_principal applied"
        ]
    );
    assert!(
        statuses(&iam, "legacy-ftp-sync")
            .await
            .iter()
            .all(|(_, s)| *s == StatusType::Inactive)
    );
    let again = edge.handle(ev).await.unwrap();
    assert_eq!(
        outcome_statuses(&again),
        [
            "deactivate_dormant_access_keys already_in_state",
            "tag_principal already_in_state"
        ]
    );
}

#[tokio::test]
async fn runbook_function_quarantines_the_requested_user() {
    let iam = aws_sdk_iam::Client::new(&sdk().await);
    seed_user(&iam, "contractor-apatel").await;
    let edge = edge(Accepts::Any, Mode::Enforce).await;
    let report = edge
        .handle(load("runbook/quarantine-iam-user.json"))
        .await
        .unwrap();
    assert_eq!(
        outcome_statuses(&report),
        ["quarantine_user applied", "tag_principal applied"]
    );
    let attached = iam
        .list_attached_user_policies()
        .user_name("contractor-apatel")
        .send()
        .await
        .unwrap();
    assert_eq!(
        attached.attached_policies()[0].policy_arn(),
        Some("arn:aws:iam::aws:policy/AWSDenyAll")
    );
}

#[tokio::test]
async fn every_aws_event_file_runs_through_the_runbook_function_in_dry_run() {
    let edge = edge(Accepts::Any, Mode::DryRun).await;
    for dir in ["guardduty", "securityhub", "access-analyzer", "runbook"] {
        for file in quell_tests::json_files(&quell_tests::root().join("events").join(dir)) {
            let report = edge.handle(load(&format!("{dir}/{file}"))).await.unwrap();
            assert_ne!(report["status"], "rejected", "{dir}/{file}: {report}");
            for r in report["results"].as_array().unwrap() {
                assert_eq!(r["outcome"]["status"], "dry_run", "{dir}/{file}");
            }
        }
    }
}

#[tokio::test]
async fn foreign_and_malformed_events_are_rejected_without_a_retry() {
    let edge = edge(Accepts::Guardduty, Mode::Enforce).await;
    let sh = edge
        .handle(load("securityhub/imported-iam8-unused-credentials.json"))
        .await
        .unwrap();
    assert_eq!(sh["status"], "rejected");
    assert!(
        sh["error"]
            .as_str()
            .unwrap()
            .contains("handles aws.guardduty events, not \"aws.securityhub\"")
    );
    let junk = edge.handle(json!({"hello": "world"})).await.unwrap();
    assert_eq!(junk["status"], "rejected");
    let mut bad = load("guardduty/iamuser-tor-caller-akia.json");
    bad["detail"]["resource"]["accessKeyDetails"]["userName"] = json!(["x"]);
    let bad = edge.handle(bad).await.unwrap();
    assert_eq!(
        bad["error"],
        "/detail/resource/accessKeyDetails/userName: expected a string, found an array"
    );
}

#[tokio::test]
async fn retryable_failures_fail_the_invocation() {
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    let throttled = mock!(aws_sdk_iam::Client::get_user)
        .sequence()
        .http_status(400, Some(r#"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"#.to_string()))
        .repeatedly()
        .build();
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, &[&throttled], |c| c
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(std::time::Duration::from_millis(1))
        ));
    let cfg = sdk().await;
    let clients = AwsClients::with(iam, aws_sdk_securityhub::Client::new(&cfg));
    let policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    let edge = Edge::new(
        Accepts::Any,
        policy,
        Context::default(),
        Fixed(clients),
        None,
    );
    let err = edge
        .handle(load("runbook/quarantine-iam-user.json"))
        .await
        .unwrap_err();
    assert!(matches!(err, EdgeError::Retryable { .. }), "{err}");
    assert!(err.to_string().contains("Throttling"));
    let diag: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diag.error_type, "quell.Retryable");
}

#[test]
fn policy_comes_from_the_bundled_file_and_environment() {
    let dir = std::env::temp_dir().join(format!("quell-lambda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.toml");
    std::fs::write(&file, "max_actions = 3\n").unwrap();
    let path = file.to_string_lossy().to_string();
    let p = load_policy(|k| match k {
        "QUELL_POLICY_FILE" => Some(path.clone()),
        "QUELL_MODE" => Some("enforce".into()),
        "QUELL_PROTECTED" => Some("arn:aws:iam::*:user/ceo".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!((p.mode, p.max_actions), (Mode::Enforce, 3));
    assert!(
        p.protected
            .iter()
            .any(|x| x.as_str() == "arn:aws:iam::*:user/ceo")
    );
    assert_eq!(load_policy(|_| None).unwrap(), Policy::default());
    let e = load_policy(|k| (k == "QUELL_MODE").then(|| "on".to_string())).unwrap_err();
    assert!(e.to_string().contains("QUELL_MODE"), "{e}");
}

#[tokio::test]
async fn with_a_ledger_the_function_records_its_containment_once() {
    use quell_ledger::Ledger;
    let cfg = sdk().await;
    let table = quell_tests::unique("quell-ledger");
    let ledger = quell_aws::ledger::DynamoLedger::new(&cfg, &table);
    ledger.ensure_table().await.unwrap();
    let iam = aws_sdk_iam::Client::new(&cfg);
    let user = quell_tests::unique("ledger-fn");
    let keys = seed_user(&iam, &user).await;
    let mut ev = load("guardduty/iamuser-tor-caller-akia.json");
    ev["detail"]["resource"]["accessKeyDetails"]["accessKeyId"] = json!(keys[0]);
    ev["detail"]["resource"]["accessKeyDetails"]["userName"] = json!(user);
    ev["detail"]["id"] = json!(quell_tests::unique("ledger-finding"));
    let edge = edge(Accepts::Guardduty, Mode::Enforce)
        .await
        .with_ledger(ledger, Arc::new(FixedClock(NOW)));
    edge.handle(ev.clone()).await.unwrap();
    let second = edge.handle(ev).await.unwrap();
    assert!(
        outcome_statuses(&second)
            .iter()
            .all(|s| s.ends_with("already_in_state")),
        "{second}"
    );
    let entries = quell_aws::ledger::DynamoLedger::new(&cfg, &table)
        .list(Some(&format!(
            "arn:aws:iam::{}:user/{user}",
            quell_tests::MOTO_ACCOUNT
        )))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, quell_ledger::State::Done);
    assert!(entries[0].history.iter().any(|h| h.contains("run again")));
}

#[tokio::test]
async fn the_runbook_function_releases_from_the_ledger() {
    use quell_ledger::Ledger;
    let cfg = sdk().await;
    let table = quell_tests::unique("quell-ledger");
    let ledger = quell_aws::ledger::DynamoLedger::new(&cfg, &table);
    ledger.ensure_table().await.unwrap();
    let iam = aws_sdk_iam::Client::new(&cfg);
    let user = quell_tests::unique("released-fn");
    seed_user(&iam, &user).await;
    let arn = format!("arn:aws:iam::{}:user/{user}", quell_tests::MOTO_ACCOUNT);
    let edge = edge(Accepts::Any, Mode::Enforce)
        .await
        .with_ledger(ledger, Arc::new(FixedClock(NOW)));
    edge.handle(json!({"runbook": "quarantine", "principal": arn, "reason": "SEC-9"}))
        .await
        .unwrap();
    let attached = |iam: aws_sdk_iam::Client, user: String| async move {
        iam.list_attached_user_policies()
            .user_name(user)
            .send()
            .await
            .unwrap()
            .attached_policies()
            .len()
    };
    assert_eq!(attached(iam.clone(), user.clone()).await, 1);
    // A release without a reason is refused.
    let bad = edge
        .handle(json!({"runbook": "release", "principal": arn}))
        .await
        .unwrap();
    assert_eq!(bad["status"], "rejected");
    let out = edge
        .handle(json!({"runbook": "release", "principal": arn, "reason": "SEC-9 cleared", "requested_by": "oncall@example.com"}))
        .await
        .unwrap();
    assert_eq!(out["containments"], 1, "{out}");
    assert_eq!(attached(iam.clone(), user.clone()).await, 0);
    let entries = quell_aws::ledger::DynamoLedger::new(&cfg, &table)
        .list(Some(&format!(
            "arn:aws:iam::{}:user/{user}",
            quell_tests::MOTO_ACCOUNT
        )))
        .await
        .unwrap();
    assert_eq!(entries[0].state, quell_ledger::State::Released);
    assert_eq!(
        entries[0].released_by.as_deref(),
        Some("oncall@example.com")
    );
}

#[tokio::test]
async fn a_containment_is_checked_again_after_propagation_and_a_new_key_is_contained() {
    let cfg = sdk().await;
    let table = quell_tests::unique("quell-ledger");
    let ledger = quell_aws::ledger::DynamoLedger::new(&cfg, &table);
    ledger.ensure_table().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let queue = sqs
        .create_queue()
        .queue_name(quell_tests::unique("quell-verify"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let iam = aws_sdk_iam::Client::new(&cfg);
    let user = quell_tests::unique("checked");
    let keys = seed_user(&iam, &user).await;
    // IAM allows two keys per user: make room for the one the attacker mints.
    iam.delete_access_key()
        .user_name(&user)
        .access_key_id(&keys[1])
        .send()
        .await
        .unwrap();
    let arn = format!("arn:aws:iam::{}:user/{user}", quell_tests::MOTO_ACCOUNT);
    let mut policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    policy.verify.after_seconds = 1;
    let req = json!({"runbook": "quarantine", "principal": arn, "reason": "SEC-11", "id": quell_tests::unique("f")});
    // A check that cannot be scheduled fails the invocation (the containment holds), so Lambda
    // retries it ...
    let missing = queue.replace("quell-verify", "quell-missing");
    let unscheduled = edge_with(Accepts::Any, policy.clone(), NOW)
        .await
        .with_ledger(
            quell_aws::ledger::DynamoLedger::new(&cfg, &table),
            Arc::new(FixedClock(NOW)),
        )
        .with_verify_queue(sqs.clone(), &missing)
        .handle(req.clone())
        .await;
    assert!(
        matches!(unscheduled, Err(EdgeError::Retryable { .. })),
        "{unscheduled:?}"
    );
    // ... and the retry, finding the containment in place, schedules it.
    let (bus, alerts) = quell_tests::bus_to_queue(
        &cfg,
        &json!({"detail-type": [quell_lambda::ALERT_DETAIL_TYPE]}).to_string(),
    )
    .await;
    let audit = Some((aws_sdk_eventbridge::Client::new(&cfg), bus));
    edge_audited(Accepts::Any, policy.clone(), NOW, audit.clone())
        .await
        .with_ledger(
            quell_aws::ledger::DynamoLedger::new(&cfg, &table),
            Arc::new(FixedClock(NOW)),
        )
        .with_verify_queue(sqs.clone(), &queue)
        .handle(req)
        .await
        .unwrap();
    // The verify function takes the queue's messages.
    let edge = edge_audited(Accepts::VerifyQueue, policy, NOW, audit)
        .await
        .with_ledger(ledger, Arc::new(FixedClock(NOW)));
    // The attacker mints a key in the propagation window.
    let fresh = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key()
        .unwrap()
        .access_key_id()
        .to_string();
    // One delayed check per contained principal.
    let got = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(10)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = got.messages();
    assert_eq!(messages.len(), 1);
    let body: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(body["runbook"], "verify");
    assert_eq!(
        body["principal"],
        format!("arn:aws:iam::{}:user/{user}", quell_tests::MOTO_ACCOUNT)
    );
    // The runbook function receives it as the SQS event source mapping delivers it.
    let event = json!({"Records": [{
        "messageId": messages[0].message_id().unwrap(),
        "receiptHandle": "x", "body": messages[0].body().unwrap(),
        "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:us-east-1:{}:quell-verify", quell_tests::MOTO_ACCOUNT),
        "awsRegion": "us-east-1"}]});
    let out = edge.handle(event).await.unwrap();
    assert_eq!(out["status"], "verified", "{out}");
    let text = out.to_string();
    assert!(text.contains("attacker persistence"), "{text}");
    let keys = iam
        .list_access_keys()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    let status = keys
        .access_key_metadata()
        .iter()
        .find(|k| k.access_key_id() == Some(fresh.as_str()))
        .and_then(|k| k.status().cloned());
    assert_eq!(status, Some(StatusType::Inactive));
    // And a human hears that the containment did not hold.
    let got = sqs
        .receive_message()
        .queue_url(&alerts)
        .wait_time_seconds(5)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let alert: Value = got
        .messages()
        .iter()
        .map(|m| serde_json::from_str::<Value>(m.body().unwrap()).unwrap())
        .find(|e| {
            e["detail"]["subject"]
                .as_str()
                .is_some_and(|s| s.contains("did not hold"))
        })
        .expect("an alert for the broken containment");
    assert!(
        alert["detail"]["text"].as_str().unwrap().contains(&fresh),
        "{alert}"
    );
    // A queue message that is not a verify request is refused: the queue can only contain.
    let release = json!({"Records": [{"body": json!({"runbook": "release", "principal": arn, "reason": "x"}).to_string(), "eventSource": "aws:sqs"}]});
    assert_eq!(edge.handle(release).await.unwrap()["status"], "rejected");
}

#[tokio::test]
async fn expired_containments_are_released_by_the_hourly_run_and_unexpiring_ones_stay() {
    use quell_ledger::{Ledger, State};
    let cfg = sdk().await;
    let table = quell_tests::unique("quell-ledger");
    let ledger = || quell_aws::ledger::DynamoLedger::new(&cfg, &table);
    ledger().ensure_table().await.unwrap();
    let iam = aws_sdk_iam::Client::new(&cfg);
    // A GuardDuty compromise (release_after_hours = 1) and a manual quarantine (never expires).
    let user = quell_tests::unique("expiring");
    let keys = seed_user(&iam, &user).await;
    let kept = quell_tests::unique("kept");
    seed_user(&iam, &kept).await;
    let mut policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    policy.families.credential_compromise.release_after_hours = Some(1);
    let mut ev = load("guardduty/iamuser-tor-caller-akia.json");
    ev["detail"]["id"] = json!(quell_tests::unique("gd"));
    ev["detail"]["resource"]["accessKeyDetails"]["accessKeyId"] = json!(keys[0]);
    ev["detail"]["resource"]["accessKeyDetails"]["userName"] = json!(user);
    edge_with(Accepts::Guardduty, policy.clone(), NOW)
        .await
        .with_ledger(ledger(), Arc::new(FixedClock(NOW)))
        .handle(ev)
        .await
        .unwrap();
    let function = |accepts: Accepts, at: time::OffsetDateTime| {
        let policy = policy.clone();
        let l = ledger();
        async move {
            edge_with(accepts, policy, at)
                .await
                .with_ledger(l, Arc::new(FixedClock(at)))
        }
    };
    let runbook = |at| function(Accepts::Any, at);
    // The hourly release has a function of its own.
    let hourly_run = |at| function(Accepts::ReleaseExpired, at);
    let kept_arn = format!("arn:aws:iam::{}:user/{kept}", quell_tests::MOTO_ACCOUNT);
    runbook(NOW)
        .await
        .handle(json!({"runbook": "quarantine", "principal": kept_arn, "reason": "SEC-12"}))
        .await
        .unwrap();
    let key = |u: &str| format!("arn:aws:iam::{}:user/{u}", quell_tests::MOTO_ACCOUNT);
    let entry = &ledger().list(Some(&key(&user))).await.unwrap()[0];
    assert_eq!(entry.expires.as_deref(), Some("2026-11-23T13:00:00Z"));
    let tags = |u: String| {
        let iam = iam.clone();
        async move {
            iam.list_user_tags()
                .user_name(u)
                .send()
                .await
                .unwrap()
                .tags()
                .len()
        }
    };
    let inline = |u: String| {
        let iam = iam.clone();
        async move {
            iam.list_user_policies()
                .user_name(u)
                .send()
                .await
                .unwrap()
                .policy_names()
                .len()
        }
    };
    assert_eq!(
        (tags(user.clone()).await, inline(user.clone()).await),
        (1, 1)
    );
    let hourly = json!({"runbook": "release_expired"});
    // With no family releasing by itself, the hourly run reads nothing.
    let off = edge_with(Accepts::ReleaseExpired, Policy::default(), NOW)
        .await
        .with_ledger(
            ledger(),
            Arc::new(FixedClock(NOW + time::Duration::hours(2))),
        )
        .handle(hourly.clone())
        .await
        .unwrap();
    assert_eq!(off["status"], "skipped", "{off}");
    // Not yet: nothing is released.
    let early = hourly_run(NOW + time::Duration::minutes(30))
        .await
        .handle(hourly.clone())
        .await
        .unwrap();
    assert_eq!(early["principals"], json!([]), "{early}");
    // Past the expiry: quell's revocation and tag are removed, the key stays inactive, and the
    // manual quarantine stays.
    let later = hourly_run(NOW + time::Duration::hours(2))
        .await
        .handle(hourly.clone())
        .await
        .unwrap();
    let done = later["principals"].as_array().unwrap();
    assert_eq!(done.len(), 1, "{later}");
    assert_eq!(done[0]["principal"], key(&user));
    assert_eq!(done[0]["released"], true);
    assert_eq!(
        (tags(user.clone()).await, inline(user.clone()).await),
        (0, 0)
    );
    assert!(
        statuses(&iam, &user)
            .await
            .contains(&(keys[0].clone(), StatusType::Inactive))
    );
    let entry = &ledger().list(Some(&key(&user))).await.unwrap()[0];
    assert_eq!(entry.state, State::Released);
    assert_eq!(entry.released_by.as_deref(), Some(quell_ledger::EXPIRED_BY));
    assert_eq!(
        ledger().list(Some(&key(&kept))).await.unwrap()[0].state,
        State::Done
    );
    // The next run finds nothing more to do.
    let again = hourly_run(NOW + time::Duration::hours(3))
        .await
        .handle(hourly)
        .await
        .unwrap();
    assert_eq!(again["principals"], json!([]));
}

#[tokio::test]
async fn the_hourly_run_never_lifts_a_containment_quell_did_not_make() {
    use quell_ledger::{Ledger, State};
    let cfg = sdk().await;
    let table = quell_tests::unique("quell-ledger");
    let ledger = || quell_aws::ledger::DynamoLedger::new(&cfg, &table);
    ledger().ensure_table().await.unwrap();
    let iam = aws_sdk_iam::Client::new(&cfg);
    // A human quarantined this user; quell never touched it.
    let user = quell_tests::unique("human-held");
    iam.create_user().user_name(&user).send().await.unwrap();
    let deny_all = "arn:aws:iam::aws:policy/AWSDenyAll";
    iam.attach_user_policy()
        .user_name(&user)
        .policy_arn(deny_all)
        .send()
        .await
        .unwrap();
    // Someone who can write the ledger forges an expired containment of it.
    let forged = quell_ledger::Entry {
        at: "2026-11-20T12:00:00Z".into(),
        actions: vec![quell_ledger::Recorded {
            kind: quell_core::ActionKind::QuarantineUser,
            target: quell_core::plan::Target::Subject(quell_core::model::Subject::IamUser {
                account: quell_tests::MOTO_ACCOUNT.into(),
                name: user.clone(),
            }),
            status: quell_core::report::Status::Applied,
            detail: "attached".into(),
            inverse: Some(quell_tests::inverse(
                "iam:DetachUserPolicy",
                json!({"UserName": user, "PolicyArn": deny_all}),
            )),
        }],
        expires: Some("2026-11-21T12:00:00Z".into()),
        ..quell_tests::ledger_entry(
            &format!("aws:{}:user/{user}", quell_tests::MOTO_ACCOUNT),
            "forged-1",
        )
    };
    assert!(ledger().put(&forged, None).await.unwrap());
    let mut policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    policy.families.credential_compromise.release_after_hours = Some(1);
    let out = edge_with(Accepts::ReleaseExpired, policy, NOW)
        .await
        .with_ledger(ledger(), Arc::new(FixedClock(NOW)))
        .handle(json!({"runbook": "release_expired"}))
        .await;
    // Refused loudly (the invocation fails, so the dead-letter alarm tells a human) ...
    assert!(matches!(out, Err(EdgeError::Retryable { .. })), "{out:?}");
    // ... and the human's quarantine holds.
    let attached: Vec<String> = iam
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_string))
        .collect();
    assert_eq!(attached, [deny_all]);
    let key = format!("aws:{}:user/{user}", quell_tests::MOTO_ACCOUNT);
    assert_eq!(
        ledger().list(Some(&key)).await.unwrap()[0].state,
        State::Done
    );
}

/// A ledger item exactly as quell wrote it before its inverses were typed
/// (`tests/fixtures/ledger-row-2026-11.json`, as DynamoDB holds it: `body` is the entry's JSON),
/// read by today's code: verify finds what it names, and release undoes it.
#[tokio::test]
async fn a_ledger_row_written_before_the_typed_inverses_verifies_and_releases() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use quell_ledger::Ledger;
    let cfg = sdk().await;
    let table = quell_tests::unique("quell-ledger");
    let ledger = quell_aws::ledger::DynamoLedger::new(&cfg, &table);
    ledger.ensure_table().await.unwrap();
    let iam = aws_sdk_iam::Client::new(&cfg);
    let user = quell_tests::unique("old-row");
    let keys = seed_user(&iam, &user).await;
    let finding = quell_tests::unique("old-finding");
    let arn = format!("arn:aws:iam::{}:user/{user}", quell_tests::MOTO_ACCOUNT);
    // The containment the row records, made on IAM (quarantine, revocation, tag)...
    edge(Accepts::Any, Mode::Enforce)
        .await
        .handle(
            json!({"runbook": "quarantine", "principal": arn, "reason": "SEC-9", "id": finding}),
        )
        .await
        .unwrap();
    // ... and the row, written as the code of November 2026 wrote it.
    let body =
        std::fs::read_to_string(quell_tests::root().join("tests/fixtures/ledger-row-2026-11.json"))
            .unwrap()
            .replace("{ACCOUNT}", quell_tests::MOTO_ACCOUNT)
            .replace("{USER}", &user)
            .replace("{FINDING}", &finding)
            .replace("{KEY}", &keys[0]);
    let entry: Value = serde_json::from_str(&body).unwrap();
    let s = |v: &str| AttributeValue::S(v.to_string());
    aws_sdk_dynamodb::Client::new(&cfg)
        .put_item()
        .table_name(&table)
        .item("pk", s(entry["principal"].as_str().unwrap()))
        .item("sk", s(&finding))
        .item("body", s(&body))
        .item("version", AttributeValue::N("2".into()))
        .item("state", s("done"))
        .item("scope", s(entry["scope"].as_str().unwrap()))
        .item("at", s("2026-11-23T12:00:00Z"))
        .send()
        .await
        .unwrap();
    let key = format!("aws:{}:user/{user}", quell_tests::MOTO_ACCOUNT);
    let read = ledger.list(Some(&key)).await.unwrap();
    assert_eq!(read.len(), 1);
    assert!(
        read[0]
            .actions
            .iter()
            .all(|a| matches!(a.inverse, Some(quell_core::report::Inverse::Aws(_)))),
        "{:?}",
        read[0].actions
    );

    let edge = edge(Accepts::Any, Mode::Enforce)
        .await
        .with_ledger(ledger, Arc::new(FixedClock(NOW)));
    // Verify reads the typed inverses: the key the row says quell deactivated is active, so it
    // is deactivated again; the quarantine and the revocation are still in place.
    let checked = edge
        .handle(json!({"runbook": "verify", "principal": arn, "reason": "check"}))
        .await
        .unwrap();
    let said = checked["steps"].to_string();
    assert!(said.contains("AWSDenyAll is still attached"), "{said}");
    // The row's revocation (the quarantine runbook wrote none) is put back with its cut-off.
    assert!(
        said.contains(
            "QuellRevokeOlderSessions was removed; put back with cut-off 2026-11-23T12:00:00Z"
        ),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "{} was deactivated by quell and is active again",
            keys[0]
        )),
        "{said}"
    );
    // Release undoes each recorded action through its typed inverse.
    let out = edge
        .handle(json!({"runbook": "release", "principal": arn, "reason": "SEC-9 cleared", "requested_by": "oncall@example.com"}))
        .await
        .unwrap();
    assert_eq!(out["containments"], 1, "{out}");
    let attached = iam
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(attached.attached_policies().is_empty());
    let inline = iam
        .list_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(
        inline.policy_names().is_empty(),
        "{:?}",
        inline.policy_names()
    );
    let tags = iam.list_user_tags().user_name(&user).send().await.unwrap();
    assert!(tags.tags().is_empty(), "{:?}", tags.tags());
    // The key stays inactive: release reactivates none without a human asking.
    assert!(
        statuses(&iam, &user)
            .await
            .iter()
            .any(|(k, st)| k == &keys[0] && *st == StatusType::Inactive)
    );
}

/// The runbook, verify and release-expired functions each take only their own job: a verify
/// message or the hourly release sent to the runbook function, or a runbook request sent to the
/// verify or release-expired function, is refused with no action.
#[tokio::test]
async fn each_ledger_function_takes_only_its_own_job() {
    let sqs = json!({"Records": [{"body": json!({"runbook": "verify", "principal": "arn:aws:iam::111122223333:user/a", "reason": "x"}).to_string(), "eventSource": "aws:sqs"}]});
    let hourly = json!({"runbook": "release_expired"});
    let request = json!({"runbook": "quarantine", "principal": "arn:aws:iam::111122223333:user/a", "reason": "x"});
    for (accepts, refused) in [
        (Accepts::Any, vec![sqs.clone(), hourly.clone()]),
        (Accepts::VerifyQueue, vec![hourly.clone(), request.clone()]),
        (Accepts::ReleaseExpired, vec![sqs.clone(), request.clone()]),
    ] {
        let edge = edge(accepts, Mode::Enforce).await;
        for payload in refused {
            let out = edge.handle(payload.clone()).await.unwrap();
            assert_eq!(out["status"], "rejected", "{accepts:?} {payload}: {out}");
        }
    }
}

/// An alert is never just a log line: when it cannot be published, the invocation fails so
/// Lambda retries it (and, past its retries, the dead-letter alarm fires).
#[tokio::test]
async fn an_alert_that_cannot_be_published_fails_the_invocation() {
    let cfg = sdk().await;
    let audit = Some((
        aws_sdk_eventbridge::Client::new(&cfg),
        quell_tests::unique("no-such-bus"),
    ));
    let edge = edge_audited(Accepts::Guardduty, Policy::default(), NOW, audit).await;
    // A foreign event: rejected, which owes a human an alert.
    let out = edge
        .handle(json!({"source": "my.app", "detail-type": "x", "detail": {}}))
        .await;
    assert!(matches!(out, Err(EdgeError::Retryable { .. })), "{out:?}");
}

/// The containment's report reaches the quell bus (published by the pipeline beside recording
/// it), with and without a ledger.
#[tokio::test]
async fn a_containment_report_reaches_the_audit_bus() {
    let cfg = sdk().await;
    let iam = aws_sdk_iam::Client::new(&cfg);
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let user = quell_tests::unique("audited");
    seed_user(&iam, &user).await;
    let arn = format!("arn:aws:iam::{}:user/{user}", quell_tests::MOTO_ACCOUNT);
    let (bus, reports) = quell_tests::bus_to_queue(
        &cfg,
        &json!({"detail-type": [quell_aws::audit::DETAIL_TYPE]}).to_string(),
    )
    .await;
    let policy = Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    };
    let audit = Some((aws_sdk_eventbridge::Client::new(&cfg), bus));
    let req = json!({"runbook": "quarantine", "principal": arn, "reason": "SEC-12", "id": quell_tests::unique("f")});
    edge_audited(Accepts::Any, policy, NOW, audit)
        .await
        .handle(req)
        .await
        .unwrap();
    let got = sqs
        .receive_message()
        .queue_url(&reports)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(got.messages()[0].body().unwrap()).unwrap();
    assert_eq!(body["detail-type"], quell_aws::audit::DETAIL_TYPE);
    assert!(body["detail"].to_string().contains(&user), "{body}");
}
