//! The Azure Functions custom handler. The host POSTs `{"Data", "Metadata"}` to
//! `/<FunctionName>`; quell answers `{"Outputs", "Logs", "ReturnValue"}` with a 2xx.
//!
//! - Malformed input gets a clear error and no action. Event Hub functions answer 200 with
//!   `status: rejected` (so the host does not redeliver a poison batch forever); one bad message
//!   in a batch is reported without blocking the others. HTTP functions answer through `res`
//!   with 400.
//! - Each invocation runs in its own task: a panic answers 500 for that invocation only.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quell_azure::AzureExecutor;
use quell_core::normalize::host::messages;
use quell_core::report::Report;
use quell_core::{Batch, Context, Policy, Source, json, plan};
use serde_json::{Value, json};

/// The functions this handler serves, by the host's function name (folder under `app/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Defender XDR streaming (Event Hub, cardinality many).
    DefenderEvents,
    /// Entra ID Protection diagnostic logs (Event Hub, cardinality many).
    EntraRiskEvents,
    /// Graph alerts_v2 alerts posted over HTTP (e.g. by a Sentinel playbook).
    GraphAlert,
    /// A runbook request over HTTP.
    Runbook,
    /// Timer: posture sweeps.
    PostureSweep,
}

impl Function {
    pub fn parse(name: &str) -> Option<Function> {
        Some(match name {
            "DefenderEvents" => Function::DefenderEvents,
            "EntraRiskEvents" => Function::EntraRiskEvents,
            "GraphAlert" => Function::GraphAlert,
            "Runbook" => Function::Runbook,
            "PostureSweep" => Function::PostureSweep,
            _ => return None,
        })
    }
    fn is_http(self) -> bool {
        matches!(self, Function::GraphAlert | Function::Runbook)
    }
    /// The sources each function accepts: a misrouted or spoofed payload is refused.
    fn accepts(self, s: Source) -> bool {
        match self {
            Function::DefenderEvents => matches!(s, Source::DefenderXdr),
            Function::EntraRiskEvents => {
                matches!(s, Source::EntraRiskDetection | Source::EntraRiskyUser)
            }
            Function::GraphAlert => matches!(s, Source::GraphAlert),
            Function::Runbook => true,
            Function::PostureSweep => false,
        }
    }
}

pub struct App {
    pub policy: Policy,
    pub ctx: Context,
    pub executor: AzureExecutor,
    pub clock: Arc<dyn quell_core::clock::Clock>,
}

/// The router: `GET /` (readiness) and `POST /<FunctionName>`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { "quell ready" }))
        .route("/{function}", post(invoke))
        .layer(DefaultBodyLimit::max(json::MAX_INPUT_BYTES + 1024 * 1024))
        .with_state(app)
}

/// Runs `fut` in its own task: a panic becomes an error for this invocation only.
pub async fn isolate<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(fut).await.map_err(|e| {
        if e.is_panic() {
            "internal error: the invocation panicked; no further action was taken".to_string()
        } else {
            "internal error: the invocation was cancelled".to_string()
        }
    })
}

async fn invoke(State(app): State<Arc<App>>, Path(name): Path<String>, body: Bytes) -> Response {
    let Some(function) = Function::parse(&name) else {
        return (StatusCode::NOT_FOUND, format!("no function named {name:?}")).into_response();
    };
    match isolate(async move { app.handle(function, &body).await }).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            tracing::error!(function = name, "{e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"Outputs": {}, "Logs": [e], "ReturnValue": {"status": "error"}})),
            )
                .into_response()
        }
    }
}

/// The host's response: `Outputs` (`res` for HTTP functions), `Logs`, `ReturnValue`.
fn host_response(function: Function, status: u16, result: Value, logs: Vec<String>) -> Value {
    let outputs = if function.is_http() {
        json!({"res": {
            "statusCode": status,
            "headers": {"Content-Type": "application/json"},
            "body": result.to_string(),
        }})
    } else {
        json!({})
    };
    json!({"Outputs": outputs, "Logs": logs, "ReturnValue": result})
}

impl App {
    /// Handles one invocation body; always answers (never panics on input).
    pub async fn handle(&self, function: Function, body: &[u8]) -> Value {
        let value = match json::parse(body) {
            Ok(v) => v,
            Err(e) => return self.rejected(function, format!("the host body is not usable: {e}")),
        };
        if function == Function::PostureSweep {
            return self.sweep().await;
        }
        let mut logs = Vec::new();
        let mut batch = Batch::default();
        let mut rejected = Vec::new();
        for (pointer, result) in messages(&value) {
            match result {
                Ok(b) => {
                    for f in b.findings {
                        if function.accepts(f.source) {
                            batch.findings.push(f);
                        } else {
                            rejected.push(format!(
                                "{pointer}: {:?} findings do not belong to function {function:?}",
                                f.source
                            ));
                        }
                    }
                    batch.ignored.extend(b.ignored);
                }
                Err(e) => rejected.push(e.to_string()),
            }
        }
        for r in &rejected {
            logs.push(format!("rejected: {r}"));
            tracing::warn!(function = ?function, "rejected: {r}");
        }
        if batch.findings.is_empty() && batch.ignored.is_empty() {
            return self.rejected_many(function, rejected, logs);
        }
        let plan = plan(batch, &self.policy, &self.ctx);
        let report: Report = self.executor.execute(&plan).await;
        for line in report.lines() {
            tracing::info!("{line}");
            logs.push(line);
        }
        for i in &plan.ignored {
            logs.push(format!("ignored {}: {}", i.pointer, i.reason));
        }
        let mut result = serde_json::to_value(&report).unwrap_or(Value::Null);
        if !rejected.is_empty() {
            result["rejected"] = json!(rejected);
        }
        host_response(function, 200, result, logs)
    }

    /// The timer: sweep the tenant for stale service-principal credentials.
    async fn sweep(&self) -> Value {
        let opts = quell_azure::sweep::AzureSweepOptions {
            policy: &self.policy,
            ctx: &self.ctx,
            now: self.clock.now(),
            enforce: self.policy.mode == quell_core::Mode::Enforce,
        };
        match quell_azure::sweep::sweep_tenant(self.executor.http(), &opts).await {
            Ok(report) => {
                let mut logs: Vec<String> = report
                    .credentials
                    .iter()
                    .map(|c| {
                        format!(
                            "{:?} {} {} credential {} ({}): {}",
                            c.outcome.status,
                            c.owner_kind,
                            c.display_name,
                            c.key_id,
                            c.reason,
                            c.outcome.detail
                        )
                    })
                    .collect();
                logs.push(format!(
                    "swept {} credentials: {} stale; {} service principals without recent sign-in",
                    report.credentials_checked,
                    report.credentials.len(),
                    report.stale_service_principals.len()
                ));
                host_response(
                    Function::PostureSweep,
                    200,
                    serde_json::to_value(&report).unwrap_or(Value::Null),
                    logs,
                )
            }
            Err(e) => {
                let line = format!("sweep failed: {e}");
                tracing::error!("{line}");
                host_response(
                    Function::PostureSweep,
                    200,
                    json!({"status": "failed", "error": e.to_string()}),
                    vec![line],
                )
            }
        }
    }

    fn rejected(&self, function: Function, error: String) -> Value {
        tracing::warn!(function = ?function, "rejected: {error}");
        let logs = vec![format!("rejected: {error}")];
        host_response(
            function,
            400,
            json!({"status": "rejected", "error": error}),
            logs,
        )
    }

    fn rejected_many(&self, function: Function, errors: Vec<String>, logs: Vec<String>) -> Value {
        let error = if errors.is_empty() {
            "the invocation holds no event".to_string()
        } else {
            errors.join("; ")
        };
        let mut logs = logs;
        if logs.is_empty() {
            logs.push(format!("rejected: {error}"));
        }
        host_response(
            function,
            400,
            json!({"status": "rejected", "error": error}),
            logs,
        )
    }
}
