//! The Azure stale-credential sweep of one tenant: application and service-principal password
//! credentials that are expired, or unused for the dormancy period, are removed
//! (`removePassword`); service principals with no sign-in for the staleness period are reported.
//! Paged Graph results (`@odata.nextLink`) are followed.

use std::collections::HashMap;

use quell_core::clock::rfc3339_seconds;
use quell_core::model::Subject;
use quell_core::plan::Context;
use quell_core::policy::Policy;
use quell_core::report::{AzureInverse, CredentialOwner, Outcome, Status};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::client::{Api, AzError, Http, seg};

#[derive(Debug, Clone, Serialize)]
pub struct CredentialFinding {
    /// `application` or `servicePrincipal`.
    pub owner_kind: String,
    pub owner_id: String,
    pub app_id: String,
    pub display_name: String,
    pub key_id: String,
    /// Why it is stale: `expired`, `unused`, `never_used`.
    pub reason: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct StalePrincipal {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    pub last_sign_in: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct AzureSweepReport {
    pub swept_at: String,
    pub enforce: bool,
    pub dormancy_days: u32,
    /// Whether sign-in activity was available (else only expiry was judged).
    pub activity_available: bool,
    pub credentials_checked: usize,
    pub credentials: Vec<CredentialFinding>,
    /// Credentials whose use is unknown (absent from the activity report, or an unreadable
    /// timestamp): skipped, with the reason.
    pub unknown: Vec<UnknownCredential>,
    pub stale_service_principals: Vec<StalePrincipal>,
    /// Why nothing was written: more changes than the sweep's own cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnknownCredential {
    pub owner_kind: String,
    pub owner_id: String,
    pub display_name: String,
    pub key_id: String,
    pub why: String,
}

impl AzureSweepReport {
    /// The id the sweep's changes are recorded under in the ledger (one per run).
    pub fn ledger_id(&self) -> String {
        format!("sweep:azure:{}", self.swept_at)
    }

    /// What this sweep changed, for the ledger (`quell_ledger::record_sweep`): each removed
    /// secret and each disabled service principal, keyed by its application.
    pub fn changes(&self, tenant: &str) -> Vec<quell_ledger::SweepChange> {
        use quell_core::plan::ActionKind;
        let sp =
            |id: &str, app_id: &str, name: &str, key_id: Option<&str>| Subject::ServicePrincipal {
                tenant: Some(tenant.to_string()),
                id: id.to_string(),
                app_id: (!app_id.is_empty()).then(|| app_id.to_string()),
                name: (!name.is_empty()).then(|| name.to_string()),
                key_id: key_id.map(str::to_string),
            };
        let secrets = self.credentials.iter().map(|c| {
            (
                ActionKind::RemoveServicePrincipalCredential,
                sp(&c.owner_id, &c.app_id, &c.display_name, Some(&c.key_id)),
                &c.outcome,
            )
        });
        let principals = self.stale_service_principals.iter().map(|p| {
            (
                ActionKind::DisableServicePrincipal,
                sp(&p.id, &p.app_id, &p.display_name, None),
                &p.outcome,
            )
        });
        let scope = format!("azure:{}", tenant.to_ascii_lowercase());
        secrets
            .chain(principals)
            .filter_map(|(kind, subject, o)| {
                quell_ledger::SweepChange::of(kind, subject, o, "aws", scope.clone())
            })
            .collect()
    }

    pub fn count(&self, status: Status) -> usize {
        self.credentials
            .iter()
            .filter(|c| c.outcome.status == status)
            .count()
    }
}

fn when(v: &Value) -> Option<OffsetDateTime> {
    v.as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// Every item of a paged Graph collection, following `@odata.nextLink`.
pub async fn all_pages(http: &Http, first: &str) -> Result<Vec<Value>, AzError> {
    let base = http.endpoints().graph.trim_end_matches('/').to_string();
    let mut items = Vec::new();
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        if pages > 10_000 {
            break; // a runaway nextLink loop
        }
        let page = http.call(Method::GET, Api::Graph, &path, None).await?.body;
        if let Some(values) = page["value"].as_array() {
            items.extend(values.iter().cloned());
        }
        next = page["@odata.nextLink"]
            .as_str()
            .and_then(|l| l.strip_prefix(&base).map(str::to_string));
    }
    Ok(items)
}

/// What the activity report says of one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastUse {
    /// Signed in at this time.
    At(OffsetDateTime),
    /// In the report with no sign-in recorded.
    Never,
    /// In the report with a timestamp that does not parse: unknown, never "never used".
    Unreadable,
}

/// Last use per credential keyId (lower case: key ids are GUIDs), or `None` when the report is
/// not available (it is beta, global-cloud only and needs AuditLog.Read.All).
async fn credential_activity(http: &Http) -> Option<HashMap<String, LastUse>> {
    let rows = all_pages(http, "/beta/reports/appCredentialSignInActivities")
        .await
        .ok()?;
    Some(
        rows.iter()
            .filter_map(|r| {
                let key = r["keyId"].as_str()?.to_ascii_lowercase();
                let raw = &r["signInActivity"]["lastSignInDateTime"];
                let last = match (raw, when(raw)) {
                    (_, Some(t)) => LastUse::At(t),
                    (Value::Null, None) => LastUse::Never,
                    (_, None) => LastUse::Unreadable,
                };
                Some((key, last))
            })
            .collect(),
    )
}

pub struct AzureSweepOptions<'a> {
    pub policy: &'a Policy,
    pub ctx: &'a Context,
    pub now: OffsetDateTime,
    pub enforce: bool,
}

fn protected(opts: &AzureSweepOptions<'_>, id: &str, app_id: &str, name: &str) -> Option<String> {
    let s = Subject::ServicePrincipal {
        tenant: None,
        id: id.to_string(),
        app_id: (!app_id.is_empty()).then(|| app_id.to_string()),
        name: (!name.is_empty()).then(|| name.to_string()),
        key_id: None,
    };
    quell_core::plan::protection_reason(opts.policy, opts.ctx, &s)
}

/// Sweeps the tenant.
pub async fn sweep_tenant(
    http: &Http,
    opts: &AzureSweepOptions<'_>,
) -> Result<AzureSweepReport, AzError> {
    let days = opts.policy.dormancy_days;
    let cutoff = opts.now - time::Duration::days(i64::from(days));
    let activity = credential_activity(http).await;
    let mut report = AzureSweepReport {
        swept_at: rfc3339_seconds(opts.now),
        enforce: opts.enforce,
        dormancy_days: days,
        activity_available: activity.is_some(),
        credentials_checked: 0,
        credentials: Vec::new(),
        unknown: Vec::new(),
        stale_service_principals: Vec::new(),
        withheld: None,
    };
    for (kind, collection) in [
        (
            "application",
            "/v1.0/applications?$select=id,appId,displayName,passwordCredentials",
        ),
        (
            "servicePrincipal",
            "/v1.0/servicePrincipals?$select=id,appId,displayName,passwordCredentials",
        ),
    ] {
        for owner in all_pages(http, collection).await? {
            let id = owner["id"].as_str().unwrap_or_default().to_string();
            let app_id = owner["appId"].as_str().unwrap_or_default().to_string();
            let name = owner["displayName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for cred in owner["passwordCredentials"]
                .as_array()
                .into_iter()
                .flatten()
            {
                report.credentials_checked += 1;
                let Some(key) = cred["keyId"].as_str() else {
                    continue;
                };
                let end = when(&cred["endDateTime"]);
                let start = when(&cred["startDateTime"]);
                let reason = if end.is_some_and(|e| e < opts.now) {
                    "expired"
                } else {
                    let seen = activity.as_ref().map(|a| a.get(&key.to_ascii_lowercase()));
                    match seen {
                        // Activity known for this key.
                        Some(Some(LastUse::At(last))) if *last < cutoff => "unused",
                        Some(Some(LastUse::At(_))) => continue,
                        // In the report with no sign-in recorded: never used.
                        Some(Some(LastUse::Never)) if start.is_some_and(|s| s < cutoff) => {
                            "never_used"
                        }
                        // Absent from the report, or its timestamp unreadable: unknown, so
                        // left alone and said so (never taken as never used).
                        Some(None) | Some(Some(LastUse::Unreadable)) => {
                            report.unknown.push(UnknownCredential {
                                owner_kind: kind.into(),
                                owner_id: id.clone(),
                                display_name: name.clone(),
                                key_id: key.to_string(),
                                why: if seen == Some(Some(&LastUse::Unreadable)) {
                                    "the activity report's timestamp for it does not parse: its use is unknown, so it is left alone".into()
                                } else {
                                    "absent from the activity report: its use is unknown, so it is left alone".into()
                                },
                            });
                            continue;
                        }
                        _ => continue, // recent, or no activity data: only expiry can be judged
                    }
                };
                let outcome = if let Some(r) = protected(opts, &id, &app_id, &name) {
                    Outcome::skipped(r)
                } else {
                    // Written after the count, once the sweep's cap allows it.
                    Outcome::dry_run(format!("would remove password credential {key}"))
                };
                report.credentials.push(CredentialFinding {
                    owner_kind: kind.into(),
                    owner_id: id.clone(),
                    app_id: app_id.clone(),
                    display_name: name.clone(),
                    key_id: key.to_string(),
                    reason: reason.into(),
                    outcome,
                });
            }
        }
    }
    // Service principals with no sign-in for the staleness period: reported for review.
    let stale_cutoff = opts.now - time::Duration::days(i64::from(opts.policy.role_staleness_days));
    if let Ok(rows) = all_pages(http, "/beta/reports/servicePrincipalSignInActivities").await {
        for r in rows {
            // No sign-in data is "unknown", never stale: absence of a record is not evidence
            // that nobody uses the service principal.
            let Some(last) = when(&r["lastSignInActivity"]["lastSignInDateTime"]) else {
                continue;
            };
            if last >= stale_cutoff {
                continue;
            }
            let last = Some(last);
            // The report's `id` identifies the activity record, not the service principal:
            // the service principal is found by `appId`.
            let app_id = r["appId"].as_str().unwrap_or_default().to_string();
            if app_id.is_empty() {
                continue;
            }
            let sp = match http
                .send(
                    Method::GET,
                    Api::Graph,
                    &format!(
                        "/v1.0/servicePrincipals(appId='{}')?$select=id,appId,displayName,accountEnabled",
                        seg(&app_id)
                    ),
                    None,
                )
                .await
            {
                Ok(r) if r.ok() => r.body,
                // No service principal in this tenant for that app (deleted since).
                Ok(r) if r.status == 404 => continue,
                Ok(r) => return Err(r.error()),
                Err(e) => return Err(e),
            };
            let id = sp["id"].as_str().unwrap_or_default().to_string();
            let display_name = sp["displayName"].as_str().unwrap_or_default().to_string();
            if id.is_empty() {
                continue;
            }
            let outcome = match protected(opts, &id, &app_id, &display_name) {
                Some(reason) => Outcome::skipped(reason),
                None if !opts.policy.azure.disable_stale_service_principals => {
                    Outcome::skipped(format!(
                        "no sign-in for {} days: review it (set azure.disable_stale_service_principals to disable)",
                        opts.policy.role_staleness_days
                    ))
                }
                None if sp["accountEnabled"] == Value::Bool(false) => {
                    Outcome::already("the service principal is already disabled")
                }
                None => Outcome::dry_run("would disable the service principal"),
            };
            report.stale_service_principals.push(StalePrincipal {
                id,
                app_id,
                display_name,
                last_sign_in: last.map(rfc3339_seconds),
                outcome,
            });
        }
    }
    write(http, opts, &mut report).await;
    Ok(report)
}

/// Makes the changes the sweep found, or none when they are more than the sweep's own cap
/// (`breaker.max_sweep_writes_per_account`, counted per tenant): then every one is withheld.
async fn write(http: &Http, opts: &AzureSweepOptions<'_>, report: &mut AzureSweepReport) {
    let pending = |o: &Outcome| o.status == Status::DryRun;
    let writes = report
        .credentials
        .iter()
        .filter(|c| pending(&c.outcome))
        .count()
        + report
            .stale_service_principals
            .iter()
            .filter(|p| pending(&p.outcome))
            .count();
    if !opts.enforce || writes == 0 {
        return;
    }
    let cap = opts.policy.breaker.max_sweep_writes_per_account as usize;
    if writes > cap {
        let why = format!(
            "withheld: this sweep would make {writes} changes in the tenant, over the sweep's cap of {cap} (breaker.max_sweep_writes_per_account); nothing was written. Review the report, then raise the cap or run `quell sweep azure --yes` by hand with a policy whose cap fits"
        );
        let outcomes = report.credentials.iter_mut().map(|c| &mut c.outcome).chain(
            report
                .stale_service_principals
                .iter_mut()
                .map(|p| &mut p.outcome),
        );
        for o in outcomes.filter(|o| pending(o)) {
            *o = Outcome::skipped(why.clone());
        }
        report.withheld = Some(why);
        return;
    }
    for c in report
        .credentials
        .iter_mut()
        .filter(|c| pending(&c.outcome))
    {
        c.outcome = remove_password(http, &c.owner_kind, &c.owner_id, &c.key_id).await;
    }
    for p in report
        .stale_service_principals
        .iter_mut()
        .filter(|p| pending(&p.outcome))
    {
        p.outcome = disable_service_principal(http, &p.id).await;
    }
}

async fn remove_password(http: &Http, kind: &str, id: &str, key: &str) -> Outcome {
    let (path, owner) = match kind {
        "application" => (
            format!("/v1.0/applications/{}/removePassword", seg(id)),
            CredentialOwner::Application(seg(id)),
        ),
        _ => (
            format!("/v1.0/servicePrincipals/{}/removePassword", seg(id)),
            CredentialOwner::ServicePrincipal(seg(id)),
        ),
    };
    match http
        .call(
            Method::POST,
            Api::Graph,
            &path,
            Some(&json!({"keyId": key})),
        )
        .await
    {
        Ok(_) => Outcome::applied(
            format!("removed password credential {key}"),
            Some(
                AzureInverse::AddPassword {
                    owner,
                    credentials: None,
                }
                .into(),
            ),
        ),
        // Removed meanwhile: nothing left to do.
        Err(e) if e.status == 404 => Outcome::already(format!("credential {key} is already gone")),
        Err(e) => Outcome::failed(e.code.clone(), e.message.clone(), e.retryable),
    }
}

async fn disable_service_principal(http: &Http, id: &str) -> Outcome {
    let path = format!("/v1.0/servicePrincipals/{}", seg(id));
    match http
        .call(
            Method::PATCH,
            Api::Graph,
            &path,
            Some(&json!({"accountEnabled": false})),
        )
        .await
    {
        Ok(_) => Outcome::applied(
            "accountEnabled = false (no recent sign-in)",
            Some(
                AzureInverse::EnableServicePrincipal {
                    id: id.to_string(),
                    federated_credentials: None,
                    credentials: None,
                }
                .into(),
            ),
        ),
        Err(e) => Outcome::failed(e.code.clone(), e.message.clone(), e.retryable),
    }
}
