//! The Azure executor against wiremock fakes of Microsoft Graph and ARM, pinned to the
//! documented REST contract: method, path, body, bearer token, status codes, error bodies,
//! 429 with Retry-After.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quell_azure::{AzureExecutor, Endpoints, Http, StaticToken};
use quell_core::clock::FixedClock;
use quell_core::policy::Pattern;
use quell_core::report::{Report, Status};
use quell_core::{ActionKind, Context, Policy, plan_input};
use quell_tests::{NOW, enforce};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const USER: &str = "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45";
const TOKEN: &str = "test-graph-token";

/// A Graph and ARM client to `server` (ARM under `/arm`), with a static token.
fn http_to(server: &MockServer) -> Http {
    Http::new(
        Endpoints::new(&server.uri(), &format!("{}/arm", server.uri())),
        Arc::new(StaticToken(TOKEN.into())),
    )
}

fn executor(server: &MockServer, policy: Policy) -> AzureExecutor {
    AzureExecutor::new(
        http_to(server),
        policy,
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec!["sub-1".into()],
    )
}

fn runbook(runbook: &str, principal: &str, extra: Value) -> Vec<u8> {
    let mut v = json!({"runbook": runbook, "principal": principal, "reason": "test", "tenant": "7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f"});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v.to_string().into_bytes()
}

async fn run(server: &MockServer, policy: Policy, input: &[u8]) -> Report {
    let plan = plan_input(input, &policy, &Context::default()).unwrap();
    executor(server, policy).execute(&plan).await
}

fn result(r: &Report, kind: ActionKind) -> &quell_core::report::Outcome {
    &r.results
        .iter()
        .find(|x| x.action.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {r:?}"))
        .outcome
}

fn user_json(enabled: bool, synced: Option<bool>) -> Value {
    json!({"id": USER, "userPrincipalName": "rosa.garcia@contoso.com", "accountEnabled": enabled, "onPremisesSyncEnabled": synced})
}

async fn mock_user(server: &MockServer, body: Value) {
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

#[tokio::test]
async fn disable_user_patches_account_enabled_with_the_bearer_token() {
    let server = MockServer::start().await;
    mock_user(&server, user_json(true, None)).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/users/{USER}")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({"accountEnabled": false})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let r = run(&server, enforce(), &runbook("quarantine", USER, json!({}))).await;
    let o = result(&r, ActionKind::DisableEntraUser);
    assert_eq!(o.status, Status::Applied, "{o:?}");
    assert_eq!(o.inverse.as_ref().unwrap().params()["accountEnabled"], true);
}

#[tokio::test]
async fn an_already_disabled_user_is_left_alone() {
    let server = MockServer::start().await;
    mock_user(&server, user_json(false, Some(false))).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let r = run(&server, enforce(), &runbook("quarantine", USER, json!({}))).await;
    assert_eq!(
        result(&r, ActionKind::DisableEntraUser).status,
        Status::AlreadyInState
    );
}

#[tokio::test]
async fn a_missing_user_fails_with_the_graph_error_code() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"code": "Request_ResourceNotFound", "message": format!("Resource '{USER}' does not exist or one of its queried reference-property objects are not present.")}})))
        .mount(&server)
        .await;
    let r = run(&server, enforce(), &runbook("contain", USER, json!({}))).await;
    let o = result(&r, ActionKind::DisableEntraUser);
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.error_code.as_deref(), Some("Request_ResourceNotFound"));
    assert!(!o.retryable);
    // The other actions still ran and reported.
    assert_eq!(r.results.len(), 3);
}

#[tokio::test]
async fn insufficient_privileges_are_reported_not_retried() {
    let server = MockServer::start().await;
    mock_user(&server, user_json(true, None)).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}})))
        .expect(1)
        .mount(&server)
        .await;
    let r = run(&server, enforce(), &runbook("quarantine", USER, json!({}))).await;
    let o = result(&r, ActionKind::DisableEntraUser);
    assert_eq!(
        (o.status, o.error_code.as_deref(), o.retryable),
        (Status::Failed, Some("Authorization_RequestDenied"), false)
    );
    // A privileged user needs a higher administrator role: escalated, with what to do.
    let notice = r
        .results
        .iter()
        .find(|x| x.action.kind == ActionKind::Notify)
        .expect("a 403 on disable escalates");
    assert!(
        notice
            .action
            .reason
            .contains("Privileged Authentication Administrator")
            && notice.action.reason.contains("by hand"),
        "{}",
        notice.action.reason
    );
}

#[tokio::test]
async fn throttling_honours_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    mock_user(&server, user_json(true, None)).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(
                    json!({"error": {"code": "TooManyRequests", "message": "Too many requests"}}),
                ),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let r = run(&server, enforce(), &runbook("quarantine", USER, json!({}))).await;
    assert_eq!(
        result(&r, ActionKind::DisableEntraUser).status,
        Status::Applied
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
}

#[tokio::test]
async fn an_on_premises_synced_user_is_disabled_and_escalated() {
    let server = MockServer::start().await;
    mock_user(&server, user_json(true, Some(true))).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let r = run(&server, enforce(), &runbook("quarantine", USER, json!({}))).await;
    assert_eq!(
        result(&r, ActionKind::DisableEntraUser).status,
        Status::Applied
    );
    let notify = result(&r, ActionKind::Notify);
    assert!(notify.detail.contains("on-premises AD"), "{notify:?}");

    // A cloud-only user gets no such escalation.
    let server = MockServer::start().await;
    mock_user(&server, user_json(true, Some(false))).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let r = run(&server, enforce(), &runbook("quarantine", USER, json!({}))).await;
    assert!(
        r.results
            .iter()
            .all(|x| x.action.kind != ActionKind::Notify)
    );
}

#[tokio::test]
async fn a_protected_user_learned_at_read_time_is_not_touched() {
    let server = MockServer::start().await;
    mock_user(
        &server,
        json!({"id": USER, "userPrincipalName": "breakglass@contoso.com", "accountEnabled": true}),
    )
    .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut policy = enforce();
    policy.protected.push(Pattern::new("breakglass@*").unwrap());
    let r = run(&server, policy, &runbook("contain", USER, json!({}))).await;
    for x in &r.results {
        assert_eq!(x.outcome.status, Status::Skipped, "{x:?}");
        assert!(x.outcome.detail.contains("protected principal"));
    }
}

#[tokio::test]
async fn dry_run_makes_no_call() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let r = run(
        &server,
        Policy::default(),
        &runbook("contain", USER, json!({})),
    )
    .await;
    assert!(r.results.iter().all(|x| x.outcome.status == Status::DryRun));
}

#[tokio::test]
async fn sessions_are_revoked_unless_a_revocation_is_recent() {
    let server = MockServer::start().await;
    mock_user(&server, json!({"id": USER, "userPrincipalName": "rosa.garcia@contoso.com", "signInSessionsValidFromDateTime": "2026-11-01T08:00:00Z"})).await;
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/users/{USER}/revokeSignInSessions")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean", "value": true})))
        .expect(1)
        .mount(&server)
        .await;
    let r = run(
        &server,
        enforce(),
        &runbook("revoke_sessions", USER, json!({})),
    )
    .await;
    assert_eq!(
        result(&r, ActionKind::RevokeEntraSessions).status,
        Status::Applied
    );

    let server = MockServer::start().await;
    mock_user(
        &server,
        json!({"id": USER, "signInSessionsValidFromDateTime": "2026-11-23T11:58:00Z"}),
    )
    .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let r = run(
        &server,
        enforce(),
        &runbook("revoke_sessions", USER, json!({})),
    )
    .await;
    assert_eq!(
        result(&r, ActionKind::RevokeEntraSessions).status,
        Status::AlreadyInState
    );
}

#[tokio::test]
async fn confirm_compromised_posts_user_ids_once_and_is_paced() {
    let server = MockServer::start().await;
    for id in [USER, "6b7c8d9e-0f1a-4b2c-8d3e-4f5a6b7c8d9e"] {
        Mock::given(method("GET"))
            .and(path(format!("/v1.0/users/{id}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(
                    json!({"id": id, "userPrincipalName": format!("{id}@contoso.com")}),
                ),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/v1.0/identityProtection/riskyUsers/{id}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": id, "riskState": "atRisk", "riskLevel": "high"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(
                "/v1.0/identityProtection/riskyUsers/confirmCompromised",
            ))
            .and(body_json(json!({"userIds": [id]})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
    }
    let mut policy = enforce();
    policy.azure.disable_users = false;
    // Two risky users in one Entra diagnostic message: confirm both, one Identity Protection call per second.
    let rec = |id: &str| {
        json!({"time": "11/21/2026 6:14:10 AM", "category": "RiskyUsers", "tenantId": "7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f",
        "properties": {"id": id, "userPrincipalName": "x@contoso.com", "riskState": "confirmedCompromised", "riskLevel": "high", "isDeleted": false}})
    };
    let input =
        json!({"records": [rec(USER), rec("6b7c8d9e-0f1a-4b2c-8d3e-4f5a6b7c8d9e")]}).to_string();
    let plan = plan_input(input.as_bytes(), &policy, &Context::default()).unwrap();
    let ex = executor(&server, policy);
    // Only the identityProtection calls matter here; sessions are revoked elsewhere.
    let plan = quell_core::Plan {
        actions: plan
            .actions
            .into_iter()
            .filter(|a| a.kind == ActionKind::ConfirmUserCompromised)
            .collect(),
        ..plan
    };
    let started = Instant::now();
    let r = ex.execute(&plan).await;
    assert_eq!(r.summary.applied, 2, "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "four Identity Protection calls need three one-second gaps"
    );
}

#[tokio::test]
async fn service_principals_are_disabled_and_their_named_secret_removed() {
    let server = MockServer::start().await;
    let sp = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3f2e1d0";
    let key = "c0ffee00-1234-4abc-9def-0123456789ab";
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": sp, "appId": "0c9b8a7f-6e5d-4c4b-a3a2-918f7e6d5c4b", "displayName": "legacy-crm-connector", "accountEnabled": true, "passwordCredentials": []})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .and(body_json(json!({"accountEnabled": false})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    // The secret lives on the application, as most client secrets do.
    Mock::given(method("GET"))
        .and(path("/v1.0/applications(appId='0c9b8a7f-6e5d-4c4b-a3a2-918f7e6d5c4b')"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "app-object-1", "passwordCredentials": [{"keyId": key, "displayName": "ci"}]})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/applications/app-object-1/removePassword"))
        .and(body_json(json!({"keyId": key})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let input = runbook(
        "contain",
        sp,
        json!({"principal_type": "service_principal", "key_id": key}),
    );
    let r = run(&server, enforce(), &input).await;
    assert_eq!(
        result(&r, ActionKind::DisableServicePrincipal).status,
        Status::Applied
    );
    assert_eq!(
        result(&r, ActionKind::RemoveServicePrincipalCredential).status,
        Status::Applied
    );
}

#[tokio::test]
async fn a_secret_that_is_gone_is_already_in_state() {
    let server = MockServer::start().await;
    let sp = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3f2e1d0";
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": sp, "appId": "0c9b8a7f-6e5d-4c4b-a3a2-918f7e6d5c4b", "passwordCredentials": []})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/v1.0/applications(appId='0c9b8a7f-6e5d-4c4b-a3a2-918f7e6d5c4b')",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "app-object-1", "passwordCredentials": []})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let input = runbook(
        "disable_key",
        sp,
        json!({"principal_type": "service_principal", "key_id": "c0ffee00-1234-4abc-9def-0123456789ab"}),
    );
    let r = run(&server, enforce(), &input).await;
    assert_eq!(
        result(&r, ActionKind::RemoveServicePrincipalCredential).status,
        Status::AlreadyInState
    );
}

#[tokio::test]
async fn a_managed_identitys_role_assignments_are_deleted_and_recorded() {
    let server = MockServer::start().await;
    let mi = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    let ra = |name: &str, principal: &str| {
        json!({
            "id": format!("/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/{name}"),
            "name": name,
            "properties": {"principalId": principal, "scope": "/subscriptions/sub-1", "roleDefinitionId": "/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"}
        })
    };
    Mock::given(method("GET"))
        .and(path("/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments"))
        .and(query_param("api-version", "2022-04-01"))
        .and(query_param("$filter", format!("assignedTo('{mi}')").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [ra("ra-1", mi), ra("ra-2", mi), ra("ra-other", "ffffffff-0000-0000-0000-000000000000")]})))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(
            "/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-1",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(ra("ra-1", mi)))
        .expect(1)
        .mount(&server)
        .await;
    // 204: already deleted (idempotent delete).
    Mock::given(method("DELETE"))
        .and(path(
            "/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-2",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(
            "/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-other",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let input = runbook(
        "quarantine",
        mi,
        json!({"principal_type": "managed_identity"}),
    );
    let r = run(&server, enforce(), &input).await;
    let o = result(&r, ActionKind::RemoveRoleAssignments);
    assert_eq!(o.status, Status::Applied, "{o:?}");
    assert_eq!(
        o.inverse.as_ref().unwrap().params()["assignments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_defender_alert_is_set_in_progress_with_a_comment() {
    let server = MockServer::start().await;
    let alert = "da638362889287051192_1877443251";
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/security/alerts_v2/{alert}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": alert, "status": "new"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/security/alerts_v2/{alert}")))
        .and(body_json(json!({"status": "inProgress"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": alert, "status": "inProgress"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/security/alerts_v2/{alert}/comments")))
        .and(wiremock::matchers::body_partial_json(
            json!({"@odata.type": "microsoft.graph.security.alertComment"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .expect(1)
        .mount(&server)
        .await;
    let mut policy = enforce();
    policy.azure.disable_users = false;
    policy.azure.confirm_compromised = false;
    let plan = plan_input(
        &quell_tests::event("defender/graph-alert-mdi-compromised-user.json"),
        &policy,
        &Context::default(),
    )
    .unwrap();
    let plan = quell_core::Plan {
        actions: plan
            .actions
            .into_iter()
            .filter(|a| a.kind == ActionKind::UpdateDefenderAlert)
            .collect(),
        ..plan
    };
    let r = executor(&server, policy).execute(&plan).await;
    assert_eq!(
        result(&r, ActionKind::UpdateDefenderAlert).status,
        Status::Applied
    );
}

#[tokio::test]
async fn role_assignment_removal_continues_past_a_refused_delete() {
    let server = MockServer::start().await;
    let mi = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    let ra = |name: &str, principal: &str| {
        json!({
            "id": format!("/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/{name}"),
            "name": name,
            "properties": {"principalId": principal, "scope": "/subscriptions/sub-1", "roleDefinitionId": "/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"}
        })
    };
    // ARM returns the principal id upper-cased here: GUIDs compare without regard to case.
    Mock::given(method("GET"))
        .and(path(
            "/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            ra("ra-locked", &mi.to_ascii_uppercase()), ra("ra-mg", mi), ra("ra-ok", mi)
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-locked"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"error": {"code": "ScopeLocked", "message": "The scope cannot perform delete operation because following scope(s) are locked"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(
            "/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-mg",
        ))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": {"code": "AuthorizationFailed", "message": "no delete at this scope"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(
            "/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-ok",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(ra("ra-ok", mi)))
        .expect(1)
        .mount(&server)
        .await;
    let input = runbook(
        "quarantine",
        mi,
        json!({"principal_type": "managed_identity"}),
    );
    let r = run(&server, enforce(), &input).await;
    let o = result(&r, ActionKind::RemoveRoleAssignments);
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert!(
        o.detail.contains("deleted 1 role assignment(s)"),
        "{}",
        o.detail
    );
    assert!(
        o.detail.contains("ScopeLocked") && o.detail.contains("AuthorizationFailed"),
        "{}",
        o.detail
    );
    let removed = &o
        .inverse
        .as_ref()
        .expect("what was removed can be restored")
        .params()["assignments"];
    assert_eq!(removed.as_array().unwrap().len(), 1);
    assert!(removed[0]["id"].as_str().unwrap().ends_with("ra-ok"));
}

#[tokio::test]
async fn remove_password_rechecks_protection_against_what_it_learns_and_matches_key_ids_in_any_case()
 {
    let server = MockServer::start().await;
    let sp = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3f2e1d0";
    let key = "c0ffee00-1234-4abc-9def-0123456789ab";
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": sp, "appId": "0c9b8a7f-6e5d-4c4b-a3a2-918f7e6d5c4b", "displayName": "payroll-automation",
            "passwordCredentials": [{"keyId": key.to_ascii_uppercase(), "displayName": "ci"}]})))
        .mount(&server)
        .await;
    let remove = Mock::given(method("POST"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}/removePassword")))
        .and(body_json(json!({"keyId": key.to_ascii_uppercase()})))
        .respond_with(ResponseTemplate::new(204));
    server.register(remove.expect(1)).await;
    let input = runbook(
        "disable_key",
        sp,
        json!({"principal_type": "service_principal", "key_id": key}),
    );
    // The display name only Graph reveals is protected: nothing is removed.
    let mut policy = enforce();
    policy.protected = vec![Pattern::new("payroll-*").unwrap()];
    let plan = plan_input(&input, &policy, &Context::default()).unwrap();
    let r = executor(&server, policy).execute(&plan).await;
    let o = result(&r, ActionKind::RemoveServicePrincipalCredential);
    assert_eq!(o.status, Status::Skipped, "{o:?}");
    // Not protected: the key, spelled in another case by the finding, is removed as Graph spells it.
    let r = run(&server, enforce(), &input).await;
    let o = result(&r, ActionKind::RemoveServicePrincipalCredential);
    assert_eq!(o.status, Status::Applied, "{o:?}");
}

#[tokio::test]
async fn verify_of_a_disabled_service_principal_removes_new_secrets_and_reports_certificates_and_federated_credentials()
 {
    use quell_ledger::Ledger;
    let sp = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3f2e1d0";
    let app_id = "0c9b8a7f-6e5d-4c4b-a3a2-918f7e6d5c4b";
    // Contain the service principal and record it, as the handler does.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": sp, "appId": app_id, "displayName": "legacy-crm-connector", "accountEnabled": true,
            "passwordCredentials": [{"keyId": "0ld00000-0000-4000-8000-000000000001", "startDateTime": "2026-01-05T09:00:00Z"}],
            "keyCredentials": []})))
        .mount(&server)
        .await;
    // The application's secrets and certificates at containment: the key-id baseline.
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/applications(appId='{app_id}')")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "app-object-1", "passwordCredentials": [], "keyCredentials": []}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    // The application's federated credentials at containment: the baseline.
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1.0/applications(appId='{app_id}')/federatedIdentityCredentials"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [{"id": "f0"}]})))
        .expect(1)
        .mount(&server)
        .await;
    let policy = enforce();
    let input = runbook(
        "contain",
        sp,
        json!({"principal_type": "service_principal"}),
    );
    let plan = plan_input(&input, &policy, &Context::default()).unwrap();
    let ledger = quell_ledger::memory::MemoryLedger::default();
    let gated = quell_ledger::gate(&ledger, plan, &policy, NOW)
        .await
        .unwrap();
    let report = executor(&server, policy.clone()).execute(&gated.plan).await;
    quell_ledger::record(&ledger, &gated.claims, &report, NOW)
        .await
        .unwrap();
    let entries = ledger.list(None).await.unwrap();
    assert_eq!(entries.len(), 1);

    // Minutes later: still disabled, but a secret on the service principal (its startDateTime
    // backdated by whoever added it: only the key-id baseline tells it is new), one on the
    // application, a certificate and a federated credential appeared.
    let later = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": sp, "appId": app_id, "accountEnabled": false,
            "passwordCredentials": [
                {"keyId": "0ld00000-0000-4000-8000-000000000001", "startDateTime": "2026-01-05T09:00:00Z"},
                {"keyId": "5e000000-0000-4000-8000-000000000002", "startDateTime": "2025-06-01T00:00:00Z"}],
            "keyCredentials": [
                {"keyId": "ce000000-0000-4000-8000-000000000003", "startDateTime": "2026-11-23T12:04:00Z", "type": "AsymmetricX509Cert"}]})))
        .mount(&later)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/applications(appId='{app_id}')")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "app-object-1",
            "passwordCredentials": [{"keyId": "a9000000-0000-4000-8000-000000000004", "startDateTime": "2026-11-23T12:02:00Z"}],
            "keyCredentials": []})))
        .mount(&later)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}/removePassword")))
        .and(body_json(
            json!({"keyId": "5e000000-0000-4000-8000-000000000002"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&later)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/applications/app-object-1/removePassword"))
        .and(body_json(
            json!({"keyId": "a9000000-0000-4000-8000-000000000004"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&later)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/applications/app-object-1/federatedIdentityCredentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": "f0", "name": "deploy", "issuer": "https://token.actions.githubusercontent.com",
             "subject": "repo:contoso/crm:environment:prod", "audiences": ["api://AzureADTokenExchange"]},
            {"id": "f1", "name": "gh-main", "issuer": "https://token.actions.githubusercontent.com",
             "subject": "repo:attacker/x:ref:refs/heads/main", "audiences": ["api://AzureADTokenExchange"]}]})))
        .mount(&later)
        .await;
    Mock::given(method("DELETE"))
        .and(path(
            "/v1.0/applications/app-object-1/federatedIdentityCredentials/f1",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&later)
        .await;
    let http = http_to(&later);
    let steps = quell_azure::release::verify(&http, &entries, true, &|_| None).await;
    let text: Vec<String> = steps
        .iter()
        .map(|s| format!("{}: {:?} {}", s.what, s.outcome.status, s.outcome.detail))
        .collect();
    assert!(text.iter().all(|t| !t.contains("Failed")), "{text:#?}");
    let has = |needle: &str, status: &str| {
        text.iter()
            .any(|t| t.contains(needle) && t.contains(status))
    };
    assert!(has("still disabled", "AlreadyInState"), "{text:#?}");
    assert!(has("secret 5e000000", "Applied"), "{text:#?}");
    assert!(has("secret a9000000", "Applied"), "{text:#?}");
    assert!(!text.iter().any(|t| t.contains("0ld00000")), "{text:#?}");
    assert!(has("certificate ce000000", "Skipped"), "{text:#?}");
    assert!(has("remove it by hand", "Skipped"), "{text:#?}");
    // The credential added since containment is deleted; the one there before stays.
    assert!(
        has("gh-main", "Applied") && has("attacker persistence", "Applied"),
        "{text:#?}"
    );
    assert!(!text.iter().any(|t| t.contains("deploy")), "{text:#?}");
    // Report only, without --yes: nothing is removed.
    let dry = quell_azure::release::verify(&http, &entries, false, &|_| None).await;
    assert!(
        dry.iter()
            .any(|s| s.outcome.detail.contains("would remove secret"))
    );
    assert!(
        dry.iter()
            .any(|s| s.outcome.detail.contains("would delete it"))
    );
    // Without a baseline (Graph would not list them at containment), every federated credential
    // is listed for a human to review, and none is deleted.
    let mut unknown = entries.clone();
    for r in &mut unknown[0].actions {
        if let Some(i) = &mut r.inverse {
            let mut params = i.params();
            if let Some(o) = params.as_object_mut() {
                o.remove("federated_credentials");
            }
            *i = quell_tests::inverse(&i.call(), params);
        }
    }
    let review = quell_azure::release::verify(&http, &unknown, false, &|_| None).await;
    assert!(
        review.iter().any(|s| s.outcome.status == Status::Skipped
            && s.outcome.detail.contains("review before release")
            && s.outcome.detail.contains("deploy")
            && s.outcome.detail.contains("gh-main")),
        "{:?}",
        review.iter().map(|s| &s.outcome.detail).collect::<Vec<_>>()
    );
    // An empty baseline in a row is no baseline: the credentials are listed for review, never
    // marked for deletion.
    let mut empty = entries.clone();
    for r in &mut empty[0].actions {
        if let Some(i) = &mut r.inverse {
            let mut params = i.params();
            if params.get("federated_credentials").is_some() {
                params["federated_credentials"] = json!([]);
            }
            *i = quell_tests::inverse(&i.call(), params);
        }
    }
    let checked = quell_azure::release::verify(&http, &empty, false, &|_| None).await;
    assert!(
        checked
            .iter()
            .any(|s| s.outcome.detail.contains("review before release")),
        "{checked:?}"
    );
    // Without a key-id baseline (an empty one in a forged row, or a row from before quell
    // kept one), no secret is removed even with --yes: those dated after the containment are
    // reported for review, and the backdated one is not even claimed new.
    let mut no_keys = entries.clone();
    for r in &mut no_keys[0].actions {
        if let Some(i) = &mut r.inverse {
            let mut params = i.params();
            if params.get("credentials").is_some() {
                params["credentials"] = json!([]);
            }
            *i = quell_tests::inverse(&i.call(), params);
        }
    }
    let quiet = MockServer::start().await;
    for m in ["POST", "DELETE", "PATCH"] {
        Mock::given(method(m))
            .respond_with(ResponseTemplate::new(204))
            .expect(0)
            .mount(&quiet)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals/{sp}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": sp, "appId": app_id, "accountEnabled": false,
            "passwordCredentials": [
                {"keyId": "0ld00000-0000-4000-8000-000000000001", "startDateTime": "2026-01-05T09:00:00Z"},
                {"keyId": "5e000000-0000-4000-8000-000000000002", "startDateTime": "2025-06-01T00:00:00Z"}]})))
        .mount(&quiet)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/applications(appId='{app_id}')")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "app-object-1",
            "passwordCredentials": [{"keyId": "a9000000-0000-4000-8000-000000000004", "startDateTime": "2026-11-23T12:02:00Z"}]})))
        .mount(&quiet)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/v1.0/applications/app-object-1/federatedIdentityCredentials",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&quiet)
        .await;
    let reported = quell_azure::release::verify(&http_to(&quiet), &no_keys, true, &|_| None).await;
    let text: Vec<String> = reported
        .iter()
        .map(|s| format!("{}: {:?} {}", s.what, s.outcome.status, s.outcome.detail))
        .collect();
    assert!(
        has_in(&text, "review secret a9000000", "Skipped"),
        "{text:#?}"
    );
    assert!(!text.iter().any(|t| t.contains("5e000000")), "{text:#?}");
    assert!(
        !checked
            .iter()
            .any(|s| s.what.contains("federated credential")
                && s.outcome.detail.contains("would delete")),
        "{checked:?}"
    );
}

fn has_in(text: &[String], needle: &str, status: &str) -> bool {
    text.iter()
        .any(|t| t.contains(needle) && t.contains(status))
}

/// A forged entry for the break-glass account and a role assignment quell never removed: the
/// check re-disables no protected user and removes no one else's assignment.
#[tokio::test]
async fn verify_never_writes_a_protected_user_or_another_identitys_assignment() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": USER, "accountEnabled": true, "userPrincipalName": "breakglass@contoso.com"}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}/authentication/methods")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    let other =
        "/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-not-quells";
    Mock::given(method("GET"))
        .and(path(format!("/arm{other}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": other,
            "properties": {"principalId": "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b", "roleDefinitionId": "owner"}})))
        .mount(&server)
        .await;
    for m in ["PATCH", "DELETE"] {
        Mock::given(method(m))
            .respond_with(ResponseTemplate::new(204))
            .expect(0)
            .mount(&server)
            .await;
    }
    let mut entry = quell_tests::ledger_entry(&format!("azure:user/{USER}"), "forged-bg");
    entry.actions = vec![disabled_user(USER)];
    let mut policy = enforce();
    policy.protected = vec![Pattern::new("breakglass@contoso.com").unwrap()];
    let exec = executor(&server, policy);
    let steps = quell_pipeline::Undo::verify(&exec, std::slice::from_ref(&entry), true).await;
    assert!(
        steps
            .iter()
            .any(|s| s.outcome.status == Status::Skipped && s.outcome.detail.contains("protected")),
        "{steps:?}"
    );
    // A managed identity's entry naming an assignment that is someone else's.
    let mi = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let forged = mi_entry(
        mi,
        json!([{"id": other, "roleDefinitionId": "owner", "principalId": mi}]),
    );
    let steps = quell_pipeline::Undo::verify(&exec, std::slice::from_ref(&forged), true).await;
    assert!(
        steps
            .iter()
            .any(|s| s.outcome.error_code.as_deref() == Some("RefusedForgedEntry")),
        "{steps:?}"
    );
}

/// The target of an action on the test's Entra user.
fn user_target() -> quell_core::plan::Target {
    quell_core::plan::Target::Subject(quell_core::model::Subject::EntraUser {
        tenant: None,
        id: Some(USER.into()),
        name: None,
        on_premises_synced: None,
    })
}

/// A recorded `disable_entra_user` on the test's user whose inverse re-enables `inverse_id`
/// (a forged row names someone else).
fn disabled_user(inverse_id: &str) -> quell_ledger::Recorded {
    quell_ledger::Recorded {
        kind: ActionKind::DisableEntraUser,
        target: user_target(),
        status: Status::Applied,
        detail: "disabled".into(),
        inverse: Some(quell_tests::inverse(
            "graph:PATCH /v1.0/users/{id}",
            json!({"id": inverse_id, "accountEnabled": true}),
        )),
    }
}

fn mi_entry(mi: &str, assignments: Value) -> quell_ledger::Entry {
    quell_ledger::Entry {
        actions: vec![quell_ledger::Recorded {
            kind: ActionKind::RemoveRoleAssignments,
            target: quell_core::plan::Target::Subject(
                quell_core::model::Subject::ManagedIdentity {
                    tenant: None,
                    id: mi.into(),
                    name: None,
                },
            ),
            status: Status::Applied,
            detail: "removed".into(),
            inverse: Some(quell_tests::inverse(
                "arm:PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
                json!({"assignments": assignments}),
            )),
        }],
        ..quell_tests::ledger_entry(&format!("azure:mi/{mi}"), "f-mi")
    }
}

#[tokio::test]
async fn a_release_puts_back_only_the_contained_identitys_own_role_assignments() {
    let mi = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
    let own = "/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-own";
    let forged = "/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-forged";
    let owner = "/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
    let entry = mi_entry(
        mi,
        json!([
            {"id": own, "roleDefinitionId": owner, "principalId": mi},
            // Written into the ledger by someone else: Owner for their own principal.
            {"id": forged, "roleDefinitionId": owner, "principalId": "attacker-0000-4000-8000-000000000000"}
        ]),
    );
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(format!("/arm{own}")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": own})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/arm{forged}")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": forged})))
        .expect(0)
        .mount(&server)
        .await;
    let http = http_to(&server);
    // quell itself (release_after_hours) never writes a role assignment.
    let auto =
        quell_azure::release::release(&http, &entry, quell_azure::release::Releaser::Automatic)
            .await;
    assert_eq!(auto[0].outcome.status, Status::Skipped);
    assert!(auto[0].outcome.detail.contains("under your own identity"));
    // A human's release puts back the identity's own assignment and refuses the other.
    let human =
        quell_azure::release::release(&http, &entry, quell_azure::release::Releaser::Human).await;
    assert_eq!(
        human[0].outcome.status,
        Status::Skipped,
        "{:?}",
        human[0].outcome
    );
    assert!(
        human[0].outcome.detail.contains("refused to restore 1")
            && human[0].outcome.detail.contains("restored 1"),
        "{}",
        human[0].outcome.detail
    );
}

#[tokio::test]
async fn verify_removes_role_assignments_given_to_a_contained_managed_identity_since() {
    let mi = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
    let removed =
        "/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-removed";
    let reader = "/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7";
    let entry = mi_entry(
        mi,
        json!([{"id": removed, "roleDefinitionId": reader, "principalId": mi}]),
    );
    let server = MockServer::start().await;
    // What quell removed is still gone.
    Mock::given(method("GET"))
        .and(path(format!("/arm{removed}")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(
                json!({"error": {"code": "RoleAssignmentNotFound", "message": "gone"}}),
            ),
        )
        .mount(&server)
        .await;
    // The identity's assignments now: one from before the containment, one given since.
    let old = "/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-old";
    let new = "/subscriptions/sub-1/resourceGroups/prod/providers/Microsoft.Authorization/roleAssignments/ra-new";
    Mock::given(method("GET"))
        .and(path("/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments"))
        .and(query_param("$filter", format!("assignedTo('{mi}')")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": old, "properties": {"principalId": mi, "roleDefinitionId": reader, "scope": "/subscriptions/sub-1", "createdOn": "2026-03-01T09:00:00.0000000Z"}},
            {"id": new, "properties": {"principalId": mi.to_uppercase(), "roleDefinitionId": reader, "scope": "/subscriptions/sub-1/resourceGroups/prod", "createdOn": "2026-11-23T12:04:10.1234567Z"}}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/arm{new}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": new})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/arm{old}")))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let http = http_to(&server);
    let dry =
        quell_azure::release::verify(&http, std::slice::from_ref(&entry), false, &|_| None).await;
    assert!(
        dry.iter()
            .any(|s| s.what.contains("ra-new") && s.outcome.status == Status::DryRun),
        "{:?}",
        dry.iter()
            .map(|s| (&s.what, &s.outcome.detail))
            .collect::<Vec<_>>()
    );
    let steps = quell_azure::release::verify(&http, &[entry], true, &|_| None).await;
    let text: Vec<String> = steps
        .iter()
        .map(|s| format!("{}: {:?} {}", s.what, s.outcome.status, s.outcome.detail))
        .collect();
    assert!(
        text.iter()
            .any(|t| t.contains("ra-removed") && t.contains("still removed")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("ra-new") && t.contains("Applied attacker persistence")),
        "{text:#?}"
    );
    assert!(!text.iter().any(|t| t.contains("ra-old")), "{text:#?}");
}

#[tokio::test]
async fn verify_reports_authentication_methods_registered_to_a_contained_user_since() {
    let mut entry = quell_tests::ledger_entry(&format!("azure:user/{USER}"), "f-user");
    entry.actions = vec![disabled_user(USER)];
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": USER, "accountEnabled": false})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}/authentication/methods")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
             "id": "28c10230-6103-485e-b985-444c60001490", "createdDateTime": "2024-02-01T08:00:00Z"},
            {"@odata.type": "#microsoft.graph.phoneAuthenticationMethod",
             "id": "3179e48a-750b-4051-897c-87b9720928f7", "phoneNumber": "+1 2065555555", "phoneType": "mobile"},
            {"@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
             "id": "6b9e0a3f-2c41-4d7e-9a58-1f0c3b2d4e6a", "displayName": "attacker-phone",
             "createdDateTime": "2026-11-23T12:03:00Z"}]})))
        .mount(&server)
        .await;
    let http = http_to(&server);
    let steps =
        quell_azure::release::verify(&http, std::slice::from_ref(&entry), true, &|_| None).await;
    let found = steps
        .iter()
        .find(|s| s.what.contains("authentication methods"))
        .expect("an authentication-method step");
    assert_eq!(found.outcome.status, Status::Skipped);
    assert!(
        found
            .outcome
            .detail
            .contains("microsoftAuthenticatorAuthenticationMethod 6b9e0a3f"),
        "{}",
        found.outcome.detail
    );
    assert!(!found.outcome.detail.contains("28c10230"));
    // Without the read permission the check says what to grant.
    let denied = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": USER, "accountEnabled": false})),
        )
        .mount(&denied)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}/authentication/methods")))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}),
        ))
        .mount(&denied)
        .await;
    let http = http_to(&denied);
    let steps =
        quell_azure::release::verify(&http, std::slice::from_ref(&entry), true, &|_| None).await;
    assert!(
        steps.iter().any(|s| s
            .outcome
            .detail
            .contains("UserAuthenticationMethod.Read.All")),
        "{:?}",
        steps.iter().map(|s| &s.outcome.detail).collect::<Vec<_>>()
    );
}

/// One Entra user has one ledger key: a finding that names only the UPN is resolved to the
/// object id before the claim, so a later finding naming the id runs on the same entry (a
/// re-run, not a second containment or a second breaker slot).
#[tokio::test]
async fn a_user_named_by_upn_is_keyed_by_object_id() {
    use quell_ledger::Ledger;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex(
            r"^/v1\.0/users/rosa\.garcia(%40|@)contoso\.com$",
        ))
        .and(query_param("$select", "id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": USER.to_uppercase()})))
        .expect(1)
        .mount(&server)
        .await;
    mock_user(&server, user_json(true, None)).await;
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/users/{USER}/revokeSignInSessions")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": true})))
        .mount(&server)
        .await;
    let ledger = quell_ledger::memory::MemoryLedger::default();
    let policy = enforce();
    let clock = FixedClock(NOW);
    let exec = executor(&server, policy.clone());
    let pipeline = quell_tests::memory_pipeline(&policy, &clock, &ledger, &exec);
    let by_upn = runbook(
        "revoke_sessions",
        "Rosa.Garcia@contoso.com",
        json!({"id": "SEC-1"}),
    );
    let plan = plan_input(&by_upn, &policy, &Context::default()).unwrap();
    let answer = pipeline.contain(plan).await;
    assert!(
        matches!(answer, quell_pipeline::Answer::Done(_)),
        "{:?}",
        answer.to_json()
    );
    let entries = ledger.list(None).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].principal, format!("azure:user/{USER}"));
    // The same detection naming the object id: the same entry, run again.
    let by_id = runbook("revoke_sessions", USER, json!({"id": "SEC-1"}));
    let plan = plan_input(&by_id, &policy, &Context::default()).unwrap();
    pipeline.contain(plan).await;
    let entries = ledger.list(None).await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert!(entries[0].history.iter().any(|h| h.contains("run again")));
    assert_eq!(
        ledger
            .slots(
                "azure:7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f",
                "2026-11-23T12"
            )
            .await
            .unwrap(),
        1
    );
}

/// Rows forged by anyone who can write the Table: a re-enable aimed at the break-glass account,
/// a risk dismissal of other users. Each is refused loudly and Graph is never asked to change
/// anything; the automatic release never dismisses risk at all.
#[tokio::test]
async fn a_release_re_enables_and_dismisses_only_the_entrys_own_user() {
    const BREAK_GLASS: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let mut entry = quell_tests::ledger_entry(&format!("azure:user/{USER}"), "forged-azure");
    entry.actions = vec![
        disabled_user(BREAK_GLASS),
        quell_ledger::Recorded {
            kind: ActionKind::ConfirmUserCompromised,
            target: user_target(),
            status: Status::Applied,
            detail: "confirmed".into(),
            inverse: Some(quell_tests::inverse(
                "graph:POST /v1.0/identityProtection/riskyUsers/dismiss",
                json!({"userIds": [USER, BREAK_GLASS]}),
            )),
        },
    ];
    let server = MockServer::start().await;
    // Any write would be a grant the row chose: none may reach Graph.
    for m in ["PATCH", "POST"] {
        Mock::given(method(m))
            .respond_with(ResponseTemplate::new(204))
            .expect(0)
            .mount(&server)
            .await;
    }
    let http = http_to(&server);
    let steps =
        quell_azure::release::release(&http, &entry, quell_azure::release::Releaser::Human).await;
    assert_eq!(steps.len(), 2, "{steps:?}");
    for s in &steps {
        assert_eq!(s.outcome.status, Status::Failed, "{s:?}");
        assert_eq!(s.outcome.error_code.as_deref(), Some("RefusedForgedEntry"));
    }
    // The automatic release leaves even the entry's own user's risk to a human.
    entry.actions.remove(0);
    entry.actions[0].inverse = Some(quell_tests::inverse(
        "graph:POST /v1.0/identityProtection/riskyUsers/dismiss",
        json!({"userIds": [USER]}),
    ));
    let steps =
        quell_azure::release::release(&http, &entry, quell_azure::release::Releaser::Automatic)
            .await;
    assert_eq!(steps[0].outcome.status, Status::Skipped, "{steps:?}");
    assert!(steps[0].outcome.detail.contains("for a human"));
}

#[tokio::test]
async fn a_role_assignment_list_failing_midway_keeps_the_inverse_of_what_was_deleted() {
    let server = MockServer::start().await;
    let mi = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    let list = "/arm/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments";
    // Page 1 holds one assignment and a nextLink; page 2 is refused.
    Mock::given(method("GET"))
        .and(path(list))
        .and(query_param("$skiptoken", "page2"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": {"code": "AuthorizationFailed", "message": "no read past page 1"}}),
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(list))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{
                "id": "/subscriptions/sub-1/providers/Microsoft.Authorization/roleAssignments/ra-1",
                "properties": {"principalId": mi, "scope": "/subscriptions/sub-1", "roleDefinitionId": "/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"}
            }],
            "nextLink": format!("{}{list}?api-version=2022-04-01&$skiptoken=page2", server.uri())
        })))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{list}/ra-1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    let input = runbook(
        "quarantine",
        mi,
        json!({"principal_type": "managed_identity"}),
    );
    let r = run(&server, enforce(), &input).await;
    let o = result(&r, ActionKind::RemoveRoleAssignments);
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert!(o.detail.contains("listing failed"), "{}", o.detail);
    let removed = &o
        .inverse
        .as_ref()
        .expect("what was deleted before the list failed can be restored")
        .params()["assignments"];
    assert_eq!(removed.as_array().unwrap().len(), 1);
    assert!(removed[0]["id"].as_str().unwrap().ends_with("ra-1"));
}

#[tokio::test]
async fn a_risky_user_is_read_once_and_graphs_copy_spares_the_confirm_a_paced_read() {
    // Identity Protection answers one request a second per tenant; the copy read to plan the
    // record is the confirm's read, and one read of the user serves every action on them.
    let server = MockServer::start().await;
    let risky = json!({"id": USER, "userPrincipalName": "rosa.garcia@contoso.com", "riskLevel": "high",
        "riskState": "atRisk", "riskDetail": "none", "isDeleted": false, "isProcessing": false,
        "riskLastUpdatedDateTime": "2026-11-23T11:49:00Z"});
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/identityProtection/riskyUsers/{USER}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(risky.clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": USER,
            "userPrincipalName": "rosa.garcia@contoso.com", "accountEnabled": true,
            "signInSessionsValidFromDateTime": "2026-01-01T00:00:00Z"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1.0/users/{USER}")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/users/{USER}/revokeSignInSessions")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": true})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(
            "/v1.0/identityProtection/riskyUsers/confirmCompromised",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let policy = enforce();
    let exec = executor(&server, policy.clone());
    let plan = plan_input(risky.to_string().as_bytes(), &policy, &Context::default()).unwrap();
    // What the handler does with an Event Hub record: Graph's copy first, then the plan.
    let copy = exec.fetch_copy(&plan.findings[0]).await.unwrap();
    assert!(copy.is_some());
    let report = exec.execute(&plan).await;
    for kind in [
        ActionKind::DisableEntraUser,
        ActionKind::RevokeEntraSessions,
        ActionKind::ConfirmUserCompromised,
    ] {
        assert_eq!(
            result(&report, kind).status,
            Status::Applied,
            "{kind:?}: {report:#?}"
        );
    }
}
