//! The manual runbook request: a human asks quell to contain one principal.
//!
//! ```json
//! {"runbook": "contain", "principal": "arn:aws:iam::111122223333:user/alice",
//!  "reason": "SEC-1234: key pasted in a public gist", "requested_by": "oncall@example.com"}
//! ```
//! See README "Runbook requests" for every field.

use super::util::parse_arn;
use crate::error::InputError;
use crate::json::Obj;
use crate::model::{
    Family, Finding, Runbook, Severity, SeverityLabel, Source, Status, Subject, ids,
};

const RUNBOOKS: &str =
    "one of contain, quarantine, revoke_sessions, disable_key, disable_dormant_keys";

pub(super) fn request(o: &Obj<'_>) -> Result<Finding, InputError> {
    let name = o.str_req("runbook")?;
    let runbook = Runbook::parse(name)
        .ok_or_else(|| InputError::invalid(&o.pointer("runbook"), name, RUNBOOKS))?;
    let reason = o.str_req("reason")?;
    if reason.len() > 1024 {
        return Err(InputError::invalid(
            &o.pointer("reason"),
            reason,
            "a reason of at most 1,024 bytes",
        ));
    }
    let principal = o.str_req("principal")?;
    let subject = principal_subject(o, principal)?;
    let requested_by = o.text("requested_by")?;
    let id = match o.text("id")? {
        Some(id) => id.to_string(),
        // Stable, so replaying the same request is recognisably the same request.
        None => format!(
            "runbook-{:016x}",
            ids::stable_hash(&[name, principal, reason])
        ),
    };
    let mut notes = vec![format!("reason: {reason}")];
    if let Some(by) = requested_by {
        notes.push(format!("requested by: {by}"));
    }
    Ok(Finding {
        source: Source::Runbook,
        title: format!("runbook {name} on {}", subject.label()),
        id,
        kind: format!("runbook:{name}"),
        severity: Severity::from_label(SeverityLabel::High),
        family: Family::Manual,
        status: Status::Active,
        account: subject.account().map(str::to_string),
        tenant: subject.tenant().map(str::to_string),
        region: None,
        last_seen: None,
        subjects: vec![subject],
        record: None,
        custom_action: None,
        runbook: Some(runbook),
        notes,
        conflicts: Vec::new(),
    })
}

fn principal_subject(o: &Obj<'_>, principal: &str) -> Result<Subject, InputError> {
    let at = o.pointer("principal");
    // An Identity Center user name is often an e-mail address: the type says which it is.
    if o.text("principal_type")? == Some("identity_center_user") {
        if !ids::is_identity_center_user_name(principal) {
            return Err(InputError::invalid(
                &at,
                principal,
                "an Identity Center user name (1 to 128 characters, no spaces)",
            ));
        }
        // Named by identity store user id: the executor reads the user name before the
        // claim (`identitystore:DescribeUser`), so the person has one key either way.
        let user_id = ids::is_identity_store_user_id(principal).then(|| principal.to_string());
        return Ok(Subject::IdentityCenterUser {
            account: super::util::account(o, "account")?,
            user_name: principal.to_string(),
            user_id,
        });
    }
    if principal.starts_with("arn:") {
        let arn = parse_arn(principal).ok_or_else(|| {
            InputError::invalid(&at, principal, "an IAM user, role or assumed-role ARN")
        })?;
        let account = arn.account.to_string();
        let check = |n: &str| -> Result<String, InputError> {
            if ids::is_iam_name(n) {
                Ok(n.to_string())
            } else {
                Err(InputError::invalid(
                    &at,
                    principal,
                    "an ARN ending in a valid IAM name",
                ))
            }
        };
        return match (arn.service, arn.kind) {
            ("iam", "user") => Ok(Subject::IamUser {
                account,
                name: check(arn.name)?,
            }),
            ("iam", "role") if ids::is_identity_center_role(arn.name) => {
                Ok(Subject::IdentityCenterSession {
                    account,
                    name: check(arn.name)?,
                    session: None,
                })
            }
            ("iam", "role") => Ok(Subject::IamRole {
                account,
                name: check(arn.name)?,
            }),
            ("sts", "assumed-role") => {
                let (role, session) = arn.path_and_name.split_once('/').ok_or_else(|| {
                    InputError::invalid(
                        &at,
                        principal,
                        "arn:aws:sts::<account>:assumed-role/<role>/<session>",
                    )
                })?;
                let role = check(role)?;
                if ids::is_identity_center_role(&role) {
                    return Ok(Subject::IdentityCenterSession {
                        account,
                        name: role,
                        session: Some(session.to_string()),
                    });
                }
                let role_id = match o.text("role_id")? {
                    Some(r) if ids::is_role_id(r) => Some(r.to_string()),
                    Some(r) => {
                        return Err(InputError::invalid(
                            &o.pointer("role_id"),
                            r,
                            "a role id (AROA…)",
                        ));
                    }
                    None => None,
                };
                Ok(Subject::RoleSession {
                    account,
                    name: role,
                    id: role_id,
                    session: session.to_string(),
                    access_key_id: None,
                })
            }
            _ => Err(InputError::invalid(
                &at,
                principal,
                "an IAM user, role or assumed-role ARN",
            )),
        };
    }
    if ids::is_access_key(principal) {
        let account = super::util::account(o, "account")?;
        let user = match o.text("user")? {
            Some(u) if ids::is_iam_name(u) => Some(u.to_string()),
            Some(u) => {
                return Err(InputError::invalid(
                    &o.pointer("user"),
                    u,
                    "an IAM user name",
                ));
            }
            None => None,
        };
        return Ok(Subject::AccessKey {
            account,
            access_key_id: principal.to_string(),
            user,
        });
    }
    let tenant = match o.text("tenant")? {
        Some(t) if ids::is_guid(t) => Some(t.to_string()),
        Some(t) => {
            return Err(InputError::invalid(
                &o.pointer("tenant"),
                t,
                "a tenant GUID",
            ));
        }
        None => None,
    };
    if ids::is_upn(principal) {
        return Ok(Subject::EntraUser {
            tenant,
            id: None,
            name: Some(principal.to_string()),
            on_premises_synced: None,
        });
    }
    if ids::is_guid(principal) {
        let kind = o.text("principal_type")?.unwrap_or("user");
        let key_id = match o.text("key_id")? {
            Some(k) if ids::is_guid(k) => Some(k.to_string()),
            Some(k) => {
                return Err(InputError::invalid(
                    &o.pointer("key_id"),
                    k,
                    "a credential keyId (GUID)",
                ));
            }
            None => None,
        };
        return match kind {
            "user" => Ok(Subject::EntraUser {
                tenant,
                id: Some(principal.to_string()),
                name: None,
                on_premises_synced: None,
            }),
            "service_principal" => Ok(Subject::ServicePrincipal {
                tenant,
                id: principal.to_string(),
                app_id: None,
                name: None,
                key_id,
            }),
            "managed_identity" => Ok(Subject::ManagedIdentity {
                tenant,
                id: principal.to_string(),
                name: None,
            }),
            other => Err(InputError::invalid(
                &o.pointer("principal_type"),
                other,
                "one of user, service_principal, managed_identity, identity_center_user",
            )),
        };
    }
    Err(InputError::invalid(
        &at,
        principal,
        "an IAM ARN, an access key id (with account), a UPN, or an Entra object id",
    ))
}
