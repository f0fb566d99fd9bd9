//! Executes the Azure actions of a plan through Graph and ARM. Every action reads before it
//! writes, so a second run reports `already_in_state`; one failure never stops the others.

use std::sync::Arc;

use quell_core::Cloud;
use quell_core::clock::{Clock, rfc3339_seconds};
use quell_core::model::{FindingRef, Subject};
use quell_core::plan::{Action, ActionKind, Context, Plan, Target};
use quell_core::policy::{Mode, Policy};
use quell_core::report::{ActionResult, Inverse, Outcome, Report};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::client::{Api, AzError, Http, seg};

/// A revocation this recent is taken as already covering the finding (re-deliveries, re-runs).
const RECENT_REVOCATION: time::Duration = time::Duration::minutes(10);

pub struct AzureExecutor {
    http: Http,
    policy: Policy,
    ctx: Context,
    clock: Arc<dyn Clock>,
    /// Subscriptions to search for a managed identity's role assignments.
    subscriptions: Vec<String>,
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
        for action in &plan.actions {
            let (outcome, escalation) = self.run(action, now, &results).await;
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
                        return self.disable_user(action, s).await;
                    }
                    (RevokeEntraSessions, Subject::EntraUser { .. }) => {
                        self.revoke_sessions(s, now).await
                    }
                    (ConfirmUserCompromised, Subject::EntraUser { .. }) => {
                        self.confirm_compromised(s).await
                    }
                    (DisableServicePrincipal, Subject::ServicePrincipal { id, .. }) => {
                        self.disable_service_principal(id).await
                    }
                    (
                        RemoveServicePrincipalCredential,
                        Subject::ServicePrincipal {
                            id,
                            key_id: Some(key),
                            ..
                        },
                    ) => self.remove_password(id, key).await,
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

    fn protected(&self, s: &Subject) -> Option<String> {
        quell_core::plan::protection_reason(&self.policy, &self.ctx, s)
    }

    /// The user's path segment: object id if known, else UPN.
    fn user_ref(s: &Subject) -> Option<String> {
        match s {
            Subject::EntraUser { id, name, .. } => id.clone().or_else(|| name.clone()),
            _ => None,
        }
    }

    async fn read_user(&self, s: &Subject, select: &str) -> Result<Value, Outcome> {
        let Some(u) = Self::user_ref(s) else {
            return Err(Outcome::skipped(
                "the user has neither an object id nor a UPN",
            ));
        };
        let r = self
            .http
            .call(
                Method::GET,
                Api::Graph,
                &format!("/v1.0/users/{}?$select={select}", seg(&u)),
                None,
            )
            .await
            .map_err(failed)?;
        // A protection pattern may name the UPN or id we only learn now.
        let learned = Subject::EntraUser {
            tenant: None,
            id: r.body["id"].as_str().map(str::to_string),
            name: r.body["userPrincipalName"].as_str().map(str::to_string),
            on_premises_synced: None,
        };
        if let Some(reason) = self.protected(&learned) {
            return Err(Outcome::skipped(reason));
        }
        Ok(r.body)
    }

    async fn disable_user(&self, action: &Action, s: &Subject) -> (Outcome, Option<ActionResult>) {
        let user = match self
            .read_user(
                s,
                "id,userPrincipalName,accountEnabled,onPremisesSyncEnabled",
            )
            .await
        {
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
            },
            outcome: Outcome::applied("escalated: disable the account in on-premises AD", None),
        });
        if user["accountEnabled"] == Value::Bool(false) {
            return (
                Outcome::already("the account is already disabled"),
                escalation,
            );
        }
        let outcome = match self
            .http
            .call(
                Method::PATCH,
                Api::Graph,
                &format!("/v1.0/users/{}", seg(&id)),
                Some(&json!({"accountEnabled": false})),
            )
            .await
        {
            Ok(_) => Outcome::applied(
                "accountEnabled = false",
                Some(Inverse {
                    call: "graph:PATCH /v1.0/users/{id}".into(),
                    params: json!({"id": id, "accountEnabled": true}),
                }),
            ),
            Err(e) => failed(e),
        };
        (outcome, escalation)
    }

    async fn revoke_sessions(&self, s: &Subject, now: OffsetDateTime) -> Outcome {
        let user = match self
            .read_user(s, "id,userPrincipalName,signInSessionsValidFromDateTime")
            .await
        {
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

    async fn confirm_compromised(&self, s: &Subject) -> Outcome {
        // Always read first: the user's UPN may match a protection pattern.
        let id = match self.read_user(s, "id,userPrincipalName").await {
            Ok(u) => u["id"].as_str().unwrap_or_default().to_string(),
            Err(o) => return o,
        };
        let risky = self
            .http
            .send(
                Method::GET,
                Api::Graph,
                &format!("/v1.0/identityProtection/riskyUsers/{}", seg(&id)),
                None,
            )
            .await;
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
                Some(Inverse {
                    call: "graph:POST /v1.0/identityProtection/riskyUsers/dismiss".into(),
                    params: json!({"userIds": [id]}),
                }),
            ),
            Err(e) => failed(e),
        }
    }

    async fn disable_service_principal(&self, id: &str) -> Outcome {
        let sp = match self
            .http
            .call(
                Method::GET,
                Api::Graph,
                &format!(
                    "/v1.0/servicePrincipals/{}?$select=id,appId,displayName,accountEnabled",
                    seg(id)
                ),
                None,
            )
            .await
        {
            Ok(r) => r.body,
            Err(e) => return failed(e),
        };
        let learned = Subject::ServicePrincipal {
            tenant: None,
            id: sp["appId"].as_str().unwrap_or(id).to_string(),
            name: sp["displayName"].as_str().map(str::to_string),
            key_id: None,
        };
        if let Some(reason) = self.protected(&learned) {
            return Outcome::skipped(reason);
        }
        if sp["accountEnabled"] == Value::Bool(false) {
            return Outcome::already("the service principal is already disabled");
        }
        match self
            .http
            .call(
                Method::PATCH,
                Api::Graph,
                &format!("/v1.0/servicePrincipals/{}", seg(id)),
                Some(&json!({"accountEnabled": false})),
            )
            .await
        {
            Ok(_) => Outcome::applied(
                "accountEnabled = false",
                Some(Inverse {
                    call: "graph:PATCH /v1.0/servicePrincipals/{id}".into(),
                    params: json!({"id": id, "accountEnabled": true}),
                }),
            ),
            Err(e) => failed(e),
        }
    }

    /// Removes one password credential, on the service principal or on its application.
    async fn remove_password(&self, sp_id: &str, key: &str) -> Outcome {
        let sp = match self
            .http
            .call(
                Method::GET,
                Api::Graph,
                &format!(
                    "/v1.0/servicePrincipals/{}?$select=id,appId,passwordCredentials",
                    seg(sp_id)
                ),
                None,
            )
            .await
        {
            Ok(r) => r.body,
            Err(e) => return failed(e),
        };
        let has = |v: &Value| {
            v["passwordCredentials"]
                .as_array()
                .is_some_and(|a| a.iter().any(|c| c["keyId"] == key))
        };
        let owner_path = if has(&sp) {
            format!("/v1.0/servicePrincipals/{}", seg(sp_id))
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
                        "/v1.0/applications(appId='{}')?$select=id,passwordCredentials",
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
            if !has(&app) {
                return Outcome::already(format!(
                    "no credential {key} on the service principal or its application"
                ));
            }
            format!(
                "/v1.0/applications/{}",
                seg(app["id"].as_str().unwrap_or_default())
            )
        };
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
                Some(Inverse {
                    call: format!("graph:POST {owner_path}/addPassword"),
                    params: json!({"note": "a removed secret cannot be restored; add a new one and distribute it"}),
                }),
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
        for sub in subscriptions {
            let filter = urlencoding::encode(&format!("assignedTo('{principal}')")).into_owned();
            let mut next = Some(format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter={filter}",
                seg(&sub)
            ));
            while let Some(path) = next.take() {
                let page = match self.http.call(Method::GET, Api::Arm, &path, None).await {
                    Ok(r) => r.body,
                    Err(e) => return failed(e),
                };
                for ra in page["value"].as_array().into_iter().flatten() {
                    let props = &ra["properties"];
                    if props["principalId"] != principal {
                        continue;
                    }
                    let Some(id) = ra["id"].as_str() else {
                        continue;
                    };
                    let r = match self
                        .http
                        .send(
                            Method::DELETE,
                            Api::Arm,
                            &format!("{id}?api-version=2022-04-01"),
                            None,
                        )
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => return failed(e),
                    };
                    match r.status {
                        200 => removed.push(json!({
                            "id": id,
                            "scope": props["scope"],
                            "roleDefinitionId": props["roleDefinitionId"],
                            "principalId": principal,
                        })),
                        204 => {} // already gone
                        _ => return failed(r.error()),
                    }
                }
                next = page["nextLink"].as_str().and_then(|l| {
                    l.strip_prefix(self.http.endpoints().arm.trim_end_matches('/'))
                        .map(str::to_string)
                });
            }
        }
        if removed.is_empty() {
            return Outcome::already("the identity has no role assignments");
        }
        Outcome::applied(
            format!(
                "deleted {} role assignment(s); managed-identity tokens stay valid up to 24 h",
                removed.len()
            ),
            Some(Inverse {
                call: "arm:PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
                    .into(),
                params: json!({"assignments": removed}),
            }),
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
            Some(Inverse {
                call: "graph:PATCH /v1.0/security/alerts_v2/{id}".into(),
                params: json!({"id": id, "status": status}),
            }),
        )
    }
}
