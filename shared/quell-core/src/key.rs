//! The one key a contained principal is known by: in the ledger (every read and write), in
//! release and verify, in the verify queue's messages and on the command line.
//!
//! - an IAM user or role: its ARN with the partition, `arn:aws-us-gov:iam::111122223333:role/web`
//!   (the path is not part of the key: IAM names are unique in an account);
//! - an access key whose user is not known yet: `aws:<account>:key/<id>`;
//! - an Entra user: `azure:user/<object id>` (a UPN, `azure:user/<upn>`, where only the UPN is
//!   known);
//! - a service principal (by the id the finding gives, its `appId` where it has one) and a
//!   managed identity: `azure:sp/<id>`, `azure:mi/<object id>`;
//! - an IAM Identity Center user, by user name: `aws:identity-center:user/<user name>` (one
//!   identity store serves the whole organization, so the key names no account).
//!
//! Ids are lower case. Keys written before the ARN form (`aws:<account>:user/<name>`) still
//! parse, and [`PrincipalKey::legacy`] gives that form so the rows written under it are found.

use std::fmt;

use crate::model::{Cloud, Subject, ids};

/// What kind of IAM principal an AWS key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AwsKind {
    User,
    Role,
    /// An access key whose user is not known yet.
    AccessKey,
}

/// What kind of Entra object an Azure key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AzureKind {
    User,
    ServicePrincipal,
    ManagedIdentity,
}

/// One contained principal's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKey {
    Aws {
        partition: String,
        account: String,
        kind: AwsKind,
        /// The user's or role's name, or the access key id.
        name: String,
    },
    Azure {
        kind: AzureKind,
        /// The object id (or a UPN, or a service principal's appId), lower case.
        id: String,
    },
    /// An IAM Identity Center user, by user name.
    IdentityCenter { user: String },
}

const IDENTITY_CENTER_PREFIX: &str = "aws:identity-center:user/";

/// The partition of a region (`us-gov-west-1` → `aws-us-gov`), `aws` when unknown.
pub fn partition_of_region(region: Option<&str>) -> &'static str {
    match region.unwrap_or_default() {
        r if r.starts_with("us-gov-") => "aws-us-gov",
        r if r.starts_with("cn-") => "aws-cn",
        r if r.starts_with("us-isob-") => "aws-iso-b",
        r if r.starts_with("us-iso-") => "aws-iso",
        r if r.starts_with("eu-isoe-") => "aws-iso-e",
        r if r.starts_with("us-isof-") => "aws-iso-f",
        _ => "aws",
    }
}

impl PrincipalKey {
    pub fn aws(partition: &str, account: &str, kind: AwsKind, name: &str) -> PrincipalKey {
        PrincipalKey::Aws {
            partition: partition.to_string(),
            account: account.to_string(),
            kind,
            name: name.to_string(),
        }
    }

    pub fn azure(kind: AzureKind, id: &str) -> PrincipalKey {
        PrincipalKey::Azure {
            kind,
            id: id.to_ascii_lowercase(),
        }
    }

    pub fn cloud(&self) -> Cloud {
        match self {
            PrincipalKey::Aws { .. } | PrincipalKey::IdentityCenter { .. } => Cloud::Aws,
            PrincipalKey::Azure { .. } => Cloud::Azure,
        }
    }

    /// The key of the principal a subject belongs to (a key, session or role session is its
    /// user's or role's containment), in `partition` for AWS subjects.
    pub fn of_subject(s: &Subject, partition: &str) -> Option<PrincipalKey> {
        Some(match s {
            Subject::IamUser { account, name } => {
                PrincipalKey::aws(partition, account, AwsKind::User, name)
            }
            Subject::AccessKey {
                account,
                user: Some(u),
                ..
            } => PrincipalKey::aws(partition, account, AwsKind::User, u),
            Subject::AccessKey {
                account,
                access_key_id,
                user: None,
            } => PrincipalKey::aws(partition, account, AwsKind::AccessKey, access_key_id),
            Subject::IamRole { account, name } | Subject::RoleSession { account, name, .. } => {
                PrincipalKey::aws(partition, account, AwsKind::Role, name)
            }
            Subject::EntraUser { id, name, .. } => {
                PrincipalKey::azure(AzureKind::User, id.as_deref().or(name.as_deref())?)
            }
            Subject::ServicePrincipal { id, app_id, .. } => {
                PrincipalKey::azure(AzureKind::ServicePrincipal, app_id.as_deref().unwrap_or(id))
            }
            Subject::ManagedIdentity { id, .. } => {
                PrincipalKey::azure(AzureKind::ManagedIdentity, id)
            }
            // A permission-set session is its person's containment.
            Subject::IdentityCenterUser { user_name, .. }
            | Subject::IdentityCenterSession {
                session: Some(user_name),
                ..
            } => PrincipalKey::IdentityCenter {
                user: user_name.clone(),
            },
            Subject::Root { .. }
            | Subject::FederatedUser { .. }
            | Subject::IdentityCenterSession { session: None, .. }
            | Subject::OnPremisesAccount { .. } => return None,
        })
    }

    /// A key as stored or as a human writes it: the canonical form, the form written before
    /// it (`aws:<account>:user/<name>`, which has no partition: `aws` is assumed), an IAM user
    /// or role ARN with any path, or an assumed-role ARN (its role).
    pub fn parse(s: &str) -> Option<PrincipalKey> {
        let s = s.trim();
        if let Some(user) = s.strip_prefix(IDENTITY_CENTER_PREFIX) {
            return (!user.is_empty() && user.len() <= 128 && !user.contains(['/', ' '])).then(
                || PrincipalKey::IdentityCenter {
                    user: user.to_string(),
                },
            );
        }
        if let Some(rest) = s.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [partition, service, _, account, resource] = parts.as_slice() else {
                return None;
            };
            if !partition.starts_with("aws") || !ids::is_account(account) {
                return None;
            }
            let (kind, path) = resource.split_once('/')?;
            let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
            return match (*service, kind) {
                ("iam", "user") => Some(PrincipalKey::aws(partition, account, AwsKind::User, name)),
                ("iam", "role") => Some(PrincipalKey::aws(partition, account, AwsKind::Role, name)),
                ("sts", "assumed-role") => {
                    let role = path.split('/').next().filter(|r| !r.is_empty())?;
                    Some(PrincipalKey::aws(partition, account, AwsKind::Role, role))
                }
                _ => None,
            };
        }
        if let Some(rest) = s.strip_prefix("aws:") {
            let (account, principal) = rest.split_once(':')?;
            let (kind, name) = principal.split_once('/')?;
            let kind = match kind {
                "user" => AwsKind::User,
                "role" => AwsKind::Role,
                "key" => AwsKind::AccessKey,
                _ => return None,
            };
            if !ids::is_account(account) || name.is_empty() || name.contains('/') {
                return None;
            }
            return Some(PrincipalKey::aws("aws", account, kind, name));
        }
        let (kind, id) = s.strip_prefix("azure:")?.split_once('/')?;
        let kind = match kind {
            "user" => AzureKind::User,
            "sp" => AzureKind::ServicePrincipal,
            "mi" => AzureKind::ManagedIdentity,
            _ => return None,
        };
        (!id.is_empty() && !id.contains('/')).then(|| PrincipalKey::azure(kind, id))
    }

    /// A principal as a human names it (a CLI argument, a runbook request's `principal`): a
    /// key or ARN ([`PrincipalKey::parse`]), a UPN, or an object id with its kind
    /// (`service_principal`, `managed_identity`; a user otherwise).
    pub fn of_argument(arg: &str, kind: Option<&str>) -> Option<PrincipalKey> {
        let arg = arg.trim();
        if let Some(k) = PrincipalKey::parse(arg) {
            return Some(k);
        }
        match kind {
            Some("service_principal") if ids::is_guid(arg) => {
                Some(PrincipalKey::azure(AzureKind::ServicePrincipal, arg))
            }
            Some("managed_identity") if ids::is_guid(arg) => {
                Some(PrincipalKey::azure(AzureKind::ManagedIdentity, arg))
            }
            Some("service_principal" | "managed_identity") => None,
            _ if arg.contains('@') || ids::is_guid(arg) => {
                Some(PrincipalKey::azure(AzureKind::User, arg))
            }
            _ => None,
        }
    }

    /// The form keys had before they carried the partition, for AWS keys in the `aws`
    /// partition: rows written then are found under it.
    pub fn legacy(&self) -> Option<String> {
        match self {
            PrincipalKey::Aws {
                partition,
                account,
                kind,
                name,
            } if partition == "aws" && *kind != AwsKind::AccessKey => Some(format!(
                "aws:{account}:{}/{name}",
                match kind {
                    AwsKind::User => "user",
                    _ => "role",
                }
            )),
            _ => None,
        }
    }

    /// Every string a row of this principal may be stored under: the key, then its legacy form.
    pub fn stored_forms(&self) -> Vec<String> {
        let mut out = vec![self.to_string()];
        out.extend(self.legacy());
        out
    }

    /// The AWS account, kind and name, for an AWS key.
    pub fn aws_parts(&self) -> Option<(&str, AwsKind, &str)> {
        match self {
            PrincipalKey::Aws {
                account,
                kind,
                name,
                ..
            } => Some((account, *kind, name)),
            PrincipalKey::Azure { .. } | PrincipalKey::IdentityCenter { .. } => None,
        }
    }

    /// The Identity Center user name, for an Identity Center key.
    pub fn identity_center_user(&self) -> Option<&str> {
        match self {
            PrincipalKey::IdentityCenter { user } => Some(user),
            _ => None,
        }
    }

    /// The Entra kind and id, for an Azure key.
    pub fn azure_parts(&self) -> Option<(AzureKind, &str)> {
        match self {
            PrincipalKey::Azure { kind, id } => Some((*kind, id)),
            PrincipalKey::Aws { .. } | PrincipalKey::IdentityCenter { .. } => None,
        }
    }
}

impl fmt::Display for PrincipalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalKey::Aws {
                account,
                kind: AwsKind::AccessKey,
                name,
                ..
            } => write!(f, "aws:{account}:key/{name}"),
            PrincipalKey::Aws {
                partition,
                account,
                kind,
                name,
            } => write!(
                f,
                "arn:{partition}:iam::{account}:{}/{name}",
                if *kind == AwsKind::User {
                    "user"
                } else {
                    "role"
                }
            ),
            PrincipalKey::Azure { kind, id } => write!(
                f,
                "azure:{}/{id}",
                match kind {
                    AzureKind::User => "user",
                    AzureKind::ServicePrincipal => "sp",
                    AzureKind::ManagedIdentity => "mi",
                }
            ),
            PrincipalKey::IdentityCenter { user } => write!(f, "{IDENTITY_CENTER_PREFIX}{user}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_legacy_keys_and_arguments_name_one_key() {
        let k = |s: &str| PrincipalKey::of_argument(s, None).map(|k| k.to_string());
        assert_eq!(
            k("arn:aws:iam::111122223333:user/ops/alice").as_deref(),
            Some("arn:aws:iam::111122223333:user/alice")
        );
        assert_eq!(
            k("arn:aws-us-gov:sts::111122223333:assumed-role/web/i-0abc").as_deref(),
            Some("arn:aws-us-gov:iam::111122223333:role/web")
        );
        // A row key of before: the same principal, in the aws partition.
        assert_eq!(
            k("aws:111122223333:user/alice"),
            k("arn:aws:iam::111122223333:user/alice")
        );
        assert_eq!(
            k("Ana@Contoso.com").as_deref(),
            Some("azure:user/ana@contoso.com")
        );
        assert_eq!(k("not a principal"), None);
        assert_eq!(k("arn:aws:iam::12:user/alice"), None);
        assert_eq!(
            PrincipalKey::of_argument("not-a-guid", Some("managed_identity")),
            None
        );
        let key = PrincipalKey::parse("arn:aws:iam::111122223333:role/web").unwrap();
        assert_eq!(key.legacy().as_deref(), Some("aws:111122223333:role/web"));
        assert_eq!(PrincipalKey::parse(&key.to_string()), Some(key));
        let gov = PrincipalKey::parse("arn:aws-us-gov:iam::111122223333:role/web").unwrap();
        assert_eq!(gov.legacy(), None);
    }

    #[test]
    fn a_subject_belongs_to_its_users_or_roles_key() {
        let session = Subject::RoleSession {
            account: "111122223333".into(),
            name: "web".into(),
            id: None,
            session: "s".into(),
            access_key_id: None,
        };
        assert_eq!(
            PrincipalKey::of_subject(&session, "aws-cn")
                .unwrap()
                .to_string(),
            "arn:aws-cn:iam::111122223333:role/web"
        );
        // An Identity Center session is its person's containment, in whichever account.
        let idc = Subject::IdentityCenterSession {
            account: "444455556666".into(),
            name: "AWSReservedSSO_Admin_0123456789abcdef".into(),
            session: Some("alice@example.com".into()),
        };
        let key = PrincipalKey::of_subject(&idc, "aws").unwrap();
        assert_eq!(
            key.to_string(),
            "aws:identity-center:user/alice@example.com"
        );
        assert_eq!(PrincipalKey::parse(&key.to_string()), Some(key.clone()));
        assert_eq!(key.identity_center_user(), Some("alice@example.com"));
        assert_eq!(key.cloud(), Cloud::Aws);
        assert_eq!(partition_of_region(Some("us-gov-west-1")), "aws-us-gov");
        assert_eq!(partition_of_region(Some("cn-north-1")), "aws-cn");
        assert_eq!(partition_of_region(None), "aws");
    }
}
