//! Undoing and re-checking quell's Azure containment, from the ledger.
//!
//! - [`release`] runs the inverse of each action an entry recorded, newest first, reading before
//!   each write: the account or service principal is re-enabled, the role assignments quell
//!   removed are put back under their original names (ARM `PUT` of a role assignment is
//!   idempotent by name; `409 RoleAssignmentExists` means it is already back), a user quell
//!   confirmed compromised is dismissed. What cannot be restored is said so: a removed secret
//!   (Graph `removePassword` is final; a new one must be added and distributed) and revoked
//!   sessions (users sign in again).
//! - [`verify`] checks that the containment still holds and looks for what appeared since it
//!   began: an account or service principal enabled again, a removed role assignment back, a
//!   password credential added to the service principal or its application after the
//!   containment. With `fix`, it contains that again and says it is attacker persistence (or a
//!   human who did not use `release`).

use quell_core::plan::ActionKind;
use quell_core::report::{AzureInverse, Inverse, Outcome, Status};
use quell_ledger::{Entry, Recorded, Step, refused};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::client::{Api, AzError, Http};

fn failed(e: AzError) -> Outcome {
    Outcome::failed(e.code.clone(), e.message.clone(), e.retryable)
}

/// The Graph path of the object an enable inverse re-enables.
fn enable_path(inverse: &AzureInverse) -> Option<String> {
    match inverse {
        AzureInverse::EnableUser { id } => Some(format!("/v1.0/users/{}", crate::client::seg(id))),
        AzureInverse::EnableServicePrincipal { id, .. } => Some(format!(
            "/v1.0/servicePrincipals/{}",
            crate::client::seg(id)
        )),
        AzureInverse::DismissRisk { .. }
        | AzureInverse::AddPassword { .. }
        | AzureInverse::RestoreRoleAssignments { .. }
        | AzureInverse::RestoreFederatedCredential { .. }
        | AzureInverse::AlertStatus { .. } => None,
    }
}

/// The Graph path of an application's federated credentials, by appId.
fn federated_path(app_id: &str) -> String {
    format!(
        "/v1.0/applications(appId='{}')/federatedIdentityCredentials",
        crate::client::seg(app_id)
    )
}

/// The federated credentials of the application that trust exactly `issuer` and `subject`.
async fn matching_federated(
    http: &Http,
    app_id: &str,
    fic: &quell_core::links::FederatedCredential,
) -> Result<Vec<String>, Outcome> {
    let list = http
        .call(Method::GET, Api::Graph, &federated_path(app_id), None)
        .await
        .map_err(failed)?;
    Ok(list.body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["issuer"].as_str() == Some(fic.issuer.as_str())
                && c["subject"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&fic.subject))
        })
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect())
}

/// Recreates a federated credential quell removed: a grant, so only for a human, only on the
/// entry's own application, and only in the shape quell removes (an AWS account's outbound
/// issuer, a role ARN as subject, Entra's token-exchange audience). A row cannot make quell
/// trust another issuer or subject on any application.
async fn restore_federated_credential(
    http: &Http,
    entry: &Entry,
    app_id: &str,
    fic: &quell_core::links::FederatedCredential,
) -> Outcome {
    match is_own(http, entry, app_id).await {
        Ok(true) => {}
        Ok(false) => {
            return refused(format!(
                "application {app_id} is not the entry's principal {}",
                entry.principal
            ));
        }
        Err(o) => return o,
    }
    let shape_ok = quell_core::links::is_aws_outbound_issuer(&fic.issuer)
        && fic.subject.starts_with("arn:aws")
        && fic.subject.contains(":role/")
        && fic.audiences == ["api://AzureADTokenExchange"]
        && !fic.name.is_empty()
        && fic.name.len() <= 120
        && fic
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !shape_ok {
        return refused(format!(
            "the recorded federated credential {:?} is not one quell removes (issuer {}, subject {}, audiences {:?}): nothing recreated",
            fic.name, fic.issuer, fic.subject, fic.audiences
        ));
    }
    match matching_federated(http, app_id, fic).await {
        Ok(found) if !found.is_empty() => {
            return Outcome::already("the application already trusts this role's tokens again");
        }
        Ok(_) => {}
        Err(o) => return o,
    }
    let mut body = json!({
        "name": fic.name,
        "issuer": fic.issuer,
        "subject": fic.subject,
        "audiences": fic.audiences,
    });
    if let Some(d) = &fic.description {
        body["description"] = json!(d);
    }
    match http
        .call(
            Method::POST,
            Api::Graph,
            &federated_path(app_id),
            Some(&body),
        )
        .await
    {
        Ok(_) => Outcome::applied(
            format!(
                "recreated the federated credential {:?}: the role {} can sign in as the application again",
                fic.name, fic.subject
            ),
            None,
        ),
        Err(e) => failed(e),
    }
}

/// Who a release runs for: a human (`quell release`, a release runbook) or quell itself
/// (`release_after_hours`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Releaser {
    Human,
    /// The automatic release puts back no role assignment: granting access is left to a
    /// human's identity, never to the function's (which needs no write on role assignments).
    Automatic,
}

/// Runs the inverses an entry recorded, newest first.
pub async fn release(http: &Http, entry: &Entry, by: Releaser) -> Vec<Step> {
    let mut steps = Vec::new();
    for r in entry.actions.iter().rev() {
        if r.status != Status::Applied {
            continue;
        }
        let what = format!("undo {} {}", r.kind.as_str(), r.target.label());
        let outcome = undo(http, entry, r, by).await;
        steps.push(Step { what, outcome });
    }
    steps
}

/// Whether the object `id` an inverse names is the entry's own principal: its object id, or
/// (an entry keyed by UPN or by a service principal's appId) the object Graph says it is.
async fn is_own(http: &Http, entry: &Entry, id: &str) -> Result<bool, Outcome> {
    use quell_core::key::{AzureKind, PrincipalKey};
    let Some((kind, key)) = PrincipalKey::parse(&entry.principal)
        .as_ref()
        .and_then(|k| k.azure_parts().map(|(k, i)| (k, i.to_string())))
    else {
        return Ok(false);
    };
    if key.eq_ignore_ascii_case(id) {
        return Ok(true);
    }
    let path = match kind {
        // A UPN key: the user's object id.
        AzureKind::User if key.contains('@') => {
            format!("/v1.0/users/{}?$select=id", crate::client::seg(&key))
        }
        // A service principal keyed by appId: the object's appId.
        AzureKind::ServicePrincipal => format!(
            "/v1.0/servicePrincipals/{}?$select=id,appId",
            crate::client::seg(id)
        ),
        _ => return Ok(false),
    };
    let body = match http.call(Method::GET, Api::Graph, &path, None).await {
        Ok(r) => r.body,
        Err(e) if e.status == 404 => return Ok(false),
        Err(e) => return Err(failed(e)),
    };
    Ok(match kind {
        AzureKind::ServicePrincipal => body["appId"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(&key)),
        _ => body["id"]
            .as_str()
            .is_some_and(|i| i.eq_ignore_ascii_case(id)),
    })
}

async fn undo(http: &Http, entry: &Entry, r: &Recorded, by: Releaser) -> Outcome {
    let inverse = match &r.inverse {
        None => {
            return match r.kind {
                ActionKind::RevokeEntraSessions => {
                    Outcome::skipped("revoked sessions cannot be restored: the user signs in again")
                }
                _ => Outcome::skipped("nothing to undo: the action recorded no inverse"),
            };
        }
        Some(Inverse::Azure(z)) => z,
        Some(Inverse::Aws(_)) => {
            return Outcome::skipped("not an Azure action's inverse; nothing done on Azure");
        }
        Some(Inverse::Unknown(raw)) => {
            return Outcome::skipped(format!(
                "no release for {}: the ledger entry holds a call quell never records; nothing done",
                raw.call
            ));
        }
    };
    match inverse {
        AzureInverse::AddPassword { .. } => Outcome::skipped(
            "cannot be restored: a removed secret is gone; add a new one (addPassword) and distribute it",
        ),
        AzureInverse::AlertStatus { .. } => {
            Outcome::skipped("the Defender alert's status is left as it is")
        }
        AzureInverse::RestoreFederatedCredential { .. } if by == Releaser::Automatic => {
            Outcome::skipped(
                "a federated credential is access: only a human's release (quell release) recreates it",
            )
        }
        AzureInverse::RestoreFederatedCredential { app_id, credential } => {
            restore_federated_credential(http, entry, app_id, credential).await
        }
        AzureInverse::DismissRisk { .. } if by == Releaser::Automatic => Outcome::skipped(
            "the automatic release leaves the user's risk state for a human to dismiss",
        ),
        AzureInverse::DismissRisk { user_ids } => {
            let [only] = user_ids.as_slice() else {
                return refused(format!(
                    "the recorded dismissal names {} users; quell confirms one, the entry's own",
                    user_ids.len()
                ));
            };
            match is_own(http, entry, only).await {
                Ok(true) => {}
                Ok(false) => {
                    return refused(format!(
                        "user {only} is not the entry's principal {}",
                        entry.principal
                    ));
                }
                Err(o) => return o,
            }
            match http
                .call(
                    Method::POST,
                    Api::Graph,
                    "/v1.0/identityProtection/riskyUsers/dismiss",
                    Some(&json!({"userIds": user_ids})),
                )
                .await
            {
                Ok(_) => Outcome::applied("dismissed the user's risk", None),
                Err(e) => failed(e),
            }
        }
        AzureInverse::RestoreRoleAssignments { assignments } => {
            if by == Releaser::Automatic {
                return Outcome::skipped(
                    "role assignments are not put back automatically: run quell release under your own identity to restore them",
                );
            }
            restore_assignments(http, entry, assignments).await
        }
        AzureInverse::EnableUser { id } | AzureInverse::EnableServicePrincipal { id, .. } => {
            // Re-enable only the entry's own principal, whatever object the row names.
            match is_own(http, entry, id).await {
                Ok(true) => {}
                Ok(false) => {
                    return refused(format!(
                        "object {id} is not the entry's principal {}",
                        entry.principal
                    ));
                }
                Err(o) => return o,
            }
            let Some(path) = enable_path(inverse) else {
                return Outcome::skipped("nothing to re-enable");
            };
            // Re-enable: read first, so a second release reports already_in_state.
            let current = match http
                .call(
                    Method::GET,
                    Api::Graph,
                    &format!("{path}?$select=id,accountEnabled"),
                    None,
                )
                .await
            {
                Ok(r) => r.body,
                Err(e) => return failed(e),
            };
            if current["accountEnabled"] == Value::Bool(true) {
                return Outcome::already("already enabled");
            }
            match http
                .call(
                    Method::PATCH,
                    Api::Graph,
                    &path,
                    Some(&json!({"accountEnabled": true})),
                )
                .await
            {
                Ok(_) => Outcome::applied("accountEnabled = true", None),
                Err(e) => failed(e),
            }
        }
    }
}

/// Puts back the role assignments quell removed, under their original ids.
async fn restore_assignments(http: &Http, entry: &Entry, assignments: &[Value]) -> Outcome {
    // Only the contained identity's own assignments come back: the ledger is data, and a
    // release must never grant a role to anyone else.
    let own = quell_core::key::PrincipalKey::parse(&entry.principal)
        .and_then(|k| k.azure_parts().map(|(_, id)| id.to_string()))
        .unwrap_or_default();
    let mut restored = Vec::new();
    let mut already = Vec::new();
    let mut refused = Vec::new();
    for a in assignments {
        let (Some(id), Some(role), Some(principal)) = (
            a["id"].as_str(),
            a["roleDefinitionId"].as_str(),
            a["principalId"].as_str(),
        ) else {
            continue;
        };
        if principal.to_ascii_lowercase() != own {
            refused.push(id);
            continue;
        }
        // Role Assignments - Create: PUT {scope}/providers/Microsoft.Authorization/
        // roleAssignments/{name}; 409 RoleAssignmentExists when it is already there.
        match http
            .send(
                Method::PUT,
                Api::Arm,
                &format!("{id}?api-version=2022-04-01"),
                Some(&json!({"properties": {"roleDefinitionId": role, "principalId": principal}})),
            )
            .await
        {
            Ok(r) if r.ok() => restored.push(id.to_string()),
            Ok(r) if r.status == 409 => already.push(id.to_string()),
            Ok(r) => return failed(r.error()),
            Err(e) => return failed(e),
        }
    }
    if !refused.is_empty() {
        return Outcome::skipped(format!(
            "refused to restore {} role assignment(s) recorded for another principal than {} ({}): the ledger entry is not quell's; restored {}",
            refused.len(),
            entry.principal,
            refused.join(", "),
            restored.len()
        ));
    }
    if restored.is_empty() {
        return Outcome::already(format!(
            "{} role assignment(s) already in place",
            already.len()
        ));
    }
    Outcome::applied(
        format!("restored {} role assignment(s)", restored.len()),
        None,
    )
}

/// The subject Graph's copy of a user or service principal describes, for the protection check.
fn as_subject(kind: ActionKind, body: &Value) -> quell_core::model::Subject {
    let text = |k: &str| body[k].as_str().map(str::to_string);
    match kind {
        ActionKind::DisableServicePrincipal => quell_core::model::Subject::ServicePrincipal {
            tenant: None,
            id: text("id").unwrap_or_default(),
            app_id: text("appId"),
            name: text("displayName"),
            key_id: None,
        },
        _ => quell_core::model::Subject::EntraUser {
            tenant: None,
            id: text("id"),
            name: text("userPrincipalName"),
            on_premises_synced: None,
        },
    }
}

/// Why a principal must not be written, if it must not (`plan::protection_reason` under the
/// policy and the identities quell runs as).
pub type Protected<'a> = &'a (dyn Fn(&quell_core::model::Subject) -> Option<String> + Sync);

/// Checks that the containment the entries recorded still holds, and looks for what appeared
/// since. With `fix`, contains it again.
///
/// It writes only to the entry's own principal (an object a row names is checked against the
/// entry's key through Graph), never to a protected one (read first, so a UPN or id only Graph
/// knows is matched too), and "since containment" is never earlier than the store's own time of
/// the row's last write (Table Storage's `Timestamp`), so a row cannot date the containment back
/// to make every secret look new.
pub async fn verify(
    http: &Http,
    entries: &[Entry],
    fix: bool,
    protected: Protected<'_>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let would = |what: &str| Outcome::dry_run(format!("would {what}; pass --yes"));
    for e in entries.iter().filter(|e| e.in_force()) {
        let at = quell_core::clock::parse_rfc3339(&e.at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let since = match e
            .stored_at
            .as_deref()
            .and_then(quell_core::clock::parse_rfc3339)
        {
            Some(stored) => at.max(stored),
            None => at,
        };
        for r in &e.actions {
            if !matches!(r.status, Status::Applied | Status::AlreadyInState) {
                continue;
            }
            let Some(Inverse::Azure(inverse)) = &r.inverse else {
                continue;
            };
            if matches!(
                r.kind,
                ActionKind::DisableEntraUser | ActionKind::DisableServicePrincipal
            ) && let Some(path) = enable_path(inverse)
            {
                let object = match inverse {
                    AzureInverse::EnableUser { id }
                    | AzureInverse::EnableServicePrincipal { id, .. } => id.as_str(),
                    _ => "",
                };
                match is_own(http, e, object).await {
                    Ok(true) => {}
                    Ok(false) => {
                        steps.push(Step {
                            what: format!("{} {}", r.kind.as_str(), r.target.label()),
                            outcome: refused(format!(
                                "object {object} is not the entry's principal {}",
                                e.principal
                            )),
                        });
                        continue;
                    }
                    Err(o) => {
                        steps.push(Step {
                            what: format!("{} {}", r.kind.as_str(), r.target.label()),
                            outcome: o,
                        });
                        continue;
                    }
                }
                let outcome = match http
                    .call(
                        Method::GET,
                        Api::Graph,
                        &format!(
                            "{path}?$select=id,accountEnabled,userPrincipalName,appId,displayName"
                        ),
                        None,
                    )
                    .await
                {
                    Ok(cur) if cur.body["accountEnabled"] == Value::Bool(false) => {
                        Outcome::already("still disabled")
                    }
                    Ok(cur) if let Some(why) = protected(&as_subject(r.kind, &cur.body)) => {
                        Outcome::skipped(format!(
                            "enabled since the containment, but protected ({why}): the check reports and changes nothing"
                        ))
                    }
                    Ok(_) if fix => match http
                        .call(
                            Method::PATCH,
                            Api::Graph,
                            &path,
                            Some(&json!({"accountEnabled": false})),
                        )
                        .await
                    {
                        Ok(_) => Outcome::applied(
                            "attacker persistence: enabled again since the containment; disabled again",
                            None,
                        ),
                        Err(e) => failed(e),
                    },
                    Ok(_) => would("disable it again: it was enabled since the containment"),
                    Err(e) => failed(e),
                };
                steps.push(Step {
                    what: format!("{} {}", r.kind.as_str(), r.target.label()),
                    outcome,
                });
                if r.kind == ActionKind::DisableEntraUser {
                    steps.extend(new_auth_methods(http, &path, since).await);
                }
                if r.kind == ActionKind::DisableServicePrincipal {
                    // An empty baseline is no baseline: a row cannot make every federated
                    // credential, secret or certificate look new.
                    let (federated, credentials) = match inverse {
                        AzureInverse::EnableServicePrincipal {
                            federated_credentials,
                            credentials,
                            ..
                        } => (
                            federated_credentials.clone().filter(|b| !b.is_empty()),
                            credentials.clone().filter(|b| !b.is_empty()),
                        ),
                        _ => (None, None),
                    };
                    let baselines = Baselines {
                        federated: federated.as_deref(),
                        credentials: credentials.as_deref(),
                    };
                    steps.extend(sp_persistence(http, &path, since, fix, baselines).await);
                }
            }
            if r.kind == ActionKind::RemoveFederatedCredential
                && let AzureInverse::RestoreFederatedCredential { app_id, credential } = inverse
            {
                let what = format!("{} {}", r.kind.as_str(), r.target.label());
                let own = match is_own(http, e, app_id).await {
                    Ok(own) => own,
                    Err(o) => {
                        steps.push(Step { what, outcome: o });
                        continue;
                    }
                };
                if !own {
                    steps.push(Step {
                        what,
                        outcome: refused(format!(
                            "application {app_id} is not the entry's principal {}",
                            e.principal
                        )),
                    });
                    continue;
                }
                let outcome = match matching_federated(http, app_id, credential).await {
                    Err(o) => o,
                    Ok(back) if back.is_empty() => {
                        Outcome::already("no federated credential trusts the role's tokens")
                    }
                    Ok(back) if !fix => would(&format!(
                        "remove {} federated credential(s) that trust the contained role again",
                        back.len()
                    )),
                    Ok(back) => {
                        let mut outcome = Outcome::applied(
                            "attacker persistence: a federated credential trusting the contained role came back; removed again",
                            None,
                        );
                        for id in back {
                            let path =
                                format!("{}/{}", federated_path(app_id), crate::client::seg(&id));
                            if let Err(err) =
                                http.call(Method::DELETE, Api::Graph, &path, None).await
                            {
                                outcome = failed(err);
                                break;
                            }
                        }
                        outcome
                    }
                };
                steps.push(Step { what, outcome });
            }
            if r.kind == ActionKind::RemoveRoleAssignments
                && let AzureInverse::RestoreRoleAssignments { assignments } = inverse
            {
                let own = quell_core::key::PrincipalKey::parse(&e.principal)
                    .and_then(|k| k.azure_parts().map(|(_, i)| i.to_string()))
                    .unwrap_or_default();
                for a in assignments {
                    let Some(id) = a["id"].as_str() else { continue };
                    let path = format!("{id}?api-version=2022-04-01");
                    let outcome = match http.send(Method::GET, Api::Arm, &path, None).await {
                        Ok(g) if g.status == 404 => Outcome::already("still removed"),
                        // Only the contained identity's own assignment is removed again: a row
                        // naming anyone else's is refused, and it stays.
                        Ok(g)
                            if g.ok()
                                && !g.body["properties"]["principalId"]
                                    .as_str()
                                    .is_some_and(|p| p.eq_ignore_ascii_case(&own)) =>
                        {
                            refused(format!("role assignment {id} is not {}'s", e.principal))
                        }
                        Ok(g) if g.ok() && fix => {
                            match http.send(Method::DELETE, Api::Arm, &path, None).await {
                                Ok(d) if d.ok() => Outcome::applied(
                                    "attacker persistence: the role assignment was back; removed again",
                                    None,
                                ),
                                Ok(d) => failed(d.error()),
                                Err(e) => failed(e),
                            }
                        }
                        Ok(g) if g.ok() => would("remove the role assignment, which is back"),
                        Ok(g) => failed(g.error()),
                        Err(e) => failed(e),
                    };
                    steps.push(Step {
                        what: format!("role assignment {id}"),
                        outcome,
                    });
                }
                steps.extend(new_assignments(http, e, &json!(assignments), since, fix).await);
            }
            if let AzureInverse::AddPassword { owner, credentials } = inverse {
                let known = credentials.clone().filter(|b| !b.is_empty());
                steps.extend(new_secrets(http, &owner.path(), since, fix, known.as_deref()).await);
            }
        }
    }
    steps
}

/// Authentication methods registered to a contained user since its containment (the
/// authenticationMethod `createdDateTime`; methods that carry none cannot be judged): an
/// attacker's own MFA would let them back in after a release. Reported for a human, never
/// deleted: deleting needs `UserAuthenticationMethod.ReadWrite.All`, which can also create
/// Temporary Access Passes, and quell holds only the read permission.
async fn new_auth_methods(http: &Http, user: &str, since: OffsetDateTime) -> Vec<Step> {
    let user = user.split('?').next().unwrap_or(user);
    let what = format!("authentication methods of {user}");
    let body = match http
        .call(
            Method::GET,
            Api::Graph,
            &format!("{user}/authentication/methods"),
            None,
        )
        .await
    {
        Ok(r) => r.body,
        Err(e) if e.status == 403 => {
            return vec![Step {
                what,
                outcome: Outcome::skipped(
                    "not checked: grant the identity UserAuthenticationMethod.Read.All so verify can see methods registered after the containment",
                ),
            }];
        }
        Err(e) => {
            return vec![Step {
                what,
                outcome: failed(e),
            }];
        }
    };
    let new: Vec<String> = body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["createdDateTime"]
                .as_str()
                .and_then(quell_core::clock::parse_rfc3339)
                .is_some_and(|c| c > since)
        })
        .map(|m| {
            format!(
                "{} {}",
                m["@odata.type"]
                    .as_str()
                    .unwrap_or("method")
                    .trim_start_matches("#microsoft.graph."),
                m["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let outcome = if new.is_empty() {
        Outcome::already("no authentication method registered since the containment")
    } else {
        Outcome::skipped(format!(
            "attacker persistence? registered after the containment: {}; review and remove them before release (quell only reads authentication methods)",
            new.join(", ")
        ))
    };
    vec![Step { what, outcome }]
}

/// Role assignments given to a contained managed identity since its containment (ARM records
/// `createdOn`), in the subscriptions quell removed its assignments from: the attacker's way
/// back. Removed with `fix`, as the containment removed the others. Role Assignments - List For
/// Subscription with `$filter=assignedTo('{objectId}')`, then Delete.
async fn new_assignments(
    http: &Http,
    entry: &Entry,
    recorded: &Value,
    since: OffsetDateTime,
    fix: bool,
) -> Vec<Step> {
    let own = quell_core::key::PrincipalKey::parse(&entry.principal)
        .and_then(|k| k.azure_parts().map(|(_, id)| id.to_string()))
        .unwrap_or_default();
    let principal = own.as_str();
    let known: Vec<&str> = recorded
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str())
        .collect();
    let mut subscriptions: Vec<&str> = known
        .iter()
        .filter_map(|id| id.strip_prefix("/subscriptions/"))
        .filter_map(|rest| rest.split('/').next())
        .collect();
    subscriptions.sort();
    subscriptions.dedup();
    let filter = urlencoding::encode(&format!("assignedTo('{principal}')")).into_owned();
    let mut steps = Vec::new();
    for sub in subscriptions {
        let mut next = Some(format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&$filter={filter}",
            crate::client::seg(sub)
        ));
        while let Some(path) = next.take() {
            let page = match http.call(Method::GET, Api::Arm, &path, None).await {
                Ok(r) => r.body,
                Err(e) => {
                    steps.push(Step {
                        what: format!("role assignments in subscription {sub}"),
                        outcome: failed(e),
                    });
                    break;
                }
            };
            for ra in page["value"].as_array().into_iter().flatten() {
                let props = &ra["properties"];
                let Some(id) = ra["id"].as_str() else {
                    continue;
                };
                let created = props["createdOn"]
                    .as_str()
                    .and_then(quell_core::clock::parse_rfc3339);
                if !props["principalId"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case(principal))
                    || known.iter().any(|k| k.eq_ignore_ascii_case(id))
                    || created.is_none_or(|c| c <= since)
                {
                    continue;
                }
                let outcome = if fix {
                    let path = format!("{id}?api-version=2022-04-01");
                    match http.send(Method::DELETE, Api::Arm, &path, None).await {
                        Ok(d) if d.ok() => Outcome::applied(
                            "attacker persistence: created after the containment; removed",
                            None,
                        ),
                        Ok(d) => failed(d.error()),
                        Err(e) => failed(e),
                    }
                } else {
                    Outcome::dry_run("would remove it: created after the containment; pass --yes")
                };
                steps.push(Step {
                    what: format!("role assignment {id}"),
                    outcome,
                });
            }
            next = page["nextLink"].as_str().and_then(|l| {
                l.strip_prefix(http.endpoints().arm.trim_end_matches('/'))
                    .map(str::to_string)
            });
        }
    }
    steps
}

/// What a disabled service principal gained since its containment that would outlive a release:
/// secrets (removed) and certificates (reported) on it and on its application, and the
/// application's federated credentials: those not in the `baseline` quell read at containment
/// are deleted; without a baseline they are listed for review (Graph records no creation time
/// for them). Graph: servicePrincipal and application `passwordCredentials`/`keyCredentials`
/// (`startDateTime`), `removePassword`, `applications(appId='…')`,
/// `federatedIdentityCredentials` (list, delete).
/// What quell read of a service principal and its application at containment: the federated
/// credential ids, and the key ids of every secret and certificate.
#[derive(Clone, Copy)]
struct Baselines<'a> {
    federated: Option<&'a [String]>,
    credentials: Option<&'a [String]>,
}

async fn sp_persistence(
    http: &Http,
    sp: &str,
    since: OffsetDateTime,
    fix: bool,
    baselines: Baselines<'_>,
) -> Vec<Step> {
    let (baseline, known) = (baselines.federated, baselines.credentials);
    let sp_path = sp.split('?').next().unwrap_or(sp);
    let body = match http
        .call(
            Method::GET,
            Api::Graph,
            &format!("{sp_path}?$select=id,appId,passwordCredentials,keyCredentials"),
            None,
        )
        .await
    {
        Ok(r) => r.body,
        Err(e) => {
            return vec![Step {
                what: format!("credentials of {sp_path}"),
                outcome: failed(e),
            }];
        }
    };
    let mut steps = secrets_since(http, sp_path, &body, since, fix, known).await;
    steps.extend(certificates_since(sp_path, &body, since, known));
    let Some(app_id) = body["appId"].as_str() else {
        return steps;
    };
    let app = match http
        .call(
            Method::GET,
            Api::Graph,
            &format!(
                "/v1.0/applications(appId='{}')?$select=id,passwordCredentials,keyCredentials",
                crate::client::seg(app_id)
            ),
            None,
        )
        .await
    {
        Ok(r) => r.body,
        // A multi-tenant app's registration lives in its home tenant; with
        // Application.ReadWrite.OwnedBy quell reads only apps it owns.
        Err(e) if matches!(e.status, 403 | 404) => {
            steps.push(Step {
                what: format!("application {app_id}"),
                outcome: Outcome::skipped(format!(
                    "not readable here ({}): check its secrets, certificates and federated credentials by hand",
                    e.status
                )),
            });
            return steps;
        }
        Err(e) => {
            steps.push(Step {
                what: format!("application {app_id}"),
                outcome: failed(e),
            });
            return steps;
        }
    };
    let Some(object) = app["id"].as_str() else {
        return steps;
    };
    let app_path = format!("/v1.0/applications/{}", crate::client::seg(object));
    steps.extend(secrets_since(http, &app_path, &app, since, fix, known).await);
    steps.extend(certificates_since(&app_path, &app, since, known));
    match http
        .call(
            Method::GET,
            Api::Graph,
            &format!("{app_path}/federatedIdentityCredentials"),
            None,
        )
        .await
    {
        Ok(r) => {
            let fics: Vec<&Value> = r.body["value"].as_array().into_iter().flatten().collect();
            let label = |f: &Value| {
                format!(
                    "{} (issuer {}, subject {})",
                    f["name"].as_str().unwrap_or("?"),
                    f["issuer"].as_str().unwrap_or("?"),
                    f["subject"].as_str().unwrap_or("?")
                )
            };
            match baseline {
                Some(known) => {
                    for f in fics {
                        let Some(fid) = f["id"].as_str() else { continue };
                        if known.iter().any(|k| k.eq_ignore_ascii_case(fid)) {
                            continue;
                        }
                        let what = format!("federated credential {}", label(f));
                        let outcome = if fix {
                            let path = format!(
                                "{app_path}/federatedIdentityCredentials/{}",
                                crate::client::seg(fid)
                            );
                            match http.call(Method::DELETE, Api::Graph, &path, None).await {
                                Ok(_) => Outcome::applied(
                                    "attacker persistence: added after the containment; deleted",
                                    None,
                                ),
                                Err(e) => failed(e),
                            }
                        } else {
                            Outcome::dry_run(
                                "would delete it: added after the containment; pass --yes",
                            )
                        };
                        steps.push(Step { what, outcome });
                    }
                }
                None if !fics.is_empty() => steps.push(Step {
                    what: format!("federated credentials of {app_path}"),
                    outcome: Outcome::skipped(format!(
                        "review before release: quell could not read them at containment and Graph records no creation time, so it cannot tell whether these were added since: {}",
                        fics.iter().map(|f| label(f)).collect::<Vec<_>>().join("; ")
                    )),
                }),
                None => {}
            }
        }
        Err(e) => steps.push(Step {
            what: format!("federated credentials of {app_path}"),
            outcome: failed(e),
        }),
    }
    steps
}

/// Whether a credential in `c` is new since the containment: a key id not in quell's baseline
/// (`known`), or, without one, a `startDateTime` after `since`. Graph lets whoever adds a
/// credential choose its `startDateTime`, so only the baseline lets quell act; a credential
/// dated new without a baseline is reported, never removed.
fn is_new(c: &Value, since: OffsetDateTime, known: Option<&[String]>) -> bool {
    match known {
        Some(ids) => c["keyId"]
            .as_str()
            .is_some_and(|k| !ids.iter().any(|i| i.eq_ignore_ascii_case(k))),
        None => c["startDateTime"]
            .as_str()
            .and_then(quell_core::clock::parse_rfc3339)
            .is_some_and(|s| s > since),
    }
}

/// Certificates (`keyCredentials`) added to `owner` since the containment. quell reports them:
/// Graph's `removeKey` needs a proof signed by one of the object's existing keys, which an
/// app-only caller does not hold.
fn certificates_since(
    owner: &str,
    body: &Value,
    since: OffsetDateTime,
    known: Option<&[String]>,
) -> Vec<Step> {
    body["keyCredentials"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| is_new(c, since, known))
        .map(|c| Step {
            what: format!(
                "certificate {} on {owner}",
                c["keyId"].as_str().unwrap_or("?")
            ),
            outcome: Outcome::skipped(
                "attacker persistence: a certificate was added after the containment; remove it by hand (Graph's removeKey needs proof of possession quell does not hold)",
            ),
        })
        .collect()
}

/// Password credentials added to `owner` (a service principal or application path) after
/// `since`: the attacker's, once quell removed the compromised one.
async fn new_secrets(
    http: &Http,
    owner: &str,
    since: OffsetDateTime,
    fix: bool,
    known: Option<&[String]>,
) -> Vec<Step> {
    let body = match http
        .call(
            Method::GET,
            Api::Graph,
            &format!("{owner}?$select=id,passwordCredentials"),
            None,
        )
        .await
    {
        Ok(r) => r.body,
        Err(e) => {
            return vec![Step {
                what: format!("secrets of {owner}"),
                outcome: failed(e),
            }];
        }
    };
    let mut steps = secrets_since(http, owner, &body, since, fix, known).await;
    if steps.is_empty() {
        steps.push(Step {
            what: format!("secrets of {owner}"),
            outcome: Outcome::already("no secret added since the containment"),
        });
    }
    steps
}

/// The secrets in `body` (`passwordCredentials` of `owner`) added since the containment
/// ([`is_new`]): removed when `fix` and quell holds a baseline, reported otherwise.
async fn secrets_since(
    http: &Http,
    owner: &str,
    body: &Value,
    since: OffsetDateTime,
    fix: bool,
    known: Option<&[String]>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for c in body["passwordCredentials"].as_array().into_iter().flatten() {
        let Some(key) = c["keyId"].as_str() else {
            continue;
        };
        if !is_new(c, since, known) {
            continue;
        }
        let outcome = if known.is_none() {
            Outcome::skipped(format!(
                "review secret {key}: its startDateTime is after the containment, but whoever adds a secret sets that date and quell read no baseline of key ids at containment, so it does not remove it"
            ))
        } else if fix {
            match http
                .call(
                    Method::POST,
                    Api::Graph,
                    &format!("{owner}/removePassword"),
                    Some(&json!({"keyId": key})),
                )
                .await
            {
                Ok(_) => Outcome::applied(
                    format!(
                        "attacker persistence: secret {key} was added after the containment; removed"
                    ),
                    None,
                ),
                Err(e) => failed(e),
            }
        } else {
            Outcome::dry_run(format!(
                "would remove secret {key}, added after the containment; pass --yes"
            ))
        };
        steps.push(Step {
            what: format!("secret {key} on {owner}"),
            outcome,
        });
    }
    steps
}
