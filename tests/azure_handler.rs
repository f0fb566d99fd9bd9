//! The custom handler over real HTTP, with the exact Functions-host request and response JSON:
//! readiness, each trigger's payload (the triple-encoded Event Hub batch, HTTP requests with
//! `Query` as a string or an object, timer ticks), and bad bodies.

use std::sync::Arc;

use azure_handler::{App, Function, isolate, router};
use quell_azure::{AzureExecutor, Endpoints, Http, StaticToken, TableLedger, VerifyQueue};
use quell_core::clock::FixedClock;
use quell_core::{Context, Policy};
use quell_tests::event;
use quell_tests::{NOW, enforce};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Starts the handler on 127.0.0.1 with a free port; returns its base URL.
async fn start(policy: Policy, graph: &str) -> String {
    start_with(policy, graph, None, false).await
}

/// [`start`] with a ledger, and release over HTTP on or off.
async fn start_with(
    policy: Policy,
    graph: &str,
    ledger: Option<TableLedger>,
    http_release: bool,
) -> String {
    start_full(policy, graph, ledger, http_release, None).await
}

/// [`start_with`] and a queue for the checks after containment.
async fn start_full(
    policy: Policy,
    graph: &str,
    ledger: Option<TableLedger>,
    http_release: bool,
    verify_queue: Option<VerifyQueue>,
) -> String {
    start_at(policy, graph, ledger, http_release, verify_queue, NOW).await
}

/// [`start_full`] on a clock fixed at `now`.
async fn start_at(
    policy: Policy,
    graph: &str,
    ledger: Option<TableLedger>,
    http_release: bool,
    verify_queue: Option<VerifyQueue>,
    now: time::OffsetDateTime,
) -> String {
    let http = Http::new(
        Endpoints::new(graph, graph),
        Arc::new(StaticToken("t".into())),
    );
    let executor = AzureExecutor::new(
        http,
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(now)),
        vec![],
    );
    let app = Arc::new(App {
        policy,
        ctx: Context::default(),
        executor,
        clock: Arc::new(FixedClock(now)),
        ledger,
        http_release,
        verify_queue,
        aws: None,
        links: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    url
}

async fn post(url: &str, function: &str, body: Vec<u8>) -> (u16, Value) {
    quell_azure::tls::install();
    let r = reqwest::Client::new()
        .post(format!("{url}/{function}"))
        .header("Content-Type", "application/json; charset=utf-8")
        .header(
            "X-Azure-Functions-InvocationId",
            "5a6f3c1e-0d7b-4d8c-9a1f-2e3b4c5d6e7f",
        )
        .header("User-Agent", "Azure-Functions-Host/4.1037.1.1")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A Graph fake that accepts every containment call for any user.
async fn graph() -> MockServer {
    let server = MockServer::start().await;
    no_auth_methods(&server).await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45", "userPrincipalName": "rosa.garcia@contoso.com", "accountEnabled": true})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("revokeSignInSessions$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": true})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("riskyUsers"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": {"code": "NotFound", "message": "x"}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("confirmCompromised$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("alerts_v2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "new"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("comments$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    server
}

/// Graph's own copy of every record a host body carries, as a real tenant's Graph holds it:
/// quell plans an Event Hub record only from this copy. A diagnostic record's `properties` is
/// the Graph object; Defender's AlertInfo and AlertEvidence rows become the `alerts_v2` alert.
async fn graph_knows(server: &MockServer, body: &[u8]) {
    fn records(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::String(s) => {
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    records(&inner, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| records(x, out)),
            Value::Object(o) if o.contains_key("category") && o.contains_key("properties") => {
                out.push(v.clone())
            }
            // A message that is the Graph object itself: its own copy.
            Value::Object(o) if o.contains_key("riskState") || o.contains_key("riskEventType") => {
                let category = if o.contains_key("riskEventType") {
                    if o.contains_key("servicePrincipalId") {
                        "ServicePrincipalRiskEvents"
                    } else {
                        "UserRiskEvents"
                    }
                } else if o.contains_key("userPrincipalName") {
                    "RiskyUsers"
                } else {
                    "RiskyServicePrincipals"
                };
                out.push(json!({"category": category, "properties": v}))
            }
            Value::Object(o) => o.values().for_each(|x| records(x, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    records(&serde_json::from_slice(body).unwrap(), &mut found);
    let mut alerts: std::collections::BTreeMap<String, Value> = Default::default();
    for r in found {
        let p = &r["properties"];
        let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        let collection = match r["category"].as_str().unwrap_or_default() {
            "UserRiskEvents" => "riskDetections",
            "RiskyUsers" => "riskyUsers",
            "ServicePrincipalRiskEvents" => "servicePrincipalRiskDetections",
            "RiskyServicePrincipals" => "riskyServicePrincipals",
            category @ ("AdvancedHunting-AlertInfo" | "AdvancedHunting-AlertEvidence") => {
                let alert = alerts.entry(text("AlertId")).or_insert_with(|| {
                    json!({"@odata.type": "#microsoft.graph.security.alert", "id": text("AlertId"), "status": "new", "evidence": []})
                });
                if category.ends_with("AlertInfo") {
                    alert["title"] = json!(text("Title"));
                    alert["severity"] = json!(text("Severity").to_ascii_lowercase());
                    alert["serviceSource"] = json!(text("ServiceSource"));
                    if p.get("DetectionSource").is_some() {
                        alert["detectionSource"] = p["DetectionSource"].clone();
                    }
                } else if text("EntityType").eq_ignore_ascii_case("User") {
                    let role = if text("EvidenceRole").eq_ignore_ascii_case("Impacted") {
                        "compromised"
                    } else {
                        "contextual"
                    };
                    alert["evidence"].as_array_mut().unwrap().push(json!({
                        "@odata.type": "#microsoft.graph.security.userEvidence",
                        "roles": [role],
                        "userAccount": {
                            "azureAdUserId": p["AccountObjectId"],
                            "userPrincipalName": p["AccountUpn"],
                            "accountName": p["AccountName"],
                            "domainName": p["AccountDomain"],
                            "userSid": p["AccountSid"],
                        }
                    }));
                }
                continue;
            }
            _ => continue,
        };
        Mock::given(method("GET"))
            .and(path(format!(
                "/v1.0/identityProtection/{collection}/{}",
                text("id")
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(p.clone()))
            .with_priority(1)
            .mount(server)
            .await;
    }
    for (id, alert) in alerts {
        Mock::given(method("GET"))
            .and(path(format!("/v1.0/security/alerts_v2/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(alert))
            .with_priority(1)
            .mount(server)
            .await;
    }
}

#[tokio::test]
async fn readiness_probe_answers_at_once() {
    let url = start(Policy::default(), "http://127.0.0.1:9").await;
    quell_azure::tls::install();
    let r = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_triple_encoded_event_hub_batch_is_contained() {
    let g = graph().await;
    let url = start(enforce(), &g.uri()).await;
    graph_knows(
        &g,
        &event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    let (status, body) = post(
        &url,
        "DefenderEvents",
        event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["Outputs"], json!({}), "{body}");
    let rv = &body["ReturnValue"];
    // The batch also holds an Entra record, which belongs to EntraRiskEvents: reported, not acted on.
    assert!(
        rv["rejected"][0]
            .as_str()
            .unwrap()
            .contains("do not belong to function DefenderEvents"),
        "{rv}"
    );
    let kinds: Vec<&str> = rv["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "disable_entra_user",
            "confirm_user_compromised",
            "revoke_entra_sessions",
            "update_defender_alert"
        ]
    );
    assert_eq!(rv["summary"]["applied"], 4, "{rv}");
    let logs: Vec<&str> = body["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(logs.iter().any(|l| l.starts_with("applied disable_entra_user entra_user rosa.garcia@contoso.com")), "{logs:?}");
}

#[tokio::test]
async fn an_http_graph_alert_with_query_as_a_string_answers_through_res() {
    let url = start(Policy::default(), "http://127.0.0.1:9").await;
    let (status, body) = post(
        &url,
        "GraphAlert",
        event("functions-host/http-graph-alert-query-string.json"),
    )
    .await;
    assert_eq!(status, 200);
    let res = &body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200);
    let inner: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["mode"], "dry-run");
    assert_eq!(inner["summary"]["dry_run"], 4);
}

#[tokio::test]
async fn an_http_runbook_with_query_as_an_object_works() {
    let url = start(Policy::default(), "http://127.0.0.1:9").await;
    let (status, body) = post(
        &url,
        "Runbook",
        event("functions-host/http-runbook-query-object.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["Outputs"]["res"]["statusCode"], 200);
    assert_eq!(
        body["ReturnValue"]["results"][0]["action"]["kind"],
        "revoke_entra_sessions"
    );
}

#[tokio::test]
async fn the_timer_sweeps_the_tenant_in_dry_run() {
    let g = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/(v1.0|beta)/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&g)
        .await;
    let url = start(Policy::default(), &g.uri()).await;
    let timer = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
                       "Metadata": {"sys": {"MethodName": "PostureSweep", "UtcNow": "2026-11-23T03:00:00.0042Z", "RandGuid": "x"}}});
    let (status, body) = post(&url, "PostureSweep", timer.to_string().into_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(body["ReturnValue"]["enforce"], false, "{body}");
    assert_eq!(body["ReturnValue"]["credentials_checked"], 0);
    assert!(
        body["Logs"][0]
            .as_str()
            .unwrap()
            .starts_with("swept 0 credentials")
    );
    // The tenant's cross-cloud links are read with each sweep.
    assert_eq!(body["Logs"][1], "cross-cloud links: 0 found", "{body}");
    let asked = g.received_requests().await.unwrap();
    assert!(asked.iter().any(|r| {
        r.url.path() == "/v1.0/applications"
            && r.url
                .query()
                .unwrap_or("")
                .contains("federatedIdentityCredentials")
    }));
}

#[tokio::test]
async fn bad_bodies_get_a_clear_error_and_no_action() {
    let g = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&g)
        .await;
    let url = start(enforce(), &g.uri()).await;

    // Not JSON at all: 2xx so the host does not redeliver a poison batch forever.
    let (status, body) = post(&url, "DefenderEvents", b"{not json".to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(body["ReturnValue"]["status"], "rejected");
    assert!(
        body["ReturnValue"]["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    // An HTTP function with a body that is not an event: 400 through `res`.
    let req = json!({"Data": {"req": {"Url": "https://x/api/GraphAlert", "Method": "POST", "Query": "{}", "Headers": {}, "Params": {}, "Body": "garbage"}}, "Metadata": {}});
    let (status, body) = post(&url, "GraphAlert", req.to_string().into_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(body["Outputs"]["res"]["statusCode"], 400);
    assert!(
        body["Outputs"]["res"]["body"]
            .as_str()
            .unwrap()
            .contains("/Data/req/Body")
    );

    // One bad message in a batch is reported; the good one is still handled.
    let good = String::from_utf8(event("defender/xdr-mdi-pass-the-ticket.json")).unwrap();
    let batch = serde_json::to_string(&vec![good, "{\"records\": [".to_string()]).unwrap();
    let mixed = json!({"Data": {"events": batch}, "Metadata": {}});
    let policy_url = start(Policy::default(), &g.uri()).await;
    let (status, body) = post(
        &policy_url,
        "DefenderEvents",
        mixed.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ReturnValue"]["summary"]["dry_run"], 4, "{body}");
    assert!(
        body["ReturnValue"]["rejected"][0]
            .as_str()
            .unwrap()
            .starts_with("/Data/events/1:")
    );

    // A runbook request sent to the Defender function is refused.
    let rb = json!({"Data": {"events": json!([event_text("runbook/quarantine-iam-user.json")]).to_string()}, "Metadata": {}});
    let (_, body) = post(&url, "DefenderEvents", rb.to_string().into_bytes()).await;
    assert_eq!(body["ReturnValue"]["status"], "rejected");

    // An unknown function.
    let (status, _) = post(&url, "NoSuchFunction", b"{}".to_vec()).await;
    assert_eq!(status, 404);
}

fn event_text(f: &str) -> String {
    String::from_utf8(event(f)).unwrap()
}

#[tokio::test]
async fn a_panic_is_confined_to_its_invocation() {
    // Every invocation runs through `isolate`: a panic becomes an error answer for that
    // invocation (a 500 with a log line), and a normal result passes through untouched.
    let e = isolate(async { panic!("boom") })
        .await
        .map(|_: ()| ())
        .unwrap_err();
    assert!(
        e.contains("panicked") && e.contains("no further action was taken"),
        "{e}"
    );
    assert_eq!(isolate(async { 42 }).await, Ok(42));
}

/// An Event Hub invocation exactly as the host posts a `cardinality: many` batch: `Data.events`
/// is a JSON string holding an array of strings, each one message body.
fn eventhub_batch(messages: &[String]) -> Vec<u8> {
    let batch = serde_json::to_string(messages).unwrap();
    json!({"Data": {"events": batch}, "Metadata": {"sys": {"MethodName": "EntraRiskEvents", "UtcNow": "2026-11-23T12:00:00Z", "RandGuid": "x"}}})
        .to_string()
        .into_bytes()
}

/// A high-risk `riskyUser` diagnostic message for one user.
fn risky_user_message(id: &str, upn: &str, padding: usize) -> String {
    json!({"records": [{
        "time": "2026-11-23T11:50:00Z",
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "category": "RiskyUsers",
        "properties": {
            "id": id, "userPrincipalName": upn, "riskLevel": "high", "riskState": "atRisk",
            "riskDetail": "none", "riskLastUpdatedDateTime": "2026-11-23T11:49:00Z",
            "isDeleted": false, "isProcessing": false,
            "userDisplayName": "x".repeat(padding)
        }
    }]})
    .to_string()
}

#[tokio::test]
async fn the_event_hub_functions_have_a_bounded_retry_policy_and_a_batch_that_fits() {
    let app = quell_tests::root().join("functions/azure-handler/app");
    for f in ["DefenderEvents", "EntraRiskEvents"] {
        let fj: Value =
            serde_json::from_slice(&std::fs::read(app.join(f).join("function.json")).unwrap())
                .unwrap();
        assert_eq!(fj["bindings"][0]["type"], "eventHubTrigger");
        let retry = &fj["retry"];
        assert_eq!(retry["strategy"], "exponentialBackoff", "{f}");
        let n = retry["maxRetryCount"].as_i64().unwrap();
        assert!((1..=10).contains(&n), "{f}: bounded, never -1 (infinite)");
    }
    let host: Value =
        serde_json::from_slice(&std::fs::read(app.join("host.json")).unwrap()).unwrap();
    let batch = host["extensions"]["eventHubs"]["maxEventBatchSize"]
        .as_u64()
        .unwrap() as usize;
    // A full batch of 1 MiB messages (Event Hubs Standard), escaped three times over by the
    // host's nested string encoding, fits the envelope limit.
    assert!(
        batch * 1024 * 1024 * 3 <= quell_core::json::MAX_ENVELOPE_BYTES,
        "{batch}"
    );
}

#[tokio::test]
async fn a_graph_outage_in_an_enforce_event_hub_invocation_fails_it_for_a_retry() {
    let g = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "0")
                .set_body_json(json!({"error": {"code": "ServiceUnavailable", "message": "down"}})),
        )
        .mount(&g)
        .await;
    let url = start(enforce(), &g.uri()).await;
    let body = eventhub_batch(&[risky_user_message(
        "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45",
        "rosa.garcia@contoso.com",
        0,
    )]);
    let (status, reply) = post(&url, "EntraRiskEvents", body.clone()).await;
    assert_eq!(
        status, 500,
        "a non-2xx answer fails the invocation: {reply}"
    );
    assert_eq!(reply["ReturnValue"]["status"], "retry");
    assert!(reply["Logs"].as_array().unwrap().iter().any(|l| {
        l.as_str()
            .unwrap()
            .contains("the invocation fails so it is retried")
    }));
    // In dry-run nothing is called, so nothing can fail.
    let url = start(Policy::default(), &g.uri()).await;
    let (status, _) = post(&url, "EntraRiskEvents", body).await;
    assert_eq!(status, 200);
}

const FOUR_USERS: [(&str, &str); 4] = [
    ("1a2b3c4d-0000-4000-8000-000000000001", "ana@contoso.com"),
    ("1a2b3c4d-0000-4000-8000-000000000002", "ben@contoso.com"),
    ("1a2b3c4d-0000-4000-8000-000000000003", "chen@contoso.com"),
    ("1a2b3c4d-0000-4000-8000-000000000004", "dee@contoso.com"),
];

#[tokio::test]
async fn a_large_batch_is_planned_message_by_message() {
    // 32 messages of ~48 KiB: 1.5 MiB in one host string, past the 1 MiB-per-string limit of
    // one event. Each message is its own plan: four users' 12 actions would pass the default
    // cap of 10 if the batch were one plan.
    let url = start(Policy::default(), "http://127.0.0.1:9").await;
    let messages: Vec<String> = (0..32)
        .map(|i| {
            let (id, upn) = FOUR_USERS[i % 4];
            risky_user_message(id, upn, 48 * 1024)
        })
        .collect();
    let body = eventhub_batch(&messages);
    assert!(body.len() > 1536 * 1024, "{}", body.len());
    let (status, reply) = post(&url, "EntraRiskEvents", body).await;
    assert_eq!(status, 200, "{}", reply["Logs"]);
    let rv = &reply["ReturnValue"];
    assert!(rv["rejected"].is_null(), "{}", rv["rejected"]);
    assert_eq!(rv["findings"].as_array().unwrap().len(), 32);
    assert!(
        rv["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["reason"].as_str().unwrap().contains("blast-radius")),
        "{}",
        rv["skipped"]
    );
    // disable, confirm, revoke for each of the 32 messages.
    assert_eq!(rv["summary"]["dry_run"], 96, "{}", rv["summary"]);
}

#[tokio::test]
async fn four_high_risk_users_in_one_batch_are_each_contained_under_the_default_cap() {
    let g = graph().await;
    let url = start(enforce(), &g.uri()).await;
    let messages: Vec<String> = FOUR_USERS
        .iter()
        .map(|(id, upn)| risky_user_message(id, upn, 0))
        .collect();
    // Graph's copies say already confirmed in Identity Protection: no confirm call (each
    // Identity Protection request is paced to 1/s).
    let copies: Vec<String> = messages
        .iter()
        .map(|m| m.replace("atRisk", "confirmedCompromised"))
        .collect();
    graph_knows(&g, &eventhub_batch(&copies)).await;
    let (status, reply) = post(&url, "EntraRiskEvents", eventhub_batch(&messages)).await;
    assert_eq!(status, 200, "{}", reply["Logs"]);
    let rv = &reply["ReturnValue"];
    let disabled = rv["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["action"]["kind"] == "disable_entra_user" && r["outcome"]["status"] == "applied"
        })
        .count();
    assert_eq!(disabled, 4, "{rv}");
}

#[tokio::test]
async fn a_replayed_admin_confirmed_detection_after_a_re_enable_contains_no_one() {
    // quell contained the user at 12:00:05 (confirm, then revoke); an administrator re-enabled
    // the account; the adminConfirmedUserCompromised detection quell's own confirmation caused
    // (detected 12:00:03) arrives, or is replayed, afterwards.
    let g = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "2d4f6a8c-0e2b-4d6f-8a0c-2e4b6d8f0a1c", "userPrincipalName": "maya.singh@contoso.com",
            "accountEnabled": true, "signInSessionsValidFromDateTime": "2026-11-23T12:00:05Z"
        })))
        .mount(&g)
        .await;
    for m in ["PATCH", "POST"] {
        Mock::given(method(m))
            .respond_with(ResponseTemplate::new(204))
            .expect(0)
            .mount(&g)
            .await;
    }
    let url = start(enforce(), &g.uri()).await;
    let mut detection: Value =
        serde_json::from_slice(&event("entra/risk-detection-leaked-credentials.json")).unwrap();
    detection["riskEventType"] = json!("adminConfirmedUserCompromised");
    detection["riskType"] = json!("adminConfirmedUserCompromised");
    detection["riskState"] = json!("confirmedCompromised");
    detection["detectedDateTime"] = json!("2026-11-23T12:00:03.120Z");
    graph_knows(&g, &eventhub_batch(&[detection.to_string()])).await;
    let (status, reply) = post(
        &url,
        "EntraRiskEvents",
        eventhub_batch(&[detection.to_string()]),
    )
    .await;
    assert_eq!(status, 200);
    let rv = &reply["ReturnValue"];
    assert!(!rv["results"].as_array().unwrap().is_empty());
    for r in rv["results"].as_array().unwrap() {
        assert_eq!(r["outcome"]["status"], "skipped", "{r}");
        assert!(
            r["outcome"]["detail"]
                .as_str()
                .unwrap()
                .contains("not newer than the user's last session revocation")
        );
    }
    // A genuinely new risk event an hour later contains again.
    detection["detectedDateTime"] = json!("2026-11-23T13:10:00Z");
    detection["riskEventType"] = json!("leakedCredentials");
    let g2 = graph().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "2d4f6a8c-0e2b-4d6f-8a0c-2e4b6d8f0a1c", "userPrincipalName": "maya.singh@contoso.com",
            "accountEnabled": true, "signInSessionsValidFromDateTime": "2026-11-23T12:00:05Z"
        })))
        .with_priority(1)
        .mount(&g2)
        .await;
    graph_knows(&g2, &eventhub_batch(&[detection.to_string()])).await;
    let url = start(enforce(), &g2.uri()).await;
    let (_, reply) = post(
        &url,
        "EntraRiskEvents",
        eventhub_batch(&[detection.to_string()]),
    )
    .await;
    let applied = reply["ReturnValue"]["summary"]["applied"].as_u64().unwrap();
    assert!(applied >= 2, "{}", reply["ReturnValue"]);
}

/// An HTTP trigger request carrying `body` as the host posts it.
fn http_request(body: &Value) -> Vec<u8> {
    json!({"Data": {"req": {"Url": "https://quell.azurewebsites.net/api/GraphAlert", "Method": "POST",
        "Query": "{}", "Headers": {"Content-Type": ["application/json"]}, "Params": {}, "Body": body.to_string()}},
        "Metadata": {}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_posted_alert_is_acted_on_only_as_graph_knows_it() {
    // The posted body names an innocent user as compromised; Graph's copy of that alert names
    // someone else. quell acts on Graph's copy.
    let graph_copy: Value =
        serde_json::from_slice(&event("defender/graph-alert-mdi-compromised-user.json")).unwrap();
    let mut forged = graph_copy.clone();
    forged["evidence"][0]["userAccount"]["userPrincipalName"] = json!("ceo@contoso.com");
    forged["evidence"][0]["userAccount"]["azureAdUserId"] =
        json!("99999999-9999-4999-8999-999999999999");
    let g = graph().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1.0/security/alerts_v2/{}",
            graph_copy["id"].as_str().unwrap()
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(&graph_copy))
        .with_priority(1)
        .mount(&g)
        .await;
    let url = start(enforce(), &g.uri()).await;
    let (status, reply) = post(&url, "GraphAlert", http_request(&forged)).await;
    assert_eq!(status, 200);
    let inner: Value =
        serde_json::from_str(reply["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    let targets: Vec<String> = inner["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"]["target"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        targets.iter().any(|t| t == "david.chen@contoso.com"),
        "{targets:?}"
    );
    assert!(
        targets.iter().all(|t| t != "ceo@contoso.com"),
        "{targets:?}"
    );

    // An alert Graph does not know is rejected, never contained.
    let mut unknown = forged.clone();
    unknown["id"] = json!("da000000000000000000_0");
    Mock::given(method("GET"))
        .and(path("/v1.0/security/alerts_v2/da000000000000000000_0"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": {"code": "NotFound", "message": "no alert"}})),
        )
        .with_priority(1)
        .mount(&g)
        .await;
    let (_, reply) = post(&url, "GraphAlert", http_request(&unknown)).await;
    assert_eq!(reply["Outputs"]["res"]["statusCode"], 400, "{reply}");
    assert!(
        reply["ReturnValue"]["error"]
            .as_str()
            .unwrap()
            .contains("does not exist in Graph")
    );
}

#[tokio::test]
async fn an_oauth_app_alert_disables_the_service_principal_resolved_by_app_id() {
    let list: Value =
        serde_json::from_slice(&event("defender/graph-alerts-list-oauth-app.json")).unwrap();
    let alert = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] != "resolved")
        .unwrap()
        .clone();
    let app_id = "0c9b8a7f-6e5d-4c4b-a3a2-918f7e6d5c4b";
    let g = graph().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1.0/security/alerts_v2/{}",
            alert["id"].as_str().unwrap()
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(&alert))
        .with_priority(1)
        .mount(&g)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals(appId='{app_id}')")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910", "appId": app_id,
            "displayName": "legacy-crm-connector", "accountEnabled": true})))
        .expect(1)
        .mount(&g)
        .await;
    // The service principal's own object id is patched, never the application's objectId.
    Mock::given(method("PATCH"))
        .and(path(
            "/v1.0/servicePrincipals/7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910",
        ))
        .and(wiremock::matchers::body_json(
            json!({"accountEnabled": false}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .with_priority(1)
        .mount(&g)
        .await;
    let url = start(enforce(), &g.uri()).await;
    let (status, reply) = post(&url, "GraphAlert", http_request(&alert)).await;
    assert_eq!(status, 200);
    let inner: Value =
        serde_json::from_str(reply["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    let disable = inner["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"]["kind"] == "disable_service_principal")
        .unwrap_or_else(|| panic!("{inner}"));
    assert_eq!(disable["outcome"]["status"], "applied", "{disable}");
}

/// A runbook request as the host posts it.
/// A new ledger table in Azurite, and a maker of clients for it.
async fn fresh_ledger() -> impl Fn() -> TableLedger {
    let table = quell_tests::unique_table("quell");
    let make = move || TableLedger::azurite(&quell_tests::Azurite::shared().url, &table);
    assert!(make().ensure_table().await.unwrap());
    make
}

fn runbook_body(req: Value) -> Vec<u8> {
    json!({"Data": {"req": {"Url": "https://quell-func.azurewebsites.net/api/Runbook", "Method": "POST",
        "Query": {}, "Headers": {"Content-Type": ["application/json"]}, "Params": {},
        "Body": req.to_string()}},
        "Metadata": {"sys": {"MethodName": "Runbook", "UtcNow": "2026-11-23T12:00:00Z"}}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn with_a_ledger_the_handler_records_containment_verifies_it_and_keeps_release_off_http() {
    use quell_ledger::{Ledger, State};
    let g = graph().await;
    let ledger = fresh_ledger().await;
    let url = start_with(enforce(), &g.uri(), Some(ledger()), false).await;
    let batch = event("functions-host/eventhub-batch-triple-encoded.json");
    graph_knows(&g, &batch).await;
    let (status, body) = post(&url, "DefenderEvents", batch.clone()).await;
    assert_eq!(status, 200, "{body}");
    let entries = ledger().list(None).await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].state, State::Done);
    assert!(
        entries[0].principal.starts_with("azure:user/"),
        "{entries:?}"
    );
    // A redelivered batch is the same containment: one record, run again.
    let (status, _) = post(&url, "DefenderEvents", batch).await;
    assert_eq!(status, 200);
    let again = ledger().list(None).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].history.iter().any(|h| h.contains("run again")));

    let principal = entries[0].principal.clone();
    // Anyone with the function key could post a release: it is off unless enabled.
    let req = json!({"runbook": "release", "principal": principal, "reason": "cleared", "requested_by": "x"});
    let (_, body) = post(&url, "Runbook", runbook_body(req.clone())).await;
    assert_eq!(body["Outputs"]["res"]["statusCode"], 400, "{body}");
    assert!(
        body["ReturnValue"]["error"]
            .as_str()
            .unwrap()
            .contains("quell release")
    );
    assert_eq!(ledger().list(None).await.unwrap()[0].state, State::Done);

    // Verify reads the user back (the fake says enabled: someone re-enabled it) and disables it.
    let verify =
        json!({"runbook": "verify", "principal": principal, "reason": "post-incident check"});
    let (_, body) = post(&url, "Runbook", runbook_body(verify)).await;
    assert_eq!(body["Outputs"]["res"]["statusCode"], 200, "{body}");
    let steps = body["ReturnValue"]["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["outcome"]["detail"]
            .as_str()
            .unwrap()
            .contains("attacker persistence")),
        "{steps:?}"
    );

    // With release over HTTP enabled, a release is carried out and recorded: the user is
    // enabled again and the risk quell confirmed is dismissed.
    Mock::given(method("POST"))
        .and(path("/v1.0/identityProtection/riskyUsers/dismiss"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&g)
        .await;
    let url = start_with(enforce(), &g.uri(), Some(ledger()), true).await;
    let (_, body) = post(&url, "Runbook", runbook_body(req)).await;
    assert_eq!(body["Outputs"]["res"]["statusCode"], 200, "{body}");
    assert_eq!(
        ledger().list(None).await.unwrap()[0].state,
        State::Released,
        "{body}"
    );
}

#[test]
fn the_bicep_gives_the_handler_its_ledger_and_the_role_to_use_it() {
    let bicep =
        std::fs::read_to_string(quell_tests::root().join("infra/azure/main.bicep")).unwrap();
    // The table exists, and the handler is told where (the names main.rs reads).
    assert!(bicep.contains("Microsoft.Storage/storageAccounts/tableServices/tables@"));
    for setting in ["QUELL_LEDGER_ENDPOINT", "QUELL_LEDGER_TABLE"] {
        assert!(bicep.contains(&format!("name: '{setting}'")), "{setting}");
    }
    let main =
        std::fs::read_to_string(quell_tests::root().join("functions/azure-handler/src/main.rs"))
            .unwrap();
    assert!(main.contains("\"QUELL_LEDGER_ENDPOINT\"") && main.contains("\"QUELL_LEDGER_TABLE\""));
    // Storage Table Data Contributor, assigned to the identity on the account.
    assert!(bicep.contains("0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"));
    assert!(bicep.contains("roles.storageTableDataContributor)"));
    // Release over HTTP stays off in the deployed app.
    assert!(!bicep.contains("QUELL_HTTP_RELEASE"));
}

/// The `quell.<kind> {json}` record in an answer's `Logs`.
fn record(body: &Value, kind: &str) -> Option<Value> {
    body["Logs"]
        .as_array()?
        .iter()
        .filter_map(|l| l.as_str()?.strip_prefix(&format!("quell.{kind} ")))
        .find_map(|j| serde_json::from_str(j).ok())
}

#[tokio::test]
async fn each_invocation_logs_its_outcome_and_an_alert_when_a_human_is_needed() {
    let g = graph().await;
    let url = start(enforce(), &g.uri()).await;
    graph_knows(
        &g,
        &event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    let (_, body) = post(
        &url,
        "DefenderEvents",
        event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    let o = record(&body, "outcome").expect("quell.outcome");
    assert_eq!(o["function"], "DefenderEvents");
    assert_eq!(o["mode"], "enforce");
    assert_eq!(o["applied"], 4, "{o}");
    assert_eq!(o["failed"], 0);
    // The batch's Entra record belongs to another function: rejected, and said so.
    assert_eq!(o["rejected"], 1);
    assert!(record(&body, "alert").is_none(), "nothing needs a human");

    // A spoofed body: rejected, and an alert for the on-call.
    let (_, body) = post(
        &url,
        "DefenderEvents",
        b"{\"Data\": {\"events\": 42}}".to_vec(),
    )
    .await;
    let o = record(&body, "outcome").unwrap();
    assert_eq!(o["rejected"], 1, "{body}");
    assert_eq!(o["applied"], 0);
    let a = record(&body, "alert").expect("quell.alert");
    assert!(
        a["text"].as_str().unwrap().contains("took no action"),
        "{a}"
    );

    // A failed containment: counted, and the alert says what needs a human.
    let down = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}})),
        )
        .mount(&down)
        .await;
    // Graph can still be read (the alert re-read), but every write is denied.
    graph_knows(
        &down,
        &event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    let url = start(enforce(), &down.uri()).await;
    let (_, body) = post(
        &url,
        "DefenderEvents",
        event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    let o = record(&body, "outcome").unwrap();
    assert!(o["failed"].as_u64().unwrap() >= 1, "{o}");
    let a = record(&body, "alert").expect("quell.alert");
    assert!(a["needs"]["failed"].as_u64().unwrap() >= 1, "{a}");
    assert!(a["text"].as_str().unwrap().contains("Needs a human"), "{a}");
}

#[test]
fn the_bicep_alerts_and_workbook_read_the_records_the_handler_writes() {
    let root = quell_tests::root();
    let bicep = std::fs::read_to_string(root.join("infra/azure/main.bicep")).unwrap();
    let workbook: Value =
        serde_json::from_slice(&std::fs::read(root.join("infra/azure/workbook.json")).unwrap())
            .unwrap();
    // The records' prefixes, as the handler writes them.
    let logs = azure_handler::outcome_logs(
        azure_handler::Function::Runbook,
        None,
        &["spoofed".to_string()],
    );
    assert!(logs[0].starts_with("quell.outcome {"));
    assert!(logs[1].starts_with("quell.alert {"));
    // Each query strips the prefix by its length: `substring(message, N)` must match it.
    for (prefix, n) in [("quell.outcome ", 14), ("quell.alert ", 12)] {
        assert_eq!(prefix.len(), n);
        let queries: Vec<&str> = workbook["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["content"]["query"].as_str())
            .filter(|q| q.contains(&format!("startswith '{prefix}'")))
            .collect();
        assert!(!queries.is_empty(), "the workbook reads {prefix}");
        for q in queries {
            assert!(q.contains(&format!("substring(message, {n})")), "{q}");
        }
    }
    assert!(bicep.contains("Microsoft.Insights/actionGroups@"));
    assert!(bicep.contains("Microsoft.Insights/scheduledQueryRules@"));
    for rule in ["needs-a-human", "failed-actions", "function-failures"] {
        assert!(bicep.contains(&format!("name: '{rule}'")), "{rule}");
    }
    assert!(bicep.contains("loadJsonContent('workbook.json')"));
    // Once per alert: stateless rules, split per invocation, function and principals, each
    // evaluation taking the records ingested since the last one.
    assert_eq!(
        bicep
            .matches("where message startswith \"quell.alert \"")
            .count(),
        2
    );
    assert!(bicep.contains("parse_json(substring(message, 12))"));
    assert!(bicep.contains("autoMitigate: false"));
    assert!(bicep.contains("dimensions: [ 'operation_Id', 'function', 'principals' ]"));
    assert!(bicep.contains("strcat_array(a.principals"));
    assert_eq!(bicep.matches("where ingestion_time() > ago(5m)").count(), 3);
    assert!(bicep.contains("evaluationFrequency: 'PT5M'"));
    // The record names the principals the rules split on.
    let alert: Value = serde_json::from_str(logs[1].strip_prefix("quell.alert ").unwrap()).unwrap();
    assert!(alert["principals"].is_array(), "{alert}");
}

/// The host's queue-trigger request for a message (`Data.<binding name>` is the decoded text).
fn queue_body(text: &str, dequeue_count: u32) -> Vec<u8> {
    json!({"Data": {"msg": text},
        "Metadata": {"DequeueCount": dequeue_count, "ExpirationTime": "2026-11-24T12:00:00+00:00",
            "Id": "7d1f5c2e-9a3b-4c6d-8e0f-1a2b3c4d5e6f", "InsertionTime": "2026-11-23T12:00:00+00:00",
            "NextVisibleTime": "2026-11-23T12:10:00+00:00", "PopReceipt": "AgAAAAMAAAAAAAAAAgtnj8x+1QE=",
            "sys": {"MethodName": "Verify", "UtcNow": "2026-11-23T12:05:00Z", "RandGuid": "24ad4c06-24ad-4e5b-8294-3da9714877e9"}}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_containment_is_checked_again_after_propagation_through_the_verify_queue() {
    use quell_ledger::Ledger;
    let g = graph().await;
    let ledger = fresh_ledger().await;
    let name = quell_tests::unique("verify").to_ascii_lowercase();
    let queue = || VerifyQueue::azurite(&quell_tests::Azurite::queue().url, &name);
    assert!(queue().ensure().await.unwrap());
    let mut policy = enforce();
    policy.verify.after_seconds = 1;
    // A check that cannot be scheduled (no such queue) fails the invocation, so the host
    // redelivers the batch; the containment holds ...
    let missing = VerifyQueue::azurite(&quell_tests::Azurite::queue().url, &format!("{name}-x"));
    let url = start_full(
        policy.clone(),
        &g.uri(),
        Some(ledger()),
        false,
        Some(missing),
    )
    .await;
    let batch = event("functions-host/eventhub-batch-triple-encoded.json");
    graph_knows(&g, &batch).await;
    let (status, body) = post(&url, "DefenderEvents", batch.clone()).await;
    assert_eq!(status, 500, "{body}");
    assert!(body["Logs"].to_string().contains("not scheduled"), "{body}");
    // ... and the redelivery schedules it.
    let url = start_full(policy, &g.uri(), Some(ledger()), false, Some(queue())).await;
    let (status, body) = post(&url, "DefenderEvents", batch).await;
    assert_eq!(status, 200, "{body}");
    let principal = ledger().list(None).await.unwrap()[0].principal.clone();
    // Invisible until IAM/Entra has had its time, then one verify request per principal.
    assert!(queue().peek().await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let texts = queue().peek().await.unwrap();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let req: Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(req["runbook"], "verify");
    assert_eq!(req["principal"], principal.as_str());
    // The host delivers it to Verify: the fake Graph says the user is enabled again, so the
    // check disables it and says why.
    let (status, body) = post(&url, "Verify", queue_body(&texts[0], 1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Outputs"], json!({}));
    // A human hears that the containment did not hold (the needs-a-human rule reads this).
    let alert = record(&body, "alert").expect("a quell.alert record");
    assert!(
        alert["subject"].as_str().unwrap().contains("did not hold"),
        "{alert}"
    );
    let steps = body["ReturnValue"]["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["outcome"]["detail"]
            .as_str()
            .unwrap()
            .contains("attacker persistence")),
        "{steps:?}"
    );
    // The queue can make quell check, never release: anything else is refused (and not retried).
    let release = json!({"runbook": "release", "principal": principal, "reason": "x"}).to_string();
    let (status, body) = post(&url, "Verify", queue_body(&release, 1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ReturnValue"]["status"], "rejected");
    assert_eq!(
        ledger().list(None).await.unwrap()[0].state,
        quell_ledger::State::Done
    );
    let (_, body) = post(&url, "Verify", queue_body("not json", 1)).await;
    assert_eq!(body["ReturnValue"]["status"], "rejected");
    // The message as the host may render it: the JSON itself, or its text encoded once more.
    let as_json = json!({"Data": {"msg": req}, "Metadata": {"DequeueCount": 1}});
    let (status, body) = post(&url, "Verify", as_json.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ReturnValue"]["runbook"], "verify", "{body}");
    let twice = Value::String(texts[0].clone()).to_string();
    let (_, body) = post(&url, "Verify", queue_body(&twice, 1)).await;
    assert_eq!(body["ReturnValue"]["runbook"], "verify", "{body}");

    // A check that cannot be carried out fails the invocation, so the host retries it.
    let denied = graph_refusing_changes(true).await;
    let url = start_full(enforce(), &denied.uri(), Some(ledger()), false, None).await;
    let (status, body) = post(&url, "Verify", queue_body(&texts[0], 2)).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["ReturnValue"]["status"], "retry");
}

#[test]
fn the_verify_function_reads_the_queue_the_bicep_creates_and_the_handler_writes() {
    let root = quell_tests::root();
    let f: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("functions/azure-handler/app/Verify/function.json"))
            .unwrap(),
    )
    .unwrap();
    let b = &f["bindings"][0];
    assert_eq!(b["type"], "queueTrigger");
    assert_eq!(b["name"], "msg", "the handler reads Data.msg");
    assert_eq!(b["queueName"], quell_azure::queue::QUEUE);
    let host: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("functions/azure-handler/app/host.json")).unwrap(),
    )
    .unwrap();
    // The handler writes base64 text, which is what the trigger decodes.
    assert_eq!(host["extensions"]["queues"]["messageEncoding"], "base64");
    assert!(
        host["extensions"]["queues"]["maxDequeueCount"]
            .as_u64()
            .unwrap()
            > 1
    );
    let bicep = std::fs::read_to_string(root.join("infra/azure/main.bicep")).unwrap();
    assert!(bicep.contains(&format!("name: '{}'", quell_azure::queue::QUEUE)));
    assert!(bicep.contains("name: 'QUELL_VERIFY_QUEUE'"));
    // Storage Queue Data Contributor: put messages (the handler) and receive them (the host).
    assert!(bicep.contains("roles.storageQueueDataContributor)"));
    let main = std::fs::read_to_string(root.join("functions/azure-handler/src/main.rs")).unwrap();
    assert!(main.contains("\"QUELL_VERIFY_QUEUE\""));
}

/// A user's authentication methods, none registered since anything (Graph's list).
async fn no_auth_methods(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users/[^/]+/authentication/methods$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
             "id": "28c10230-6103-485e-b985-444c60001490", "createdDateTime": "2024-02-01T08:00:00Z"}]})))
        .mount(server)
        .await;
}

/// A Graph fake that reads the user (enabled or not) and refuses every change with 403.
async fn graph_refusing_changes(enabled: bool) -> MockServer {
    let server = MockServer::start().await;
    no_auth_methods(&server).await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45", "accountEnabled": enabled}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}),
        ))
        .mount(&server)
        .await;
    server
}

fn timer_body(name: &str) -> Vec<u8> {
    json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": name, "UtcNow": "2026-11-23T14:05:00.0042Z", "RandGuid": "x"}}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn the_hourly_timer_releases_expired_containments_and_nothing_else() {
    use quell_ledger::{Ledger, State};
    let g = graph().await;
    let ledger = fresh_ledger().await;
    let mut policy = enforce();
    policy.families.credential_compromise.release_after_hours = Some(1);
    let url = start_with(policy.clone(), &g.uri(), Some(ledger()), false).await;
    graph_knows(
        &g,
        &event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    let (status, body) = post(
        &url,
        "DefenderEvents",
        event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let entries = ledger().list(None).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].expires.as_deref(), Some("2026-11-23T13:00:00Z"));

    // Before the expiry the timer releases nothing.
    let early = start_at(
        policy.clone(),
        &g.uri(),
        Some(ledger()),
        false,
        None,
        NOW + time::Duration::minutes(30),
    )
    .await;
    let (status, body) = post(&early, "ReleaseExpired", timer_body("ReleaseExpired")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ReturnValue"]["principals"], json!([]), "{body}");
    assert_eq!(ledger().list(None).await.unwrap()[0].state, State::Done);

    // A release Graph refuses leaves the containment in force and fails the invocation, so the
    // function-failures alert tells a human; the next hour tries again.
    let denied = graph_refusing_changes(false).await;
    let refused = start_at(
        policy.clone(),
        &denied.uri(),
        Some(ledger()),
        false,
        None,
        NOW + time::Duration::hours(2),
    )
    .await;
    let (status, body) = post(&refused, "ReleaseExpired", timer_body("ReleaseExpired")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["ReturnValue"]["principals"][0]["released"], false,
        "{body}"
    );
    assert_eq!(ledger().list(None).await.unwrap()[0].state, State::Done);

    // After it, the user is enabled again (read first: the fake says disabled) and the entry is
    // released by quell.
    let after = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45", "accountEnabled": false}),
        ))
        .mount(&after)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex(r"^/v1.0/users/[^/]+$"))
        .and(wiremock::matchers::body_json(
            json!({"accountEnabled": true}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&after)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/identityProtection/riskyUsers/dismiss"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&after)
        .await;
    let later = start_at(
        policy,
        &after.uri(),
        Some(ledger()),
        false,
        None,
        NOW + time::Duration::hours(2),
    )
    .await;
    let (status, body) = post(&later, "ReleaseExpired", timer_body("ReleaseExpired")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Outputs"], json!({}));
    let done = body["ReturnValue"]["principals"].as_array().unwrap();
    assert_eq!(done.len(), 1, "{body}");
    assert_eq!(done[0]["released"], true, "{body}");
    let entry = &ledger().list(None).await.unwrap()[0];
    assert_eq!(entry.state, State::Released);
    assert_eq!(entry.released_by.as_deref(), Some(quell_ledger::EXPIRED_BY));
    // The next hour finds nothing to do.
    let (_, body) = post(&later, "ReleaseExpired", timer_body("ReleaseExpired")).await;
    assert_eq!(body["ReturnValue"]["principals"], json!([]));
    let f: Value = serde_json::from_str(
        &std::fs::read_to_string(
            quell_tests::root().join("functions/azure-handler/app/ReleaseExpired/function.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(f["bindings"][0]["type"], "timerTrigger");
}

#[tokio::test]
async fn every_function_folder_the_host_loads_has_a_route_that_answers() {
    // The host POSTs each invocation to /<folder name>: a folder without a route would fail
    // every invocation of that function with 404.
    let g = graph().await;
    let url = start(Policy::default(), &g.uri()).await;
    let app = quell_tests::root().join("functions/azure-handler/app");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&app).unwrap() {
        let path = entry.unwrap().path();
        if path.join("function.json").exists() {
            names.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "DefenderEvents",
            "EntraRiskEvents",
            "GraphAlert",
            "PostureSweep",
            "ReleaseExpired",
            "Runbook",
            "Verify"
        ]
    );
    for name in &names {
        assert!(
            azure_handler::Function::parse(name).is_some(),
            "{name} has no route"
        );
        let (status, _) = post(&url, name, b"{}".to_vec()).await;
        assert_ne!(status, 404, "{name}");
    }
}

/// Anyone who can send to the hub writes a record's tenant: a record for another tenant is
/// refused, and one for quell's own tenant is planned in it (its breaker scope is quell's).
#[tokio::test]
async fn an_event_hub_record_for_another_tenant_is_refused() {
    let own = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let http = Http::new(
        Endpoints::new("http://127.0.0.1:9", "http://127.0.0.1:9"),
        Arc::new(StaticToken("t".into())),
    )
    .with_tenant(own);
    let executor = AzureExecutor::new(
        http,
        Policy::default(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec![],
    );
    let app = App {
        policy: Policy::default(),
        ctx: Context::default(),
        executor,
        clock: Arc::new(FixedClock(NOW)),
        ledger: None,
        http_release: false,
        verify_queue: None,
        aws: None,
        links: Default::default(),
    };
    let foreign = risky_user_message(
        "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45",
        "rosa.garcia@contoso.com",
        0,
    )
    .replace(own, "11111111-2222-4333-8444-555555555555");
    let reply = app
        .handle(Function::EntraRiskEvents, &eventhub_batch(&[foreign]))
        .await;
    assert_eq!(reply["ReturnValue"]["status"], "rejected", "{reply}");
    assert!(
        reply["ReturnValue"]["error"]
            .as_str()
            .unwrap()
            .contains("not quell's tenant")
    );
    let mine = risky_user_message(
        "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45",
        "rosa.garcia@contoso.com",
        0,
    );
    let reply = app
        .handle(Function::EntraRiskEvents, &eventhub_batch(&[mine]))
        .await;
    assert_eq!(
        reply["ReturnValue"]["findings"][0]["tenant"], own,
        "{reply}"
    );
}

/// A risk-detection diagnostic record naming one user, as a hub sender can write it.
fn risk_detection_message(id: &str, user: &str, upn: &str) -> String {
    json!({"records": [{
        "time": "2026-11-23T11:50:00Z",
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "category": "UserRiskEvents",
        "properties": {
            "id": id, "riskEventType": "leakedCredentials", "riskState": "atRisk",
            "riskLevel": "high", "riskDetail": "none", "source": "IdentityProtection",
            "detectedDateTime": "2026-11-23T11:49:00Z", "userId": user, "userPrincipalName": upn
        }
    }]})
    .to_string()
}

#[tokio::test]
async fn forged_event_hub_records_are_acted_on_only_as_graph_knows_them() {
    let g = graph().await;
    // What a hub sender wrote: a detection Graph never made, a user Graph says is safe, a
    // detection whose user the sender swapped, and a Defender alert Graph never raised.
    let (ana, ben, chen) = (FOUR_USERS[0], FOUR_USERS[1], FOUR_USERS[2]);
    let invented = risk_detection_message(&"a".repeat(64), ana.0, ana.1);
    let safe = risky_user_message(ben.0, ben.1, 0);
    let swapped = risk_detection_message(&"b".repeat(64), ana.0, ana.1);
    let graph_copies = [
        risky_user_message(ben.0, ben.1, 0).replace("atRisk", "dismissed"),
        risk_detection_message(&"b".repeat(64), chen.0, chen.1),
    ];
    graph_knows(&g, &eventhub_batch(&graph_copies)).await;
    for (id, upn) in [ana, ben, chen] {
        Mock::given(method("GET"))
            .and(path(format!("/v1.0/users/{id}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(
                    json!({"id": id, "userPrincipalName": upn, "accountEnabled": true}),
                ),
            )
            .with_priority(1)
            .mount(&g)
            .await;
    }
    let url = start(enforce(), &g.uri()).await;
    let (status, reply) = post(
        &url,
        "EntraRiskEvents",
        eventhub_batch(&[invented, safe, swapped]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let rv = &reply["ReturnValue"];
    assert!(
        rv["rejected"]
            .to_string()
            .contains("does not exist in Graph"),
        "{rv}"
    );
    // Only Graph's copy decided: chen (the swapped detection's real user) is contained; ana,
    // named by the sender twice, and ben, whom Graph calls safe, are untouched.
    let written: Vec<String> = g
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method != wiremock::http::Method::GET)
        .map(|r| format!("{} {}", r.url.path(), String::from_utf8_lossy(&r.body)))
        .collect();
    assert!(written.iter().any(|p| p.contains(chen.0)), "{written:?}");
    assert!(
        !written
            .iter()
            .any(|p| p.contains(ana.0) || p.contains(ben.0)),
        "{written:?}"
    );

    Mock::given(method("GET"))
        .and(path_regex("^/v1.0/security/alerts_v2/[^/]+$"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(
                json!({"error": {"code": "NotFound", "message": "Alert not found"}}),
            ),
        )
        .with_priority(1)
        .mount(&g)
        .await;
    let (status, reply) = post(
        &url,
        "DefenderEvents",
        event("functions-host/eventhub-batch-triple-encoded.json"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["ReturnValue"]
            .to_string()
            .contains("does not exist in Graph"),
        "{reply}"
    );
    assert!(
        reply["ReturnValue"]["results"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "{reply}"
    );
}
