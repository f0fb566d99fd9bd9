//! quell's AWS adapter: the only crate that calls AWS. It executes the AWS actions of a
//! [`quell_core::Plan`] with the AWS SDK for Rust and publishes the audit event.

pub mod audit;
pub mod capabilities;
pub mod clients;
pub mod docs;
pub mod error;
pub mod executor;
pub mod http;
mod iam;
pub mod identity_center;
pub mod keyless;
pub mod ledger;
pub mod links;
pub mod release;
pub mod securityhub;
pub mod sweep;
pub mod verify_queue;

pub use clients::{
    Accounts, AwsClients, ClientSource, Fixed, Session, config_without_credentials, load_config,
    session,
};
pub use error::ExecError;
pub use executor::AwsExecutor;
pub use quell_core::clock::SystemClock;

use quell_core::ActionKind;

/// The AWS API actions the account sweep calls (`sweep::sweep_account`): the report, the bulk
/// account details, key deactivation, password deletion and unused-role quarantine
/// (attaching `AWSDenyAll`), and the link discovery that runs beside it (`links::discover`).
pub const SWEEP_PERMISSIONS: &[&str] = &[
    "iam:GenerateCredentialReport",
    "iam:GetCredentialReport",
    "iam:GetAccountAuthorizationDetails",
    // The account's cross-cloud links (`links::discover`), refreshed with each sweep.
    "iam:ListSAMLProviders",
    "iam:GetSAMLProvider",
    "iam:ListOpenIDConnectProviders",
    "iam:GetOpenIDConnectProvider",
    "iam:ListAccessKeys",
    "iam:GetAccessKeyLastUsed",
    "iam:UpdateAccessKey",
    "iam:GetLoginProfile",
    "iam:DeleteLoginProfile",
    "iam:ListAttachedRolePolicies",
    "iam:AttachRolePolicy",
];

/// What containing an Identity Center user calls, in the account that administers Identity
/// Center (`identity_center`).
pub const IDENTITY_CENTER_CONTAIN: &[&str] = &[
    "sso:ListInstances",
    "identitystore:GetUserId",
    "identitystore:DescribeUser",
    "identitystore:ListGroupMembershipsForMember",
    "sso:ListAccountAssignmentsForPrincipal",
    "sso:GetInlinePolicyForPermissionSet",
    "sso:PutInlinePolicyToPermissionSet",
    "sso:ProvisionPermissionSet",
    "sso:DescribePermissionSetProvisioningStatus",
];

/// What releasing one calls: the same reads and writes, and deleting the inline policy quell
/// created when nothing else is left in it.
pub const IDENTITY_CENTER_RELEASE: &[&str] = &[
    "sso:ListInstances",
    "identitystore:GetUserId",
    "sso:GetInlinePolicyForPermissionSet",
    "sso:PutInlinePolicyToPermissionSet",
    "sso:DeleteInlinePolicyFromPermissionSet",
    "sso:ProvisionPermissionSet",
    "sso:DescribePermissionSetProvisioningStatus",
];

/// IAM actions the roles may call only on the `AWSDenyAll` managed policy (an `iam:PolicyARN`
/// condition in every template): attaching any other policy would grant access, detaching any
/// other (AWS's own `AWSCompromisedKeyQuarantine`, say) would lift a containment not quell's.
pub const ATTACH_ACTIONS: &[&str] = &[
    "iam:AttachUserPolicy",
    "iam:AttachRolePolicy",
    "iam:DetachUserPolicy",
    "iam:DetachRolePolicy",
];

/// The AWS API actions `quell release` and `quell verify` call (the runbook function and the
/// member role hold them; `release::release`, `release::verify`).
pub const RELEASE_PERMISSIONS: &[&str] = &[
    "iam:GetRole",
    "iam:GenerateCredentialReport",
    "iam:GetCredentialReport",
    "iam:ListGroupsForUser",
    "iam:GetPolicy",
    "iam:ListAttachedUserPolicies",
    "iam:ListAttachedRolePolicies",
    "iam:ListUserPolicies",
    "iam:ListRolePolicies",
    "iam:AttachUserPolicy",
    "iam:AttachRolePolicy",
    "iam:DetachUserPolicy",
    "iam:DetachRolePolicy",
    "iam:GetUserPolicy",
    "iam:GetRolePolicy",
    "iam:PutUserPolicy",
    "iam:PutRolePolicy",
    "iam:DeleteUserPolicy",
    "iam:DeleteRolePolicy",
    "iam:ListUserTags",
    "iam:ListRoleTags",
    "iam:TagUser",
    "iam:TagRole",
    "iam:UntagUser",
    "iam:UntagRole",
    "iam:ListAccessKeys",
    "iam:UpdateAccessKey",
    "iam:GetLoginProfile",
    "iam:DeleteLoginProfile",
];

/// The AWS API actions the check after containment calls (`release::verify`; the verify
/// function's role): reads, and the containing writes it may repeat. No detach, no untag, no
/// policy deletion: a verify can only contain more.
pub const VERIFY_PERMISSIONS: &[&str] = &[
    "iam:GetRole",
    "iam:GenerateCredentialReport",
    "iam:GetCredentialReport",
    "iam:ListGroupsForUser",
    "iam:GetPolicy",
    "iam:ListAttachedUserPolicies",
    "iam:ListAttachedRolePolicies",
    "iam:ListUserPolicies",
    "iam:ListRolePolicies",
    "iam:AttachUserPolicy",
    "iam:AttachRolePolicy",
    "iam:GetUserPolicy",
    "iam:GetRolePolicy",
    "iam:PutUserPolicy",
    "iam:PutRolePolicy",
    "iam:ListAccessKeys",
    "iam:UpdateAccessKey",
    "iam:GetLoginProfile",
    "iam:DeleteLoginProfile",
];

/// The AWS API actions the hourly release of expired containments calls (`release::release`
/// without reactivating keys, after `release::tagged_by_quell`; the release-expired function's
/// role). It never reactivates a key, so it holds no `iam:UpdateAccessKey`.
pub const AUTO_RELEASE_PERMISSIONS: &[&str] = &[
    "iam:ListUserTags",
    "iam:ListRoleTags",
    "iam:ListAttachedUserPolicies",
    "iam:ListAttachedRolePolicies",
    "iam:DetachUserPolicy",
    "iam:DetachRolePolicy",
    "iam:GetUserPolicy",
    "iam:GetRolePolicy",
    "iam:PutUserPolicy",
    "iam:PutRolePolicy",
    "iam:DeleteUserPolicy",
    "iam:DeleteRolePolicy",
    "iam:TagUser",
    "iam:TagRole",
    "iam:UntagUser",
    "iam:UntagRole",
];

/// The AWS API actions the executor may call for each action kind. The SAM template's roles
/// are checked against this table (tests/sam.rs), so a new call cannot ship without its
/// permission, and no role holds one the code does not use.
pub fn permissions(kind: ActionKind) -> &'static [&'static str] {
    use ActionKind::*;
    const READ_USER: &str = "iam:GetUser";
    const READ_ROLE: &str = "iam:GetRole";
    match kind {
        DeactivateAccessKey => &[
            READ_USER,
            "iam:GetAccessKeyLastUsed",
            "iam:ListAccessKeys",
            "iam:UpdateAccessKey",
        ],
        DeactivateDormantAccessKeys => &[
            READ_USER,
            "iam:ListAccessKeys",
            "iam:GetAccessKeyLastUsed",
            "iam:UpdateAccessKey",
        ],
        DeactivateLongTermKeys => &[READ_USER, "iam:ListAccessKeys", "iam:UpdateAccessKey"],
        // Quarantine attaches AWSDenyAll; the roles may attach no other policy (iam:PolicyARN).
        QuarantineUser => &[
            READ_USER,
            "iam:ListAttachedUserPolicies",
            "iam:AttachUserPolicy",
        ],
        QuarantineRole => &[
            READ_ROLE,
            "iam:ListAttachedRolePolicies",
            "iam:AttachRolePolicy",
        ],
        // Session revocation needs a dynamic deny: an inline policy is the only way.
        RevokeUserSessions => &[READ_USER, "iam:GetUserPolicy", "iam:PutUserPolicy"],
        RevokeRoleSessions => &[READ_ROLE, "iam:GetRolePolicy", "iam:PutRolePolicy"],
        RevokeRoleSession => &[
            READ_ROLE,
            "iam:GetRolePolicy",
            "iam:PutRolePolicy",
            "iam:ListRolePolicies",
            "iam:DeleteRolePolicy",
        ],
        DeleteLoginProfile => &[READ_USER, "iam:GetLoginProfile", "iam:DeleteLoginProfile"],
        // The tag's inverse keeps the principal's policies (and a role's trust policy, read
        // with the role) as quell found them, for verify to compare with.
        TagPrincipal => &[
            READ_USER,
            READ_ROLE,
            "iam:ListAttachedUserPolicies",
            "iam:ListAttachedRolePolicies",
            "iam:ListUserPolicies",
            "iam:ListRolePolicies",
            "iam:ListGroupsForUser",
            "iam:GetPolicy",
            "iam:TagUser",
            "iam:TagRole",
        ],
        UpdateSecurityhubFinding => &["securityhub:GetFindings", "securityhub:BatchUpdateFindings"],
        // In the account that administers Identity Center (`identity_center`).
        DenyIdentityCenterUser => IDENTITY_CENTER_CONTAIN,
        // A notice about an IAM user names the user's active keys.
        Notify => &["iam:ListAccessKeys"],
        // Azure actions: no AWS permission.
        DisableEntraUser
        | DisableServicePrincipal
        | RemoveRoleAssignments
        | RemoveServicePrincipalCredential
        | RemoveFederatedCredential
        | RevokeEntraSessions
        | ConfirmUserCompromised
        | UpdateDefenderAlert => &[],
    }
}
