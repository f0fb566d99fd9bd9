//! The Azure Functions custom handler. The host POSTs `{"Data", "Metadata"}` to
//! `/<FunctionName>`; quell answers `{"Outputs", "Logs", "ReturnValue"}` with a 2xx.
//!
//! - Malformed input gets a clear error and no action. Event Hub functions answer 200 with
//!   `status: rejected` (so the host does not redeliver a poison batch forever); one bad message
//!   in a batch is reported without blocking the others. HTTP functions answer through `res`
//!   with 400.
//! - Each message of a batch is planned on its own (the blast-radius cap is per message, not per
//!   whatever the host batched together) and held to one event's limits.
//! - A transient failure (429 after `Retry-After`, 5xx, token or transport) is never
//!   acknowledged: Event Hub functions answer 500, which fails the invocation so the function's
//!   retry policy (function.json `retry`) redelivers the batch; the actions are idempotent. HTTP
//!   functions answer 503 through `res`, for the caller to retry.
//! - An alert posted to `GraphAlert` is re-read from Graph by id before anything is contained:
//!   anyone with the function key can post a body; only Graph's copy is acted on.
//! - Each invocation runs in its own task: a panic answers 500 for that invocation only.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quell_azure::{AzureExecutor, TableLedger};
use quell_core::normalize::host::messages;
use quell_core::report::Report;
use quell_core::{Batch, Context, FindingRef, Mode, Policy, Source, json, plan};
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
    /// Queue: the checks after containment (`quell-verify`), each a `verify` runbook request.
    Verify,
    /// Timer (hourly): releases containments whose family's `release_after_hours` has passed.
    ReleaseExpired,
}

impl Function {
    pub fn parse(name: &str) -> Option<Function> {
        Some(match name {
            "DefenderEvents" => Function::DefenderEvents,
            "EntraRiskEvents" => Function::EntraRiskEvents,
            "GraphAlert" => Function::GraphAlert,
            "Runbook" => Function::Runbook,
            "PostureSweep" => Function::PostureSweep,
            "Verify" => Function::Verify,
            "ReleaseExpired" => Function::ReleaseExpired,
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
                matches!(
                    s,
                    Source::EntraRiskDetection
                        | Source::EntraRiskyUser
                        | Source::EntraServicePrincipalRiskDetection
                        | Source::EntraRiskyServicePrincipal
                )
            }
            Function::GraphAlert => matches!(s, Source::GraphAlert),
            Function::Runbook => true,
            Function::PostureSweep | Function::Verify | Function::ReleaseExpired => false,
        }
    }
}

/// Why a posted alert could not be verified.
enum Verify {
    /// Not in Graph, or not readable for good: rejected, never contained.
    Rejected(String),
    /// Graph was unavailable: the invocation is retried.
    Transient(String),
}

pub struct App {
    pub policy: Policy,
    pub ctx: Context,
    pub executor: AzureExecutor,
    pub clock: Arc<dyn quell_core::clock::Clock>,
    /// The containment ledger (Table Storage, `QUELL_LEDGER_TABLE`): claims before acting,
    /// records after; `None` runs without (each action still reads before it writes).
    pub ledger: Option<TableLedger>,
    /// Whether the `Runbook` function may release a containment. Off by default: anyone with
    /// the function key could otherwise undo quell's containment, and the HTTP surface stays
    /// contain-only. Release with `quell release` under your own identity instead, or set
    /// `QUELL_HTTP_RELEASE=enabled` on a handler behind stronger authentication.
    pub http_release: bool,
    /// Where checks after containment are scheduled (`QUELL_VERIFY_QUEUE`, the storage queue
    /// the `Verify` function reads); `None` leaves them to `quell verify`.
    pub verify_queue: Option<quell_azure::VerifyQueue>,
}

/// The router: `GET /` (readiness) and `POST /<FunctionName>`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { "quell ready" }))
        .route("/{function}", post(invoke))
        .layer(DefaultBodyLimit::max(json::MAX_ENVELOPE_BYTES))
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
        // A retryable failure in an Event Hub batch: fail the invocation (non-2xx) so the host
        // does not checkpoint past it and the retry policy redelivers it.
        Ok(v) if !function.is_http() && v["ReturnValue"]["status"] == "retry" => {
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(v)).into_response()
        }
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
        let value = match json::parse_with(body, json::Limits::ENVELOPE) {
            Ok(v) => v,
            Err(e) => return self.rejected(function, format!("the host body is not usable: {e}")),
        };
        if function == Function::PostureSweep {
            return self.sweep().await;
        }
        if function == Function::Verify {
            return self.scheduled_check(&value).await;
        }
        if function == Function::ReleaseExpired {
            return self.release_expired().await;
        }
        if function == Function::Runbook
            && let Some(req) = runbook_request(&value)
            && let Some(kind @ ("release" | "verify")) = req["runbook"].as_str()
        {
            return self.ledger_runbook(Function::Runbook, kind, &req).await;
        }
        let mut logs = Vec::new();
        let mut rejected = Vec::new();
        let mut reports = Vec::new();
        let mut ignored = Vec::new();
        let mut unverified = Vec::new();
        for (pointer, result) in messages(&value) {
            let b = match result {
                Ok(b) => b,
                Err(e) => {
                    rejected.push(e.to_string());
                    continue;
                }
            };
            let mut batch = Batch {
                findings: Vec::new(),
                ignored: b.ignored,
            };
            for f in b.findings {
                if !function.accepts(f.source) {
                    rejected.push(format!(
                        "{pointer}: {:?} findings do not belong to function {function:?}",
                        f.source
                    ));
                    continue;
                }
                if function == Function::GraphAlert && self.policy.mode == Mode::Enforce {
                    match self.verified(&f).await {
                        Ok(copy) => batch.findings.extend(copy),
                        Err(Verify::Rejected(e)) => rejected.push(format!("{pointer}: {e}")),
                        Err(Verify::Transient(e)) => unverified.push(format!("{pointer}: {e}")),
                    }
                } else {
                    batch.findings.push(f);
                }
            }
            if batch.findings.is_empty() && batch.ignored.is_empty() {
                continue;
            }
            // One plan per message: the blast-radius cap counts this message's actions only.
            let plan = plan(batch, &self.policy, &self.ctx);
            ignored.extend(plan.ignored.clone());
            match self.execute(plan).await {
                Ok((r, scheduled)) => {
                    reports.push(r);
                    // The containment holds; the retry (idempotent) schedules the check again.
                    if let Err(e) = scheduled {
                        unverified.push(format!(
                            "{pointer}: the check after containment was not scheduled ({e})"
                        ));
                    }
                }
                // No containment without the ledger when one is configured: retried.
                Err(e) => unverified.push(format!("{pointer}: {e}")),
            }
        }
        for r in &rejected {
            logs.push(format!("rejected: {r}"));
            tracing::warn!(function = ?function, "rejected: {r}");
        }
        for u in &unverified {
            logs.push(format!("will retry: {u}"));
            tracing::warn!(function = ?function, "will retry: {u}");
        }
        if reports.is_empty() && unverified.is_empty() {
            return self.rejected_many(function, rejected, logs);
        }
        let report = Report::merge(
            self.policy.mode,
            quell_core::clock::rfc3339_seconds(self.clock.now()),
            reports,
        );
        for line in report.lines() {
            tracing::info!("{line}");
            logs.push(line);
        }
        for i in &ignored {
            logs.push(format!("ignored {}: {}", i.pointer, i.reason));
        }
        logs.extend(outcome_logs(function, Some(&report), &rejected));
        let mut result = serde_json::to_value(&report).unwrap_or(Value::Null);
        if !rejected.is_empty() {
            result["rejected"] = json!(rejected);
        }
        let retry = report.should_retry() || !unverified.is_empty();
        if retry {
            let failed: Vec<String> = report
                .results
                .iter()
                .filter(|r| r.outcome.retryable)
                .map(|r| {
                    format!(
                        "{} {}: {}",
                        r.action.kind.as_str(),
                        r.action.target.label(),
                        r.outcome.error_code.as_deref().unwrap_or("error")
                    )
                })
                .chain(unverified.iter().cloned())
                .collect();
            let line = format!(
                "transient failure, the invocation fails so it is retried (every action is idempotent): {}",
                failed.join("; ")
            );
            tracing::error!("{line}");
            logs.push(line);
            result["status"] = json!("retry");
            return host_response(function, 503, result, logs);
        }
        host_response(function, 200, result, logs)
    }

    /// Executes a plan, claiming its containments in the ledger first and recording them after,
    /// then schedules the checks after containment (whether they could be, beside the report).
    async fn execute(
        &self,
        plan: quell_core::Plan,
    ) -> Result<(Report, Result<(), quell_azure::AzError>), quell_ledger::LedgerError> {
        let Some(ledger) = &self.ledger else {
            return Ok((self.executor.execute(&plan).await, Ok(())));
        };
        let now = self.clock.now();
        let gated = quell_ledger::gate(ledger, plan, &self.policy, now).await?;
        let report = self.executor.execute(&gated.plan).await;
        quell_ledger::record(ledger, &gated.claims, &report, now).await?;
        let scheduled = self
            .schedule_checks(&quell_ledger::to_verify(&gated.claims, &report))
            .await;
        Ok((report, scheduled))
    }

    /// Schedules the check after containment of each principal.
    async fn schedule_checks(&self, principals: &[String]) -> Result<(), quell_azure::AzError> {
        let after = self.policy.verify.after_seconds;
        let (Some(queue), false, true) = (&self.verify_queue, principals.is_empty(), after > 0)
        else {
            return Ok(());
        };
        match queue.schedule(principals, after).await {
            Ok(()) => {
                tracing::info!(?principals, after, "check after containment scheduled");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, ?principals, "check after containment not scheduled");
                Err(e)
            }
        }
    }

    /// The `Verify` queue trigger: `Data.msg` is the message text (the host decodes the base64),
    /// which must be a `verify` runbook request: the queue can only make quell check and
    /// contain, never release. A check with a failed step fails the invocation, so the host
    /// retries it (and, past `maxDequeueCount`, moves it to the poison queue).
    async fn scheduled_check(&self, value: &Value) -> Value {
        let f = Function::Verify;
        // The host hands over the message text, or the JSON it holds; accept either, and a
        // string that is itself JSON-encoded once more.
        let mut req = value["Data"]["msg"].clone();
        for _ in 0..2 {
            if let Value::String(text) = &req {
                req = match json::parse(text.as_bytes()) {
                    Ok(v) => v,
                    Err(e) => return self.rejected(f, format!("/Data/msg: {e}")),
                };
            }
        }
        if !req.is_object() {
            return self.rejected(f, "/Data/msg: expected the queue message".into());
        }
        if req["runbook"] != "verify" {
            return self.rejected(
                f,
                "/Data/msg: a verify queue message must be a verify runbook request".into(),
            );
        }
        let mut answer = self.ledger_runbook(f, "verify", &req).await;
        let failed = answer["ReturnValue"]["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["outcome"]["status"] == "failed");
        if failed {
            answer["ReturnValue"]["status"] = json!("retry");
        }
        answer
    }

    /// `{"runbook": "release" | "verify", "principal": …, "reason": …, "requested_by": …}`:
    /// undo quell's containment of a principal from the ledger (only with `http_release`), or
    /// check it still holds and, in enforce mode, contain what appeared since.
    async fn ledger_runbook(&self, f: Function, kind: &str, req: &Value) -> Value {
        use quell_ledger::Ledger;
        let Some(ledger) = &self.ledger else {
            return self.rejected(
                f,
                format!("a {kind} runbook needs the ledger: set QUELL_LEDGER_TABLE and QUELL_LEDGER_ENDPOINT"),
            );
        };
        if kind == "release" && !self.http_release {
            return self.rejected(
                f,
                "release over HTTP is off: anyone with the function key could undo a containment. Run `quell release` under your own identity, or set QUELL_HTTP_RELEASE=enabled".into(),
            );
        }
        let reason = req["reason"].as_str().unwrap_or("").trim();
        if reason.is_empty() {
            return self.rejected(f, "/reason: a release or verify needs a reason".into());
        }
        let Some(key) = req["principal"]
            .as_str()
            .and_then(|p| quell_ledger::key_of_argument(p, req["principal_type"].as_str()))
            .filter(|k| k.starts_with("azure:"))
        else {
            return self.rejected(
                f,
                "/principal: expected an Entra user (object id or UPN), or an object id with principal_type service_principal or managed_identity".into(),
            );
        };
        let by = req["requested_by"].as_str().unwrap_or("runbook");
        let mut entries = match ledger.list(Some(&key)).await {
            Ok(e) => e,
            Err(e) => return self.ledger_unavailable(f, e),
        };
        entries.retain(|e| e.in_force());
        entries.sort_by(|a, b| b.at.cmp(&a.at));
        let enforce = self.policy.mode == Mode::Enforce;
        let http = self.executor.http();
        let mut steps = Vec::new();
        if kind == "verify" {
            steps = quell_azure::release::verify(http, &entries, enforce).await;
        } else if enforce {
            match quell_ledger::release_each(
                ledger,
                &entries,
                by,
                self.clock.now(),
                |e| async move {
                    quell_azure::release::release(http, &e, quell_azure::release::Releaser::Human)
                        .await
                },
            )
            .await
            {
                Ok((done, _)) => steps = done,
                Err(e) => return self.ledger_unavailable(f, e),
            }
        }
        let result = json!({
            "runbook": kind, "principal": key, "reason": reason, "requested_by": by,
            "mode": self.policy.mode, "containments": entries.len(), "steps": steps,
        });
        let mut logs: Vec<String> = steps
            .iter()
            .map(|s| format!("{}: {:?} {}", s.what, s.outcome.status, s.outcome.detail))
            .collect();
        // A check that found the containment broken tells a human (the needs-a-human alert
        // rule reads quell.alert records).
        if kind == "verify"
            && let Some(a) =
                quell_ledger::check_alert(&key, &format!("{f:?}"), self.policy.mode, &steps)
        {
            logs.push(format!(
                "quell.alert {}",
                json!({"function": format!("{f:?}"), "subject": a.subject, "text": a.text, "needs": a.needs})
            ));
        }
        tracing::info!(runbook = kind, principal = %key, steps = steps.len(), by, "ledger runbook");
        host_response(f, 200, result, logs)
    }

    /// The hourly timer: releases the Entra principals whose every containment in force has
    /// passed its family's `release_after_hours` (`quell_ledger::expired`), newest first. Not an
    /// HTTP surface: only the policy the deployer set decides what expires. A failed step leaves
    /// that containment in force for the next run and fails the invocation (answers 500).
    async fn release_expired(&self) -> Value {
        use quell_ledger::Ledger;
        let f = Function::ReleaseExpired;
        let Some(ledger) = &self.ledger else {
            return host_response(
                f,
                200,
                json!({"status": "skipped", "reason": "no ledger (QUELL_LEDGER_TABLE)"}),
                vec![],
            );
        };
        if !self.policy.releases_automatically() {
            return host_response(
                f,
                200,
                json!({"status": "skipped", "reason": "no family sets release_after_hours"}),
                vec![],
            );
        }
        let now = self.clock.now();
        let entries = match ledger.list(None).await {
            Ok(e) => e,
            Err(e) => return self.ledger_unavailable(f, e),
        };
        let enforce = self.policy.mode == Mode::Enforce;
        let by = quell_ledger::EXPIRED_BY;
        let http = self.executor.http();
        let mut logs = Vec::new();
        let mut principals = Vec::new();
        for (principal, due) in quell_ledger::expired(&entries, now)
            .into_iter()
            .filter(|(p, _)| p.starts_with("azure:"))
        {
            let (steps, complete) = if enforce {
                match quell_ledger::release_each(ledger, &due, by, now, |e| async move {
                    quell_azure::release::release(
                        http,
                        &e,
                        quell_azure::release::Releaser::Automatic,
                    )
                    .await
                })
                .await
                {
                    Ok(done) => done,
                    Err(err) => return self.ledger_unavailable(f, err),
                }
            } else {
                (Vec::new(), false)
            };
            if enforce && !complete {
                let line = format!(
                    "{principal}: an expired containment was not released; the next run tries again"
                );
                tracing::error!("{line}");
                logs.push(line);
            }
            logs.push(format!(
                "{principal}: {} expired containment(s), {}",
                due.len(),
                if complete {
                    "released"
                } else if enforce {
                    "not all released"
                } else {
                    "would be released (dry-run)"
                }
            ));
            principals.push(json!({
                "principal": principal, "containments": due.len(),
                "released": complete, "steps": steps,
            }));
        }
        let mut result = json!({"runbook": "release_expired", "mode": self.policy.mode, "requested_by": by, "principals": principals});
        // A containment that should have been released but was not fails the invocation, so the
        // function-failures alert tells a human (the next hour tries again).
        if enforce && principals.iter().any(|p| p["released"] == false) {
            result["status"] = json!("retry");
        }
        host_response(f, 200, result, logs)
    }

    fn ledger_unavailable(&self, f: Function, e: quell_ledger::LedgerError) -> Value {
        let line = format!("the ledger is unavailable, retry: {e}");
        tracing::error!("{line}");
        host_response(
            f,
            503,
            json!({"status": "retry", "error": e.to_string()}),
            vec![line],
        )
    }

    /// Graph's own copy of a posted alert, normalized: what quell acts on.
    async fn verified(&self, f: &quell_core::Finding) -> Result<Vec<quell_core::Finding>, Verify> {
        let Some(FindingRef::DefenderAlert { id, .. }) = &f.record else {
            return Err(Verify::Rejected(
                "the alert has no id to verify against Graph".into(),
            ));
        };
        let copy = match self.executor.fetch_alert(id).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(Verify::Rejected(format!(
                    "alert {id} does not exist in Graph; quell acts only on alerts Graph confirms"
                )));
            }
            Err(e) if e.retryable => {
                return Err(Verify::Transient(format!(
                    "alert {id} could not be read from Graph ({e})"
                )));
            }
            Err(e) => {
                return Err(Verify::Rejected(format!(
                    "alert {id} could not be read from Graph ({e})"
                )));
            }
        };
        let mut batch = quell_core::normalize_value(&copy).map_err(|e| {
            Verify::Rejected(format!("Graph's copy of alert {id} is not usable: {e}"))
        })?;
        for g in &mut batch.findings {
            g.notes.push(
                "verified: planned from Graph's copy of the alert, not the posted body".into(),
            );
        }
        Ok(batch.findings)
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
        let mut logs = vec![format!("rejected: {error}")];
        logs.extend(outcome_logs(function, None, std::slice::from_ref(&error)));
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
        logs.extend(outcome_logs(function, None, std::slice::from_ref(&error)));
        host_response(
            function,
            400,
            json!({"status": "rejected", "error": error}),
            logs,
        )
    }
}

/// The body of the runbook request in a host invocation (`Data.<binding>.Body`, a string or the
/// JSON itself), if it parses within one event's limits.
fn runbook_request(value: &Value) -> Option<Value> {
    let data = value.get("Data")?.as_object()?;
    let body = data.values().find_map(|v| v.get("Body"))?;
    match body {
        Value::String(s) => json::parse_with(s.as_bytes(), json::Limits::EVENT).ok(),
        Value::Object(_) => Some(body.clone()),
        _ => None,
    }
}

/// The structured records Application Insights queries (`traces`, message prefix
/// `quell.outcome ` and `quell.alert `; infra/azure's alert rules and workbook read them): the
/// invocation's counts, and the alert text when a human is needed.
pub fn outcome_logs(
    function: Function,
    report: Option<&Report>,
    rejected: &[String],
) -> Vec<String> {
    let name = format!("{function:?}");
    let mut out = Vec::new();
    let needs = report.map(quell_core::alert::needs).unwrap_or_default();
    let summary = report.map(|r| r.summary.clone()).unwrap_or_default();
    out.push(format!(
        "quell.outcome {}",
        json!({
            "function": name,
            "mode": report.map(|r| r.mode),
            "findings": report.map_or(0, |r| r.findings.len()),
            "applied": summary.applied,
            "already_in_state": summary.already_in_state,
            "dry_run": summary.dry_run,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "withheld": needs.withheld,
            "notify": needs.notify,
            "rejected": rejected.len(),
        })
    ));
    let alert = match report {
        Some(r) => quell_core::alert::for_report(r, &name),
        None => None,
    }
    .or_else(|| {
        (report.is_none() && !rejected.is_empty())
            .then(|| quell_core::alert::for_rejected(&name, &rejected.join("; ")))
    });
    if let Some(a) = alert {
        out.push(format!(
            "quell.alert {}",
            json!({"function": name, "subject": a.subject, "text": a.text, "needs": a.needs})
        ));
    }
    out
}
