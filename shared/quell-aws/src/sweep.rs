//! The AWS dormant-credential sweep of one account, with the fewest API calls: one credential
//! report (Generate + Get), exemption tags in bulk, one `ListAccessKeys` per user holding a
//! dormant key, `GetAccessKeyLastUsed` only where two keys cannot be told apart, and one
//! `UpdateAccessKey` per dormant key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_iam::types::{EntityType, StatusType};
use quell_core::clock::rfc3339_seconds;
use quell_core::model::Subject;
use quell_core::plan::Context;
use quell_core::policy::Policy;
use quell_core::report::{Outcome, Status};
use quell_core::sweep::{
    CredentialRow, Dormancy, ListedKey, Pairing, key_dormancy, pair_slots, parse_credential_report,
    password_dormancy,
};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::error::{ExecError, classify};

#[derive(Debug, Clone, Serialize)]
pub struct KeyFinding {
    pub user: String,
    pub slot: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    pub dormancy: Dormancy,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct PasswordFinding {
    pub user: String,
    pub dormancy: Dormancy,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub account: String,
    pub swept_at: String,
    pub dormancy_days: u32,
    pub enforce: bool,
    pub users: usize,
    /// Every active key that is dormant, and what was done.
    pub keys: Vec<KeyFinding>,
    /// Console passwords unused for the dormancy period.
    pub passwords: Vec<PasswordFinding>,
    /// Roles unused for `role_staleness_days`.
    pub roles: Vec<RoleFinding>,
    /// Why nothing was written: the sweep would have made more changes than its own cap
    /// (`breaker.max_sweep_writes_per_account`), and waits for a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleFinding {
    pub role: String,
    pub dormancy: Dormancy,
    pub outcome: Outcome,
}

impl SweepReport {
    /// The id the sweep's changes are recorded under in the ledger (one per run).
    pub fn ledger_id(&self) -> String {
        format!("sweep:{}:{}", self.account, self.swept_at)
    }

    /// What this sweep changed, for the ledger (`quell_ledger::record_sweep`): each applied
    /// key deactivation, password deletion and role quarantine, with its inverse.
    pub fn changes(&self, partition: &str) -> Vec<quell_ledger::SweepChange> {
        use quell_core::plan::ActionKind;
        let account = &self.account;
        let user = |name: &str| Subject::IamUser {
            account: account.clone(),
            name: name.to_string(),
        };
        let keys = self.keys.iter().map(|k| {
            (
                ActionKind::DeactivateDormantAccessKeys,
                user(&k.user),
                &k.outcome,
            )
        });
        let passwords = self
            .passwords
            .iter()
            .map(|p| (ActionKind::DeleteLoginProfile, user(&p.user), &p.outcome));
        let roles = self.roles.iter().map(|r| {
            let role = Subject::IamRole {
                account: account.clone(),
                name: r.role.clone(),
            };
            (ActionKind::QuarantineRole, role, &r.outcome)
        });
        keys.chain(passwords)
            .chain(roles)
            .filter_map(|(kind, subject, o)| {
                quell_ledger::SweepChange::of(kind, subject, o, partition, format!("aws:{account}"))
            })
            .collect()
    }

    pub fn count(&self, status: Status) -> usize {
        self.keys
            .iter()
            .filter(|k| k.outcome.status == status)
            .count()
            + self
                .passwords
                .iter()
                .filter(|p| p.outcome.status == status)
                .count()
    }
}

pub struct SweepOptions {
    pub account: String,
    pub policy: Policy,
    pub ctx: Context,
    pub now: OffsetDateTime,
    /// False: report what would be done, change nothing.
    pub enforce: bool,
    /// Concurrent per-user reads and writes.
    pub concurrency: usize,
    /// Called with (users checked, users to check) as the sweep progresses.
    pub progress: Option<Arc<dyn Fn(usize, usize) + Send + Sync>>,
}

/// Gets a fresh credential report in as few calls as possible: `GenerateCredentialReport`
/// (AWS reuses a report under four hours old), then `GetCredentialReport`, waiting while AWS
/// answers `ReportInProgress` and regenerating once if it says the report is missing or expired.
pub async fn credential_report(iam: &aws_sdk_iam::Client) -> Result<String, ExecError> {
    let mut generated_again = false;
    iam.generate_credential_report()
        .send()
        .await
        .map_err(classify)?;
    for _ in 0..120 {
        match iam.get_credential_report().send().await.map_err(classify) {
            Ok(out) => {
                let bytes = out
                    .content()
                    .map(|b| b.as_ref().to_vec())
                    .unwrap_or_default();
                return String::from_utf8(bytes).map_err(|_| {
                    ExecError::new("InvalidReport", "the credential report is not UTF-8")
                });
            }
            Err(e) if e.is("ReportInProgress") => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) if (e.is("ReportNotPresent") || e.is("ReportExpired")) && !generated_again => {
                generated_again = true;
                iam.generate_credential_report()
                    .send()
                    .await
                    .map_err(classify)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ExecError::new(
        "ReportInProgress",
        "the credential report did not complete within a minute; run the sweep again",
    ))
}

/// A role as `GetAccountAuthorizationDetails` describes it.
struct RoleInfo {
    name: String,
    path: String,
    created: Option<OffsetDateTime>,
    last_used: Option<OffsetDateTime>,
    exempt: bool,
}

/// Users carrying the exemption tag, and every role with its last use: one paginated
/// `GetAccountAuthorizationDetails` for the whole account.
async fn account_details(
    iam: &aws_sdk_iam::Client,
    tag: &str,
) -> Result<(HashSet<String>, Vec<RoleInfo>), ExecError> {
    let when = |d: Option<&aws_sdk_iam::primitives::DateTime>| {
        d.and_then(|d| OffsetDateTime::from_unix_timestamp(d.secs()).ok())
    };
    let mut users = HashSet::new();
    let mut roles = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = iam
            .get_account_authorization_details()
            .filter(EntityType::User)
            .filter(EntityType::Role)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(classify)?;
        for u in page.user_detail_list() {
            if u.tags().iter().any(|t| t.key() == tag)
                && let Some(name) = u.user_name()
            {
                users.insert(name.to_string());
            }
        }
        for r in page.role_detail_list() {
            let Some(name) = r.role_name() else { continue };
            roles.push(RoleInfo {
                name: name.to_string(),
                path: r.path().unwrap_or("/").to_string(),
                created: when(r.create_date()),
                last_used: when(r.role_last_used().and_then(|u| u.last_used_date())),
                exempt: r.tags().iter().any(|t| t.key() == tag),
            });
        }
        if page.is_truncated() {
            marker = page.marker().map(str::to_string);
            if marker.is_some() {
                continue;
            }
        }
        return Ok((users, roles));
    }
}

fn protected(opts: &SweepOptions, user: &str) -> Option<String> {
    let s = Subject::IamUser {
        account: opts.account.clone(),
        name: user.to_string(),
    };
    quell_core::plan::protection_reason(&opts.policy, &opts.ctx, &s)
}

/// Sweeps one account: fetches a fresh credential report and acts on it.
pub async fn sweep_account(
    iam: &aws_sdk_iam::Client,
    opts: &SweepOptions,
) -> Result<SweepReport, ExecError> {
    let csv = credential_report(iam).await?;
    sweep_report(iam, &csv, opts).await
}

/// Acts on a credential report already fetched (CSV).
pub async fn sweep_report(
    iam: &aws_sdk_iam::Client,
    csv: &str,
    opts: &SweepOptions,
) -> Result<SweepReport, ExecError> {
    let rows =
        parse_credential_report(csv).map_err(|e| ExecError::new("InvalidReport", e.to_string()))?;
    let days = opts.policy.dormancy_days;
    let mut report = SweepReport {
        account: opts.account.clone(),
        swept_at: rfc3339_seconds(opts.now),
        dormancy_days: days,
        enforce: opts.enforce,
        users: rows.len(),
        keys: Vec::new(),
        passwords: Vec::new(),
        roles: Vec::new(),
        withheld: None,
    };

    // Pure triage first: dormant passwords, and users holding dormant active keys.
    let mut passwords: Vec<(String, Dormancy)> = Vec::new();
    let mut candidates: Vec<(CredentialRow, Vec<(u8, Dormancy)>)> = Vec::new();
    for row in rows {
        let pw = password_dormancy(&row, opts.now, days);
        if matches!(pw, Dormancy::Dormant { .. }) {
            passwords.push((row.user.clone(), pw));
        }
        let dormant: Vec<(u8, Dormancy)> = row
            .keys
            .iter()
            .map(|k| (k.slot, key_dormancy(k, opts.now, days)))
            .filter(|(_, d)| matches!(d, Dormancy::Dormant { .. }))
            .collect();
        if dormant.is_empty() {
            continue;
        }
        if let Some(reason) = protected(opts, &row.user) {
            for (slot, d) in dormant {
                report.keys.push(KeyFinding {
                    user: row.user.clone(),
                    slot,
                    access_key_id: None,
                    dormancy: d,
                    outcome: Outcome::skipped(reason.clone()),
                });
            }
            continue;
        }
        candidates.push((row, dormant));
    }
    // Exemption tags and role activity in bulk, before any write.
    let (exempt, roles) = account_details(iam, &opts.policy.exemption_tag).await?;
    report.roles = roles
        .into_iter()
        .filter_map(|role| stale_role(opts, role))
        .collect();

    // The sweep's own cap, counted before any write: a wrong clock, a policy typo
    // (`dormancy_days = 1`) or a forged `Sweep Requested` must not disable a whole account.
    let key_writes: usize = candidates
        .iter()
        .filter(|(row, _)| !exempt.contains(&row.user))
        .map(|(_, dormant)| dormant.len())
        .sum();
    let password_writes = if opts.policy.aws.delete_login_profile {
        passwords
            .iter()
            .filter(|(u, _)| protected(opts, u).is_none() && !exempt.contains(u))
            .count()
    } else {
        0
    };
    let role_writes = report
        .roles
        .iter()
        .filter(|r| r.outcome.status == Status::DryRun)
        .count();
    let writes = key_writes + password_writes + role_writes;
    let cap = opts.policy.breaker.max_sweep_writes_per_account as usize;
    if opts.enforce && writes > cap {
        report.withheld = Some(format!(
            "withheld: this sweep would make {writes} changes in account {} ({key_writes} keys, {password_writes} console passwords, {role_writes} roles), over the sweep's cap of {cap} (breaker.max_sweep_writes_per_account); nothing was written. Review the report, then raise the cap or run `quell sweep aws --yes` by hand with a policy whose cap fits",
            opts.account
        ));
    }
    let write = opts.enforce && report.withheld.is_none();
    if write {
        for r in &mut report.roles {
            if r.outcome.status == Status::DryRun {
                r.outcome = crate::iam::quarantine(iam, crate::iam::Kind::Role, &r.role).await;
            }
        }
    }
    for (user, dormancy) in passwords {
        let outcome = if let Some(r) = protected(opts, &user) {
            Outcome::skipped(r)
        } else if exempt.contains(&user) {
            Outcome::skipped(format!(
                "the user carries the exemption tag {}",
                opts.policy.exemption_tag
            ))
        } else if !opts.policy.aws.delete_login_profile {
            Outcome::skipped(
                "console password dormant: flagged for review (set aws.delete_login_profile to delete it)",
            )
        } else {
            if write {
                crate::iam::delete_login_profile(iam, &user).await
            } else {
                Outcome::dry_run("would delete the dormant console password")
            }
        };
        report.passwords.push(PasswordFinding {
            user,
            dormancy,
            outcome,
        });
    }

    let total = candidates.len();
    let gate = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (row, dormant) in candidates {
        if exempt.contains(&row.user) {
            for (slot, d) in dormant {
                report.keys.push(KeyFinding {
                    user: row.user.clone(),
                    slot,
                    access_key_id: None,
                    dormancy: d,
                    outcome: Outcome::skipped(format!(
                        "the user carries the exemption tag {}",
                        opts.policy.exemption_tag
                    )),
                });
            }
            continue;
        }
        let iam = iam.clone();
        let gate = gate.clone();
        let enforce = write;
        let cutoff = opts.now - time::Duration::days(i64::from(days));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            sweep_user(&iam, row, dormant, enforce, cutoff).await
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += 1;
        if let Some(p) = &opts.progress {
            p(done, total);
        }
        match joined {
            Ok(findings) => report.keys.extend(findings),
            Err(e) => {
                return Err(ExecError::new(
                    "Internal",
                    format!("a sweep task failed: {e}"),
                ));
            }
        }
    }
    report
        .keys
        .sort_by(|a, b| (&a.user, a.slot).cmp(&(&b.user, b.slot)));
    if let Some(why) = &report.withheld {
        let outcomes = report
            .keys
            .iter_mut()
            .map(|k| &mut k.outcome)
            .chain(report.passwords.iter_mut().map(|p| &mut p.outcome))
            .chain(report.roles.iter_mut().map(|r| &mut r.outcome));
        for o in outcomes.filter(|o| o.status == Status::DryRun) {
            *o = Outcome::skipped(why.clone());
        }
    }
    Ok(report)
}

/// Judges one role against `role_staleness_days`: a `dry_run` outcome when the policy asks for
/// its quarantine (written later, once the sweep's cap allows it).
fn stale_role(opts: &SweepOptions, role: RoleInfo) -> Option<RoleFinding> {
    let slot = quell_core::sweep::KeySlot {
        slot: 0,
        active: true,
        last_rotated: role.created,
        last_used: role.last_used,
    };
    let dormancy = key_dormancy(&slot, opts.now, opts.policy.role_staleness_days);
    if !matches!(dormancy, Dormancy::Dormant { .. }) {
        return None;
    }
    let subject = Subject::IamRole {
        account: opts.account.clone(),
        name: role.name.clone(),
    };
    let outcome = if role.path.starts_with("/aws-service-role/")
        || quell_core::model::ids::is_service_linked_role(&role.name)
    {
        return None; // service-linked roles are AWS's; not even reported
    } else if role.path.starts_with("/aws-reserved/")
        || quell_core::model::ids::is_identity_center_role(&role.name)
    {
        Outcome::skipped("Identity Center role: manage its permission set in Identity Center")
    } else if let Some(r) = quell_core::plan::protection_reason(&opts.policy, &opts.ctx, &subject) {
        Outcome::skipped(r)
    } else if role.exempt {
        Outcome::skipped(format!(
            "the role carries the exemption tag {}",
            opts.policy.exemption_tag
        ))
    } else if !opts.policy.aws.quarantine_unused_roles {
        Outcome::skipped(format!(
            "unused for {} days: flagged for review (set aws.quarantine_unused_roles to quarantine)",
            opts.policy.role_staleness_days
        ))
    } else {
        Outcome::dry_run("would attach the deny-all quarantine policy")
    };
    Some(RoleFinding {
        role: role.name,
        dormancy,
        outcome,
    })
}

async fn sweep_user(
    iam: &aws_sdk_iam::Client,
    row: CredentialRow,
    dormant: Vec<(u8, Dormancy)>,
    enforce: bool,
    cutoff: OffsetDateTime,
) -> Vec<KeyFinding> {
    let finding = |slot: u8, key: Option<String>, outcome: Outcome| {
        let dormancy = dormant
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, d)| d.clone())
            .unwrap_or(Dormancy::Unknown);
        KeyFinding {
            user: row.user.clone(),
            slot,
            access_key_id: key,
            dormancy,
            outcome,
        }
    };
    let listed = match iam.list_access_keys().user_name(&row.user).send().await {
        Ok(out) => out
            .access_key_metadata()
            .iter()
            .filter_map(|k| {
                Some(ListedKey {
                    id: k.access_key_id()?.to_string(),
                    active: k.status() == Some(&StatusType::Active),
                    created: OffsetDateTime::from_unix_timestamp(k.create_date()?.secs()).ok()?,
                })
            })
            .collect::<Vec<_>>(),
        Err(e) => {
            let e = classify(e);
            return dormant
                .iter()
                .map(|(s, _)| {
                    finding(
                        *s,
                        None,
                        Outcome::failed(e.code.clone(), e.message.clone(), e.retryable),
                    )
                })
                .collect();
        }
    };
    let slots: Vec<u8> = dormant.iter().map(|(s, _)| *s).collect();
    let mut to_disable: HashMap<String, u8> = HashMap::new();
    let mut out = Vec::new();
    for (slot, pairing) in pair_slots(&row, &slots, &listed) {
        match pairing {
            Pairing::ByCreation { key } => {
                to_disable.insert(key, slot);
            }
            Pairing::AllDormant { keys } => {
                for k in keys {
                    to_disable.entry(k).or_insert(slot);
                }
            }
            Pairing::NeedsLastUsed { candidates } => {
                // Confirm each candidate's own last use; act only on the provably dormant ones.
                for k in candidates {
                    match iam.get_access_key_last_used().access_key_id(&k).send().await {
                        Ok(o) => {
                            let last = o.access_key_last_used().and_then(|u| u.last_used_date()).map(|d| d.secs());
                            let created = listed.iter().find(|l| l.id == k).map(|l| l.created.unix_timestamp());
                            if last.or(created).is_some_and(|t| t < cutoff.unix_timestamp()) {
                                to_disable.entry(k).or_insert(slot);
                            }
                        }
                        Err(e) => {
                            let e = classify(e);
                            out.push(finding(slot, Some(k), Outcome::failed(e.code.clone(), e.message.clone(), e.retryable)));
                        }
                    }
                }
            }
            Pairing::NoMatch => out.push(finding(slot, None, Outcome::skipped("no active key matches this slot: the report predates a rotation; it is left alone"))),
        }
    }
    let mut keys: Vec<(String, u8)> = to_disable.into_iter().collect();
    keys.sort();
    for (key, slot) in keys {
        let outcome = if !enforce {
            Outcome::dry_run(format!("would deactivate {key}"))
        } else {
            match iam
                .update_access_key()
                .user_name(&row.user)
                .access_key_id(&key)
                .status(StatusType::Inactive)
                .send()
                .await
            {
                Ok(_) => Outcome::applied(
                    format!("deactivated {key}"),
                    Some(
                        quell_core::report::AwsInverse::ReactivateKeys {
                            user: row.user.clone(),
                            keys: vec![key.to_string()],
                        }
                        .into(),
                    ),
                ),
                Err(e) => classify(e).into(),
            }
        };
        out.push(finding(slot, Some(key), outcome));
    }
    out
}
