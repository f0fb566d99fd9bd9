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
use quell_aws::capabilities::SqsChecks;
use quell_aws::ledger::DynamoLedger;
use quell_aws::{Accounts, AwsExecutor, ClientSource, SystemClock};
use quell_core::clock::Clock;
use quell_core::{ActionKind, Context, Policy, plan_input};
use quell_pipeline::{Answer, Done, LedgerRequest, Pipeline};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use thiserror::Error;

/// Which events a function accepts. A function refuses others, so a misrouted or spoofed
/// event cannot reach an executor through the wrong door, and each function's role holds only
/// what its own job calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    Guardduty,
    Securityhub,
    AccessAnalyzer,
    /// The runbook function: runbook requests (contain, release, verify) and any supported
    /// event, invoked directly.
    Any,
    /// The verify function: the verify queue's messages, each a `verify` request (SQS).
    VerifyQueue,
    /// The release-expired function: the hourly schedule's `{"runbook": "release_expired"}`.
    ReleaseExpired,
}

impl Accepts {
    /// The function's name in metrics and alerts.
    pub fn name(self) -> &'static str {
        match self {
            Accepts::Guardduty => "guardduty",
            Accepts::Securityhub => "securityhub",
            Accepts::AccessAnalyzer => "access-analyzer",
            Accepts::Any => "runbook",
            Accepts::VerifyQueue => "verify",
            Accepts::ReleaseExpired => "release-expired",
        }
    }

    pub const ALL: [Accepts; 6] = [
        Accepts::Guardduty,
        Accepts::Securityhub,
        Accepts::AccessAnalyzer,
        Accepts::Any,
        Accepts::VerifyQueue,
        Accepts::ReleaseExpired,
    ];

    /// Whether the function contains findings (and so schedules checks after containment).
    pub fn contains(self) -> bool {
        !matches!(self, Accepts::VerifyQueue | Accepts::ReleaseExpired)
    }

    /// The AWS action kinds a plan from this function's events can hold, under any policy.
    /// With [`Accepts::iam_permissions`], the function's IAM role in `samplesam.yaml` holds
    /// exactly their permissions (`quell_aws::permissions`); tests/sam.rs checks both directions.
    pub fn action_kinds(self) -> &'static [ActionKind] {
        use ActionKind::*;
        const THREAT: &[ActionKind] = &[
            QuarantineUser,
            QuarantineRole,
            DenyIdentityCenterUser,
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
                DenyIdentityCenterUser,
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
            // They plan nothing: they check or release what the ledger holds.
            Accepts::VerifyQueue | Accepts::ReleaseExpired => &[],
        }
    }

    /// The IAM and Security Hub actions the function's code can call: its action kinds', and
    /// what release and verify call. Identity Center's (`sso:`, `identitystore:`) are never the
    /// function's own: quell reaches Identity Center through the member role of the account
    /// that administers it (`infra/aws/member-role.yaml`, `IdentityCenterInstanceArn`).
    pub fn iam_permissions(self) -> std::collections::BTreeSet<&'static str> {
        let mut out: std::collections::BTreeSet<&'static str> = self
            .action_kinds()
            .iter()
            .flat_map(|k| quell_aws::permissions(*k).iter().copied())
            .filter(|p| p.starts_with("iam:") || p.starts_with("securityhub:"))
            .collect();
        match self {
            // A human's release and verify, through a runbook request.
            Accepts::Any => out.extend(quell_aws::RELEASE_PERMISSIONS),
            Accepts::VerifyQueue => out.extend(quell_aws::VERIFY_PERMISSIONS),
            Accepts::ReleaseExpired => out.extend(quell_aws::AUTO_RELEASE_PERMISSIONS),
            Accepts::Guardduty | Accepts::Securityhub | Accepts::AccessAnalyzer => {}
        }
        out
    }

    /// Whether the function may reach Graph keyless (`sts:GetWebIdentityToken`): the Entra side
    /// of a compromised AWS role (remove, verify a federated credential). Access Analyzer's
    /// unused access contains no one across clouds.
    pub fn reaches_entra(self) -> bool {
        !matches!(self, Accepts::AccessAnalyzer)
    }

    /// Whether the function plans findings, and so reads the cross-cloud link map.
    pub fn plans(self) -> bool {
        matches!(
            self,
            Accepts::Guardduty | Accepts::Securityhub | Accepts::AccessAnalyzer | Accepts::Any
        )
    }

    /// The DynamoDB actions the function calls on the ledger.
    pub fn ledger_permissions(self) -> &'static [&'static str] {
        match self {
            Accepts::VerifyQueue => quell_aws::ledger::VERIFY_LEDGER_PERMISSIONS,
            Accepts::ReleaseExpired => quell_aws::ledger::EXPIRY_PERMISSIONS,
            Accepts::Guardduty | Accepts::Securityhub | Accepts::AccessAnalyzer | Accepts::Any => {
                quell_aws::ledger::LEDGER_PERMISSIONS
            }
        }
    }

    /// The function's logical id in `samplesam.yaml`.
    pub fn logical_id(self) -> &'static str {
        match self {
            Accepts::Guardduty => "GuardDutyFunction",
            Accepts::Securityhub => "SecurityHubFunction",
            Accepts::AccessAnalyzer => "AccessAnalyzerFunction",
            Accepts::Any => "RunbookFunction",
            Accepts::VerifyQueue => "VerifyFunction",
            Accepts::ReleaseExpired => "ReleaseExpiredFunction",
        }
    }

    fn source(self) -> Option<&'static str> {
        match self {
            Accepts::Guardduty => Some("aws.guardduty"),
            Accepts::Securityhub => Some("aws.securityhub"),
            Accepts::AccessAnalyzer => Some("aws.access-analyzer"),
            Accepts::Any | Accepts::VerifyQueue | Accepts::ReleaseExpired => None,
        }
    }
}

#[derive(Debug, Error)]
pub enum EdgeError {
    #[error("configuration: {0}; fix the function's environment")]
    Config(String),
    #[error("AWS: {0}")]
    Aws(String),
    #[error("{reason}; the invocation fails so Lambda retries it (every action is idempotent)")]
    Retryable { reason: String },
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
    /// Graph, reached keyless (`QUELL_ENTRA_TENANT_ID`, `QUELL_ENTRA_CLIENT_ID`): the Entra
    /// side of a compromised AWS role (a federated credential that trusts it).
    azure: Option<quell_azure::AzureExecutor>,
    /// The cross-cloud link map, read from the ledger at init and again when older than
    /// [`quell_ledger::links::REFRESH`].
    links: quell_ledger::links::LinkCache,
    audit: Option<(aws_sdk_eventbridge::Client, String)>,
    /// The containment ledger (`QUELL_LEDGER_TABLE`).
    ledger: Option<DynamoLedger>,
    /// The clock the ledger's decisions use.
    clock: Arc<dyn Clock>,
    /// Where checks after containment are scheduled (`QUELL_VERIFY_QUEUE`).
    checks: Option<SqsChecks>,
}

/// Tokens for Graph with no stored secret: the function role's `sts:GetWebIdentityToken` as
/// the client assertion of the Entra application `QUELL_ENTRA_CLIENT_ID`.
struct Outbound(quell_aws::keyless::OutboundToken);

impl quell_azure::token::AssertionSource for Outbound {
    fn assertion(&self) -> quell_azure::token::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move { self.0.token().await.map_err(|e| e.to_string()) })
    }
}

/// The Azure executor a Lambda function reaches Graph with, keyless, when configured.
pub fn entra_executor(
    config: &aws_config::SdkConfig,
    policy: &Policy,
    get: impl Fn(&str) -> Option<String>,
    options: Option<azure_identity::ClientAssertionCredentialOptions>,
) -> Result<Option<quell_azure::AzureExecutor>, EdgeError> {
    let set = |k: &str| get(k).filter(|v| !v.is_empty());
    let (Some(tenant), Some(client)) = (set("QUELL_ENTRA_TENANT_ID"), set("QUELL_ENTRA_CLIENT_ID"))
    else {
        return Ok(None);
    };
    let source = Arc::new(Outbound(quell_aws::keyless::OutboundToken::new(
        aws_sdk_sts::Client::new(config),
    )));
    let tokens = quell_azure::token::from_assertion(&tenant, &client, source, options)
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    let http =
        quell_azure::Http::new(quell_azure::Endpoints::from_env(&get), tokens).with_tenant(&tenant);
    // quell's own application is never contained by quell.
    let ctx = Context::default().with_azure_identity(&client);
    Ok(Some(quell_azure::AzureExecutor::new(
        http,
        policy.clone(),
        ctx,
        Arc::new(SystemClock),
        Vec::new(),
    )))
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
    let azure = if accepts.reaches_entra() {
        entra_executor(&config, &policy, env, None)?
    } else {
        None
    };
    let me = quell_aws::session(config, &policy.aws.member_role_name)
        .await
        .map_err(|e| EdgeError::Aws(e.to_string()))?;
    tracing::info!(caller = %me.arn, mode = ?policy.mode, audit = audit.is_some(), ledger = ledger.is_some(), "quell initialised");
    let mut edge = Edge::new(accepts, policy, me.ctx, me.accounts, audit);
    edge.azure = azure;
    let edge = match std::env::var("QUELL_VERIFY_QUEUE")
        .ok()
        .filter(|q| !q.is_empty())
    {
        Some(q) => edge.with_verify_queue(sqs, &q),
        None => edge,
    };
    let edge = match ledger {
        Some(l) => edge.with_ledger(l, Arc::new(SystemClock)),
        None => edge,
    };
    edge.refresh_links().await;
    Ok(edge)
}

/// The function's executor: AWS, and Graph too when configured, each action on its cloud.
impl<S: ClientSource> quell_pipeline::Executor for Edge<S> {
    fn execute<'a>(
        &'a self,
        plan: &'a quell_core::Plan,
    ) -> quell_pipeline::BoxFuture<'a, quell_core::report::Report> {
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

/// The answer as the Lambda invocation's result: the report, `{"status": "rejected"}` (success,
/// so Lambda does not retry a poison event), or an error that makes Lambda retry.
fn lambda_result(answer: &Answer) -> Result<Value, EdgeError> {
    match answer {
        Answer::Done(_) | Answer::Rejected(_) => Ok(answer.to_json()),
        Answer::Retry { reason, .. } => Err(EdgeError::Retryable {
            reason: reason.clone(),
        }),
    }
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
            azure: None,
            links: Default::default(),
            audit,
            ledger: None,
            clock: Arc::new(SystemClock),
            checks: None,
        }
    }

    /// Claims containments in `ledger` before acting and records them after.
    pub fn with_ledger(mut self, ledger: DynamoLedger, clock: Arc<dyn Clock>) -> Edge<S> {
        self.ledger = Some(ledger);
        self.clock = clock;
        self
    }

    /// Schedules a check of each containment on `queue_url`, `verify.after_seconds` later.
    pub fn with_verify_queue(mut self, client: aws_sdk_sqs::Client, queue_url: &str) -> Edge<S> {
        self.checks = Some(SqsChecks {
            client,
            url: queue_url.to_string(),
        });
        self
    }

    fn clouds(&self) -> quell_pipeline::Clouds<&AwsExecutor<S>, &quell_azure::AzureExecutor> {
        quell_pipeline::Clouds {
            aws: Some(&self.executor),
            azure: self.azure.as_ref(),
        }
    }

    /// Reaches Graph through `azure` too (tests; production builds it from the environment).
    pub fn with_azure(mut self, azure: quell_azure::AzureExecutor) -> Edge<S> {
        self.azure = Some(azure);
        self
    }

    /// Reads the link map from the ledger now (at init), when this function plans findings.
    pub async fn refresh_links(&self) {
        if let Some(ledger) = self.ledger.as_ref().filter(|_| self.accepts.plans()) {
            self.links.refresh(ledger).await;
        }
    }

    /// The planning context: the deployment's, with the link map (said stale past a day).
    async fn plan_context(&self) -> Context {
        let ledger = self.ledger.as_ref().filter(|_| self.accepts.plans());
        self.links
            .context(&self.ctx, ledger, self.clock.now().unix_timestamp())
            .await
    }

    /// Replaces the executor, e.g. with one on a fixed clock (tests).
    pub fn with_executor(mut self, executor: AwsExecutor<S>) -> Edge<S> {
        self.executor = executor;
        self
    }

    /// The one containment pipeline, over this function's ledger, executor and queue.
    fn pipeline(&self) -> Pipeline<'_, DynamoLedger> {
        Pipeline {
            function: self.accepts.name(),
            policy: &self.policy,
            clock: self.clock.as_ref(),
            ledger: self.ledger.as_ref(),
            executor: Some(self),
            undo: match &self.azure {
                Some(z) => vec![&self.executor, z],
                None => vec![&self.executor],
            },
            checks: self
                .checks
                .as_ref()
                .map(|c| c as &dyn quell_pipeline::CheckQueue),
            audit: Some(self),
        }
    }

    /// Handles one invocation payload given as JSON (tests, and callers that hold a value).
    pub async fn handle(&self, payload: Value) -> Result<Value, EdgeError> {
        let bytes = serde_json::to_vec(&payload).map_err(|e| EdgeError::Config(e.to_string()))?;
        self.handle_bytes(&bytes).await
    }

    /// Handles one invocation payload as the Runtime API delivered it: quell's strict parser
    /// sees the bytes themselves (duplicate keys, depth and size are checked on every
    /// function). Then logs the metrics (EMF), publishes the audit event and the alerts.
    pub async fn handle_bytes(&self, payload: &[u8]) -> Result<Value, EdgeError> {
        let started = std::time::Instant::now();
        let answer = self.answer(payload).await;
        if let Answer::Rejected(error) = &answer {
            tracing::warn!(%error, "event rejected; no action taken");
        }
        // The audit event and the alerts are independent: they go together.
        let alerts = answer.alerts(self.accepts.name());
        let ((), unpublished) = tokio::join!(self.publish(&answer), async {
            let mut unpublished = 0;
            for alert in &alerts {
                if !self.publish_alert(alert).await {
                    unpublished += 1;
                }
            }
            unpublished
        });
        let out = match lambda_result(&answer) {
            // An alert is never just a log line: the invocation fails, Lambda retries it (every
            // action is idempotent), and past its retries the dead-letter alarm tells a human.
            Ok(_) if unpublished > 0 => Err(EdgeError::Retryable {
                reason: format!("{unpublished} alert(s) for a human could not be published"),
            }),
            other => other,
        };
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
        out
    }

    /// Decodes the payload for this function and runs it through the pipeline.
    async fn answer(&self, payload: &[u8]) -> Answer {
        let value = match quell_core::json::parse(payload) {
            Ok(v) => v,
            Err(e) => return Answer::Rejected(e.to_string()),
        };
        if let Some(expected) = self.accepts.source() {
            match serde_json::from_value::<EventBridgeEvent<Value>>(value.clone()) {
                Ok(ev) if ev.source == expected => {}
                Ok(ev) => {
                    return Answer::Rejected(format!(
                        "this function handles {expected} events, not {:?}",
                        ev.source
                    ));
                }
                Err(e) => {
                    return Answer::Rejected(format!(
                        "not an EventBridge event from {expected}: {e}"
                    ));
                }
            }
        }
        let pipeline = self.pipeline();
        match self.accepts {
            Accepts::VerifyQueue if is_sqs(&value) => return self.scheduled_checks(&value).await,
            Accepts::VerifyQueue => {
                return Answer::Rejected(
                    "the verify function takes only the verify queue's SQS events".into(),
                );
            }
            Accepts::ReleaseExpired if value == json!({"runbook": "release_expired"}) => {
                return pipeline.release_expired().await;
            }
            Accepts::ReleaseExpired => {
                return Answer::Rejected(
                    "the release-expired function takes only its schedule's {\"runbook\": \"release_expired\"}".into(),
                );
            }
            Accepts::Any if is_sqs(&value) || value["runbook"] == "release_expired" => {
                return Answer::Rejected(
                    "the runbook function takes runbook requests and events: the verify queue and the hourly release have functions of their own".into(),
                );
            }
            Accepts::Any if LedgerRequest::runbook_of(&value).is_some() => {
                return match LedgerRequest::parse(&value) {
                    Ok(req) => pipeline.ledger_request(&req).await,
                    Err(e) => Answer::Rejected(e),
                };
            }
            _ => {}
        }
        let ctx = self.plan_context().await;
        match plan_input(payload, &self.policy, &ctx) {
            Ok(mut plan) => {
                // The delivery: EventBridge's event id (kept by Lambda's retries of it), else
                // the payload's fingerprint (a runbook request invoked again).
                plan.delivery = Some(match value.get("id").and_then(Value::as_str) {
                    Some(id) if value.get("detail-type").is_some() => format!("event:{id}"),
                    _ => format!("payload:{}", quell_core::json::fingerprint(payload)),
                });
                pipeline.contain(plan).await
            }
            Err(e) => Answer::Rejected(e.to_string()),
        }
    }

    /// The verify queue's messages, each a `verify` runbook request checked on its own; the
    /// first that must be retried fails the invocation (SQS redelivers it).
    async fn scheduled_checks(&self, payload: &Value) -> Answer {
        let pipeline = self.pipeline();
        let mut checks = Vec::new();
        for r in payload["Records"].as_array().into_iter().flatten() {
            let body = r["body"].as_str().unwrap_or("");
            let msg = match quell_core::json::parse(body.as_bytes()) {
                Ok(v) => v,
                Err(e) => return Answer::Rejected(format!("verify queue message: {e}")),
            };
            match pipeline.scheduled_check(&msg).await {
                Answer::Done(Done::Ledger(l)) => checks.push(l),
                Answer::Done(_) => {}
                other => return other,
            }
        }
        Answer::Done(Done::checks(checks))
    }

    /// Publishes what the answer did on the audit bus: a containment report as `Identity
    /// Containment Report`, a release or verify as `Identity Containment Release`. A failure is
    /// logged (the report is in the log too); the actions are done, and a retry would only
    /// report them again.
    async fn publish(&self, answer: &Answer) {
        let Some((client, bus)) = &self.audit else {
            return;
        };
        let result = match answer.done() {
            // Published by the pipeline, beside recording it (`AuditSink`).
            Some(Done::Contained(_)) => return,
            Some(d @ (Done::Ledger(_) | Done::Expired(_))) => {
                let detail = serde_json::to_value(d).unwrap_or(Value::Null);
                if matches!(d, Done::Expired(e) if e.principals.is_empty()) {
                    return;
                }
                quell_aws::audit::publish_detail(
                    client,
                    bus,
                    "Identity Containment Release",
                    &detail,
                    vec![],
                )
                .await
            }
            _ => return,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, bus, "audit event not published; the report is in this log");
        }
    }

    /// Publishes an alert on the quell bus (`Identity Containment Alert`), where the SAM
    /// template's rule forwards its text to the alerts topic; false when it could not be (the
    /// invocation then fails).
    async fn publish_alert(&self, alert: &quell_core::alert::Alert) -> bool {
        let Some((client, bus)) = &self.audit else {
            return true;
        };
        let detail = alert.record(self.accepts.name());
        match quell_aws::audit::publish_detail(client, bus, ALERT_DETAIL_TYPE, &detail, vec![])
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, bus, "alert not published; the invocation fails so it is retried");
                false
            }
        }
    }
}

/// The containment's report goes to the quell bus while the ledger records it.
impl<S: ClientSource> quell_pipeline::AuditSink for Edge<S> {
    fn contained<'a>(
        &'a self,
        report: &'a quell_core::report::Report,
    ) -> quell_pipeline::BoxFuture<'a, ()> {
        Box::pin(async move {
            for line in report.lines() {
                tracing::info!(target: "quell::action", "{line}");
            }
            let Some((client, bus)) = &self.audit else {
                return;
            };
            if report.results.is_empty() && report.skipped.is_empty() {
                return;
            }
            if let Err(e) = quell_aws::audit::publish(client, bus, report).await {
                tracing::error!(error = %e, bus, "audit event not published; the report is in this log");
            }
        })
    }
}

/// An SQS event (the verify queue's event source mapping).
fn is_sqs(payload: &Value) -> bool {
    payload["Records"]
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["eventSource"] == "aws:sqs"))
}

/// JSON logs, as CloudWatch and Lambda's JSON log format expect. `RUST_LOG` filters by
/// level and target (`info`, `quell_aws=debug,info`); see [`log_filter`].
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_target(false)
                .with_current_span(false)
                .without_time(),
        )
        .with(log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .try_init();
}

/// The log filter from `RUST_LOG`: a level, or `target=level` pairs. These are
/// tracing-subscriber's `Targets`, not `EnvFilter`, whose span and field filters link a regex
/// engine (about 0.25 MB of every binary) that quell's logs do not need. Absent or unreadable:
/// `info`.
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    rust_log.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO)
    })
}

/// The whole function: init once, then serve invocations.
pub async fn run(accepts: Accepts) -> Result<(), lambda_runtime::Error> {
    init_logging();
    let edge = init(accepts).await.map_err(|e| {
        tracing::error!(error = %e, "init failed");
        e
    })?;
    let edge = &edge;
    // The raw payload: quell's own parser checks it before anything reads it.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            edge.handle_bytes(event.payload.get().as_bytes()).await
        },
    ))
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
    let ledger = env("QUELL_LEDGER_TABLE")
        .filter(|t| !t.is_empty())
        .map(|t| DynamoLedger::new(&config, &t));
    let me = quell_aws::session(config, &policy.aws.member_role_name)
        .await
        .map_err(|e| EdgeError::Aws(e.to_string()))?;
    let sweeper = sweep::Sweeper {
        source: me.accounts,
        ctx: me.ctx,
        policy,
        clock: Arc::new(SystemClock),
        audit,
        ledger,
    };
    let sweeper = &sweeper;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        sweeper.handle(event.payload).await
    }))
    .await
}

#[cfg(test)]
mod log_filter_tests {
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target_and_defaults_to_info() {
        let f = super::log_filter(Some("quell_aws=debug,warn"));
        assert!(f.would_enable("quell_aws::executor", &Level::DEBUG));
        assert!(!f.would_enable("hyper", &Level::INFO));
        let default = super::log_filter(None);
        assert!(default.would_enable("quell_lambda", &Level::INFO));
        assert!(!default.would_enable("quell_lambda", &Level::DEBUG));
        // A filter it cannot read is the default, not silence.
        let bad = super::log_filter(Some("quell=[span]{x}=loud"));
        assert!(bad.would_enable("quell_lambda", &Level::INFO));
    }
}
