//! quell's containment ledger: a durable record of every containment quell applied (principal,
//! finding, actions with their outcomes and inverses, time, trigger, release), kept in a real
//! database behind the [`Ledger`] capability (DynamoDB on AWS, Table Storage on Azure).
//!
//! It is three things at once:
//! - the **idempotency key** across invocations: a containment of one principal for one finding
//!   is claimed with a conditional write, so two concurrent invocations produce one containment
//!   and one record, and a principal a human released is not contained again by the same
//!   finding (a new finding, or a higher severity, contains again);
//! - the **fleet breaker**: new containments per account or tenant and UTC clock hour, counted
//!   with an atomic conditional increment;
//! - the source of **release** and **verify**: what to undo, and what must still hold.
//!
//! The decisions are pure functions ([`decide`]); [`gate`] and [`record`] wire them to a ledger.
//! The core crate stays free of I/O and async.

use std::collections::BTreeMap;
use std::future::Future;

use quell_core::clock::rfc3339_seconds;
use quell_core::key::PrincipalKey;
use quell_core::model::{Family, FindingRef, SeverityLabel, Subject};
use quell_core::plan::{Action, ActionKind, Plan, Skip, Target};
use quell_core::policy::Policy;
use quell_core::report::{Inverse, Report, Status as Outcome};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

pub mod links;
pub mod memory;

/// A ledger call failed. quell does not contain without its ledger when one is configured:
/// the invocation fails (retryably) instead.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("ledger: {code}: {message}")]
pub struct LedgerError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// Where a containment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// An invocation holds it until `lease_until`.
    Claimed,
    /// Every action applied or was already in state.
    Done,
    /// Some action failed; a retry takes it over.
    Failed,
    /// A human undid it (`quell release`).
    Released,
}

/// One action quell applied, with its outcome and how to undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub kind: ActionKind,
    pub target: Target,
    pub status: Outcome,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse: Option<Inverse>,
}

/// A refusal to undo or re-check a row that is not quell's record of a containment: a failed
/// step (so the entry stays in force and a human hears of it), and nothing changed.
pub fn refused(why: String) -> quell_core::report::Outcome {
    quell_core::report::Outcome::failed(
        "RefusedForgedEntry",
        format!(
            "refused: {why}; the ledger entry is not quell's record of this containment, and nothing was changed"
        ),
        false,
    )
}

/// What one step of a release or verify did (either cloud).
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    pub outcome: quell_core::report::Outcome,
}

/// The ledger's record of one principal contained for one finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// [`principal_key`]: `aws:<account>:user/<name>`, `azure:user/<id>`, …
    pub principal: String,
    pub finding: String,
    /// `aws:<account>` or `azure:<tenant>`: what the breaker counts in.
    pub scope: String,
    pub state: State,
    pub severity: SeverityLabel,
    /// What triggered it: the source, or who asked (a runbook's `requested_by`).
    pub trigger: String,
    /// When it was first contained.
    pub at: String,
    pub updated: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// The delivery that holds or last ran the claim (the EventBridge event id, a hash of the
    /// message): a retry of the same delivery proceeds through a live lease; another delivery
    /// of the same containment waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    #[serde(default)]
    pub actions: Vec<Recorded>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// When quell releases it by itself (the family's `release_after_hours`); `None`: only a
    /// human releases it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Optimistic-concurrency version: every write names the version it read.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
    /// When the store itself says the row was last written (Table Storage's `Timestamp`, set by
    /// the service, not by whoever wrote the row); `None` where the store keeps no such time.
    /// Never serialized: a row cannot claim it.
    #[serde(skip)]
    pub stored_at: Option<String>,
}

impl Entry {
    /// Still in force: contained and not released.
    pub fn in_force(&self) -> bool {
        matches!(self.state, State::Done | State::Failed | State::Claimed)
    }
}

/// A capability: durable storage for [`Entry`]s and breaker counters. Every write is
/// conditional, so concurrent invocations cannot both win.
pub trait Ledger: Send + Sync {
    fn get(
        &self,
        principal: &str,
        finding: &str,
    ) -> impl Future<Output = Result<Option<Entry>, LedgerError>> + Send;
    /// Writes `entry` if the stored version is still `expected` (`None`: no entry yet).
    /// `Ok(false)`: someone else wrote first.
    fn put(
        &self,
        entry: &Entry,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
    /// Deletes the entry if its version is still `expected`.
    fn delete(
        &self,
        principal: &str,
        finding: &str,
        expected: u64,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
    /// Every entry of `principal`, or of every principal.
    fn list(
        &self,
        principal: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Entry>, LedgerError>> + Send;
    /// Every entry of one finding.
    fn by_finding(
        &self,
        finding: &str,
    ) -> impl Future<Output = Result<Vec<Entry>, LedgerError>> + Send;
    /// Takes one of `cap` slots of `scope` for `hour` (`YYYY-MM-DDTHH`); `Ok(false)`: full.
    fn take_slot(
        &self,
        scope: &str,
        hour: &str,
        cap: u32,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;
    /// Slots taken in `scope` for `hour`.
    fn slots(
        &self,
        scope: &str,
        hour: &str,
    ) -> impl Future<Output = Result<u32, LedgerError>> + Send;
    /// Gives back one slot taken in `scope` for `hour` for a containment that then did not
    /// happen (a claim lost to another invocation); never below zero.
    fn return_slot(
        &self,
        scope: &str,
        hour: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Empties `scope`'s counter for `hour` (`quell breaker reset`).
    fn reset_slots(
        &self,
        scope: &str,
        hour: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Writes one named document beside the entries (the link map's parts, [`links`]): never
    /// read as an entry, never listed with them. Names are `[A-Za-z0-9._-]`.
    fn put_document(
        &self,
        name: &str,
        body: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
    /// Every document whose name starts with `prefix`, as `(name, body)`.
    fn documents(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, LedgerError>> + Send;
}

/// The ledger key of the principal a subject belongs to ([`PrincipalKey`], in `partition` for
/// AWS subjects): a key, session or role session is its user's or role's containment.
pub fn principal_key(s: &Subject, partition: &str) -> Option<String> {
    PrincipalKey::of_subject(s, partition).map(|k| k.to_string())
}

/// The breaker scope of a subject: its account or tenant.
pub fn scope_of(s: &Subject) -> String {
    match (s.account(), s.tenant()) {
        (Some(a), _) => format!("aws:{a}"),
        (_, Some(t)) => format!("azure:{}", t.to_ascii_lowercase()),
        _ => "azure:default".to_string(),
    }
}

/// A principal as a human names it on the command line, as a ledger key: an IAM user or role
/// ARN (any path or partition), an assumed-role ARN, a UPN, or an object id with its kind
/// ([`PrincipalKey::of_argument`]).
pub fn key_of_argument(arg: &str, kind: Option<&str>) -> Option<String> {
    PrincipalKey::of_argument(arg, kind).map(|k| k.to_string())
}

/// Every entry of one principal, under its key and under the form keys had before
/// ([`PrincipalKey::legacy`]), so rows written then are still found.
pub async fn list_principal<L: Ledger>(
    ledger: &L,
    key: &PrincipalKey,
) -> Result<Vec<Entry>, LedgerError> {
    let mut out = Vec::new();
    for form in key.stored_forms() {
        out.extend(ledger.list(Some(&form)).await?);
    }
    Ok(out)
}

/// The entry of one principal and finding, under its key or its former form; with the form it
/// was found under (every later write of that row names it).
async fn get_principal<L: Ledger>(
    ledger: &L,
    principal: &str,
    finding: &str,
) -> Result<(Option<Entry>, String), LedgerError> {
    let forms = PrincipalKey::parse(principal)
        .map(|k| k.stored_forms())
        .unwrap_or_else(|| vec![principal.to_string()]);
    // The key and its form of before are read together: one round trip, not two.
    let (first, legacy) = match forms.as_slice() {
        [key, old, ..] => {
            let (a, b) = tokio::join!(ledger.get(key, finding), ledger.get(old, finding));
            (a?, b?)
        }
        [key] => (ledger.get(key, finding).await?, None),
        [] => (None, None),
    };
    let found = first
        .map(|e| (e, forms.first()))
        .or(legacy.map(|e| (e, forms.get(1))));
    match found {
        Some((e, Some(form))) => Ok((Some(e), form.clone())),
        _ => Ok((None, principal.to_string())),
    }
}

/// One principal contained for one finding, as a plan holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Containment {
    pub principal: String,
    pub scope: String,
    pub finding: String,
    pub severity: SeverityLabel,
    pub trigger: String,
    /// The finding's family: its policy says whether the containment expires.
    pub family: Family,
    /// When the finding's activity last occurred (RFC 3339): an occurrence after a release is
    /// a new theft, and contains again.
    pub last_seen: Option<String>,
    /// The delivery this plan came from ([`Plan::delivery`]).
    pub delivery: Option<String>,
}

pub use quell_core::model::ids::detection_id;

/// The containments a plan would apply: its containment actions grouped by principal and
/// finding.
pub fn containments(plan: &Plan) -> Vec<Containment> {
    let mut out: BTreeMap<(String, String), Containment> = BTreeMap::new();
    for a in plan.actions.iter().filter(|a| a.kind.is_containment()) {
        let Target::Subject(s) = &a.target else {
            continue;
        };
        let Some(principal) = principal_key(s, &plan.partition) else {
            continue;
        };
        let f = plan.findings.iter().find(|f| f.id == a.finding);
        let finding = detection_id(&a.finding).to_string();
        out.entry((principal.clone(), finding.clone()))
            .or_insert_with(|| Containment {
                principal,
                scope: scope_of(s),
                finding,
                severity: f.map_or(SeverityLabel::Unknown, |f| f.severity.label),
                family: f.map_or(Family::Manual, |f| f.family),
                last_seen: f.and_then(|f| f.last_seen.clone()),
                delivery: plan.delivery.clone(),
                trigger: f.map_or("unknown".into(), |f| {
                    serde_json::to_value(f.source)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                }),
            });
    }
    out.into_values().collect()
}

/// What the ledger says about a containment before it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not contained yet (or released and now more severe): contain, and count it in the breaker.
    New,
    /// Contained before (a re-delivery or a retry): run again (every action is idempotent),
    /// not counted again.
    Again,
    /// Another invocation holds it now.
    Busy { until: String },
    /// A human released the principal for this finding: the same finding does not contain again.
    Released { by: String, at: String },
}

/// How many history lines an entry keeps: the first (how it began) and the newest, so a
/// containment re-delivered for months stays a small row (Table Storage caps a property at
/// 64 KiB).
pub const HISTORY_MAX: usize = 40;

/// Appends a history line, dropping the oldest but the first past [`HISTORY_MAX`].
pub fn push_history(history: &mut Vec<String>, line: String) {
    history.push(line);
    while history.len() > HISTORY_MAX {
        history.remove(1);
    }
}

/// How long a claim holds before a retry may take it over.
pub const LEASE: time::Duration = time::Duration::minutes(5);

/// The pure decision for one containment, given what the ledger holds.
pub fn decide(existing: Option<&Entry>, c: &Containment, now: OffsetDateTime) -> Decision {
    let stamp = rfc3339_seconds(now);
    match existing {
        None => Decision::New,
        Some(e) if e.state == State::Released => {
            // GuardDuty keeps one finding id for repeated occurrences, and risky users are keyed
            // by the user: an occurrence after the release is the attacker back, and contains
            // again; the same occurrence re-delivered does not.
            let occurred_since = c
                .last_seen
                .as_deref()
                .zip(e.released_at.as_deref())
                .is_some_and(|(seen, released)| seen > released);
            if c.severity > e.severity || occurred_since {
                Decision::New
            } else {
                Decision::Released {
                    by: e.released_by.clone().unwrap_or_else(|| "?".into()),
                    at: e.released_at.clone().unwrap_or_else(|| "?".into()),
                }
            }
        }
        // A live lease held by another delivery: wait. The same delivery retried (after a
        // timeout, a crash or a failed record) proceeds: every action is idempotent.
        Some(e)
            if e.state == State::Claimed
                && e.lease_until.as_deref().is_some_and(|l| l > stamp.as_str())
                && (e.delivery.is_none() || e.delivery != c.delivery) =>
        {
            Decision::Busy {
                until: e.lease_until.clone().unwrap_or_default(),
            }
        }
        Some(_) => Decision::Again,
    }
}

/// `YYYY-MM-DDTHH` (UTC): the breaker's window.
pub fn hour_of(now: OffsetDateTime) -> String {
    rfc3339_seconds(now)
        .get(..13)
        .unwrap_or_default()
        .to_string()
}

/// A containment this invocation holds, to record after execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub containment: Containment,
    pub version: u64,
    pub entry: Entry,
}

/// The plan after the ledger's gate, and the claims to record after execution.
#[derive(Debug, Clone)]
pub struct Gated {
    pub plan: Plan,
    pub claims: Vec<Claim>,
}

/// Whether `a` is one of the containment's actions: its finding, and a subject whose key is the
/// containment's principal (in either of the forms its row may be stored under).
fn is_of(a: &Action, c: &Containment, partition: &str) -> bool {
    detection_id(&a.finding) == c.finding
        && match &a.target {
            Target::Subject(s) => {
                let key = PrincipalKey::of_subject(s, partition);
                key.is_some() && key == PrincipalKey::parse(&c.principal)
            }
            Target::Record(_) => false,
        }
}

/// Moves a containment's actions out of the plan, into `skipped` with `why`.
fn withhold(plan: &mut Plan, c: &Containment, why: &str) {
    let partition = plan.partition.clone();
    let (out, keep): (Vec<Action>, Vec<Action>) = plan
        .actions
        .drain(..)
        .partition(|a| is_of(a, c, &partition));
    plan.actions = keep;
    for a in out {
        plan.skipped.push(Skip {
            finding: a.finding,
            target: Some(a.target),
            reason: format!("{} {why}", a.kind.as_str()),
        });
    }
}

/// A `notify` on the finding's record, saying `why`.
fn notify(plan: &mut Plan, c: &Containment, why: &str) {
    let Some(f) = plan
        .findings
        .iter()
        .find(|f| detection_id(&f.id) == c.finding)
    else {
        return;
    };
    let target = f.record.clone().unwrap_or(FindingRef::Finding {
        source: f.source,
        id: f.id.clone(),
    });
    let cloud = if c.scope.starts_with("aws:") {
        quell_core::Cloud::Aws
    } else {
        quell_core::Cloud::Azure
    };
    let action = Action {
        kind: ActionKind::Notify,
        cloud,
        target: Target::Record(target),
        reason: why.to_string(),
        finding: c.finding.clone(),
        via: None,
    };
    if !plan.actions.contains(&action) {
        let at = plan
            .actions
            .iter()
            .position(|a| a.kind.rank() > ActionKind::Notify.rank())
            .unwrap_or(plan.actions.len());
        plan.actions.insert(at, action);
    }
}

fn breaker_cap(policy: &Policy, scope: &str) -> u32 {
    if scope.starts_with("aws:") {
        policy.breaker.max_containments_per_account_per_hour
    } else {
        policy.breaker.max_containments_per_tenant_per_hour
    }
}

/// Claims each containment of an enforce plan in the ledger before it runs, and withholds
/// those the ledger says must not run: held by another invocation, released by a human for
/// this finding, or past the breaker. A dry-run plan is returned unchanged.
pub async fn gate<L: Ledger>(
    ledger: &L,
    mut plan: Plan,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Gated, LedgerError> {
    let mut claims = Vec::new();
    if plan.mode != quell_core::Mode::Enforce {
        return Ok(Gated { plan, claims });
    }
    let stamp = rfc3339_seconds(now);
    for mut c in containments(&plan) {
        // The common case first: a containment the ledger has never seen, claimed in one
        // round trip. Anything else takes the path below, which reads the entry and decides.
        match claim_new(ledger, &c, policy, now).await? {
            Fast::Claimed(claim) => {
                claims.push(*claim);
                continue;
            }
            Fast::BreakerOpen(cap) => {
                let why = breaker_open(cap, &c.scope);
                withhold(&mut plan, &c, &format!("withheld: {why}"));
                notify(&mut plan, &c, &why);
                continue;
            }
            Fast::Known => {}
        }
        // A row written before keys carried the partition is found, and kept, under its form.
        let (existing, stored) = get_principal(ledger, &c.principal, &c.finding).await?;
        c.principal = stored;
        let decision = decide(existing.as_ref(), &c, now);
        let (new, base) = match decision {
            Decision::Busy { until } => {
                withhold(
                    &mut plan,
                    &c,
                    &format!("withheld: another invocation holds this containment until {until}"),
                );
                // The holder records the outcome on the finding too.
                plan.actions.retain(|a| {
                    !(detection_id(&a.finding) == c.finding
                        && a.kind == ActionKind::UpdateSecurityhubFinding)
                });
                continue;
            }
            Decision::Released { by, at } => {
                let why = format!(
                    "released by {by} at {at}; the same occurrence does not contain again (a new finding, a later occurrence or a higher severity does)"
                );
                withhold(&mut plan, &c, &format!("withheld: {why}"));
                notify(&mut plan, &c, &format!("{} was {why}", c.principal));
                continue;
            }
            Decision::New => (true, existing.clone()),
            Decision::Again => (false, existing.clone()),
        };
        let version = base.as_ref().map_or(1, |e| e.version + 1);
        let mut entry = match base.clone() {
            Some(mut e) if !new => {
                push_history(&mut e.history, format!("{stamp}: run again"));
                e
            }
            Some(e) => Entry {
                history: {
                    let mut h = e.history.clone();
                    let why = match &c.last_seen {
                        Some(seen)
                            if e.released_at.as_deref().is_some_and(|r| seen.as_str() > r) =>
                        {
                            format!("a new occurrence at {seen}")
                        }
                        _ => "a higher severity".to_string(),
                    };
                    h.push(format!(
                        "{stamp}: contained again ({why}) after release by {}",
                        e.released_by.clone().unwrap_or_default()
                    ));
                    h
                },
                ..fresh(&c, &stamp, expiry(policy, &c, now))
            },
            None => fresh(&c, &stamp, expiry(policy, &c, now)),
        };
        entry.state = State::Claimed;
        entry.lease_until = Some(rfc3339_seconds(now + LEASE));
        entry.delivery = c.delivery.clone();
        entry.updated = stamp.clone();
        entry.version = version;
        // The claim and the breaker slot are independent writes: they go together, one round
        // trip before the first containing write instead of two. A claim lost to another
        // invocation may have taken a slot meanwhile: the breaker then counts one containment
        // twice, and trips early, never late.
        let cap = breaker_cap(policy, &c.scope);
        let hour = hour_of(now);
        let (claimed, slot) = if new {
            let (claimed, slot) = tokio::join!(
                ledger.put(&entry, base.as_ref().map(|e| e.version)),
                ledger.take_slot(&c.scope, &hour, cap)
            );
            (claimed?, slot?)
        } else {
            (
                ledger.put(&entry, base.as_ref().map(|e| e.version)).await?,
                true,
            )
        };
        if !claimed {
            withhold(
                &mut plan,
                &c,
                "withheld: another invocation claimed this containment first",
            );
            plan.actions.retain(|a| {
                !(detection_id(&a.finding) == c.finding
                    && a.kind == ActionKind::UpdateSecurityhubFinding)
            });
            continue;
        }
        if !slot {
            // Give the claim back: nothing was contained.
            match &base {
                None => {
                    ledger.delete(&c.principal, &c.finding, version).await?;
                }
                Some(b) => {
                    let mut back = b.clone();
                    back.version = version + 1;
                    ledger.put(&back, Some(version)).await?;
                }
            }
            let why = breaker_open(cap, &c.scope);
            withhold(&mut plan, &c, &format!("withheld: {why}"));
            notify(&mut plan, &c, &why);
            continue;
        }
        claims.push(Claim {
            containment: c,
            version,
            entry,
        });
    }
    Ok(Gated { plan, claims })
}

fn breaker_open(cap: u32, scope: &str) -> String {
    format!(
        "the fleet breaker is open: {cap} containments in {scope} this hour already (breaker.max_containments_per_*_per_hour); a human must review, then `quell breaker reset`"
    )
}

/// What the one-round-trip claim of a containment found.
enum Fast {
    /// Claimed, with its breaker slot.
    Claimed(Box<Claim>),
    /// New, but the breaker is full (cap): the claim was given back.
    BreakerOpen(u32),
    /// The ledger knows this containment (or a row of before names it): decide from the entry.
    Known,
}

/// Claims a containment the ledger has never seen in one round trip: the claim is written on
/// condition that no entry exists, beside the breaker slot and the read of the key's form of
/// before. A claim that finds an entry (a re-delivery, a repeat, another invocation first)
/// gives its slot back, so the breaker counts each containment once.
async fn claim_new<L: Ledger>(
    ledger: &L,
    c: &Containment,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Fast, LedgerError> {
    let stamp = rfc3339_seconds(now);
    let mut entry = fresh(c, &stamp, expiry(policy, c, now));
    entry.lease_until = Some(rfc3339_seconds(now + LEASE));
    entry.delivery = c.delivery.clone();
    entry.version = 1;
    let cap = breaker_cap(policy, &c.scope);
    let hour = hour_of(now);
    let before = PrincipalKey::parse(&c.principal).and_then(|k| k.legacy());
    let legacy = async {
        match &before {
            Some(old) => ledger.get(old, &c.finding).await,
            None => Ok(None),
        }
    };
    let (claimed, slot, legacy) = tokio::join!(
        ledger.put(&entry, None),
        ledger.take_slot(&c.scope, &hour, cap),
        legacy
    );
    let (claimed, slot, legacy) = (claimed?, slot?, legacy?);
    if claimed && legacy.is_none() {
        if slot {
            return Ok(Fast::Claimed(Box::new(Claim {
                containment: c.clone(),
                version: 1,
                entry,
            })));
        }
        ledger.delete(&entry.principal, &entry.finding, 1).await?;
        return Ok(Fast::BreakerOpen(cap));
    }
    if claimed {
        // A row of before holds this containment: ours goes, and the row decides.
        ledger.delete(&entry.principal, &entry.finding, 1).await?;
    }
    if slot {
        ledger.return_slot(&c.scope, &hour).await?;
    }
    Ok(Fast::Known)
}

/// When a containment made `now` expires under the policy of its finding's family.
fn expiry(policy: &Policy, c: &Containment, now: OffsetDateTime) -> Option<String> {
    let hours = policy.family(c.family)?.release_after_hours?;
    Some(rfc3339_seconds(
        now + time::Duration::hours(i64::from(hours)),
    ))
}

fn fresh(c: &Containment, stamp: &str, expires: Option<String>) -> Entry {
    Entry {
        principal: c.principal.clone(),
        finding: c.finding.clone(),
        scope: c.scope.clone(),
        state: State::Claimed,
        severity: c.severity,
        trigger: c.trigger.clone(),
        at: stamp.to_string(),
        updated: stamp.to_string(),
        lease_until: None,
        delivery: None,
        actions: Vec::new(),
        released_at: None,
        released_by: None,
        expires,
        version: 0,
        history: Vec::new(),
        stored_at: None,
    }
}

/// Records what each claimed containment did: its actions' outcomes and inverses, `done` when
/// none failed, `failed` otherwise (a retry takes it over).
pub async fn record<L: Ledger>(
    ledger: &L,
    claims: &[Claim],
    report: &Report,
    now: OffsetDateTime,
) -> Result<(), LedgerError> {
    let stamp = rfc3339_seconds(now);
    for claim in claims {
        let c = &claim.containment;
        let mut entry = claim.entry.clone();
        let mine: Vec<Recorded> = report
            .results
            .iter()
            .filter(|r| is_of(&r.action, c, &report.partition))
            .map(|r| Recorded {
                kind: r.action.kind,
                target: r.action.target.clone(),
                status: r.outcome.status,
                detail: r.outcome.detail.clone(),
                inverse: r.outcome.inverse.clone(),
            })
            .collect();
        let failed = mine.iter().any(|r| r.status == Outcome::Failed);
        // Keep what earlier runs applied (their inverses), add this run's.
        entry.actions.retain(|old| {
            old.status == Outcome::Applied
                && !mine.iter().any(|n| {
                    n.kind == old.kind && n.target == old.target && n.status == Outcome::Applied
                })
        });
        entry.actions.extend(mine);
        entry.state = if failed { State::Failed } else { State::Done };
        entry.lease_until = None;
        entry.updated = stamp.clone();
        entry.version = claim.version + 1;
        if !ledger.put(&entry, Some(claim.version)).await? {
            return Err(LedgerError {
                code: "ConditionalCheckFailed".into(),
                message: format!(
                    "the entry of {} for {} changed while quell held it",
                    c.principal, c.finding
                ),
                retryable: true,
            });
        }
    }
    Ok(())
}

/// One change a scheduled sweep made to one principal.
#[derive(Debug, Clone)]
pub struct SweepChange {
    /// The principal's key ([`PrincipalKey`]).
    pub principal: String,
    /// `aws:<account>` or `azure:<tenant>`.
    pub scope: String,
    pub recorded: Recorded,
}

impl SweepChange {
    /// The change a sweep made to `subject` (`kind`, with its outcome), if it made one: only
    /// applied outcomes of a subject with a ledger key are changes.
    pub fn of(
        kind: ActionKind,
        subject: Subject,
        outcome: &quell_core::report::Outcome,
        partition: &str,
        scope: String,
    ) -> Option<SweepChange> {
        if outcome.status != Outcome::Applied {
            return None;
        }
        Some(SweepChange {
            principal: principal_key(&subject, partition)?,
            scope,
            recorded: Recorded {
                kind,
                target: quell_core::plan::Target::Subject(subject),
                status: outcome.status,
                detail: outcome.detail.clone(),
                inverse: outcome.inverse.clone(),
            },
        })
    }
}

/// Records what a scheduled sweep changed, one entry per principal under the sweep's own id
/// (`sweep_id`, one per run), done and never expiring: `quell ledger list` shows it and `quell
/// release --finding <sweep id>` undoes it (keys only with `--reactivate-keys`). Only applied
/// changes are recorded. A sweep takes no breaker slot: it has a cap of its own
/// (`breaker.max_sweep_writes_per_account`). Returns how many entries were written; an entry
/// already there (the same run recorded twice) is left as it is.
pub async fn record_sweep<L: Ledger>(
    ledger: &L,
    sweep_id: &str,
    changes: Vec<SweepChange>,
    now: OffsetDateTime,
) -> Result<usize, LedgerError> {
    let stamp = rfc3339_seconds(now);
    let mut by_principal: std::collections::BTreeMap<String, (String, Vec<Recorded>)> =
        std::collections::BTreeMap::new();
    for c in changes
        .into_iter()
        .filter(|c| c.recorded.status == Outcome::Applied)
    {
        by_principal
            .entry(c.principal)
            .or_insert_with(|| (c.scope, Vec::new()))
            .1
            .push(c.recorded);
    }
    let mut written = 0;
    for (principal, (scope, actions)) in by_principal {
        let entry = Entry {
            principal,
            finding: sweep_id.to_string(),
            scope,
            state: State::Done,
            severity: SeverityLabel::Low,
            trigger: "sweep".into(),
            at: stamp.clone(),
            updated: stamp.clone(),
            lease_until: None,
            delivery: None,
            actions,
            released_at: None,
            released_by: None,
            expires: None,
            version: 1,
            history: vec![format!("{stamp} swept: dormant credentials changed")],
            stored_at: None,
        };
        if ledger.put(&entry, None).await? {
            written += 1;
        }
    }
    Ok(written)
}

/// Gives back the claims of a run that could not record them (best effort): each entry still
/// as this run left it is marked `failed` with no lease, so the next delivery, or the retry of
/// this one, takes it over at once instead of waiting out the lease.
pub async fn abandon<L: Ledger>(ledger: &L, claims: &[Claim], now: OffsetDateTime) {
    let stamp = rfc3339_seconds(now);
    for claim in claims {
        let c = &claim.containment;
        let Ok(Some(current)) = ledger.get(&c.principal, &c.finding).await else {
            continue;
        };
        if current.version != claim.version || current.state != State::Claimed {
            continue;
        }
        let mut back = current.clone();
        back.state = State::Failed;
        back.lease_until = None;
        back.updated = stamp.clone();
        back.version = current.version + 1;
        push_history(
            &mut back.history,
            format!("{stamp}: claim given back: the run could not record it"),
        );
        let _ = ledger.put(&back, Some(current.version)).await;
    }
}

/// The principals a run holds contained (some containment action applied, or found in state on
/// a re-delivery or retry): the ones to verify once IAM has propagated. A retry schedules the
/// check again, so a check that could not be scheduled the first time is not lost.
pub fn to_verify(claims: &[Claim], report: &Report) -> Vec<String> {
    let mut out: Vec<String> = claims
        .iter()
        .filter(|c| {
            report.results.iter().any(|r| {
                is_of(&r.action, &c.containment, &report.partition)
                    && matches!(r.outcome.status, Outcome::Applied | Outcome::AlreadyInState)
                    && r.action.kind != ActionKind::Notify
            })
        })
        .map(|c| c.containment.principal.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Who the automatic release records as having released an entry.
pub const EXPIRED_BY: &str = "quell (release_after_hours passed)";

/// The principals quell releases by itself at `now`: those whose every containment in force has
/// expired. One without an expiry (a family without `release_after_hours`, a runbook request) or
/// not yet expired keeps the principal contained: releasing would undo its actions too.
/// Returns each principal with its entries in force, newest first.
pub fn expired(entries: &[Entry], now: OffsetDateTime) -> Vec<(String, Vec<Entry>)> {
    let stamp = rfc3339_seconds(now);
    // By principal, whichever form of its key a row was stored under.
    let mut by: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.in_force()) {
        let key = PrincipalKey::parse(&e.principal)
            .map_or_else(|| e.principal.clone(), |k| k.to_string());
        by.entry(key).or_default().push(e);
    }
    by.into_iter()
        .filter(|(_, es)| {
            es.iter().all(|e| {
                e.state != State::Claimed
                    && e.expires.as_deref().is_some_and(|x| x <= stamp.as_str())
            })
        })
        .map(|(p, es)| {
            let mut es: Vec<Entry> = es.into_iter().cloned().collect();
            es.sort_by(|a, b| b.at.cmp(&a.at));
            (p, es)
        })
        .collect()
}

/// The alert for a check's steps (`quell_core::alert::for_check`), or `None` when the
/// containment held.
pub fn check_alert(
    principal: &str,
    function: &str,
    mode: quell_core::Mode,
    steps: &[Step],
) -> Option<quell_core::alert::Alert> {
    let pairs: Vec<(&str, &quell_core::report::Outcome)> = steps
        .iter()
        .map(|s| (s.what.as_str(), &s.outcome))
        .collect();
    quell_core::alert::for_check(principal, function, mode, &pairs)
}

/// Marks an entry released by `by` (after its inverses ran).
pub async fn mark_released<L: Ledger>(
    ledger: &L,
    entry: &Entry,
    by: &str,
    now: OffsetDateTime,
) -> Result<bool, LedgerError> {
    let stamp = rfc3339_seconds(now);
    let mut e = entry.clone();
    e.state = State::Released;
    e.released_at = Some(stamp.clone());
    e.released_by = Some(by.to_string());
    e.updated = stamp.clone();
    push_history(&mut e.history, format!("{stamp}: released by {by}"));
    e.version = entry.version + 1;
    ledger.put(&e, Some(entry.version)).await
}

#[cfg(test)]
mod tests;
