//! Executes the AWS actions of a plan. Every action reads before it writes, so a second run
//! reports `already_in_state` and changes nothing; one failure never stops the others.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_iam::types::{StatusType, Tag};
use aws_sdk_securityhub::types::{
    AwsSecurityFinding, AwsSecurityFindingFilters, AwsSecurityFindingIdentifier, NoteUpdate,
    StringFilter, StringFilterComparison, WorkflowStatus, WorkflowUpdate,
};
use quell_core::Cloud;
use quell_core::clock::{Clock, rfc3339_seconds};
use quell_core::model::{FindingRef, Subject, ids};
use quell_core::plan::{Action, ActionKind, Context, Plan, Target, protection_reason};
use quell_core::policy::{Mode, Policy};
use quell_core::report::{ActionResult, Inverse, Outcome, Report};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::clients::{AwsClients, ClientSource, session_name};
use crate::docs;
use crate::error::classify;
use crate::iam::{self, Kind};

/// Executes plans in AWS.
pub struct AwsExecutor<S> {
    source: S,
    policy: Policy,
    ctx: Context,
    clock: Arc<dyn Clock>,
}

/// What the pre-write read of a principal found.
#[derive(Clone)]
struct Principal {
    name: String,
    role_id: Option<String>,
    tags: Vec<(String, String)>,
}

type GuardCache = Mutex<HashMap<(String, Kind, String), Result<Principal, Outcome>>>;

impl<S: ClientSource> AwsExecutor<S> {
    pub fn new(source: S, policy: Policy, ctx: Context, clock: Arc<dyn Clock>) -> Self {
        AwsExecutor {
            source,
            policy,
            ctx,
            clock,
        }
    }

    /// Runs the plan: dry-run unless the plan's mode is `enforce`.
    pub async fn execute(&self, plan: &Plan) -> Report {
        let now = self.clock.now();
        let stamp = rfc3339_seconds(now);
        if plan.mode == Mode::DryRun {
            return Report::dry_run(plan, stamp);
        }
        let guards: GuardCache = Mutex::new(HashMap::new());
        let mut results: Vec<ActionResult> = Vec::with_capacity(plan.actions.len());
        for action in &plan.actions {
            let outcome = self.run(action, &stamp, now, &guards, &results).await;
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

    async fn run(
        &self,
        action: &Action,
        stamp: &str,
        now: OffsetDateTime,
        guards: &GuardCache,
        done: &[ActionResult],
    ) -> Outcome {
        if action.cloud != Cloud::Aws {
            return Outcome::skipped("not an AWS action; the Azure responder executes it");
        }
        match (&action.kind, &action.target) {
            (ActionKind::Notify, _) => Outcome::applied(
                "escalated to a human: the audit event carries this notice",
                None,
            ),
            (ActionKind::UpdateSecurityhubFinding, Target::Record(r)) => {
                self.update_finding(r, &action.finding, done).await
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
                    stamp,
                    now,
                    guards,
                };
                run.subject_action(action.kind, s).await
            }
            (kind, target) => Outcome::skipped(format!(
                "{} cannot act on {}",
                kind.as_str(),
                target.label()
            )),
        }
    }

    async fn update_finding(
        &self,
        r: &FindingRef,
        finding: &str,
        done: &[ActionResult],
    ) -> Outcome {
        let FindingRef::SecurityhubFinding {
            id,
            product_arn,
            region,
            ..
        } = r
        else {
            return Outcome::skipped("not a Security Hub finding");
        };
        let home = self.source.home();
        let sh = match region {
            Some(region) => aws_sdk_securityhub::Client::from_conf(
                home.securityhub
                    .config()
                    .to_builder()
                    .region(aws_config::Region::new(region.clone()))
                    .build(),
            ),
            None => home.securityhub.clone(),
        };
        let filter = |v: &str| {
            StringFilter::builder()
                .value(v)
                .comparison(StringFilterComparison::Equals)
                .build()
        };
        let current = sh
            .get_findings()
            .filters(
                AwsSecurityFindingFilters::builder()
                    .id(filter(id))
                    .product_arn(filter(product_arn))
                    .build(),
            )
            .send()
            .await;
        match current {
            Ok(out) => {
                let notified = out.findings().iter().any(|f: &AwsSecurityFinding| {
                    f.workflow().and_then(|w| w.status()) == Some(&WorkflowStatus::Notified)
                });
                if notified {
                    return Outcome::already("the finding's workflow is already NOTIFIED");
                }
            }
            Err(e) => return Outcome::from(classify(e)),
        }
        let mine: Vec<String> = done
            .iter()
            .filter(|d| {
                d.action.finding == finding && d.action.kind != ActionKind::UpdateSecurityhubFinding
            })
            .map(|d| {
                format!(
                    "{} {}: {:?}",
                    d.action.kind.as_str(),
                    d.action.target.label(),
                    d.outcome.status
                )
            })
            .collect();
        let mut text = format!("quell: {}", mine.join("; "));
        if text.len() > 512 {
            text = text.chars().take(509).collect::<String>() + "...";
        }
        let result = sh
            .batch_update_findings()
            .finding_identifiers(
                AwsSecurityFindingIdentifier::builder()
                    .id(id)
                    .product_arn(product_arn)
                    .build(),
            )
            .workflow(
                WorkflowUpdate::builder()
                    .status(WorkflowStatus::Notified)
                    .build(),
            )
            .note(NoteUpdate::builder().text(text).updated_by("quell").build())
            .send()
            .await;
        match result {
            Ok(out) => match out.unprocessed_findings().first() {
                Some(u) => Outcome::failed(
                    u.error_code().unwrap_or("Unprocessed"),
                    format!(
                        "Security Hub did not process the finding: {}",
                        u.error_message().unwrap_or("no message")
                    ),
                    false,
                ),
                None => Outcome::applied(
                    "workflow NOTIFIED with a note of what quell did",
                    Some(Inverse {
                        call: "securityhub:BatchUpdateFindings".into(),
                        params: json!({"FindingIdentifiers": [{"Id": id, "ProductArn": product_arn}], "Workflow": {"Status": "NEW"}}),
                    }),
                ),
            },
            Err(e) => Outcome::from(classify(e)),
        }
    }
}

/// One action's context.
struct Run<'a, S> {
    exec: &'a AwsExecutor<S>,
    clients: &'a AwsClients,
    account: &'a str,
    finding: &'a str,
    stamp: &'a str,
    now: OffsetDateTime,
    guards: &'a GuardCache,
}

impl<S: ClientSource> Run<'_, S> {
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
        if let Some(hit) = self.guards.lock().await.get(&key) {
            return hit.clone();
        }
        let result = self.read_principal(kind, name).await;
        self.guards.lock().await.insert(key, result.clone());
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
        if let Some(reason) = protection_reason(&self.exec.policy, &self.exec.ctx, &subject) {
            return Err(Outcome::skipped(reason));
        }
        let iam = &self.clients.iam;
        let (path, role_id, tags) = match kind {
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
                (u.path().to_string(), None, u.tags().to_vec())
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
                    Some(r.role_id().to_string()),
                    r.tags().to_vec(),
                )
            }
        };
        if kind == Kind::Role
            && (path.starts_with("/aws-service-role/") || ids::is_service_linked_role(name))
        {
            return Err(Outcome::skipped(
                "service-linked role: owned by an AWS service and never modified",
            ));
        }
        if kind == Kind::Role
            && (path.starts_with("/aws-reserved/") || ids::is_identity_center_role(name))
        {
            return Err(Outcome::skipped(
                "Identity Center role: managed by Identity Center, which reverts edits",
            ));
        }
        let tags: Vec<(String, String)> = tags
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        let exemption = &self.exec.policy.exemption_tag;
        if tags.iter().any(|(k, _)| k == exemption) {
            return Err(Outcome::skipped(format!(
                "the principal carries the exemption tag {exemption}"
            )));
        }
        Ok(Principal {
            name: name.to_string(),
            role_id,
            tags,
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
        let p = match self.guard(Kind::User, &user).await {
            Ok(p) => p,
            Err(o) => return o,
        };
        let keys = match iam.list_access_keys().user_name(&p.name).send().await {
            Ok(out) => out,
            Err(e) => return Outcome::from(classify(e)),
        };
        let Some(meta) = keys
            .access_key_metadata()
            .iter()
            .find(|k| k.access_key_id() == Some(key))
        else {
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
                Some(Inverse {
                    call: "iam:UpdateAccessKey".into(),
                    params: json!({"UserName": p.name, "AccessKeyId": key, "Status": "Active"}),
                }),
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
        for id in &dormant {
            if let Err(e) = iam
                .update_access_key()
                .user_name(&p.name)
                .access_key_id(id)
                .status(StatusType::Inactive)
                .send()
                .await
            {
                return Outcome::from(classify(e));
            }
        }
        Outcome::applied(
            format!(
                "deactivated {} (unused for {days} days or more)",
                dormant.join(", ")
            ),
            Some(Inverse {
                call: "iam:UpdateAccessKey".into(),
                params: json!({"UserName": p.name, "AccessKeyIds": dormant, "Status": "Active"}),
            }),
        )
    }

    async fn quarantine(&self, kind: Kind, name: &str) -> Outcome {
        match self.guard(kind, name).await {
            Ok(p) => iam::quarantine(&self.clients.iam, kind, &p.name).await,
            Err(o) => o,
        }
    }

    /// Revokes sessions issued before now: the whole principal, or one role session.
    /// Keyed by finding: the same finding again changes nothing; an existing later cut-off
    /// already covers ours.
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
        let sid = docs::revoke_sid(self.finding);
        let (policy_name, doc, what) = match session {
            None => {
                let policy = match kind {
                    Kind::User => docs::USER_REVOKE_POLICY,
                    Kind::Role => docs::ROLE_REVOKE_POLICY,
                };
                (
                    policy.to_string(),
                    docs::revoke_older_sessions(&sid, self.stamp),
                    format!("every session of {name}"),
                )
            }
            Some((id, session)) => {
                let Some(role_id) = id.map(str::to_string).or(p.role_id.clone()) else {
                    return Outcome::failed(
                        "NoSuchEntity",
                        format!("the role id of {name} is unknown"),
                        false,
                    );
                };
                let userid = format!("{role_id}:{session}");
                (
                    docs::session_revoke_policy_name(&userid),
                    docs::revoke_one_session(&sid, &userid, self.stamp),
                    format!("session {userid}"),
                )
            }
        };
        let existing = match iam::get_inline(&self.clients.iam, kind, &p.name, &policy_name).await {
            Ok(e) => e,
            Err(e) => return Outcome::from(e),
        };
        if let Some((old_sid, old_cutoff)) = existing
            .as_deref()
            .and_then(docs::parse)
            .as_ref()
            .and_then(docs::revocation)
        {
            if old_sid == sid {
                return Outcome::already(format!(
                    "{what}: tokens issued before {old_cutoff} already revoked for this finding"
                ));
            }
            if old_cutoff.as_str() >= self.stamp {
                return Outcome::already(format!(
                    "{what}: a revocation with a later cut-off ({old_cutoff}) is in place"
                ));
            }
        }
        match iam::put_inline(&self.clients.iam, kind, &p.name, &policy_name, &doc).await {
            Ok(()) => Outcome::applied(
                format!(
                    "{what}: tokens issued before {} denied ({policy_name})",
                    self.stamp
                ),
                Some(iam::undo_inline(kind, &p.name, &policy_name, existing)),
            ),
            Err(e) => Outcome::from(e),
        }
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
        let finding: String = self
            .finding
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(*c))
            .take(200)
            .collect();
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
        let (r, who, untag, retag) = match kind {
            Kind::User => (
                iam.tag_user()
                    .user_name(&p.name)
                    .tags(tag)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(classify),
                "UserName",
                "iam:UntagUser",
                "iam:TagUser",
            ),
            Kind::Role => (
                iam.tag_role()
                    .role_name(&p.name)
                    .tags(tag)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(classify),
                "RoleName",
                "iam:UntagRole",
                "iam:TagRole",
            ),
        };
        match r {
            Ok(()) => Outcome::applied(
                format!("tagged {name} {}={value}", docs::QUARANTINE_TAG),
                Some(match previous {
                    None => Inverse {
                        call: untag.into(),
                        params: json!({who: p.name, "TagKeys": [docs::QUARANTINE_TAG]}),
                    },
                    Some(v) => Inverse {
                        call: retag.into(),
                        params: json!({who: p.name, "Tags": [{"Key": docs::QUARANTINE_TAG, "Value": v}]}),
                    },
                }),
            ),
            Err(e) => Outcome::from(e),
        }
    }
}
