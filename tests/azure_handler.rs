//! The custom handler over real HTTP, with the exact Functions-host request and response JSON:
//! readiness, each trigger's payload (the triple-encoded Event Hub batch, HTTP requests with
//! `Query` as a string or an object, timer ticks), and bad bodies.

use std::sync::Arc;

use azure_handler::{App, isolate, router};
use quell_azure::{AzureExecutor, Endpoints, Http, StaticToken};
use quell_core::clock::FixedClock;
use quell_core::policy::Mode;
use quell_core::{Context, Policy};
use quell_tests::event;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NOW: time::OffsetDateTime = time::macros::datetime!(2026-11-23 12:00:00 UTC);

/// Starts the handler on 127.0.0.1 with a free port; returns its base URL.
async fn start(policy: Policy, graph: &str) -> String {
    let http = Http::new(
        Endpoints::new(graph, graph),
        Arc::new(StaticToken("t".into())),
    );
    let executor = AzureExecutor::new(
        http,
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec![],
    );
    let app = Arc::new(App {
        policy,
        ctx: Context::default(),
        executor,
        clock: Arc::new(FixedClock(NOW)),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    url
}

async fn post(url: &str, function: &str, body: Vec<u8>) -> (u16, Value) {
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

fn enforce() -> Policy {
    Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    }
}

#[tokio::test]
async fn readiness_probe_answers_at_once() {
    let url = start(Policy::default(), "http://127.0.0.1:9").await;
    let r = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_triple_encoded_event_hub_batch_is_contained() {
    let g = graph().await;
    let url = start(enforce(), &g.uri()).await;
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
