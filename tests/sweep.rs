//! The AWS dormant-key sweep against moto with hundreds of users: used, unused, inactive,
//! exempted and protected keys; a second run changes nothing; the time source is injected.
//!
//! moto cannot backdate keys, so the main test writes the credential report itself from moto's
//! real users and key creation times, with chosen last-use dates, and the sweep acts on moto
//! (`ListAccessKeys`, `UpdateAccessKey`). `the_report_is_generated_and_read_from_moto` covers
//! fetching the real report.

use aws_sdk_iam::types::{StatusType, Tag};
use quell_aws::sweep::{SweepOptions, credential_report, sweep_account, sweep_report};
use quell_core::policy::Pattern;
use quell_core::report::Status;
use quell_core::{Context, Policy};
use quell_tests::{MOTO_ACCOUNT, unique};
use time::OffsetDateTime;

const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

/// The sweeps' own moto: the credential report covers every user of the account.
async fn sdk() -> aws_config::SdkConfig {
    quell_tests::sweep_sdk().await
}

async fn iam() -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&sdk().await)
}

fn opts(policy: Policy, now: OffsetDateTime, enforce: bool) -> SweepOptions {
    SweepOptions {
        account: MOTO_ACCOUNT.into(),
        policy,
        ctx: Context::default(),
        now,
        enforce,
        concurrency: 8,
        progress: None,
    }
}

fn fmt(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// key 1 used yesterday, key 2 never used and old: only key 2 is dormant
    Mixed,
    /// both keys unused for a year
    BothDormant,
    /// key 2 dormant but already inactive
    Inactive,
    /// dormant, but the user carries the exemption tag
    Exempt,
    /// dormant, but the user matches a protection pattern
    Protected,
    /// never used but created recently
    Fresh,
}

#[tokio::test]
async fn hundreds_of_users_only_dormant_active_keys_are_disabled_and_a_second_run_changes_nothing()
{
    let iam = iam().await;
    let now = OffsetDateTime::now_utc();
    let kinds = [
        Kind::Mixed,
        Kind::BothDormant,
        Kind::Inactive,
        Kind::Exempt,
        Kind::Protected,
        Kind::Fresh,
    ];
    let prefix = unique("sweep");
    let mut rows = vec![HEADER.to_string()];
    let mut expected_disabled = Vec::new();
    let mut expected_active = Vec::new();
    // Users first; then every first key, then (a second later) every second key, so a user's two
    // keys never share a creation second (that case has its own test below).
    let users: Vec<(Kind, String)> = (0..240)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let user = if kind == Kind::Protected {
                format!("breakglass-{prefix}-{i}")
            } else {
                format!("{prefix}-{i}")
            };
            (kind, user)
        })
        .collect();
    for (kind, user) in &users {
        iam.create_user().user_name(user).send().await.unwrap();
        if *kind == Kind::Exempt {
            iam.tag_user()
                .user_name(user)
                .tags(
                    Tag::builder()
                        .key("quell:exempt")
                        .value("SEC-9")
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
    }
    let mut all_keys: Vec<Vec<(String, OffsetDateTime)>> = vec![Vec::new(); users.len()];
    for pass in 0..2 {
        if pass == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        for (i, (_, user)) in users.iter().enumerate() {
            let k = iam
                .create_access_key()
                .user_name(user)
                .send()
                .await
                .unwrap();
            let k = k.access_key().unwrap();
            let created =
                OffsetDateTime::from_unix_timestamp(k.create_date().unwrap().secs()).unwrap();
            all_keys[i].push((k.access_key_id().to_string(), created));
        }
    }
    for (i, (kind, user)) in users.iter().enumerate() {
        let (kind, user) = (*kind, user.clone());
        let mut keys = all_keys[i].clone();
        let keys_real: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        if kind == Kind::Inactive {
            iam.update_access_key()
                .user_name(&user)
                .access_key_id(&keys[1].0)
                .status(StatusType::Inactive)
                .send()
                .await
                .unwrap();
        }
        // The report as AWS would write it for this world: the keys were created a year before
        // `now` for every kind but Fresh. We keep the real creation seconds so pairing works,
        // and put the sweep's clock a year ahead instead.
        let k1_used = (kind == Kind::Mixed).then(|| fmt(now + time::Duration::days(364)));
        let k2_active = kind != Kind::Inactive;
        // Fresh keys: the report says they were created a day before the sweep's clock.
        if kind == Kind::Fresh {
            keys[0].1 = now + time::Duration::days(364);
            keys[1].1 = now + time::Duration::days(364);
        }
        rows.push(format!(
            "{user},arn:aws:iam::{MOTO_ACCOUNT}:user/{user},{},false,N/A,N/A,N/A,false,true,{},{},us-east-1,s3,{k2_active},{},{},N/A,N/A,false,N/A,false,N/A",
            fmt(keys[0].1),
            fmt(keys[0].1),
            k1_used.unwrap_or_else(|| "N/A".into()),
            fmt(keys[1].1),
            "N/A", // key 2 is never used
        ));
        match kind {
            Kind::Mixed => {
                expected_active.push((user.clone(), keys[0].0.clone()));
                expected_disabled.push((user.clone(), keys[1].0.clone()));
            }
            Kind::BothDormant => {
                expected_disabled.push((user.clone(), keys[0].0.clone()));
                expected_disabled.push((user.clone(), keys[1].0.clone()));
            }
            Kind::Inactive => expected_disabled.push((user.clone(), keys[0].0.clone())),
            Kind::Exempt | Kind::Protected => {
                expected_active.push((user.clone(), keys[0].0.clone()));
                expected_active.push((user.clone(), keys[1].0.clone()));
            }
            Kind::Fresh => {
                expected_active.push((user.clone(), keys_real[0].clone()));
                expected_active.push((user.clone(), keys_real[1].clone()));
            }
        }
    }
    let csv = rows.join("\n");
    let mut policy = Policy::default();
    policy.protected.push(Pattern::new("breakglass-*").unwrap());
    let clock = now + time::Duration::days(365);

    // Dry-run first: nothing changes.
    let dry = sweep_report(&iam, &csv, &opts(policy.clone(), clock, false))
        .await
        .unwrap();
    assert!(dry.count(Status::DryRun) > 0);
    assert_eq!(dry.count(Status::Applied), 0);

    // Over the sweep's own cap (default 25): nothing is written, every change is withheld and
    // said so.
    let capped = sweep_report(&iam, &csv, &opts(policy.clone(), clock, true))
        .await
        .unwrap();
    assert_eq!(capped.count(Status::Applied), 0);
    assert_eq!(capped.count(Status::DryRun), 0);
    let why = capped.withheld.as_deref().expect("withheld");
    assert!(why.contains("max_sweep_writes_per_account"), "{why}");
    assert!(
        capped
            .keys
            .iter()
            .filter(|k| k.outcome.detail.starts_with("withheld"))
            .count()
            >= 25
    );
    let (user, key) = &expected_disabled[0];
    let listed = iam.list_access_keys().user_name(user).send().await.unwrap();
    assert!(
        listed
            .access_key_metadata()
            .iter()
            .any(|k| k.access_key_id() == Some(key.as_str())
                && k.status() == Some(&aws_sdk_iam::types::StatusType::Active)),
        "a withheld sweep disabled {key}"
    );
    policy.breaker.max_sweep_writes_per_account = 1000;

    let first = sweep_report(&iam, &csv, &opts(policy.clone(), clock, true))
        .await
        .unwrap();
    assert_eq!(first.users, 240);
    let applied: Vec<(String, String)> = first
        .keys
        .iter()
        .filter(|k| k.outcome.status == Status::Applied)
        .map(|k| (k.user.clone(), k.access_key_id.clone().unwrap()))
        .collect();
    assert_eq!(
        applied.len(),
        expected_disabled.len(),
        "{:?}",
        first
            .keys
            .iter()
            .filter(|k| k.outcome.status != Status::Applied)
            .take(5)
            .collect::<Vec<_>>()
    );
    for (user, key) in &expected_disabled {
        assert!(
            applied.contains(&(user.clone(), key.clone())),
            "{user} {key} should be disabled"
        );
    }
    // The exempted and protected users are reported, not touched.
    let skipped: Vec<&str> = first
        .keys
        .iter()
        .filter(|k| k.outcome.status == Status::Skipped)
        .map(|k| k.outcome.detail.as_str())
        .collect();
    assert!(skipped.iter().any(|d| d.contains("exemption tag")));
    assert!(skipped.iter().any(|d| d.contains("protected principal")));
    for (user, key) in &expected_active {
        let keys = iam.list_access_keys().user_name(user).send().await.unwrap();
        let k = keys
            .access_key_metadata()
            .iter()
            .find(|k| k.access_key_id() == Some(key))
            .unwrap();
        assert_eq!(
            k.status(),
            Some(&StatusType::Active),
            "{user} {key} must stay active"
        );
    }

    // Second run, with the state the first run left: the report now shows those keys inactive.
    let after: String = csv
        .lines()
        .map(|l| {
            let mut cells: Vec<String> = l.split(',').map(str::to_string).collect();
            if let Some(user) = cells.first().cloned() {
                for (slot_col, rot_col) in [(8usize, 9usize), (13, 14)] {
                    if cells.len() > rot_col && applied.iter().any(|(u, _)| *u == user) {
                        let disabled_here = first.keys.iter().any(|k| {
                            k.user == user
                                && k.outcome.status == Status::Applied
                                && k.slot == if slot_col == 8 { 1 } else { 2 }
                        });
                        if disabled_here {
                            cells[slot_col] = "false".into();
                        }
                    }
                }
            }
            cells.join(",")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let second = sweep_report(&iam, &after, &opts(policy, clock, true))
        .await
        .unwrap();
    assert_eq!(
        second.count(Status::Applied),
        0,
        "a second run must change nothing"
    );
}

#[tokio::test]
async fn the_report_is_generated_and_read_from_moto() {
    let iam = iam().await;
    let user = unique("report");
    iam.create_user().user_name(&user).send().await.unwrap();
    iam.create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    let csv = credential_report(&iam).await.unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .starts_with("user,arn,user_creation_time")
    );
    assert!(csv.contains(&user));
    // Against the real report: a year later, this user's never-used key is dormant.
    let report = sweep_account(
        &iam,
        &opts(
            Policy::default(),
            OffsetDateTime::now_utc() + time::Duration::days(365),
            false,
        ),
    )
    .await
    .unwrap();
    assert!(
        report
            .keys
            .iter()
            .any(|k| k.user == user && k.outcome.status == Status::DryRun)
    );
    // Today, nothing of this user is dormant.
    let report = sweep_account(
        &iam,
        &opts(Policy::default(), OffsetDateTime::now_utc(), false),
    )
    .await
    .unwrap();
    assert!(!report.keys.iter().any(|k| k.user == user));
}

#[tokio::test]
async fn twin_keys_created_in_the_same_second_are_never_guessed() {
    let iam = iam().await;
    let user = unique("twins");
    iam.create_user().user_name(&user).send().await.unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let k = iam
            .create_access_key()
            .user_name(&user)
            .send()
            .await
            .unwrap();
        let k = k.access_key().unwrap();
        keys.push((
            k.access_key_id().to_string(),
            OffsetDateTime::from_unix_timestamp(k.create_date().unwrap().secs()).unwrap(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    // The report claims both slots were rotated in the same second and that slot 2 was used
    // recently: the sweep cannot tell the keys apart from the report, so it asks
    // GetAccessKeyLastUsed for each; moto reports neither used, so both are provably dormant.
    let t = fmt(keys[0].1);
    let csv = format!(
        "{HEADER}\n{user},arn:aws:iam::{MOTO_ACCOUNT}:user/{user},{t},false,N/A,N/A,N/A,false,true,{t},N/A,N/A,N/A,true,{t},{},us-east-1,s3,false,N/A,false,N/A",
        fmt(now + time::Duration::days(364))
    );
    if keys[0].1.unix_timestamp() != keys[1].1.unix_timestamp() {
        // The keys landed in different seconds: pairing is exact and only slot 1 is dormant.
        let r = sweep_report(
            &iam,
            &csv,
            &opts(Policy::default(), now + time::Duration::days(365), false),
        )
        .await
        .unwrap();
        assert_eq!(r.keys.len(), 1);
        assert_eq!(r.keys[0].access_key_id.as_deref(), Some(keys[0].0.as_str()));
        return;
    }
    let r = sweep_report(
        &iam,
        &csv,
        &opts(Policy::default(), now + time::Duration::days(365), false),
    )
    .await
    .unwrap();
    let named: Vec<&str> = r
        .keys
        .iter()
        .filter_map(|k| k.access_key_id.as_deref())
        .collect();
    assert_eq!(named.len(), 2, "{r:?}");
}

#[tokio::test]
async fn the_scheduler_requests_one_sweep_per_account_and_the_sweeper_sweeps_it() {
    use quell_lambda::sweep::{AccountList, Scheduler, Sweeper};
    let cfg = sdk().await;
    let eb = aws_sdk_eventbridge::Client::new(&cfg);
    let sqs = aws_sdk_sqs::Client::new(&cfg);
    let (bus, url) = quell_tests::bus_to_queue(
        &cfg,
        r#"{"source":["quell"],"detail-type":["Sweep Requested"]}"#,
    )
    .await;

    // 12 accounts: two PutEvents calls (10 entries each at most).
    let accounts: Vec<String> = (0..12).map(|i| format!("1000000000{i:02}")).collect();
    let scheduler = Scheduler {
        accounts: AccountList::Explicit(accounts.clone()),
        eventbridge: eb.clone(),
        bus: bus.clone(),
    };
    let out = scheduler.handle().await.unwrap();
    assert_eq!(out["requested"], 12);
    let mut got = Vec::new();
    for _ in 0..3 {
        let msgs = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in msgs.messages() {
            let ev: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(ev["detail-type"], "Sweep Requested");
            got.push(ev);
        }
    }
    let mut named: Vec<String> = got
        .iter()
        .map(|e| e["detail"]["account"].as_str().unwrap().to_string())
        .collect();
    named.sort();
    assert_eq!(named, accounts);

    // The sweeper takes such an event for moto's account: a dry-run sweep report comes back.
    let sweeper = Sweeper {
        source: quell_aws::Fixed(quell_aws::AwsClients::new(&cfg)),
        policy: Policy::default(),
        ctx: Context::default(),
        clock: std::sync::Arc::new(quell_core::clock::FixedClock(OffsetDateTime::now_utc())),
        audit: None,
        ledger: None,
    };
    let mut ev = got[0].clone();
    ev["detail"]["account"] = serde_json::json!(MOTO_ACCOUNT);
    let report = sweeper.handle(ev).await.unwrap();
    assert_eq!(report["account"], MOTO_ACCOUNT);
    assert_eq!(report["enforce"], false);
    // A foreign event or a bad account is rejected, not retried.
    let bad = sweeper.handle(serde_json::json!({"source": "quell", "detail-type": "Sweep Requested", "detail": {"account": "12"}})).await.unwrap();
    assert_eq!(bad["status"], "rejected");
    let foreign = sweeper
        .handle(quell_tests::event_json(
            "guardduty/iamuser-tor-caller-akia.json",
        ))
        .await
        .unwrap();
    assert_eq!(foreign["status"], "rejected");

    // Only quell's scheduler asks for sweeps: an event sent from another account, or naming an
    // account the scheduler never lists, is rejected before any call.
    let mut policy = Policy::default();
    policy.aws.sweep_accounts = accounts.clone();
    let guarded = Sweeper {
        source: quell_aws::Fixed(quell_aws::AwsClients::new(&cfg)),
        policy,
        ctx: Context {
            account: Some(MOTO_ACCOUNT.into()),
            ..Context::default()
        },
        clock: std::sync::Arc::new(quell_core::clock::FixedClock(OffsetDateTime::now_utc())),
        audit: None,
        ledger: None,
    };
    let mut elsewhere = got[0].clone();
    elsewhere["account"] = serde_json::json!("999988887777");
    let r = guarded.handle(elsewhere).await.unwrap();
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("only quell's scheduler")
    );
    let mut unlisted = got[0].clone();
    unlisted["account"] = serde_json::json!(MOTO_ACCOUNT);
    unlisted["detail"]["account"] = serde_json::json!("555566667777");
    let r = guarded.handle(unlisted).await.unwrap();
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(r["error"].as_str().unwrap().contains("aws.sweep_accounts"));
    let mut listed = got[0].clone();
    listed["account"] = serde_json::json!(MOTO_ACCOUNT);
    assert_eq!(
        guarded.handle(listed).await.unwrap()["account"],
        got[0]["detail"]["account"]
    );
}

#[tokio::test]
async fn the_organization_lists_active_accounts() {
    let cfg = sdk().await;
    let org = aws_sdk_organizations::Client::new(&cfg);
    let _ = org
        .create_organization()
        .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
        .send()
        .await;
    let created = org
        .create_account()
        .account_name(unique("member"))
        .email(format!("{}@example.com", unique("m")))
        .send()
        .await
        .unwrap();
    assert!(created.create_account_status().is_some());
    let accounts = quell_aws::audit::organization_accounts(&org).await.unwrap();
    assert!(accounts.len() >= 2, "{accounts:?}");
    assert!(
        accounts
            .iter()
            .all(|a| quell_core::model::ids::is_account(a))
    );
}

#[tokio::test]
async fn dormant_console_passwords_are_deleted_only_when_asked_and_never_for_exempt_users() {
    let iam = iam().await;
    let now = OffsetDateTime::now_utc();
    let plain = unique("pw-plain");
    let exempt = unique("pw-exempt");
    for u in [&plain, &exempt] {
        iam.create_user().user_name(u).send().await.unwrap();
        iam.create_login_profile()
            .user_name(u)
            .password("Quell-test-Passw0rd!")
            .send()
            .await
            .unwrap();
    }
    iam.tag_user()
        .user_name(&exempt)
        .tags(
            Tag::builder()
                .key("quell:exempt")
                .value("x")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let row = |u: &str| {
        format!(
            "{u},arn:aws:iam::{MOTO_ACCOUNT}:user/{u},{t},true,N/A,{t},N/A,false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A",
            t = fmt(now)
        )
    };
    let csv = format!("{HEADER}\n{}\n{}", row(&plain), row(&exempt));
    let clock = now + time::Duration::days(365);

    // Default policy: flagged only.
    let r = sweep_report(&iam, &csv, &opts(Policy::default(), clock, true))
        .await
        .unwrap();
    assert_eq!(r.passwords.len(), 2);
    assert!(
        r.passwords
            .iter()
            .all(|p| p.outcome.status == Status::Skipped)
    );
    assert!(
        iam.get_login_profile()
            .user_name(&plain)
            .send()
            .await
            .is_ok()
    );

    let mut policy = Policy::default();
    policy.aws.delete_login_profile = true;
    let r = sweep_report(&iam, &csv, &opts(policy, clock, true))
        .await
        .unwrap();
    let by_user = |u: &str| {
        r.passwords
            .iter()
            .find(|p| p.user == u)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(by_user(&plain).status, Status::Applied);
    assert_eq!(by_user(&exempt).status, Status::Skipped);
    assert!(by_user(&exempt).detail.contains("exemption tag"));
    assert!(
        iam.get_login_profile()
            .user_name(&plain)
            .send()
            .await
            .is_err()
    );
    assert!(
        iam.get_login_profile()
            .user_name(&exempt)
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn unused_roles_are_flagged_or_quarantined_and_service_and_exempt_roles_are_not() {
    let iam = iam().await;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let plain = unique("old-lambda");
    let exempt = unique("kept-role");
    let linked = unique("linked");
    iam.create_role()
        .role_name(&plain)
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap();
    iam.create_role()
        .role_name(&exempt)
        .assume_role_policy_document(trust)
        .tags(
            Tag::builder()
                .key("quell:exempt")
                .value("x")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    iam.create_role()
        .role_name(&linked)
        .path("/aws-service-role/example.amazonaws.com/")
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap();
    let clock = OffsetDateTime::now_utc() + time::Duration::days(365);
    // A report with no users: roles come from the bulk account read, and no key of the other
    // tests sharing this moto is touched (a year on, every key in moto looks dormant).
    let no_users = HEADER;
    let mine = |r: &quell_aws::sweep::SweepReport| -> Vec<(String, Status)> {
        let mut v: Vec<(String, Status)> = r
            .roles
            .iter()
            .filter(|f| [&plain, &exempt, &linked].contains(&&f.role))
            .map(|f| (f.role.clone(), f.outcome.status))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    // Default policy: flagged, not changed.
    let r = sweep_report(&iam, no_users, &opts(Policy::default(), clock, true))
        .await
        .unwrap();
    let mut want = vec![
        (exempt.clone(), Status::Skipped),
        (plain.clone(), Status::Skipped),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        mine(&r),
        want,
        "the service-linked role is not even reported"
    );

    let mut policy = Policy::default();
    policy.aws.quarantine_unused_roles = true;
    let r = sweep_report(&iam, no_users, &opts(policy.clone(), clock, true))
        .await
        .unwrap();
    let mut want = vec![
        (exempt.clone(), Status::Skipped),
        (plain.clone(), Status::Applied),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(mine(&r), want);
    let attached = |role: String| {
        let iam = iam.clone();
        async move {
            iam.list_attached_role_policies()
                .role_name(role)
                .send()
                .await
                .unwrap()
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        attached(plain.clone()).await,
        ["arn:aws:iam::aws:policy/AWSDenyAll"]
    );
    assert!(attached(exempt.clone()).await.is_empty());
    // What the sweep changed goes into the ledger under the sweep's own id, one entry per
    // principal, and a release of that entry undoes it.
    {
        use quell_ledger::Ledger;
        let ledger = quell_ledger::memory::MemoryLedger::default();
        let n = quell_ledger::record_sweep(&ledger, &r.ledger_id(), r.changes("aws"), clock)
            .await
            .unwrap();
        assert!(n >= 1);
        let entries = ledger.by_finding(&r.ledger_id()).await.unwrap();
        let entry = entries
            .iter()
            .find(|e| e.principal.ends_with(&format!(":role/{plain}")))
            .expect("the quarantined role is recorded");
        assert_eq!(entry.trigger, "sweep");
        assert_eq!(
            entry.actions[0].kind,
            quell_core::ActionKind::QuarantineRole
        );
        // Recording the same run again writes nothing new.
        assert_eq!(
            quell_ledger::record_sweep(&ledger, &r.ledger_id(), r.changes("aws"), clock)
                .await
                .unwrap(),
            0
        );
        let source = quell_aws::Fixed(quell_aws::AwsClients::new(&sdk().await));
        let steps = quell_aws::release::release(&source, entry, false).await;
        assert!(
            steps.iter().any(|s| s.outcome.status == Status::Applied),
            "{steps:?}"
        );
        assert!(attached(plain.clone()).await.is_empty());
        iam.attach_role_policy()
            .role_name(&plain)
            .policy_arn("arn:aws:iam::aws:policy/AWSDenyAll")
            .send()
            .await
            .unwrap();
    }
    // Again: nothing changes.
    let r = sweep_report(&iam, no_users, &opts(policy, clock, true))
        .await
        .unwrap();
    let mut want = vec![
        (exempt.clone(), Status::Skipped),
        (plain.clone(), Status::AlreadyInState),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(mine(&r), want);
}

#[tokio::test]
async fn a_warm_sweeper_holds_the_clients_of_a_bounded_number_of_accounts() {
    use quell_aws::ClientSource;
    // A thousand accounts in a row through one process must not keep a thousand client sets.
    let accounts = quell_aws::Accounts::new(
        quell_tests::moto_sdk().await,
        "999999999999",
        "aws",
        "QuellMemberRole",
    );
    for i in 0..(quell_aws::clients::CACHED_ACCOUNTS + 8) {
        accounts
            .clients(
                &format!("{:012}", 100_000_000_000u64 + i as u64),
                "quell-sweep",
            )
            .await
            .unwrap();
    }
    assert_eq!(accounts.cached().await, quell_aws::clients::CACHED_ACCOUNTS);
    // The most recent account is still held: a second call for it assumes no role again.
    let last = format!(
        "{:012}",
        100_000_000_000u64 + quell_aws::clients::CACHED_ACCOUNTS as u64 + 7
    );
    accounts.clients(&last, "quell-sweep").await.unwrap();
    assert_eq!(accounts.cached().await, quell_aws::clients::CACHED_ACCOUNTS);
}
