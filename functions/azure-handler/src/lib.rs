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
//! - An alert posted to `GraphAlert`, and every Event Hub record, is re-read from Graph by id
//!   before anything is contained: anyone with the function key can post a body and anyone with
//!   `Send` on a hub can write a record; only Graph's copy is acted on.
//! - Each invocation runs in its own task: a panic answers 500 for that invocation only. That
//!   needs unwinding, so the handler builds with `--profile handler` and refuses to compile
//!   with `panic = "abort"` (the release profile of the Lambda functions).

#[cfg(panic = "abort")]
compile_error!(
    "the Azure handler confines a panic to its invocation and needs unwinding: build it with \
     `cargo build --profile handler -p azure-handler` (the release profile aborts on panic)"
);

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
use quell_pipeline::{Answer, Done, LedgerRequest, LedgerRunbook, Pipeline};
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
    /// The function's name, as the host calls it.
    pub fn name(self) -> &'static str {
        match self {
            Function::DefenderEvents => "DefenderEvents",
            Function::EntraRiskEvents => "EntraRiskEvents",
            Function::GraphAlert => "GraphAlert",
            Function::Runbook => "Runbook",
            Function::PostureSweep => "PostureSweep",
            Function::Verify => "Verify",
            Function::ReleaseExpired => "ReleaseExpired",
        }
    }
    /// Whether this function's input is planned only from Graph's copy: anyone with the
    /// function key posts an alert, anyone with `Send` on the hub writes a record.
    fn rereads(self) -> bool {
        matches!(
            self,
            Function::GraphAlert | Function::DefenderEvents | Function::EntraRiskEvents
        )
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
    /// AWS, reached keyless through the member roles (feature `aws`, `QUELL_AWS_AUDIENCE`): the
    /// AWS side of a compromised Entra identity (her federated role sessions).
    pub aws: Option<AwsSide>,
    /// The cross-cloud link map, read from the ledger at start and again when older than
    /// [`quell_ledger::links::REFRESH`].
    pub links: quell_ledger::links::LinkCache,
}

/// The AWS executor, when the handler is built with the `aws` feature.
#[cfg(feature = "aws")]
pub type AwsSide = quell_aws::AwsExecutor<quell_aws::Accounts>;

/// Without the `aws` feature there is no AWS executor: a cross-cloud action fails with what
/// to do (the binary stays small).
#[cfg(not(feature = "aws"))]
pub enum AwsSide {}

#[cfg(not(feature = "aws"))]
impl quell_pipeline::Executor for AwsSide {
    fn execute<'a>(&'a self, _: &'a quell_core::Plan) -> quell_pipeline::BoxFuture<'a, Report> {
        match *self {}
    }
}

#[cfg(not(feature = "aws"))]
impl quell_pipeline::Undo for AwsSide {
    fn cloud(&self) -> quell_core::Cloud {
        match *self {}
    }
    fn release<'a>(
        &'a self,
        _: &'a quell_ledger::Entry,
        _: quell_pipeline::Releaser,
    ) -> quell_pipeline::BoxFuture<'a, Vec<quell_ledger::Step>> {
        match *self {}
    }
    fn verify<'a>(
        &'a self,
        _: &'a [quell_ledger::Entry],
        _: bool,
    ) -> quell_pipeline::BoxFuture<'a, Vec<quell_ledger::Step>> {
        match *self {}
    }
    fn may_release_automatically<'a>(
        &'a self,
        _: &'a [quell_ledger::Entry],
    ) -> quell_pipeline::BoxFuture<'a, Result<(), String>> {
        match *self {}
    }
}

/// The managed identity's token for AWS: the scope `<audience>/.default` of the application
/// whose identifier the member roles' trust names as `aud`.
#[cfg(feature = "aws")]
pub struct ManagedIdentityToken {
    tokens: Arc<dyn quell_azure::token::TokenSource>,
    scope: String,
}

#[cfg(feature = "aws")]
impl ManagedIdentityToken {
    pub fn new(tokens: Arc<dyn quell_azure::token::TokenSource>, audience: &str) -> Self {
        ManagedIdentityToken {
            tokens,
            scope: format!("{}/.default", audience.trim_end_matches('/')),
        }
    }
}

#[cfg(feature = "aws")]
impl quell_aws::keyless::WebToken for ManagedIdentityToken {
    fn token(&self) -> quell_aws::keyless::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move { self.tokens.token(&self.scope).await.map_err(|e| e.message) })
    }
}

/// The handler's executor: Azure, and AWS too when it can reach it, each action on its cloud.
impl quell_pipeline::Executor for App {
    fn execute<'a>(&'a self, plan: &'a quell_core::Plan) -> quell_pipeline::BoxFuture<'a, Report> {
        Box::pin(async move { self.clouds().execute(plan).await })
    }
    fn resolve<'a>(
        &'a self,
        plan: quell_core::Plan,
    ) -> quell_pipeline::BoxFuture<'a, quell_core::Plan> {
        Box::pin(async move { self.clouds().resolve(plan).await })
    }
    fn prefetch<'a>(&'a self, plan: &'a quell_core::Plan) -> quell_pipeline::BoxFuture<'a, ()> {
        Box::pin(async move { self.clouds().prefetch(plan).await })
    }
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

/// The host's response for a pipeline answer: 200 with the report, 400 for a rejection (HTTP
/// functions; Event Hub functions answer 200 so a poison batch is not redelivered forever), and
/// `status: retry` (503 through `res`; 500 for the trigger functions, so the host retries).
fn answer_response(function: Function, answer: &Answer, mut logs: Vec<String>) -> Value {
    let result = answer.to_json();
    let status = match answer {
        Answer::Done(_) => 200,
        Answer::Rejected(e) => {
            tracing::warn!(function = ?function, "rejected: {e}");
            logs.insert(0, format!("rejected: {e}"));
            logs.extend(outcome_logs(function, None, std::slice::from_ref(e)));
            return host_response(function, 400, result, logs);
        }
        Answer::Retry { reason, .. } => {
            let line = format!(
                "transient failure, the invocation fails so it is retried (every action is idempotent): {reason}"
            );
            tracing::error!("{line}");
            logs.push(line);
            503
        }
    };
    for a in answer.alerts(&format!("{function:?}")) {
        logs.push(format!(
            "quell.alert {}",
            a.record(&format!("{function:?}"))
        ));
    }
    host_response(function, status, result, logs)
}

/// The log lines of a release or verify: one per step.
fn step_logs(done: Option<&Done>) -> Vec<String> {
    let steps = match done {
        Some(Done::Ledger(l)) => l.steps.iter().collect::<Vec<_>>(),
        Some(Done::Expired(e)) => e.principals.iter().flat_map(|p| &p.steps).collect(),
        _ => Vec::new(),
    };
    let mut logs: Vec<String> = steps
        .iter()
        .map(|s| format!("{}: {:?} {}", s.what, s.outcome.status, s.outcome.detail))
        .collect();
    if let Some(Done::Expired(e)) = done {
        for p in &e.principals {
            logs.push(format!(
                "{}: {} expired containment(s), {}",
                p.principal,
                p.containments,
                if p.released {
                    "released"
                } else if e.mode == Mode::Enforce {
                    "not all released; the next run tries again"
                } else {
                    "would be released (dry-run)"
                }
            ));
        }
    }
    logs
}

impl App {
    fn clouds(&self) -> quell_pipeline::Clouds<&AwsSide, &AzureExecutor> {
        quell_pipeline::Clouds {
            aws: self.aws.as_ref(),
            azure: Some(&self.executor),
        }
    }

    /// Reads the link map from the ledger now (at start).
    pub async fn refresh_links(&self) {
        if let Some(ledger) = &self.ledger {
            self.links.refresh(ledger).await;
        }
    }

    /// The planning context: the deployment's, with the link map (said stale past a day).
    async fn plan_context(&self) -> Context {
        self.links
            .context(
                &self.ctx,
                self.ledger.as_ref(),
                self.clock.now().unix_timestamp(),
            )
            .await
    }

    /// The one containment pipeline, over this handler's ledger, executor and queue.
    fn pipeline(&self, function: Function) -> Pipeline<'_, TableLedger> {
        Pipeline {
            function: function.name(),
            policy: &self.policy,
            clock: self.clock.as_ref(),
            ledger: self.ledger.as_ref(),
            executor: Some(self),
            undo: match &self.aws {
                Some(a) => vec![&self.executor, a],
                None => vec![&self.executor],
            },
            checks: self
                .verify_queue
                .as_ref()
                .map(|q| q as &dyn quell_pipeline::CheckQueue),
            // The report goes to the host's log (and so Application Insights) as the answer.
            audit: None,
        }
    }

    /// Handles one invocation body; always answers (never panics on input).
    pub async fn handle(&self, function: Function, body: &[u8]) -> Value {
        let value = match json::parse_with(body, json::Limits::ENVELOPE) {
            Ok(v) => v,
            Err(e) => return self.rejected(function, format!("the host body is not usable: {e}")),
        };
        match function {
            Function::PostureSweep => return self.sweep().await,
            Function::Verify => {
                let answer = match queue_message(&value) {
                    Ok(msg) => self.pipeline(function).scheduled_check(&msg).await,
                    Err(e) => Answer::Rejected(e),
                };
                return answer_response(function, &answer, step_logs(answer.done()));
            }
            Function::ReleaseExpired => {
                let answer = self.pipeline(function).release_expired().await;
                return answer_response(function, &answer, step_logs(answer.done()));
            }
            Function::Runbook => {
                if let Some(req) = runbook_request(&value)
                    && LedgerRequest::runbook_of(&req).is_some()
                {
                    let answer = self.ledger_runbook(&req).await;
                    return answer_response(function, &answer, step_logs(answer.done()));
                }
            }
            Function::DefenderEvents | Function::EntraRiskEvents | Function::GraphAlert => {}
        }
        let mut logs = Vec::new();
        let mut rejected = Vec::new();
        let mut reports = Vec::new();
        let mut ignored = Vec::new();
        let mut retry = Vec::new();
        let ctx = self.plan_context().await;
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
            for mut f in b.findings {
                // An Event Hub record names its tenant, and anyone who can send to the hub
                // writes it: a record for another tenant is refused, and every record counts in
                // quell's own tenant's breaker (a fresh tenant id per record cannot dodge it).
                if matches!(
                    function,
                    Function::DefenderEvents | Function::EntraRiskEvents
                ) && let Some(own) = self.executor.http().tenant()
                {
                    if let Some(other) =
                        f.tenant.as_deref().filter(|t| !t.eq_ignore_ascii_case(own))
                    {
                        rejected.push(format!(
                            "{pointer}: the record is for tenant {other}, not quell's tenant {own}; nothing done"
                        ));
                        continue;
                    }
                    in_tenant(&mut f, own);
                }
                if !function.accepts(f.source) {
                    rejected.push(format!(
                        "{pointer}: {:?} findings do not belong to function {function:?}",
                        f.source
                    ));
                    continue;
                }
                if function.rereads() && self.policy.mode == Mode::Enforce {
                    match self.verified(&f).await {
                        Ok(copy) => batch.findings.extend(copy),
                        Err(Verify::Rejected(e)) => rejected.push(format!("{pointer}: {e}")),
                        Err(Verify::Transient(e)) => retry.push(format!("{pointer}: {e}")),
                    }
                } else {
                    batch.findings.push(f);
                }
            }
            if batch.findings.is_empty() && batch.ignored.is_empty() {
                continue;
            }
            // One plan per message: the blast-radius cap counts this message's actions only.
            // The delivery is the message's content: the host's retry redelivers the same.
            let delivery = format!(
                "message:{}",
                json::fingerprint(
                    serde_json::to_string(&batch.findings)
                        .unwrap_or_default()
                        .as_bytes()
                )
            );
            let mut plan = plan(batch, &self.policy, &ctx);
            plan.delivery = Some(delivery);
            ignored.extend(plan.ignored.clone());
            let answer = self.pipeline(function).contain(plan).await;
            if let Answer::Retry { reason, .. } = &answer {
                retry.push(format!("{pointer}: {reason}"));
            }
            match answer {
                Answer::Done(Done::Contained(r))
                | Answer::Retry {
                    done: Some(Done::Contained(r)),
                    ..
                } => reports.push(r),
                Answer::Rejected(e) => rejected.push(format!("{pointer}: {e}")),
                _ => {}
            }
        }
        for r in &rejected {
            logs.push(format!("rejected: {r}"));
            tracing::warn!(function = ?function, "rejected: {r}");
        }
        for u in &retry {
            logs.push(format!("will retry: {u}"));
            tracing::warn!(function = ?function, "will retry: {u}");
        }
        if reports.is_empty() && retry.is_empty() {
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
        if !retry.is_empty() {
            let line = format!(
                "transient failure, the invocation fails so it is retried (every action is idempotent): {}",
                retry.join("; ")
            );
            tracing::error!("{line}");
            logs.push(line);
            result["status"] = json!("retry");
            return host_response(function, 503, result, logs);
        }
        host_response(function, 200, result, logs)
    }

    /// `{"runbook": "release" | "verify", …}` over HTTP. A release only with `http_release`: a
    /// function key is a shared secret, and the HTTP surface stays contain-only by default.
    async fn ledger_runbook(&self, req: &Value) -> Answer {
        let req = match LedgerRequest::parse(req) {
            Ok(r) => r,
            Err(e) => return Answer::Rejected(e),
        };
        if req.runbook == LedgerRunbook::Release && !self.http_release {
            return Answer::Rejected(
                "release over HTTP is off: anyone with the function key could undo a containment. Run `quell release` under your own identity, or set QUELL_HTTP_RELEASE=enabled".into(),
            );
        }
        self.pipeline(Function::Runbook).ledger_request(&req).await
    }

    /// Graph's own copy of what a posted alert or an Event Hub record reports, normalized: what
    /// quell acts on. Whoever can post to the function or send to the hub writes the input;
    /// only Microsoft writes Graph's copy.
    async fn verified(&self, f: &quell_core::Finding) -> Result<Vec<quell_core::Finding>, Verify> {
        let what = match (&f.record, f.source) {
            (Some(FindingRef::DefenderAlert { id, .. }), _) => format!("alert {id}"),
            (_, Source::EntraRiskDetection | Source::EntraServicePrincipalRiskDetection) => {
                format!("risk detection {}", f.id)
            }
            (_, Source::EntraRiskyUser) => format!("risky user {}", f.id),
            (_, Source::EntraRiskyServicePrincipal) => format!("risky service principal {}", f.id),
            _ => {
                return Err(Verify::Rejected(format!(
                    "{:?} finding {} has nothing to verify against Graph",
                    f.source, f.id
                )));
            }
        };
        let copy = match self.executor.fetch_copy(f).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(Verify::Rejected(format!(
                    "{what} does not exist in Graph; quell acts only on what Graph confirms"
                )));
            }
            Err(e) if e.retryable => {
                return Err(Verify::Transient(format!(
                    "{what} could not be read from Graph ({e})"
                )));
            }
            Err(e) => {
                return Err(Verify::Rejected(format!(
                    "{what} could not be read from Graph ({e})"
                )));
            }
        };
        let mut batch = quell_core::normalize_value(&copy)
            .map_err(|e| Verify::Rejected(format!("Graph's copy of {what} is not usable: {e}")))?;
        batch.findings.retain(|g| g.id == f.id);
        if batch.findings.is_empty() {
            return Err(Verify::Rejected(format!(
                "Graph's copy of {what} is not the same finding; nothing done"
            )));
        }
        for g in &mut batch.findings {
            if let Some(own) = self.executor.http().tenant() {
                in_tenant(g, own);
            }
            g.notes.push(format!(
                "verified: planned from Graph's copy of the {what}, not the message's body"
            ));
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
        // The tenant's cross-cloud links are refreshed beside the sweep (read-only calls).
        let tenant = self
            .executor
            .http()
            .tenant()
            .unwrap_or("default")
            .to_string();
        let stamp = quell_core::clock::rfc3339_seconds(opts.now);
        let (swept, links) = tokio::join!(
            quell_azure::sweep::sweep_tenant(self.executor.http(), &opts),
            quell_azure::links::discover(
                self.executor.http(),
                &tenant,
                self.policy.aws.identity_center.account.as_deref(),
                &stamp
            )
        );
        let mut link_logs = vec![format!(
            "cross-cloud links: {} found{}",
            links.links.len(),
            if links.gaps.is_empty() {
                String::new()
            } else {
                format!("; gaps: {}", links.gaps.join("; "))
            }
        )];
        if let Some(ledger) = &self.ledger
            && let Err(e) =
                quell_ledger::links::store(ledger, &format!("azure-{tenant}"), &links).await
        {
            link_logs.push(format!("the link map could not be stored: {e}"));
        }
        match swept {
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
                logs.append(&mut link_logs);
                if let Some(ledger) = &self.ledger {
                    let tenant = self.executor.http().tenant().unwrap_or("default");
                    match quell_ledger::record_sweep(
                        ledger,
                        &report.ledger_id(),
                        report.changes(tenant),
                        opts.now,
                    )
                    .await
                    {
                        Ok(n) if n > 0 => logs.push(format!(
                            "recorded in the ledger as {} ({n} principals): `quell release --finding {}` undoes it",
                            report.ledger_id(),
                            report.ledger_id()
                        )),
                        Ok(_) => {}
                        Err(e) => {
                            let line = format!("the sweep's changes are not in the ledger: {e}");
                            tracing::error!("{line}");
                            logs.push(line);
                        }
                    }
                }
                if let Some(why) = &report.withheld {
                    tracing::error!("{why}");
                    let a =
                        quell_core::alert::for_sweep_withheld("PostureSweep", "the tenant", why);
                    logs.push(format!("quell.alert {}", a.record("PostureSweep")));
                }
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

/// Puts a finding, and every subject it names, in quell's own tenant.
fn in_tenant(f: &mut quell_core::Finding, own: &str) {
    use quell_core::model::Subject;
    f.tenant = Some(own.to_string());
    for s in &mut f.subjects {
        match s {
            Subject::EntraUser { tenant, .. }
            | Subject::ServicePrincipal { tenant, .. }
            | Subject::ManagedIdentity { tenant, .. } => *tenant = Some(own.to_string()),
            _ => {}
        }
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

/// The verify queue's message in a `Verify` invocation (`Data.msg`): the host hands over the
/// message text, or the JSON it holds; either is accepted, and a string that is itself
/// JSON-encoded once more.
fn queue_message(value: &Value) -> Result<Value, String> {
    let mut msg = value["Data"]["msg"].clone();
    for _ in 0..2 {
        if let Value::String(text) = &msg {
            msg = json::parse(text.as_bytes()).map_err(|e| format!("/Data/msg: {e}"))?;
        }
    }
    if !msg.is_object() {
        return Err("/Data/msg: expected the queue message".into());
    }
    Ok(msg)
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
        out.push(format!("quell.alert {}", a.record(&name)));
    }
    out
}
