//! What quell's Azure identity must be granted, as code: the Graph application permissions and
//! ARM actions each action kind calls, what verify, the automatic release, the sweep and the
//! `GraphAlert` re-read add, and the Azure RBAC roles the handler's own resources need.
//! `tests/azure_permissions.rs` holds `infra/README.md` (the grant table and its script) and
//! `infra/azure/main.bicep` (the role assignments) to exactly these lists, as `tests/sam.rs` does
//! for AWS.
//!
//! Permission names follow Microsoft Graph's permissions reference and each API's
//! "Permissions" table (least privileged application permission).

use quell_core::plan::ActionKind;

/// One grant quell's managed identity needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// A Microsoft Graph application permission (app role), e.g. `User.Read.All`.
    Graph(&'static str),
    /// An ARM authorization action, granted through an Azure role on the subscriptions quell
    /// covers, e.g. `Microsoft.Authorization/roleAssignments/delete`.
    Arm(&'static str),
}

use Permission::{Arm, Graph};

const USER_READ: Permission = Graph("User.Read.All");
const APPS: Permission = Graph("Application.ReadWrite.OwnedBy");
const ASSIGNMENTS_READ: Permission = Arm("Microsoft.Authorization/roleAssignments/read");
const ASSIGNMENTS_DELETE: Permission = Arm("Microsoft.Authorization/roleAssignments/delete");

/// What the executor calls for each action kind (none for AWS kinds), exhaustively: an Azure
/// action added without its permissions does not compile.
pub fn permissions(kind: ActionKind) -> &'static [Permission] {
    use ActionKind::*;
    match kind {
        // GET /users/{id}, PATCH accountEnabled.
        DisableEntraUser => &[USER_READ, Graph("User.EnableDisableAccount.All")],
        // GET /users/{id}, POST /users/{id}/revokeSignInSessions.
        RevokeEntraSessions => &[USER_READ, Graph("User.RevokeSessions.All")],
        // GET /identityProtection/riskyUsers/{id}, POST riskyUsers/confirmCompromised.
        ConfirmUserCompromised => &[USER_READ, Graph("IdentityRiskyUser.ReadWrite.All")],
        // GET servicePrincipals (by appId), PATCH accountEnabled; the application's federated
        // credentials read for verify's baseline.
        DisableServicePrincipal => &[APPS],
        // removePassword on the service principal or its application.
        RemoveServicePrincipalCredential => &[APPS],
        // GET and DELETE /applications(appId=…)/federatedIdentityCredentials/{id}: only on an
        // application quell owns (Application.ReadWrite.OwnedBy); on any other, Graph answers
        // 403 and a human is told to remove it. Application.ReadWrite.All would let quell's
        // identity add a secret to any application, so it is not asked for.
        RemoveFederatedCredential => &[APPS],
        // List the identity's role assignments per subscription, delete each.
        RemoveRoleAssignments => &[ASSIGNMENTS_READ, ASSIGNMENTS_DELETE],
        // PATCH /security/alerts_v2/{id}.
        UpdateDefenderAlert => &[Graph("SecurityAlert.ReadWrite.All")],
        Notify => &[],
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
        | UpdateSecurityhubFinding => &[],
    }
}

/// What the check after containment reads and repeats (`release::verify`): the user's or
/// service principal's state, authentication methods registered since (read only: the write
/// permission could also create Temporary Access Passes), the application's secrets,
/// certificates and federated credentials, the identity's role assignments.
pub const VERIFY: &[Permission] = &[
    USER_READ,
    Graph("User.EnableDisableAccount.All"),
    Graph("UserAuthenticationMethod.Read.All"),
    APPS,
    ASSIGNMENTS_READ,
    ASSIGNMENTS_DELETE,
];

/// What the hourly release calls with the function's identity (`release::release`,
/// [`crate::release::Releaser::Automatic`]): re-enable, and dismiss the risk quell confirmed. It
/// never writes a role assignment: restoring one is left to a human's identity (`quell
/// release`), so the function holds no `roleAssignments/write`.
pub const AUTO_RELEASE: &[Permission] = &[
    USER_READ,
    Graph("User.EnableDisableAccount.All"),
    Graph("IdentityRiskyUser.ReadWrite.All"),
    APPS,
];

/// The `PostureSweep` timer: stale credentials, and the sign-in activity reports that date them.
pub const SWEEP: &[Permission] = &[APPS, Graph("AuditLog.Read.All")];

/// The `PostureSweep` timer's link discovery (`links::discover`): every service principal's app
/// roles and names, the AWS gallery apps' assignments and their groups' members, every
/// application's federated credentials. Read-only.
pub const LINKS: &[Permission] = &[
    Graph("Application.Read.All"),
    Graph("GroupMember.Read.All"),
    USER_READ,
];

/// `GraphAlert`, `DefenderEvents` and `EntraRiskEvents` plan only from Graph's copy of what a
/// posted alert or an Event Hub record names ([`crate::executor::graph_copy_path`]): the alert,
/// the risk detection (users' and service principals'), the risky user or service principal.
pub const REREAD: &[Permission] = &[
    Graph("SecurityAlert.ReadWrite.All"),
    Graph("IdentityRiskEvent.Read.All"),
    Graph("IdentityRiskyUser.ReadWrite.All"),
    Graph("IdentityRiskyServicePrincipal.Read.All"),
];

/// Everything the handler's identity must be granted: every Azure action kind, verify, the
/// automatic release, the sweep and the re-read of posted alerts and Event Hub records.
pub fn handler_permissions() -> std::collections::BTreeSet<Permission> {
    ActionKind::ALL
        .iter()
        .flat_map(|k| permissions(*k).iter().copied())
        .chain(VERIFY.iter().copied())
        .chain(AUTO_RELEASE.iter().copied())
        .chain(LINKS.iter().copied())
        .chain(SWEEP.iter().copied())
        .chain(REREAD.iter().copied())
        .collect()
}

/// The built-in Azure roles the handler's identity holds on its own resources (the Bicep's role
/// assignments), by role definition id, with what each is for.
pub const RESOURCE_ROLES: &[(&str, &str)] = &[
    // Storage Blob Data Owner: the Flex Consumption deployment container and host state.
    (
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "deployment package and host locks",
    ),
    // Storage Queue Data Contributor: the verify queue (send the check, receive it, delete it).
    ("974c5e8b-45b9-4653-ba55-5f855dd0fb88", "the verify queue"),
    // Storage Table Data Contributor: the ledger and the breaker counters.
    ("0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "the ledger"),
    // Azure Event Hubs Data Receiver: Defender XDR streaming and Entra diagnostic logs.
    ("a638d3c7-ab3a-418d-83e6-5f17a39d4fde", "the event hubs"),
    // Monitoring Metrics Publisher: Application Insights telemetry with Entra authentication.
    ("3913510d-42f4-4e42-8a64-420c390055eb", "telemetry"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_azure_action_names_what_it_needs_and_no_aws_action_does() {
        for kind in ActionKind::ALL {
            match kind.cloud() {
                Some(quell_core::Cloud::Azure) => {
                    assert!(!permissions(kind).is_empty(), "{kind:?}")
                }
                _ => assert!(permissions(kind).is_empty(), "{kind:?}"),
            }
        }
        // The function's identity never writes a role assignment.
        assert!(
            !handler_permissions()
                .iter()
                .any(|p| matches!(p, Arm(a) if a.ends_with("/write")))
        );
    }
}
