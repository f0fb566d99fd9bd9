//! The IAM writes the executor and the sweep share. Each reads before it writes, so it
//! reports `already_in_state` when there is nothing to change. Callers check protection, the
//! exemption tag and dry-run first.

use quell_core::report::{AwsInverse, Inverse, Outcome};

use crate::docs;
use crate::error::{ExecError, classify};

/// Tags a user or role.
pub(crate) async fn tag(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    tag: aws_sdk_iam::types::Tag,
) -> Result<(), ExecError> {
    match kind {
        Kind::User => iam
            .tag_user()
            .user_name(name)
            .tags(tag)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
        Kind::Role => iam
            .tag_role()
            .role_name(name)
            .tags(tag)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
    }
}

/// Which kind of principal an inline policy belongs to.
pub(crate) use quell_core::report::IamKind as Kind;

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
    AwsInverse::RestoreInline {
        kind,
        name: name.to_string(),
        policy: policy.to_string(),
        previous: previous.and_then(|doc| docs::parse(&doc)),
    }
    .into()
}

/// The partition the client's region belongs to (for AWS managed policy ARNs).
pub(crate) fn partition(iam: &aws_sdk_iam::Client) -> &'static str {
    iam.config()
        .region()
        .map_or("aws", |r| docs::partition_of_region(r.as_ref()))
}

/// The names of a principal's inline policies.
pub(crate) async fn list_inline(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
) -> Result<Vec<String>, ExecError> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let (names, next) = match kind {
            Kind::User => {
                let o = iam
                    .list_user_policies()
                    .user_name(name)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(classify)?;
                (
                    o.policy_names().to_vec(),
                    o.is_truncated()
                        .then(|| o.marker().map(str::to_string))
                        .flatten(),
                )
            }
            Kind::Role => {
                let o = iam
                    .list_role_policies()
                    .role_name(name)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(classify)?;
                (
                    o.policy_names().to_vec(),
                    o.is_truncated()
                        .then(|| o.marker().map(str::to_string))
                        .flatten(),
                )
            }
        };
        out.extend(names);
        match next {
            Some(m) => marker = Some(m),
            None => return Ok(out),
        }
    }
}

/// The ARNs of the managed policies attached to a principal.
pub(crate) async fn list_attached(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
) -> Result<Vec<String>, ExecError> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let (arns, next) = match kind {
            Kind::User => {
                let o = iam
                    .list_attached_user_policies()
                    .user_name(name)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(classify)?;
                (
                    o.attached_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn().map(str::to_string))
                        .collect::<Vec<_>>(),
                    o.is_truncated()
                        .then(|| o.marker().map(str::to_string))
                        .flatten(),
                )
            }
            Kind::Role => {
                let o = iam
                    .list_attached_role_policies()
                    .role_name(name)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(classify)?;
                (
                    o.attached_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn().map(str::to_string))
                        .collect::<Vec<_>>(),
                    o.is_truncated()
                        .then(|| o.marker().map(str::to_string))
                        .flatten(),
                )
            }
        };
        out.extend(arns);
        match next {
            Some(m) => marker = Some(m),
            None => return Ok(out),
        }
    }
}

/// A principal's policies as `{"attached": [ARN…], "inline": [name…]}`, sorted, leaving out
/// quell's own (`AWSDenyAll`, the revocation policies): what verify compares with later.
pub(crate) async fn policies(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
) -> Result<serde_json::Value, ExecError> {
    let own_arn = docs::deny_all_arn(partition(iam));
    // Three independent lists: read together.
    let groups = async {
        match kind {
            Kind::User => groups_of(iam, name).await.map(Some),
            Kind::Role => Ok(None),
        }
    };
    let (attached, inline, groups) = tokio::join!(
        list_attached(iam, kind, name),
        list_inline(iam, kind, name),
        groups
    );
    let groups = groups?;
    let mut attached: Vec<String> = attached?.into_iter().filter(|a| *a != own_arn).collect();
    let mut inline: Vec<String> = inline?
        .into_iter()
        .filter(|p| {
            ![
                docs::USER_REVOKE_POLICY,
                docs::ROLE_REVOKE_POLICY,
                docs::SESSION_REVOKE_POLICY,
            ]
            .contains(&p.as_str())
        })
        .collect();
    attached.sort();
    inline.sort();
    // A customer-managed policy can be changed in place (a new default version) and a user
    // can be put in a group: either grants without attaching anything to the principal.
    let mut versions = serde_json::Map::new();
    for arn in attached.iter().filter(|a| !is_aws_managed(a)) {
        let o = iam
            .get_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(classify)?;
        if let Some(v) = o.policy().and_then(|p| p.default_version_id()) {
            versions.insert(arn.clone(), serde_json::Value::from(v));
        }
    }
    let mut out = serde_json::json!({"attached": attached, "inline": inline, "versions": versions});
    if let Some(g) = groups {
        out["groups"] = serde_json::json!(g);
    }
    Ok(out)
}

/// Whether a managed policy is AWS's (`arn:<partition>:iam::aws:policy/…`): AWS changes those,
/// not the customer, so their versions are not compared.
fn is_aws_managed(arn: &str) -> bool {
    arn.split(':').nth(4) == Some("aws")
}

/// The groups a user belongs to, sorted.
pub(crate) async fn groups_of(
    iam: &aws_sdk_iam::Client,
    user: &str,
) -> Result<Vec<String>, ExecError> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let o = iam
            .list_groups_for_user()
            .user_name(user)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(classify)?;
        out.extend(o.groups().iter().map(|g| g.group_name().to_string()));
        match o
            .is_truncated()
            .then(|| o.marker().map(str::to_string))
            .flatten()
        {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) async fn delete_inline(
    iam: &aws_sdk_iam::Client,
    kind: Kind,
    name: &str,
    policy: &str,
) -> Result<(), ExecError> {
    let r = match kind {
        Kind::User => iam
            .delete_user_policy()
            .user_name(name)
            .policy_name(policy)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
        Kind::Role => iam
            .delete_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
    };
    match r {
        Err(e) if e.is("NoSuchEntity") => Ok(()),
        other => other,
    }
}

/// Attaches the AWS managed `AWSDenyAll` policy unless it is already attached. The roles may
/// attach only this policy (`iam:PolicyARN` condition), so the permission cannot grant access.
pub(crate) async fn quarantine(iam: &aws_sdk_iam::Client, kind: Kind, name: &str) -> Outcome {
    let arn = docs::deny_all_arn(partition(iam));
    let attached = list_attached(iam, kind, name).await;
    match attached {
        Ok(list) if list.contains(&arn) => {
            return Outcome::already(format!(
                "{name} already has {} attached",
                docs::DENY_ALL_POLICY
            ));
        }
        Ok(_) => {}
        Err(e) => return e.into(),
    }
    let r = match kind {
        Kind::User => iam
            .attach_user_policy()
            .user_name(name)
            .policy_arn(&arn)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
        Kind::Role => iam
            .attach_role_policy()
            .role_name(name)
            .policy_arn(&arn)
            .send()
            .await
            .map(|_| ())
            .map_err(classify),
    };
    match r {
        Ok(()) => Outcome::applied(
            format!("attached {} to {name}", docs::DENY_ALL_POLICY),
            Some(
                AwsInverse::DetachPolicy {
                    kind,
                    name: name.to_string(),
                    policy_arn: arn.clone(),
                }
                .into(),
            ),
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
            Some(
                AwsInverse::LoginProfile {
                    user: user.to_string(),
                }
                .into(),
            ),
        ),
        Err(e) => classify(e).into(),
    }
}

/// An IAM user or role as IAM describes it (`GetUser` / `GetRole`), read before any write.
pub(crate) struct Live<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub arn: &'a str,
    pub path: &'a str,
    pub tags: &'a [aws_sdk_iam::types::Tag],
}

impl Live<'_> {
    /// Why quell must not write this principal, if it must not. The executor and verify both ask
    /// this one question: the policy's protected principals and quell's own identities, matched
    /// against the real ARN (it carries the path a finding may not show, `user/ops/alice`);
    /// service-linked roles; Identity Center roles; the exemption tag.
    pub(crate) fn protection(
        &self,
        policy: &quell_core::Policy,
        ctx: &quell_core::plan::Context,
        subject: &quell_core::model::Subject,
    ) -> Option<String> {
        use quell_core::model::ids;
        if let Some(why) =
            quell_core::plan::protection_reason_with(policy, ctx, subject, &[self.arn])
        {
            return Some(why);
        }
        let role = self.kind == Kind::Role;
        if role
            && (self.path.starts_with("/aws-service-role/")
                || ids::is_service_linked_role(self.name))
        {
            return Some("service-linked role: owned by an AWS service and never modified".into());
        }
        if role
            && (self.path.starts_with("/aws-reserved/") || ids::is_identity_center_role(self.name))
        {
            return Some(
                "Identity Center role: managed by Identity Center, which reverts edits".into(),
            );
        }
        let exemption = &policy.exemption_tag;
        self.tags
            .iter()
            .any(|t| t.key() == exemption)
            .then(|| format!("the principal carries the exemption tag {exemption}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::types::Tag;
    use quell_core::model::Subject;

    fn why(kind: Kind, name: &str, path: &str, tags: &[Tag]) -> Option<String> {
        let arn = format!(
            "arn:aws:iam::111122223333:{}{path}{name}",
            if kind == Kind::Role { "role" } else { "user" }
        );
        let subject = match kind {
            Kind::User => Subject::IamUser {
                account: "111122223333".into(),
                name: name.into(),
            },
            Kind::Role => Subject::IamRole {
                account: "111122223333".into(),
                name: name.into(),
            },
        };
        let live = Live {
            kind,
            name,
            arn: &arn,
            path,
            tags,
        };
        live.protection(
            &quell_core::Policy::default(),
            &quell_core::plan::Context::default(),
            &subject,
        )
    }

    /// Verify asks the executor's question, so each of these holds for both.
    #[test]
    fn live_principals_quell_never_writes() {
        let tag = |k: &str| Tag::builder().key(k).value("x").build().unwrap();
        assert_eq!(why(Kind::Role, "web", "/", &[]), None);
        assert_eq!(why(Kind::User, "alice", "/ops/", &[tag("team")]), None);
        let sso = why(
            Kind::Role,
            "AWSReservedSSO_Admin_0123456789abcdef",
            "/aws-reserved/sso.amazonaws.com/",
            &[],
        );
        assert!(sso.unwrap().contains("Identity Center"));
        let sso_by_path = why(Kind::Role, "Admin", "/aws-reserved/sso.amazonaws.com/", &[]);
        assert!(sso_by_path.unwrap().contains("Identity Center"));
        let slr = why(
            Kind::Role,
            "AWSServiceRoleForSupport",
            "/aws-service-role/support.amazonaws.com/",
            &[],
        );
        assert!(slr.unwrap().contains("service-linked"));
        let exempt_tag = quell_core::Policy::default().exemption_tag;
        let exempt = why(Kind::User, "ops-bot", "/", &[tag(&exempt_tag)]);
        assert!(exempt.unwrap().contains(&exempt_tag));
    }
}
