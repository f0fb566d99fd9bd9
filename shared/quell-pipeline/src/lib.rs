//! quell's containment pipeline, written once for every edge (the Lambda functions, the Azure
//! custom handler, the CLI):
//!
//! - [`Pipeline::contain`]: gate in the ledger → execute → record → schedule the check;
//! - [`Pipeline::release`] and [`Pipeline::verify`]: undo or re-check what the ledger holds,
//!   deciding per entry;
//! - [`Pipeline::release_expired`]: the hourly automatic release;
//! - [`Pipeline::ledger_request`] and [`Pipeline::scheduled_check`]: runbook requests and the
//!   verify queue's messages.
//!
//! Each cloud implements three small capabilities ([`Executor`], [`Undo`], [`CheckQueue`]) in its
//! adapter crate; the ledger is [`quell_ledger::Ledger`]. An edge decodes its input, calls the
//! pipeline, and maps the typed [`Answer`] to its platform (a Lambda result or `Diagnostic`, an
//! HTTP status for the Functions host, an exit code for the CLI). The pipeline calls no cloud
//! SDK and no HTTP client itself.

use std::future::Future;
use std::pin::Pin;

use quell_core::alert::Alert;
use quell_core::clock::Clock;
use quell_core::model::Cloud;
use quell_core::plan::Plan;
use quell_core::policy::{Mode, Policy};
use quell_core::report::{Report, Status};
use quell_ledger::{Entry, Ledger, LedgerError, Step};
use serde::Serialize;
use serde_json::Value;

pub use quell_ledger::EXPIRED_BY;

/// A boxed future: the capabilities are object-safe, so an edge can hold one per cloud.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs a plan's actions against one cloud (reading before each write), one outcome each.
pub trait Executor: Send + Sync {
    fn execute<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Report>;

    /// Names the plan's principals as the ledger keys them, before the claim: an Entra user
    /// known only by UPN is resolved to its object id, so one user has one key whichever way a
    /// finding names them. A principal that cannot be resolved stays as named. The default
    /// changes nothing.
    fn resolve<'a>(&'a self, plan: Plan) -> BoxFuture<'a, Plan> {
        Box::pin(async move { plan })
    }

    /// Makes the reads the plan's first writes need while the ledger claim is taken, so they
    /// cost no round trip of their own; the writes still follow their reads. The default reads
    /// nothing.
    fn prefetch<'a>(&'a self, _plan: &'a Plan) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// One executor per cloud, as one: a plan whose actions span both clouds (a compromised
/// Entra user's federated AWS role sessions, the Entra credential that trusts a compromised AWS
/// role) runs each action on its own cloud, both clouds together. A cloud the deployment cannot
/// reach fails its actions with what to configure, so a human hears of the half not contained.
pub struct Clouds<A, Z> {
    pub aws: Option<A>,
    pub azure: Option<Z>,
}

impl<A: Executor, Z: Executor> Clouds<A, Z> {
    fn get(&self, cloud: Cloud) -> Option<&dyn Executor> {
        match cloud {
            Cloud::Aws => self.aws.as_ref().map(|e| e as &dyn Executor),
            Cloud::Azure => self.azure.as_ref().map(|e| e as &dyn Executor),
            Cloud::OnPremises => None,
        }
    }
}

fn no_access(a: &quell_core::Action, cloud: Cloud) -> quell_core::report::ActionResult {
    quell_core::report::ActionResult {
        action: a.clone(),
        outcome: quell_core::report::Outcome::failed(
            "NoAccess",
            format!(
                "this deployment has no access to {}: contain {} by hand, or give quell keyless access there (docs/cross-cloud.md)",
                cloud_name(cloud),
                a.target.label()
            ),
            false,
        ),
    }
}

fn needs(plan: &Plan, cloud: Cloud) -> bool {
    plan.actions.iter().any(|a| a.cloud == cloud)
}

/// An executor borrowed is an executor (`Clouds { aws: Some(&aws), … }`).
impl<T: Executor + ?Sized> Executor for &T {
    fn execute<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Report> {
        (**self).execute(plan)
    }
    fn resolve<'a>(&'a self, plan: Plan) -> BoxFuture<'a, Plan> {
        (**self).resolve(plan)
    }
    fn prefetch<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, ()> {
        (**self).prefetch(plan)
    }
}

impl<A: Executor, Z: Executor> Executor for Clouds<A, Z> {
    fn execute<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Report> {
        Box::pin(async move {
            // An executor runs when its cloud has actions, or when it is the only one (it then
            // reports the other cloud's actions as it always has).
            let run = |cloud: Cloud, other: Cloud| async move {
                match self.get(cloud) {
                    Some(e) if needs(plan, cloud) || self.get(other).is_none() => {
                        Some(e.execute(plan).await)
                    }
                    _ => None,
                }
            };
            let (aws, azure) =
                tokio::join!(run(Cloud::Aws, Cloud::Azure), run(Cloud::Azure, Cloud::Aws));
            let executed_at = aws
                .as_ref()
                .or(azure.as_ref())
                .map(|r| r.executed_at.clone())
                .unwrap_or_default();
            // Each executor reports every action; keep each action's result from its own
            // cloud's executor (an executor's own escalations are of its cloud too). A cloud
            // with no executor keeps what the other said of its actions (skipped: another
            // responder's), except a cross-cloud action, which only this plan will ever ask
            // for: it fails, so a human hears of the half not contained.
            let mut results = Vec::new();
            for (cloud, report, other) in [(Cloud::Aws, &aws, &azure), (Cloud::Azure, &azure, &aws)]
            {
                let own = |r: &&quell_core::report::ActionResult| r.action.cloud == cloud;
                match (report, other) {
                    (Some(r), _) => results.extend(r.results.iter().filter(own).cloned()),
                    (None, Some(o)) => results.extend(o.results.iter().filter(own).map(|r| {
                        if r.action.via.is_some() {
                            no_access(&r.action, cloud)
                        } else {
                            r.clone()
                        }
                    })),
                    (None, None) => results.extend(
                        plan.actions
                            .iter()
                            .filter(|a| a.cloud == cloud)
                            .map(|a| no_access(a, cloud)),
                    ),
                }
            }
            results.sort_by_key(|r| r.action.kind.rank());
            let mut report = Report::new(plan, executed_at, results);
            if plan.mode != Mode::Enforce {
                report = Report::dry_run(plan, report.executed_at);
            }
            report
        })
    }

    fn resolve<'a>(&'a self, plan: Plan) -> BoxFuture<'a, Plan> {
        Box::pin(async move {
            let mut plan = plan;
            for cloud in [Cloud::Azure, Cloud::Aws] {
                if let Some(e) = self.get(cloud)
                    && needs(&plan, cloud)
                {
                    plan = e.resolve(plan).await;
                }
            }
            plan
        })
    }

    fn prefetch<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let each = |cloud: Cloud| async move {
                if let Some(e) = self.get(cloud)
                    && needs(plan, cloud)
                {
                    e.prefetch(plan).await;
                }
            };
            tokio::join!(each(Cloud::Aws), each(Cloud::Azure));
        })
    }
}

/// Who releases, which fixes what a release may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Releaser {
    /// A human (the CLI under their own identity, a runbook request): keys come back only when
    /// they ask.
    Human { reactivate_keys: bool },
    /// The hourly release of expired containments: never reactivates a key, never grants.
    Automatic,
}

/// Undoes and re-checks quell's containments on one cloud, from ledger entries.
pub trait Undo: Send + Sync {
    fn cloud(&self) -> Cloud;
    /// Runs the inverses one entry recorded, newest first.
    fn release<'a>(&'a self, entry: &'a Entry, by: Releaser) -> BoxFuture<'a, Vec<Step>>;
    /// Checks that the containment of one principal (its entries) still holds; with `fix`,
    /// contains what appeared since.
    fn verify<'a>(&'a self, entries: &'a [Entry], fix: bool) -> BoxFuture<'a, Vec<Step>>;
    /// Before an automatic release: the principal's own evidence that quell contained it
    /// (`Err` says why not; the containment then stays for a human).
    fn may_release_automatically<'a>(
        &'a self,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Where checks after containment are scheduled (a delayed `verify` request per principal).
pub trait CheckQueue: Send + Sync {
    /// One check per principal, `after_seconds` from now. A queue that cannot hold a message
    /// that long (SQS: 15 minutes) delivers it sooner; `not_before` (RFC 3339), carried in the
    /// message, makes the check wait again until then ([`Pipeline::scheduled_check`]).
    fn schedule<'a>(
        &'a self,
        principals: &'a [String],
        after_seconds: u32,
        not_before: Option<String>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// How long after containing an IAM Identity Center user quell checks again: the longest
/// credential an Identity Center sign-in hands out before the deny took effect (a permission
/// set's role session, and the portal's application sessions, last one hour by default;
/// "Authentication sessions", IAM Identity Center User Guide).
pub const IDENTITY_CENTER_RECHECK_SECONDS: u32 = 3600;

/// The cloud a ledger key belongs to.
pub fn cloud_of_key(key: &str) -> Option<Cloud> {
    quell_core::key::PrincipalKey::parse(key).map(|k| k.cloud())
}

fn cloud_name(c: Cloud) -> &'static str {
    match c {
        Cloud::Aws => "AWS",
        Cloud::Azure => "Azure",
        Cloud::OnPremises => "on-premises",
    }
}

/// A release or verify runbook's report (the runbook's answer and audit event).
#[derive(Debug, Clone, Serialize)]
pub struct LedgerReport {
    pub runbook: LedgerRunbook,
    pub principal: String,
    pub reason: String,
    pub requested_by: String,
    pub mode: Mode,
    /// Entries in force when the runbook ran.
    pub containments: usize,
    pub steps: Vec<Step>,
}

impl LedgerReport {
    /// A check that found the containment broken (attacker persistence, a failed step, what
    /// quell cannot fix itself) tells a human.
    fn alert(&self, function: &str) -> Option<Alert> {
        if self.runbook != LedgerRunbook::Verify {
            return None;
        }
        quell_ledger::check_alert(&self.principal, function, self.mode, &self.steps)
    }

    pub fn failed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.outcome.status == Status::Failed)
            .count()
    }
}

/// One principal of the hourly release.
#[derive(Debug, Clone, Serialize)]
pub struct ExpiredPrincipal {
    pub principal: String,
    pub containments: usize,
    pub released: bool,
    pub steps: Vec<Step>,
}

/// The hourly release's report.
#[derive(Debug, Clone, Serialize)]
pub struct ExpiredReport {
    pub runbook: &'static str,
    pub mode: Mode,
    pub requested_by: &'static str,
    pub principals: Vec<ExpiredPrincipal>,
}

/// What the pipeline did, for an answer that carries it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Done {
    /// A plan ran (or was dry-run): the report is the audit event's detail.
    Contained(Report),
    /// A release or verify runbook.
    Ledger(LedgerReport),
    /// The hourly release of expired containments.
    Expired(ExpiredReport),
    /// The verify queue's checks of one delivery, each held.
    Checks {
        status: &'static str,
        checks: Vec<LedgerReport>,
    },
    /// Nothing to do, and why (no ledger; no family releases automatically).
    Skipped {
        runbook: &'static str,
        status: &'static str,
        reason: String,
    },
}

impl Done {
    /// The checks of one verify-queue delivery (`{"status": "verified", "checks": […]}`).
    pub fn checks(checks: Vec<LedgerReport>) -> Done {
        Done::Checks {
            status: "verified",
            checks,
        }
    }
}

/// Every edge's answer: done with a report, rejected with a reason (bad or foreign input: no
/// retry), or retry with a reason (a transient failure: the platform runs it again, and every
/// action is idempotent).
#[derive(Debug, Clone)]
pub enum Answer {
    Done(Done),
    Rejected(String),
    Retry { reason: String, done: Option<Done> },
}

impl Answer {
    fn skipped(runbook: &'static str, reason: impl Into<String>) -> Answer {
        Answer::Done(Done::Skipped {
            runbook,
            status: "skipped",
            reason: reason.into(),
        })
    }

    /// What was done, whether or not the invocation must be retried.
    pub fn done(&self) -> Option<&Done> {
        match self {
            Answer::Done(d) => Some(d),
            Answer::Retry { done, .. } => done.as_ref(),
            Answer::Rejected(_) => None,
        }
    }

    /// The alerts this answer owes a human, whatever the edge: a report that needs one (a
    /// notify, a failed action, a withheld containment), a check that found the containment
    /// broken, a rejected event.
    pub fn alerts(&self, function: &str) -> Vec<Alert> {
        if let Answer::Rejected(e) = self {
            return vec![quell_core::alert::for_rejected(function, e)];
        }
        match self.done() {
            Some(Done::Contained(r)) => quell_core::alert::for_report(r, function)
                .into_iter()
                .collect(),
            Some(Done::Ledger(l)) => l.alert(function).into_iter().collect(),
            Some(Done::Checks { checks, .. }) => {
                checks.iter().filter_map(|l| l.alert(function)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The answer as JSON: the report, `{"status":"rejected","error"}`, or the report with
    /// `"status":"retry"` and `"error"`.
    pub fn to_json(&self) -> Value {
        match self {
            Answer::Done(d) => serde_json::to_value(d).unwrap_or(Value::Null),
            Answer::Rejected(e) => serde_json::json!({"status": "rejected", "error": e}),
            Answer::Retry { reason, done } => {
                let mut v = done
                    .as_ref()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .filter(Value::is_object)
                    .unwrap_or_else(|| serde_json::json!({}));
                v["status"] = "retry".into();
                v["error"] = reason.clone().into();
                v
            }
        }
    }
}

/// A release or verify runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerRunbook {
    Release,
    Verify,
}

/// `{"runbook": "release" | "verify", "principal": …, "principal_type": …, "reason": …,
/// "requested_by": …, "reactivate_keys": …}`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRequest {
    pub runbook: LedgerRunbook,
    /// The principal's ledger key.
    pub principal: String,
    pub reason: String,
    pub requested_by: String,
    pub reactivate_keys: bool,
}

impl LedgerRequest {
    /// The runbook a request names, if it is a ledger runbook.
    pub fn runbook_of(v: &Value) -> Option<LedgerRunbook> {
        match v.get("runbook")?.as_str()? {
            "release" => Some(LedgerRunbook::Release),
            "verify" => Some(LedgerRunbook::Verify),
            _ => None,
        }
    }

    /// Reads a release or verify request; `Err` says what is wrong, at which pointer.
    pub fn parse(v: &Value) -> Result<LedgerRequest, String> {
        let runbook = LedgerRequest::runbook_of(v)
            .ok_or_else(|| "/runbook: expected \"release\" or \"verify\"".to_string())?;
        let reason = v["reason"].as_str().unwrap_or("").trim();
        if reason.is_empty() {
            return Err("/reason: a release or verify needs a reason".into());
        }
        let principal = v["principal"]
            .as_str()
            .and_then(|p| quell_ledger::key_of_argument(p, v["principal_type"].as_str()))
            .ok_or_else(|| {
                "/principal: expected an IAM user or role ARN, an assumed-role ARN, an Entra user (object id or UPN), or an object id with principal_type service_principal or managed_identity".to_string()
            })?;
        Ok(LedgerRequest {
            runbook,
            principal,
            reason: reason.to_string(),
            requested_by: v["requested_by"]
                .as_str()
                .filter(|b| !b.trim().is_empty())
                .unwrap_or("runbook")
                .to_string(),
            reactivate_keys: v["reactivate_keys"].as_bool() == Some(true),
        })
    }
}

/// Which entries a release names.
#[derive(Debug, Clone, Copy)]
pub enum Select<'a> {
    Principal(&'a str),
    Finding(&'a str),
}

/// What one release did: every step, and per entry whether it is now released.
#[derive(Debug, Clone, Default)]
pub struct Released {
    pub steps: Vec<Step>,
    /// `(principal, finding, released)` for each entry, in the order released.
    pub entries: Vec<(String, String, bool)>,
}

impl Released {
    pub fn complete(&self) -> bool {
        self.entries.iter().all(|(_, _, r)| *r)
    }
}

/// The pipeline of one edge: its policy, clock, ledger and each cloud's capabilities.
pub struct Pipeline<'a, L> {
    /// The function's name in alerts and metrics.
    pub function: &'a str,
    pub policy: &'a Policy,
    pub clock: &'a dyn Clock,
    /// The containment ledger; `None` runs without (each action still reads before it writes).
    pub ledger: Option<&'a L>,
    pub executor: Option<&'a dyn Executor>,
    /// One per cloud this edge releases and verifies.
    pub undo: Vec<&'a dyn Undo>,
    pub checks: Option<&'a dyn CheckQueue>,
    /// Where a containment's report is published for audit, beside recording it.
    pub audit: Option<&'a dyn AuditSink>,
}

/// A capability: publishes a containment's report for audit (the quell bus on AWS). Best
/// effort: the report is also in the function's log.
pub trait AuditSink: Send + Sync {
    fn contained<'a>(&'a self, report: &'a Report) -> BoxFuture<'a, ()>;
}

fn ledger_retry(e: LedgerError) -> Answer {
    Answer::Retry {
        reason: format!("the ledger is unavailable ({e}); retry"),
        done: None,
    }
}

impl<L: Ledger> Pipeline<'_, L> {
    fn undo_for(&self, key: &str) -> Option<&dyn Undo> {
        let cloud = cloud_of_key(key)?;
        self.undo.iter().copied().find(|u| u.cloud() == cloud)
    }

    fn clouds(&self) -> String {
        let names: Vec<&str> = self.undo.iter().map(|u| cloud_name(u.cloud())).collect();
        names.join(" and ")
    }

    /// Gate → execute → record → schedule the check. With a ledger configured nothing is
    /// contained without it: a ledger error answers retry before any action runs.
    pub async fn contain(&self, plan: Plan) -> Answer {
        let Some(executor) = self.executor else {
            return Answer::Rejected(format!(
                "function {} does not contain: it has no executor",
                self.function
            ));
        };
        let mut retry = Vec::new();
        let report = match self.ledger {
            Some(ledger) => {
                let plan = match plan.mode {
                    Mode::Enforce => executor.resolve(plan).await,
                    Mode::DryRun => plan,
                };
                let now = self.clock.now();
                // The claim and the reads before the first write go together.
                let reads = plan.clone();
                let (gated, ()) = tokio::join!(
                    quell_ledger::gate(ledger, plan, self.policy, now),
                    executor.prefetch(&reads)
                );
                let gated = match gated {
                    Ok(g) => g,
                    Err(e) => return ledger_retry(e),
                };
                let report = executor.execute(&gated.plan).await;
                // Recording and scheduling the check are independent: they go together. A check
                // scheduled for a containment that then failed to record finds it in force (the
                // claim) or not at all, and changes nothing it should not.
                let principals = quell_ledger::to_verify(&gated.claims, &report);
                let (recorded, scheduled, ()) = tokio::join!(
                    quell_ledger::record(ledger, &gated.claims, &report, now),
                    self.schedule_checks(&principals),
                    self.publish(&report)
                );
                if let Err(e) = recorded {
                    // Give the claims back so no delivery waits out the lease for nothing.
                    quell_ledger::abandon(ledger, &gated.claims, now).await;
                    return Answer::Retry {
                        reason: format!("the containment was not recorded ({e}); retry"),
                        done: Some(Done::Contained(report)),
                    };
                }
                if let Err(e) = scheduled {
                    // The containment holds; the retry (idempotent) schedules the check again.
                    retry.push(format!(
                        "the check after containment was not scheduled ({e})"
                    ));
                }
                report
            }
            None => {
                let report = executor.execute(&plan).await;
                self.publish(&report).await;
                report
            }
        };
        let failed: Vec<String> = report
            .results
            .iter()
            .filter(|r| r.outcome.status == Status::Failed && r.outcome.retryable)
            .map(|r| {
                format!(
                    "{} {}: {}",
                    r.action.kind.as_str(),
                    r.action.target.label(),
                    r.outcome.error_code.as_deref().unwrap_or("error")
                )
            })
            .collect();
        if !failed.is_empty() {
            retry.insert(
                0,
                format!(
                    "{} action(s) failed with a retryable error ({})",
                    failed.len(),
                    failed.join("; ")
                ),
            );
        }
        if retry.is_empty() {
            Answer::Done(Done::Contained(report))
        } else {
            Answer::Retry {
                reason: retry.join("; "),
                done: Some(Done::Contained(report)),
            }
        }
    }

    async fn publish(&self, report: &Report) {
        if let Some(a) = self.audit {
            a.contained(report).await;
        }
    }

    async fn schedule_checks(&self, principals: &[String]) -> Result<(), String> {
        let after = self.policy.verify.after_seconds;
        let (Some(queue), false, true) = (self.checks, principals.is_empty(), after > 0) else {
            return Ok(());
        };
        // An Identity Center user is checked again once every credential issued before the
        // deny has expired: what Identity Center assigned meanwhile shows then.
        let people: Vec<String> = principals
            .iter()
            .filter(|p| {
                quell_core::key::PrincipalKey::parse(p)
                    .is_some_and(|k| k.identity_center_user().is_some())
            })
            .cloned()
            .collect();
        if !people.is_empty() {
            let later = IDENTITY_CENTER_RECHECK_SECONDS + after;
            let not_before = quell_core::clock::rfc3339_seconds(
                self.clock.now() + time::Duration::seconds(i64::from(later)),
            );
            if let Err(e) = queue.schedule(&people, later, Some(not_before)).await {
                tracing::error!(error = %e, ?people, "the check an hour after containment is not scheduled");
                return Err(e);
            }
        }
        match queue.schedule(principals, after, None).await {
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

    /// The entries in force a release or verify names, newest first.
    pub async fn in_force(&self, select: Select<'_>) -> Result<Vec<Entry>, LedgerError> {
        let Some(ledger) = self.ledger else {
            return Ok(Vec::new());
        };
        let mut entries = match select {
            Select::Principal(key) => match quell_core::key::PrincipalKey::parse(key) {
                Some(k) => quell_ledger::list_principal(ledger, &k).await?,
                None => ledger.list(Some(key)).await?,
            },
            Select::Finding(id) => ledger.by_finding(id).await?,
        };
        entries.retain(Entry::in_force);
        entries.sort_by(|a, b| b.at.cmp(&a.at));
        Ok(entries)
    }

    /// Releases `entries` (newest first), each on its own: an entry whose steps all succeeded
    /// is marked released by `by`; one with a failed step stays in force for a later try, and
    /// never changes what is recorded for another.
    pub async fn release(
        &self,
        entries: &[Entry],
        by: &str,
        how: Releaser,
    ) -> Result<Released, LedgerError> {
        let mut out = Released::default();
        let Some(ledger) = self.ledger else {
            return Ok(out);
        };
        let now = self.clock.now();
        for e in entries {
            // What another containment in force on this principal relies on (a quarantine, a
            // disabled account, removed role assignments) stays: releasing one finding's
            // containment leaves what the others need.
            let (e, kept) = self.without_shared(ledger, e, entries).await?;
            out.steps.extend(kept);
            let e = &e;
            let done = match self.undo_for(&e.principal) {
                Some(u) => u.release(e, how).await,
                None => vec![Step {
                    what: format!("release {}", e.principal),
                    outcome: quell_core::report::Outcome::failed(
                        "WrongCloud",
                        format!(
                            "{} cannot release this principal; it handles {} principals",
                            self.function,
                            self.clouds()
                        ),
                        false,
                    ),
                }],
            };
            let failed = done.iter().any(|s| s.outcome.status == Status::Failed);
            out.steps.extend(done);
            let released = !failed && quell_ledger::mark_released(ledger, e, by, now).await?;
            out.entries
                .push((e.principal.clone(), e.finding.clone(), released));
        }
        Ok(out)
    }

    /// `e` without the actions another in-force containment of the same principal (not being
    /// released with it) also holds, and a step for each action kept.
    async fn without_shared(
        &self,
        ledger: &L,
        e: &Entry,
        releasing: &[Entry],
    ) -> Result<(Entry, Vec<Step>), LedgerError> {
        use quell_core::plan::ActionKind::*;
        const SHARED: [quell_core::plan::ActionKind; 6] = [
            QuarantineUser,
            QuarantineRole,
            DisableEntraUser,
            DisableServicePrincipal,
            RemoveRoleAssignments,
            DenyIdentityCenterUser,
        ];
        let others: Vec<Entry> = match quell_core::key::PrincipalKey::parse(&e.principal) {
            Some(k) => quell_ledger::list_principal(ledger, &k).await?,
            None => ledger.list(Some(&e.principal)).await?,
        }
        .into_iter()
        .filter(|o| o.in_force() && !releasing.iter().any(|r| r.finding == o.finding))
        .collect();
        let held = |kind: quell_core::plan::ActionKind| {
            others.iter().find(|o| {
                o.actions.iter().any(|a| {
                    a.kind == kind && matches!(a.status, Status::Applied | Status::AlreadyInState)
                })
            })
        };
        let mut kept = Vec::new();
        let mut mine = e.clone();
        mine.actions.retain(
            |a| match SHARED.contains(&a.kind).then(|| held(a.kind)).flatten() {
                Some(other) => {
                    kept.push(Step {
                        what: format!("keep {} {}", a.kind.as_str(), a.target.label()),
                        outcome: quell_core::report::Outcome::skipped(format!(
                            "the containment for finding {} is still in force and relies on it",
                            other.finding
                        )),
                    });
                    false
                }
                None => true,
            },
        );
        Ok((mine, kept))
    }

    /// Checks one principal's containment; with `fix`, contains what appeared since.
    pub async fn verify(&self, key: &str, fix: bool) -> Result<(usize, Vec<Step>), LedgerError> {
        let entries = self.in_force(Select::Principal(key)).await?;
        if entries.is_empty() {
            return Ok((0, Vec::new()));
        }
        let steps = match self.undo_for(key) {
            Some(u) => u.verify(&entries, fix).await,
            None => Vec::new(),
        };
        Ok((entries.len(), steps))
    }

    /// A release or verify runbook request. A release runs only in enforce mode (a dry-run
    /// reports what is in force); a verify fixes only in enforce mode.
    pub async fn ledger_request(&self, req: &LedgerRequest) -> Answer {
        if self.ledger.is_none() {
            return Answer::Rejected(format!(
                "a {} runbook needs the ledger: set QUELL_LEDGER_TABLE",
                serde_json::to_value(req.runbook)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ));
        }
        if self.undo_for(&req.principal).is_none() {
            return Answer::Rejected(format!(
                "/principal: {} is not a principal this function handles: it releases and verifies {} principals",
                req.principal,
                self.clouds()
            ));
        }
        let enforce = self.policy.mode == Mode::Enforce;
        let (containments, steps) = match req.runbook {
            LedgerRunbook::Verify => match self.verify(&req.principal, enforce).await {
                Ok(v) => v,
                Err(e) => return ledger_retry(e),
            },
            LedgerRunbook::Release => {
                let entries = match self.in_force(Select::Principal(&req.principal)).await {
                    Ok(e) => e,
                    Err(e) => return ledger_retry(e),
                };
                let steps = if enforce {
                    let how = Releaser::Human {
                        reactivate_keys: req.reactivate_keys,
                    };
                    match self.release(&entries, &req.requested_by, how).await {
                        Ok(r) => r.steps,
                        Err(e) => return ledger_retry(e),
                    }
                } else {
                    Vec::new()
                };
                (entries.len(), steps)
            }
        };
        tracing::info!(runbook = ?req.runbook, principal = %req.principal, steps = steps.len(), by = %req.requested_by, "ledger runbook");
        Answer::Done(Done::Ledger(LedgerReport {
            runbook: req.runbook,
            principal: req.principal.clone(),
            reason: req.reason.clone(),
            requested_by: req.requested_by.clone(),
            mode: self.policy.mode,
            containments,
            steps,
        }))
    }

    /// One message of the verify queue: it must be a `verify` request (the queue's reach is
    /// "check and contain more", never release). A check with a failed step answers retry, so
    /// the queue redelivers it and, past its limit, dead-letters it.
    pub async fn scheduled_check(&self, msg: &Value) -> Answer {
        if !msg.is_object() {
            return Answer::Rejected("the verify queue message is not a JSON object".into());
        }
        if LedgerRequest::runbook_of(msg) != Some(LedgerRunbook::Verify) {
            return Answer::Rejected(
                "a verify queue message must be a verify runbook request".into(),
            );
        }
        let req = match LedgerRequest::parse(msg) {
            Ok(r) => r,
            Err(e) => return Answer::Rejected(e),
        };
        // Delivered before its time (a queue that holds messages 15 minutes at most): wait
        // again, never longer than the message asked.
        if let Some(due) = msg["not_before"]
            .as_str()
            .and_then(quell_core::clock::parse_rfc3339)
        {
            let now = self.clock.now();
            let cap = now + time::Duration::seconds(i64::from(IDENTITY_CENTER_RECHECK_SECONDS) * 2);
            if due > now && due <= cap {
                let wait = u32::try_from((due - now).whole_seconds().max(1)).unwrap_or(1);
                let Some(queue) = self.checks else {
                    return Answer::skipped("verify", "not due yet, and no queue to wait on");
                };
                return match queue
                    .schedule(
                        std::slice::from_ref(&req.principal),
                        wait,
                        Some(quell_core::clock::rfc3339_seconds(due)),
                    )
                    .await
                {
                    Ok(()) => Answer::skipped(
                        "verify",
                        format!(
                            "not due until {}: scheduled again",
                            quell_core::clock::rfc3339_seconds(due)
                        ),
                    ),
                    Err(e) => Answer::Retry {
                        reason: format!("the check could not wait on the queue: {e}"),
                        done: None,
                    },
                };
            }
        }
        match self.ledger_request(&req).await {
            Answer::Done(Done::Ledger(l)) if l.failed() > 0 => Answer::Retry {
                reason: format!(
                    "{} check(s) failed; the queue redelivers the check",
                    l.failed()
                ),
                done: Some(Done::Ledger(l)),
            },
            other => other,
        }
    }

    /// The hourly release: the principals (of this edge's clouds) whose every containment in
    /// force has passed its family's `release_after_hours` (`quell_ledger::expired`), newest
    /// first, each only with the principal's own evidence that quell contained it. A failed
    /// step leaves that containment in force for the next run and answers retry after the
    /// others ran.
    pub async fn release_expired(&self) -> Answer {
        const RUNBOOK: &str = "release_expired";
        let Some(ledger) = self.ledger else {
            return Answer::skipped(RUNBOOK, "no ledger (QUELL_LEDGER_TABLE)");
        };
        if !self.policy.releases_automatically() {
            return Answer::skipped(RUNBOOK, "no family sets release_after_hours");
        }
        let now = self.clock.now();
        let entries = match ledger.list(None).await {
            Ok(e) => e,
            Err(e) => return ledger_retry(e),
        };
        let enforce = self.policy.mode == Mode::Enforce;
        let mut principals = Vec::new();
        for (principal, due) in quell_ledger::expired(&entries, now) {
            let Some(undo) = self.undo_for(&principal) else {
                continue;
            };
            let (steps, released) = if !enforce {
                (Vec::new(), false)
            } else if let Err(why) = undo.may_release_automatically(&due).await {
                // Only what quell itself contained is lifted without a human.
                let step = Step {
                    what: format!("release {principal}"),
                    outcome: quell_core::report::Outcome::skipped(format!(
                        "not released automatically: {why}; check it, then quell release by hand"
                    )),
                };
                (vec![step], false)
            } else {
                match self.release(&due, EXPIRED_BY, Releaser::Automatic).await {
                    Ok(r) => {
                        let complete = r.complete();
                        (r.steps, complete)
                    }
                    Err(e) => return ledger_retry(e),
                }
            };
            if enforce && !released {
                tracing::error!(%principal, "expired containment not released; the next run tries again");
            }
            principals.push(ExpiredPrincipal {
                principal,
                containments: due.len(),
                released,
                steps,
            });
        }
        tracing::info!(
            principals = principals.len(),
            "release of expired containments"
        );
        let failed = principals.iter().filter(|p| enforce && !p.released).count();
        let report = Done::Expired(ExpiredReport {
            runbook: RUNBOOK,
            mode: self.policy.mode,
            requested_by: EXPIRED_BY,
            principals,
        });
        if failed > 0 {
            Answer::Retry {
                reason: format!(
                    "{failed} principal(s) whose containment expired were not released; the next run tries again"
                ),
                done: Some(report),
            }
        } else {
            Answer::Done(report)
        }
    }
}

#[cfg(test)]
mod tests;
