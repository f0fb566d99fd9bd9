//! AWS sources on EventBridge: GuardDuty, Security Hub (ASFF) and IAM Access Analyzer.

use super::Batch;
use super::util::{account, iam_name, parse_arn};
use crate::error::InputError;
use crate::json::Obj;
use crate::model::{
    Family, Finding, FindingRef, Severity, SeverityLabel, Source, Status, Subject, ids,
};

const GD_FINDING: &str = "GuardDuty Finding";
const SH_IMPORTED: &str = "Security Hub Findings - Imported";
const SH_CUSTOM: &str = "Security Hub Findings - Custom Action";
const SH_LEGACY: &str = "Security Hub Findings";
const SH_INSIGHT: &str = "Security Hub Insight Results";
const SH_V2: &str = "Findings Imported V2";
const AA_UNUSED: &str = "Unused Access Finding for IAM entities";
const AA_EXTERNAL: &str = "Access Analyzer Finding";
const AA_INTERNAL: &str = "Internal Access Finding";

pub(super) fn eventbridge(env: &Obj<'_>) -> Result<Batch, InputError> {
    let source = env.str_req("source")?;
    let detail_type = env.str_req("detail-type")?;
    let here = env.here().to_string();
    let spoofed = |detail: &str| InputError::Spoofed {
        pointer: env.pointer("source"),
        source_name: source.to_string(),
        detail: detail.to_string(),
    };
    match (source, detail_type) {
        ("quell", _) => Ok(Batch::ignore(
            &here,
            "quell's own audit event; quell never reacts to itself",
        )),
        ("aws.guardduty", GD_FINDING) => {
            envelope_account(env)?;
            guardduty(&env.obj_req("detail")?).map(Batch::one)
        }
        ("aws.securityhub", SH_IMPORTED | SH_CUSTOM | SH_LEGACY) => {
            envelope_account(env)?;
            securityhub(env, detail_type == SH_CUSTOM)
        }
        ("aws.securityhub", SH_INSIGHT) => Ok(Batch::ignore(
            &here,
            "Security Hub insight results carry counts, not findings",
        )),
        ("aws.securityhub", SH_V2) => Ok(Batch::ignore(
            &here,
            "Security Hub OCSF (V2) findings are not supported yet; enable the ASFF \"Findings - Imported\" events",
        )),
        ("aws.access-analyzer", AA_UNUSED) => {
            envelope_account(env)?;
            access_analyzer(&env.obj_req("detail")?).map(Batch::one)
        }
        ("aws.access-analyzer", AA_EXTERNAL | AA_INTERNAL) => Ok(Batch::ignore(
            &here,
            "Access Analyzer external/internal access findings concern resource policies, not identities",
        )),
        ("aws.guardduty" | "aws.securityhub" | "aws.access-analyzer", other) => Ok(Batch::ignore(
            &here,
            format!("{source} event of type {other:?} is not an identity finding"),
        )),
        (_, GD_FINDING) => Err(spoofed("only aws.guardduty sends \"GuardDuty Finding\"")),
        (_, SH_IMPORTED | SH_CUSTOM | SH_LEGACY) => {
            Err(spoofed("only aws.securityhub sends Security Hub findings"))
        }
        (_, AA_UNUSED) => Err(spoofed(
            "only aws.access-analyzer sends unused-access findings",
        )),
        _ => Err(InputError::unsupported(
            &env.pointer("source"),
            format!(
                "EventBridge source {source:?} with detail-type {detail_type:?} is not one quell handles (expected aws.guardduty, aws.securityhub or aws.access-analyzer)"
            ),
        )),
    }
}

fn envelope_account(env: &Obj<'_>) -> Result<(), InputError> {
    // The envelope account receives the event; it is checked but never acted in.
    if env.has("account") {
        account(env, "account")?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// GuardDuty

/// Family of a GuardDuty finding type, from its threat purpose (`Purpose:Resource/Family`).
fn guardduty_family(kind: &str) -> Family {
    let purpose = kind.split(':').next().unwrap_or("");
    match purpose {
        "Discovery" | "Recon" | "PenTest" => Family::AnomalousBehavior,
        "Policy" => Family::Posture,
        _ => Family::CredentialCompromise,
    }
}

fn guardduty(d: &Obj<'_>) -> Result<Finding, InputError> {
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
        family: guardduty_family(&kind),
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
    };

    if finding.kind.starts_with("AttackSequence:") {
        let seq = service
            .as_ref()
            .map(|s| s.obj_opt("detection"))
            .transpose()?
            .flatten()
            .map(|det| det.obj_opt("sequence"))
            .transpose()?
            .flatten();
        if let Some(seq) = seq {
            for actor in seq.objs("actors")? {
                if let Some(user) = actor.obj_opt("user")? {
                    sequence_actor(&user, &acct, &mut finding)?;
                }
            }
        }
        if finding.subjects.is_empty() {
            return Err(InputError::Missing {
                pointer: "/detail/service/detection/sequence/actors".into(),
                expected: "at least one actor with a user (an attack sequence names who did it)",
            });
        }
        return Ok(finding);
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
    let is_iam_finding = resource_type == "AccessKey" || finding.kind.contains(":IAMUser/");
    match details {
        Some(k) if is_iam_finding => access_key_details(&k, &acct, &mut finding)?,
        _ if is_iam_finding => {
            return Err(InputError::Missing {
                pointer: "/detail/resource/accessKeyDetails".into(),
                expected: "the identity of an IAM finding (userName, userType, principalId)",
            });
        }
        _ => finding.notes.push(format!(
            "resource type {resource_type:?} is not an IAM identity; quell contains identities only"
        )),
    }
    Ok(finding)
}

fn access_key_details(k: &Obj<'_>, acct: &str, f: &mut Finding) -> Result<(), InputError> {
    let user_type = k.text("userType")?.unwrap_or("");
    let user_name = k.text("userName")?;
    let principal = k.text("principalId")?;
    let key = k.text("accessKeyId")?;
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
                Some(n) => iam_name(k, "userName", n)?,
                None => {
                    return Err(InputError::Missing {
                        pointer: k.pointer("userName"),
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
                Some(n) => iam_name(k, "userName", n)?,
                None => {
                    return Err(InputError::Missing {
                        pointer: k.pointer("userName"),
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
            "userType {other:?} is not one quell can act on (IAMUser, AssumedRole, Root, Federated)"
        )),
    }
    Ok(())
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

// ------------------------------------------------------------------------------------------
// Security Hub (ASFF)

fn securityhub(env: &Obj<'_>, custom_action: bool) -> Result<Batch, InputError> {
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
        return Err(InputError::EmptyBatch {
            pointer: detail.pointer("findings"),
        });
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
            out.findings.push(asff(&f, action_name.clone())?);
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
    let c = control
        .trim_start_matches("CIS.")
        .trim_start_matches("PCI.");
    matches!(c, "IAM.8" | "IAM.22" | "1.3" | "1.12")
}

fn asff(f: &Obj<'_>, custom_action: Option<String>) -> Result<Finding, InputError> {
    let id = f.str_req("Id")?.to_string();
    let product_arn = f.str_req("ProductArn")?.to_string();
    let acct = account(f, "AwsAccountId")?;
    let region = f.text("Region")?.map(str::to_string);
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

    let control = match f.obj_opt("Compliance")? {
        Some(c) => c.text("SecurityControlId")?.map(str::to_string),
        None => None,
    }
    .or(match f.obj_opt("ProductFields")? {
        Some(p) => p
            .text("ControlId")?
            .or(p.text("RuleId")?)
            .map(str::to_string),
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
        id,
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
        "AwsIamUser" => {
            let from_details = match &typed {
                Some(d) => d.text("UserName")?,
                None => None,
            };
            let arn = parse_arn(rid).filter(|a| a.service == "iam" && a.kind == "user");
            let owner = arn.as_ref().map_or(acct, |a| a.account).to_string();
            let name = from_details.or(arn.as_ref().map(|a| a.name));
            match name {
                Some(n) if n.starts_with("AIDA") && from_details.is_none() => f.notes.push(format!(
                    "{}: the user ARN ends in a user id ({n}), not a name; quell does not guess the user",
                    r.here()
                )),
                Some(n) if ids::is_iam_name(n) => push(
                    f,
                    Subject::IamUser {
                        account: owner,
                        name: n.to_string(),
                    },
                ),
                _ => {
                    return Err(InputError::invalid(
                        &r.pointer("Id"),
                        rid,
                        "an IAM user ARN (arn:aws:iam::<account>:user/<name>)",
                    ));
                }
            }
        }
        "AwsIamRole" => {
            let from_details = match &typed {
                Some(d) => d.text("RoleName")?,
                None => None,
            };
            let arn = parse_arn(rid).filter(|a| a.service == "iam" && a.kind == "role");
            let owner = arn.as_ref().map_or(acct, |a| a.account).to_string();
            let service_linked = arn
                .as_ref()
                .is_some_and(|a| a.path_and_name.starts_with("aws-service-role/"));
            match from_details.or(arn.as_ref().map(|a| a.name)) {
                Some(n) if ids::is_iam_name(n) => {
                    if service_linked && !ids::is_service_linked_role(n) {
                        f.notes.push(format!("{n} is a service-linked role"));
                    }
                    push(
                        f,
                        Subject::IamRole {
                            account: owner,
                            name: n.to_string(),
                        },
                    )
                }
                _ => {
                    return Err(InputError::invalid(
                        &r.pointer("Id"),
                        rid,
                        "an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
                    ));
                }
            }
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

// ------------------------------------------------------------------------------------------
// IAM Access Analyzer

fn access_analyzer(d: &Obj<'_>) -> Result<Finding, InputError> {
    let id = d.str_req("findingId")?.to_string();
    let kind = d.str_req("findingType")?.to_string();
    let resource = d.str_req("resource")?;
    let acct = account(d, "accountId")?;
    let arn = parse_arn(resource)
        .filter(|a| a.service == "iam" && (a.kind == "user" || a.kind == "role"))
        .ok_or_else(|| {
            InputError::invalid(&d.pointer("resource"), resource, "an IAM user or role ARN")
        })?;
    if !ids::is_iam_name(arn.name) {
        return Err(InputError::invalid(
            &d.pointer("resource"),
            resource,
            "an IAM user or role ARN",
        ));
    }
    let status = if d.bool_opt("isDeleted")? == Some(true) {
        Status::Deleted
    } else if d.text("error")?.is_some() {
        Status::Error
    } else {
        match d.text("status")?.unwrap_or("ACTIVE") {
            "ARCHIVED" => Status::Archived,
            "RESOLVED" => Status::Resolved,
            _ => Status::Active,
        }
    };
    let subject = if arn.kind == "user" {
        Subject::IamUser {
            account: arn.account.to_string(),
            name: arn.name.to_string(),
        }
    } else {
        Subject::IamRole {
            account: arn.account.to_string(),
            name: arn.name.to_string(),
        }
    };
    let mut notes = Vec::new();
    if arn.account != acct {
        notes.push(format!(
            "the resource ARN's account {} differs from accountId {acct}; quell acts in the ARN's account",
            arn.account
        ));
    }
    if let Some(e) = d.text("error")? {
        notes.push(format!(
            "Access Analyzer could not analyze the resource: {e}"
        ));
    }
    Ok(Finding {
        source: Source::AccessAnalyzer,
        title: format!("{kind} on {resource}"),
        id,
        kind,
        // Unused access is hygiene, not an attack.
        severity: Severity::from_label(SeverityLabel::Low),
        family: Family::UnusedAccess,
        status,
        account: Some(arn.account.to_string()),
        tenant: None,
        region: None,
        last_seen: None,
        subjects: vec![subject],
        record: None,
        custom_action: None,
        runbook: None,
        notes,
    })
}
