//! IAM Identity Center: contain a person, not only a credential.
//!
//! Identity Center creates and guards the `AWSReservedSSO_*` roles in every account; IAM
//! refuses to change them, so a per-role deny cannot be written. Identity Center has no API to
//! disable a user or end their portal sessions (aws-cli issue 9954). What AWS documents instead
//! ("Revoke active IAM role sessions created by permission sets", IAM Identity Center User
//! Guide, and its "Prerequisites for revoking permissions" page) is an explicit deny keyed on
//! the user's `identitystore:UserId` in the inline policy of the permission sets the user holds,
//! provisioned to the accounts: it denies every session of that user, issued before or after,
//! and no one else's. The identity store user id is stable; `aws:userid` ends in the user name,
//! which a directory sync can change.
//!
//! Calls, all in the account that administers Identity Center (the management account or its
//! delegated administrator): `sso:ListInstances`, `identitystore:GetUserId`,
//! `identitystore:ListGroupMembershipsForMember`, `sso:ListAccountAssignmentsForPrincipal`
//! (for the user and each group), `sso:GetInlinePolicyForPermissionSet`,
//! `sso:PutInlinePolicyToPermissionSet`, `sso:ProvisionPermissionSet` and
//! `sso:DescribePermissionSetProvisioningStatus`; a release also
//! `sso:DeleteInlinePolicyFromPermissionSet`.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_identitystore::types::{AlternateIdentifier, MemberId, UniqueAttribute};
use aws_sdk_ssoadmin::types::{PrincipalType, ProvisionTargetType, StatusValues};
use aws_smithy_types::Document;
use serde_json::{Value, json};

use crate::error::{ExecError, classify};

/// The Sid of quell's one statement in a permission set's inline policy: it lists every user
/// quell contains through that permission set.
pub const STATEMENT_SID: &str = "QuellDenyContainedIdentityCenterUsers";

/// The largest inline policy a permission set takes (IAM Identity Center quotas: "Inline
/// policy per permission set", 32,768 characters). A deny that would not fit is not written:
/// the action fails and says so, and a human removes the user's assignments instead.
pub const MAX_INLINE_POLICY: usize = 32_768;

/// One Identity Center instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub arn: String,
    pub identity_store: String,
}

/// The clients of the account that administers Identity Center.
#[derive(Clone, Debug)]
pub struct Clients {
    pub sso: aws_sdk_ssoadmin::Client,
    pub store: aws_sdk_identitystore::Client,
}

/// The instance quell acts in: the one configured (`aws.identity_center.instance_arn`), else
/// the one `ListInstances` returns.
pub async fn instance(
    sso: &aws_sdk_ssoadmin::Client,
    configured: Option<&str>,
) -> Result<Instance, ExecError> {
    let out = sso.list_instances().send().await.map_err(classify)?;
    let found = out.instances().iter().find(|i| match configured {
        Some(arn) => i.instance_arn() == Some(arn),
        None => true,
    });
    match found.and_then(|i| Some((i.instance_arn()?, i.identity_store_id()?))) {
        Some((arn, store)) => Ok(Instance {
            arn: arn.to_string(),
            identity_store: store.to_string(),
        }),
        None => Err(ExecError::new(
            "NoIdentityCenterInstance",
            match configured {
                Some(arn) => format!("Identity Center instance {arn} is not in this account: set aws.identity_center.account to the account that administers it (the management account or its delegated administrator)"),
                None => "no Identity Center instance answers in this account: set aws.identity_center.account to the account that administers it (the management account or its delegated administrator)".to_string(),
            },
        )),
    }
}

/// The identity store user id of `user_name`, or `None` when there is no such user.
pub async fn user_id(
    store: &aws_sdk_identitystore::Client,
    identity_store: &str,
    user_name: &str,
) -> Result<Option<String>, ExecError> {
    let by_name = UniqueAttribute::builder()
        .attribute_path("userName")
        .attribute_value(Document::String(user_name.to_string()))
        .build()
        .map_err(|e| ExecError::new("InvalidRequest", e.to_string()))?;
    match store
        .get_user_id()
        .identity_store_id(identity_store)
        .alternate_identifier(AlternateIdentifier::UniqueAttribute(by_name))
        .send()
        .await
        .map_err(classify)
    {
        Ok(o) => Ok(Some(o.user_id().to_string())),
        Err(e) if e.is("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every permission set assigned, in any account, to the user or to a group the user belongs to.
pub async fn permission_sets(
    c: &Clients,
    instance: &Instance,
    user_id: &str,
) -> Result<Vec<String>, ExecError> {
    let mut principals = vec![(PrincipalType::User, user_id.to_string())];
    let mut token: Option<String> = None;
    loop {
        let o = c
            .store
            .list_group_memberships_for_member()
            .identity_store_id(&instance.identity_store)
            .member_id(MemberId::UserId(user_id.to_string()))
            .set_next_token(token.take())
            .send()
            .await
            .map_err(classify)?;
        principals.extend(
            o.group_memberships()
                .iter()
                .filter_map(|m| m.group_id())
                .map(|g| (PrincipalType::Group, g.to_string())),
        );
        match o.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    let mut sets = BTreeSet::new();
    for (kind, id) in principals {
        let mut token: Option<String> = None;
        loop {
            let o = c
                .sso
                .list_account_assignments_for_principal()
                .instance_arn(&instance.arn)
                .principal_id(&id)
                .principal_type(kind.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(classify)?;
            sets.extend(
                o.account_assignments()
                    .iter()
                    .filter_map(|a| a.permission_set_arn())
                    .map(str::to_string),
            );
            match o.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(sets.into_iter().collect())
}

fn statements(doc: &Value) -> Vec<Value> {
    match &doc["Statement"] {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![doc["Statement"].clone()],
        _ => Vec::new(),
    }
}

fn is_quells(st: &Value) -> bool {
    st["Sid"] == STATEMENT_SID
}

/// The user ids quell's statement of `doc` denies.
pub fn denied_users(doc: &Value) -> Vec<String> {
    statements(doc)
        .iter()
        .filter(|st| is_quells(st) && st["Effect"] == "Deny")
        .flat_map(
            |st| match &st["Condition"]["StringEquals"]["identitystore:UserId"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            },
        )
        .collect()
}

fn quell_statement(users: &[String]) -> Value {
    json!({
        "Sid": STATEMENT_SID,
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"StringEquals": {"identitystore:UserId": users}}
    })
}

/// `doc` (a permission set's inline policy, empty when it has none) with `user` in quell's
/// statement, every other statement kept as it was. `Err` when the document does not parse.
pub fn with_user(doc: &str, user: &str) -> Result<Value, String> {
    let mut value: Value = if doc.trim().is_empty() {
        json!({"Version": "2012-10-17", "Statement": []})
    } else {
        serde_json::from_str(doc).map_err(|e| format!("the inline policy does not parse: {e}"))?
    };
    let mut users = denied_users(&value);
    if !users.iter().any(|u| u == user) {
        users.push(user.to_string());
    }
    users.sort();
    let mut rest: Vec<Value> = statements(&value)
        .into_iter()
        .filter(|s| !is_quells(s))
        .collect();
    rest.push(quell_statement(&users));
    value["Statement"] = Value::Array(rest);
    Ok(value)
}

/// `doc` without `user` in quell's statement; the statement goes when it names no one, and
/// `None` when nothing else is left (the permission set had no inline policy before quell's).
pub fn without_user(doc: &Value, user: &str) -> Option<Value> {
    let users: Vec<String> = denied_users(doc)
        .into_iter()
        .filter(|u| u != user)
        .collect();
    let mut rest: Vec<Value> = statements(doc)
        .into_iter()
        .filter(|s| !is_quells(s))
        .collect();
    if !users.is_empty() {
        rest.push(quell_statement(&users));
    }
    if rest.is_empty() {
        return None;
    }
    let mut out = doc.clone();
    out["Statement"] = Value::Array(rest);
    Some(out)
}

/// The permission set's inline policy as Identity Center holds it (empty when it has none).
pub async fn inline_policy_text(
    c: &Clients,
    instance: &Instance,
    set: &str,
) -> Result<String, ExecError> {
    let o = c
        .sso
        .get_inline_policy_for_permission_set()
        .instance_arn(&instance.arn)
        .permission_set_arn(set)
        .send()
        .await
        .map_err(classify)?;
    Ok(o.inline_policy().unwrap_or_default().to_string())
}

/// A permission set's policy text, parsed; `Value::Null` when empty.
pub fn parse_policy(set: &str, text: &str) -> Result<Value, ExecError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| {
        ExecError::new(
            "MalformedPolicyDocument",
            format!("the inline policy of {set} does not parse: {e}"),
        )
    })
}

/// The permission set's inline policy, `Value::Null` when it has none.
pub async fn inline_policy(
    c: &Clients,
    instance: &Instance,
    set: &str,
) -> Result<Value, ExecError> {
    parse_policy(set, &inline_policy_text(c, instance, set).await?)
}

/// Writes `doc` as the permission set's inline policy (deletes it for `None`), then provisions
/// the permission set to every account it is provisioned to and waits for Identity Center to
/// say so.
pub async fn write(
    c: &Clients,
    instance: &Instance,
    set: &str,
    doc: Option<&Value>,
) -> Result<(), ExecError> {
    let text = doc.map(Value::to_string);
    write_text(c, instance, set, text.as_deref()).await
}

/// [`write`] of a policy text as it is (a release putting back the bytes quell found).
pub async fn write_text(
    c: &Clients,
    instance: &Instance,
    set: &str,
    text: Option<&str>,
) -> Result<(), ExecError> {
    match text {
        Some(text) => {
            fits(set, text)?;
            c.sso
                .put_inline_policy_to_permission_set()
                .instance_arn(&instance.arn)
                .permission_set_arn(set)
                .inline_policy(text)
                .send()
                .await
                .map_err(classify)?;
        }
        None => {
            c.sso
                .delete_inline_policy_from_permission_set()
                .instance_arn(&instance.arn)
                .permission_set_arn(set)
                .send()
                .await
                .map_err(classify)?;
        }
    }
    provision(c, instance, set).await
}

/// Whether `text` fits a permission set's inline policy (`PutInlinePolicyToPermissionSet`:
/// at most 32,768 characters): the error says what to do instead.
pub fn fits(set: &str, text: &str) -> Result<(), ExecError> {
    if text.chars().count() <= MAX_INLINE_POLICY {
        return Ok(());
    }
    Err(ExecError::new(
        "LimitExceeded",
        format!(
            "quell's deny would make the inline policy of {set} {} characters, over Identity Center's {MAX_INLINE_POLICY}: nothing was written; remove the user's account assignments for this permission set by hand",
            text.chars().count()
        ),
    ))
}

/// `ProvisionPermissionSet` to every account the permission set is provisioned to, waiting up
/// to 30 seconds for `SUCCEEDED` (Identity Center provisions asynchronously).
async fn provision(c: &Clients, instance: &Instance, set: &str) -> Result<(), ExecError> {
    let o = c
        .sso
        .provision_permission_set()
        .instance_arn(&instance.arn)
        .permission_set_arn(set)
        .target_type(ProvisionTargetType::AllProvisionedAccounts)
        .send()
        .await
        .map_err(classify)?;
    let mut status = o.permission_set_provisioning_status().cloned();
    for _ in 0..30 {
        match status.as_ref().and_then(|s| s.status()) {
            Some(StatusValues::Succeeded) | None => return Ok(()),
            Some(StatusValues::Failed) => {
                return Err(ExecError::new(
                    "ProvisioningFailed",
                    format!(
                        "Identity Center could not provision {set}: {}",
                        status
                            .as_ref()
                            .and_then(|s| s.failure_reason())
                            .unwrap_or("no reason given")
                    ),
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(request) = status
            .as_ref()
            .and_then(|s| s.request_id())
            .map(str::to_string)
        else {
            return Ok(());
        };
        status = c
            .sso
            .describe_permission_set_provisioning_status()
            .instance_arn(&instance.arn)
            .provision_permission_set_request_id(request)
            .send()
            .await
            .map_err(classify)?
            .permission_set_provisioning_status()
            .cloned();
    }
    Err(ExecError {
        retryable: true,
        ..ExecError::new(
            "ProvisioningInProgress",
            format!(
                "Identity Center is still provisioning {set} after 30 seconds; quell's statement is written and applies when it finishes"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quells_statement_lists_each_contained_user_once_and_leaves_the_rest_alone() {
        let own = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ReadOnly","Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#;
        let one = with_user(own, "u-1").unwrap();
        let two = with_user(&one.to_string(), "u-2").unwrap();
        let again = with_user(&two.to_string(), "u-1").unwrap();
        assert_eq!(two, again);
        assert_eq!(denied_users(&two), ["u-1", "u-2"]);
        assert_eq!(statements(&two).len(), 2);
        assert_eq!(statements(&two)[0]["Sid"], "ReadOnly");
        // Releasing one keeps the other; releasing both puts back the policy as it was.
        let after_one = without_user(&two, "u-1").unwrap();
        assert_eq!(denied_users(&after_one), ["u-2"]);
        let after_both = without_user(&after_one, "u-2").unwrap();
        assert_eq!(after_both, serde_json::from_str::<Value>(own).unwrap());
        // A permission set with no inline policy before quell's has none after.
        let fresh = with_user("", "u-3").unwrap();
        assert_eq!(without_user(&fresh, "u-3"), None);
        assert!(with_user("{not json", "u-4").is_err());
    }

    #[test]
    fn a_deny_that_would_not_fit_the_inline_policy_is_refused_with_what_to_do() {
        // A permission set whose own policy already fills the limit.
        let big = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Big", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": "x".repeat(MAX_INLINE_POLICY - 200)}]})
        .to_string();
        assert!(fits("ps-1", &big).is_ok());
        let with = with_user(&big, "9067d9b5-0a41-4c3e-8a4a-3f1f2b6d0001").unwrap();
        let e = fits("ps-1", &with.to_string()).unwrap_err();
        assert_eq!(e.code, "LimitExceeded");
        assert!(
            e.message.contains("remove the user's account assignments"),
            "{}",
            e.message
        );
    }
}
