//! The Lambda function binary against a stub Lambda Runtime API (the documented
//! `/2018-06-01/runtime/invocation/next` and `/response` contract) and moto: the metrics it logs
//! in the Embedded Metric Format, for a dry-run and an enforce invocation.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Runtime {
    /// The invocation payloads, as bytes on the wire.
    events: Arc<Mutex<Vec<String>>>,
    responses: Arc<Mutex<Vec<Value>>>,
    done: Arc<tokio::sync::Notify>,
}

async fn next(State(rt): State<Runtime>) -> (HeaderMap, String) {
    loop {
        let ev = rt.events.lock().unwrap().pop();
        if let Some(ev) = ev {
            let mut h = HeaderMap::new();
            h.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_static("8476a536-e9f4-11e8-9739-2dfe598c3fcd"),
            );
            h.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from_str(&(u64::MAX / 2).to_string()).unwrap(),
            );
            h.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static(
                    "arn:aws:lambda:us-east-1:111122223333:function:quell-runbook",
                ),
            );
            h.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1"),
            );
            return (h, ev);
        }
        // No more events: hold the poll open, as the real Runtime API does.
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

async fn response(
    State(rt): State<Runtime>,
    Path(_id): Path<String>,
    body: String,
) -> &'static str {
    rt.responses
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).unwrap_or(Value::String(body)));
    rt.done.notify_one();
    "{}"
}

/// Runs the function binary for one invocation of `event`; its response and its EMF lines.
fn invoke(mode: &str, event: Value) -> (Value, Vec<Value>) {
    invoke_raw(mode, event.to_string())
}

/// [`invoke`] with the payload exactly as the Runtime API delivers it.
fn invoke_raw(mode: &str, event: String) -> (Value, Vec<Value>) {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let rt = Runtime::default();
    rt.events.lock().unwrap().push(event);
    let (addr, rt) = tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(response))
            .route("/2018-06-01/runtime/init/error", post(response))
            .with_state(rt.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, rt)
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_aws-runbook"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "quell-runbook")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/quell-runbook")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/23/[$LATEST]abc")
        .env("AWS_ENDPOINT_URL", &quell_tests::Moto::shared().url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("QUELL_MODE", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(60), rt.done.notified())
            .await
            .expect("the function answered within 60 s");
    });
    // The metrics are written before the response is sent; stop the function and read them.
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let emf: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let response = rt.responses.lock().unwrap()[0].clone();
    (response, emf)
}

fn main_doc(emf: &[Value]) -> &Value {
    emf.iter()
        .find(|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
                == json!([["Service"], ["Service", "Function"]])
        })
        .expect("the per-invocation document")
}

#[test]
fn a_dry_run_and_an_enforce_invocation_log_their_metrics() {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let user = quell_tests::unique("emf");
    tokio.block_on(async {
        let iam = aws_sdk_iam::Client::new(&quell_tests::moto_sdk().await);
        iam.create_user().user_name(&user).send().await.unwrap();
    });
    let event = json!({"runbook": "quarantine", "reason": "SEC-9: metrics",
        "principal": format!("arn:aws:iam::{}:user/{user}", quell_tests::MOTO_ACCOUNT),
        "id": quell_tests::unique("emf-finding")});

    let (response, emf) = invoke("dry-run", event.clone());
    assert_eq!(response["mode"], "dry-run", "{response}");
    let planned = response["results"].as_array().unwrap().len();
    assert!(planned > 0);
    let m = main_doc(&emf);
    let decl = &m["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(decl["Namespace"], "quell");
    assert!(m["_aws"]["Timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(m["Service"], "quell");
    assert_eq!(m["Function"], "runbook");
    assert_eq!(m["Invocations"], 1.0);
    assert_eq!(m["Findings"], 1.0);
    assert_eq!(m["DryRun"], planned as f64);
    assert_eq!(m["Applied"], 0.0);
    assert_eq!(m["Errors"], 0.0);
    assert!(m["Duration"].as_f64().unwrap() > 0.0);
    let names: Vec<&str> = decl["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Name"].as_str().unwrap())
        .collect();
    for n in [
        "Findings", "Applied", "Failed", "Withheld", "Rejected", "Duration",
    ] {
        assert!(names.contains(&n), "{n} declared");
    }
    assert!(emf.iter().any(|d| d["ActionKind"] == "quarantine_user"
        && d["Outcome"] == "dry_run"
        && d["Actions"] == 1
        && d["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
            == json!([["Service", "ActionKind", "Outcome"]])));

    let (response, emf) = invoke("enforce", event);
    assert_eq!(response["mode"], "enforce", "{response}");
    let m = main_doc(&emf);
    assert_eq!(
        m["Applied"],
        response["summary"]["applied"].as_u64().unwrap() as f64
    );
    assert!(m["Applied"].as_f64().unwrap() >= 1.0, "{m}");
    assert_eq!(m["DryRun"], 0.0);
    assert!(
        emf.iter()
            .any(|d| d["ActionKind"] == "quarantine_user" && d["Outcome"] == "applied")
    );
}

#[test]
fn a_payload_with_a_duplicate_key_is_rejected_through_the_runtime() {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let user = quell_tests::unique("dup");
    tokio.block_on(async {
        let iam = aws_sdk_iam::Client::new(&quell_tests::moto_sdk().await);
        iam.create_user().user_name(&user).send().await.unwrap();
    });
    // A JSON value would keep only the last "principal": the bytes must reach quell's parser.
    let payload = format!(
        r#"{{"runbook": "quarantine", "reason": "SEC-9: duplicate", "principal": "arn:aws:iam::{acct}:user/breakglass", "principal": "arn:aws:iam::{acct}:user/{user}"}}"#,
        acct = quell_tests::MOTO_ACCOUNT
    );
    let (response, emf) = invoke_raw("enforce", payload);
    assert_eq!(response["status"], "rejected", "{response}");
    assert!(
        response["error"]
            .as_str()
            .unwrap()
            .contains("duplicate key"),
        "{response}"
    );
    assert_eq!(main_doc(&emf)["Rejected"], 1.0);
    assert_eq!(main_doc(&emf)["Applied"], 0.0);
    // Nothing was done to the user.
    tokio.block_on(async {
        let iam = aws_sdk_iam::Client::new(&quell_tests::moto_sdk().await);
        let attached = iam
            .list_attached_user_policies()
            .user_name(&user)
            .send()
            .await
            .unwrap();
        assert!(attached.attached_policies().is_empty());
    });
}
