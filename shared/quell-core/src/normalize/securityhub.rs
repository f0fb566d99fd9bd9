//! AWS Security Hub findings in the ASFF (`detail.findings[]` of "Findings - Imported" and
//! "Findings - Custom Action" events).

use super::Batch;
use super::util::{account, parse_arn};
use crate::error::InputError;
use crate::json::Obj;
use crate::model::{
    Family, Finding, FindingRef, Severity, SeverityLabel, Source, Status, Subject, ids,
};

pub(super) fn findings(env: &Obj<'_>, custom_action: bool) -> Result<Batch, InputError> {
    let detail = env.obj_req("detail")?;
    let action_name = if custom_action {
        Some(
            detail
                .text("actionName")?
                .unwrap_or("custom action")
                .to_string(),
        )
    } else {
        None
    };
    let findings = detail.objs("findings")?;
    if findings.is_empty() {
        return Ok(Batch::ignore(
            &detail.pointer("findings"),
            "an empty page: the event holds no findings",
        ));
    }
    let mut out = Batch::default();
    for f in findings {
        let types: Vec<&str> = f
            .arr("Resources")?
            .iter()
            .filter_map(|r| r.get("Type").and_then(|t| t.as_str()))
            .collect();
        let about_identity = types
            .iter()
            .any(|t| t.starts_with("AwsIam") || *t == "AwsAccount");
        if about_identity {
            out.findings
                .push(asff(&f, action_name.clone(), env.text("region")?)?);
        } else {
            out.ignored.push(super::Ignored {
                pointer: f.here().to_string(),
                reason: format!(
                    "the finding concerns {}, not an IAM identity or account",
                    if types.is_empty() {
                        "no resource".to_string()
                    } else {
                        types.join(", ")
                    }
                ),
            });
        }
    }
    Ok(out)
}

/// Security Hub controls whose finding means "this user has unused credentials".
fn is_unused_credentials_control(control: &str) -> bool {
    matches!(control, "IAM.8" | "IAM.22")
}

/// The consolidated control (`IAM.8`) a standard-specific control id means, from Security
/// Hub's consolidated controls reference: the same check reported by CIS, PCI DSS or FSBP is
/// one control. `standard` is the finding's GeneratorId and standards ARN; an id quell does
/// not map is kept as it is.
fn consolidated_control(standard: &str, id: &str) -> String {
    let bare = id.trim_start_matches("CIS.");
    let mapped = if standard.contains("cis-aws-foundations-benchmark/v/1.2.0") {
        match bare {
            "1.3" => Some("IAM.8"),
            "1.4" => Some("IAM.3"),
            "1.13" => Some("IAM.9"),
            "1.14" => Some("IAM.6"),
            "1.16" => Some("IAM.2"),
            "1.22" => Some("IAM.1"),
            _ => None,
        }
    } else if standard.contains("cis-aws-foundations-benchmark/v/") {
        // v1.4.0 and v3.0.0 renumbered the IAM section.
        match bare {
            "1.5" => Some("IAM.9"),
            "1.6" => Some("IAM.6"),
            "1.12" => Some("IAM.22"),
            "1.14" => Some("IAM.3"),
            "1.15" => Some("IAM.2"),
            "1.16" => Some("IAM.1"),
            _ => None,
        }
    } else {
        match id {
            "PCI.IAM.1" => Some("IAM.4"),
            "PCI.IAM.2" => Some("IAM.2"),
            "PCI.IAM.3" => Some("IAM.1"),
            "PCI.IAM.4" => Some("IAM.6"),
            "PCI.IAM.5" => Some("IAM.9"),
            "PCI.IAM.6" => Some("IAM.19"),
            "PCI.IAM.7" => Some("IAM.8"),
            "PCI.IAM.8" => Some("IAM.10"),
            // No standard to read the number against: the two unused-credential rules of the
            // CIS versions, the only bare ids quell acts on, keep their known meaning.
            "1.3" | "CIS.1.3" => Some("IAM.8"),
            "1.12" | "CIS.1.12" => Some("IAM.22"),
            _ => None,
        }
    };
    mapped.map_or_else(|| id.to_string(), str::to_string)
}

/// The region of an ARN (`arn:<partition>:<service>:<region>:…`), if it has one.
fn arn_region(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(5, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some(_), Some(region)) if !region.is_empty() => {
            Some(region.to_string())
        }
        _ => None,
    }
}

fn asff(
    f: &Obj<'_>,
    custom_action: Option<String>,
    envelope_region: Option<&str>,
) -> Result<Finding, InputError> {
    let id = f.str_req("Id")?.to_string();
    let product_arn = f.str_req("ProductArn")?.to_string();
    let acct = account(f, "AwsAccountId")?;
    // The finding's record lives in a region; BatchUpdateFindings must be sent there. The
    // finding's own Region, else its product's or id's ARN region, else the event's.
    let region = f
        .text("Region")?
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| arn_region(&product_arn))
        .or_else(|| arn_region(&id))
        .or_else(|| envelope_region.map(str::to_string));
    let last_seen = f
        .text("LastObservedAt")?
        .or(f.text("UpdatedAt")?)
        .and_then(crate::clock::normalize_rfc3339);
    let title = f.text("Title")?.unwrap_or("").to_string();
    let types: Vec<String> = f
        .arr("Types")?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();

    // Severity: Label if present, else Normalized (0–100), else Product (0–10).
    let severity = match f.obj_opt("Severity")? {
        Some(s) => match s.text("Label")? {
            Some(l) => {
                let label = SeverityLabel::parse(l);
                let score = s
                    .num_opt("Normalized")?
                    .map(|n| n / 10.0)
                    .unwrap_or(label.nominal_score());
                Severity { label, score }
            }
            None => match s.num_opt("Normalized")? {
                Some(n) => {
                    let label = match n {
                        n if n >= 90.0 => SeverityLabel::Critical,
                        n if n >= 70.0 => SeverityLabel::High,
                        n if n >= 40.0 => SeverityLabel::Medium,
                        n if n >= 1.0 => SeverityLabel::Low,
                        _ => SeverityLabel::Informational,
                    };
                    Severity {
                        label,
                        score: (n / 10.0).clamp(0.0, 10.0),
                    }
                }
                None => s
                    .num_opt("Product")?
                    .map(Severity::from_score)
                    .unwrap_or(Severity::UNKNOWN),
            },
        },
        None => Severity::UNKNOWN,
    };

    let standard = [
        f.text("GeneratorId")?,
        match f.obj_opt("ProductFields")? {
            Some(p) => p.text("StandardsArn")?.or(p.text("StandardsGuideArn")?),
            None => None,
        },
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    let control = match f.obj_opt("Compliance")? {
        Some(c) => c.text("SecurityControlId")?.map(str::to_string),
        None => None,
    }
    .or(match f.obj_opt("ProductFields")? {
        Some(p) => p
            .text("ControlId")?
            .or(p.text("RuleId")?)
            .map(|c| consolidated_control(&standard, c)),
        None => None,
    });

    // Status, most final first.
    let workflow = match f.obj_opt("Workflow")? {
        Some(w) => w.text("Status")?.map(str::to_ascii_uppercase),
        None => None,
    };
    let compliance = match f.obj_opt("Compliance")? {
        Some(c) => c.text("Status")?.map(str::to_ascii_uppercase),
        None => None,
    };
    let status = if f.bool_opt("Sample")? == Some(true) {
        Status::Sample
    } else if f
        .text("RecordState")?
        .is_some_and(|s| s.eq_ignore_ascii_case("ARCHIVED"))
    {
        Status::Archived
    } else if workflow.as_deref() == Some("RESOLVED") {
        Status::Resolved
    } else if workflow.as_deref() == Some("SUPPRESSED") {
        Status::Suppressed
    } else if matches!(compliance.as_deref(), Some("PASSED" | "NOT_AVAILABLE")) {
        Status::Passed
    } else if workflow.as_deref() == Some("NOTIFIED") && custom_action.is_none() {
        // Re-delivery of a finding someone (often quell) already handled. A human pressing
        // quell's custom action overrides this.
        Status::Notified
    } else {
        Status::Active
    };

    let is_guardduty = product_arn.ends_with("/aws/guardduty");
    let is_threat = is_guardduty
        || types.iter().any(|t| {
            t.starts_with("TTPs/")
                || t.starts_with("Effects/")
                || t.starts_with("Unusual Behaviors/")
        });
    let family = if product_arn.ends_with("/aws/access-analyzer")
        || control
            .as_deref()
            .is_some_and(is_unused_credentials_control)
    {
        Family::UnusedAccess
    } else if is_threat {
        let recon = types
            .iter()
            .any(|t| t.contains("Discovery") || t.contains("Recon") || t.contains("PenTest"));
        if recon {
            Family::AnomalousBehavior
        } else {
            Family::CredentialCompromise
        }
    } else {
        Family::Posture
    };
    let kind = match &control {
        Some(c) => c.clone(),
        None => types
            .iter()
            .find_map(|t| t.rsplit('/').next().map(str::to_string))
            .unwrap_or_else(|| "asff".to_string()),
    };

    let mut finding = Finding {
        source: Source::Securityhub,
        record: Some(FindingRef::SecurityhubFinding {
            account: acct.clone(),
            region: region.clone(),
            id: id.clone(),
            product_arn,
        }),
        // A copy of a GuardDuty finding is that finding: one detection, one id.
        id: ids::detection_id(&id).to_string(),
        kind,
        title,
        severity,
        family,
        status,
        account: Some(acct.clone()),
        tenant: None,
        region,
        last_seen,
        subjects: Vec::new(),
        custom_action,
        runbook: None,
        notes: Vec::new(),
        conflicts: Vec::new(),
    };

    let resources = f.objs("Resources")?;
    for r in resources {
        asff_resource(&r, &acct, &mut finding)?;
    }
    Ok(finding)
}

fn asff_resource(r: &Obj<'_>, acct: &str, f: &mut Finding) -> Result<(), InputError> {
    let rtype = r.str_req("Type")?;
    let rid = r.text("Id")?.unwrap_or("");
    let details = r.obj_opt("Details")?;
    let typed = match &details {
        Some(d) => d.obj_opt(rtype)?,
        None => None,
    };
    let push = |f: &mut Finding, s: Subject| {
        if !f.subjects.contains(&s) {
            f.subjects.push(s);
        }
    };
    match rtype {
        "AwsIamAccessKey" => {
            let key_from_id = rid
                .strip_prefix("AWS::IAM::AccessKey:")
                .filter(|k| ids::is_access_key(k));
            let (key, principal_type, user, principal_id, issuer_role) = match &typed {
                Some(d) => (
                    d.text("AccessKeyId")?
                        .filter(|k| ids::is_access_key(k))
                        .or(key_from_id),
                    d.text("PrincipalType")?,
                    d.text("PrincipalName")?.or(d.text("UserName")?),
                    d.text("PrincipalId")?,
                    match d.obj_opt("SessionContext")? {
                        Some(sc) => match sc.obj_opt("SessionIssuer")? {
                            Some(si) => si.text("UserName")?.map(str::to_string),
                            None => None,
                        },
                        None => None,
                    },
                ),
                None => (key_from_id, None, None, None, None),
            };
            let owner = match &typed {
                Some(d) => d
                    .text("AccountId")?
                    .filter(|a| ids::is_account(a))
                    .unwrap_or(acct),
                None => acct,
            };
            match principal_type.unwrap_or("IAMUser") {
                "Root" => push(
                    f,
                    Subject::Root {
                        account: owner.to_string(),
                    },
                ),
                "AssumedRole" => {
                    let role = issuer_role.or_else(|| user.map(str::to_string));
                    let session = principal_id
                        .and_then(|p| p.split_once(':'))
                        .filter(|(rid, s)| ids::is_role_id(rid) && !s.is_empty());
                    match (role, session) {
                        (Some(role), _) if ids::is_identity_center_role(&role) => push(
                            f,
                            Subject::IdentityCenterSession {
                                account: owner.to_string(),
                                name: role,
                                session: session.map(|(_, s)| s.to_string()),
                            },
                        ),
                        (Some(role), Some((rid, s))) if ids::is_iam_name(&role) => push(
                            f,
                            Subject::RoleSession {
                                account: owner.to_string(),
                                name: role,
                                id: Some(rid.to_string()),
                                session: s.to_string(),
                                access_key_id: key.map(str::to_string),
                            },
                        ),
                        (Some(role), None) if ids::is_iam_name(&role) => push(
                            f,
                            Subject::IamRole {
                                account: owner.to_string(),
                                name: role,
                            },
                        ),
                        _ => f.notes.push(format!(
                            "{}: an assumed-role key with no usable role name",
                            r.here()
                        )),
                    }
                }
                "FederatedUser" | "Federated" => push(
                    f,
                    Subject::FederatedUser {
                        account: owner.to_string(),
                        name: user.unwrap_or("unknown").to_string(),
                    },
                ),
                _ => match (key, user) {
                    (Some(k), u) => push(
                        f,
                        Subject::AccessKey {
                            account: owner.to_string(),
                            access_key_id: k.to_string(),
                            user: u.filter(|u| ids::is_iam_name(u)).map(str::to_string),
                        },
                    ),
                    (None, Some(u)) if ids::is_iam_name(u) => push(
                        f,
                        Subject::IamUser {
                            account: owner.to_string(),
                            name: u.to_string(),
                        },
                    ),
                    _ => f.notes.push(format!(
                        "{}: access-key resource names no key and no user (\"{rid}\")",
                        r.here()
                    )),
                },
            }
        }
        "AwsIamUser" | "AwsIamRole" => {
            let (kind, detail_key) = if rtype == "AwsIamUser" {
                ("user", "UserName")
            } else {
                ("role", "RoleName")
            };
            let from_details = match &typed {
                Some(d) => d.text(detail_key)?,
                None => None,
            };
            let details_pointer = || format!("{}/Details/{rtype}/{detail_key}", r.here());
            let arn = parse_arn(rid).filter(|a| a.service == "iam" && a.kind == kind);
            let owner = arn.as_ref().map_or(acct, |a| a.account).to_string();
            let from_arn = arn.as_ref().map(|a| a.name);
            // A user ARN may end in the user's id (AIDA…) rather than its name.
            let arn_is_id =
                from_arn.is_some_and(|n| n.starts_with("AIDA") || n.starts_with("AROA"));
            // The ARN is the identity of record: a details name that disagrees with it makes
            // the finding ambiguous about who is involved.
            if let (Some(d), Some(a)) = (from_details, from_arn)
                && !arn_is_id
                && d != a
            {
                f.conflicts.push(format!(
                    "{}: the resource ARN names {kind} {a:?} but its details name {d:?}",
                    r.here()
                ));
                return Ok(());
            }
            let name = match (from_details, from_arn) {
                (Some(d), _) if ids::is_iam_name(d) => d,
                (Some(d), _) => {
                    return Err(InputError::invalid(
                        &details_pointer(),
                        d,
                        "an IAM name (1-128 of letters, digits and _+=,.@-)",
                    ));
                }
                (None, Some(n)) if arn_is_id && kind == "user" => {
                    f.notes.push(format!(
                        "{}: the user ARN ends in a user id ({n}), not a name; quell does not guess the user",
                        r.here()
                    ));
                    return Ok(());
                }
                (None, Some(n)) if ids::is_iam_name(n) => n,
                _ => {
                    return Err(InputError::invalid(
                        &r.pointer("Id"),
                        rid,
                        if kind == "user" {
                            "an IAM user ARN (arn:aws:iam::<account>:user/<name>)"
                        } else {
                            "an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                        },
                    ));
                }
            };
            let subject = if kind == "user" {
                Subject::IamUser {
                    account: owner,
                    name: name.to_string(),
                }
            } else {
                if arn
                    .as_ref()
                    .is_some_and(|a| a.path_and_name.starts_with("aws-service-role/"))
                    && !ids::is_service_linked_role(name)
                {
                    f.notes.push(format!("{name} is a service-linked role"));
                }
                Subject::IamRole {
                    account: owner,
                    name: name.to_string(),
                }
            };
            push(f, subject);
        }
        "AwsAccount" => f.notes.push(format!(
            "{}: an account-level finding names no principal; quell does not guess one",
            r.here()
        )),
        other => f.notes.push(format!(
            "{}: resource type {other} is not an identity",
            r.here()
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_specific_controls_map_to_the_consolidated_one() {
        let cis12 = "arn:aws:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0/rule/1.3";
        let cis14 = "arn:aws:securityhub:::standards/cis-aws-foundations-benchmark/v/1.4.0";
        assert_eq!(consolidated_control(cis12, "1.3"), "IAM.8");
        assert_eq!(consolidated_control(cis12, "1.14"), "IAM.6");
        assert_eq!(consolidated_control(cis14, "1.14"), "IAM.3");
        assert_eq!(consolidated_control(cis14, "1.12"), "IAM.22");
        assert_eq!(
            consolidated_control("pci-dss/v/3.2.1", "PCI.IAM.7"),
            "IAM.8"
        );
        assert_eq!(consolidated_control("", "1.3"), "IAM.8");
        assert_eq!(consolidated_control(cis12, "2.2"), "2.2");
        assert_eq!(consolidated_control("", "IAM.8"), "IAM.8");
    }

    #[test]
    fn the_update_region_falls_back_along_arns() {
        assert_eq!(
            arn_region("arn:aws:securityhub:eu-west-1::product/aws/guardduty").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("arn:aws:securityhub:::ruleset/cis"), None);
        assert_eq!(arn_region("not-an-arn"), None);
    }
}
