//! Amazon GuardDuty findings (`detail` of a "GuardDuty Finding" event).

use super::Batch;
use super::util::{account, iam_name};
use crate::catalog;
use crate::error::InputError;
use crate::json::Obj;
use crate::model::{Family, Finding, Severity, Source, Status, Subject, ids};

/// The family of a GuardDuty type: from the catalog, else unrecognized.
fn family(kind: &str) -> Family {
    catalog::guardduty(kind).unwrap_or(Family::Unrecognized)
}

/// One GuardDuty finding. A finding about a resource that names no IAM actor (an EC2 backdoor, a
/// Kubernetes finding) is outside quell's scope and ignored with the reason; an IAM actor named
/// in `resource.accessKeyDetails` is contained whatever the resource type (S3 exfiltration by a
/// stolen key is the key's finding too). A type missing from [`crate::catalog::GUARDDUTY`] is
/// escalated, never contained.
pub(super) fn findings(d: &Obj<'_>) -> Result<Batch, InputError> {
    if let Some(svc) = d.obj_opt("service")?
        && let Some(name) = svc.text("serviceName")?
        && name != "guardduty"
    {
        return Err(InputError::Spoofed {
            pointer: svc.pointer("serviceName"),
            source_name: name.to_string(),
            detail: "a GuardDuty finding has serviceName \"guardduty\"".into(),
        });
    }
    let id = d.str_req("id")?.to_string();
    let kind = d.str_req("type")?.to_string();
    let acct = account(d, "accountId")?;
    let score = d.num_opt("severity")?.ok_or_else(|| InputError::Missing {
        pointer: d.pointer("severity"),
        expected: "a numeric severity",
    })?;
    let service = d.obj_opt("service")?;
    let last_seen = match &service {
        Some(svc) => svc
            .text("eventLastSeen")?
            .and_then(crate::clock::normalize_rfc3339),
        None => None,
    }
    .or(d
        .text("updatedAt")?
        .and_then(crate::clock::normalize_rfc3339));
    let mut status = Status::Active;
    if let Some(svc) = &service {
        if svc.bool_opt("archived")? == Some(true) {
            status = Status::Archived;
        }
        if let Some(info) = svc.obj_opt("additionalInfo")?
            && info.bool_opt("sample")? == Some(true)
        {
            status = Status::Sample;
        }
    }
    let mut finding = Finding {
        source: Source::Guardduty,
        id,
        family: family(&kind),
        title: d.text("title")?.unwrap_or(&kind).to_string(),
        kind,
        severity: Severity::from_score(score),
        status,
        account: Some(acct.clone()),
        tenant: None,
        region: d.text("region")?.map(str::to_string),
        last_seen,
        subjects: Vec::new(),
        record: None,
        custom_action: None,
        runbook: None,
        notes: Vec::new(),
        conflicts: Vec::new(),
    };

    if catalog::without_stage(&finding.kind).starts_with("AttackSequence:") {
        attack_sequence(d, service.as_ref(), &acct, &mut finding);
        return Ok(Batch::one(finding));
    }

    let resource = d.obj_opt("resource")?;
    let resource_type = match &resource {
        Some(r) => r.text("resourceType")?.unwrap_or(""),
        None => "",
    };
    let details = match &resource {
        Some(r) => r.obj_opt("accessKeyDetails")?,
        None => None,
    };
    let kind_resource = catalog::guardduty_resource(&finding.kind);
    // IAM findings are about this account's own principals (an InsideAWS exfiltration names the
    // account the stolen credentials were used from, not the principal's); for S3 and other
    // data findings, a caller from another account is a foreign principal.
    let remote_account = match &service {
        Some(svc) if kind_resource != "IAMUser" => remote_account(svc)?,
        _ => None,
    };
    let identity_type = resource_type == "AccessKey" || kind_resource == "IAMUser";
    match details {
        Some(k) if has_actor(&k)? => {
            access_key_details(&k, &acct, remote_account.as_deref(), &mut finding)?
        }
        _ if identity_type => {
            return Err(InputError::Missing {
                pointer: "/detail/resource/accessKeyDetails".into(),
                expected: "the identity of an IAM finding (userName, userType, principalId)",
            });
        }
        _ if catalog::GUARDDUTY_NON_IDENTITY.contains(&kind_resource)
            || (finding.family != Family::Unrecognized && kind_resource != "S3") =>
        {
            return Ok(Batch::ignore(
                d.here(),
                format!(
                    "GuardDuty {} about resource type {resource_type:?} names no IAM actor; quell contains identities only",
                    finding.kind
                ),
            ));
        }
        _ => finding.notes.push(format!(
            "the finding names no IAM actor (resource type {resource_type:?})"
        )),
    }
    Ok(Batch::one(finding))
}

/// Whether `accessKeyDetails` names someone (S3 findings carry an empty object when the caller
/// was anonymous).
fn has_actor(k: &Obj<'_>) -> Result<bool, InputError> {
    Ok(k.text("userType")?.is_some() || k.text("userName")?.is_some())
}

/// The caller's account when GuardDuty saw the call come from another account
/// (`service.action.awsApiCallAction.remoteAccountDetails.accountId`).
fn remote_account(svc: &Obj<'_>) -> Result<Option<String>, InputError> {
    let Some(action) = svc.obj_opt("action")? else {
        return Ok(None);
    };
    let Some(call) = action.obj_opt("awsApiCallAction")? else {
        return Ok(None);
    };
    let Some(remote) = call.obj_opt("remoteAccountDetails")? else {
        return Ok(None);
    };
    Ok(remote
        .text("accountId")?
        .filter(|a| ids::is_account(a))
        .map(str::to_string))
}

/// The names an object gives the fields of GuardDuty's `AccessKeyDetails`.
pub(super) struct KeyFields {
    pub user_type: &'static str,
    pub user_name: &'static str,
    pub principal_id: &'static str,
    pub access_key_id: &'static str,
}

/// GuardDuty's own names (`resource.accessKeyDetails`, a sequence resource's `data.accessKey`).
pub(super) const CAMEL: KeyFields = KeyFields {
    user_type: "userType",
    user_name: "userName",
    principal_id: "principalId",
    access_key_id: "accessKeyId",
};

/// Security Hub OCSF's (`resources[].data` of a GuardDuty detection's IAM resource).
pub(super) const SNAKE: KeyFields = KeyFields {
    user_type: "user_type",
    user_name: "user_name",
    principal_id: "principal_id",
    access_key_id: "access_key_id",
};

fn access_key_details(
    k: &Obj<'_>,
    acct: &str,
    remote: Option<&str>,
    f: &mut Finding,
) -> Result<(), InputError> {
    access_key_details_with(k, &CAMEL, None, acct, remote, f)
}

/// The identity an `AccessKeyDetails`-shaped object names (fields named by `names`; the key id
/// from `key` when the object's container holds it): an IAM user and its key, a role session,
/// root, a federated user; a foreign or account principal is noted, never contained.
pub(super) fn access_key_details_with(
    k: &Obj<'_>,
    names: &KeyFields,
    key: Option<&str>,
    acct: &str,
    remote: Option<&str>,
    f: &mut Finding,
) -> Result<(), InputError> {
    let user_type = k.text(names.user_type)?.unwrap_or("");
    // A caller from another account, or an account principal: quell cannot act in an account
    // it does not own, and must not act on a same-named principal of its own.
    if let Some(other) = remote.filter(|r| *r != acct) {
        f.notes.push(format!(
            "foreign actor: the call came from account {other} ({user_type} {}); contain it in that account",
            k.text(names.user_name)?.unwrap_or("?")
        ));
        return Ok(());
    }
    if user_type.eq_ignore_ascii_case("AWSAccount") {
        f.notes.push(format!(
            "foreign actor: account {} (userType AWSAccount); contain it in that account",
            k.text(names.principal_id)?
                .or(k.text(names.user_name)?)
                .unwrap_or("?")
        ));
        return Ok(());
    }
    let user_type = [
        "IAMUser",
        "AssumedRole",
        "Root",
        "Federated",
        "FederatedUser",
    ]
    .into_iter()
    .find(|t| t.eq_ignore_ascii_case(user_type))
    .unwrap_or(user_type);
    let user_name = k.text(names.user_name)?;
    let principal = k.text(names.principal_id)?;
    let key = match key {
        Some(k) => Some(k),
        None => k.text(names.access_key_id)?,
    };
    let valid_key = match key {
        Some(key) if ids::is_access_key(key) => Some(key.to_string()),
        Some(key) if ids::is_placeholder(key) || f.status == Status::Sample => None,
        Some(key) => {
            f.notes.push(format!(
                "access key id {key:?} is not a well-formed key id; quell will not act on the key itself"
            ));
            None
        }
        None => None,
    };
    match user_type {
        "IAMUser" => {
            let name = match user_name {
                Some(n) => iam_name(k, names.user_name, n)?,
                None => {
                    return Err(InputError::Missing {
                        pointer: k.pointer(names.user_name),
                        expected: "the IAM user's name",
                    });
                }
            };
            f.subjects.push(match valid_key {
                Some(access_key_id) => Subject::AccessKey {
                    account: acct.to_string(),
                    access_key_id,
                    user: Some(name),
                },
                None => Subject::IamUser {
                    account: acct.to_string(),
                    name,
                },
            });
        }
        "AssumedRole" => {
            let role = match user_name {
                Some(n) => iam_name(k, names.user_name, n)?,
                None => {
                    return Err(InputError::Missing {
                        pointer: k.pointer(names.user_name),
                        expected: "the assumed role's name",
                    });
                }
            };
            let (role_id, session) = match principal.and_then(|p| p.split_once(':')) {
                Some((rid, sess)) if ids::is_role_id(rid) && !sess.is_empty() => {
                    (Some(rid.to_string()), Some(sess.to_string()))
                }
                _ => (None, None),
            };
            if ids::is_identity_center_role(&role) {
                f.subjects.push(Subject::IdentityCenterSession {
                    account: acct.to_string(),
                    name: role,
                    session,
                });
            } else {
                match session {
                    Some(session) => f.subjects.push(Subject::RoleSession {
                        account: acct.to_string(),
                        name: role,
                        id: role_id,
                        session,
                        access_key_id: valid_key,
                    }),
                    None => {
                        f.notes.push(format!(
                            "principalId {:?} does not name a role session; the whole role is the subject",
                            principal.unwrap_or("")
                        ));
                        f.subjects.push(Subject::IamRole {
                            account: acct.to_string(),
                            name: role,
                        });
                    }
                }
            }
        }
        "Root" => f.subjects.push(Subject::Root {
            account: acct.to_string(),
        }),
        "Federated" | "FederatedUser" => {
            let name = user_name.or(principal).unwrap_or("unknown");
            f.subjects.push(Subject::FederatedUser {
                account: acct.to_string(),
                name: name.to_string(),
            });
        }
        other => f.notes.push(format!(
            "userType {other:?} is not one quell can act on (IAMUser, AssumedRole, Root, Federated, AWSAccount)"
        )),
    }
    Ok(())
}

/// What a part of an attack sequence that cannot be read says: a note, never a rejection (a
/// live critical finding must reach a human whatever optional part is missing or malformed).
fn soft(f: &mut Finding, r: Result<(), InputError>) {
    if let Err(e) = r {
        f.notes.push(format!(
            "part of the attack sequence is unreadable and was set aside: {e}"
        ));
    }
}

/// An attack sequence's identities, from every part that can name one: its actors' users, its
/// `ACCESS_KEY` resources (with their `data.accessKey` details), the access keys its signals
/// name, and the finding's own `resource.accessKeyDetails`. Any of them may be missing; with no
/// usable identity the finding holds a note naming the sequence, and the plan escalates it.
fn attack_sequence(d: &Obj<'_>, service: Option<&Obj<'_>>, acct: &str, f: &mut Finding) {
    let seq = match service.map(|s| s.obj_opt("detection")) {
        Some(Ok(Some(det))) => match det.obj_opt("sequence") {
            Ok(s) => s,
            Err(e) => {
                soft(f, Err(e));
                None
            }
        },
        Some(Err(e)) => {
            soft(f, Err(e));
            None
        }
        _ => None,
    };
    let mut sequence_uid = None;
    if let Some(seq) = &seq {
        sequence_uid = seq.text("uid").ok().flatten().map(str::to_string);
        match seq.objs("actors") {
            Ok(actors) => {
                for actor in actors {
                    match actor.obj_opt("user") {
                        Ok(Some(user)) => {
                            let r = sequence_actor(&user, acct, f);
                            soft(f, r);
                        }
                        Ok(None) => {}
                        Err(e) => soft(f, Err(e)),
                    }
                }
            }
            Err(e) => soft(f, Err(e)),
        }
        match seq.objs("resources") {
            Ok(resources) => {
                for r in resources {
                    let result = sequence_access_key(&r, acct, f);
                    soft(f, result);
                }
            }
            Err(e) => soft(f, Err(e)),
        }
        match seq.objs("signals") {
            Ok(signals) => {
                for sig in signals {
                    let uids = sig.arr("resourceUids").unwrap_or_default();
                    for uid in uids.iter().filter_map(|u| u.as_str()) {
                        add_key(f, acct, uid, None);
                    }
                }
            }
            Err(e) => soft(f, Err(e)),
        }
    }
    match d.obj_opt("resource").and_then(|r| match r {
        Some(r) => r.obj_opt("accessKeyDetails"),
        None => Ok(None),
    }) {
        Ok(Some(k)) if has_actor(&k).unwrap_or(false) => {
            let r = access_key_details(&k, acct, None, f);
            soft(f, r);
        }
        Ok(_) => {}
        Err(e) => soft(f, Err(e)),
    }
    if f.subjects.is_empty() {
        f.notes.push(format!(
            "attack sequence {} names no identity quell can act on (no usable actor, access-key resource or access key details); a human must investigate it",
            sequence_uid.as_deref().unwrap_or("(no uid)")
        ));
    }
}

/// An access key a sequence names, as a subject: a long-term key (its user when known);
/// a temporary key only as a note (its session is not named, and an `ASIA` key is never
/// deactivated).
fn add_key(f: &mut Finding, acct: &str, key: &str, user: Option<String>) {
    if !ids::is_access_key(key) {
        return;
    }
    if key.starts_with("ASIA") {
        let note = format!(
            "temporary access key {key} is named, but not its session; its role's sessions are for a human to revoke"
        );
        if !f.notes.contains(&note) {
            f.notes.push(note);
        }
        return;
    }
    let subject = Subject::AccessKey {
        account: acct.to_string(),
        access_key_id: key.to_string(),
        user,
    };
    let known = f
        .subjects
        .iter()
        .any(|s| matches!(s, Subject::AccessKey { access_key_id, .. } if access_key_id == key));
    if !known {
        f.subjects.push(subject);
    }
}

/// A sequence resource of type `ACCESS_KEY` (its `uid` the key id; `data.accessKey` the
/// details GuardDuty knows of its user).
fn sequence_access_key(r: &Obj<'_>, acct: &str, f: &mut Finding) -> Result<(), InputError> {
    if !r
        .text("resourceType")?
        .is_some_and(|t| t.eq_ignore_ascii_case("ACCESS_KEY"))
    {
        return Ok(());
    }
    let owner = r.text("accountId")?.unwrap_or(acct);
    if owner != acct {
        f.notes.push(format!(
            "foreign access key {} of account {owner}; contain it in that account",
            r.text("uid")?.unwrap_or("?")
        ));
        return Ok(());
    }
    let uid = r.text("uid")?.filter(|u| ids::is_access_key(u));
    let details = match r.obj_opt("data")? {
        Some(data) => data.obj_opt("accessKey")?,
        None => None,
    };
    match details {
        Some(k) if has_actor(&k)? => {
            let before = f.subjects.len();
            access_key_details_with(&k, &CAMEL, uid, acct, None, f)?;
            // The same key named again by a signal or the resource block is this subject.
            if f.subjects.len() > before + 1 {
                f.subjects.truncate(before + 1);
            }
            Ok(())
        }
        _ => {
            if let Some(k) = uid {
                add_key(f, acct, k, None);
            }
            Ok(())
        }
    }
}

fn sequence_actor(user: &Obj<'_>, acct: &str, f: &mut Finding) -> Result<(), InputError> {
    let name = user.text("name")?;
    let kind = user.text("type")?.unwrap_or("");
    let actor_account = match user.obj_opt("account")? {
        Some(a) => a
            .text("uid")?
            .filter(|u| ids::is_account(u))
            .unwrap_or(acct)
            .to_string(),
        None => acct.to_string(),
    };
    let credential = user
        .text("credentialUid")?
        .filter(|c| ids::is_access_key(c));
    let Some(name) = name else {
        f.notes
            .push("an attack-sequence actor has no user name".into());
        return Ok(());
    };
    if actor_account != acct {
        f.notes.push(format!(
            "foreign actor: {name} of account {actor_account}; contain it in that account"
        ));
        return Ok(());
    }
    let subject = match kind {
        "IAMUser" => match credential {
            Some(key) => Subject::AccessKey {
                account: actor_account,
                access_key_id: key.to_string(),
                user: Some(iam_name(user, "name", name)?),
            },
            None => Subject::IamUser {
                account: actor_account,
                name: iam_name(user, "name", name)?,
            },
        },
        "AssumedRole" | "Role" => {
            // Actor names for roles are `role/session` or the role alone.
            let (role, session) = match name.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (name, None),
            };
            let role = iam_name(user, "name", role)?;
            if ids::is_identity_center_role(&role) {
                Subject::IdentityCenterSession {
                    account: actor_account,
                    name: role,
                    session: session.map(str::to_string),
                }
            } else {
                match session {
                    Some(s) => Subject::RoleSession {
                        account: actor_account,
                        name: role,
                        id: user
                            .text("uid")?
                            .and_then(|u| u.split_once(':'))
                            .map(|(r, _)| r)
                            .filter(|r| ids::is_role_id(r))
                            .map(str::to_string),
                        session: s.to_string(),
                        access_key_id: credential.map(str::to_string),
                    },
                    None => Subject::IamRole {
                        account: actor_account,
                        name: role,
                    },
                }
            }
        }
        "Root" => Subject::Root {
            account: actor_account,
        },
        "FederatedUser" | "Federated" => Subject::FederatedUser {
            account: actor_account,
            name: name.to_string(),
        },
        other => {
            f.notes.push(format!(
                "attack-sequence actor {name:?} has type {other:?}, which quell cannot act on"
            ));
            return Ok(());
        }
    };
    if !f.subjects.contains(&subject) {
        f.subjects.push(subject);
    }
    Ok(())
}
