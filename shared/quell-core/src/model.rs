//! The normalized, cross-cloud finding model. Every source becomes [`Finding`]s.

use serde::{Deserialize, Serialize};

/// Which cloud a subject or action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    Aws,
    Azure,
    /// On-premises Active Directory: no API quell can call.
    OnPremises,
}

/// Where a finding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Guardduty,
    Securityhub,
    AccessAnalyzer,
    DefenderXdr,
    GraphAlert,
    EntraRiskDetection,
    EntraRiskyUser,
    /// Entra ID Protection for workload identities: `servicePrincipalRiskDetection`.
    EntraServicePrincipalRiskDetection,
    /// Entra ID Protection for workload identities: `riskyServicePrincipal`.
    EntraRiskyServicePrincipal,
    Runbook,
}

impl Source {
    /// The cloud whose detections this source reports, exhaustively: a new source that forgets
    /// its cloud does not compile. `None` for a runbook request, whose cloud is its principal's
    /// ([`Finding::cloud`]).
    pub fn cloud(self) -> Option<Cloud> {
        match self {
            Source::Guardduty | Source::Securityhub | Source::AccessAnalyzer => Some(Cloud::Aws),
            Source::DefenderXdr
            | Source::GraphAlert
            | Source::EntraRiskDetection
            | Source::EntraRiskyUser
            | Source::EntraServicePrincipalRiskDetection
            | Source::EntraRiskyServicePrincipal => Some(Cloud::Azure),
            Source::Runbook => None,
        }
    }
}

/// The kind of threat a finding reports; policy chooses a response per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Credentials used by someone else: stolen keys, malicious callers, compromised accounts.
    CredentialCompromise,
    /// Reconnaissance, pen-test tooling and anomalies that suggest but do not prove compromise.
    AnomalousBehavior,
    /// Entra ID Protection user risk.
    IdentityRisk,
    /// Credentials or roles nobody uses (Access Analyzer, Security Hub IAM.8/IAM.22).
    UnusedAccess,
    /// Configuration findings with no safe automatic fix (key age, root MFA).
    Posture,
    /// A human asked for this containment.
    Manual,
    /// A finding type quell does not know (a new GuardDuty type, an unknown Defender service
    /// source): escalated to a human, never contained.
    Unrecognized,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::CredentialCompromise => "credential_compromise",
            Family::AnomalousBehavior => "anomalous_behavior",
            Family::IdentityRisk => "identity_risk",
            Family::UnusedAccess => "unused_access",
            Family::Posture => "posture",
            Family::Manual => "manual",
            Family::Unrecognized => "unrecognized",
        }
    }
}

/// Whether a finding is live. Only `Active` findings lead to containment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    /// A generated sample (GuardDuty `additionalInfo.sample`, ASFF `Sample`): never acted on.
    Sample,
    Archived,
    Resolved,
    Suppressed,
    /// Security Hub `Workflow.Status = NOTIFIED`: someone (maybe quell) already handled it.
    Notified,
    /// A compliance check that passed or could not run.
    Passed,
    /// The finding was deleted (Access Analyzer `isDeleted`, Entra `isDeleted` user).
    Deleted,
    /// The source could not evaluate the resource (Access Analyzer `error`).
    Error,
    /// Risk that was dismissed, remediated or confirmed safe.
    Dismissed,
    /// Classified a false positive or benign (expected activity, security testing, a
    /// line-of-business application) by whoever triaged it.
    Benign,
    /// A state quell does not know: not acted on, and not taken as dismissed either.
    Unknown,
}

/// Severity on one scale: a label and a 0–10 score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Severity {
    pub label: SeverityLabel,
    pub score: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeverityLabel {
    /// The source gave no usable severity; never meets a threshold.
    Unknown,
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl SeverityLabel {
    pub fn parse(s: &str) -> SeverityLabel {
        match s.trim().to_ascii_lowercase().as_str() {
            "informational" | "info" => SeverityLabel::Informational,
            "low" => SeverityLabel::Low,
            "medium" | "moderate" => SeverityLabel::Medium,
            "high" => SeverityLabel::High,
            "critical" => SeverityLabel::Critical,
            _ => SeverityLabel::Unknown,
        }
    }
    /// The middle of the label's band on the 0–10 scale.
    pub fn nominal_score(self) -> f64 {
        match self {
            SeverityLabel::Unknown | SeverityLabel::Informational => 0.0,
            SeverityLabel::Low => 2.0,
            SeverityLabel::Medium => 5.0,
            SeverityLabel::High => 8.0,
            SeverityLabel::Critical => 9.5,
        }
    }
}

impl Severity {
    pub const UNKNOWN: Severity = Severity {
        label: SeverityLabel::Unknown,
        score: 0.0,
    };
    /// From a label alone.
    pub fn from_label(label: SeverityLabel) -> Severity {
        Severity {
            label,
            score: label.nominal_score(),
        }
    }
    /// From a 0–10 score with GuardDuty's bands (Low 1–3.9, Medium 4–6.9, High 7–8.9, Critical 9–10).
    pub fn from_score(score: f64) -> Severity {
        let score = if score.is_finite() {
            score.clamp(0.0, 10.0)
        } else {
            0.0
        };
        let label = if score >= 9.0 {
            SeverityLabel::Critical
        } else if score >= 7.0 {
            SeverityLabel::High
        } else if score >= 4.0 {
            SeverityLabel::Medium
        } else if score >= 1.0 {
            SeverityLabel::Low
        } else {
            SeverityLabel::Informational
        };
        Severity { label, score }
    }
}

/// An identity a finding names. Serialized with a `kind` tag; see README "JSON schema".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    IamUser {
        account: String,
        name: String,
    },
    /// A specific access key. `AKIA…` is long-term (deactivatable); `ASIA…` is an STS credential.
    AccessKey {
        account: String,
        access_key_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    IamRole {
        account: String,
        name: String,
    },
    /// One session of an assumed role (`AROA…:<session>`); for EC2 credentials the session is the instance id.
    RoleSession {
        account: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        session: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_key_id: Option<String>,
    },
    Root {
        account: String,
    },
    FederatedUser {
        account: String,
        name: String,
    },
    /// A session of an IAM Identity Center permission-set role (`AWSReservedSSO_*`).
    IdentityCenterSession {
        account: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// A person who signs in through IAM Identity Center: the session name of an
    /// `AWSReservedSSO_*` role is their Identity Center user name. Contained in every account
    /// they can reach, through the permission sets assigned to them.
    IdentityCenterUser {
        /// The account the finding saw them in (the breaker counts there); for a runbook
        /// request, the account it names.
        account: String,
        user_name: String,
        /// The identity store user id, once resolved (`identitystore:GetUserId`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    EntraUser {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_premises_synced: Option<bool>,
    },
    /// An Active Directory account with no Entra object: only a human can act on it.
    OnPremisesAccount {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sid: Option<String>,
    },
    ServicePrincipal {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
        /// The service principal's object id; when only the application is known (OAuth-app
        /// evidence carries the *application* object id), its appId, with `app_id` set too.
        id: String,
        /// The application (client) id: the executor resolves the service principal by it
        /// (`servicePrincipals(appId='…')`) rather than trusting `id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The `keyId` of the password credential a finding names, when it names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
    },
    ManagedIdentity {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

impl Subject {
    pub fn cloud(&self) -> Cloud {
        match self {
            Subject::IamUser { .. }
            | Subject::AccessKey { .. }
            | Subject::IamRole { .. }
            | Subject::RoleSession { .. }
            | Subject::Root { .. }
            | Subject::FederatedUser { .. }
            | Subject::IdentityCenterSession { .. }
            | Subject::IdentityCenterUser { .. } => Cloud::Aws,
            Subject::EntraUser { .. }
            | Subject::ServicePrincipal { .. }
            | Subject::ManagedIdentity { .. } => Cloud::Azure,
            Subject::OnPremisesAccount { .. } => Cloud::OnPremises,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Subject::IamUser { .. } => "iam_user",
            Subject::AccessKey { .. } => "access_key",
            Subject::IamRole { .. } => "iam_role",
            Subject::RoleSession { .. } => "role_session",
            Subject::Root { .. } => "root",
            Subject::FederatedUser { .. } => "federated_user",
            Subject::IdentityCenterSession { .. } => "identity_center_session",
            Subject::IdentityCenterUser { .. } => "identity_center_user",
            Subject::EntraUser { .. } => "entra_user",
            Subject::OnPremisesAccount { .. } => "on_premises_account",
            Subject::ServicePrincipal { .. } => "service_principal",
            Subject::ManagedIdentity { .. } => "managed_identity",
        }
    }

    /// The AWS account that owns the subject.
    pub fn account(&self) -> Option<&str> {
        match self {
            Subject::IamUser { account, .. }
            | Subject::AccessKey { account, .. }
            | Subject::IamRole { account, .. }
            | Subject::RoleSession { account, .. }
            | Subject::Root { account }
            | Subject::FederatedUser { account, .. }
            | Subject::IdentityCenterSession { account, .. }
            | Subject::IdentityCenterUser { account, .. } => Some(account),
            _ => None,
        }
    }

    /// The Entra tenant that owns the subject.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Subject::EntraUser { tenant, .. }
            | Subject::ServicePrincipal { tenant, .. }
            | Subject::ManagedIdentity { tenant, .. } => tenant.as_deref(),
            _ => None,
        }
    }

    /// Every name this subject answers to, for matching protection patterns: ARNs, names,
    /// UPNs, object ids, key ids.
    pub fn aliases(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Subject::IamUser { account, name } => {
                out.push(name.clone());
                out.push(format!("arn:aws:iam::{account}:user/{name}"));
            }
            Subject::AccessKey {
                account,
                access_key_id,
                user,
            } => {
                out.push(access_key_id.clone());
                if let Some(user) = user {
                    out.push(user.clone());
                    out.push(format!("arn:aws:iam::{account}:user/{user}"));
                }
            }
            Subject::IamRole { account, name } => {
                out.push(name.clone());
                out.push(format!("arn:aws:iam::{account}:role/{name}"));
            }
            Subject::RoleSession {
                account,
                name,
                id,
                session,
                ..
            } => {
                out.push(name.clone());
                out.push(format!("arn:aws:iam::{account}:role/{name}"));
                out.push(format!(
                    "arn:aws:sts::{account}:assumed-role/{name}/{session}"
                ));
                if let Some(id) = id {
                    out.push(format!("{id}:{session}"));
                }
            }
            Subject::Root { account } => out.push(format!("arn:aws:iam::{account}:root")),
            Subject::FederatedUser { account, name } => {
                out.push(name.clone());
                out.push(format!("arn:aws:sts::{account}:federated-user/{name}"));
            }
            Subject::IdentityCenterSession {
                account,
                name,
                session,
            } => {
                out.push(name.clone());
                out.push(format!("arn:aws:iam::{account}:role/{name}"));
                // The person behind the session: protected patterns name Identity Center
                // users by user name.
                out.extend(session.iter().cloned());
            }
            Subject::IdentityCenterUser {
                user_name, user_id, ..
            } => {
                out.push(user_name.clone());
                out.extend(user_id.iter().cloned());
            }
            Subject::EntraUser { id, name, .. } => {
                out.extend(id.iter().cloned());
                out.extend(name.iter().cloned());
            }
            Subject::OnPremisesAccount { domain, name, sid } => {
                out.extend(sid.iter().cloned());
                out.extend(name.iter().cloned());
                if let (Some(d), Some(n)) = (domain, name) {
                    out.push(format!("{d}\\{n}"));
                }
            }
            Subject::ServicePrincipal {
                id, name, app_id, ..
            } => {
                out.push(id.clone());
                out.extend(app_id.iter().cloned());
                out.extend(name.iter().cloned());
            }
            Subject::ManagedIdentity { id, name, .. } => {
                out.push(id.clone());
                out.extend(name.iter().cloned());
            }
        }
        out
    }

    /// A short human label: `iam_user alice (111122223333)`.
    pub fn label(&self) -> String {
        let who = match self {
            Subject::IamUser { name, .. }
            | Subject::IamRole { name, .. }
            | Subject::FederatedUser { name, .. } => name.clone(),
            Subject::AccessKey {
                access_key_id,
                user,
                ..
            } => match user {
                Some(u) => format!("{access_key_id} of {u}"),
                None => access_key_id.clone(),
            },
            Subject::RoleSession { name, session, .. } => format!("{name}/{session}"),
            Subject::IdentityCenterSession { name, session, .. } => match session {
                Some(s) => format!("{name}/{s}"),
                None => name.clone(),
            },
            Subject::IdentityCenterUser { user_name, .. } => user_name.clone(),
            Subject::Root { .. } => "root".to_string(),
            Subject::EntraUser { id, name, .. } => name
                .clone()
                .or_else(|| id.clone())
                .unwrap_or_else(|| "?".into()),
            Subject::OnPremisesAccount { domain, name, sid } => match (domain, name) {
                (Some(d), Some(n)) => format!("{d}\\{n}"),
                (None, Some(n)) => n.clone(),
                _ => sid.clone().unwrap_or_else(|| "?".into()),
            },
            Subject::ServicePrincipal { id, name, .. }
            | Subject::ManagedIdentity { id, name, .. } => match name {
                Some(n) => format!("{n} ({id})"),
                None => id.clone(),
            },
        };
        match (self.account(), self.tenant()) {
            (Some(a), _) => format!("{} {who} in {a}", self.kind()),
            (_, Some(t)) => format!("{} {who} in tenant {t}", self.kind()),
            _ => format!("{} {who}", self.kind()),
        }
    }
}

/// The record a source keeps of a finding, so quell can annotate it after acting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingRef {
    SecurityhubFinding {
        account: String,
        region: Option<String>,
        id: String,
        product_arn: String,
    },
    /// A Security Hub finding in OCSF (`Findings Imported V2`), updated with
    /// `BatchUpdateFindingsV2`.
    SecurityhubOcsfFinding {
        account: String,
        region: Option<String>,
        /// `finding_info.uid`
        uid: String,
        /// `metadata.product.uid`
        product_uid: String,
    },
    DefenderAlert {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
        id: String,
        /// What raised the alert (Graph `detectionSource`, XDR `DetectionSource`): Microsoft's
        /// own detections, or a rule the customer wrote (custom detection, Sentinel analytics).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detection_source: Option<String>,
    },
    /// The finding itself, as the target of a `notify` that names no principal.
    Finding { source: Source, id: String },
}

/// Serializes a subject with its `cloud` beside its `kind` (the documented JSON schema).
pub fn serialize_subject<S: serde::Serializer>(s: &Subject, ser: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct WithCloud<'a> {
        cloud: Cloud,
        #[serde(flatten)]
        subject: &'a Subject,
    }
    WithCloud {
        cloud: s.cloud(),
        subject: s,
    }
    .serialize(ser)
}

fn serialize_subjects<S: serde::Serializer>(v: &[Subject], ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    struct One<'a>(&'a Subject);
    impl Serialize for One<'_> {
        fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            serialize_subject(self.0, ser)
        }
    }
    let mut seq = ser.serialize_seq(Some(v.len()))?;
    for s in v {
        seq.serialize_element(&One(s))?;
    }
    seq.end()
}

/// One normalized finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub source: Source,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub severity: Severity,
    pub family: Family,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// When the activity was last seen (RFC 3339), where the source says: GuardDuty
    /// `service.eventLastSeen`, ASFF `LastObservedAt`. A re-delivered finding with a later
    /// occurrence is a new theft of the same credential: it moves a revocation's cut-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(serialize_with = "serialize_subjects")]
    pub subjects: Vec<Subject>,
    /// Where to record what quell did (Security Hub finding, Defender alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<FindingRef>,
    /// Security Hub custom action name, when a human pressed quell's button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_action: Option<String>,
    /// A runbook request's explicit instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<Runbook>,
    /// Things the normalizer noticed and set aside (e.g. a `SYSTEM` account in evidence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Places where the finding disagrees with itself about who is involved (a resource ARN
    /// and its details naming different users): the finding contains no one and a human is
    /// told both names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

impl Finding {
    /// The cloud the finding belongs to: its source's, or for a runbook request its first
    /// principal's (an on-premises account is reported where Defender runs, on Azure).
    pub fn cloud(&self) -> Cloud {
        self.source.cloud().unwrap_or_else(|| {
            match self.subjects.iter().map(Subject::cloud).next() {
                Some(Cloud::Aws) => Cloud::Aws,
                Some(Cloud::Azure | Cloud::OnPremises) => Cloud::Azure,
                // A runbook request with no usable principal, or an AWS-looking tenant-less one.
                None if self.account.is_some() => Cloud::Aws,
                None if self.tenant.is_some() => Cloud::Azure,
                None => Cloud::Aws,
            }
        })
    }
}

/// What a runbook request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runbook {
    /// The full containment the policy defines for the principal's kind, quarantine included.
    Contain,
    /// Deny-all quarantine (AWS) or disable (Entra) only.
    Quarantine,
    /// Revoke sessions only.
    RevokeSessions,
    /// Deactivate one access key or remove one service-principal credential.
    DisableKey,
    /// Deactivate a user's dormant keys.
    DisableDormantKeys,
}

impl Runbook {
    pub fn parse(s: &str) -> Option<Runbook> {
        Some(match s {
            "contain" => Runbook::Contain,
            "quarantine" => Runbook::Quarantine,
            "revoke_sessions" => Runbook::RevokeSessions,
            "disable_key" => Runbook::DisableKey,
            "disable_dormant_keys" => Runbook::DisableDormantKeys,
            _ => return None,
        })
    }
}

/// Identifier checks applied before any id reaches a plan.
pub mod ids {
    /// The detection a finding id names, whichever feed delivered it: GuardDuty's finding id
    /// for a GuardDuty finding and for Security Hub's copies of it (ASFF `Id` and OCSF
    /// `finding_info.uid` are the GuardDuty finding's ARN, `…:detector/<d>/finding/<id>`), so
    /// one detection arriving three times is one finding id: one containment, one breaker slot.
    pub fn detection_id(finding: &str) -> &str {
        match finding.strip_prefix("arn:") {
            Some(rest) if rest.contains(":guardduty:") => finding
                .rsplit_once("/finding/")
                .map(|(_, id)| id)
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .unwrap_or(finding),
            _ => finding,
        }
    }

    /// 12 ASCII digits.
    pub fn is_account(s: &str) -> bool {
        s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
    }
    /// `AKIA`/`ASIA` followed by 16 upper-case letters or digits.
    pub fn is_access_key(s: &str) -> bool {
        s.len() == 20
            && (s.starts_with("AKIA") || s.starts_with("ASIA"))
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }
    /// A temporary (STS) credential, which cannot be deactivated.
    pub fn is_temporary_key(s: &str) -> bool {
        s.starts_with("ASIA")
    }
    /// An IAM user, role or session name: 1–128 of `\w+=,.@-` (session names allow the same).
    pub fn is_iam_name(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    }
    /// A GUID in canonical 8-4-4-4-12 form.
    pub fn is_guid(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() == 5
            && parts
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
    }
    /// A user principal name: `local@domain`, no spaces, at most 1,024 characters.
    pub fn is_upn(s: &str) -> bool {
        s.len() <= 1024
            && !s.contains(char::is_whitespace)
            && matches!(s.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@'))
    }
    /// A unique id of an IAM role (`AROA…`).
    pub fn is_role_id(s: &str) -> bool {
        s.starts_with("AROA")
            && (16..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }
    /// Placeholder values generated sample findings carry.
    pub fn is_placeholder(s: &str) -> bool {
        s.starts_with("GeneratedFinding") || s.eq_ignore_ascii_case("null") || s == "-"
    }
    /// Service-linked roles are owned by AWS services and must never be modified.
    pub fn is_service_linked_role(name: &str) -> bool {
        name.starts_with("AWSServiceRoleFor")
    }
    /// A stable 64-bit FNV-1a hash of some strings (separated), for deterministic ids.
    pub fn stable_hash(parts: &[&str]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in parts {
            for b in p.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
    /// An EC2 instance id (`i-` and 8 or 17 hex digits): the session name of instance-profile
    /// credentials.
    pub fn is_instance_id(s: &str) -> bool {
        s.strip_prefix("i-").is_some_and(|h| {
            (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
        })
    }
    /// quell's own roles, protected whatever the policy's `protected` list says: the function
    /// roles (`quell-*`) and the member role. The SCP template (infra/aws/scp.yaml) stops anyone
    /// else from creating or changing roles with these names.
    pub fn is_quell_role(name: &str, member_role: &str) -> bool {
        name.get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("quell-"))
            || name.eq_ignore_ascii_case(member_role)
    }
    /// Identity Center permission-set roles: managed by Identity Center, which reverts edits.
    /// An IAM Identity Center user name: 1 to 128 characters, none of them white space or
    /// control characters (identitystore `UserName`).
    pub fn is_identity_center_user_name(name: &str) -> bool {
        (1..=128).contains(&name.chars().count())
            && !name.chars().any(|c| c.is_whitespace() || c.is_control())
    }

    /// An identity store user id: a GUID, optionally after ten hex digits and a dash
    /// (`9067d9b5a1-0a41-4c3e-8a4a-3f1f2b6d0001`, identitystore `UserId`).
    pub fn is_identity_store_user_id(id: &str) -> bool {
        let guid = match id.split_once('-') {
            Some((head, rest))
                if head.len() == 10 && head.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                rest
            }
            _ => id,
        };
        is_guid(guid)
    }

    pub fn is_identity_center_role(name: &str) -> bool {
        name.starts_with("AWSReservedSSO_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_bands_compare_as_floats() {
        assert_eq!(Severity::from_score(8.9).label, SeverityLabel::High);
        assert_eq!(Severity::from_score(9.0).label, SeverityLabel::Critical);
        assert_eq!(Severity::from_score(3.99).label, SeverityLabel::Low);
        assert_eq!(
            Severity::from_score(f64::NAN).label,
            SeverityLabel::Informational
        );
        assert_eq!(Severity::from_score(55.0).score, 10.0);
    }

    #[test]
    fn id_checks() {
        assert!(ids::is_access_key("AKIAIOSFODNN7EXAMPLE"));
        assert!(!ids::is_access_key("GeneratedFindingAccessKeyId"));
        assert!(!ids::is_access_key("ASIAIM"));
        assert!(ids::is_account("111122223333"));
        assert!(!ids::is_account("11112222333a"));
        assert!(ids::is_guid("51e26eae-d07b-44e5-bb0b-249f49569a8c"));
        assert!(!ids::is_guid("S-1-5-2"));
        assert!(ids::is_upn("joe@contoso.com"));
        assert!(!ids::is_upn("joe danger@contoso.com"));
        assert!(!ids::is_iam_name("a/b"));
    }

    #[test]
    fn subject_json_is_flat_and_tagged() {
        let s = Subject::AccessKey {
            account: "111122223333".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            user: Some("alice".into()),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["kind"], "access_key");
        assert_eq!(v["user"], "alice");
        assert_eq!(
            s.label(),
            "access_key AKIAIOSFODNN7EXAMPLE of alice in 111122223333"
        );
    }
}
