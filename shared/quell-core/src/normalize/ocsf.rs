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
        return Err(InputError::EmptyBatch {
            pointer: detail.pointer("findings"),
        });
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

/// OCSF `severity_id`: 1 informational … 5 critical, 6 fatal; 0 unknown, 99 other.
fn severity(id: Option<f64>) -> Severity {
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

/// OCSF `status_id`: 1 new, 2 in progress (someone, often quell, is on it), 3 suppressed,
/// 4 resolved, 5 archived.
fn status(id: Option<f64>) -> Status {
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
    let mut status = status(f.num_opt("status_id")?);
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
        id: uid.clone(),
        kind,
        title: info
            .text("title")?
            .unwrap_or("Security Hub finding")
            .to_string(),
        severity: severity(f.num_opt("severity_id")?),
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
    // A compliance finding is about its resources; a detection about its actor.
    if compliance {
        for r in f.objs("resources")? {
            resource(&r, &mut finding)?;
        }
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

/// An IAM resource of a compliance finding (`AwsIamUser`, `AWS::IAM::User`, …) by its ARN.
fn resource(r: &Obj<'_>, f: &mut Finding) -> Result<(), InputError> {
    let kind = r.text("type")?.unwrap_or("");
    let uid = r.text("uid")?.unwrap_or("");
    let wanted = match kind.to_ascii_lowercase().replace("::", "").as_str() {
        "awsiamuser" => "user",
        "awsiamrole" => "role",
        _ => return Ok(()),
    };
    let Some(arn) = parse_arn(uid).filter(|a| a.service == "iam" && a.kind == wanted) else {
        return Err(InputError::invalid(
            &r.pointer("uid"),
            uid,
            "an IAM user or role ARN",
        ));
    };
    let name = iam_name(r, "uid", arn.name)?;
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
