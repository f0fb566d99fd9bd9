//! Executes the Azure actions of a plan through Graph and ARM. Every action reads before it
//! writes, so a second run reports `already_in_state`; one failure never stops the others.

use std::sync::Arc;

use quell_core::Cloud;
use quell_core::clock::{Clock, rfc3339_seconds};
use quell_core::model::{FindingRef, Subject};
use quell_core::plan::{Action, ActionKind, Context, Plan, Target};
use quell_core::policy::{Mode, Policy};
use quell_core::report::{ActionResult, AzureInverse, CredentialOwner, Inverse, Outcome, Report};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::client::{Api, AzError, Http, seg};

/// A revocation this recent is taken as already covering the finding (re-deliveries, re-runs).
const RECENT_REVOCATION: time::Duration = time::Duration::minutes(10);

/// A risk event up to this long after the user's last session revocation is still taken as
/// handled by it: quell confirms a user compromised just before it revokes their sessions, and
/// Identity Protection and the directory stamp times on different servers.
const RISK_AFTER_REVOCATION: time::Duration = time::Duration::seconds(60);

/// Per execution: each user as read before the first action on them, by object id and by UPN.
/// One read serves every action on the user (the risk check, disable, revoke, confirm): each
/// decides on fields the others do not write (`accountEnabled` is read by disable alone), so a
/// Graph round trip per action bought nothing.
type UserReads = tokio::sync::Mutex<std::collections::HashMap<String, Value>>;

/// What every action on a user reads, in one `$select`.
const USER_FIELDS: &str =
    "id,userPrincipalName,accountEnabled,onPremisesSyncEnabled,signInSessionsValidFromDateTime";

/// How long Graph's copy of a risky user, read to plan an Event Hub record, stands in for the
/// confirm action's own read of it: Identity Protection answers one request a second per
/// tenant, so that read cost a second on the way to the session revocation.
const COPY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

pub struct AzureExecutor {
    http: Http,
    policy: Policy,
    ctx: Context,
    clock: Arc<dyn Clock>,
    /// Subscriptions to search for a managed identity's role assignments.
    subscriptions: Vec<String>,
    /// Graph's copies of risky users fetched to plan a record ([`AzureExecutor::fetch_copy`]),
    /// with when: used once, within [`COPY_FOR`].
    copies: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Value)>>,
}

/// Where Graph keeps its own copy of what a finding reports: the alert (`alerts_v2`, whose ids
/// are Defender XDR's `AlertId`), the risk detection, the risky user or the risky service
/// principal, each a documented v1.0 `GET` by id. `None` for a source Graph holds no copy of.
/// A record on an Event Hub or a body posted to an HTTP function is written by whoever can send
/// it; quell plans only from this copy.
pub fn graph_copy_path(f: &quell_core::Finding) -> Option<String> {
    use quell_core::Source;
    if let Some(FindingRef::DefenderAlert { id, .. }) = &f.record {
        return Some(format!("/v1.0/security/alerts_v2/{}", seg(id)));
    }
    let collection = match f.source {
        Source::EntraRiskDetection => "riskDetections",
        Source::EntraRiskyUser => "riskyUsers",
        Source::EntraServicePrincipalRiskDetection => "servicePrincipalRiskDetections",
        Source::EntraRiskyServicePrincipal => "riskyServicePrincipals",
        Source::Guardduty
        | Source::Securityhub
        | Source::AccessAnalyzer
        | Source::DefenderXdr
        | Source::GraphAlert
        | Source::Runbook => return None,
    };
    Some(format!(
        "/v1.0/identityProtection/{collection}/{}",
        seg(&f.id)
    ))
}

/// The key ids of an object's secrets and certificates, lower-cased (GUIDs).
pub fn key_ids(object: &Value) -> Vec<String> {
    ["passwordCredentials", "keyCredentials"]
        .iter()
        .flat_map(|k| object[*k].as_array().into_iter().flatten())
        .filter_map(|c| c["keyId"].as_str())
        .map(str::to_ascii_lowercase)
        .collect()
}

fn failed(e: AzError) -> Outcome {
    Outcome::failed(e.code.clone(), e.message.clone(), e.retryable)
}

impl AzureExecutor {
    pub fn new(
        http: Http,
        policy: Policy,
        ctx: Context,
        clock: Arc<dyn Clock>,
        subscriptions: Vec<String>,
    ) -> AzureExecutor {
        AzureExecutor {
            http,
            policy,
            ctx,
            clock,
            subscriptions,
            copies: Default::default(),
        }
    }

    /// A risky user's copy read within [`COPY_FOR`], taken (used once).
    fn recent_copy(&self, path: &str) -> Option<Value> {
        let mut copies = self.copies.lock().ok()?;
        copies.retain(|_, (at, _)| at.elapsed() < COPY_FOR);
        copies.remove(path).map(|(_, v)| v)
    }

    /// Graph's own copy of what a finding reports, or `None` when Graph has no such object.
    /// `Ok(None)` too when the source has no copy in Graph ([`graph_copy_path`]).
    pub async fn fetch_copy(&self, f: &quell_core::Finding) -> Result<Option<Value>, AzError> {
        let Some(path) = graph_copy_path(f) else {
            return Ok(None);
        };
        let r = self.http.send(Method::GET, Api::Graph, &path, None).await?;
        match r.status {
            200..=299 => {
                if path.starts_with("/v1.0/identityProtection/riskyUsers/")
                    && let Ok(mut copies) = self.copies.lock()
                {
                    copies.insert(path.clone(), (std::time::Instant::now(), r.body.clone()));
                }
                Ok(Some(r.body))
            }
            404 => Ok(None),
            _ => Err(r.error()),
        }
    }

    /// The Graph/ARM client (the scheduled sweep uses it too).
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Runs the plan: dry-run unless the plan's mode is `enforce`.
    pub async fn execute(&self, plan: &Plan) -> Report {
        let now = self.clock.now();
        let stamp = rfc3339_seconds(now);
        if plan.mode == Mode::DryRun {
            return Report::dry_run(plan, stamp);
        }
        let mut results = Vec::with_capacity(plan.actions.len());
        let users = UserReads::default();
        for action in &plan.actions {
            let finding = plan.findings.iter().find(|f| f.id == action.finding);
            let (outcome, escalation) = match self.risk_handled(action, finding, &users).await {
                Some(o) => (o, None),
                None => self.run(action, now, &results, &users).await,
            };
            tracing::info!(kind = action.kind.as_str(), target = %action.target.label(), status = ?outcome.status, "action");
            results.push(ActionResult {
                action: action.clone(),
                outcome,
            });
            if let Some(notice) = escalation {
                results.push(notice);
            }
        }
        Report::new(plan, stamp, results)
    }

    async fn run(
        &self,
        action: &Action,
        now: OffsetDateTime,
        done: &[ActionResult],
        users: &UserReads,
    ) -> (Outcome, Option<ActionResult>) {
        if action.cloud != Cloud::Azure {
            return (
                Outcome::skipped("not an Azure action; the AWS responder executes it"),
                None,
            );
        }
        use ActionKind::*;
        let outcome = match (&action.kind, &action.target) {
            (Notify, _) => {
                Outcome::applied("escalated to a human: the report carries this notice", None)
            }
            (UpdateDefenderAlert, Target::Record(FindingRef::DefenderAlert { id, .. })) => {
                self.update_alert(id, &action.finding, done).await
            }
            (_, Target::Subject(s)) => {
                if let Some(reason) = self.protected(s) {
                    return (Outcome::skipped(reason), None);
                }
                match (action.kind, s) {
                    (DisableEntraUser, Subject::EntraUser { .. }) => {
                        return self.disable_user(action, s, users).await;
                    }
                    (RevokeEntraSessions, Subject::EntraUser { .. }) => {
                        self.revoke_sessions(s, now, users).await
                    }
                    (ConfirmUserCompromised, Subject::EntraUser { .. }) => {
                        self.confirm_compromised(s, users).await
                    }
                    (DisableServicePrincipal, Subject::ServicePrincipal { .. }) => {
                        self.disable_service_principal(s).await
                    }
                    (
                        RemoveServicePrincipalCredential,
                        Subject::ServicePrincipal {
                            key_id: Some(key), ..
                        },
                    ) => self.remove_password(s, key).await,
                    (
                        RemoveFederatedCredential,
                        Subject::ServicePrincipal {
                            app_id: Some(app_id),
                            key_id: Some(credential),
                            ..
                        },
                    ) => {
                        self.remove_federated_credential(app_id, credential, action.via.as_ref())
                            .await
                    }
                    (RemoveRoleAssignments, Subject::ManagedIdentity { id, .. }) => {
                        self.remove_role_assignments(id).await
                    }
                    (kind, s) => Outcome::skipped(format!(
                        "{} is not supported on {}",
                        kind.as_str(),
                        s.kind()
                    )),
                }
            }
            (kind, target) => Outcome::skipped(format!(
                "{} cannot act on {}",
                kind.as_str(),
                target.label()
            )),
        };
        (outcome, None)
    }

    /// An Entra risk event that is not newer than the user's last session revocation (by quell,
    /// an administrator or a password change) was already responded to: quell's own
    /// `confirmCompromised` comes back as an `adminConfirmedUserCompromised` detection and a
    /// `confirmedCompromised` risky user, and a replay of either must not contain a user an
    /// administrator has since re-enabled. A newer risk event contains again.
    async fn risk_handled(
        &self,
        action: &Action,
        finding: Option<&quell_core::Finding>,
        users: &UserReads,
    ) -> Option<Outcome> {
        use quell_core::Source;
        let f = finding?;
        if !matches!(
            f.source,
            Source::EntraRiskDetection | Source::EntraRiskyUser
        ) || action.cloud != Cloud::Azure
        {
            return None;
        }
        let Target::Subject(s @ Subject::EntraUser { .. }) = &action.target else {
            return None;
        };
        let risk_at = f
            .last_seen
            .as_deref()
            .and_then(quell_core::clock::parse_rfc3339)?;
        // The action's own read reports an error.
        let user = self.read_user(s, users).await.ok()?;
        let valid_from = user["signInSessionsValidFromDateTime"]
            .as_str()
            .and_then(quell_core::clock::parse_rfc3339);
        let revoked = valid_from?;
        (risk_at <= revoked + RISK_AFTER_REVOCATION).then(|| {
            Outcome::skipped(format!(
                "the risk event ({}) is not newer than the user's last session revocation ({}): already responded to (by quell or an administrator); a newer risk event contains again",
                rfc3339_seconds(risk_at),
                rfc3339_seconds(revoked)
            ))
        })
    }

    fn protected(&self, s: &Subject) -> Option<String> {
        quell_core::plan::protection_reason(&self.policy, &self.ctx, s)
    }

    /// Why `s` must never be written under this executor's policy and identity, if it must not.
    pub fn protection(&self, s: &Subject) -> Option<String> {
        self.protected(s)
    }

    /// Resolves each Entra user the plan names only by UPN to its object id (`GET
    /// /users/{upn}?$select=id`, one call per UPN, before the ledger claim), so the ledger keys
    /// one user once whichever way findings name them. A UPN Graph does not resolve stays as
    /// named: the action then reads the user again and reports what Graph says.
    pub async fn resolve_users(&self, mut plan: Plan) -> Plan {
        let mut upns: Vec<String> = plan
            .actions
            .iter()
            .filter(|a| a.cloud == Cloud::Azure)
            .filter_map(|a| match &a.target {
                Target::Subject(Subject::EntraUser {
                    id: None,
                    name: Some(upn),
                    ..
                }) => Some(upn.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        upns.sort();
        upns.dedup();
        for upn in upns {
            let id = match self
                .http
                .call(
                    Method::GET,
                    Api::Graph,
                    &format!("/v1.0/users/{}?$select=id", seg(&upn)),
                    None,
                )
                .await
            {
                Ok(r) => match r.body["id"].as_str() {
                    Some(id) if quell_core::model::ids::is_guid(id) => id.to_ascii_lowercase(),
                    _ => continue,
                },
                Err(e) => {
                    tracing::warn!(%upn, error = %e, "the UPN could not be resolved to an object id; keyed as named");
                    continue;
                }
            };
            plan.update_subjects(|s| {
                if let Subject::EntraUser {
                    id: slot @ None,
                    name: Some(n),
                    ..
                } = s
                    && n.eq_ignore_ascii_case(&upn)
                {
                    *slot = Some(id.clone());
                }
            });
        }
        plan
    }

    /// The user's path segment: object id if known, else UPN.
    fn user_ref(s: &Subject) -> Option<String> {
        match s {
            Subject::EntraUser { id, name, .. } => id.clone().or_else(|| name.clone()),
            _ => None,
        }
    }

    async fn read_user(&self, s: &Subject, users: &UserReads) -> Result<Value, Outcome> {
        let Some(u) = Self::user_ref(s) else {
            return Err(Outcome::skipped(
                "the user has neither an object id nor a UPN",
            ));
        };
        let key = u.to_ascii_lowercase();
        let mut users = users.lock().await;
        let body = match users.get(&key) {
            Some(v) => v.clone(),
            None => {
                let r = self
                    .http
                    .call(
                        Method::GET,
                        Api::Graph,
                        &format!("/v1.0/users/{}?$select={USER_FIELDS}", seg(&u)),
                        None,
                    )
                    .await
                    .map_err(failed)?;
                for k in [&r.body["id"], &r.body["userPrincipalName"]] {
                    if let Some(k) = k.as_str() {
                        users.insert(k.to_ascii_lowercase(), r.body.clone());
                    }
                }
                users.insert(key, r.body.clone());
                r.body
            }
        };
        drop(users);
        // A protection pattern may name the UPN or id we only learn now.
        let learned = Subject::EntraUser {
            tenant: None,
            id: body["id"].as_str().map(str::to_string),
            name: body["userPrincipalName"].as_str().map(str::to_string),
            on_premises_synced: None,
        };
        if let Some(reason) = self.protected(&learned) {
            return Err(Outcome::skipped(reason));
        }
        Ok(body)
    }

    async fn disable_user(
        &self,
        action: &Action,
        s: &Subject,
        users: &UserReads,
    ) -> (Outcome, Option<ActionResult>) {
        let user = match self.read_user(s, users).await {
            Ok(u) => u,
            Err(o) => return (o, None),
        };
        let id = user["id"].as_str().unwrap_or_default().to_string();
        // A synced user's cloud disable is reverted by the next AD sync: escalate too.
        let escalation = (user["onPremisesSyncEnabled"] == Value::Bool(true)).then(|| ActionResult {
            action: Action {
                kind: ActionKind::Notify,
                cloud: Cloud::Azure,
                target: action.target.clone(),
                reason: "the user is synced from on-premises AD: the next sync re-enables a cloud-disabled account; disable it in Active Directory".into(),
                finding: action.finding.clone(),
                via: None,
            },
            outcome: Outcome::applied("escalated: disable the account in on-premises AD", None),
        });
        if user["accountEnabled"] == Value::Bool(false) {
            return (
                Outcome::already("the account is already disabled"),
                escalation,
            );
        }
        match self
            .http
            .call(
                Method::PATCH,
                Api::Graph,
                &format!("/v1.0/users/{}", seg(&id)),
                Some(&json!({"accountEnabled": false})),
            )
            .await
        {
            Ok(_) => (
                Outcome::applied(
                    "accountEnabled = false",
                    Some(AzureInverse::EnableUser { id: id.to_string() }.into()),
                ),
                escalation,
            ),
            // Graph, "Update user": for a user holding a privileged administrator role, an
            // app-only caller must itself hold a higher privileged administrator role ("Who can
            // perform sensitive actions"); User.EnableDisableAccount.All alone gets 403.
            Err(e) if e.status == 403 => {
                let notice = ActionResult {
                    action: Action {
                        kind: ActionKind::Notify,
                        cloud: Cloud::Azure,
                        target: action.target.clone(),
                        reason: "Graph refused to disable the user (403): either quell lacks User.EnableDisableAccount.All, or the user holds a privileged directory role, which only an app holding a higher administrator role (Privileged Authentication Administrator) may disable; disable the account by hand now, and see infra/README.md for the role".into(),
                        finding: action.finding.clone(),
                        via: None,
                    },
                    outcome: Outcome::applied(
                        "escalated: the user must be disabled by hand",
                        None,
                    ),
                };
                (failed(e), Some(notice))
            }
            Err(e) => (failed(e), escalation),
        }
    }

    async fn revoke_sessions(
        &self,
        s: &Subject,
        now: OffsetDateTime,
        users: &UserReads,
    ) -> Outcome {
        let user = match self.read_user(s, users).await {
            Ok(u) => u,
            Err(o) => return o,
        };
        let id = user["id"].as_str().unwrap_or_default().to_string();
        let valid_from = user["signInSessionsValidFromDateTime"]
            .as_str()
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
        if valid_from.is_some_and(|t| t >= now - RECENT_REVOCATION) {
            return Outcome::already(format!(
                "sessions were revoked at {} (within {} minutes)",
                user["signInSessionsValidFromDateTime"]
                    .as_str()
                    .unwrap_or_default(),
                RECENT_REVOCATION.whole_minutes()
            ));
        }
        match self
            .http
            .call(
                Method::POST,
                Api::Graph,
                &format!("/v1.0/users/{}/revokeSignInSessions", seg(&id)),
                None,
            )
            .await
        {
            Ok(_) => Outcome::applied("refresh tokens and session cookies revoked", None),
            Err(e) => failed(e),
        }
    }

    async fn confirm_compromised(&self, s: &Subject, users: &UserReads) -> Outcome {
        // Always read first: the user's UPN may match a protection pattern.
        let id = match self.read_user(s, users).await {
            Ok(u) => u["id"].as_str().unwrap_or_default().to_string(),
            Err(o) => return o,
        };
        let path = format!("/v1.0/identityProtection/riskyUsers/{}", seg(&id));
        // Graph's copy, when this invocation just read it to plan the record.
        let risky = match self.recent_copy(&path) {
            Some(body) => Ok(crate::client::Response { status: 200, body }),
            None => self.http.send(Method::GET, Api::Graph, &path, None).await,
        };
        match risky {
            Ok(r) if r.ok() && r.body["riskState"] == "confirmedCompromised" => {
                return Outcome::already(
                    "Identity Protection already has the user confirmed compromised",
                );
            }
            Ok(r) if r.ok() || r.status == 404 => {}
            Ok(r) => return failed(r.error()),
            Err(e) => return failed(e),
        }
        match self
            .http
            .call(
                Method::POST,
                Api::Graph,
                "/v1.0/identityProtection/riskyUsers/confirmCompromised",
                Some(&json!({"userIds": [id]})),
            )
            .await
        {
            Ok(_) => Outcome::applied(
                "confirmed compromised (user risk high)",
                Some(
                    AzureInverse::DismissRisk {
                        user_ids: vec![id.to_string()],
                    }
                    .into(),
                ),
            ),
            Err(e) => failed(e),
        }
    }

    /// Reads the service principal a subject names: by appId when the finding gave one (an
    /// application's id is not the service principal's), else by object id. Protection is
    /// checked again against the object id, appId and display name Graph returns.
    async fn read_service_principal(&self, s: &Subject, select: &str) -> Result<Value, Outcome> {
        let Subject::ServicePrincipal { id, app_id, .. } = s else {
            return Err(Outcome::skipped("not a service principal"));
        };
        let path = match app_id {
            Some(app) => format!(
                "/v1.0/servicePrincipals(appId='{}')?$select={select}",
                seg(app)
            ),
            None => format!("/v1.0/servicePrincipals/{}?$select={select}", seg(id)),
        };
        let sp = self
            .http
            .call(Method::GET, Api::Graph, &path, None)
            .await
            .map_err(failed)?
            .body;
        let learned = Subject::ServicePrincipal {
            tenant: None,
            id: sp["id"].as_str().unwrap_or(id).to_string(),
            app_id: sp["appId"].as_str().map(str::to_string),
            name: sp["displayName"].as_str().map(str::to_string),
            key_id: None,
        };
        if let Some(reason) = self.protected(&learned) {
            return Err(Outcome::skipped(reason));
        }
        if sp["id"].as_str().is_none_or(str::is_empty) {
            return Err(Outcome::failed(
                "NotFound",
                "Graph returned no object id for the service principal",
                false,
            ));
        }
        Ok(sp)
    }

    async fn disable_service_principal(&self, s: &Subject) -> Outcome {
        let sp = match self
            .read_service_principal(
                s,
                "id,appId,displayName,accountEnabled,passwordCredentials,keyCredentials",
            )
            .await
        {
            Ok(sp) => sp,
            Err(o) => return o,
        };
        let id = sp["id"].as_str().unwrap_or_default().to_string();
        if sp["accountEnabled"] == Value::Bool(false) {
            return Outcome::already("the service principal is already disabled");
        }
        match self
            .http
            .call(
                Method::PATCH,
                Api::Graph,
                &format!("/v1.0/servicePrincipals/{}", seg(&id)),
                Some(&json!({"accountEnabled": false})),
            )
            .await
        {
            Ok(_) => {
                // The baselines verify compares with, read together after the write.
                let app_id = sp["appId"].as_str();
                let (federated_credentials, app) = tokio::join!(
                    self.federated_baseline(app_id),
                    self.app_credentials(app_id)
                );
                let credentials = app.map(|app| {
                    let mut ids = key_ids(&sp);
                    ids.extend(key_ids(&app));
                    ids
                });
                let inverse = AzureInverse::EnableServicePrincipal {
                    id: id.clone(),
                    federated_credentials,
                    credentials,
                };
                Outcome::applied(
                    format!(
                        "accountEnabled = false on {} ({id})",
                        sp["displayName"].as_str().unwrap_or("service principal")
                    ),
                    Some(inverse.into()),
                )
            }
            Err(e) => failed(e),
        }
    }

    /// The ids of the application's federated credentials when quell contains its service
    /// principal: the baseline `verify` compares with, since Graph records no creation time for
    /// them (federatedIdentityCredential resource). `None` when they cannot be read (an app
    /// registered in another tenant, or one quell does not own under
    /// `Application.ReadWrite.OwnedBy`); verify then lists them for review.
    async fn federated_baseline(&self, app_id: Option<&str>) -> Option<Vec<String>> {
        let app_id = app_id.filter(|a| !a.is_empty())?;
        let r = self
            .http
            .call(
                Method::GET,
                Api::Graph,
                &format!(
                    "/v1.0/applications(appId='{}')/federatedIdentityCredentials?$select=id",
                    seg(app_id)
                ),
                None,
            )
            .await
            .ok()?;
        Some(
            r.body["value"]
                .as_array()?
                .iter()
                .filter_map(|f| f["id"].as_str().map(str::to_string))
                .collect(),
        )
    }

    /// The application's secrets and certificates (`passwordCredentials`, `keyCredentials`) when
    /// quell contains its service principal, or `None` when the application cannot be read
    /// here: then verify has no baseline for it and only reports.
    async fn app_credentials(&self, app_id: Option<&str>) -> Option<Value> {
        let app_id = app_id.filter(|a| !a.is_empty())?;
        self.http
            .call(
                Method::GET,
                Api::Graph,
                &format!(
                    "/v1.0/applications(appId='{}')?$select=id,passwordCredentials,keyCredentials",
                    seg(app_id)
                ),
                None,
            )
            .await
            .ok()
            .map(|r| r.body)
    }

    /// Removes one password credential, on the service principal or on its application. Key
    /// ids are GUIDs and compare without regard to case.
    /// Removes the federated credential that lets a compromised AWS role's tokens sign in as
    /// an application. Only through a link, and only while the credential, as Graph returns it
    /// now, still trusts that role from an AWS issuer: the link map is where to look, Graph's
    /// copy is what acts. The credential as it was is the inverse (a human's release recreates it).
    async fn remove_federated_credential(
        &self,
        app_id: &str,
        credential: &str,
        via: Option<&quell_core::links::Link>,
    ) -> Outcome {
        use quell_core::links::{AwsEnd, FederatedCredential, LinkKind, is_aws_outbound_issuer};
        let Some(quell_core::links::Link {
            kind: LinkKind::FederatedCredential(_),
            aws: AwsEnd::Role { account, name, .. },
            ..
        }) = via
        else {
            return Outcome::skipped(
                "a federated credential is removed only through a link to the compromised AWS role it trusts",
            );
        };
        let path = format!(
            "/v1.0/applications(appId='{}')/federatedIdentityCredentials/{}",
            seg(app_id),
            seg(credential)
        );
        let live = match self.http.send(Method::GET, Api::Graph, &path, None).await {
            Ok(r) if r.ok() => r.body,
            Ok(r) if r.status == 404 => {
                return Outcome::already(format!(
                    "the application {app_id} has no federated credential {credential}"
                ));
            }
            Ok(r) => return failed(r.error()),
            Err(e) => return failed(e),
        };
        let Ok(fic) = serde_json::from_value::<FederatedCredential>(live) else {
            return Outcome::failed(
                "UnexpectedResponse",
                "Graph returned a federated credential quell cannot read; nothing removed",
                false,
            );
        };
        let trusts_role = is_aws_outbound_issuer(&fic.issuer)
            && fic.subject.split(':').nth(4) == Some(account.as_str())
            && fic
                .subject
                .rsplit('/')
                .next()
                .is_some_and(|r| r.eq_ignore_ascii_case(name))
            && fic.subject.contains(":role/");
        if !trusts_role {
            return Outcome::skipped(format!(
                "the federated credential {:?} no longer trusts role {name} in {account} (issuer {}, subject {}): the link is gone, nothing removed",
                fic.name, fic.issuer, fic.subject
            ));
        }
        match self
            .http
            .send(Method::DELETE, Api::Graph, &path, None)
            .await
        {
            Ok(r) if r.ok() => Outcome::applied(
                format!(
                    "removed the federated credential {:?} (issuer {}, subject {})",
                    fic.name, fic.issuer, fic.subject
                ),
                Some(
                    AzureInverse::RestoreFederatedCredential {
                        app_id: app_id.to_ascii_lowercase(),
                        credential: fic,
                    }
                    .into(),
                ),
            ),
            Ok(r) if r.status == 404 => {
                Outcome::already("the federated credential is already gone")
            }
            // Application.ReadWrite.OwnedBy reaches only applications quell's identity owns.
            Ok(r) if r.status == 403 => Outcome::failed(
                "Forbidden",
                format!(
                    "Graph refused to remove the federated credential {:?} (403): quell may change only applications its identity owns (Application.ReadWrite.OwnedBy); remove it by hand now (Entra admin center > App registrations > Certificates & secrets > Federated credentials), and add quell's identity as an owner of the application for next time",
                    fic.name
                ),
                false,
            ),
            Ok(r) => failed(r.error()),
            Err(e) => failed(e),
        }
    }

    async fn remove_password(&self, s: &Subject, key: &str) -> Outcome {
        let sp = match self
            .read_service_principal(s, "id,appId,displayName,passwordCredentials,keyCredentials")
            .await
        {
            Ok(sp) => sp,
            Err(o) => return o,
        };
        let sp_id = sp["id"].as_str().unwrap_or_default().to_string();
        // The credential as Graph spells its keyId.
        let find = |v: &Value| {
            v["passwordCredentials"].as_array().and_then(|a| {
                a.iter()
                    .filter_map(|c| c["keyId"].as_str())
                    .find(|k| k.eq_ignore_ascii_case(key))
                    .map(str::to_string)
            })
        };
        let (owner, key, held) = if let Some(k) = find(&sp) {
            (
                CredentialOwner::ServicePrincipal(seg(&sp_id)),
                k,
                key_ids(&sp),
            )
        } else {
            let Some(app_id) = sp["appId"].as_str() else {
                return Outcome::already(format!("no credential {key} on the service principal"));
            };
            let app = match self
                .http
                .send(
                    Method::GET,
                    Api::Graph,
                    &format!(
                        "/v1.0/applications(appId='{}')?$select=id,passwordCredentials,keyCredentials",
                        seg(app_id)
                    ),
                    None,
                )
                .await
            {
                Ok(r) if r.ok() => r.body,
                // Not an app this tenant owns (or not visible): the SP had no such key either.
                Ok(r) if r.status == 404 => Value::Null,
                Ok(r) => return failed(r.error()),
                Err(e) => return failed(e),
            };
            let Some(k) = find(&app) else {
                return Outcome::already(format!(
                    "no credential {key} on the service principal or its application"
                ));
            };
            (
                CredentialOwner::Application(seg(app["id"].as_str().unwrap_or_default())),
                k,
                key_ids(&app),
            )
        };
        // What is left on the owner once this key is gone: verify's baseline.
        let credentials = Some(
            held.into_iter()
                .filter(|k| !k.eq_ignore_ascii_case(&key))
                .collect(),
        );
        let owner_path = owner.path();
        match self
            .http
            .call(
                Method::POST,
                Api::Graph,
                &format!("{owner_path}/removePassword"),
                Some(&json!({"keyId": key})),
            )
            .await
        {
            Ok(_) => Outcome::applied(
                format!("removed password credential {key}"),
                Some(AzureInverse::AddPassword { owner, credentials }.into()),
            ),
            Err(e) => failed(e),
        }
    }

    async fn remove_role_assignments(&self, principal: &str) -> Outcome {
        let subscriptions = if self.subscriptions.is_empty() {
            match self
                .http
                .call(
                    Method::GET,
                    Api::Arm,
                    "/subscriptions?api-version=2022-12-01",
                    None,
                )
                .await
            {
                Ok(r) => r.body["value"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s["subscriptionId"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(e) => return failed(e),
            }
        } else {
            self.subscriptions.clone()
        };
        let mut removed = Vec::new();
        let mut not_removed: Vec<(String, AzError)> = Vec::new();
        for sub in subscriptions {
            let filter = urlencoding::encode(&format!("assignedTo('{principal}')")).into_owned();
            let mut next = Some(format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter={filter}",
                seg(&sub)
            ));
            while let Some(path) = next.take() {
                let page = match self.http.call(Method::GET, Api::Arm, &path, None).await {
                    Ok(r) => r.body,
                    // A list that fails midway keeps what was already deleted (and its
                    // inverse), goes on with the next subscription, and fails the action.
                    Err(e) => {
                        not_removed.push((
                            format!(
                                "the rest of subscription {sub}'s role assignments (listing failed)"
                            ),
                            e,
                        ));
                        break;
                    }
                };
                for ra in page["value"].as_array().into_iter().flatten() {
                    let props = &ra["properties"];
                    // Principal ids are GUIDs: compare without regard to case.
                    if !props["principalId"]
                        .as_str()
                        .is_some_and(|p| p.eq_ignore_ascii_case(principal))
                    {
                        continue;
                    }
                    let Some(id) = ra["id"].as_str() else {
                        continue;
                    };
                    // One refused delete (403 at management-group scope, 409 ScopeLocked) does
                    // not stop the others.
                    match self
                        .http
                        .send(
                            Method::DELETE,
                            Api::Arm,
                            &format!("{id}?api-version=2022-04-01"),
                            None,
                        )
                        .await
                    {
                        Ok(r) if r.status == 200 => removed.push(json!({
                            "id": id,
                            "scope": props["scope"],
                            "roleDefinitionId": props["roleDefinitionId"],
                            "principalId": principal,
                        })),
                        Ok(r) if r.status == 204 => {} // already gone
                        Ok(r) => not_removed.push((id.to_string(), r.error())),
                        Err(e) => not_removed.push((id.to_string(), e)),
                    }
                }
                next = page["nextLink"].as_str().and_then(|l| {
                    l.strip_prefix(self.http.endpoints().arm.trim_end_matches('/'))
                        .map(str::to_string)
                });
            }
        }
        let inverse = (!removed.is_empty()).then(|| {
            Inverse::from(AzureInverse::RestoreRoleAssignments {
                assignments: removed.clone(),
            })
        });
        if let Some((_, first)) = not_removed.first() {
            let list: Vec<String> = not_removed
                .iter()
                .map(|(id, e)| format!("{id} ({}: {})", e.code, e.message))
                .collect();
            let mut o = Outcome::failed(
                first.code.clone(),
                format!(
                    "deleted {} role assignment(s); not deleted: {}",
                    removed.len(),
                    list.join("; ")
                ),
                not_removed.iter().any(|(_, e)| e.retryable),
            );
            o.inverse = inverse;
            return o;
        }
        if removed.is_empty() {
            return Outcome::already("the identity has no role assignments");
        }
        Outcome::applied(
            format!(
                "deleted {} role assignment(s); managed-identity tokens stay valid up to 24 h",
                removed.len()
            ),
            inverse,
        )
    }

    async fn update_alert(&self, id: &str, finding: &str, done: &[ActionResult]) -> Outcome {
        let path = format!("/v1.0/security/alerts_v2/{}", seg(id));
        let alert = match self.http.call(Method::GET, Api::Graph, &path, None).await {
            Ok(r) => r.body,
            Err(e) => return failed(e),
        };
        let status = alert["status"].as_str().unwrap_or("unknown").to_string();
        if status == "inProgress" || status == "resolved" {
            return Outcome::already(format!("the alert is already {status}"));
        }
        if let Err(e) = self
            .http
            .call(
                Method::PATCH,
                Api::Graph,
                &path,
                Some(&json!({"status": "inProgress"})),
            )
            .await
        {
            return failed(e);
        }
        let mine: Vec<String> = done
            .iter()
            .filter(|d| d.action.finding == finding)
            .map(|d| {
                format!(
                    "{} {}: {:?}",
                    d.action.kind.as_str(),
                    d.action.target.label(),
                    d.outcome.status
                )
            })
            .collect();
        let comment = json!({
            "@odata.type": "microsoft.graph.security.alertComment",
            "comment": format!("quell: {}", mine.join("; ")),
        });
        if let Err(e) = self
            .http
            .call(
                Method::POST,
                Api::Graph,
                &format!("{path}/comments"),
                Some(&comment),
            )
            .await
        {
            return failed(e);
        }
        Outcome::applied(
            "alert set inProgress with a comment of what quell did",
            Some(
                AzureInverse::AlertStatus {
                    id: id.to_string(),
                    status: json!(status),
                }
                .into(),
            ),
        )
    }
}
