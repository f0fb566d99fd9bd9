//! The planner: findings + policy → an ordered, explained plan. Pure and total.

use serde::{Deserialize, Serialize};

use crate::links::{AwsEnd, EntraEnd, Link, LinkKind};
use crate::model::{Cloud, Family, Finding, FindingRef, Runbook, Source, Status, Subject, ids};
use crate::normalize::{Batch, Ignored};
use crate::policy::Policy;
use crate::policy::{
    DetectionResponse, InstanceCredentials, Mode, Pattern, Response, SessionScope,
};

/// Every action quell can plan. The snake_case names are a stable interface (JSON, audit events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    // Rank 0: cut all access.
    QuarantineUser,
    QuarantineRole,
    DisableEntraUser,
    DisableServicePrincipal,
    RemoveRoleAssignments,
    /// Deny an Identity Center user's sessions in every permission set assigned to them.
    DenyIdentityCenterUser,
    // Rank 1: kill the credential that was used; mark the user compromised (before its sessions
    // are revoked, so the detection Identity Protection records for quell's own confirmation
    // predates the revocation and is recognised as handled when it comes back).
    ConfirmUserCompromised,
    DeactivateAccessKey,
    RemoveServicePrincipalCredential,
    /// Remove an Entra application's federated credential that trusts a compromised AWS role.
    RemoveFederatedCredential,
    DeactivateDormantAccessKeys,
    DeactivateLongTermKeys,
    DeleteLoginProfile,
    // Rank 2: kill sessions minted before now.
    RevokeRoleSession,
    RevokeRoleSessions,
    RevokeUserSessions,
    RevokeEntraSessions,
    // Rank 4+: record and escalate.
    TagPrincipal,
    Notify,
    UpdateSecurityhubFinding,
    UpdateDefenderAlert,
}

impl ActionKind {
    /// Lower runs first: most-containing first.
    pub fn rank(self) -> u8 {
        use ActionKind::*;
        match self {
            QuarantineUser
            | QuarantineRole
            | DisableEntraUser
            | DisableServicePrincipal
            | RemoveRoleAssignments
            | DenyIdentityCenterUser => 0,
            ConfirmUserCompromised
            | DeactivateAccessKey
            | RemoveServicePrincipalCredential
            | RemoveFederatedCredential
            | DeactivateDormantAccessKeys
            | DeactivateLongTermKeys
            | DeleteLoginProfile => 1,
            RevokeRoleSession | RevokeRoleSessions | RevokeUserSessions | RevokeEntraSessions => 2,
            TagPrincipal => 4,
            Notify => 5,
            // Last, so the note on the finding records everything quell did.
            UpdateSecurityhubFinding | UpdateDefenderAlert => 6,
        }
    }

    /// The cloud whose API carries out this kind, exhaustively: an action kind added without
    /// saying its cloud does not compile. `None` for `notify`, which either cloud's edge
    /// delivers (the action's `cloud` then follows its target).
    pub fn cloud(self) -> Option<Cloud> {
        use ActionKind::*;
        match self {
            QuarantineUser
            | QuarantineRole
            | DeactivateAccessKey
            | DeactivateDormantAccessKeys
            | DeactivateLongTermKeys
            | DeleteLoginProfile
            | RevokeRoleSession
            | RevokeRoleSessions
            | RevokeUserSessions
            | TagPrincipal
            | DenyIdentityCenterUser
            | UpdateSecurityhubFinding => Some(Cloud::Aws),
            DisableEntraUser
            | DisableServicePrincipal
            | RemoveRoleAssignments
            | ConfirmUserCompromised
            | RemoveServicePrincipalCredential
            | RemoveFederatedCredential
            | RevokeEntraSessions
            | UpdateDefenderAlert => Some(Cloud::Azure),
            Notify => None,
        }
    }

    /// Every action kind, in rank order.
    pub const ALL: [ActionKind; 21] = {
        use ActionKind::*;
        [
            QuarantineUser,
            QuarantineRole,
            DisableEntraUser,
            DisableServicePrincipal,
            RemoveRoleAssignments,
            DenyIdentityCenterUser,
            ConfirmUserCompromised,
            DeactivateAccessKey,
            RemoveServicePrincipalCredential,
            RemoveFederatedCredential,
            DeactivateDormantAccessKeys,
            DeactivateLongTermKeys,
            DeleteLoginProfile,
            RevokeRoleSession,
            RevokeRoleSessions,
            RevokeUserSessions,
            RevokeEntraSessions,
            TagPrincipal,
            Notify,
            UpdateSecurityhubFinding,
            UpdateDefenderAlert,
        ]
    };

    /// Containment actions count against the blast-radius cap; bookkeeping does not.
    pub fn is_containment(self) -> bool {
        self.rank() <= 2
    }

    pub fn as_str(self) -> &'static str {
        use ActionKind::*;
        match self {
            QuarantineUser => "quarantine_user",
            QuarantineRole => "quarantine_role",
            DisableEntraUser => "disable_entra_user",
            DisableServicePrincipal => "disable_service_principal",
            RemoveRoleAssignments => "remove_role_assignments",
            DenyIdentityCenterUser => "deny_identity_center_user",
            DeactivateAccessKey => "deactivate_access_key",
            RemoveServicePrincipalCredential => "remove_service_principal_credential",
            RemoveFederatedCredential => "remove_federated_credential",
            DeactivateDormantAccessKeys => "deactivate_dormant_access_keys",
            DeactivateLongTermKeys => "deactivate_long_term_keys",
            DeleteLoginProfile => "delete_login_profile",
            RevokeRoleSession => "revoke_role_session",
            RevokeRoleSessions => "revoke_role_sessions",
            RevokeUserSessions => "revoke_user_sessions",
            RevokeEntraSessions => "revoke_entra_sessions",
            ConfirmUserCompromised => "confirm_user_compromised",
            TagPrincipal => "tag_principal",
            UpdateSecurityhubFinding => "update_securityhub_finding",
            UpdateDefenderAlert => "update_defender_alert",
            Notify => "notify",
        }
    }
}

/// What an action acts on: an identity, or a finding record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    #[serde(serialize_with = "crate::model::serialize_subject")]
    Subject(Subject),
    Record(FindingRef),
}

impl Target {
    pub fn label(&self) -> String {
        match self {
            Target::Subject(s) => s.label(),
            Target::Record(FindingRef::SecurityhubFinding { id, .. }) => {
                format!("securityhub_finding {id}")
            }
            Target::Record(FindingRef::SecurityhubOcsfFinding { uid, .. }) => {
                format!("securityhub_finding {uid} (OCSF)")
            }
            Target::Record(FindingRef::DefenderAlert { id, .. }) => format!("defender_alert {id}"),
            Target::Record(FindingRef::Finding { source, id }) => {
                format!("finding {id} ({})", source_name(*source))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    pub cloud: Cloud,
    pub target: Target,
    pub reason: String,
    /// Id of the finding that caused it.
    pub finding: String,
    /// The cross-cloud link this action follows (a compromised Entra user's federated AWS
    /// role, the Entra application that trusts a compromised AWS role). The executor re-reads
    /// the link live before writing: a link is where to look, never a reason on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<crate::links::Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skip {
    pub finding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    pub reason: String,
}

/// The planner's output. `actions` are in execution order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub mode: Mode,
    pub findings: Vec<Finding>,
    pub actions: Vec<Action>,
    pub skipped: Vec<Skip>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<Ignored>,
    /// The AWS partition its principals' keys are in: the deployment's (quell acts only in the
    /// partition it runs in), `aws` when not known.
    #[serde(skip)]
    pub partition: String,
    /// The delivery this plan came from, set by the edge (an EventBridge event id, a hash of the
    /// message): a retry of the same delivery is recognised as such by the ledger.
    #[serde(skip)]
    pub delivery: Option<String>,
}

impl Plan {
    /// Applies `f` to every subject the plan names: its actions' targets and its findings'
    /// subjects (an edge's resolution, such as a UPN to its object id, changes both alike).
    pub fn update_subjects(&mut self, mut f: impl FnMut(&mut Subject)) {
        for a in &mut self.actions {
            if let Target::Subject(s) = &mut a.target {
                f(s);
            }
        }
        for finding in &mut self.findings {
            finding.subjects.iter_mut().for_each(&mut f);
        }
    }
}

/// Facts about the running deployment the planner must respect.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The identities quell itself runs as (its Lambda role, its managed identity). Never touched.
    pub own_identities: Vec<Pattern>,
    /// The AWS partition quell runs in (from its caller ARN); `aws` when not known.
    pub partition: Option<String>,
    /// The AWS account quell runs in (from its caller ARN): its `quell-*` roles live there.
    pub account: Option<String>,
    /// The cross-cloud link map (`quell links discover`, refreshed by the sweeps), if one was
    /// read, and whether it is older than [`crate::links::STALE_AFTER_SECONDS`] by the edge's
    /// clock.
    pub links: Option<std::sync::Arc<crate::links::LinkMap>>,
    pub links_stale: bool,
}

impl Context {
    /// Protects the caller identity returned by STS `GetCallerIdentity` (an assumed-role or
    /// user ARN): the role or user itself and every session of it.
    pub fn with_aws_caller(mut self, caller_arn: &str) -> Context {
        if let Some(partition) = caller_arn
            .strip_prefix("arn:")
            .and_then(|r| r.split(':').next())
            .filter(|p| p.starts_with("aws"))
        {
            self.partition = Some(partition.to_string());
        }
        let mut add = |s: String| {
            if let Ok(p) = Pattern::new(&s) {
                self.own_identities.push(p);
            }
        };
        let parts: Vec<&str> = caller_arn.splitn(6, ':').collect();
        if let [_, partition, _, _, account, resource] = parts.as_slice() {
            if ids::is_account(account) {
                self.account = Some(account.to_string());
            }
            if let Some(rest) = resource.strip_prefix("assumed-role/") {
                let role = rest.split('/').next().unwrap_or(rest);
                add(format!("arn:{partition}:iam::{account}:role/{role}"));
                add(format!(
                    "arn:{partition}:sts::{account}:assumed-role/{role}/*"
                ));
            } else {
                add(caller_arn.to_string());
            }
        }
        self
    }
    /// Protects an Entra object id (quell's managed identity) or UPN.
    pub fn with_azure_identity(mut self, id: &str) -> Context {
        if let Ok(p) = Pattern::new(id) {
            self.own_identities.push(p);
        }
        self
    }
    /// True when `s` is one of the identities quell runs as.
    pub fn is_own(&self, s: &Subject) -> bool {
        let aliases = s.aliases();
        self.own_identities
            .iter()
            .any(|p| aliases.iter().any(|a| p.matches(a)))
    }
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Guardduty => "GuardDuty",
        Source::Securityhub => "Security Hub",
        Source::AccessAnalyzer => "Access Analyzer",
        Source::DefenderXdr => "Defender XDR",
        Source::GraphAlert => "Defender alert",
        Source::EntraRiskDetection => "Entra risk detection",
        Source::EntraRiskyUser => "Entra risky user",
        Source::EntraServicePrincipalRiskDetection => "Entra workload identity risk detection",
        Source::EntraRiskyServicePrincipal => "Entra risky service principal",
        Source::Runbook => "runbook",
    }
}

fn status_name(s: &Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Sample => "a generated sample",
        Status::Archived => "archived",
        Status::Resolved => "resolved",
        Status::Suppressed => "suppressed",
        Status::Notified => "already NOTIFIED (handled before)",
        Status::Passed => "a passed or unevaluated compliance check",
        Status::Deleted => "deleted",
        Status::Error => "an analysis error",
        Status::Dismissed => "dismissed, remediated or not at risk",
        Status::Benign => "classified a false positive or benign",
        Status::Unknown => "in a state quell does not know",
    }
}

struct Builder<'a> {
    policy: &'a Policy,
    ctx: &'a Context,
    actions: Vec<Action>,
    skipped: Vec<Skip>,
}

impl Builder<'_> {
    fn act(&mut self, f: &Finding, kind: ActionKind, target: Target, why: &str) {
        let cloud = kind.cloud().unwrap_or_else(|| match &target {
            Target::Subject(s) => s.cloud(),
            Target::Record(
                FindingRef::SecurityhubFinding { .. } | FindingRef::SecurityhubOcsfFinding { .. },
            ) => Cloud::Aws,
            Target::Record(FindingRef::DefenderAlert { .. }) => Cloud::Azure,
            // A record of the finding itself: the finding's cloud (a runbook request's is its
            // principal's, so an AWS runbook's notify is executed on AWS).
            Target::Record(FindingRef::Finding { .. }) => f.cloud(),
        });
        let summary = format!(
            "{} {} ({} {:.1})",
            source_name(f.source),
            f.kind,
            severity_name(f),
            f.severity.score
        );
        self.actions.push(Action {
            kind,
            cloud,
            target,
            reason: format!("{summary}: {why}"),
            finding: f.id.clone(),
            via: None,
        });
    }

    /// An action that follows a cross-cloud link: it says which, and carries it for the
    /// executor's live re-check.
    fn act_via(&mut self, f: &Finding, kind: ActionKind, target: Target, why: &str, link: &Link) {
        self.act(f, kind, target, &format!("{why} [via {}]", link.describe()));
        if let Some(a) = self.actions.last_mut() {
            a.via = Some(link.clone());
        }
    }

    fn skip(&mut self, f: &Finding, target: Option<Target>, reason: impl Into<String>) {
        self.skipped.push(Skip {
            finding: f.id.clone(),
            target,
            reason: reason.into(),
        });
    }
}

fn severity_name(f: &Finding) -> &'static str {
    use crate::model::SeverityLabel::*;
    match f.severity.label {
        Unknown => "unknown severity",
        Informational => "informational",
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
}

/// Builds the plan for a batch of findings.
pub fn plan(batch: Batch, policy: &Policy, ctx: &Context) -> Plan {
    let mut b = Builder {
        policy,
        ctx,
        actions: Vec::new(),
        skipped: Vec::new(),
    };
    for f in &batch.findings {
        plan_finding(&mut b, f);
    }

    // Dedupe (same kind on the same target once), keeping the first reason.
    let mut seen = std::collections::HashSet::new();
    b.actions
        .retain(|a| seen.insert((a.kind, a.target.clone())));
    // Most-containing first; stable, so a finding's own order is kept within a rank.
    b.actions.sort_by_key(|a| a.kind.rank());

    // The other cloud's side has a cap of its own: links (an inferred trust above all) can
    // name many roles, and they must never withhold the compromised identity's own
    // containment. Over the cap, only the cross-cloud actions wait for a human.
    let cross = |a: &Action| a.via.is_some() && a.kind.is_containment();
    let linked = b.actions.iter().filter(|a| cross(a)).count();
    if linked > policy.max_actions {
        let (withheld, kept): (Vec<Action>, Vec<Action>) =
            b.actions.drain(..).partition(|a| cross(a));
        b.actions = kept;
        for a in withheld {
            b.skipped.push(Skip {
                finding: a.finding,
                target: Some(a.target),
                reason: format!(
                    "{} withheld by the blast-radius cap on cross-cloud actions",
                    a.kind.as_str()
                ),
            });
        }
        if let Some(f) = batch.findings.first() {
            b.act(
                f,
                ActionKind::Notify,
                Target::Record(record_of(f)),
                &format!(
                    "the link map names {linked} cross-cloud containment actions, over max_actions = {}: the identity itself is contained; a human must review its other cloud (quell links show)",
                    policy.max_actions
                ),
            );
        }
    }
    let containment = b
        .actions
        .iter()
        .filter(|a| a.kind.is_containment() && a.via.is_none())
        .count();
    if containment > policy.max_actions {
        let first = batch.findings.first();
        let reason = format!(
            "blast-radius cap: the plan would take {containment} containment actions, over max_actions = {}; a human must review",
            policy.max_actions
        );
        // The note on each Security Hub finding stays: it records what was withheld, and the
        // finding stays NEW for a human.
        let (records, withheld): (Vec<Action>, Vec<Action>) = b
            .actions
            .drain(..)
            .partition(|a| a.kind == ActionKind::UpdateSecurityhubFinding);
        for a in withheld {
            b.skipped.push(Skip {
                finding: a.finding,
                target: Some(a.target),
                reason: format!("{} withheld by the blast-radius cap", a.kind.as_str()),
            });
        }
        if let Some(f) = first {
            b.act(f, ActionKind::Notify, Target::Record(record_of(f)), &reason);
        }
        b.actions.extend(records);
    }

    Plan {
        mode: policy.mode,
        findings: batch.findings,
        actions: b.actions,
        skipped: b.skipped,
        ignored: batch.ignored,
        partition: ctx.partition.clone().unwrap_or_else(|| "aws".into()),
        delivery: None,
    }
}

fn plan_finding(b: &mut Builder<'_>, f: &Finding) {
    if f.status != Status::Active {
        b.skip(
            f,
            None,
            format!(
                "the finding is {}; quell acts only on active findings",
                status_name(&f.status)
            ),
        );
        return;
    }
    let response = match b.policy.family(f.family) {
        None => Response::Contain, // manual runbooks
        Some(fp) => {
            if fp.response == Response::Ignore {
                b.skip(
                    f,
                    None,
                    format!("policy ignores the {} family", f.family.as_str()),
                );
                return;
            }
            if f.severity.label == crate::model::SeverityLabel::Unknown {
                b.skip(
                    f,
                    None,
                    "the severity is unknown, so no threshold is met; quell does not act blind",
                );
                return;
            }
            if f.severity.label < fp.min_severity {
                b.skip(
                    f,
                    None,
                    format!(
                        "{} is below min_severity = {} for the {} family",
                        severity_name(f),
                        serde_json::to_value(fp.min_severity)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        f.family.as_str()
                    ),
                );
                return;
            }
            fp.response
        }
    };
    if !f.conflicts.is_empty() {
        let why = format!(
            "the finding disagrees with itself about who is involved ({}); quell contains no one on it: a human must decide",
            f.conflicts.join("; ")
        );
        for s in &f.subjects {
            b.skip(f, Some(Target::Subject(s.clone())), why.clone());
        }
        b.act(f, ActionKind::Notify, Target::Record(record_of(f)), &why);
        return;
    }
    if !f.subjects.is_empty()
        && let Some(why) = untrusted_reason(b.policy, f)
    {
        for s in &f.subjects {
            b.skip(f, Some(Target::Subject(s.clone())), why.clone());
        }
        b.act(f, ActionKind::Notify, Target::Record(record_of(f)), &why);
        return;
    }
    let before = b.actions.len();
    if f.subjects.is_empty() {
        let why = if f.notes.is_empty() {
            "the finding names no identity quell can contain".to_string()
        } else {
            format!(
                "the finding names no identity quell can contain ({})",
                f.notes.join("; ")
            )
        };
        if response == Response::Notify {
            b.act(
                f,
                ActionKind::Notify,
                Target::Record(record_of(f)),
                &format!(
                    "policy asks for a human review of {} findings",
                    f.family.as_str()
                ),
            );
        } else if matches!(
            f.family,
            Family::CredentialCompromise | Family::IdentityRisk
        ) {
            // A compromise at or above the threshold with no one to contain is never silent.
            b.act(
                f,
                ActionKind::Notify,
                Target::Record(record_of(f)),
                &format!("{why}: a human must find and contain the actor"),
            );
        } else {
            b.skip(f, None, why);
        }
    }
    for s in &f.subjects {
        if let Some(reason) = protection(b, s) {
            // A protected principal reported compromised is never contained, and never
            // silent: the break-glass account or quell's own role in an attacker's hands is the
            // incident a human must hear of first.
            if matches!(
                f.family,
                Family::CredentialCompromise | Family::IdentityRisk
            ) && response != Response::Ignore
            {
                b.act(
                    f,
                    ActionKind::Notify,
                    Target::Record(record_of(f)),
                    &format!(
                        "{} is reported compromised but is protected ({reason}): quell never contains it; a human must act now (rotate its credentials, review what it did)",
                        s.label()
                    ),
                );
            }
            b.skip(f, Some(Target::Subject(s.clone())), reason);
            continue;
        }
        if response == Response::Notify {
            b.act(
                f,
                ActionKind::Notify,
                Target::Subject(s.clone()),
                &format!(
                    "policy asks for a human review of {} findings",
                    f.family.as_str()
                ),
            );
        } else {
            contain(b, f, s);
            cross_cloud(b, f, s);
        }
    }
    // Record on the finding what was done, once per finding that produced actions.
    let produced = b.actions.len() > before;
    if produced {
        match &f.record {
            Some(
                r @ (FindingRef::SecurityhubFinding { .. }
                | FindingRef::SecurityhubOcsfFinding { .. }),
            ) if b.policy.aws.update_securityhub => {
                b.act(
                    f,
                    ActionKind::UpdateSecurityhubFinding,
                    Target::Record(r.clone()),
                    "mark the finding NOTIFIED with a note of what quell did",
                );
            }
            Some(r @ FindingRef::DefenderAlert { .. })
                if b.policy.azure.update_defender_alerts
                    && matches!(f.source, Source::GraphAlert | Source::DefenderXdr) =>
            {
                b.act(
                    f,
                    ActionKind::UpdateDefenderAlert,
                    Target::Record(r.clone()),
                    "set the alert inProgress with a comment of what quell did",
                );
            }
            _ => {}
        }
    }
}

/// Where a finding-level notice points: the source's own record, else the finding.
fn record_of(f: &Finding) -> FindingRef {
    f.record.clone().unwrap_or(FindingRef::Finding {
        source: f.source,
        id: f.id.clone(),
    })
}

/// Why a subject must never be touched, if it must not: quell's own identity, a protection
/// pattern, a service-linked role. The planner and every executor and sweep ask this one
/// function, so the rule cannot drift between them.
pub fn protection_reason(policy: &Policy, ctx: &Context, s: &Subject) -> Option<String> {
    protection_reason_with(policy, ctx, s, &[])
}

/// [`protection_reason`], also matching `names` the subject was found to have when it was read
/// (its real ARN, with the path a finding may not show: `arn:aws:iam::…:user/ops/alice`).
pub fn protection_reason_with(
    policy: &Policy,
    ctx: &Context,
    s: &Subject,
    names: &[&str],
) -> Option<String> {
    let own = |p: &Pattern| names.iter().any(|n| p.matches(n));
    if ctx.is_own(s) || ctx.own_identities.iter().any(own) {
        return Some(
            "this is the identity quell itself runs as; quell never contains itself".into(),
        );
    }
    // Not configurable: a policy whose `protected` list replaces the defaults still never
    // lets quell contain its own roles.
    // The member role is quell's identity in every account; `quell-*` roles are quell's only in
    // the account quell runs in (where known): a role of that name elsewhere is anyone's, and an
    // attacker cannot hide persistence behind the name.
    if let Subject::IamRole { name, .. }
    | Subject::RoleSession { name, .. }
    | Subject::IdentityCenterSession { name, .. } = s
        && ids::is_quell_role(name, &policy.aws.member_role_name)
    {
        let member = name.eq_ignore_ascii_case(&policy.aws.member_role_name);
        let in_own_account = match (&ctx.account, s.account()) {
            (Some(own), Some(account)) => own == account,
            _ => true,
        };
        if member || in_own_account {
            return Some(
                "one of quell's own roles (quell-* in its account, or the member role): always protected"
                    .into(),
            );
        }
    }
    if let Some(p) = policy
        .protection_for(s)
        .or_else(|| policy.protected.iter().find(|p| own(p)))
    {
        return Some(format!("protected principal (matches {:?})", p.as_str()));
    }
    match s {
        Subject::IamRole { name, .. } | Subject::RoleSession { name, .. }
            if ids::is_service_linked_role(name) =>
        {
            Some("service-linked role: owned by an AWS service and never modified".into())
        }
        _ => None,
    }
}

/// Why a finding must not lead to containment, however severe: a Security Hub finding from a
/// product quell does not trust, or naming a principal outside the finding's own account.
///
/// `BatchImportFindings` lets any account import findings under its own product ARN
/// (`arn:<partition>:securityhub:<region>:<account>:product/<account>/default`) with any
/// `Resources`, so such a finding could name another account's principals. Findings of AWS
/// services arrive under `arn:<partition>:securityhub:<region>::product/aws/<service>`, which no
/// customer account can import under (Security Hub API reference, BatchImportFindings).
pub fn untrusted_reason(policy: &Policy, f: &Finding) -> Option<String> {
    if let Some(FindingRef::DefenderAlert {
        detection_source: Some(source),
        ..
    }) = &f.record
    {
        let key = crate::policy::source_key(source);
        let trusted = policy
            .azure
            .trusted_sources
            .iter()
            .any(|t| crate::policy::source_key(t) == key);
        return (!trusted).then(|| format!(
            "the alert's detection source {source} is not one quell trusts (azure.trusted_sources: Microsoft's own detections): a rule the tenant wrote, a custom detection or an analytics rule, can name any user, so quell contains no one on it (list the source in azure.trusted_sources if you vouch for it)"
        ));
    }
    let (product_arn, account) = match &f.record {
        Some(FindingRef::SecurityhubFinding {
            product_arn,
            account,
            ..
        }) => (product_arn, account),
        Some(FindingRef::SecurityhubOcsfFinding {
            product_uid,
            account,
            ..
        }) => (product_uid, account),
        _ => return None,
    };
    if f.source != Source::Securityhub {
        return None;
    }
    if !is_aws_product(product_arn)
        && !policy
            .aws
            .trusted_products
            .iter()
            .any(|p| p.matches(product_arn))
    {
        return Some(format!(
            "untrusted Security Hub product {product_arn}: any account can import findings naming any principal under its own product, so quell contains no one on it (a forged finding is itself an incident; list the product in aws.trusted_products if it is yours)"
        ));
    }
    if let Some(other) = f
        .subjects
        .iter()
        .filter_map(Subject::account)
        .find(|a| *a != account)
    {
        return Some(format!(
            "the finding belongs to account {account} but names a principal in account {other}; quell contains only principals of the finding's own account (AwsAccountId)"
        ));
    }
    None
}

/// `arn:<partition>:securityhub:<region>::product/aws/<service>` (OCSF: `productv2/aws/…`):
/// an AWS service's own product.
fn is_aws_product(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "securityhub", region, "", resource] => {
            partition.starts_with("aws")
                && !region.is_empty()
                && resource
                    .strip_prefix("product/aws/")
                    .or_else(|| resource.strip_prefix("productv2/aws/"))
                    .is_some_and(|svc| !svc.is_empty() && !svc.contains('/'))
        }
        _ => false,
    }
}

fn protection(b: &Builder<'_>, s: &Subject) -> Option<String> {
    protection_reason(b.policy, b.ctx, s)
}

/// Entra risk detections strong enough to disable a user on their own: the credential is known
/// to be exposed, an administrator confirmed it, or Microsoft's threat intelligence did.
fn is_strong_detection(kind: &str) -> bool {
    matches!(
        kind.to_ascii_lowercase().as_str(),
        "leakedcredentials" | "adminconfirmedusercompromised" | "investigationsthreatintelligence"
    )
}

/// What revoking one role session does, told truthfully: an EC2 instance session is the
/// instance's own current credentials too.
fn session_revocation_text(p: &Policy, session: &str) -> &'static str {
    if !ids::is_instance_id(session) {
        return "deny this session's tokens (aws:userid AROA…:<session>) issued before now; a new AssumeRole is not affected, so contain the identity that assumed the role too if it is compromised";
    }
    match p.aws.instance_credentials {
        InstanceCredentials::BindToInstance => {
            "deny this instance's credentials issued before now unless they are used from the instance's own VPC and private IP through a VPC endpoint (aws:ec2InstanceSourceVPC, aws:ec2InstanceSourcePrivateIPv4): the stolen copy dies; the instance keeps access through VPC endpoints, but its calls to public AWS endpoints with these credentials are denied until EC2 rotates them (stop and start the instance to get new ones sooner)"
        }
        InstanceCredentials::Revoke => {
            "deny this instance's credentials issued before now everywhere (policy instance_credentials = revoke): the stolen copy dies, and the instance itself loses AWS access until EC2 rotates its credentials, which can take hours (stop and start the instance to get new ones sooner)"
        }
    }
}

/// Whether quell contains Identity Center users: asked to, and told which account administers
/// Identity Center (its APIs answer only there).
fn identity_center_on(p: &Policy) -> bool {
    p.aws.identity_center.contain_users && p.aws.identity_center.account.is_some()
}

/// An Identity Center user: one deny of their sessions in every permission set assigned to them
/// or to their groups, and a notice of what no API can end.
fn contain_identity_center_user(b: &mut Builder<'_>, f: &Finding, person: &Subject) {
    use ActionKind::*;
    let t = Target::Subject(person.clone());
    if matches!(
        f.runbook,
        Some(Runbook::DisableKey | Runbook::DisableDormantKeys)
    ) {
        b.act(
            f,
            Notify,
            t,
            "an Identity Center user holds no access keys: run contain or revoke_sessions for them",
        );
        return;
    }
    b.act(
        f,
        DenyIdentityCenterUser,
        t.clone(),
        "deny this user's sessions, issued and new, in every permission set assigned to them or their groups (identitystore:UserId), and provision the permission sets",
    );
    b.act(
        f,
        Notify,
        t,
        "Identity Center has no API to end a user's portal or CLI sessions: end them in the IAM Identity Center console (Users > the user > Active sessions) and, if the identity source is external, disable the user there too; quell's deny stops every permission-set session meanwhile",
    );
}

/// The other cloud's side of a compromised identity, from the link map: an Entra user's
/// federated AWS role sessions and Identity Center user, the AWS roles that trust a service
/// principal's or managed identity's tokens, the Entra federated credentials that trust a
/// compromised AWS role. Each action carries its link; the executor re-reads it before writing.
fn cross_cloud(b: &mut Builder<'_>, f: &Finding, s: &Subject) {
    use ActionKind::*;
    let Some(map) = b.ctx.links.clone() else {
        return;
    };
    let compromise = matches!(
        f.family,
        Family::CredentialCompromise | Family::AnomalousBehavior | Family::IdentityRisk
    ) || f.runbook.is_some();
    let revoke = matches!(
        f.runbook,
        None | Some(Runbook::Contain | Runbook::RevokeSessions)
    );
    let quarantine = matches!(
        f.runbook,
        None | Some(Runbook::Contain | Runbook::Quarantine)
    );
    if !compromise {
        return;
    }
    let links = map.of_subject(s);
    if links.is_empty() {
        return;
    }
    if b.ctx.links_stale {
        b.act(
            f,
            Notify,
            Target::Subject(s.clone()),
            "the cross-cloud link map is more than a day old: links made since are not contained; run `quell links discover` (the scheduled sweeps refresh it)",
        );
    }
    let upn = match s {
        Subject::EntraUser { name, .. } => name.as_ref().map(|n| n.to_ascii_lowercase()),
        _ => None,
    };
    // Where the tenant's AWS gallery app is known, Entra signs users only into the roles it
    // assigns them: a role that merely trusts the same SAML provider is no session of hers.
    let assigned_through = |provider: &Option<String>| {
        map.links.iter().any(|l| {
            matches!(l.kind, LinkKind::SamlAppRole { .. })
                && matches!(&l.aws, AwsEnd::Role { provider: p, .. } if p == provider)
        })
    };
    for link in links {
        if let (LinkKind::SamlProvider, AwsEnd::Role { provider, .. }) = (&link.kind, &link.aws)
            && assigned_through(provider)
        {
            continue;
        }
        match (&link.kind, &link.aws, &link.entra) {
            (
                LinkKind::SamlAppRole { .. } | LinkKind::SamlProvider,
                AwsEnd::Role { account, name, .. },
                entra,
            ) if revoke => {
                let upn = upn.clone().or(match entra {
                    EntraEnd::User { upn, .. } => upn.clone(),
                    _ => None,
                });
                let role = Subject::IamRole {
                    account: account.clone(),
                    name: name.clone(),
                };
                if let Some(why) = protection(b, &role) {
                    b.skip(f, Some(Target::Subject(role)), why);
                    continue;
                }
                let Some(upn) = upn.filter(|u| ids::is_upn(u)) else {
                    b.skip(f, Some(Target::Subject(role)), "the user's UPN is unknown, and federated role sessions are named by it: a human must revoke them");
                    continue;
                };
                let session = Subject::RoleSession {
                    account: account.clone(),
                    name: name.clone(),
                    id: None,
                    session: upn,
                    access_key_id: None,
                };
                b.act_via(f, RevokeRoleSession, Target::Subject(session), "deny the AWS role sessions her federated sign-ins opened (aws:userid AROA…:<UPN>) issued before now; nobody else's sessions on the role are touched", link);
            }
            (LinkKind::IdentityCenter, AwsEnd::IdentityCenter { account }, _)
                if identity_center_on(b.policy) =>
            {
                let Some(upn) = upn.clone() else {
                    continue;
                };
                let person = Subject::IdentityCenterUser {
                    account: account.clone(),
                    user_name: upn,
                    user_id: None,
                };
                b.act_via(f, DenyIdentityCenterUser, Target::Subject(person), "deny her Identity Center user's sessions in every permission set assigned to her (Identity Center takes its users from this tenant)", link);
            }
            (LinkKind::OidcSubject { .. }, AwsEnd::Role { account, name, .. }, _) if revoke => {
                let role = Subject::IamRole {
                    account: account.clone(),
                    name: name.clone(),
                };
                if let Some(why) = protection(b, &role) {
                    b.skip(f, Some(Target::Subject(role)), why);
                    continue;
                }
                b.act_via(f, RevokeRoleSessions, Target::Subject(role), "deny every session of this AWS role issued before now: it trusts this identity's tokens, and a web-identity session cannot be singled out by who asked for it", link);
            }
            (LinkKind::FederatedCredential(fic), _, EntraEnd::Application { app_id, name, .. })
                if quarantine =>
            {
                let app = Subject::ServicePrincipal {
                    tenant: Some(link.tenant.clone()),
                    id: app_id.clone(),
                    app_id: Some(app_id.clone()),
                    name: name.clone(),
                    key_id: Some(fic.id.clone()),
                };
                if let Some(why) = protection(b, &app) {
                    b.skip(f, Some(Target::Subject(app)), why);
                    continue;
                }
                b.act_via(f, RemoveFederatedCredential, Target::Subject(app), &format!("remove the federated credential {:?} that lets this AWS role's tokens sign in as the application (kept in the ledger; a human's release recreates it)", fic.name), link);
                b.act_via(f, Notify, Target::Subject(Subject::ServicePrincipal {
                    tenant: Some(link.tenant.clone()),
                    id: app_id.clone(),
                    app_id: Some(app_id.clone()),
                    name: name.clone(),
                    key_id: None,
                }), "Graph tokens the application already got through the AWS role stay valid until they expire (up to 24 hours with CAE, about an hour otherwise): review what the application did", link);
            }
            _ => {}
        }
    }
}

fn contain(b: &mut Builder<'_>, f: &Finding, s: &Subject) {
    use ActionKind::*;
    let p = b.policy;
    let runbook = f.runbook;
    let t = || Target::Subject(s.clone());
    let compromise = matches!(
        f.family,
        Family::CredentialCompromise | Family::AnomalousBehavior | Family::IdentityRisk
    );
    let wants = |r: Runbook| runbook == Some(r) || runbook == Some(Runbook::Contain);
    match s {
        Subject::AccessKey {
            account,
            access_key_id,
            user,
        } => {
            let user_subject = user.as_ref().map(|u| {
                Target::Subject(Subject::IamUser {
                    account: account.clone(),
                    name: u.clone(),
                })
            });
            if ids::is_temporary_key(access_key_id) {
                b.skip(
                    f,
                    Some(t()),
                    "ASIA… keys are temporary STS credentials and cannot be deactivated; revoking the sessions instead",
                );
            } else if runbook.is_none() || wants(Runbook::DisableKey) || runbook == Some(Runbook::Quarantine) {
                b.act(f, DeactivateAccessKey, t(), "deactivate exactly this access key (the user's other keys are untouched)");
            }
            match user_subject {
                Some(u) => {
                    if compromise && runbook.is_none() && ids::is_temporary_key(access_key_id) {
                        if p.aws.deactivate_long_term_keys {
                            b.act(f, DeactivateLongTermKeys, u.clone(), "a temporary key of this user was stolen: deactivate the user's active long-term keys, which probably minted it (policy deactivate_long_term_keys)");
                        } else {
                            b.act(f, Notify, u.clone(), "a temporary key of this user was stolen: the long-term key that minted it (GetSessionToken) is probably compromised too; rotate the user's active access keys (or set aws.deactivate_long_term_keys)");
                        }
                    }
                    if compromise || runbook.is_some_and(|r| r != Runbook::DisableKey) {
                        if runbook.is_none() || wants(Runbook::RevokeSessions) {
                            b.act(f, RevokeUserSessions, u.clone(), "deny STS tokens the user minted before now");
                        }
                        if (p.aws.quarantine_users && runbook.is_none()) || wants(Runbook::Quarantine) {
                            b.act(f, QuarantineUser, u.clone(), "attach the deny-all quarantine policy");
                        }
                        if p.aws.delete_login_profile && compromise {
                            b.act(f, DeleteLoginProfile, u.clone(), "delete the console password (policy delete_login_profile)");
                        }
                    }
                    b.act(f, TagPrincipal, u, "tag the user quell:quarantined with the finding id");
                }
                None if ids::is_temporary_key(access_key_id) => b.act(
                    f,
                    Notify,
                    t(),
                    "a temporary key of an unknown principal: find its session in CloudTrail",
                ),
                None => {}
            }
        }
        Subject::IamUser { .. } => {
            if f.family == Family::UnusedAccess && runbook.is_none() {
                match f.kind.as_str() {
                    "UnusedIAMUserPassword" => {
                        if p.aws.delete_login_profile {
                            b.act(f, DeleteLoginProfile, t(), "the console password is unused past the dormancy period");
                        } else {
                            b.act(f, Notify, t(), "the console password is unused; delete it or set aws.delete_login_profile");
                        }
                    }
                    "UnusedPermission" => b.act(f, Notify, t(), "unused permissions: right-size the user's policies"),
                    _ => {
                        b.act(f, DeactivateDormantAccessKeys, t(), &format!("deactivate the user's access keys unused for {} days or more", p.dormancy_days));
                        b.act(f, TagPrincipal, t(), "tag the user with the finding id");
                    }
                }
                return;
            }
            match runbook {
                Some(Runbook::DisableKey) => {
                    b.skip(f, Some(t()), "disable_key needs an access key id as the principal");
                    return;
                }
                Some(Runbook::DisableDormantKeys) => {
                    b.act(f, DeactivateDormantAccessKeys, t(), &format!("deactivate the user's access keys unused for {} days or more", p.dormancy_days));
                }
                _ => {}
            }
            if (p.aws.quarantine_users && runbook.is_none()) || wants(Runbook::Quarantine) {
                b.act(f, QuarantineUser, t(), "attach the deny-all quarantine policy");
            }
            if runbook.is_none() || wants(Runbook::RevokeSessions) {
                b.act(f, RevokeUserSessions, t(), "deny the user's console and STS sessions issued before now");
            }
            if p.aws.delete_login_profile && (runbook.is_none() || runbook == Some(Runbook::Contain)) {
                b.act(f, DeleteLoginProfile, t(), "delete the console password (policy delete_login_profile)");
            }
            if runbook.is_none() && !p.aws.quarantine_users {
                b.act(f, Notify, t(), "the finding names no access key: review the user's long-term keys (or set aws.quarantine_users)");
            }
            b.act(f, TagPrincipal, t(), "tag the user quell:quarantined with the finding id");
        }
        Subject::IamRole { name, .. } => {
            if ids::is_identity_center_role(name) {
                b.act(f, Notify, t(), "Identity Center roles are managed by Identity Center; revoke the user's access there");
                return;
            }
            if f.family == Family::UnusedAccess && runbook.is_none() {
                if f.kind == "UnusedIAMRole" && p.aws.quarantine_unused_roles {
                    b.act(f, QuarantineRole, t(), &format!("the role is unused past {} days (policy quarantine_unused_roles)", p.role_staleness_days));
                    b.act(f, TagPrincipal, t(), "tag the role with the finding id");
                } else {
                    b.act(f, Notify, t(), "unused role or permissions: review and remove (set aws.quarantine_unused_roles to quarantine unused roles)");
                }
                return;
            }
            if (p.aws.quarantine_roles && runbook.is_none()) || wants(Runbook::Quarantine) {
                b.act(f, QuarantineRole, t(), "attach the deny-all quarantine policy");
            }
            if runbook.is_none() || wants(Runbook::RevokeSessions) {
                b.act(f, RevokeRoleSessions, t(), "deny every session of the role issued before now (no single session is known)");
            }
            if runbook != Some(Runbook::DisableKey) {
                b.act(f, TagPrincipal, t(), "tag the role quell:quarantined with the finding id");
            }
        }
        Subject::RoleSession { account, name, session, .. } => {
            let role = Target::Subject(Subject::IamRole {
                account: account.clone(),
                name: name.clone(),
            });
            if (p.aws.quarantine_roles && runbook.is_none()) || wants(Runbook::Quarantine) {
                b.act(f, QuarantineRole, role.clone(), "attach the deny-all quarantine policy to the role");
            }
            if runbook.is_none() || wants(Runbook::RevokeSessions) {
                match p.aws.session_scope {
                    SessionScope::Session => b.act(f, RevokeRoleSession, t(), session_revocation_text(p, session)),
                    SessionScope::Role => b.act(f, RevokeRoleSessions, role.clone(), "deny every session of the role issued before now (policy session_scope = role)"),
                }
            }
            b.act(f, TagPrincipal, role, "tag the role quell:quarantined with the finding id");
        }
        Subject::Root { .. } => b.act(f, Notify, t(), "root credentials cannot be restricted by IAM: rotate the root password and keys and review with AssumeRoot"),
        Subject::FederatedUser { .. } => b.act(f, Notify, t(), "federated-user tokens can only be revoked on the IAM user that minted them (GetFederationToken): find it in CloudTrail"),
        Subject::IdentityCenterSession { account, session: Some(user), .. } if identity_center_on(p) => {
            let person = Subject::IdentityCenterUser {
                account: account.clone(),
                user_name: user.clone(),
                user_id: None,
            };
            contain_identity_center_user(b, f, &person);
        }
        Subject::IdentityCenterUser { .. } if identity_center_on(p) => {
            contain_identity_center_user(b, f, s);
        }
        Subject::IdentityCenterSession { .. } | Subject::IdentityCenterUser { .. } => b.act(f, Notify, t(), "Identity Center permission-set roles are managed by Identity Center; remove the user's assignment and sessions there (set aws.identity_center.account, and deploy the member role there with IdentityCenterInstanceArn, for quell to deny their sessions)"),
        Subject::EntraUser { id, on_premises_synced, .. } => {
            if f.source == Source::EntraRiskDetection
                && runbook.is_none()
                && p.azure.unconfirmed_detection == DetectionResponse::RevokeAndNotify
                && !is_strong_detection(&f.kind)
            {
                b.act(f, RevokeEntraSessions, t(), "revoke refresh tokens and session cookies (revokeSignInSessions): the user signs in again");
                b.act(f, Notify, t(), "one unconfirmed risk detection: sessions revoked; review the sign-ins, then confirm the user compromised or dismiss the risk (azure.unconfirmed_detection = contain disables on any detection)");
                return;
            }
            if (p.azure.disable_users && runbook.is_none()) || wants(Runbook::Quarantine) {
                b.act(f, DisableEntraUser, t(), "set accountEnabled = false");
            }
            if runbook.is_none() || wants(Runbook::RevokeSessions) {
                b.act(f, RevokeEntraSessions, t(), "revoke refresh tokens and session cookies (revokeSignInSessions)");
            }
            if p.azure.confirm_compromised
                && (runbook.is_none() || runbook == Some(Runbook::Contain))
                && (compromise || runbook.is_some())
            {
                if id.is_some() {
                    b.act(f, ConfirmUserCompromised, t(), "confirm the user compromised in Identity Protection (user risk high)");
                } else {
                    b.act(f, ConfirmUserCompromised, t(), "confirm the user compromised in Identity Protection (the executor resolves the UPN to an object id)");
                }
            }
            if *on_premises_synced == Some(true) {
                b.act(f, Notify, t(), "the user is synced from on-premises AD: a cloud disable is reverted by the next sync; disable the account in AD");
            }
        }
        Subject::OnPremisesAccount { .. } => b.act(f, Notify, t(), "an on-premises AD account with no Entra object: disable it and reset its password in Active Directory"),
        Subject::ServicePrincipal { key_id, .. } => {
            if (p.azure.disable_service_principals && runbook.is_none())
                || wants(Runbook::Quarantine)
            {
                // One disable per service principal, however many of its keys are named.
                let mut whole = s.clone();
                if let Subject::ServicePrincipal { key_id, .. } = &mut whole {
                    *key_id = None;
                }
                b.act(f, DisableServicePrincipal, Target::Subject(whole), "set accountEnabled = false on the service principal");
            }
            match key_id {
                Some(_) if runbook.is_none() || wants(Runbook::DisableKey) => b.act(
                    f,
                    RemoveServicePrincipalCredential,
                    t(),
                    "remove exactly this password credential (removePassword keyId)",
                ),
                None if runbook == Some(Runbook::DisableKey) => {
                    b.skip(f, Some(t()), "disable_key needs key_id, the credential's keyId");
                }
                _ => {}
            }
        }
        Subject::ManagedIdentity { .. } => {
            if (p.azure.remove_role_assignments && runbook.is_none())
                || wants(Runbook::Quarantine)
            {
                b.act(f, RemoveRoleAssignments, t(), "delete the identity's ARM role assignments (recorded, so they can be restored)");
            } else {
                b.act(f, Notify, t(), "managed identities cannot be disabled: review its role assignments (or set azure.remove_role_assignments)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan_input;

    fn plan_with(input: &str, policy: &Policy) -> Plan {
        plan_input(input.as_bytes(), policy, &Context::default()).unwrap()
    }

    #[test]
    fn a_runbook_notify_goes_to_its_principals_cloud() {
        // An Identity Center session cannot be contained: the runbook's notify is a record of
        // the request itself, and must be delivered by the AWS edge, not routed to Azure.
        let aws = r#"{"runbook":"contain","principal":"arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/alice","reason":"t"}"#;
        let p = plan_with(aws, &Policy::default());
        let notify: Vec<&Action> = p
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::Notify)
            .collect();
        assert!(!notify.is_empty(), "{p:#?}");
        assert!(notify.iter().all(|a| a.cloud == Cloud::Aws), "{notify:#?}");
        let azure = r#"{"runbook":"contain","principal":"alice@contoso.com","reason":"t"}"#;
        let p = plan_with(azure, &Policy::default());
        assert!(p.actions.iter().all(|a| a.cloud == Cloud::Azure), "{p:#?}");
    }

    fn link_map() -> crate::links::LinkMap {
        use crate::links::*;
        let tenant = "7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f";
        let role = |name: &str| AwsEnd::Role {
            account: "111122223333".into(),
            name: name.into(),
            provider: Some("arn:aws:iam::111122223333:saml-provider/EntraID".into()),
        };
        let user = |upn: &str| EntraEnd::User {
            id: None,
            upn: Some(upn.into()),
        };
        let app_role = LinkKind::SamlAppRole {
            service_principal: "sp".into(),
            app_role: "r".into(),
        };
        LinkMap {
            discovered_at: "2026-11-21T00:00:00Z".into(),
            links: vec![
                Link {
                    tenant: tenant.into(),
                    entra: user("maya.singh@contoso.com"),
                    aws: role("Admins"),
                    kind: app_role.clone(),
                    strength: Strength::Exact,
                },
                Link {
                    tenant: tenant.into(),
                    entra: user("maya.singh@contoso.com"),
                    aws: role("breakglass-admin"),
                    kind: app_role.clone(),
                    strength: Strength::Exact,
                },
                Link {
                    tenant: tenant.into(),
                    entra: user("bob@contoso.com"),
                    aws: role("ReadOnly"),
                    kind: app_role,
                    strength: Strength::Exact,
                },
                Link {
                    tenant: tenant.into(),
                    entra: EntraEnd::Application {
                        object_id: "0b1c".into(),
                        app_id: "5e6f7a8b-1c2d-4e3f-9a0b-1c2d3e4f5a6b".into(),
                        name: Some("checkout-graph".into()),
                    },
                    aws: AwsEnd::Role {
                        account: "111122223333".into(),
                        name: "web-checkout-ec2".into(),
                        provider: None,
                    },
                    kind: LinkKind::FederatedCredential(FederatedCredential {
                        id: "fic-1".into(),
                        name: "aws-checkout".into(),
                        issuer: "https://abc-123.tokens.sts.global.api.aws".into(),
                        subject: "arn:aws:iam::111122223333:role/web-checkout-ec2".into(),
                        audiences: vec!["api://AzureADTokenExchange".into()],
                        description: None,
                    }),
                    strength: Strength::Exact,
                },
            ],
            gaps: vec![],
        }
    }

    fn linked(stale: bool) -> Context {
        Context {
            links: Some(std::sync::Arc::new(link_map())),
            links_stale: stale,
            ..Context::default()
        }
    }

    #[test]
    fn an_entra_compromise_revokes_her_federated_aws_sessions_and_no_one_elses() {
        let input = include_str!("../../../events/entra/risk-detection-leaked-credentials.json");
        let mut policy = Policy::default();
        policy
            .protected
            .push(crate::policy::Pattern::new("arn:aws:iam::*:role/breakglass-*").unwrap());
        let p = plan_input(input.as_bytes(), &policy, &linked(false)).unwrap();
        let aws: Vec<&Action> = p.actions.iter().filter(|a| a.cloud == Cloud::Aws).collect();
        assert_eq!(aws.len(), 1, "{p:#?}");
        assert_eq!(aws[0].kind, ActionKind::RevokeRoleSession);
        let Target::Subject(Subject::RoleSession { name, session, .. }) = &aws[0].target else {
            panic!("{aws:#?}")
        };
        assert_eq!(
            (name.as_str(), session.as_str()),
            ("Admins", "maya.singh@contoso.com")
        );
        assert!(
            aws[0].via.is_some() && aws[0].reason.contains("saml_app_role, exact"),
            "{aws:#?}"
        );
        // The protected role is said so, not touched; bob's role is not in the plan.
        assert!(
            p.skipped.iter().any(|s| s.reason.contains("protected")),
            "{p:#?}"
        );
        assert!(!format!("{p:?}").contains("ReadOnly"));
        // Without a map, the plan is what it always was.
        let plain = plan_input(input.as_bytes(), &policy, &Context::default()).unwrap();
        assert!(
            plain.actions.iter().all(|a| a.cloud == Cloud::Azure),
            "{plain:#?}"
        );
        // A stale map still acts, and says so.
        let stale = plan_input(input.as_bytes(), &policy, &linked(true)).unwrap();
        assert!(
            stale
                .actions
                .iter()
                .any(|a| a.reason.contains("more than a day old"))
        );
    }

    #[test]
    fn links_never_withhold_the_identitys_own_containment() {
        use crate::links::*;
        let input = include_str!("../../../events/entra/risk-detection-leaked-credentials.json");
        let provider = "arn:aws:iam::111122223333:saml-provider/EntraID";
        let role = |name: String| AwsEnd::Role {
            account: "111122223333".into(),
            name,
            provider: Some(provider.into()),
        };
        let tenant = "7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f";
        let mut map = link_map();
        // Forty roles that trust the tenant's SAML provider: with the gallery app known, they
        // are no sessions of hers.
        for i in 0..40 {
            map.links.push(Link {
                tenant: tenant.into(),
                entra: EntraEnd::AnyUser,
                aws: role(format!("Trusting{i}")),
                kind: LinkKind::SamlProvider,
                strength: Strength::Inferred,
            });
        }
        let ctx = Context {
            links: Some(std::sync::Arc::new(map.clone())),
            ..Context::default()
        };
        // Without the gallery app, a role that trusts the tenant's SAML provider may hold her
        // sessions (inferred): its UPN-named sessions are denied.
        let inferred_only = LinkMap {
            links: map
                .links
                .iter()
                .filter(|l| l.kind == LinkKind::SamlProvider)
                .take(3)
                .cloned()
                .collect(),
            ..LinkMap::default()
        };
        let alone = Context {
            links: Some(std::sync::Arc::new(inferred_only)),
            ..Context::default()
        };
        let p = plan_input(input.as_bytes(), &Policy::default(), &alone).unwrap();
        let inferred: Vec<&Action> = p
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::RevokeRoleSession)
            .collect();
        assert_eq!(inferred.len(), 3, "{p:#?}");
        assert!(
            inferred[0].reason.contains("saml_provider, inferred"),
            "{inferred:#?}"
        );
        let p = plan_input(input.as_bytes(), &Policy::default(), &ctx).unwrap();
        // Admins only: breakglass-admin is protected by default, the forty are not hers.
        let aws = p.actions.iter().filter(|a| a.cloud == Cloud::Aws).count();
        assert_eq!(aws, 1, "{p:#?}");
        // Twelve roles assigned to her: over the cap, only the cross-cloud actions wait.
        for i in 0..12 {
            map.links.push(Link {
                tenant: tenant.into(),
                entra: EntraEnd::User {
                    id: None,
                    upn: Some("maya.singh@contoso.com".into()),
                },
                aws: role(format!("Assigned{i}")),
                kind: LinkKind::SamlAppRole {
                    service_principal: "sp".into(),
                    app_role: format!("r{i}"),
                },
                strength: Strength::Exact,
            });
        }
        let ctx = Context {
            links: Some(std::sync::Arc::new(map)),
            ..Context::default()
        };
        let p = plan_input(input.as_bytes(), &Policy::default(), &ctx).unwrap();
        assert!(
            p.actions
                .iter()
                .any(|a| a.kind == ActionKind::DisableEntraUser),
            "{p:#?}"
        );
        assert!(
            p.actions
                .iter()
                .all(|a| a.via.is_none() || !a.kind.is_containment()),
            "{p:#?}"
        );
        assert!(
            p.actions
                .iter()
                .any(|a| a.reason.contains("cross-cloud containment actions")),
            "{p:#?}"
        );
        assert!(
            p.skipped
                .iter()
                .any(|s| s.reason.contains("cap on cross-cloud")),
            "{p:#?}"
        );
    }

    #[test]
    fn an_aws_role_compromise_removes_the_entra_credential_that_trusts_it() {
        let input = include_str!("../../../events/runbook/revoke-role-session.json")
            .replace("revoke_sessions", "contain");
        let p = plan_input(input.as_bytes(), &Policy::default(), &linked(false)).unwrap();
        let fic: Vec<&Action> = p
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::RemoveFederatedCredential)
            .collect();
        assert_eq!(fic.len(), 1, "{p:#?}");
        assert_eq!(fic[0].cloud, Cloud::Azure);
        let Target::Subject(Subject::ServicePrincipal { key_id, app_id, .. }) = &fic[0].target
        else {
            panic!("{fic:#?}")
        };
        assert_eq!(key_id.as_deref(), Some("fic-1"));
        assert_eq!(
            app_id.as_deref(),
            Some("5e6f7a8b-1c2d-4e3f-9a0b-1c2d3e4f5a6b")
        );
        // A runbook asking only to revoke sessions removes no credential.
        let revoke = include_str!("../../../events/runbook/revoke-role-session.json");
        let p = plan_input(revoke.as_bytes(), &Policy::default(), &linked(false)).unwrap();
        assert!(
            p.actions
                .iter()
                .all(|a| a.kind != ActionKind::RemoveFederatedCredential)
        );
    }

    #[test]
    fn all_kinds_are_listed_once_in_rank_order() {
        let all = ActionKind::ALL;
        assert!(
            all.windows(2).all(|w| w[0].rank() <= w[1].rank()),
            "{all:?}"
        );
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
    }

    #[test]
    fn every_planned_action_runs_on_its_kinds_cloud() {
        for kind in ActionKind::ALL {
            // Exhaustive: each kind names its cloud, and only notify may go to either.
            assert_eq!(
                kind.cloud().is_none(),
                kind == ActionKind::Notify,
                "{kind:?}"
            );
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");
        let mut planned = 0;
        for family in std::fs::read_dir(dir).unwrap() {
            for file in std::fs::read_dir(family.unwrap().path()).unwrap() {
                let bytes = std::fs::read(file.unwrap().path()).unwrap();
                let Ok(p) = plan_input(&bytes, &Policy::default(), &Context::default()) else {
                    continue;
                };
                for a in &p.actions {
                    planned += 1;
                    assert!(ActionKind::ALL.contains(&a.kind), "{a:#?} missing from ALL");
                    if let Some(c) = a.kind.cloud() {
                        assert_eq!(a.cloud, c, "{a:#?}");
                    }
                }
            }
        }
        assert!(planned > 50, "{planned}");
    }

    #[test]
    fn instance_sessions_say_what_the_revocation_does_to_the_instance() {
        let req = r#"{"runbook":"revoke_sessions","principal":"arn:aws:sts::111122223333:assumed-role/web/i-0a7c3e9f1b2d4e6f8","role_id":"AROAEXAMPLEEXAMPLE01","reason":"t"}"#;
        let bound = plan_with(req, &Policy::default());
        assert!(
            bound.actions[0]
                .reason
                .contains("keeps access through VPC endpoints")
        );
        let mut policy = Policy::default();
        policy.aws.instance_credentials = InstanceCredentials::Revoke;
        let revoked = plan_with(req, &policy);
        assert!(
            revoked.actions[0]
                .reason
                .contains("loses AWS access until EC2 rotates")
        );
        // A human's session: no claim about fresh credentials for a workload.
        let human = req.replace("i-0a7c3e9f1b2d4e6f8", "alice");
        let p = plan_with(&human, &Policy::default());
        assert!(
            p.actions[0]
                .reason
                .contains("a new AssumeRole is not affected")
        );
        assert!(!p.actions[0].reason.contains("fresh credentials"));
    }

    #[test]
    fn quell_named_roles_are_quells_only_in_its_own_account() {
        let policy = Policy::default();
        let ctx = Context::default()
            .with_aws_caller("arn:aws:sts::111122223333:assumed-role/quell-runbook-x/s");
        let role = |account: &str, name: &str| Subject::IamRole {
            account: account.into(),
            name: name.into(),
        };
        assert!(
            protection_reason(&policy, &ctx, &role("111122223333", "quell-sweeper-y")).is_some()
        );
        // The same name in another account is anyone's: an attacker's persistence included.
        assert!(
            protection_reason(&policy, &ctx, &role("444455556666", "quell-sweeper-y")).is_none()
        );
        // The member role is quell's in every account.
        let member = policy.aws.member_role_name.clone();
        assert!(protection_reason(&policy, &ctx, &role("444455556666", &member)).is_some());
    }

    #[test]
    fn quell_roles_are_protected_in_every_partition_whatever_the_list() {
        let mut policy = Policy::default();
        policy.protected.clear();
        policy.aws.member_role_name = "SecOpsResponder".into();
        for name in [
            "quell-runbook-us-gov-west-1-main",
            "SecOpsResponder",
            "QUELL-sweeper-x",
        ] {
            let s = Subject::IamRole {
                account: "111122223333".into(),
                name: name.into(),
            };
            assert!(
                protection_reason(&policy, &Context::default(), &s).is_some(),
                "{name}"
            );
        }
        let ctx = Context::default()
            .with_aws_caller("arn:aws-us-gov:sts::111122223333:assumed-role/responder/x");
        let own = Subject::IamRole {
            account: "111122223333".into(),
            name: "responder".into(),
        };
        assert!(protection_reason(&policy, &ctx, &own).is_some());
        let other = Subject::IamRole {
            account: "111122223333".into(),
            name: "payments".into(),
        };
        assert!(protection_reason(&policy, &ctx, &other).is_none());
        // A path only the executor sees.
        policy.protected = vec![Pattern::new("arn:aws:iam::*:user/ops/*").unwrap()];
        let user = Subject::IamUser {
            account: "111122223333".into(),
            name: "alice".into(),
        };
        assert!(protection_reason(&policy, &Context::default(), &user).is_none());
        assert!(
            protection_reason_with(
                &policy,
                &Context::default(),
                &user,
                &["arn:aws-cn:iam::111122223333:user/ops/alice"]
            )
            .is_some()
        );
    }

    #[test]
    fn the_cap_keeps_the_note_on_each_security_hub_finding() {
        let policy = Policy {
            max_actions: 1,
            ..Policy::default()
        };
        let input = include_str!("../../../events/securityhub/imported-guardduty-access-key.json");
        let p = plan_with(input, &policy);
        let kinds: Vec<ActionKind> = p.actions.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [ActionKind::Notify, ActionKind::UpdateSecurityhubFinding]
        );
        assert!(p.skipped.iter().all(|s| s.reason.contains("withheld")));
    }
}
