//! The IAM writes the executor and the sweep share. Each reads before it writes, so it
//! reports `already_in_state` when there is nothing to change. Callers check protection, the
//! exemption tag and dry-run first.

use quell_core::report::{Inverse, Outcome};
use serde_json::json;

use crate::docs;
use crate::error::{ExecError, classify};

/// Which kind of principal an inline policy belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Kind {
    User,
    Role,
}

/// An inline policy's (URL-encoded) document; `None` when the policy does not exist.
pub(crate) async fn get_inline(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    policy: &str,
) -> Result<Option<String>, ExecError> {
    let r = match kind {
        Kind::User => iam
            .get_user_policy()
            .user_name(name)
            .policy_name(policy)
            .send()
            .await
            .map(|o| o.policy_document().to_string())
            .map_err(classify),
        Kind::Role => iam
            .get_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .map(|o| o.policy_document().to_string())
            .map_err(classify),
    };
    match r {
        Ok(doc) => Ok(Some(doc)),
        Err(e) if e.is("NoSuchEntity") => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn put_inline(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    policy: &str,
    doc: &str,
) -> Result<(), ExecError> {
    match kind {
        Kind::User => iam
            .put_user_policy()
            .user_name(name)
            .policy_name(policy)
            .policy_document(doc)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
        Kind::Role => iam
            .put_role_policy()
            .role_name(name)
            .policy_name(policy)
            .policy_document(doc)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
    }
}

/// The call that undoes writing `policy`: restore the previous document, or delete it.
pub(crate) fn undo_inline(
    kind: Kind,
    name: &str,
    policy: &str,
    previous: Option<String>,
) -> Inverse {
    let (who, put, delete) = match kind {
        Kind::User => ("UserName", "iam:PutUserPolicy", "iam:DeleteUserPolicy"),
        Kind::Role => ("RoleName", "iam:PutRolePolicy", "iam:DeleteRolePolicy"),
    };
    match previous {
        Some(doc) => Inverse {
            call: put.into(),
            params: json!({who: name, "PolicyName": policy, "PolicyDocument": docs::parse(&doc)}),
        },
        None => Inverse {
            call: delete.into(),
            params: json!({who: name, "PolicyName": policy}),
        },
    }
}

/// Attaches the deny-all quarantine policy unless it is already there.
pub(crate) async fn quarantine(iam: &aws_sdk_iam::Client, kind: Kind, name: &str) -> Outcome {
    let existing = match get_inline(iam, kind, name, docs::QUARANTINE_POLICY).await {
        Ok(e) => e,
        Err(e) => return e.into(),
    };
    if existing
        .as_deref()
        .and_then(docs::parse)
        .is_some_and(|d| docs::is_deny_all(&d))
    {
        return Outcome::already(format!(
            "{name} already has the {} deny-all policy",
            docs::QUARANTINE_POLICY
        ));
    }
    match put_inline(
        iam,
        kind,
        name,
        docs::QUARANTINE_POLICY,
        &docs::quarantine(),
    )
    .await
    {
        Ok(()) => Outcome::applied(
            format!(
                "attached inline deny-all policy {} to {name}",
                docs::QUARANTINE_POLICY
            ),
            Some(undo_inline(kind, name, docs::QUARANTINE_POLICY, existing)),
        ),
        Err(e) => e.into(),
    }
}

/// Deletes a user's console password unless it has none.
pub(crate) async fn delete_login_profile(iam: &aws_sdk_iam::Client, user: &str) -> Outcome {
    match iam
        .get_login_profile()
        .user_name(user)
        .send()
        .await
        .map_err(classify)
    {
        Ok(_) => {}
        Err(e) if e.is("NoSuchEntity") => {
            return Outcome::already(format!("{user} has no console password"));
        }
        Err(e) => return e.into(),
    }
    match iam.delete_login_profile().user_name(user).send().await {
        Ok(_) => Outcome::applied(
            format!("deleted the console password of {user}"),
            Some(Inverse {
                call: "iam:CreateLoginProfile".into(),
                params: json!({"UserName": user, "PasswordResetRequired": true, "Note": "the old password cannot be restored; set a new one"}),
            }),
        ),
        Err(e) => classify(e).into(),
    }
}
