//! AWS Security Hub findings in OCSF ("Findings Imported V2", the current Security Hub): Detection
//! Findings (class 2004: GuardDuty and other threat detections, whose actor is
//! `actor.user`) and Compliance Findings (class 2003: controls such as IAM.8, whose subject is a
//! resource). Written back with `BatchUpdateFindingsV2`, identified by `cloud.account.uid`,
//! `finding_info.uid` and `metadata.product.uid`.

use super::Batch;
use super::util::{iam_name, parse_arn};
use crate::catalog;
use crate::error::InputError;
use crate::json::Obj;
use crate::model::{
    Family, Finding, FindingRef, Severity, SeverityLabel, Source, Status, Subject, ids,
};

const DETECTION: i64 = 2004;
const COMPLIANCE: i64 = 2003;

pub(super) fn findings(env: &Obj<'_>) -> Result<Batch, InputError> {
    let detail = env.obj_req("detail")?;
    let findings = detail.objs("findings")?;
    if findings.is_empty() {
        return Ok(Batch::ignore(
            &detail.pointer("findings"),
            "an empty page: the event holds no findings",
        ));
    }
    let mut out = Batch::default();
    for f in findings {
        let class = f.num_opt("class_uid")?.map(|n| n as i64);
        match class {
            Some(DETECTION | COMPLIANCE) => {
                if let Some(finding) = finding(&f, class == Some(COMPLIANCE), env.text("region")?)?
                {
                    out.findings.push(finding);
                } else {
                    out.ignored.push(super::Ignored {
                        pointer: f.here().to_string(),
                        reason:
                            "the finding names no IAM identity (no actor user, no IAM resource)"
                                .into(),
                    });
                }
            }
            other => out.ignored.push(super::Ignored {
                pointer: f.here().to_string(),
                reason: format!(
                    "OCSF class {} is not a Detection (2004) or Compliance (2003) finding",
                    other.map_or("(none)".to_string(), |c| c.to_string())
                ),
            }),
        }
    }
    Ok(out)
}

/// OCSF `severity` (the caption, in any case), else `severity_id`: 1 informational … 5
/// critical, 6 fatal; 0 unknown, 99 other.
fn severity(word: Option<&str>, id: Option<f64>) -> Severity {
    let by_word = match word.map(|w| w.trim().to_ascii_lowercase()).as_deref() {
        Some("informational") => Some(SeverityLabel::Informational),
        Some("low") => Some(SeverityLabel::Low),
        Some("medium") => Some(SeverityLabel::Medium),
        Some("high") => Some(SeverityLabel::High),
        Some("critical" | "fatal") => Some(SeverityLabel::Critical),
        _ => None,
    };
    if let Some(label) = by_word {
        return Severity::from_label(label);
    }
    let label = match id.map(|n| n as i64) {
        Some(1) => SeverityLabel::Informational,
        Some(2) => SeverityLabel::Low,
        Some(3) => SeverityLabel::Medium,
        Some(4) => SeverityLabel::High,
        Some(5 | 6) => SeverityLabel::Critical,
        _ => SeverityLabel::Unknown,
    };
    Severity::from_label(label)
}

/// OCSF `status` (the caption, in any case), else `status_id`: 1 new, 2 in progress (someone,
/// often quell, is on it), 3 suppressed, 4 resolved, 5 archived.
fn status(word: Option<&str>, id: Option<f64>) -> Status {
    let word: String = word
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    match word.as_str() {
        "new" => return Status::Active,
        "inprogress" => return Status::Notified,
        "suppressed" => return Status::Suppressed,
        "resolved" => return Status::Resolved,
        "archived" => return Status::Archived,
        _ => {}
    }
    match id.map(|n| n as i64) {
        Some(1) => Status::Active,
        Some(2) => Status::Notified,
        Some(3) => Status::Suppressed,
        Some(4) => Status::Resolved,
        Some(5) => Status::Archived,
        _ => Status::Unknown,
    }
}

fn finding(
    f: &Obj<'_>,
    compliance: bool,
    envelope_region: Option<&str>,
) -> Result<Option<Finding>, InputError> {
    let info = f.obj_req("finding_info")?;
    let uid = info.str_req("uid")?.to_string();
    let cloud = f.obj_req("cloud")?;
    let acct = cloud.obj_req("account")?;
    let account = acct.str_req("uid")?;
    if !ids::is_account(account) {
        return Err(InputError::invalid(
            &acct.pointer("uid"),
            account,
            "a 12-digit AWS account id",
        ));
    }
    let product = f
        .obj_req("metadata")?
        .obj_req("product")?
        .str_req("uid")?
        .to_string();
    let region = cloud
        .text("region")?
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| envelope_region.map(str::to_string));
    let types: Vec<String> = info
        .arr("types")?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let control = if compliance {
        match f.obj_opt("compliance")? {
            Some(c) => c.text("control")?.map(str::to_string),
            None => None,
        }
    } else {
        None
    };
    let kind = control
        .clone()
        .or_else(|| types.first().cloned())
        .unwrap_or_else(|| "ocsf".into());
    let family = match &control {
        Some(c) if c == "IAM.8" || c == "IAM.22" => Family::UnusedAccess,
        Some(_) => Family::Posture,
        None => types
            .iter()
            .find_map(|t| catalog::guardduty(t))
            .unwrap_or(Family::Unrecognized),
    };
    let mut status = status(f.text("status")?, f.num_opt("status_id")?);
    if compliance
        && let Some(c) = f.obj_opt("compliance")?
        && c.text("status")?
            .is_some_and(|s| s.eq_ignore_ascii_case("pass"))
    {
        status = Status::Passed;
    }
    let last_seen = info
        .text("last_seen_time_dt")?
        .or(info.text("modified_time_dt")?)
        .and_then(crate::clock::normalize_rfc3339);
    let mut finding = Finding {
        source: Source::Securityhub,
        // A copy of a GuardDuty finding is that finding: one detection, one id.
        id: ids::detection_id(&uid).to_string(),
        kind,
        title: info
            .text("title")?
            .unwrap_or("Security Hub finding")
            .to_string(),
        severity: severity(f.text("severity")?, f.num_opt("severity_id")?),
        family,
        status,
        account: Some(account.to_string()),
        tenant: None,
        region: region.clone(),
        last_seen,
        subjects: Vec::new(),
        record: Some(FindingRef::SecurityhubOcsfFinding {
            account: account.to_string(),
            region,
            uid,
            product_uid: product,
        }),
        custom_action: None,
        runbook: None,
        notes: Vec::new(),
        conflicts: Vec::new(),
    };
    if let Some(actor) = f.obj_opt("actor")?
        && let Some(user) = actor.obj_opt("user")?
    {
        actor_user(&user, account, &mut finding)?;
    }
    // A compliance finding is about its resources; a detection about its actor, which GuardDuty
    // detections may instead carry in an IAM resource's `data` (as the GuardDuty console shows
    // the access key details). A resource that cannot be read is set aside with a note.
    match f.objs("resources") {
        Ok(resources) => {
            for r in resources {
                let read = if compliance {
                    resource(&r, &mut finding)
                } else {
                    detection_resource(&r, account, &mut finding)
                };
                if let Err(e) = read {
                    finding.notes.push(format!("a resource was set aside: {e}"));
                }
            }
        }
        Err(e) => finding
            .notes
            .push(format!("the resources were set aside: {e}")),
    }
    if finding.subjects.is_empty() && finding.notes.is_empty() {
        if matches!(finding.family, Family::Unrecognized | Family::Posture) {
            return Ok(None);
        }
        finding
            .notes
            .push("the finding names no IAM actor or IAM resource".into());
    }
    Ok(Some(finding))
}

/// The actor of a detection: an IAM user (and the key it used), a role session, root.
fn actor_user(u: &Obj<'_>, account: &str, f: &mut Finding) -> Result<(), InputError> {
    let kind = u.text("type")?.unwrap_or("");
    let name = u.text("name")?;
    let uid = u.text("uid")?;
    let key = u.text("credential_uid")?.filter(|k| ids::is_access_key(k));
    let owner = match u.obj_opt("account")? {
        Some(a) => a.text("uid")?.unwrap_or(account).to_string(),
        None => account.to_string(),
    };
    if owner != account {
        f.notes.push(format!(
            "foreign actor: {} of account {owner}; contain it in that account",
            name.unwrap_or("?")
        ));
        return Ok(());
    }
    let subject = match kind.to_ascii_lowercase().as_str() {
        "iamuser" => {
            let Some(n) = name else {
                f.notes.push("the actor user has no name".into());
                return Ok(());
            };
            let n = iam_name(u, "name", n)?;
            match key {
                Some(k) => Subject::AccessKey {
                    account: owner,
                    access_key_id: k.to_string(),
                    user: Some(n),
                },
                None => Subject::IamUser {
                    account: owner,
                    name: n,
                },
            }
        }
        "assumedrole" => {
            // `name` is `role` or `role/session`; `uid` is `AROA…:session`.
            let (role, session_from_name) = match name.map(|n| n.split_once('/')) {
                Some(Some((r, s))) => (Some(r), Some(s)),
                _ => (name, None),
            };
            let Some(role) = role else {
                f.notes.push("the actor role has no name".into());
                return Ok(());
            };
            let role = iam_name(u, "name", role)?;
            let (role_id, session) = match uid.and_then(|p| p.split_once(':')) {
                Some((rid, s)) if ids::is_role_id(rid) && !s.is_empty() => {
                    (Some(rid.to_string()), Some(s.to_string()))
                }
                _ => (None, session_from_name.map(str::to_string)),
            };
            if ids::is_identity_center_role(&role) {
                Subject::IdentityCenterSession {
                    account: owner,
                    name: role,
                    session,
                }
            } else {
                match session {
                    Some(session) => Subject::RoleSession {
                        account: owner,
                        name: role,
                        id: role_id,
                        session,
                        access_key_id: key.map(str::to_string),
                    },
                    None => Subject::IamRole {
                        account: owner,
                        name: role,
                    },
                }
            }
        }
        "root" => Subject::Root { account: owner },
        other => {
            f.notes.push(format!(
                "actor type {other:?} is not one quell can act on (IAMUser, AssumedRole, Root)"
            ));
            return Ok(());
        }
    };
    if !f.subjects.contains(&subject) {
        f.subjects.push(subject);
    }
    Ok(())
}

/// The identity in a detection's IAM resource `data` (`user_type`, `user_name`, `principal_id`,
/// `access_key_id`, or GuardDuty's own camelCase names), read with the same rules as the actor:
/// an `AKIA` key is its user's, an assumed-role session is revoked, a foreign principal noted.
fn detection_resource(r: &Obj<'_>, account: &str, f: &mut Finding) -> Result<(), InputError> {
    let Some(data) = r.obj_opt("data")? else {
        return Ok(());
    };
    // The details may sit in `data` itself or one level down (`access_key_details`).
    let candidates = [
        Some(data.clone()),
        data.obj_opt("access_key_details")?,
        data.obj_opt("accessKeyDetails")?,
    ];
    for d in candidates.into_iter().flatten() {
        let names = if d.has("user_type") || d.has("user_name") {
            &super::guardduty::SNAKE
        } else if d.has("userType") || d.has("userName") {
            &super::guardduty::CAMEL
        } else {
            continue;
        };
        let key = r.text("uid")?.filter(|k| ids::is_access_key(k));
        let before = f.subjects.clone();
        super::guardduty::access_key_details_with(&d, names, key, account, None, f)?;
        // Named by the actor already: once.
        let added: Vec<Subject> = f.subjects.split_off(before.len());
        for s in added {
            if !f.subjects.contains(&s) {
                f.subjects.push(s);
            }
        }
        return Ok(());
    }
    Ok(())
}

/// The ARN of a resource: its `uid` when that is an ARN, else `uid_alt` (real V2 findings put
/// AWS's unique id, `AIDA…`, in `uid` and the ARN in `uid_alt`), else `data.arn`.
fn resource_arn<'a>(r: &Obj<'a>) -> Result<Option<(&'a str, String)>, InputError> {
    for key in ["uid", "uid_alt"] {
        if let Some(v) = r.text(key)?.filter(|v| parse_arn(v).is_some()) {
            return Ok(Some((v, r.pointer(key))));
        }
    }
    if let Some(data) = r.obj_opt("data")?
        && let Some(v) = data.text("arn")?.filter(|v| parse_arn(v).is_some())
    {
        return Ok(Some((v, data.pointer("arn"))));
    }
    Ok(None)
}

/// An IAM resource of a compliance finding (`AwsIamUser`, `AWS::IAM::User`, …) by its ARN.
fn resource(r: &Obj<'_>, f: &mut Finding) -> Result<(), InputError> {
    let kind = r.text("type")?.unwrap_or("");
    let wanted = match kind.to_ascii_lowercase().replace("::", "").as_str() {
        "awsiamuser" => "user",
        "awsiamrole" => "role",
        _ => return Ok(()),
    };
    let found = resource_arn(r)?;
    let Some(arn) = found
        .as_ref()
        .and_then(|(v, _)| parse_arn(v))
        .filter(|a| a.service == "iam" && a.kind == wanted)
    else {
        return Err(InputError::invalid(
            &r.pointer("uid"),
            r.text("uid")?.unwrap_or(""),
            "an IAM user or role ARN (in uid, uid_alt or data.arn)",
        ));
    };
    let name = match ids::is_iam_name(arn.name) {
        true => arn.name.to_string(),
        false => {
            return Err(InputError::invalid(
                found.as_ref().map_or("", |(_, p)| p.as_str()),
                arn.name,
                "an IAM name (1-128 of letters, digits and _+=,.@-)",
            ));
        }
    };
    let subject = if wanted == "user" {
        Subject::IamUser {
            account: arn.account.to_string(),
            name,
        }
    } else {
        Subject::IamRole {
            account: arn.account.to_string(),
            name,
        }
    };
    if !f.subjects.contains(&subject) {
        f.subjects.push(subject);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_in_any_case_first_then_the_ids() {
        assert_eq!(status(Some("RESOLVED"), Some(1.0)), Status::Resolved);
        assert_eq!(status(Some("In Progress"), None), Status::Notified);
        assert_eq!(status(None, Some(1.0)), Status::Active);
        assert_eq!(status(Some("Other"), Some(5.0)), Status::Archived);
        assert_eq!(severity(Some("hIgH"), None).label, SeverityLabel::High);
        assert_eq!(severity(Some("Fatal"), None).label, SeverityLabel::Critical);
        assert_eq!(severity(None, Some(2.0)).label, SeverityLabel::Low);
        assert_eq!(
            severity(Some("Unknown"), Some(0.0)).label,
            SeverityLabel::Unknown
        );
    }
}
