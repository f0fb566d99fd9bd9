//! The Lambda edge every quell AWS function shares. It holds no decision logic: decode →
//! `Finding` → plan → execute or dry-run → audit → report.
//!
//! Error mapping: bad or foreign events are answered with `{"status":"rejected"}` (success,
//! so Lambda does not retry a poison event); retryable failures (throttling, 5xx, network) fail
//! the invocation so Lambda's retry policy runs it again (every action is idempotent).

pub mod metrics;
pub mod sweep;

use std::sync::Arc;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use quell_aws::ledger::DynamoLedger;
use quell_aws::{Accounts, AwsExecutor, ClientSource, SystemClock};
use quell_core::clock::Clock;
use quell_core::{ActionKind, Context, Policy, plan_input};
use serde_json::{Value, json};
use thiserror::Error;

/// Which events a function accepts. A function refuses others, so a misrouted or spoofed
/// event cannot reach an executor through the wrong door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    Guardduty,
    Securityhub,
    AccessAnalyzer,
    /// The runbook function: runbook requests and any supported event, invoked directly.
    Any,
}

impl Accepts {
    /// The function's name in metrics and alerts.
    pub fn name(self) -> &'static str {
        match self {
            Accepts::Guardduty => "guardduty",
            Accepts::Securityhub => "securityhub",
            Accepts::AccessAnalyzer => "access-analyzer",
            Accepts::Any => "runbook",
        }
    }

    pub const ALL: [Accepts; 4] = [
        Accepts::Guardduty,
        Accepts::Securityhub,
        Accepts::AccessAnalyzer,
        Accepts::Any,
    ];

    /// The AWS action kinds a plan from this function's events can hold, under any policy.
    /// The function's IAM role in `samplesam.yaml` holds exactly their permissions
    /// (`quell_aws::permissions`); tests/sam.rs checks both directions.
    pub fn action_kinds(self) -> &'static [ActionKind] {
        use ActionKind::*;
        const THREAT: &[ActionKind] = &[
            QuarantineUser,
            QuarantineRole,
            DeactivateAccessKey,
            DeactivateLongTermKeys,
            DeleteLoginProfile,
            RevokeRoleSession,
            RevokeRoleSessions,
            RevokeUserSessions,
            TagPrincipal,
            Notify,
        ];
        match self {
            Accepts::Guardduty => THREAT,
            // Security Hub carries every family; the runbook function accepts any event.
            Accepts::Securityhub | Accepts::Any => &[
                QuarantineUser,
                QuarantineRole,
                DeactivateAccessKey,
                DeactivateDormantAccessKeys,
                DeactivateLongTermKeys,
                DeleteLoginProfile,
                RevokeRoleSession,
                RevokeRoleSessions,
                RevokeUserSessions,
                TagPrincipal,
                Notify,
                UpdateSecurityhubFinding,
            ],
            Accepts::AccessAnalyzer => &[
                DeactivateDormantAccessKeys,
                DeleteLoginProfile,
                QuarantineRole,
                TagPrincipal,
                Notify,
            ],
        }
    }

    /// The function's logical id in `samplesam.yaml`.
    pub fn logical_id(self) -> &'static str {
        match self {
            Accepts::Guardduty => "GuardDutyFunction",
            Accepts::Securityhub => "SecurityHubFunction",
            Accepts::AccessAnalyzer => "AccessAnalyzerFunction",
            Accepts::Any => "RunbookFunction",
        }
    }

    fn source(self) -> Option<&'static str> {
        match self {
            Accepts::Guardduty => Some("aws.guardduty"),
            Accepts::Securityhub => Some("aws.securityhub"),
            Accepts::AccessAnalyzer => Some("aws.access-analyzer"),
            Accepts::Any => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum EdgeError {
    #[error("configuration: {0}; fix the function's environment")]
    Config(String),
    #[error("AWS: {0}")]
    Aws(String),
    #[error(
        "{failed} action(s) failed with a retryable error ({codes}); the invocation fails so Lambda retries it"
    )]
    Retryable { failed: usize, codes: String },
}

impl From<EdgeError> for lambda_runtime::Diagnostic {
    fn from(e: EdgeError) -> lambda_runtime::Diagnostic {
        let error_type = match e {
            EdgeError::Config(_) => "quell.Config",
            EdgeError::Aws(_) => "quell.Aws",
            EdgeError::Retryable { .. } => "quell.Retryable",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// The detail-type of the alerts the SAM template's rule forwards to the alerts topic.
pub const ALERT_DETAIL_TYPE: &str = "Identity Containment Alert";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Everything built once at init and reused across invocations.
pub struct Edge<S> {
    accepts: Accepts,
    policy: Policy,
    ctx: Context,
    executor: AwsExecutor<S>,
    audit: Option<(aws_sdk_eventbridge::Client, String)>,
    /// The containment ledger (`QUELL_LEDGER_TABLE`), and the clock its decisions use.
    ledger: Option<(DynamoLedger, Arc<dyn Clock>)>,
    /// Where checks after containment are scheduled (`QUELL_VERIFY_QUEUE`).
    verify_queue: Option<(aws_sdk_sqs::Client, String)>,
}

/// Reads the policy: a bundled file (`QUELL_POLICY_FILE`) or the built-in default, then the
/// environment overrides (`QUELL_MODE`, `QUELL_PROTECTED`, …).
pub fn load_policy(get: impl Fn(&str) -> Option<String>) -> Result<Policy, EdgeError> {
    Policy::load(get, |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })
    .map_err(|e| EdgeError::Config(e.to_string()))
}

/// The audit bus (`QUELL_AUDIT_BUS`) and a client for it, when configured.
fn audit_bus(config: &aws_config::SdkConfig) -> Option<(aws_sdk_eventbridge::Client, String)> {
    std::env::var("QUELL_AUDIT_BUS")
        .ok()
        .filter(|b| !b.is_empty())
        .map(|bus| (aws_sdk_eventbridge::Client::new(config), bus))
}

/// Builds the production edge: SDK clients once, the caller identity protected.
pub async fn init(accepts: Accepts) -> Result<Edge<Accounts>, EdgeError> {
    let env = |k: &str| std::env::var(k).ok();
    let policy = load_policy(env)?;
    let config = quell_aws::load_config(None).await;
    let audit = audit_bus(&config);
    let ledger = std::env::var("QUELL_LEDGER_TABLE")
        .ok()
        .filter(|t| !t.is_empty())
        .map(|t| DynamoLedger::new(&config, &t));
    let sqs = aws_sdk_sqs::Client::new(&config);
    let me = quell_aws::session(config, &policy.aws.member_role_name)
        .await
        .map_err(|e| EdgeError::Aws(e.to_string()))?;
    tracing::info!(caller = %me.arn, mode = ?policy.mode, audit = audit.is_some(), ledger = ledger.is_some(), "quell initialised");
    let edge = Edge::new(accepts, policy, me.ctx, me.accounts, audit);
    let edge = match std::env::var("QUELL_VERIFY_QUEUE")
        .ok()
        .filter(|q| !q.is_empty())
    {
        Some(q) => edge.with_verify_queue(sqs, &q),
        None => edge,
    };
    Ok(match ledger {
        Some(l) => edge.with_ledger(l, Arc::new(SystemClock)),
        None => edge,
    })
}

impl<S: ClientSource> Edge<S> {
    pub fn new(
        accepts: Accepts,
        policy: Policy,
        ctx: Context,
        source: S,
        audit: Option<(aws_sdk_eventbridge::Client, String)>,
    ) -> Edge<S> {
        let executor = AwsExecutor::new(source, policy.clone(), ctx.clone(), Arc::new(SystemClock));
        Edge {
            accepts,
            policy,
            ctx,
            executor,
            audit,
            ledger: None,
            verify_queue: None,
        }
    }

    /// Claims containments in `ledger` before acting and records them after.
    pub fn with_ledger(mut self, ledger: DynamoLedger, clock: Arc<dyn Clock>) -> Edge<S> {
        self.ledger = Some((ledger, clock));
        self
    }

    /// Schedules a check of each containment on `queue_url`, `verify.after_seconds` later.
    pub fn with_verify_queue(mut self, client: aws_sdk_sqs::Client, queue_url: &str) -> Edge<S> {
        self.verify_queue = Some((client, queue_url.to_string()));
        self
    }

    /// Replaces the executor, e.g. with one on a fixed clock (tests).
    pub fn with_executor(mut self, executor: AwsExecutor<S>) -> Edge<S> {
        self.executor = executor;
        self
    }

    fn rejected(&self, error: String) -> Value {
        tracing::warn!(%error, "event rejected; no action taken");
        json!({"status": "rejected", "error": error})
    }

    /// Handles one invocation payload, then logs its metrics (EMF) and, for an event it
    /// rejected, publishes an alert.
    pub async fn handle(&self, payload: Value) -> Result<Value, EdgeError> {
        let started = std::time::Instant::now();
        let out = self.handle_event(payload).await;
        let error = out.as_ref().err().map(|e| e.to_string());
        let docs = metrics::documents(
            self.accepts.name(),
            match (&out, &error) {
                (Ok(v), _) => Ok(v),
                (_, Some(e)) => Err(e.as_str()),
                _ => Err("error"),
            },
            started.elapsed().as_secs_f64() * 1000.0,
            now_ms(),
        );
        metrics::emit(&docs);
        if let Ok(v) = &out
            && v["status"] == "rejected"
        {
            let alert = quell_core::alert::for_rejected(
                self.accepts.name(),
                v["error"].as_str().unwrap_or("rejected"),
            );
            self.publish_alert(&alert).await;
        }
        out
    }

    /// Publishes an alert on the quell bus (`Identity Containment Alert`), where the SAM
    /// template's rule forwards its text to the alerts topic. A failure is logged: the
    /// report itself is already in the logs.
    async fn publish_alert(&self, alert: &quell_core::alert::Alert) {
        let Some((client, bus)) = &self.audit else {
            return;
        };
        let detail = json!({
            "function": self.accepts.name(),
            "needs_human": true,
            "subject": alert.subject,
            "text": alert.text,
            "needs": alert.needs,
        });
        if let Err(e) =
            quell_aws::audit::publish_detail(client, bus, ALERT_DETAIL_TYPE, &detail, vec![]).await
        {
            tracing::error!(error = %e, bus, "alert not published; the report is in this log");
        }
    }

    async fn handle_event(&self, payload: Value) -> Result<Value, EdgeError> {
        if let Some(expected) = self.accepts.source() {
            match serde_json::from_value::<EventBridgeEvent<Value>>(payload.clone()) {
                Ok(ev) if ev.source == expected => {}
                Ok(ev) => {
                    return Ok(self.rejected(format!(
                        "this function handles {expected} events, not {:?}",
                        ev.source
                    )));
                }
                Err(e) => {
                    return Ok(
                        self.rejected(format!("not an EventBridge event from {expected}: {e}"))
                    );
                }
            }
        }
        if self.accepts == Accepts::Any && is_sqs(&payload) {
            return self.scheduled_checks(&payload).await;
        }
        if self.accepts == Accepts::Any && payload["runbook"] == "release_expired" {
            return self.release_expired().await;
        }
        if self.accepts == Accepts::Any
            && let Some(kind @ ("release" | "verify")) = payload["runbook"].as_str()
        {
            return self.ledger_runbook(kind, &payload).await;
        }
        let bytes = serde_json::to_vec(&payload).map_err(|e| EdgeError::Config(e.to_string()))?;
        let plan = match plan_input(&bytes, &self.policy, &self.ctx) {
            Ok(p) => p,
            Err(e) => return Ok(self.rejected(e.to_string())),
        };
        let mut scheduled = true;
        let report = match &self.ledger {
            Some((ledger, clock)) => {
                // No containment without the ledger when one is configured: a ledger error
                // fails the invocation, and Lambda retries it.
                let now = clock.now();
                let ledger_err = |e: quell_ledger::LedgerError| EdgeError::Retryable {
                    failed: 1,
                    codes: format!("{} ({})", e.code, e.message),
                };
                let gated = quell_ledger::gate(ledger, plan, &self.policy, now)
                    .await
                    .map_err(ledger_err)?;
                let report = self.executor.execute(&gated.plan).await;
                quell_ledger::record(ledger, &gated.claims, &report, now)
                    .await
                    .map_err(ledger_err)?;
                scheduled = self
                    .schedule_verify(&quell_ledger::to_verify(&gated.claims, &report))
                    .await;
                report
            }
            None => self.executor.execute(&plan).await,
        };
        for line in report.lines() {
            tracing::info!(target: "quell::action", "{line}");
        }
        if let Some((client, bus)) = &self.audit
            && (!report.results.is_empty() || !report.skipped.is_empty())
            && let Err(e) = quell_aws::audit::publish(client, bus, &report).await
        {
            // The actions are done; a retry would only report already_in_state.
            tracing::error!(error = %e, bus, "audit event not published; the report is in this log");
        }
        if let Some(alert) = quell_core::alert::for_report(&report, self.accepts.name()) {
            self.publish_alert(&alert).await;
        }
        if report.should_retry() {
            let failed: Vec<&str> = report
                .results
                .iter()
                .filter(|r| r.outcome.retryable)
                .filter_map(|r| r.outcome.error_code.as_deref())
                .collect();
            return Err(EdgeError::Retryable {
                failed: failed.len(),
                codes: failed.join(", "),
            });
        }
        if !scheduled {
            // The containment holds; the retry (idempotent) schedules the check again, and past
            // the retries the dead-letter alarm tells a human.
            return Err(EdgeError::Retryable {
                failed: 1,
                codes: "the check after containment was not scheduled on the verify queue".into(),
            });
        }
        serde_json::to_value(&report).map_err(|e| EdgeError::Config(e.to_string()))
    }
}

/// An SQS event (the verify queue's event source mapping).
fn is_sqs(payload: &Value) -> bool {
    payload["Records"]
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["eventSource"] == "aws:sqs"))
}

impl<S: ClientSource> Edge<S> {
    /// Schedules the check after containment of each principal; false when it could not be
    /// (logged; the invocation then fails so it is retried).
    async fn schedule_verify(&self, principals: &[String]) -> bool {
        let after = self.policy.verify.after_seconds;
        let (Some((client, url)), false, true) =
            (&self.verify_queue, principals.is_empty(), after > 0)
        else {
            return true;
        };
        match quell_aws::verify_queue::schedule(client, url, principals, after).await {
            Ok(()) => {
                tracing::info!(?principals, after, "check after containment scheduled");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, ?principals, "check after containment not scheduled");
                false
            }
        }
    }

    /// The verify queue's messages: each must be a `verify` runbook request (a check can only
    /// contain more, never release). A failed check fails the invocation, so SQS redelivers
    /// it and, past the redrive limit, dead-letters it.
    async fn scheduled_checks(&self, payload: &Value) -> Result<Value, EdgeError> {
        let mut done = Vec::new();
        for r in payload["Records"].as_array().into_iter().flatten() {
            let body = r["body"].as_str().unwrap_or("");
            let req = match quell_core::json::parse(body.as_bytes()) {
                Ok(v) if v["runbook"] == "verify" => v,
                Ok(_) => {
                    return Ok(self.rejected(
                        "a verify queue message must be a verify runbook request".into(),
                    ));
                }
                Err(e) => return Ok(self.rejected(format!("verify queue message: {e}"))),
            };
            let report = self.ledger_runbook("verify", &req).await?;
            let failed = report["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["outcome"]["status"] == "failed")
                .count();
            if failed > 0 {
                return Err(EdgeError::Retryable {
                    failed,
                    codes: "verify".into(),
                });
            }
            done.push(report);
        }
        Ok(json!({"status": "verified", "checks": done}))
    }

    /// Publishes a release or verify report as the audit event; a failure is logged (the report
    /// is in the log too).
    async fn publish_release(&self, report: &Value) {
        if let Some((client, bus)) = &self.audit
            && let Err(e) = quell_aws::audit::publish_detail(
                client,
                bus,
                "Identity Containment Release",
                report,
                vec![],
            )
            .await
        {
            tracing::error!(error = %e, "audit event not published; the report is in this log");
        }
    }

    /// `{"runbook": "release_expired"}` (the runbook function's hourly schedule): releases the
    /// AWS principals whose every containment in force has passed its family's
    /// `release_after_hours` (`quell_ledger::expired`), newest first, keys left inactive. A
    /// failed step leaves that containment in force for the next run and fails the invocation
    /// (after the others ran), so Lambda retries it and, past its retries, the dead-letter
    /// queue's alarm tells a human.
    async fn release_expired(&self) -> Result<Value, EdgeError> {
        let Some((ledger, clock)) = &self.ledger else {
            return Ok(
                self.rejected("release_expired needs the ledger: set QUELL_LEDGER_TABLE".into())
            );
        };
        let ledger_err = |e: quell_ledger::LedgerError| EdgeError::Retryable {
            failed: 1,
            codes: format!("{} ({})", e.code, e.message),
        };
        if !self.policy.releases_automatically() {
            return Ok(json!({"runbook": "release_expired", "status": "skipped",
                "reason": "no family sets release_after_hours"}));
        }
        let now = clock.now();
        let entries = quell_ledger::Ledger::list(ledger, None)
            .await
            .map_err(ledger_err)?;
        let enforce = self.policy.mode == quell_core::Mode::Enforce;
        let by = quell_ledger::EXPIRED_BY;
        let source = self.executor.source();
        let mut released = Vec::new();
        for (principal, due) in quell_ledger::expired(&entries, now)
            .into_iter()
            .filter(|(p, _)| p.starts_with("aws:"))
        {
            let (steps, complete) = if !enforce {
                (Vec::new(), false)
            } else if let Err(why) = quell_aws::release::tagged_by_quell(source, &due).await {
                // Only what quell itself contained is lifted without a human.
                let step = quell_ledger::Step {
                    what: format!("release {principal}"),
                    outcome: quell_core::report::Outcome::skipped(format!(
                        "not released automatically: {why}; check it, then quell release by hand"
                    )),
                };
                (vec![step], false)
            } else {
                quell_ledger::release_each(ledger, &due, by, now, |e| async move {
                    quell_aws::release::release(source, &e, false).await
                })
                .await
                .map_err(ledger_err)?
            };
            if enforce && !complete {
                tracing::error!(%principal, "expired containment not released; the next run tries again");
            }
            released.push(json!({
                "principal": principal, "containments": due.len(),
                "released": complete, "steps": steps,
            }));
        }
        let report = json!({
            "runbook": "release_expired", "mode": self.policy.mode,
            "requested_by": by, "principals": released,
        });
        tracing::info!(
            principals = released.len(),
            "release of expired containments"
        );
        let failed = released
            .iter()
            .filter(|p| enforce && p["released"] == false)
            .count();
        if !released.is_empty() {
            self.publish_release(&report).await;
        }
        if failed > 0 {
            tracing::error!(%report, "expired containments not released");
            return Err(EdgeError::Retryable {
                failed,
                codes: "release_expired".into(),
            });
        }
        Ok(report)
    }

    /// `{"runbook": "release" | "verify", "principal": …, "reason": …, "requested_by": …}`:
    /// undo quell's containment of a principal from the ledger, or check it still holds (and
    /// contain what appeared since, in enforce mode). Keys stay inactive unless
    /// `"reactivate_keys": true`. Recorded in the ledger and published as the audit event.
    async fn ledger_runbook(&self, kind: &str, payload: &Value) -> Result<Value, EdgeError> {
        use quell_ledger::Ledger;
        let Some((ledger, clock)) = &self.ledger else {
            return Ok(self.rejected(format!(
                "a {kind} runbook needs the ledger: set QUELL_LEDGER_TABLE"
            )));
        };
        let reason = payload["reason"].as_str().unwrap_or("").trim();
        if reason.is_empty() {
            return Ok(self.rejected("/reason: a release or verify needs a reason".into()));
        }
        let Some(key) = payload["principal"]
            .as_str()
            .and_then(|p| quell_ledger::key_of_argument(p, payload["principal_type"].as_str()))
        else {
            return Ok(self.rejected(
                "/principal: expected an IAM user or role ARN, or an assumed-role ARN".into(),
            ));
        };
        let by = payload["requested_by"].as_str().unwrap_or("runbook");
        let ledger_err = |e: quell_ledger::LedgerError| EdgeError::Retryable {
            failed: 1,
            codes: format!("{} ({})", e.code, e.message),
        };
        let mut entries = ledger.list(Some(&key)).await.map_err(ledger_err)?;
        entries.retain(|e| e.in_force());
        entries.sort_by(|a, b| b.at.cmp(&a.at));
        let enforce = self.policy.mode == quell_core::Mode::Enforce;
        let source = self.executor.source();
        let mut steps = Vec::new();
        if kind == "verify" {
            steps = quell_aws::release::verify(source, &entries, enforce).await;
        } else if enforce {
            let reactivate = payload["reactivate_keys"].as_bool() == Some(true);
            (steps, _) =
                quell_ledger::release_each(ledger, &entries, by, clock.now(), |e| async move {
                    quell_aws::release::release(source, &e, reactivate).await
                })
                .await
                .map_err(ledger_err)?;
        }
        let report = json!({
            "runbook": kind, "principal": key, "reason": reason, "requested_by": by,
            "mode": self.policy.mode, "containments": entries.len(), "steps": steps,
        });
        tracing::info!(runbook = kind, principal = %key, steps = steps.len(), "ledger runbook");
        self.publish_release(&report).await;
        // A check that found the containment broken (attacker persistence, a failure, what
        // quell cannot fix itself) tells a human.
        if kind == "verify"
            && let Some(alert) =
                quell_ledger::check_alert(&key, self.accepts.name(), self.policy.mode, &steps)
        {
            self.publish_alert(&alert).await;
        }
        Ok(report)
    }
}

/// JSON logs, as CloudWatch and Lambda's JSON log format expect. `RUST_LOG` filters.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .with_current_span(false)
        .without_time()
        .try_init();
}

/// The whole function: init once, then serve invocations.
pub async fn run(accepts: Accepts) -> Result<(), lambda_runtime::Error> {
    init_logging();
    let edge = init(accepts).await.map_err(|e| {
        tracing::error!(error = %e, "init failed");
        e
    })?;
    let edge = &edge;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        edge.handle(event.payload).await
    }))
    .await
}

/// The sweep scheduler function: on its schedule, request one sweep per account.
pub async fn run_scheduler() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let env = |k: &str| std::env::var(k).ok();
    let policy = load_policy(env)?;
    let config = quell_aws::load_config(None).await;
    let bus = env("QUELL_AUDIT_BUS")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| EdgeError::Config("QUELL_AUDIT_BUS is not set".into()))?;
    let accounts = if policy.aws.sweep_accounts.is_empty() {
        sweep::AccountList::Organization(aws_sdk_organizations::Client::new(&config))
    } else {
        sweep::AccountList::Explicit(policy.aws.sweep_accounts.clone())
    };
    let scheduler = sweep::Scheduler {
        accounts,
        eventbridge: aws_sdk_eventbridge::Client::new(&config),
        bus,
    };
    let scheduler = &scheduler;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        scheduler.handle().await
    }))
    .await
}

/// The sweeper function: sweep the account each `Sweep Requested` event names.
pub async fn run_sweeper() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let env = |k: &str| std::env::var(k).ok();
    let policy = load_policy(env)?;
    let config = quell_aws::load_config(None).await;
    let audit = audit_bus(&config);
    let me = quell_aws::session(config, &policy.aws.member_role_name)
        .await
        .map_err(|e| EdgeError::Aws(e.to_string()))?;
    let sweeper = sweep::Sweeper {
        source: me.accounts,
        ctx: me.ctx,
        policy,
        clock: Arc::new(SystemClock),
        audit,
    };
    let sweeper = &sweeper;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        sweeper.handle(event.payload).await
    }))
    .await
}
