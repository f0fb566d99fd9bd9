//! The operator's policy: what quell may do, to whom, and when. TOML; see `policy.example.toml`.

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::model::{Family, SeverityLabel, Subject};

/// The commented example policy shipped in the repository; it equals [`Policy::default`].
pub const EXAMPLE_POLICY: &str = include_str!("../../../policy.example.toml");

/// Whether plans are executed or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    #[default]
    #[serde(rename = "dry-run")]
    DryRun,
    #[serde(rename = "enforce")]
    Enforce,
}

/// What to do about a family of findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Contain the identities the finding names.
    Contain,
    /// Escalate to a human only.
    Notify,
    /// Do nothing (the plan says why).
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyPolicy {
    pub response: Response,
    pub min_severity: SeverityLabel,
    /// Release quell's containment automatically this many hours after it (like Defender's
    /// contain-user expiry), at the first scheduled run after that; off when absent. A
    /// principal is released only when every containment in force on it has expired, and its
    /// access keys stay inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_after_hours: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Families {
    pub credential_compromise: FamilyPolicy,
    pub anomalous_behavior: FamilyPolicy,
    pub identity_risk: FamilyPolicy,
    pub unused_access: FamilyPolicy,
    pub posture: FamilyPolicy,
}

impl Families {
    /// Every configurable family's policy.
    pub fn all(&self) -> [FamilyPolicy; 5] {
        [
            self.credential_compromise,
            self.anomalous_behavior,
            self.identity_risk,
            self.unused_access,
            self.posture,
        ]
    }
}

impl Default for Families {
    fn default() -> Self {
        let fp = |response, min_severity| FamilyPolicy {
            response,
            min_severity,
            release_after_hours: None,
        };
        Families {
            credential_compromise: fp(Response::Contain, SeverityLabel::Medium),
            anomalous_behavior: fp(Response::Notify, SeverityLabel::Medium),
            identity_risk: fp(Response::Contain, SeverityLabel::High),
            unused_access: fp(Response::Contain, SeverityLabel::Low),
            posture: fp(Response::Notify, SeverityLabel::Low),
        }
    }
}

/// How widely to revoke an assumed-role session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionScope {
    /// Deny only the stolen session (`aws:userid` = `AROA…:<session>`) for tokens issued before now.
    #[default]
    Session,
    /// Deny every session of the role issued before now, as the IAM console's "Revoke sessions".
    Role,
}

/// How to revoke a stolen EC2 instance-profile session (`AROA…:i-…`). The stolen credentials
/// and the instance's own current credentials are the same session, so a plain revocation also
/// cuts the instance off until EC2 rotates its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceCredentials {
    /// AWS's documented pattern (IAM condition keys `aws:ec2InstanceSourceVPC` and
    /// `aws:ec2InstanceSourcePrivateIPv4` compared with `aws:SourceVpc` and `aws:VpcSourceIp`):
    /// the session's credentials issued before now are denied unless the call comes from the
    /// instance's own VPC and private IP through a VPC endpoint.
    #[default]
    BindToInstance,
    /// Deny the session's credentials issued before now wherever they are used.
    Revoke,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsPolicy {
    pub session_scope: SessionScope,
    /// How a stolen EC2 instance session is revoked.
    pub instance_credentials: InstanceCredentials,
    /// When a user's temporary (`ASIA…`) key is stolen, deactivate the user's active long-term
    /// keys, which probably minted it (otherwise a `notify` names them).
    pub deactivate_long_term_keys: bool,
    /// Security Hub products (ARN patterns) whose findings may lead to containment, besides
    /// the AWS services' own (`arn:<partition>:securityhub:<region>::product/aws/<service>`).
    /// Any account can import findings under its own product ARN naming any principal.
    pub trusted_products: Vec<Pattern>,
    /// Attach the deny-all quarantine policy to users named by a compromise finding.
    pub quarantine_users: bool,
    /// Attach the deny-all quarantine policy to roles named by a compromise finding.
    pub quarantine_roles: bool,
    /// Delete console passwords of compromised or dormant users (cannot be undone by quell).
    pub delete_login_profile: bool,
    /// Quarantine roles Access Analyzer reports as unused (otherwise notify).
    pub quarantine_unused_roles: bool,
    /// Mark Security Hub findings NOTIFIED with a note once handled.
    pub update_securityhub: bool,
    /// Role quell assumes in member accounts.
    pub member_role_name: String,
    /// Accounts the scheduled sweep covers; empty: every active account of the organization.
    pub sweep_accounts: Vec<String>,
    /// Containing people who sign in through IAM Identity Center.
    pub identity_center: IdentityCenterPolicy,
}

/// Where IAM Identity Center is administered, and whether quell contains its users. Its APIs
/// answer only in the organization's management account or its delegated administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityCenterPolicy {
    /// Deny a compromised Identity Center user's sessions in every permission set assigned to
    /// them (otherwise notify).
    pub contain_users: bool,
    /// The account that administers Identity Center (quell reaches it through the member
    /// role); unset: quell's own account.
    pub account: Option<String>,
    /// The instance ARN; unset: the one `sso-admin:ListInstances` returns.
    pub instance_arn: Option<String>,
}

impl Default for IdentityCenterPolicy {
    fn default() -> Self {
        IdentityCenterPolicy {
            contain_users: true,
            account: None,
            instance_arn: None,
        }
    }
}

impl Default for AwsPolicy {
    fn default() -> Self {
        AwsPolicy {
            session_scope: SessionScope::Session,
            instance_credentials: InstanceCredentials::BindToInstance,
            deactivate_long_term_keys: false,
            trusted_products: Vec::new(),
            quarantine_users: false,
            quarantine_roles: false,
            delete_login_profile: false,
            quarantine_unused_roles: false,
            update_securityhub: true,
            member_role_name: "QuellMemberRole".into(),
            sweep_accounts: Vec::new(),
            identity_center: IdentityCenterPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzurePolicy {
    /// Disable (accountEnabled=false) users named by a compromise finding.
    pub disable_users: bool,
    /// Mark users compromised in Identity Protection (raises their user risk to high).
    pub confirm_compromised: bool,
    /// Disable service principals named by a compromise finding.
    pub disable_service_principals: bool,
    /// Delete the ARM role assignments of a compromised managed identity (otherwise notify).
    pub remove_role_assignments: bool,
    /// Set Defender alerts to inProgress with a comment once handled.
    pub update_defender_alerts: bool,
    /// The scheduled sweep disables service principals with no sign-in for
    /// `role_staleness_days` (otherwise it reports them).
    pub disable_stale_service_principals: bool,
    /// What one unconfirmed Entra risk detection (anonymized IP, unfamiliar features, atypical
    /// travel…) does: revoke the user's sessions and notify, or contain fully. A risky user at
    /// the identity_risk level and strong detections (leaked credentials, admin-confirmed,
    /// threat intelligence) always contain fully.
    pub unconfirmed_detection: DetectionResponse,
    /// The alert detection sources quell contains on (Graph `detectionSource`, XDR
    /// `DetectionSource`, compared without case, spaces or punctuation): Microsoft's own
    /// detections. A rule the customer wrote (a custom detection, a Sentinel analytics rule)
    /// can name any user, so its alerts notify unless listed here.
    pub trusted_sources: Vec<String>,
}

/// Microsoft's own alert detection sources (Graph `detectionSource` values and the display
/// names Defender XDR streams), the default of `azure.trusted_sources`. Customer-authored ones
/// (`customDetection`, `customTi`, `scheduledAlerts` and `nrtAlerts` from Sentinel analytics,
/// `manual`) are left out.
pub const MICROSOFT_DETECTION_SOURCES: &[&str] = &[
    "microsoftDefenderForEndpoint",
    "EDR",
    "antivirus",
    "smartScreen",
    "microsoftDefenderForOffice365",
    "automatedInvestigation",
    "microsoftThreatExperts",
    "microsoftDefenderForIdentity",
    "cloudAppSecurity",
    "microsoftCloudAppSecurity",
    "microsoftDefenderForCloudApps",
    "microsoft365Defender",
    "microsoftDefenderXDR",
    "azureAdIdentityProtection",
    "microsoftEntraIdProtection",
    "microsoftDataLossPrevention",
    "appGovernancePolicy",
    "appGovernanceDetection",
    "microsoftDefenderForCloud",
    "microsoftDefenderForIoT",
    "microsoftDefenderForServers",
    "microsoftDefenderForStorage",
    "microsoftDefenderForDNS",
    "microsoftDefenderForDatabases",
    "microsoftDefenderForContainers",
    "microsoftDefenderForNetwork",
    "microsoftDefenderForAppService",
    "microsoftDefenderForKeyVault",
    "microsoftDefenderForResourceManager",
    "microsoftDefenderForApiManagement",
    "microsoftDefenderThreatIntelligenceAnalytics",
    "builtInMl",
    "microsoftInsiderRiskManagement",
    "microsoftThreatIntelligence",
    "microsoftDefenderForAIServices",
];

/// A detection source as compared: lower case, letters and digits only.
pub fn source_key(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The response to one unconfirmed Entra risk detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionResponse {
    /// Revoke sessions and notify: the user signs in again (with MFA), a human decides more.
    #[default]
    RevokeAndNotify,
    /// Disable, confirm compromised and revoke, as for a confirmed compromise.
    Contain,
}

impl Default for AzurePolicy {
    fn default() -> Self {
        AzurePolicy {
            disable_users: true,
            confirm_compromised: true,
            disable_service_principals: true,
            remove_role_assignments: false,
            update_defender_alerts: true,
            disable_stale_service_principals: false,
            unconfirmed_detection: DetectionResponse::RevokeAndNotify,
            trusted_sources: MICROSOFT_DETECTION_SOURCES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// A protection pattern: `*` matches any run of characters; matching ignores case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(String);

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("a protection pattern cannot be empty".into());
        }
        if t.len() > 512 {
            return Err("a protection pattern is limited to 512 characters".into());
        }
        Ok(Pattern(canonical(t)))
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.0
    }
}

/// Lower case, and an ARN's partition folded to `aws`, so `arn:aws-us-gov:…` and `arn:aws-cn:…`
/// names match the same patterns as commercial ones. Protection errs towards matching.
fn canonical(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    match lower.strip_prefix("arn:") {
        Some(rest) => match rest.split_once(':') {
            Some((_, tail)) => format!("arn:aws:{tail}"),
            None => lower,
        },
        None => lower,
    }
}

impl Pattern {
    pub fn new(s: &str) -> Result<Pattern, String> {
        Pattern::try_from(s.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Glob match with `*`, ignoring ASCII case. Linear time (no backtracking blow-up).
    pub fn matches(&self, text: &str) -> bool {
        let text = canonical(text);
        let p = self.0.as_bytes();
        let t = text.as_bytes();
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p.get(pi) != Some(&b'*') && p.get(pi) == t.get(ti) {
                pi += 1;
                ti += 1;
            } else if p.get(pi) == Some(&b'*') {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        while p.get(pi) == Some(&b'*') {
            pi += 1;
        }
        pi == p.len()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub mode: Mode,
    /// Blast-radius cap: a plan with more containment actions than this holds only a `notify`.
    pub max_actions: usize,
    /// Principals carrying this tag (any value) are never touched.
    pub exemption_tag: String,
    /// Keys, passwords and secrets unused this long are dormant.
    pub dormancy_days: u32,
    /// Roles unused this long are stale.
    pub role_staleness_days: u32,
    /// Break-glass and other principals quell must never touch (ARNs, names, UPNs, object ids).
    pub protected: Vec<Pattern>,
    pub families: Families,
    pub aws: AwsPolicy,
    pub azure: AzurePolicy,
    pub breaker: Breaker,
    pub verify: Verify,
}

/// The fleet breaker: containments counted in the ledger across every invocation, per account
/// or tenant and UTC clock hour. Past the cap, containment is withheld and a human notified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Breaker {
    pub max_containments_per_account_per_hour: u32,
    pub max_containments_per_tenant_per_hour: u32,
    /// The scheduled sweep's own cap: a sweep of one account (AWS) or of the tenant (Azure)
    /// that would make more changes than this (keys disabled, passwords deleted, roles or
    /// service principals quarantined) makes none and pages a human with its report.
    pub max_sweep_writes_per_account: u32,
}

/// The automatic check after containment: once IAM has propagated (AWS documents that changes
/// take effect "within seconds", but can take longer; "Changes that I make are not always
/// immediately visible", IAM troubleshooting), quell verifies that the containment still
/// holds and contains what appeared since (a new key, a detached quarantine). `0` turns it off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    pub after_seconds: u32,
}

impl Default for Verify {
    fn default() -> Self {
        Verify { after_seconds: 300 }
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            max_containments_per_account_per_hour: 20,
            max_containments_per_tenant_per_hour: 20,
            max_sweep_writes_per_account: 25,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        let p = |s: &str| Pattern(canonical(s));
        Policy {
            mode: Mode::DryRun,
            max_actions: 10,
            exemption_tag: "quell:exempt".into(),
            dormancy_days: 90,
            role_staleness_days: 180,
            protected: vec![
                p("*break-glass*"),
                p("*breakglass*"),
                p("arn:aws:iam::*:role/OrganizationAccountAccessRole"),
                p("arn:aws:iam::*:role/AWSControlTowerExecution"),
                p("arn:aws:iam::*:role/stacksets-exec-*"),
            ],
            families: Families::default(),
            aws: AwsPolicy::default(),
            azure: AzurePolicy::default(),
            breaker: Breaker::default(),
            verify: Verify::default(),
        }
    }
}

impl Policy {
    /// Parses a policy file. `origin` names it in errors (a path, or "built-in").
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let (line, field) = match e.span() {
                Some(span) => {
                    let upto = text.get(..span.start).unwrap_or("");
                    let line = upto.matches('\n').count() + 1;
                    let line_text = text.lines().nth(line - 1).unwrap_or("");
                    let field = line_text
                        .split_once('=')
                        .map(|(k, _)| k.trim().to_string())
                        .unwrap_or_else(|| line_text.trim().to_string());
                    (line, field)
                }
                None => (0, String::new()),
            };
            let message = e.message().trim().to_string();
            if line == 0 {
                PolicyError::Parse {
                    origin: origin.to_string(),
                    message,
                }
            } else {
                PolicyError::Field {
                    origin: origin.to_string(),
                    line,
                    field,
                    message,
                }
            }
        })?;
        policy.validate(text, origin)?;
        Ok(policy)
    }

    fn validate(&self, text: &str, origin: &str) -> Result<(), PolicyError> {
        let field_err = |field: &str, message: String| {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(field))
                .map_or(0, |i| i + 1);
            PolicyError::Field {
                origin: origin.to_string(),
                line,
                field: field.to_string(),
                message,
            }
        };
        if !(1..=1000).contains(&self.max_actions) {
            return Err(field_err(
                "max_actions",
                format!("{} is out of range; use 1 to 1000", self.max_actions),
            ));
        }
        if !(1..=3650).contains(&self.dormancy_days) {
            return Err(field_err(
                "dormancy_days",
                format!("{} is out of range; use 1 to 3650", self.dormancy_days),
            ));
        }
        if !(1..=3650).contains(&self.role_staleness_days) {
            return Err(field_err(
                "role_staleness_days",
                format!(
                    "{} is out of range; use 1 to 3650",
                    self.role_staleness_days
                ),
            ));
        }
        let tag = &self.exemption_tag;
        if tag.is_empty() || tag.len() > 128 || tag.starts_with("aws:") {
            return Err(field_err(
                "exemption_tag",
                "must be a 1-128 character tag key that does not start with \"aws:\"".into(),
            ));
        }
        for (field, n) in [
            (
                "max_containments_per_account_per_hour",
                self.breaker.max_containments_per_account_per_hour,
            ),
            (
                "max_containments_per_tenant_per_hour",
                self.breaker.max_containments_per_tenant_per_hour,
            ),
            (
                "max_sweep_writes_per_account",
                self.breaker.max_sweep_writes_per_account,
            ),
        ] {
            if !(1..=10_000).contains(&n) {
                return Err(field_err(
                    field,
                    format!("{n} is out of range; use 1 to 10000"),
                ));
            }
        }
        for fp in self.families.all() {
            if let Some(h) = fp.release_after_hours.filter(|h| !(1..=8760).contains(h)) {
                return Err(field_err(
                    "release_after_hours",
                    format!("{h} is out of range; use 1 to 8760 hours, or leave it out (off)"),
                ));
            }
        }
        // SQS delays messages by at most 15 minutes (DelaySeconds 0-900).
        if self.verify.after_seconds > 900 {
            return Err(field_err(
                "after_seconds",
                format!(
                    "{} is out of range; use 0 (off) to 900 seconds",
                    self.verify.after_seconds
                ),
            ));
        }
        if let Some(bad) = self
            .aws
            .sweep_accounts
            .iter()
            .find(|a| !crate::model::ids::is_account(a))
        {
            return Err(field_err(
                "sweep_accounts",
                format!("{bad:?} is not a 12-digit AWS account id"),
            ));
        }
        if let Some(bad) = self
            .aws
            .identity_center
            .account
            .as_ref()
            .filter(|a| !crate::model::ids::is_account(a))
        {
            return Err(field_err(
                "identity_center.account",
                format!("{bad:?} is not a 12-digit AWS account id"),
            ));
        }
        if let Some(bad) = self
            .aws
            .identity_center
            .instance_arn
            .as_ref()
            .filter(|a| !(a.starts_with("arn:aws") && a.contains(":sso:::instance/")))
        {
            return Err(field_err(
                "identity_center.instance_arn",
                format!(
                    "{bad:?} is not an Identity Center instance ARN (arn:aws:sso:::instance/ssoins-…)"
                ),
            ));
        }
        if self.aws.member_role_name.is_empty()
            || !crate::model::ids::is_iam_name(&self.aws.member_role_name)
        {
            return Err(field_err(
                "member_role_name",
                "must be an IAM role name".into(),
            ));
        }
        Ok(())
    }

    /// Applies deployment overrides (Lambda and Functions app settings). `get` reads a variable;
    /// passing it in keeps this function pure.
    ///
    /// `QUELL_MODE` (`dry-run`|`enforce`), `QUELL_PROTECTED` (comma-separated patterns, added to
    /// the file's), `QUELL_MAX_ACTIONS`, `QUELL_EXEMPTION_TAG`, `QUELL_MEMBER_ROLE_NAME`,
    /// `QUELL_SWEEP_ACCOUNTS` (comma-separated account ids, replacing `aws.sweep_accounts`).
    pub fn apply_overrides(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), PolicyError> {
        let bad = |var: &str, message: String| PolicyError::Parse {
            origin: format!("environment variable {var}"),
            message,
        };
        if let Some(m) = get("QUELL_MODE").filter(|v| !v.trim().is_empty()) {
            self.mode = match m.trim() {
                "dry-run" => Mode::DryRun,
                "enforce" => Mode::Enforce,
                other => {
                    return Err(bad(
                        "QUELL_MODE",
                        format!("{other:?} is not a mode; use dry-run or enforce"),
                    ));
                }
            };
        }
        if let Some(list) = get("QUELL_PROTECTED") {
            for item in list.split(',').filter(|s| !s.trim().is_empty()) {
                let p = Pattern::new(item).map_err(|m| bad("QUELL_PROTECTED", m))?;
                if !self.protected.contains(&p) {
                    self.protected.push(p);
                }
            }
        }
        if let Some(n) = get("QUELL_MAX_ACTIONS").filter(|v| !v.trim().is_empty()) {
            self.max_actions = n
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    bad(
                        "QUELL_MAX_ACTIONS",
                        format!("{n:?} is not a number from 1 to 1000"),
                    )
                })?;
        }
        if let Some(t) = get("QUELL_EXEMPTION_TAG").filter(|v| !v.trim().is_empty()) {
            self.exemption_tag = t.trim().to_string();
        }
        if let Some(list) = get("QUELL_SWEEP_ACCOUNTS").filter(|v| !v.trim().is_empty()) {
            let accounts: Vec<String> = list
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            if let Some(a) = accounts.iter().find(|a| !crate::model::ids::is_account(a)) {
                return Err(bad(
                    "QUELL_SWEEP_ACCOUNTS",
                    format!("{a:?} is not a 12-digit AWS account id"),
                ));
            }
            self.aws.sweep_accounts = accounts;
        }
        if let Some(r) = get("QUELL_MEMBER_ROLE_NAME").filter(|v| !v.trim().is_empty()) {
            if !crate::model::ids::is_iam_name(r.trim()) {
                return Err(bad(
                    "QUELL_MEMBER_ROLE_NAME",
                    format!("{r:?} is not an IAM role name"),
                ));
            }
            self.aws.member_role_name = r.trim().to_string();
        }
        Ok(())
    }

    /// The deployment policy: the file named by `QUELL_POLICY_FILE` (read with `read`) or the
    /// built-in default, then the environment overrides. Both are passed in, so this stays pure.
    pub fn load(
        get: impl Fn(&str) -> Option<String>,
        read: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Policy, PolicyError> {
        let mut policy = match get("QUELL_POLICY_FILE").filter(|p| !p.is_empty()) {
            Some(path) => {
                let text = read(&path).map_err(|e| PolicyError::Parse {
                    origin: format!("file {path} (QUELL_POLICY_FILE)"),
                    message: format!("cannot read it: {e}"),
                })?;
                Policy::from_toml(&text, &path)?
            }
            None => Policy::default(),
        };
        policy.apply_overrides(get)?;
        Ok(policy)
    }

    pub fn family(&self, family: Family) -> Option<FamilyPolicy> {
        let f = &self.families;
        match family {
            Family::CredentialCompromise => Some(f.credential_compromise),
            Family::AnomalousBehavior => Some(f.anomalous_behavior),
            Family::IdentityRisk => Some(f.identity_risk),
            Family::UnusedAccess => Some(f.unused_access),
            Family::Posture => Some(f.posture),
            Family::Manual => None,
            // Not configurable: an unknown type is never contained.
            Family::Unrecognized => Some(FamilyPolicy {
                response: Response::Notify,
                min_severity: SeverityLabel::Low,
                release_after_hours: None,
            }),
        }
    }

    /// Whether any family releases its containments by itself (`release_after_hours`).
    pub fn releases_automatically(&self) -> bool {
        self.families
            .all()
            .iter()
            .any(|fp| fp.release_after_hours.is_some())
    }

    /// The first protection pattern matching any of the subject's names.
    pub fn protection_for(&self, subject: &Subject) -> Option<&Pattern> {
        let aliases = subject.aliases();
        self.protected
            .iter()
            .find(|p| aliases.iter().any(|a| p.matches(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_policy_is_the_default() {
        let p = Policy::from_toml(EXAMPLE_POLICY, "policy.example.toml").unwrap();
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn release_after_hours_is_per_family_optional_and_bounded() {
        let p = Policy::from_toml(
            "[families.credential_compromise]\nresponse = \"contain\"\nmin_severity = \"medium\"\nrelease_after_hours = 120\n",
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            p.families.credential_compromise.release_after_hours,
            Some(120)
        );
        assert_eq!(p.families.identity_risk.release_after_hours, None);
        let e = Policy::from_toml(
            "[families.posture]\nresponse = \"notify\"\nmin_severity = \"low\"\nrelease_after_hours = 0\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("release_after_hours") && e.contains("line 4"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = "mode = \"dry-run\"\nmax_actions = \"ten\"\n";
        let e = Policy::from_toml(text, "p.toml").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("`max_actions`"), "{e}");

        let text = "[aws]\nsession_scop = \"role\"\n";
        let e = Policy::from_toml(text, "p.toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("session_scop"), "{e}");

        let text = "mode = \"enforce\"\n\nmax_actions = 0\n";
        let e = Policy::from_toml(text, "p.toml").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("max_actions"), "{e}");

        let text = "[families.posture]\nresponse = \"nuke\"\nmin_severity = \"low\"\n";
        let e = Policy::from_toml(text, "p.toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("response"), "{e}");
    }

    #[test]
    fn patterns_glob_case_insensitively() {
        let p = Pattern::new("arn:aws:iam::*:role/BreakGlass*").unwrap();
        assert!(p.matches("arn:aws:iam::111122223333:role/breakglass-admin"));
        assert!(!p.matches("arn:aws:iam::111122223333:role/admin"));
        assert!(Pattern::new("*").unwrap().matches(""));
        assert!(Pattern::new("a*b*c").unwrap().matches("axxbyyc"));
        assert!(!Pattern::new("a*b*c").unwrap().matches("axxbyy"));
        assert!(Pattern::new(" ").is_err());
    }

    #[test]
    fn patterns_ignore_the_arn_partition() {
        let p = Pattern::new("arn:aws:iam::*:role/Quell*").unwrap();
        assert!(p.matches("arn:aws-us-gov:iam::111122223333:role/QuellMemberRole"));
        assert!(p.matches("arn:aws-cn:iam::111122223333:role/QuellMemberRole"));
        let gov = Pattern::new("arn:aws-us-gov:iam::*:user/ops").unwrap();
        assert!(gov.matches("arn:aws:iam::111122223333:user/ops"));
        assert!(!p.matches("arn:aws-us-gov:iam::111122223333:role/Other"));
    }

    #[test]
    fn overrides_apply_and_validate() {
        let mut p = Policy::default();
        let env = |k: &str| match k {
            "QUELL_MODE" => Some("enforce".to_string()),
            "QUELL_PROTECTED" => Some("alice@contoso.com, arn:aws:iam::*:user/ops".to_string()),
            _ => None,
        };
        p.apply_overrides(env).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert!(
            p.protected
                .contains(&Pattern::new("alice@contoso.com").unwrap())
        );
        let e = p
            .apply_overrides(|k| (k == "QUELL_MODE").then(|| "yolo".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("QUELL_MODE"));
    }
}
