//! The Azure stale-credential sweep against a wiremock Graph with paging: expired, unused,
//! never-used and recent secrets; protected principals; missing activity data.

use std::sync::Arc;

use quell_azure::sweep::{AzureSweepOptions, AzureSweepReport, sweep_tenant};
use quell_azure::{Endpoints, Http, StaticToken};
use quell_core::policy::Pattern;
use quell_core::report::Status;
use quell_core::{Context, Policy};
use quell_tests::NOW;
use serde_json::json;
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn http(server: &MockServer) -> Http {
    Http::new(
        Endpoints::new(&server.uri(), &server.uri()),
        Arc::new(StaticToken("t".into())),
    )
}

fn cred(key: &str, start: &str, end: &str) -> serde_json::Value {
    json!({"keyId": key, "displayName": "ci", "startDateTime": start, "endDateTime": end})
}

async fn world(server: &MockServer, activity: bool) {
    // Applications, in two pages.
    Mock::given(method("GET"))
        .and(path("/v1.0/applications"))
        .and(query_param("$skiptoken", "page2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": "app-2", "appId": "appid-2", "displayName": "breakglass-automation", "passwordCredentials": [cred("k-protected", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")]}
        ]})))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/applications"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"id": "app-1", "appId": "appid-1", "displayName": "billing-sync", "passwordCredentials": [
                cred("k-expired", "2024-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
                cred("k-unused", "2025-01-01T00:00:00Z", "2027-12-31T00:00:00Z"),
                cred("k-recent", "2025-01-01T00:00:00Z", "2027-12-31T00:00:00Z"),
                cred("k-never", "2025-06-01T00:00:00Z", "2027-12-31T00:00:00Z"),
                cred("k-new", "2026-11-20T00:00:00Z", "2027-12-31T00:00:00Z"),
                cred("k-absent", "2025-01-01T00:00:00Z", "2027-12-31T00:00:00Z"),
                cred("k-garbled", "2025-01-01T00:00:00Z", "2027-12-31T00:00:00Z")
            ]}],
            "@odata.nextLink": format!("{}/v1.0/applications?$skiptoken=page2", server.uri())
        })))
        .with_priority(2)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [{"id": "sp-1", "appId": "appid-1", "displayName": "billing-sync", "passwordCredentials": []}]})))
        .mount(server)
        .await;
    let activity_response = if activity {
        ResponseTemplate::new(200).set_body_json(json!({"value": [
            // Key ids are GUIDs: the report's case need not match the application's.
            {"keyId": "K-UNUSED", "appId": "appid-1", "signInActivity": {"lastSignInDateTime": "2026-03-01T00:00:00Z"}},
            {"keyId": "k-recent", "appId": "appid-1", "signInActivity": {"lastSignInDateTime": "2026-11-22T00:00:00Z"}},
            {"keyId": "k-never", "appId": "appid-1", "signInActivity": {"lastSignInDateTime": null}},
            {"keyId": "k-garbled", "appId": "appid-1", "signInActivity": {"lastSignInDateTime": "last tuesday"}}
        ]}))
    } else {
        ResponseTemplate::new(403).set_body_json(json!({"error": {"code": "Authorization_RequestDenied", "message": "no AuditLog.Read.All"}}))
    };
    Mock::given(method("GET"))
        .and(path("/beta/reports/appCredentialSignInActivities"))
        .respond_with(activity_response)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/beta/reports/servicePrincipalSignInActivities"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            // `id` names the activity record, not the service principal.
            {"id": "activity-record-1", "appId": "appid-1", "lastSignInActivity": {"lastSignInDateTime": "2025-01-01T00:00:00Z"}},
            {"id": "activity-record-9", "appId": "appid-9", "lastSignInActivity": {"lastSignInDateTime": "2026-11-01T00:00:00Z"}},
            // No sign-in data: unknown, never stale, never looked up or disabled.
            {"id": "activity-record-7", "appId": "appid-7", "lastSignInActivity": {"lastSignInDateTime": null}}
        ]})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals(appId='appid-7')"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "sp-7", "appId": "appid-7", "displayName": "quiet-batch", "accountEnabled": true})))
        .expect(0)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals(appId='appid-1')"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "sp-1", "appId": "appid-1", "displayName": "billing-sync", "accountEnabled": true})))
        .mount(server)
        .await;
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.protected.push(Pattern::new("breakglass-*").unwrap());
    p
}

/// Sweeps the fake tenant under `policy` at [`NOW`], changing it only with `enforce`.
async fn sweep(server: &MockServer, policy: &Policy, enforce: bool) -> AzureSweepReport {
    let ctx = Context::default();
    sweep_tenant(
        &http(server),
        &AzureSweepOptions {
            policy,
            ctx: &ctx,
            now: NOW,
            enforce,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn stale_secrets_are_removed_across_pages_and_the_rest_left_alone() {
    let server = MockServer::start().await;
    world(&server, true).await;
    for key in ["k-expired", "k-unused", "k-never"] {
        Mock::given(method("POST"))
            .and(path("/v1.0/applications/app-1/removePassword"))
            .and(body_json(json!({"keyId": key})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
    }
    let policy = policy();
    let report = sweep(&server, &policy, true).await;
    assert!(report.activity_available);
    assert_eq!(report.credentials_checked, 8);
    let by_key: Vec<(&str, &str, Status)> = report
        .credentials
        .iter()
        .map(|c| (c.key_id.as_str(), c.reason.as_str(), c.outcome.status))
        .collect();
    assert_eq!(
        by_key,
        [
            ("k-expired", "expired", Status::Applied),
            ("k-unused", "unused", Status::Applied),
            ("k-never", "never_used", Status::Applied),
            ("k-protected", "expired", Status::Skipped),
        ]
    );
    // Absent from the report or unreadable: unknown, left alone and said so.
    let unknown: Vec<(&str, &str)> = report
        .unknown
        .iter()
        .map(|u| (u.key_id.as_str(), u.why.as_str()))
        .collect();
    assert_eq!(unknown.len(), 3, "{unknown:?}");
    assert!(
        unknown
            .iter()
            .any(|(k, why)| *k == "k-absent" && why.contains("absent"))
    );
    assert!(
        unknown
            .iter()
            .any(|(k, why)| *k == "k-garbled" && why.contains("does not parse"))
    );
    // The removals go into the ledger under the sweep's id, one entry per application.
    {
        use quell_ledger::Ledger;
        let ledger = quell_ledger::memory::MemoryLedger::default();
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let n =
            quell_ledger::record_sweep(&ledger, &report.ledger_id(), report.changes(tenant), NOW)
                .await
                .unwrap();
        assert_eq!(n, 1);
        let entries = ledger.by_finding(&report.ledger_id()).await.unwrap();
        assert_eq!(entries[0].scope, format!("azure:{tenant}"));
        assert_eq!(entries[0].actions.len(), 3);
        assert!(entries[0].actions.iter().all(|a| a.kind
            == quell_core::ActionKind::RemoveServicePrincipalCredential
            && a.inverse.is_some()));
    }
    assert_eq!(report.stale_service_principals.len(), 1);
    let sp = &report.stale_service_principals[0];
    assert_eq!(
        (sp.id.as_str(), sp.display_name.as_str()),
        ("sp-1", "billing-sync")
    );
}

#[tokio::test]
async fn without_activity_data_only_expired_secrets_are_judged_and_dry_run_changes_nothing() {
    let server = MockServer::start().await;
    world(&server, false).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let policy = policy();
    let report = sweep(&server, &policy, false).await;
    assert!(!report.activity_available);
    let keys: Vec<&str> = report
        .credentials
        .iter()
        .map(|c| c.key_id.as_str())
        .collect();
    assert_eq!(keys, ["k-expired", "k-protected"]);
    assert_eq!(report.count(Status::DryRun), 1);
}

#[tokio::test]
async fn stale_service_principals_are_disabled_only_when_the_policy_asks() {
    let server = MockServer::start().await;
    world(&server, true).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/v1.0/servicePrincipals/sp-1"))
        .and(body_json(json!({"accountEnabled": false})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut policy = policy();
    let r = sweep(&server, &policy, true).await;
    assert_eq!(
        r.stale_service_principals[0].outcome.status,
        Status::Skipped
    );
    policy.azure.disable_stale_service_principals = true;
    let r = sweep(&server, &policy, true).await;
    assert_eq!(
        r.stale_service_principals[0].outcome.status,
        Status::Applied
    );
}

#[tokio::test]
async fn a_sweep_over_its_own_cap_writes_nothing_and_says_why() {
    let server = MockServer::start().await;
    world(&server, true).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let mut policy = policy();
    policy.breaker.max_sweep_writes_per_account = 2;
    let report = sweep(&server, &policy, true).await;
    let why = report.withheld.as_deref().expect("withheld");
    assert!(
        why.contains("3 changes") && why.contains("cap of 2"),
        "{why}"
    );
    let withheld = report
        .credentials
        .iter()
        .filter(|c| c.outcome.status == Status::Skipped && c.outcome.detail.starts_with("withheld"))
        .count();
    assert_eq!(withheld, 3);
    // A protected credential stays skipped for its own reason.
    assert!(
        report
            .credentials
            .iter()
            .any(|c| c.key_id == "k-protected" && !c.outcome.detail.starts_with("withheld"))
    );
}
