//! Undoing and re-checking quell's AWS containment, from the ledger.
//!
//! - [`release`] runs the inverse of each action an entry recorded, newest first, reading before
//!   each write. Access keys stay inactive unless asked (AWS recommends against reactivating a
//!   compromised key); what cannot be restored (a deleted console password) is said so.
//!   Revocations are removed only where they are still this finding's: a later finding's
//!   revocation of the same principal stays.
//! - [`verify`] checks that the containment still holds once IAM has propagated, and looks for
//!   what appeared since (a new access key or console password, a detached quarantine): with
//!   `fix`, it contains that too and reports it as attacker persistence.

use aws_sdk_iam::types::{StatusType, Tag};
use quell_core::model::Subject;
use quell_core::plan::{ActionKind, Target};
use quell_core::report::{AwsInverse, Inverse, Outcome, Status};
use quell_ledger::{Entry, Recorded, refused};
use serde_json::Value;
use time::OffsetDateTime;

use crate::clients::{ClientSource, session_name};
use crate::docs;
use crate::error::classify;
use crate::iam::{self, Kind};

pub use quell_ledger::Step;

fn principal_of(target: &Target) -> Option<(String, Kind, String)> {
    match target {
        Target::Subject(Subject::IamUser { account, name }) => {
            Some((account.clone(), Kind::User, name.clone()))
        }
        Target::Subject(Subject::AccessKey {
            account,
            user: Some(u),
            ..
        }) => Some((account.clone(), Kind::User, u.clone())),
        Target::Subject(Subject::IamRole { account, name })
        | Target::Subject(Subject::RoleSession { account, name, .. }) => {
            Some((account.clone(), Kind::Role, name.clone()))
        }
        _ => None,
    }
}

/// Runs the inverses an entry recorded, newest first.
pub async fn release<S: ClientSource>(
    source: &S,
    entry: &Entry,
    reactivate_keys: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for r in entry.actions.iter().rev() {
        if r.status != Status::Applied {
            continue;
        }
        let what = format!("undo {} {}", r.kind.as_str(), r.target.label());
        let outcome = undo(source, entry, r, reactivate_keys).await;
        steps.push(Step { what, outcome });
    }
    steps
}

/// Why a recorded action is not the entry's own principal's, if it is not: its target or its
/// inverse names another principal. The ledger is data: whatever a row says, quell undoes
/// only on the principal the entry is keyed by.
fn foreign(entry: &Entry, r: &Recorded) -> Option<String> {
    let Some(own) = parse_key(&entry.principal) else {
        return Some(format!("{} is not an AWS user or role", entry.principal));
    };
    let target = principal_of(&r.target);
    if target.as_ref() != Some(&own) {
        return Some(format!(
            "the action's target {} is not the entry's principal {}",
            r.target.label(),
            entry.principal
        ));
    }
    let named = match &r.inverse {
        Some(Inverse::Aws(AwsInverse::DetachPolicy { kind, name, .. }))
        | Some(Inverse::Aws(AwsInverse::RestoreInline { kind, name, .. }))
        | Some(Inverse::Aws(AwsInverse::RestoreTag { kind, name, .. })) => {
            Some((*kind, name.as_str()))
        }
        Some(Inverse::Aws(AwsInverse::ReactivateKeys { user, .. })) if !user.is_empty() => {
            Some((Kind::User, user.as_str()))
        }
        _ => None,
    };
    match named {
        Some((kind, name)) if kind != own.1 || name != own.2 => Some(format!(
            "the recorded undo names {name}, not the entry's principal {}",
            entry.principal
        )),
        _ => None,
    }
}

async fn undo<S: ClientSource>(
    source: &S,
    entry: &Entry,
    r: &Recorded,
    reactivate_keys: bool,
) -> Outcome {
    if let Some(k) = quell_core::key::PrincipalKey::parse(&entry.principal)
        && matches!(
            k.aws_parts(),
            Some((_, quell_core::key::AwsKind::AccessKey, _))
        )
    {
        return Outcome::skipped(
            "the key's user was not known when quell contained it: nothing quell can undo safely; reactivate the key by hand if it must come back",
        );
    }
    if let Some(Inverse::Aws(AwsInverse::IdentityCenterDeny {
        account,
        instance_arn,
        user_id,
        permission_sets,
        previous,
    })) = &r.inverse
    {
        let deny = RecordedDeny {
            account,
            instance_arn,
            user_id,
            permission_sets,
            previous,
        };
        return undo_identity_center(source, entry, r, deny).await;
    }
    if r.inverse.is_some()
        && let Some(why) = foreign(entry, r)
    {
        return refused(why);
    }
    let inverse = match &r.inverse {
        None => return Outcome::skipped("nothing to undo: the action recorded no inverse"),
        Some(Inverse::Aws(a)) => a,
        Some(Inverse::Azure(_)) => {
            return Outcome::skipped("not an AWS action's inverse; nothing done on AWS");
        }
        Some(Inverse::Unknown(raw)) => {
            return Outcome::skipped(format!(
                "quell has no undo for {}: the ledger entry holds a call quell never records; nothing done",
                raw.call
            ));
        }
    };
    match inverse {
        AwsInverse::LoginProfile { .. } => {
            return Outcome::skipped(
                "cannot be restored: the deleted console password is gone; set a new one (iam:CreateLoginProfile) if the user needs the console",
            );
        }
        AwsInverse::SecurityhubWorkflow { .. } => {
            return Outcome::skipped("the Security Hub finding's workflow is left as it is");
        }
        AwsInverse::ReactivateKeys { keys, .. } if !reactivate_keys => {
            return Outcome::skipped(format!(
                "{} stay(s) inactive: AWS recommends against reactivating a compromised key; pass --reactivate-keys to reactivate",
                keys.join(", ")
            ));
        }
        AwsInverse::IdentityCenterDeny { .. } => {
            return Outcome::skipped("nothing to undo here");
        }
        AwsInverse::ReactivateKeys { .. }
        | AwsInverse::DetachPolicy { .. }
        | AwsInverse::RestoreInline { .. }
        | AwsInverse::RestoreTag { .. } => {}
    }
    // The entry's own principal, never a name taken from the row's action.
    let Some((account, kind, name)) = parse_key(&entry.principal) else {
        return refused(format!("{} is not an AWS user or role", entry.principal));
    };
    let clients = match source
        .clients(&account, &session_name(&entry.finding))
        .await
    {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let iam = &clients.iam;
    match inverse {
        AwsInverse::ReactivateKeys { keys, .. } => {
            // Only keys of this user come back: a key id in the row that the user does not own
            // is refused, whoever it belongs to.
            let owned: Vec<String> = match iam.list_access_keys().user_name(&name).send().await {
                Ok(o) => o
                    .access_key_metadata()
                    .iter()
                    .filter_map(|k| k.access_key_id().map(str::to_string))
                    .collect(),
                Err(e) => return classify(e).into(),
            };
            if let Some(other) = keys.iter().find(|k| !owned.contains(k)) {
                return refused(format!("access key {other} is not a key of {name}"));
            }
            let mut done = Vec::new();
            for id in keys {
                if let Err(e) = iam
                    .update_access_key()
                    .user_name(&name)
                    .access_key_id(id)
                    .status(StatusType::Active)
                    .send()
                    .await
                {
                    return classify(e).into();
                }
                done.push(id.as_str());
            }
            Outcome::applied(format!("reactivated {}", done.join(", ")), None)
        }
        AwsInverse::DetachPolicy { policy_arn, .. } => {
            // The only managed policy quell attaches is AWSDenyAll in the principal's partition:
            // a row naming any other is refused (a human's own guardrail stays attached).
            let arn = docs::deny_all_arn(iam::partition(iam));
            if *policy_arn != arn {
                return refused(format!(
                    "{policy_arn} is not the quarantine policy quell attaches ({arn})"
                ));
            }
            let attached = iam::list_attached(iam, kind, &name)
                .await
                .map(|l| l.contains(&arn));
            match attached {
                Ok(false) => return Outcome::already(format!("{arn} is not attached")),
                Ok(true) => {}
                Err(e) => return e.into(),
            }
            let r = match kind {
                Kind::User => iam
                    .detach_user_policy()
                    .user_name(&name)
                    .policy_arn(&arn)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(classify),
                Kind::Role => iam
                    .detach_role_policy()
                    .role_name(&name)
                    .policy_arn(&arn)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(classify),
            };
            match r {
                Ok(()) => Outcome::applied(format!("detached {arn} from {name}"), None),
                Err(e) => e.into(),
            }
        }
        AwsInverse::RestoreInline {
            policy, previous, ..
        } => undo_revocation(iam, kind, &name, policy, entry, previous.as_ref()).await,
        AwsInverse::RestoreTag { previous, .. } => {
            undo_tag(iam, kind, &name, entry, previous.as_deref()).await
        }
        AwsInverse::LoginProfile { .. }
        | AwsInverse::SecurityhubWorkflow { .. }
        | AwsInverse::IdentityCenterDeny { .. } => Outcome::skipped("nothing to undo"),
    }
}

/// What a row says quell wrote for an Identity Center user.
struct RecordedDeny<'a> {
    account: &'a str,
    instance_arn: &'a str,
    user_id: &'a str,
    permission_sets: &'a [String],
    previous: &'a std::collections::BTreeMap<String, Option<String>>,
}

/// Takes the entry's own Identity Center user out of quell's deny statement in each recorded
/// permission set, and provisions them. The user id in the row must be the one Identity Center
/// gives the entry's user name today: a row cannot lift another person's deny. Nothing else in
/// a permission set's policy is touched, so a forged row can at most end this user's deny.
async fn undo_identity_center<S: ClientSource>(
    source: &S,
    entry: &Entry,
    r: &Recorded,
    deny: RecordedDeny<'_>,
) -> Outcome {
    use crate::identity_center as idc;
    let Some(user) = quell_core::key::PrincipalKey::parse(&entry.principal)
        .and_then(|k| k.identity_center_user().map(str::to_string))
    else {
        return refused(format!(
            "{} is not an Identity Center user, yet the row undoes an Identity Center deny",
            entry.principal
        ));
    };
    match &r.target {
        Target::Subject(Subject::IdentityCenterUser { user_name, .. }) if *user_name == user => {}
        other => {
            return refused(format!(
                "the action's target {} is not the entry's principal {}",
                other.label(),
                entry.principal
            ));
        }
    }
    let clients = if deny.account.is_empty() {
        source.home()
    } else {
        match source
            .clients(deny.account, &session_name(&entry.finding))
            .await
        {
            Ok(c) => c,
            Err(e) => return e.into(),
        }
    };
    let c = &clients.identity_center;
    let instance = match idc::instance(&c.sso, Some(deny.instance_arn)).await {
        Ok(i) => i,
        Err(e) => return e.into(),
    };
    match idc::user_id(&c.store, &instance.identity_store, &user).await {
        Ok(Some(id)) if id == deny.user_id => {}
        Ok(_) => {
            return refused(format!(
                "the recorded user id {} is not Identity Center's id for {user}",
                deny.user_id
            ));
        }
        Err(e) => return e.into(),
    }
    let mut lifted = Vec::new();
    for set in deny.permission_sets {
        let current = match idc::inline_policy(c, &instance, set).await {
            Ok(v) => v,
            Err(e) => return e.into(),
        };
        if !idc::denied_users(&current)
            .iter()
            .any(|u| u == deny.user_id)
        {
            continue;
        }
        let rest = idc::without_user(&current, deny.user_id);
        // The bytes quell found, when they say exactly what quell would write: a row can put
        // back formatting, never a statement.
        let recorded = deny.previous.get(set.as_str());
        let same = match (recorded, &rest) {
            (Some(None), None) => true,
            (Some(Some(text)), Some(doc)) => {
                serde_json::from_str::<Value>(text).is_ok_and(|v| &v == doc)
            }
            _ => false,
        };
        let written = match (same, recorded, &rest) {
            (true, Some(Some(text)), _) => idc::write_text(c, &instance, set, Some(text)).await,
            _ => idc::write(c, &instance, set, rest.as_ref()).await,
        };
        if let Err(e) = written {
            return e.into();
        }
        lifted.push(set.as_str());
    }
    if lifted.is_empty() {
        return Outcome::already(format!("{user} is in no quell deny statement any more"));
    }
    Outcome::applied(
        format!(
            "took {user} out of quell's deny in {} permission set(s) and provisioned them: {}",
            lifted.len(),
            lifted.join(", ")
        ),
        None,
    )
}

/// Checks that every permission set now assigned to the Identity Center user (or their groups)
/// denies their sessions, reading everything from Identity Center, nothing from the row: a set
/// assigned since, or a deny someone removed, is reported and, with `fix`, denied again.
async fn verify_identity_center<S: ClientSource>(
    source: &S,
    user: &str,
    fix: bool,
    protect: &Protection<'_>,
) -> Vec<Step> {
    use crate::identity_center as idc;
    let what = format!("Identity Center deny of {user}");
    let step = |outcome: Outcome| {
        vec![Step {
            what: what.clone(),
            outcome,
        }]
    };
    let clients = match &protect.policy.aws.identity_center.account {
        Some(account) => match source.clients(account, "quell-verify").await {
            Ok(c) => c,
            Err(e) => return step(e.into()),
        },
        None => source.home(),
    };
    let c = &clients.identity_center;
    let instance = match idc::instance(
        &c.sso,
        protect.policy.aws.identity_center.instance_arn.as_deref(),
    )
    .await
    {
        Ok(i) => i,
        Err(e) => return step(e.into()),
    };
    let user_id = match idc::user_id(&c.store, &instance.identity_store, user).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return step(Outcome::skipped(format!(
                "no Identity Center user is named {user} any more"
            )));
        }
        Err(e) => return step(e.into()),
    };
    let subject = Subject::IdentityCenterUser {
        account: String::new(),
        user_name: user.to_string(),
        user_id: Some(user_id.clone()),
    };
    let fix = match quell_core::plan::protection_reason(protect.policy, protect.ctx, &subject) {
        Some(why) => {
            return step(Outcome::skipped(format!(
                "{user} is protected ({why}): the check changes nothing"
            )));
        }
        None => fix,
    };
    let sets = match idc::permission_sets(c, &instance, &user_id).await {
        Ok(s) => s,
        Err(e) => return step(e.into()),
    };
    let mut steps = Vec::new();
    for set in sets {
        let current = match idc::inline_policy(c, &instance, &set).await {
            Ok(v) => v,
            Err(e) => {
                steps.push(Step {
                    what: format!("{what} in {set}"),
                    outcome: e.into(),
                });
                continue;
            }
        };
        let outcome = if idc::denied_users(&current).contains(&user_id) {
            Outcome::already("quell's deny is in place")
        } else if fix {
            let text = if current.is_null() {
                String::new()
            } else {
                current.to_string()
            };
            match idc::with_user(&text, &user_id) {
                Ok(doc) => match idc::write(c, &instance, &set, Some(&doc)).await {
                    Ok(()) => Outcome::applied(
                        "attacker persistence? this permission set did not deny the user (assigned since, or the deny was removed); denied again and provisioned",
                        None,
                    ),
                    Err(e) => e.into(),
                },
                Err(e) => Outcome::failed("MalformedPolicyDocument", e, false),
            }
        } else {
            Outcome::dry_run(
                "would deny the user here: this permission set does not (assigned since, or the deny was removed); pass --yes",
            )
        };
        steps.push(Step {
            what: format!("{what} in {set}"),
            outcome,
        });
    }
    if steps.is_empty() {
        steps.push(Step {
            what,
            outcome: Outcome::already("the user holds no permission set in any account"),
        });
    }
    steps
}

/// Removes this finding's revocation from a policy, leaving a later finding's in place.
async fn undo_revocation(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    policy: &str,
    entry: &Entry,
    previous: Option<&Value>,
) -> Outcome {
    let current = match iam::get_inline(iam, kind, name, policy).await {
        Ok(Some(doc)) => docs::parse(&doc).unwrap_or(Value::Null),
        Ok(None) => return Outcome::already(format!("{name} has no {policy}")),
        Err(e) => return e.into(),
    };
    if policy == docs::SESSION_REVOKE_POLICY {
        let statements = docs::statements(&current);
        let keep: Vec<Value> = statements
            .iter()
            .filter(|st| {
                docs::revocation_of(st).is_none_or(|r| {
                    let sid = r.sid.trim_end_matches("Vpc").trim_end_matches("Ip");
                    r.userid
                        .as_deref()
                        .is_none_or(|u| sid != docs::session_sid(&entry.finding, u))
                })
            })
            .cloned()
            .collect();
        let removed = statements.len() - keep.len();
        if removed == 0 {
            return Outcome::already(format!("{policy} holds no revocation of this finding"));
        }
        let r = if keep.is_empty() {
            iam::delete_inline(iam, kind, name, policy).await
        } else {
            iam::put_inline(iam, kind, name, policy, &docs::document(keep)).await
        };
        return match r {
            Ok(()) => Outcome::applied(
                format!("removed {removed} statement(s) of this finding from {policy}"),
                None,
            ),
            Err(e) => e.into(),
        };
    }
    // A single-statement revocation: undo only while it is still this finding's.
    let ours =
        docs::revocation(&current).is_some_and(|r| r.sid == docs::revoke_sid(&entry.finding));
    if !ours {
        return Outcome::skipped(format!(
            "{policy} now holds a later revocation, which stays"
        ));
    }
    let r = match previous {
        // Only a deny-only document is written back: the ledger is data, and a release must
        // never be a way to put an Allow on a principal.
        Some(previous) if !docs::deny_only(previous) => {
            return Outcome::skipped(format!(
                "the recorded previous {policy} is not a deny-only revocation, so quell will not write it back; restore {policy} by hand if it was yours"
            ));
        }
        Some(previous) => iam::put_inline(iam, kind, name, policy, &previous.to_string()).await,
        None => iam::delete_inline(iam, kind, name, policy).await,
    };
    match r {
        Ok(()) => Outcome::applied(format!("removed this finding's {policy}"), None),
        Err(e) => e.into(),
    }
}

async fn tags_of(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
) -> Result<Vec<Tag>, crate::error::ExecError> {
    match kind {
        Kind::User => iam
            .list_user_tags()
            .user_name(name)
            .send()
            .await
            .map(|o| o.tags().to_vec())
            .map_err(classify),
        Kind::Role => iam
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .map(|o| o.tags().to_vec())
            .map_err(classify),
    }
}

/// Whether quell's `quell:quarantined` tag on the entries' principal names one of their
/// findings: the principal's own evidence that quell contained it for them. The automatic
/// release acts only then, so an entry written into the ledger by someone else cannot make
/// quell lift a containment it did not make (a human's quarantine, say). `Err` says why not.
pub async fn tagged_by_quell<S: ClientSource>(source: &S, entries: &[Entry]) -> Result<(), String> {
    let Some(first) = entries.first() else {
        return Err("no containment to release".into());
    };
    let (account, kind, name) = parse_key(&first.principal)
        .ok_or_else(|| format!("{} is not an AWS user or role", first.principal))?;
    let clients = source
        .clients(&account, "quell-release")
        .await
        .map_err(|e| format!("cannot reach account {account}: {e}"))?;
    let tags = tags_of(&clients.iam, kind, &name)
        .await
        .map_err(|e| format!("cannot read the tags of {name}: {e}"))?;
    let value = tags
        .iter()
        .find(|t| t.key() == docs::QUARANTINE_TAG)
        .map(|t| t.value().to_string())
        .ok_or_else(|| format!("{name} carries no {} tag", docs::QUARANTINE_TAG))?;
    if entries
        .iter()
        .any(|e| value.starts_with(&format!("{} ", docs::tag_finding(&e.finding))))
    {
        Ok(())
    } else {
        Err(format!(
            "{name}'s {} tag names none of these containments",
            docs::QUARANTINE_TAG
        ))
    }
}

/// Removes (or restores) the `quell:quarantined` tag while it still names this finding.
async fn undo_tag(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    entry: &Entry,
    previous: Option<&str>,
) -> Outcome {
    let tags = match tags_of(iam, kind, name).await {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    let Some(current) = tags.iter().find(|t| t.key() == docs::QUARANTINE_TAG) else {
        return Outcome::already(format!("{name} has no {} tag", docs::QUARANTINE_TAG));
    };
    let finding = docs::tag_finding(&entry.finding);
    if !current.value().starts_with(&format!("{finding} ")) {
        return Outcome::skipped("the tag now names a later finding, and stays");
    }
    let r = match (kind, previous) {
        (Kind::User, None) => iam
            .untag_user()
            .user_name(name)
            .tag_keys(docs::QUARANTINE_TAG)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
        (Kind::Role, None) => iam
            .untag_role()
            .role_name(name)
            .tag_keys(docs::QUARANTINE_TAG)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
        (k, Some(v)) => {
            let Ok(tag) = Tag::builder().key(docs::QUARANTINE_TAG).value(v).build() else {
                return Outcome::failed("InvalidInput", "could not build the tag", false);
            };
            iam::tag(iam, k, name, tag).await
        }
    };
    match r {
        Ok(()) => Outcome::applied(
            format!("removed {} from {name}", docs::QUARANTINE_TAG),
            None,
        ),
        Err(e) => e.into(),
    }
}

/// What a check must respect before it writes: the same `iam::Live::protection` the executor
/// asks, so a row cannot make verify touch a principal the executor would not.
pub struct Protection<'a> {
    pub policy: &'a quell_core::Policy,
    pub ctx: &'a quell_core::Context,
}

/// Why the principal must not be written by verify, if it must not; and quell's own record on
/// it of when it contained it for one of `entries` (the `quell:quarantined` tag's time).
async fn read_for_verify(
    iam: &aws_sdk_iam::Client,
    account: &str,
    kind: Kind,
    name: &str,
    entries: &[Entry],
    protect: &Protection<'_>,
) -> Result<(Option<String>, Option<OffsetDateTime>), crate::error::ExecError> {
    let (arn, path, tags) = match kind {
        Kind::User => {
            let out = iam
                .get_user()
                .user_name(name)
                .send()
                .await
                .map_err(classify)?;
            let u = out.user();
            (
                u.map(|u| u.arn().to_string()).unwrap_or_default(),
                u.map(|u| u.path().to_string()).unwrap_or_default(),
                u.map(|u| u.tags().to_vec()).unwrap_or_default(),
            )
        }
        Kind::Role => {
            let out = iam
                .get_role()
                .role_name(name)
                .send()
                .await
                .map_err(classify)?;
            let r = out.role();
            (
                r.map(|r| r.arn().to_string()).unwrap_or_default(),
                r.map(|r| r.path().to_string()).unwrap_or_default(),
                r.map(|r| r.tags().to_vec()).unwrap_or_default(),
            )
        }
    };
    let subject = match kind {
        Kind::User => Subject::IamUser {
            account: account.to_string(),
            name: name.to_string(),
        },
        Kind::Role => Subject::IamRole {
            account: account.to_string(),
            name: name.to_string(),
        },
    };
    let live = iam::Live {
        kind,
        name,
        arn: &arn,
        path: &path,
        tags: &tags,
    };
    let protected = live.protection(protect.policy, protect.ctx, &subject);
    let tagged_at = tags
        .iter()
        .find(|t| t.key() == docs::QUARANTINE_TAG)
        .and_then(|t| {
            entries.iter().filter(|e| e.in_force()).find_map(|e| {
                t.value()
                    .strip_prefix(&format!("{} ", docs::tag_finding(&e.finding)))
                    .and_then(quell_core::clock::parse_rfc3339)
            })
        });
    Ok((protected, tagged_at))
}

/// Checks that the containment an entry recorded still holds, and looks for what appeared
/// since it began. With `fix`, restores what was undone and contains what appeared.
///
/// The principal comes from the entry's key, never from a row's actions. Nothing is written to a
/// protected principal (the check reports only). "Since containment" is quell's own record on
/// the principal, the `quell:quarantined` tag's time, never earlier than the entry says: a row
/// cannot date the containment back to make every key look new. Without that tag, keys and
/// passwords created since cannot be dated, and the check says so instead of acting on them.
pub async fn verify<S: ClientSource>(
    source: &S,
    entries: &[Entry],
    fix: bool,
    protect: &Protection<'_>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let Some(first) = entries
        .iter()
        .filter(|e| e.in_force())
        .min_by(|a, b| a.at.cmp(&b.at))
    else {
        return steps;
    };
    if let Some(user) = quell_core::key::PrincipalKey::parse(&first.principal)
        .and_then(|k| k.identity_center_user().map(str::to_string))
    {
        return verify_identity_center(source, &user, fix, protect).await;
    }
    let Some((account, kind, name)) = parse_key(&first.principal) else {
        steps.push(Step {
            what: format!("verify {}", first.principal),
            outcome: Outcome::skipped("not an AWS user or role"),
        });
        return steps;
    };
    let clients = match source.clients(&account, "quell-verify").await {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step {
                what: "reach the account".into(),
                outcome: e.into(),
            });
            return steps;
        }
    };
    let iam = &clients.iam;
    let (protected, tagged_at) =
        match read_for_verify(iam, &account, kind, &name, entries, protect).await {
            Ok(r) => r,
            Err(e) => {
                steps.push(Step {
                    what: format!("read {name}"),
                    outcome: e.into(),
                });
                return steps;
            }
        };
    let fix = match &protected {
        Some(why) => {
            steps.push(Step {
                what: format!("protection of {name}"),
                outcome: Outcome::skipped(format!(
                    "{name} is protected ({why}): the check reports what it finds and changes nothing"
                )),
            });
            false
        }
        None => fix,
    };
    let since =
        tagged_at.map(|t| quell_core::clock::parse_rfc3339(&first.at).map_or(t, |at| at.max(t)));
    // Without quell's own mark on the principal, the entry is only a row: the check reports and
    // writes nothing (it cannot date "created since", nor know the containment was quell's).
    let fix = if since.is_none() {
        steps.push(Step {
            what: format!("containment record of {name}"),
            outcome: Outcome::skipped(format!(
                "{name} carries no {} tag naming these containments: what was created since cannot be dated against quell's record, and the check changes nothing; review {name} by hand",
                docs::QUARANTINE_TAG
            )),
        });
        false
    } else {
        fix
    };
    let after = |created: i64| since.is_some_and(|s| created >= s.unix_timestamp());
    let recorded = |k: ActionKind| {
        entries
            .iter()
            .filter(|e| e.in_force())
            .flat_map(|e| e.actions.iter())
            .any(|r| r.kind == k && matches!(r.status, Status::Applied | Status::AlreadyInState))
    };
    let would = |what: &str| Outcome::dry_run(format!("would {what}; pass --yes"));

    // The quarantine is still attached.
    if recorded(ActionKind::QuarantineUser) || recorded(ActionKind::QuarantineRole) {
        let arn = docs::deny_all_arn(iam::partition(iam));
        let attached = iam::list_attached(iam, kind, &name)
            .await
            .map(|l| l.contains(&arn));
        let outcome = match attached {
            Ok(true) => Outcome::already("AWSDenyAll is still attached"),
            Ok(false) if fix => {
                let mut o = iam::quarantine(iam, kind, &name).await;
                o.detail = format!(
                    "attacker persistence: the quarantine was detached; {}",
                    o.detail
                );
                o
            }
            Ok(false) => would("re-attach AWSDenyAll, which was detached"),
            Err(e) => e.into(),
        };
        steps.push(Step {
            what: format!("quarantine of {name}"),
            outcome,
        });
    }
    if kind == Kind::User {
        // Keys: what quell deactivated stays inactive; keys created since are the attacker's.
        let deactivated: Vec<String> = entries
            .iter()
            .flat_map(|e| e.actions.iter())
            .filter(|r| r.status == Status::Applied)
            .filter_map(|r| match &r.inverse {
                Some(Inverse::Aws(AwsInverse::ReactivateKeys { keys, .. })) => Some(keys.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        match iam.list_access_keys().user_name(&name).send().await {
            Ok(out) => {
                for k in out.access_key_metadata() {
                    let (Some(id), Some(StatusType::Active)) = (k.access_key_id(), k.status())
                    else {
                        continue;
                    };
                    let created = k.create_date().map(|d| d.secs()).unwrap_or(0);
                    let why = if deactivated.iter().any(|d| d == id) {
                        "was deactivated by quell and is active again"
                    } else if after(created) {
                        "was created after containment"
                    } else {
                        continue;
                    };
                    let outcome = if fix {
                        match iam
                            .update_access_key()
                            .user_name(&name)
                            .access_key_id(id)
                            .status(StatusType::Inactive)
                            .send()
                            .await
                        {
                            Ok(_) => Outcome::applied(
                                format!("attacker persistence: {id} {why}; deactivated"),
                                None,
                            ),
                            Err(e) => classify(e).into(),
                        }
                    } else {
                        would(&format!("deactivate {id}, which {why}"))
                    };
                    steps.push(Step {
                        what: format!("access key {id} of {name}"),
                        outcome,
                    });
                }
            }
            Err(e) => steps.push(Step {
                what: format!("access keys of {name}"),
                outcome: classify(e).into(),
            }),
        }
        // A console password created since containment.
        match iam
            .get_login_profile()
            .user_name(&name)
            .send()
            .await
            .map_err(classify)
        {
            Ok(out) => {
                let created = out
                    .login_profile()
                    .map(|l| l.create_date().secs())
                    .unwrap_or(0);
                if after(created) {
                    let outcome = if fix {
                        let mut o = iam::delete_login_profile(iam, &name).await;
                        o.detail = format!(
                            "attacker persistence: a console password was created after containment; {}",
                            o.detail
                        );
                        o
                    } else {
                        would("delete the console password created after containment")
                    };
                    steps.push(Step {
                        what: format!("console password of {name}"),
                        outcome,
                    });
                } else if let Some(since) = since {
                    // The same password profile, its password changed since.
                    steps.push(Step {
                        what: format!("console password of {name}"),
                        outcome: password_changed_since(iam, &name, since, fix).await,
                    });
                }
            }
            Err(e) if e.is("NoSuchEntity") => {}
            Err(e) => steps.push(Step {
                what: format!("console password of {name}"),
                outcome: e.into(),
            }),
        }
    }
    // The revocation of every older session (user or role) is still in place.
    let (wide_kind, wide_policy) = match kind {
        Kind::User => (ActionKind::RevokeUserSessions, docs::USER_REVOKE_POLICY),
        Kind::Role => (ActionKind::RevokeRoleSessions, docs::ROLE_REVOKE_POLICY),
    };
    if let Some(latest) = latest_with(entries, wide_kind) {
        steps.push(Step {
            what: format!("session revocation of {name}"),
            outcome: revocation_in_place(iam, kind, &name, wide_policy, latest, fix).await,
        });
    }
    // One role session's revocation: quell's statement for it, or a role-wide one, is in place.
    if kind == Kind::Role {
        for (entry, r) in in_force_actions(entries, ActionKind::RevokeRoleSession) {
            let Target::Subject(Subject::RoleSession { session, .. }) = &r.target else {
                continue;
            };
            steps.push(Step {
                what: format!("revocation of session {session} of {name}"),
                outcome: session_revocation_in_place(iam, &name, session, entry, fix).await,
            });
        }
        if let Some(baseline) = at_containment(entries, Baseline::TrustPolicy) {
            steps.push(Step {
                what: format!("trust policy of {name}"),
                outcome: trust_unchanged(iam, &name, baseline).await,
            });
        }
    }
    if let Some(baseline) = at_containment(entries, Baseline::Policies) {
        steps.push(Step {
            what: format!("policies of {name}"),
            outcome: no_policy_added(iam, kind, &name, baseline).await,
        });
    }
    steps
}

/// What AWS's credential report says of a user's console password since `since`.
#[derive(Debug, PartialEq)]
enum PasswordChange {
    Unchanged,
    ChangedAt(OffsetDateTime),
    /// The report predates `since`: it cannot tell (AWS regenerates it at most every 4 hours).
    ReportTooOld(OffsetDateTime),
    /// The user is not in the report, or the report does not parse.
    Unknown,
}

/// Judges the credential report (`csv`, generated at `generated`) for `user`: IAM keeps no
/// other record of a password change (`UpdateLoginProfile` leaves the login profile's
/// `CreateDate` as it was), so `password_last_changed` is the only witness.
fn password_change(
    csv: &str,
    user: &str,
    generated: OffsetDateTime,
    since: OffsetDateTime,
) -> PasswordChange {
    if generated < since {
        return PasswordChange::ReportTooOld(generated);
    }
    let Ok(rows) = quell_core::sweep::parse_credential_report(csv) else {
        return PasswordChange::Unknown;
    };
    match rows.iter().find(|r| r.user == user) {
        Some(r) => match r.password_last_changed {
            Some(t) if t > since => PasswordChange::ChangedAt(t),
            _ => PasswordChange::Unchanged,
        },
        None => PasswordChange::Unknown,
    }
}

/// Whether the user's console password was changed after the containment (the credential
/// report's `password_last_changed`). With `fix` the login profile is deleted: the password is
/// the attacker's now, and a human sets a new one on release.
async fn password_changed_since(
    iam: &aws_sdk_iam::Client,
    user: &str,
    since: OffsetDateTime,
    fix: bool,
) -> Outcome {
    // AWS reuses a report under four hours old, so this asks for a fresh one only when due.
    if let Err(e) = iam.generate_credential_report().send().await {
        return classify(e).into();
    }
    let out = match iam.get_credential_report().send().await.map_err(classify) {
        Ok(o) => o,
        Err(e) if e.is("ReportInProgress") => {
            return Outcome::skipped(
                "the credential report is being generated: whether the console password changed since the containment is not known yet; run quell verify again in a minute",
            );
        }
        Err(e) => return e.into(),
    };
    let csv = out
        .content()
        .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned())
        .unwrap_or_default();
    let generated = out
        .generated_time()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    match password_change(&csv, user, generated, since) {
        PasswordChange::Unchanged => {
            Outcome::already("the console password is unchanged since the containment")
        }
        PasswordChange::ChangedAt(t) => {
            let when = quell_core::clock::rfc3339_seconds(t);
            if fix {
                let mut o = iam::delete_login_profile(iam, user).await;
                o.detail = format!(
                    "attacker persistence: the console password was changed at {when}, after the containment; {} (set a new one on release)",
                    o.detail
                );
                o
            } else {
                Outcome::dry_run(format!(
                    "would delete the console password, changed at {when} after the containment; pass --yes"
                ))
            }
        }
        PasswordChange::ReportTooOld(t) => Outcome::skipped(format!(
            "cannot tell yet whether the console password changed since the containment: AWS's credential report is from {}, before it, and AWS makes a new one at most every four hours; run quell verify again later",
            quell_core::clock::rfc3339_seconds(t)
        )),
        PasswordChange::Unknown => Outcome::skipped(
            "the credential report does not show this user's password change time; check it by hand before release",
        ),
    }
}

/// Policies attached to or put on the principal since containment (other than quell's own).
/// Reported, never removed: while quell's containment holds they grant nothing, but they would
/// outlive a release, and only a human can tell a backdoor from a change someone meant.
async fn no_policy_added(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    baseline: &Value,
) -> Outcome {
    let now = match iam::policies(iam, kind, name).await {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let added = |list: &str| -> Vec<String> {
        let before: Vec<&str> = baseline[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        now[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|p| !before.contains(p))
            .map(str::to_string)
            .collect()
    };
    let (attached, inline) = (added("attached"), added("inline"));
    // A baseline taken before groups and versions were recorded says nothing about them.
    let groups = if baseline.get("groups").is_some() {
        added("groups")
    } else {
        Vec::new()
    };
    let changed: Vec<String> = baseline["versions"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(arn, was)| {
            let is = &now["versions"][arn.as_str()];
            (!is.is_null() && is != was).then(|| {
                format!(
                    "{arn} (default version {} -> {})",
                    was.as_str().unwrap_or("?"),
                    is.as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    if attached.is_empty() && inline.is_empty() && groups.is_empty() && changed.is_empty() {
        return Outcome::already(
            "no policy, group membership or policy version added since the containment",
        );
    }
    let mut what = Vec::new();
    if !attached.is_empty() {
        what.push(format!("attached {}", attached.join(", ")));
    }
    if !inline.is_empty() {
        what.push(format!("inline {}", inline.join(", ")));
    }
    if !groups.is_empty() {
        what.push(format!("added to groups {}", groups.join(", ")));
    }
    if !changed.is_empty() {
        what.push(format!("changed in place {}", changed.join(", ")));
    }
    Outcome::skipped(format!(
        "attacker persistence? permissions added since the containment ({}): review them before release; quell leaves them in place",
        what.join("; ")
    ))
}

/// What quell read of the principal at containment, kept with the tag's inverse.
#[derive(Clone, Copy)]
enum Baseline {
    TrustPolicy,
    Policies,
}

/// What quell read of the principal (`which`) at its first containment still in force, kept
/// with the tag's inverse.
fn at_containment(entries: &[Entry], which: Baseline) -> Option<&Value> {
    let mut with: Vec<(&Entry, &Value)> = in_force_actions(entries, ActionKind::TagPrincipal)
        .filter_map(|(e, r)| match &r.inverse {
            Some(Inverse::Aws(AwsInverse::RestoreTag {
                trust_policy,
                policies,
                ..
            })) => match which {
                Baseline::TrustPolicy => trust_policy.as_ref(),
                Baseline::Policies => policies.as_ref(),
            }
            .map(|t| (e, t)),
            _ => None,
        })
        .collect();
    with.sort_by(|a, b| a.0.at.cmp(&b.0.at));
    with.first().map(|(_, t)| *t)
}

/// Everything an Allow statement of a trust policy names as principal.
fn trusted(doc: &Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for st in docs::statements(doc) {
        if st["Effect"] != "Allow" {
            continue;
        }
        match &st["Principal"] {
            Value::String(p) => {
                out.insert(p.clone());
            }
            Value::Object(m) => {
                for v in m.values() {
                    match v {
                        Value::String(p) => {
                            out.insert(p.clone());
                        }
                        Value::Array(a) => {
                            out.extend(a.iter().filter_map(|p| p.as_str().map(str::to_string)));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether the role's trust policy is what it was at containment. A change is reported, never
/// reverted: a trust policy written back from the ledger would let whoever can write the ledger
/// choose who may assume the role, so quell holds no `iam:UpdateAssumeRolePolicy`.
async fn trust_unchanged(iam: &aws_sdk_iam::Client, name: &str, baseline: &Value) -> Outcome {
    let current = match iam.get_role().role_name(name).send().await {
        Ok(o) => o
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .and_then(docs::parse)
            .unwrap_or(Value::Null),
        Err(e) => return classify(e).into(),
    };
    if &current == baseline {
        return Outcome::already("the trust policy is unchanged since the containment");
    }
    let added: Vec<String> = trusted(&current)
        .difference(&trusted(baseline))
        .cloned()
        .collect();
    let who = if added.is_empty() {
        "its conditions or statements changed".to_string()
    } else {
        format!("it now also trusts {}", added.join(", "))
    };
    Outcome::skipped(format!(
        "attacker persistence? the trust policy changed since the containment ({who}): review it before release; quell does not rewrite trust policies"
    ))
}

/// The newest in-force entry that applied (or found in state) an action of `kind`.
fn latest_with(entries: &[Entry], kind: ActionKind) -> Option<&Entry> {
    in_force_actions(entries, kind)
        .map(|(e, _)| e)
        .max_by(|a, b| a.at.cmp(&b.at))
}

/// The in-force entries' actions of `kind` that applied or were found in state.
fn in_force_actions(
    entries: &[Entry],
    kind: ActionKind,
) -> impl Iterator<Item = (&Entry, &Recorded)> {
    entries
        .iter()
        .filter(|e| e.in_force())
        .flat_map(|e| e.actions.iter().map(move |r| (e, r)))
        .filter(move |(_, r)| {
            r.kind == kind && matches!(r.status, Status::Applied | Status::AlreadyInState)
        })
}

/// Whether quell's revocation of every older session (`policy` on the user or role) is still
/// there; when it was removed and `fix`, put back with the newest containment's cut-off.
async fn revocation_in_place(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    policy: &str,
    latest: &Entry,
    fix: bool,
) -> Outcome {
    // In place means still denying everything to every token issued before the containment:
    // a policy of that name that allows, narrows the deny or moves the cut-off back was
    // weakened, and is as good as removed.
    let holds = |doc: &str| {
        let Some(doc) = docs::parse(doc) else {
            return false;
        };
        let st = docs::statements(&doc);
        docs::deny_only(&doc)
            && st.iter().any(|s| {
                s["Action"] == "*"
                    && s["Resource"] == "*"
                    && docs::revocation_of(s).is_some_and(|r| {
                        r.userid.is_none() && r.cutoff.as_str() >= latest.at.as_str()
                    })
            })
    };
    let what = match iam::get_inline(iam, kind, name, policy).await {
        Ok(Some(doc)) if holds(&doc) => {
            return Outcome::already(format!("{policy} is still in place"));
        }
        Ok(Some(_)) => "weakened",
        Ok(None) => "removed",
        Err(e) => return e.into(),
    };
    if !fix {
        return Outcome::dry_run(format!(
            "would put back {policy}, which was {what}; pass --yes"
        ));
    }
    let doc = docs::revoke_older_sessions(&docs::revoke_sid(&latest.finding), &latest.at);
    match iam::put_inline(iam, kind, name, policy, &doc).await {
        Ok(()) => Outcome::applied(
            format!(
                "attacker persistence: {policy} was {what}; put back with cut-off {}",
                latest.at
            ),
            None,
        ),
        Err(e) => e.into(),
    }
}

/// Whether one role session is still denied: a statement for it in `QuellRevokeSessions`, or
/// a role-wide revocation. When both are gone and `fix`, the session's statement is put back
/// as a plain revocation (denied wherever used): whoever removed quell's policy can write IAM,
/// so an EC2 session is not given back the instance-bound exception.
async fn session_revocation_in_place(
    iam: &aws_sdk_iam::Client,
    name: &str,
    session: &str,
    entry: &Entry,
    fix: bool,
) -> Outcome {
    let suffix = format!(":{session}");
    let read = |policy: &'static str| async move {
        iam::get_inline(iam, Kind::Role, name, policy)
            .await
            .map(|d| d.as_deref().and_then(docs::parse))
    };
    let role_wide = match read(docs::ROLE_REVOKE_POLICY).await {
        Ok(d) => d.as_ref().and_then(docs::revocation).is_some(),
        Err(e) => return e.into(),
    };
    let existing = match read(docs::SESSION_REVOKE_POLICY).await {
        Ok(d) => d,
        Err(e) => return e.into(),
    };
    let mut statements = existing.as_ref().map(docs::statements).unwrap_or_default();
    let held = statements
        .iter()
        .filter_map(docs::revocation_of)
        .any(|r| r.userid.as_deref().is_some_and(|u| u.ends_with(&suffix)));
    if held || role_wide {
        return Outcome::already(format!("session {session} is still denied"));
    }
    if !fix {
        return Outcome::dry_run(format!(
            "would put back the revocation of session {session}, which was removed; pass --yes"
        ));
    }
    let role_id = match iam.get_role().role_name(name).send().await {
        Ok(o) => o
            .role()
            .map(|r| r.role_id().to_string())
            .unwrap_or_default(),
        Err(e) => return classify(e).into(),
    };
    let userid = format!("{role_id}{suffix}");
    statements.extend(docs::session_statements(
        &docs::session_sid(&entry.finding, &userid),
        &userid,
        &entry.at,
        false,
    ));
    match iam::put_inline(
        iam,
        Kind::Role,
        name,
        docs::SESSION_REVOKE_POLICY,
        &docs::document(statements),
    )
    .await
    {
        Ok(()) => Outcome::applied(
            format!(
                "attacker persistence: the revocation of session {userid} was removed; put back (denied wherever used) with cut-off {}",
                entry.at
            ),
            None,
        ),
        Err(e) => e.into(),
    }
}

/// The account, kind and name of an AWS user's or role's key (either form).
fn parse_key(key: &str) -> Option<(String, Kind, String)> {
    let k = quell_core::key::PrincipalKey::parse(key)?;
    let (account, kind, name) = k.aws_parts()?;
    let kind = match kind {
        quell_core::key::AwsKind::User => Kind::User,
        quell_core::key::AwsKind::Role => Kind::Role,
        quell_core::key::AwsKind::AccessKey => return None,
    };
    Some((account.to_string(), kind, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

    fn report(changed: &str) -> String {
        format!(
            "{HEADER}\nalice,arn:aws:iam::111122223333:user/alice,2026-01-01T00:00:00+00:00,true,2026-11-23T11:00:00+00:00,{changed},N/A,false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A"
        )
    }

    fn at(s: &str) -> OffsetDateTime {
        quell_core::clock::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn a_password_changed_after_the_containment_is_seen_only_in_a_report_made_after_it() {
        let since = at("2026-11-23T12:00:00Z");
        let changed = report("2026-11-23T12:07:00+00:00");
        assert_eq!(
            password_change(&changed, "alice", at("2026-11-23T12:10:00Z"), since),
            PasswordChange::ChangedAt(at("2026-11-23T12:07:00Z"))
        );
        // A report from before the containment cannot tell, whatever it says.
        assert_eq!(
            password_change(&changed, "alice", at("2026-11-23T09:00:00Z"), since),
            PasswordChange::ReportTooOld(at("2026-11-23T09:00:00Z"))
        );
        let before = report("2026-03-01T08:00:00+00:00");
        assert_eq!(
            password_change(&before, "alice", at("2026-11-23T12:10:00Z"), since),
            PasswordChange::Unchanged
        );
        assert_eq!(
            password_change(&before, "bob", at("2026-11-23T12:10:00Z"), since),
            PasswordChange::Unknown
        );
    }
}
