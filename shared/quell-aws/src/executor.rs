//! Executes the AWS actions of a plan. Every action reads before it writes, so a second run
//! reports `already_in_state` and changes nothing; one failure never stops the others.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_iam::types::{StatusType, Tag};
use aws_sdk_securityhub::types::{
    AwsSecurityFindingIdentifier, NoteUpdate, StringFilter, StringFilterComparison, WorkflowStatus,
    WorkflowUpdate,
};
use quell_core::Cloud;
use quell_core::clock::{Clock, rfc3339_seconds};
use quell_core::links::{AwsEnd, Link, LinkKind};
use quell_core::model::{FindingRef, Subject, ids};
use quell_core::plan::{Action, ActionKind, Context, Plan, Skip, Target, protection_reason_with};
use quell_core::policy::{InstanceCredentials, Mode, Policy};
use quell_core::report::{ActionResult, AwsInverse, Inverse, Outcome, Report, Status};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::clients::{AwsClients, ClientSource, session_name};
use crate::docs;
use crate::error::{ExecError, classify};
use crate::iam::{self, Kind};

/// Executes plans in AWS.
pub struct AwsExecutor<S> {
    source: S,
    policy: Policy,
    ctx: Context,
    clock: Arc<dyn Clock>,
    /// What [`AwsExecutor::prefetch`] read beside the ledger claim, for the next execute.
    warm: Mutex<Warm>,
}

/// Reads made before the claim, for the execute that follows: each principal's pre-write read
/// and each user's key list, used once, and only within [`WARM_FOR`] of being read.
#[derive(Default)]
struct Warm {
    at: Option<std::time::Instant>,
    guards: HashMap<(String, Kind, String), Result<Principal, Outcome>>,
    keys: HashMap<(String, String), Vec<aws_sdk_iam::types::AccessKeyMetadata>>,
    inline: HashMap<(String, Kind, String, String), Option<String>>,
    /// (account, role) → the size of the role's inline policies other than quell's session one.
    others: HashMap<(String, String), usize>,
}

/// How long a read made beside the claim stands for the read before the write.
const WARM_FOR: std::time::Duration = std::time::Duration::from_secs(5);

type KeyCache = Mutex<HashMap<(String, String), Vec<aws_sdk_iam::types::AccessKeyMetadata>>>;

/// Inline policies read beside the claim: (account, kind, principal, policy) → its document.
type InlineCache = Mutex<HashMap<(String, Kind, String, String), Option<String>>>;

/// The reads one execute shares between its actions, seeded by a prefetch.
#[derive(Default)]
struct Caches {
    guards: GuardCache,
    keys: KeyCache,
    inline: InlineCache,
    others: Mutex<HashMap<(String, String), usize>>,
}

/// What the pre-write read of a principal found.
#[derive(Clone)]
struct Principal {
    name: String,
    role_id: Option<String>,
    /// A role's `MaxSessionDuration`, in seconds.
    max_session: Option<i32>,
    tags: Vec<(String, String)>,
    /// A role's trust policy as read before acting: recorded with the tag so `verify` can tell
    /// whether it changed since (IAM keeps no modification time for it).
    trust: Option<Value>,
}

type GuardCache = Mutex<HashMap<(String, Kind, String), Result<Principal, Outcome>>>;

impl<S: ClientSource> AwsExecutor<S> {
    pub fn new(source: S, policy: Policy, ctx: Context, clock: Arc<dyn Clock>) -> Self {
        AwsExecutor {
            source,
            policy,
            ctx,
            clock,
            warm: Mutex::new(Warm::default()),
        }
    }

    /// Makes the reads the plan's containing actions start with (each principal's pre-write
    /// read, a user's access keys) so they run beside the ledger claim instead of after it.
    /// The execute that follows uses each once; the writes still come after their reads.
    pub async fn prefetch(&self, plan: &Plan) {
        if plan.mode != Mode::Enforce {
            return;
        }
        // (account, kind, name, read its keys, the revocation policies to read)
        let mut targets: Vec<(String, Kind, String, bool, Vec<&'static str>)> = Vec::new();
        for a in plan.actions.iter().filter(|a| a.cloud == Cloud::Aws) {
            let Target::Subject(s) = &a.target else {
                continue;
            };
            let revoke: &[&'static str] = match (a.kind, s) {
                (ActionKind::RevokeUserSessions, Subject::IamUser { .. }) => {
                    &[docs::USER_REVOKE_POLICY]
                }
                (ActionKind::RevokeRoleSessions, Subject::IamRole { .. }) => {
                    &[docs::ROLE_REVOKE_POLICY]
                }
                (ActionKind::RevokeRoleSession, Subject::RoleSession { .. }) => {
                    &[docs::ROLE_REVOKE_POLICY, docs::SESSION_REVOKE_POLICY]
                }
                _ => &[],
            };
            let t = match s {
                Subject::IamUser { account, name } => (account, Kind::User, name, false),
                Subject::AccessKey {
                    account,
                    user: Some(u),
                    access_key_id,
                } => (
                    account,
                    Kind::User,
                    u,
                    !ids::is_temporary_key(access_key_id),
                ),
                Subject::IamRole { account, name } | Subject::RoleSession { account, name, .. } => {
                    (account, Kind::Role, name, false)
                }
                _ => continue,
            };
            let t = (t.0.clone(), t.1, t.2.clone(), t.3, revoke.to_vec());
            match targets
                .iter_mut()
                .find(|x| x.0 == t.0 && x.1 == t.1 && x.2 == t.2)
            {
                Some(x) => {
                    x.3 |= t.3;
                    for p in t.4 {
                        if !x.4.contains(&p) {
                            x.4.push(p);
                        }
                    }
                }
                None => targets.push(t),
            }
        }
        let mut warm = Warm {
            at: Some(std::time::Instant::now()),
            ..Warm::default()
        };
        for (account, kind, name, keys, revoke) in targets {
            let Ok(clients) = self.source.clients(&account, "quell-read").await else {
                continue;
            };
            let caches = Caches::default();
            let stamp = String::new();
            let run = Run {
                exec: self,
                clients: &clients,
                account: &account,
                finding: "",
                last_seen: None,
                stamp: &stamp,
                now: self.clock.now(),
                caches: &caches,
            };
            let list = async {
                if !keys {
                    return None;
                }
                clients
                    .iam
                    .list_access_keys()
                    .user_name(&name)
                    .send()
                    .await
                    .ok()
                    .map(|o| o.access_key_metadata().to_vec())
            };
            let inline = async {
                let mut reads = tokio::task::JoinSet::new();
                for policy in revoke.iter().copied() {
                    let (iam, name) = (clients.iam.clone(), name.clone());
                    reads.spawn(async move {
                        (policy, iam::get_inline(&iam, kind, &name, policy).await)
                    });
                }
                let mut read = Vec::new();
                while let Some(r) = reads.join_next().await {
                    if let Ok((policy, Ok(doc))) = r {
                        read.push((policy, doc));
                    }
                }
                read
            };
            // A role session's revocation counts the role's other inline policies (IAM's quota).
            let sizes = async {
                if kind == Kind::Role && revoke.contains(&docs::SESSION_REVOKE_POLICY) {
                    other_inline_size(&clients.iam, &name).await.ok()
                } else {
                    None
                }
            };
            let (guard, listed, inline, sizes) =
                tokio::join!(run.guard(kind, &name), list, inline, sizes);
            warm.guards
                .insert((account.clone(), kind, name.clone()), guard);
            if let Some(n) = sizes {
                warm.others.insert((account.clone(), name.clone()), n);
            }
            for (policy, doc) in inline {
                warm.inline.insert(
                    (account.clone(), kind, name.clone(), policy.to_string()),
                    doc,
                );
            }
            if let Some(l) = listed {
                warm.keys.insert((account, name), l);
            }
        }
        *self.warm.lock().await = warm;
    }

    /// The policy it acts under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The deployment it runs as (its own identities are protected).
    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// Resolves each long-term access key the plan names without its user (a runbook request,
    /// a bare key) to the user that owns it (`GetAccessKeyLastUsed`, one call per key, before
    /// the ledger claim), so the containment is keyed by the user, like any other of theirs, and
    /// its check after containment looks at that user. A key that cannot be resolved stays bare.
    pub async fn resolve_keys(&self, mut plan: Plan) -> Plan {
        let mut bare: Vec<(String, String)> = plan
            .actions
            .iter()
            .filter(|a| a.cloud == Cloud::Aws)
            .filter_map(|a| match &a.target {
                Target::Subject(Subject::AccessKey {
                    account,
                    access_key_id,
                    user: None,
                }) if !ids::is_temporary_key(access_key_id) => {
                    Some((account.clone(), access_key_id.clone()))
                }
                _ => None,
            })
            .collect();
        bare.sort();
        bare.dedup();
        for (account, key) in bare {
            let Ok(clients) = self.source.clients(&account, "quell-resolve").await else {
                continue;
            };
            let user = match clients
                .iam
                .get_access_key_last_used()
                .access_key_id(&key)
                .send()
                .await
            {
                Ok(out) => match out.user_name() {
                    Some(u) if ids::is_iam_name(u) => u.to_string(),
                    _ => continue,
                },
                Err(e) => {
                    tracing::warn!(%key, error = %classify(e), "the key's user could not be read; keyed as the bare key");
                    continue;
                }
            };
            plan.update_subjects(|s| {
                if let Subject::AccessKey {
                    account: a,
                    access_key_id: k,
                    user: slot @ None,
                } = s
                    && *a == account
                    && *k == key
                {
                    *slot = Some(user.clone());
                }
            });
        }
        plan
    }

    /// Names each Identity Center user the plan gives by identity store user id by their user
    /// name (`identitystore:DescribeUser`, before the ledger claim), so the person has one key
    /// whichever way they are named. A user that cannot be read stays as named.
    pub async fn resolve_identity_center_users(&self, mut plan: Plan) -> Plan {
        let named_by_id: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.target {
                Target::Subject(Subject::IdentityCenterUser {
                    user_name,
                    user_id: Some(id),
                    ..
                }) if user_name == id => Some(id.clone()),
                _ => None,
            })
            .collect();
        if named_by_id.is_empty() || self.policy.aws.identity_center.account.is_none() {
            return plan;
        }
        let Ok((c, _)) = self.identity_center_clients("quell-resolve").await else {
            return plan;
        };
        let Ok(instance) = crate::identity_center::instance(
            &c.sso,
            self.policy.aws.identity_center.instance_arn.as_deref(),
        )
        .await
        else {
            return plan;
        };
        for id in named_by_id {
            let name = match c
                .store
                .describe_user()
                .identity_store_id(&instance.identity_store)
                .user_id(&id)
                .send()
                .await
            {
                Ok(u) => match u.user_name() {
                    Some(n) if ids::is_identity_center_user_name(n) => n.to_string(),
                    _ => continue,
                },
                Err(e) => {
                    tracing::warn!(user_id = %id, error = %classify(e), "the Identity Center user could not be read; keyed by id");
                    continue;
                }
            };
            plan.update_subjects(|s| {
                if let Subject::IdentityCenterUser {
                    user_name,
                    user_id: Some(u),
                    ..
                } = s
                    && *u == id
                {
                    *user_name = name.clone();
                }
            });
        }
        plan
    }

    /// Where this executor gets its clients (release and verify reach the same accounts).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Runs the plan: dry-run unless the plan's mode is `enforce`.
    pub async fn execute(&self, plan: &Plan) -> Report {
        let now = self.clock.now();
        let stamp = rfc3339_seconds(now);
        if plan.mode == Mode::DryRun {
            return Report::dry_run(plan, stamp);
        }
        // What a prefetch read beside the claim, if fresh: used once.
        let warm = std::mem::take(&mut *self.warm.lock().await);
        let fresh = warm.at.is_some_and(|t| t.elapsed() < WARM_FOR);
        let caches = if fresh {
            Caches {
                guards: Mutex::new(warm.guards),
                keys: Mutex::new(warm.keys),
                inline: Mutex::new(warm.inline),
                others: Mutex::new(warm.others),
            }
        } else {
            Caches::default()
        };
        let caches = &caches;
        let mut results: Vec<ActionResult> = Vec::with_capacity(plan.actions.len());
        for action in &plan.actions {
            let last_seen = plan
                .findings
                .iter()
                .find(|f| f.id == action.finding)
                .and_then(|f| f.last_seen.as_deref());
            let outcome = self
                .run(
                    action,
                    &stamp,
                    now,
                    last_seen,
                    caches,
                    &results,
                    &plan.skipped,
                )
                .await;
            tracing::info!(
                kind = action.kind.as_str(),
                target = %action.target.label(),
                status = ?outcome.status,
                code = outcome.error_code.as_deref().unwrap_or(""),
                "action"
            );
            results.push(ActionResult {
                action: action.clone(),
                outcome,
            });
        }
        Report::new(plan, stamp, results)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        action: &Action,
        stamp: &str,
        now: OffsetDateTime,
        last_seen: Option<&str>,
        caches: &Caches,
        done: &[ActionResult],
        withheld: &[Skip],
    ) -> Outcome {
        if action.cloud != Cloud::Aws {
            return Outcome::skipped("not an AWS action; the Azure responder executes it");
        }
        match (&action.kind, &action.target) {
            (ActionKind::Notify, Target::Subject(Subject::IamUser { account, name })) => {
                self.notify_user(account, name, &action.finding).await
            }
            (ActionKind::Notify, _) => Outcome::applied(
                "escalated to a human: the audit event carries this notice",
                None,
            ),
            (ActionKind::UpdateSecurityhubFinding, Target::Record(r)) => {
                self.update_finding(r, &action.finding, done, withheld)
                    .await
            }
            (
                ActionKind::DenyIdentityCenterUser,
                Target::Subject(s @ Subject::IdentityCenterUser { user_name, .. }),
            ) => {
                self.deny_identity_center_user(s, user_name, &action.finding)
                    .await
            }
            (_, Target::Subject(s)) => {
                let Some(account) = s.account() else {
                    return Outcome::skipped("the subject names no AWS account");
                };
                let clients = match self
                    .source
                    .clients(account, &session_name(&action.finding))
                    .await
                {
                    Ok(c) => c,
                    Err(e) => return Outcome::from(e),
                };
                let run = Run {
                    exec: self,
                    clients: &clients,
                    account,
                    finding: &action.finding,
                    last_seen,
                    stamp,
                    now,
                    caches,
                };
                if let Some(link) = &action.via
                    && let Err(o) = run.link_holds(link, s).await
                {
                    return o;
                }
                run.subject_action(action.kind, s).await
            }
            (kind, target) => Outcome::skipped(format!(
                "{} cannot act on {}",
                kind.as_str(),
                target.label()
            )),
        }
    }

    /// Clients in the account that administers Identity Center (`aws.identity_center.account`,
    /// else quell's own), and that account.
    pub async fn identity_center_clients(
        &self,
        finding: &str,
    ) -> Result<(crate::identity_center::Clients, String), crate::ExecError> {
        match &self.policy.aws.identity_center.account {
            Some(account) => {
                let c = self.source.clients(account, &session_name(finding)).await?;
                Ok((c.identity_center, account.clone()))
            }
            None => Ok((
                self.source.home().identity_center,
                self.ctx.account.clone().unwrap_or_default(),
            )),
        }
    }

    /// Denies an Identity Center user's sessions in every permission set assigned to them or
    /// to their groups, one permission set after another's provisioning (`identity_center`).
    async fn deny_identity_center_user(
        &self,
        s: &Subject,
        user_name: &str,
        finding: &str,
    ) -> Outcome {
        use crate::identity_center as idc;
        let (c, account) = match self.identity_center_clients(finding).await {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let instance = match idc::instance(
            &c.sso,
            self.policy.aws.identity_center.instance_arn.as_deref(),
        )
        .await
        {
            Ok(i) => i,
            Err(e) => return e.into(),
        };
        let user_id = match idc::user_id(&c.store, &instance.identity_store, user_name).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Outcome::failed(
                    "NoSuchIdentityCenterUser",
                    format!(
                        "no Identity Center user is named {user_name} in {}: contain the person by hand",
                        instance.identity_store
                    ),
                    false,
                );
            }
            Err(e) => return e.into(),
        };
        // Protection again, on what Identity Center says: a pattern may name the user id.
        if let Some(why) = protection_reason_with(&self.policy, &self.ctx, s, &[&user_id]) {
            return Outcome::skipped(why);
        }
        let sets = match idc::permission_sets(&c, &instance, &user_id).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        if sets.is_empty() {
            return Outcome::already(format!(
                "{user_name} ({user_id}) holds no permission set in any account: no AWS access to deny"
            ));
        }
        let mut denied = Vec::new();
        let mut already = Vec::new();
        let mut failed: Vec<(String, crate::ExecError)> = Vec::new();
        let mut previous = std::collections::BTreeMap::new();
        for set in &sets {
            match deny_in_set(&c, &instance, set, &user_id).await {
                Ok(Some(before)) => {
                    denied.push(set.clone());
                    previous.insert(set.clone(), before);
                }
                Ok(None) => already.push(set.clone()),
                Err(e) => failed.push((set.clone(), e)),
            }
        }
        let inverse = (!denied.is_empty()).then(|| {
            quell_core::report::Inverse::from(quell_core::report::AwsInverse::IdentityCenterDeny {
                account,
                instance_arn: instance.arn.clone(),
                user_id: user_id.clone(),
                permission_sets: denied.clone(),
                previous: previous.clone(),
            })
        });
        if let Some((_, first)) = failed.first() {
            let list: Vec<String> = failed
                .iter()
                .map(|(set, e)| format!("{set} ({}: {})", e.code, e.message))
                .collect();
            let mut o = Outcome::failed(
                first.code.clone(),
                format!(
                    "denied {user_name}'s sessions in {} permission set(s); not in: {}",
                    denied.len() + already.len(),
                    list.join("; ")
                ),
                failed.iter().any(|(_, e)| e.retryable),
            );
            o.inverse = inverse;
            return o;
        }
        if denied.is_empty() {
            return Outcome::already(format!(
                "{user_name}'s sessions are already denied in every permission set assigned to them ({})",
                already.len()
            ));
        }
        Outcome::applied(
            format!(
                "denied every session of {user_name} ({user_id}) in {} permission set(s), provisioned: {}",
                denied.len() + already.len(),
                denied.join(", ")
            ),
            inverse,
        )
    }

    /// A notice about an IAM user names the user's active access keys, so the human it reaches
    /// knows what to rotate. Read-only; a failed read still escalates.
    async fn notify_user(&self, account: &str, user: &str, finding: &str) -> Outcome {
        let keys = match self.source.clients(account, &session_name(finding)).await {
            Ok(c) => c
                .iam
                .list_access_keys()
                .user_name(user)
                .send()
                .await
                .map_err(classify),
            Err(e) => Err(e),
        };
        let listed = match keys {
            Ok(out) => {
                let active: Vec<&str> = out
                    .access_key_metadata()
                    .iter()
                    .filter(|k| k.status() == Some(&StatusType::Active))
                    .filter_map(|k| k.access_key_id())
                    .collect();
                if active.is_empty() {
                    format!("{user} has no active access key")
                } else {
                    format!("{user}'s active access keys: {}", active.join(", "))
                }
            }
            Err(e) => format!("could not list {user}'s access keys ({})", e.code),
        };
        Outcome::applied(
            format!("escalated to a human: the audit event carries this notice; {listed}"),
            None,
        )
    }

    /// Records on the Security Hub finding what quell did. The workflow becomes NOTIFIED (OCSF:
    /// In Progress) only when every action for it succeeded (applied or already in state);
    /// when one failed or was withheld the finding stays NEW, with a note saying so, for a
    /// human or a later retry. The note is written only when it changes: Security Hub sends a
    /// new Imported event on each update, and an unchanged note must not loop.
    async fn update_finding(
        &self,
        r: &FindingRef,
        finding: &str,
        done: &[ActionResult],
        skipped: &[Skip],
    ) -> Outcome {
        let (contained, text) = finding_note(finding, done, skipped);
        let client = |region: &Option<String>| {
            let home = self.source.home();
            match region {
                Some(region) => aws_sdk_securityhub::Client::from_conf(
                    home.securityhub
                        .config()
                        .to_builder()
                        .region(aws_config::Region::new(region.clone()))
                        .build(),
                ),
                None => home.securityhub.clone(),
            }
        };
        match r {
            FindingRef::SecurityhubFinding {
                id,
                product_arn,
                region,
                ..
            } => update_asff(&client(region), id, product_arn, contained, text).await,
            FindingRef::SecurityhubOcsfFinding {
                account,
                region,
                uid,
                product_uid,
            } => update_ocsf(&client(region), account, uid, product_uid, contained, text).await,
            _ => Outcome::skipped("not a Security Hub finding"),
        }
    }
}

/// What quell did for one finding, as a note (at most 512 characters), and whether every
/// action succeeded.
fn finding_note(finding: &str, done: &[ActionResult], skipped: &[Skip]) -> (bool, String) {
    let mine: Vec<&ActionResult> = done
        .iter()
        .filter(|d| {
            d.action.finding == finding && d.action.kind != ActionKind::UpdateSecurityhubFinding
        })
        .collect();
    let withheld = skipped
        .iter()
        .filter(|s| s.finding == finding && s.reason.contains("withheld"))
        .count();
    let failed = mine
        .iter()
        .filter(|d| d.outcome.status == Status::Failed)
        .count();
    let contained = failed == 0 && withheld == 0;
    let mut parts: Vec<String> = mine
        .iter()
        .map(|d| {
            format!(
                "{} {}: {}",
                d.action.kind.as_str(),
                d.action.target.label(),
                d.outcome.status.as_str()
            )
        })
        .collect();
    if withheld > 0 {
        parts.push(format!(
            "{withheld} action(s) withheld by the blast-radius cap"
        ));
    }
    let mut text = if contained {
        format!("quell: {}", parts.join("; "))
    } else {
        format!(
            "quell: NOT CONTAINED, left NEW for a human ({failed} failed, {withheld} withheld). {}",
            parts.join("; ")
        )
    };
    if text.chars().count() > 512 {
        text = text.chars().take(509).collect::<String>() + "...";
    }
    (contained, text)
}

/// `BatchUpdateFindings` on an ASFF finding, reading it first.
async fn update_asff(
    sh: &aws_sdk_securityhub::Client,
    id: &str,
    product_arn: &str,
    contained: bool,
    text: String,
) -> Outcome {
    {
        let current = match crate::securityhub::asff_finding(sh, id, product_arn).await {
            Ok(f) => f,
            Err(e) => return Outcome::from(e),
        };
        let (workflow, note) = current
            .as_ref()
            .map(crate::securityhub::workflow_and_note)
            .unwrap_or_default();
        if contained && workflow == Some("NOTIFIED") {
            return Outcome::already("the finding's workflow is already NOTIFIED");
        }
        if !contained && note == Some(text.as_str()) {
            return Outcome::already("the finding already carries this note and stays NEW");
        }
        let mut update = sh
            .batch_update_findings()
            .finding_identifiers(
                AwsSecurityFindingIdentifier::builder()
                    .id(id)
                    .product_arn(product_arn)
                    .build(),
            )
            .note(NoteUpdate::builder().text(text).updated_by("quell").build());
        if contained {
            update = update.workflow(
                WorkflowUpdate::builder()
                    .status(WorkflowStatus::Notified)
                    .build(),
            );
        }
        match update.send().await {
            Ok(out) => match out.unprocessed_findings().first() {
                Some(u) => Outcome::from(ExecError::new(
                    u.error_code().unwrap_or("Unprocessed"),
                    format!(
                        "Security Hub did not process the finding: {}",
                        u.error_message().unwrap_or("no message")
                    ),
                )),
                None if contained => Outcome::applied(
                    "workflow NOTIFIED with a note of what quell did",
                    Some(
                        AwsInverse::SecurityhubWorkflow {
                            v2: false,
                            params: json!({"FindingIdentifiers": [{"Id": id, "ProductArn": product_arn}], "Workflow": {"Status": "NEW"}}),
                        }
                        .into(),
                    ),
                ),
                None => Outcome::applied(
                    "containment incomplete: the finding stays NEW with a note of what failed or was withheld",
                    None,
                ),
            },
            Err(e) => Outcome::from(classify(e)),
        }
    }
}

/// OCSF `status_id` values quell sets: In Progress once contained; New is the inverse.
const OCSF_IN_PROGRESS: i32 = 2;
const OCSF_NEW: i32 = 1;

/// `BatchUpdateFindingsV2` on an OCSF finding (Security Hub's current API), reading it first
/// with `GetFindingsV2`. Both use the `securityhub:GetFindings` and
/// `securityhub:BatchUpdateFindings` IAM actions (Security Hub API reference).
async fn update_ocsf(
    sh: &aws_sdk_securityhub::Client,
    account: &str,
    uid: &str,
    product_uid: &str,
    contained: bool,
    text: String,
) -> Outcome {
    use aws_sdk_securityhub::types::{
        CompositeFilter, OcsfFindingFilters, OcsfFindingIdentifier, OcsfStringField,
        OcsfStringFilter,
    };
    let equals = |field: OcsfStringField, v: &str| {
        OcsfStringFilter::builder()
            .field_name(field)
            .filter(
                StringFilter::builder()
                    .value(v)
                    .comparison(StringFilterComparison::Equals)
                    .build(),
            )
            .build()
    };
    let current = match sh
        .get_findings_v2()
        .filters(
            OcsfFindingFilters::builder()
                .composite_filters(
                    CompositeFilter::builder()
                        .string_filters(equals(OcsfStringField::FindingInfoUid, uid))
                        .string_filters(equals(OcsfStringField::MetadataProductUid, product_uid))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
    {
        Ok(out) => out.findings().first().map(crate::docs::document_json),
        Err(e) => return Outcome::from(classify(e)),
    };
    let status_id = current.as_ref().and_then(|f| f["status_id"].as_i64());
    let comment = current
        .as_ref()
        .and_then(|f| f["comment"].as_str().map(str::to_string));
    if contained && status_id == Some(i64::from(OCSF_IN_PROGRESS)) {
        return Outcome::already("the finding is already In Progress");
    }
    if !contained && comment.as_deref() == Some(text.as_str()) {
        return Outcome::already("the finding already carries this comment and stays New");
    }
    let id = OcsfFindingIdentifier::builder()
        .cloud_account_uid(account)
        .finding_info_uid(uid)
        .metadata_product_uid(product_uid)
        .build();
    let mut update = sh
        .batch_update_findings_v2()
        .finding_identifiers(id)
        .comment(text);
    if contained {
        update = update.status_id(OCSF_IN_PROGRESS);
    }
    match update.send().await {
        Ok(out) => match out.unprocessed_findings().first() {
            Some(u) => Outcome::from(ExecError::new(
                u.error_code().map_or("Unprocessed", |c| c.as_str()),
                format!(
                    "Security Hub did not process the finding: {}",
                    u.error_message().unwrap_or("no message")
                ),
            )),
            None if contained => Outcome::applied(
                "status In Progress with a comment of what quell did",
                Some(
                    AwsInverse::SecurityhubWorkflow {
                        v2: true,
                        params: json!({"FindingIdentifiers": [{"CloudAccountUid": account, "FindingInfoUid": uid, "MetadataProductUid": product_uid}], "StatusId": OCSF_NEW}),
                    }
                    .into(),
                ),
            ),
            None => Outcome::applied(
                "containment incomplete: the finding stays New with a comment of what failed or was withheld",
                None,
            ),
        },
        Err(e) => Outcome::from(classify(e)),
    }
}

/// One action's context.
struct Run<'a, S> {
    exec: &'a AwsExecutor<S>,
    clients: &'a AwsClients,
    account: &'a str,
    finding: &'a str,
    /// The finding's last occurrence, when the source says.
    last_seen: Option<&'a str>,
    stamp: &'a str,
    now: OffsetDateTime,
    caches: &'a Caches,
}

impl<S: ClientSource> Run<'_, S> {
    /// Before an action that follows a cross-cloud link: the role's trust policy, as read now
    /// (the same `GetRole` the action's guard makes, so no extra call), must still let the
    /// link's provider federate into it. The link map is data: a row naming a role the tenant
    /// cannot reach, or a trust changed since discovery, contains nothing.
    async fn link_holds(&self, link: &Link, s: &Subject) -> Result<(), Outcome> {
        let (Subject::IamRole { name, .. } | Subject::RoleSession { name, .. }) = s else {
            return Ok(());
        };
        let saml = match &link.kind {
            LinkKind::SamlAppRole { .. } | LinkKind::SamlProvider => true,
            LinkKind::OidcSubject { .. } | LinkKind::OidcTenant => false,
            _ => return Ok(()),
        };
        let AwsEnd::Role {
            provider: Some(provider),
            name: linked,
            ..
        } = &link.aws
        else {
            return Err(Outcome::skipped(
                "the link names no provider; nothing is contained through it",
            ));
        };
        if !linked.eq_ignore_ascii_case(name) {
            return Err(Outcome::skipped(format!(
                "the link is to role {linked}, not {name}; nothing is contained through it"
            )));
        }
        let p = self.guard(Kind::Role, name).await?;
        let holds = p.trust.as_ref().is_some_and(|t| match &link.kind {
            // A role-wide revocation for one service principal: only while the trust names
            // exactly that subject, not merely the tenant's issuer.
            LinkKind::OidcSubject { sub } => {
                quell_core::links::trust_names_subject(t, provider, sub)
            }
            _ => quell_core::links::trust_names_provider(t, provider, saml),
        });
        if holds {
            Ok(())
        } else {
            Err(Outcome::skipped(format!(
                "the role {name}'s trust policy no longer lets {provider} federate into it: the link is gone, so nothing is contained through it (run `quell links discover`)"
            )))
        }
    }

    async fn subject_action(&self, kind: ActionKind, s: &Subject) -> Outcome {
        use ActionKind::*;
        match (kind, s) {
            (
                DeactivateAccessKey,
                Subject::AccessKey {
                    access_key_id,
                    user,
                    ..
                },
            ) => self.deactivate_key(access_key_id, user.as_deref()).await,
            (DeactivateDormantAccessKeys, Subject::IamUser { name, .. }) => {
                self.deactivate_dormant(name).await
            }
            (DeactivateLongTermKeys, Subject::IamUser { name, .. }) => {
                self.deactivate_long_term(name).await
            }
            (QuarantineUser, Subject::IamUser { name, .. }) => {
                self.quarantine(Kind::User, name).await
            }
            (QuarantineRole, Subject::IamRole { name, .. }) => {
                self.quarantine(Kind::Role, name).await
            }
            (RevokeUserSessions, Subject::IamUser { name, .. }) => {
                self.revoke(Kind::User, name, None).await
            }
            (RevokeRoleSessions, Subject::IamRole { name, .. }) => {
                self.revoke(Kind::Role, name, None).await
            }
            (
                RevokeRoleSession,
                Subject::RoleSession {
                    name, id, session, ..
                },
            ) => {
                self.revoke(Kind::Role, name, Some((id.as_deref(), session)))
                    .await
            }
            (DeleteLoginProfile, Subject::IamUser { name, .. }) => {
                self.delete_login_profile(name).await
            }
            (TagPrincipal, Subject::IamUser { name, .. }) => self.tag(Kind::User, name).await,
            (TagPrincipal, Subject::IamRole { name, .. }) => self.tag(Kind::Role, name).await,
            (kind, s) => Outcome::skipped(format!(
                "{} is not supported on {}",
                kind.as_str(),
                s.kind()
            )),
        }
    }

    /// Reads the principal before any write: it must exist, not be protected, not be a
    /// service-linked role, and not carry the exemption tag.
    async fn guard(&self, kind: Kind, name: &str) -> Result<Principal, Outcome> {
        let key = (self.account.to_string(), kind, name.to_string());
        if let Some(hit) = self.caches.guards.lock().await.get(&key) {
            return hit.clone();
        }
        let result = self.read_principal(kind, name).await;
        self.caches.guards.lock().await.insert(key, result.clone());
        result
    }

    async fn read_principal(&self, kind: Kind, name: &str) -> Result<Principal, Outcome> {
        let subject = match kind {
            Kind::User => Subject::IamUser {
                account: self.account.to_string(),
                name: name.to_string(),
            },
            Kind::Role => Subject::IamRole {
                account: self.account.to_string(),
                name: name.to_string(),
            },
        };
        let protected = |names: &[&str]| {
            protection_reason_with(&self.exec.policy, &self.exec.ctx, &subject, names)
                .map(Outcome::skipped)
        };
        if let Some(o) = protected(&[]) {
            return Err(o);
        }
        let iam = &self.clients.iam;
        let (path, arn, role_id, max_session, tags, trust) = match kind {
            Kind::User => {
                let out = iam
                    .get_user()
                    .user_name(name)
                    .send()
                    .await
                    .map_err(|e| Outcome::from(classify(e)))?;
                let Some(u) = out.user() else {
                    return Err(Outcome::failed(
                        "NoSuchEntity",
                        format!("user {name} not found"),
                        false,
                    ));
                };
                (
                    u.path().to_string(),
                    u.arn().to_string(),
                    None,
                    None,
                    u.tags().to_vec(),
                    None,
                )
            }
            Kind::Role => {
                let out = iam
                    .get_role()
                    .role_name(name)
                    .send()
                    .await
                    .map_err(|e| Outcome::from(classify(e)))?;
                let Some(r) = out.role() else {
                    return Err(Outcome::failed(
                        "NoSuchEntity",
                        format!("role {name} not found"),
                        false,
                    ));
                };
                (
                    r.path().to_string(),
                    r.arn().to_string(),
                    Some(r.role_id().to_string()),
                    r.max_session_duration(),
                    r.tags().to_vec(),
                    r.assume_role_policy_document().and_then(docs::parse),
                )
            }
        };
        let live = iam::Live {
            kind,
            name,
            arn: &arn,
            path: &path,
            tags: &tags,
        };
        if let Some(why) = live.protection(&self.exec.policy, &self.exec.ctx, &subject) {
            return Err(Outcome::skipped(why));
        }
        let tags: Vec<(String, String)> = tags
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        Ok(Principal {
            name: name.to_string(),
            role_id,
            max_session,
            tags,
            trust,
        })
    }

    async fn deactivate_key(&self, key: &str, user: Option<&str>) -> Outcome {
        if ids::is_temporary_key(key) {
            return Outcome::skipped(
                "ASIA… keys are temporary STS credentials and cannot be deactivated",
            );
        }
        let iam = &self.clients.iam;
        let user = match user {
            Some(u) => u.to_string(),
            None => match iam
                .get_access_key_last_used()
                .access_key_id(key)
                .send()
                .await
            {
                Ok(out) => match out.user_name() {
                    Some(u) => u.to_string(),
                    None => {
                        return Outcome::failed(
                            "NoSuchEntity",
                            format!("no user owns {key}"),
                            false,
                        );
                    }
                },
                Err(e) => return Outcome::from(classify(e)),
            },
        };
        // The pre-write read and the key list are independent: they go together (or come from
        // the reads made beside the claim).
        let listed = self
            .caches
            .keys
            .lock()
            .await
            .remove(&(self.account.to_string(), user.clone()));
        let list = async {
            match listed {
                Some(l) => Ok(l),
                None => iam
                    .list_access_keys()
                    .user_name(&user)
                    .send()
                    .await
                    .map(|o| o.access_key_metadata().to_vec())
                    .map_err(classify),
            }
        };
        let (p, keys) = tokio::join!(self.guard(Kind::User, &user), list);
        let p = match p {
            Ok(p) => p,
            Err(o) => return o,
        };
        let keys = match keys {
            Ok(k) => k,
            Err(e) => return Outcome::from(e),
        };
        let Some(meta) = keys.iter().find(|k| k.access_key_id() == Some(key)) else {
            return Outcome::failed(
                "NoSuchEntity",
                format!("{key} is not a key of user {}", p.name),
                false,
            );
        };
        if meta.status() == Some(&StatusType::Inactive) {
            return Outcome::already(format!("{key} is already inactive"));
        }
        match iam
            .update_access_key()
            .user_name(&p.name)
            .access_key_id(key)
            .status(StatusType::Inactive)
            .send()
            .await
        {
            Ok(_) => Outcome::applied(
                format!("deactivated {key} of {}", p.name),
                Some(
                    AwsInverse::ReactivateKeys {
                        user: p.name.clone(),
                        keys: vec![key.to_string()],
                    }
                    .into(),
                ),
            ),
            Err(e) => Outcome::from(classify(e)),
        }
    }

    async fn deactivate_dormant(&self, user: &str) -> Outcome {
        let p = match self.guard(Kind::User, user).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let iam = &self.clients.iam;
        let keys = match iam.list_access_keys().user_name(&p.name).send().await {
            Ok(out) => out,
            Err(e) => return Outcome::from(classify(e)),
        };
        let days = i64::from(self.exec.policy.dormancy_days);
        let cutoff = self.now - time::Duration::days(days);
        let mut dormant = Vec::new();
        for k in keys.access_key_metadata() {
            let (Some(id), Some(StatusType::Active)) = (k.access_key_id(), k.status()) else {
                continue;
            };
            let last = match iam
                .get_access_key_last_used()
                .access_key_id(id)
                .send()
                .await
            {
                Ok(out) => out
                    .access_key_last_used()
                    .and_then(|u| u.last_used_date())
                    .or(k.create_date())
                    .map(|d| d.secs()),
                Err(e) => return Outcome::from(classify(e)),
            };
            // Never used: measured from creation. No date at all: not provably dormant.
            if last.is_some_and(|secs| secs < cutoff.unix_timestamp()) {
                dormant.push(id.to_string());
            }
        }
        if dormant.is_empty() {
            return Outcome::already(format!(
                "{} has no active key unused for {days} days",
                p.name
            ));
        }
        self.deactivate_keys(
            &p.name,
            &dormant,
            &format!("unused for {days} days or more"),
        )
        .await
    }

    /// Deactivates the user's active long-term keys (a temporary key they minted was stolen).
    async fn deactivate_long_term(&self, user: &str) -> Outcome {
        let p = match self.guard(Kind::User, user).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let keys = match self
            .clients
            .iam
            .list_access_keys()
            .user_name(&p.name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => return Outcome::from(classify(e)),
        };
        let active: Vec<String> = keys
            .access_key_metadata()
            .iter()
            .filter(|k| k.status() == Some(&StatusType::Active))
            .filter_map(|k| k.access_key_id())
            .filter(|id| !ids::is_temporary_key(id))
            .map(str::to_string)
            .collect();
        if active.is_empty() {
            return Outcome::already(format!("{} has no active long-term key", p.name));
        }
        self.deactivate_keys(&p.name, &active, "the user's long-term keys")
            .await
    }

    /// Deactivates each key, continuing past a failure: the outcome names what was done (with
    /// its inverse) and what was not.
    async fn deactivate_keys(&self, user: &str, keys: &[String], why: &str) -> Outcome {
        let mut done: Vec<&str> = Vec::new();
        let mut failed: Vec<(&str, ExecError)> = Vec::new();
        for id in keys {
            match self
                .clients
                .iam
                .update_access_key()
                .user_name(user)
                .access_key_id(id)
                .status(StatusType::Inactive)
                .send()
                .await
            {
                Ok(_) => done.push(id),
                Err(e) => failed.push((id, classify(e))),
            }
        }
        let inverse = (!done.is_empty()).then(|| {
            Inverse::from(AwsInverse::ReactivateKeys {
                user: user.to_string(),
                keys: done.iter().map(|k| k.to_string()).collect(),
            })
        });
        let Some((_, first)) = failed.first() else {
            return Outcome::applied(format!("deactivated {} ({why})", done.join(", ")), inverse);
        };
        let not_done: Vec<String> = failed
            .iter()
            .map(|(id, e)| format!("{id} ({}: {})", e.code, e.message))
            .collect();
        let mut o = Outcome::failed(
            first.code.clone(),
            format!(
                "deactivated [{}]; could not deactivate {}",
                done.join(", "),
                not_done.join(", ")
            ),
            failed.iter().any(|(_, e)| e.retryable),
        );
        o.inverse = inverse;
        o
    }

    async fn quarantine(&self, kind: Kind, name: &str) -> Outcome {
        match self.guard(kind, name).await {
            Ok(p) => iam::quarantine(&self.clients.iam, kind, &p.name).await,
            Err(o) => o,
        }
    }

    /// Revokes sessions issued before now: the whole principal, or one role session.
    async fn revoke(
        &self,
        kind: Kind,
        name: &str,
        session: Option<(Option<&str>, &String)>,
    ) -> Outcome {
        let p = match self.guard(kind, name).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        match session {
            None => self.revoke_all(kind, &p).await,
            Some((id, session)) => self.revoke_session(&p, id, session).await,
        }
    }

    /// Why an existing revocation covers this finding, for the outcome.
    fn covered_because(&self, cutoff: &str) -> String {
        match self.last_seen {
            Some(seen) => format!(
                "tokens issued before {cutoff} are already denied, which covers the finding's last occurrence at {seen}"
            ),
            None => format!("tokens issued before {cutoff} are already denied"),
        }
    }

    /// Every session of a user or role issued before now (one statement, one policy). A
    /// revocation at or after the finding's last occurrence already covers it; a later
    /// occurrence of the same finding moves the cut-off to now.
    async fn revoke_all(&self, kind: Kind, p: &Principal) -> Outcome {
        let sid = docs::revoke_sid(self.finding);
        let policy = match kind {
            Kind::User => docs::USER_REVOKE_POLICY,
            Kind::Role => docs::ROLE_REVOKE_POLICY,
        };
        let what = format!("every session of {}", p.name);
        let existing = match self.inline(kind, &p.name, policy).await {
            Ok(e) => e,
            Err(e) => return Outcome::from(e),
        };
        if let Some(r) = existing
            .as_deref()
            .and_then(docs::parse)
            .as_ref()
            .and_then(docs::revocation)
            && docs::covers(&r.cutoff, &r.sid, &sid, self.stamp, self.last_seen)
        {
            return Outcome::already(format!("{what}: {}", self.covered_because(&r.cutoff)));
        }
        let doc = docs::revoke_older_sessions(&sid, self.stamp);
        match iam::put_inline(&self.clients.iam, kind, &p.name, policy, &doc).await {
            Ok(()) => Outcome::applied(
                format!(
                    "{what}: tokens issued before {} denied ({policy})",
                    self.stamp
                ),
                Some(iam::undo_inline(kind, &p.name, policy, existing)),
            ),
            Err(e) if e.is("LimitExceeded") && kind == Kind::User => Outcome::failed(
                e.code,
                format!(
                    "{}: the user's inline policies are at IAM's {}-character quota; quarantine the user (aws.quarantine_users) or remove an inline policy",
                    e.message,
                    docs::USER_INLINE_QUOTA
                ),
                false,
            ),
            Err(e) => Outcome::from(e),
        }
    }

    /// One role session's tokens issued before now, as statements in quell's single
    /// per-session policy (`QuellRevokeSessions`). Statements older than every token they could
    /// deny are pruned; when the role's inline policies would still pass IAM's quota, the
    /// revocation falls back to every session of the role, which subsumes them.
    async fn revoke_session(&self, p: &Principal, id: Option<&str>, session: &str) -> Outcome {
        // GetRole's RoleId is the truth: a different id means the role was deleted and
        // recreated, and the stolen session belonged to the old one.
        let role_id = match (id, p.role_id.as_deref()) {
            (Some(seen), Some(now)) if seen != now => {
                return Outcome::skipped(format!(
                    "the role {} was deleted and recreated since the finding (RoleId {seen} in the finding, {now} now): the stolen session belonged to the deleted role, and a deny on its aws:userid would never match",
                    p.name
                ));
            }
            (_, Some(now)) => now.to_string(),
            (Some(seen), None) => seen.to_string(),
            (None, None) => {
                return Outcome::failed(
                    "NoSuchEntity",
                    format!("the role id of {} is unknown", p.name),
                    false,
                );
            }
        };
        let userid = format!("{role_id}:{session}");
        let iam_client = &self.clients.iam;
        let role_sid = docs::revoke_sid(self.finding);
        // The role-wide revocation, quell's session policy and the size of the role's other
        // inline policies are independent reads: together (or read beside the claim).
        let (role_wide, existing, others) = tokio::join!(
            self.inline(Kind::Role, &p.name, docs::ROLE_REVOKE_POLICY),
            self.inline(Kind::Role, &p.name, docs::SESSION_REVOKE_POLICY),
            self.other_inline_size(&p.name)
        );
        let role_wide = match role_wide {
            Ok(e) => e,
            Err(e) => return Outcome::from(e),
        };
        if let Some(r) = role_wide
            .as_deref()
            .and_then(docs::parse)
            .as_ref()
            .and_then(docs::revocation)
            && docs::covers(&r.cutoff, &r.sid, &role_sid, self.stamp, self.last_seen)
        {
            return Outcome::already(format!(
                "session {userid}: every session of the role is revoked; {}",
                self.covered_because(&r.cutoff)
            ));
        }
        let existing = match existing {
            Ok(e) => e,
            Err(e) => return Outcome::from(e),
        };
        let sid = docs::session_sid(self.finding, &userid);
        let mut statements = existing
            .as_deref()
            .and_then(docs::parse)
            .as_ref()
            .map(docs::statements)
            .unwrap_or_default();
        for r in statements.iter().filter_map(docs::revocation_of) {
            let own_sid = r.sid.trim_end_matches("Vpc").trim_end_matches("Ip");
            if r.userid.as_deref() == Some(userid.as_str())
                && docs::covers(&r.cutoff, own_sid, &sid, self.stamp, self.last_seen)
            {
                return Outcome::already(format!(
                    "session {userid}: {}",
                    self.covered_because(&r.cutoff)
                ));
            }
        }
        let horizon = rfc3339_seconds(
            self.now - time::Duration::seconds(docs::prune_after_seconds(p.max_session)),
        );
        let before = statements.len();
        statements.retain(|st| match docs::revocation_of(st) {
            Some(r) => r.userid.as_deref() != Some(userid.as_str()) && r.cutoff >= horizon,
            None => true,
        });
        let pruned = before - statements.len();
        let bind = ids::is_instance_id(session)
            && self.exec.policy.aws.instance_credentials == InstanceCredentials::BindToInstance;
        statements.extend(docs::session_statements(&sid, &userid, self.stamp, bind));
        let doc = docs::document(statements);
        let others = match others {
            Ok(n) => n,
            Err(e) => return Outcome::from(e),
        };
        if others + docs::policy_size(&doc) > docs::ROLE_INLINE_QUOTA {
            return self
                .fall_back_to_role(p, &userid, existing, role_wide)
                .await;
        }
        let how = if bind {
            " unless used from the instance's own VPC and private IP"
        } else {
            ""
        };
        let pruned = if pruned > 0 {
            format!("; {pruned} expired or replaced statement(s) pruned")
        } else {
            String::new()
        };
        match iam::put_inline(
            iam_client,
            Kind::Role,
            &p.name,
            docs::SESSION_REVOKE_POLICY,
            &doc,
        )
        .await
        {
            Ok(()) => Outcome::applied(
                format!(
                    "session {userid}: tokens issued before {} denied{how} ({}){pruned}",
                    self.stamp,
                    docs::SESSION_REVOKE_POLICY
                ),
                Some(iam::undo_inline(
                    Kind::Role,
                    &p.name,
                    docs::SESSION_REVOKE_POLICY,
                    existing,
                )),
            ),
            Err(e) => Outcome::from(e),
        }
    }

    /// An inline policy's document: read beside the claim if it was (once), else now.
    async fn inline(
        &self,
        kind: Kind,
        name: &str,
        policy: &str,
    ) -> Result<Option<String>, ExecError> {
        let warm = self.caches.inline.lock().await.remove(&(
            self.account.to_string(),
            kind,
            name.to_string(),
            policy.to_string(),
        ));
        match warm {
            Some(doc) => Ok(doc),
            None => iam::get_inline(&self.clients.iam, kind, name, policy).await,
        }
    }

    /// The size IAM counts for the role's inline policies other than quell's session policy.
    async fn other_inline_size(&self, role: &str) -> Result<usize, ExecError> {
        let warm = self
            .caches
            .others
            .lock()
            .await
            .remove(&(self.account.to_string(), role.to_string()));
        match warm {
            Some(n) => Ok(n),
            None => other_inline_size(&self.clients.iam, role).await,
        }
    }

    /// Per-session revocations would pass the role's inline-policy quota: revoke every
    /// session of the role issued before now instead (it subsumes each per-session statement,
    /// whose cut-offs are all at or before now) and remove the per-session policy.
    async fn fall_back_to_role(
        &self,
        p: &Principal,
        userid: &str,
        session_policy: Option<String>,
        role_wide: Option<String>,
    ) -> Outcome {
        let iam_client = &self.clients.iam;
        let doc = docs::revoke_older_sessions(&docs::revoke_sid(self.finding), self.stamp);
        let mut put = iam::put_inline(
            iam_client,
            Kind::Role,
            &p.name,
            docs::ROLE_REVOKE_POLICY,
            &doc,
        )
        .await;
        if matches!(&put, Err(e) if e.is("LimitExceeded")) {
            // Make room: the role-wide deny replaces every per-session statement.
            if let Err(e) =
                iam::delete_inline(iam_client, Kind::Role, &p.name, docs::SESSION_REVOKE_POLICY)
                    .await
            {
                return Outcome::from(e);
            }
            put = iam::put_inline(
                iam_client,
                Kind::Role,
                &p.name,
                docs::ROLE_REVOKE_POLICY,
                &doc,
            )
            .await;
        }
        if let Err(e) = put {
            return Outcome::from(e);
        }
        if session_policy.is_some()
            && let Err(e) =
                iam::delete_inline(iam_client, Kind::Role, &p.name, docs::SESSION_REVOKE_POLICY)
                    .await
        {
            tracing::warn!(role = %p.name, code = %e.code, "subsumed per-session revocations not removed");
        }
        Outcome::applied(
            format!(
                "session {userid}: revoking it alone would pass IAM's {}-character inline-policy quota for role {}, so every session of the role issued before {} is denied instead ({}), which subsumes the per-session revocations; the role's legitimate users must re-authenticate",
                docs::ROLE_INLINE_QUOTA,
                p.name,
                self.stamp,
                docs::ROLE_REVOKE_POLICY
            ),
            Some(iam::undo_inline(
                Kind::Role,
                &p.name,
                docs::ROLE_REVOKE_POLICY,
                role_wide,
            )),
        )
    }

    async fn delete_login_profile(&self, user: &str) -> Outcome {
        match self.guard(Kind::User, user).await {
            Ok(p) => iam::delete_login_profile(&self.clients.iam, &p.name).await,
            Err(o) => o,
        }
    }

    async fn tag(&self, kind: Kind, name: &str) -> Outcome {
        let p = match self.guard(kind, name).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let finding = docs::tag_finding(self.finding);
        let previous = p
            .tags
            .iter()
            .find(|(k, _)| k == docs::QUARANTINE_TAG)
            .map(|(_, v)| v.clone());
        if previous
            .as_deref()
            .is_some_and(|v| v.starts_with(&format!("{finding} ")))
        {
            return Outcome::already(format!("{name} is already tagged for this finding"));
        }
        let value = format!("{finding} {}", self.stamp);
        let Ok(tag) = Tag::builder()
            .key(docs::QUARANTINE_TAG)
            .value(&value)
            .build()
        else {
            return Outcome::failed("InvalidInput", "could not build the tag", false);
        };
        let iam = &self.clients.iam;
        let write = iam::tag(iam, kind, &p.name, tag);
        // The baseline verify compares with is read beside the tag: both describe the
        // principal as quell contained it.
        let (r, baseline) = tokio::join!(write, iam::policies(iam, kind, &p.name));
        match r {
            Ok(()) => {
                // What the principal held at containment, for verify to compare with: its
                // policies, and a role's trust policy. Unreadable, it is left out (verify then
                // has nothing to compare with and says nothing).
                let inverse = AwsInverse::RestoreTag {
                    kind,
                    name: p.name.clone(),
                    tag: docs::QUARANTINE_TAG.to_string(),
                    previous,
                    trust_policy: p.trust.clone(),
                    policies: baseline.ok(),
                };
                Outcome::applied(
                    format!("tagged {name} {}={value}", docs::QUARANTINE_TAG),
                    Some(inverse.into()),
                )
            }
            Err(e) => Outcome::from(e),
        }
    }
}

/// Puts `user_id` in quell's deny statement of one permission set: `Ok(None)` when it is there
/// already, else the policy as it was before (`Some(None)`: there was none). Identity Center has no conditional write, so another containment writing the same
/// permission set between this read and this write could drop one of the two: the write is
/// read back, and merged and written again (up to three times) until it holds this user; a
/// user another writer dropped is put back by that containment's own read-back, or by its check
/// after containment.
async fn deny_in_set(
    c: &crate::identity_center::Clients,
    instance: &crate::identity_center::Instance,
    set: &str,
    user_id: &str,
) -> Result<Option<Option<String>>, crate::ExecError> {
    use crate::identity_center as idc;
    // The policy as quell first found it (`None`: none), for the release to put back.
    let mut found: Option<Option<String>> = None;
    for attempt in 0..4 {
        let text = idc::inline_policy_text(c, instance, set).await?;
        let current = idc::parse_policy(set, &text)?;
        if idc::denied_users(&current).iter().any(|u| u == user_id) {
            return Ok(found);
        }
        if attempt == 3 {
            break;
        }
        if found.is_none() {
            found = Some((!text.trim().is_empty()).then(|| text.clone()));
        }
        let doc = idc::with_user(&text, user_id)
            .map_err(|e| crate::ExecError::new("MalformedPolicyDocument", e))?;
        idc::write(c, instance, set, Some(&doc)).await?;
    }
    Err(crate::ExecError::new(
        "ConcurrentModification",
        format!(
            "another writer keeps replacing the inline policy of {set}; the deny could not be kept"
        ),
    ))
}

/// The size IAM counts for a role's inline policies other than quell's session policy.
async fn other_inline_size(iam: &aws_sdk_iam::Client, role: &str) -> Result<usize, ExecError> {
    let mut total = 0;
    for name in iam::list_inline(iam, Kind::Role, role).await? {
        if name == docs::SESSION_REVOKE_POLICY {
            continue;
        }
        if let Some(doc) = iam::get_inline(iam, Kind::Role, role, &name).await? {
            total += docs::policy_size(&doc);
        }
    }
    Ok(total)
}
