//! Every event in `events/` normalizes and plans to exactly the subjects and actions a security
//! engineer expects, under the built-in default policy.

use quell_core::{Context, Policy, plan_input};
use quell_tests::{event, json_files, label, root};
use serde_json::Value;

struct Case {
    file: &'static str,
    subjects: &'static [&'static str],
    actions: &'static [&'static str],
    skipped: usize,
}

const CASES: &[Case] = &[
    Case {
        file: "access-analyzer/deleted-finding.json",
        subjects: &["iam_user:deleted-user"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "access-analyzer/unused-access-key.json",
        subjects: &["iam_user:legacy-ftp-sync"],
        actions: &[
            "deactivate_dormant_access_keys iam_user:legacy-ftp-sync",
            "tag_principal iam_user:legacy-ftp-sync",
        ],
        skipped: 0,
    },
    Case {
        file: "access-analyzer/unused-password.json",
        subjects: &["iam_user:j.ortega"],
        actions: &["notify iam_user:j.ortega"],
        skipped: 0,
    },
    Case {
        file: "access-analyzer/unused-permission.json",
        subjects: &["iam_role:analytics-readonly"],
        actions: &["notify iam_role:analytics-readonly"],
        skipped: 0,
    },
    Case {
        file: "access-analyzer/unused-role.json",
        subjects: &["iam_role:poc-lambda-2023"],
        actions: &["notify iam_role:poc-lambda-2023"],
        skipped: 0,
    },
    Case {
        file: "defender/graph-alert-mdi-compromised-user.json",
        subjects: &["entra_user:david.chen@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:david.chen@contoso.com",
            "confirm_user_compromised entra_user:david.chen@contoso.com",
            "revoke_entra_sessions entra_user:david.chen@contoso.com",
            "update_defender_alert defender_alert:da638362889287051192_1877443251",
        ],
        skipped: 0,
    },
    Case {
        file: "defender/graph-alerts-list-oauth-app.json",
        subjects: &[
            "service_principal:legacy-crm-connector",
            "service_principal:legacy-crm-connector",
        ],
        actions: &[
            "disable_service_principal service_principal:legacy-crm-connector",
            "update_defender_alert defender_alert:da638362889287051192_1877443253",
        ],
        skipped: 1,
    },
    Case {
        file: "defender/xdr-evidence-without-alertinfo.json",
        subjects: &["entra_user:rosa.garcia@contoso.com"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "defender/xdr-mdi-onprem-account.json",
        subjects: &["on_premises_account:svc-sqlbackup"],
        actions: &[
            "notify on_premises_account:svc-sqlbackup",
            "update_defender_alert defender_alert:ab1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
        ],
        skipped: 0,
    },
    Case {
        file: "defender/xdr-mdi-pass-the-ticket.json",
        subjects: &["entra_user:rosa.garcia@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:rosa.garcia@contoso.com",
            "confirm_user_compromised entra_user:rosa.garcia@contoso.com",
            "revoke_entra_sessions entra_user:rosa.garcia@contoso.com",
            "update_defender_alert defender_alert:aa8b2d41c6-0f3e-4b1c-9a7d-5e6f7a8b9c0d",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/diagnostic-records-mixed.json",
        subjects: &[
            "entra_user:kai.tanaka@contoso.com",
            "entra_user:ines.duarte@contoso.com",
        ],
        // One unconfirmed anonymized-IP detection: sessions revoked and a human asked.
        actions: &[
            "revoke_entra_sessions entra_user:kai.tanaka@contoso.com",
            "notify entra_user:kai.tanaka@contoso.com",
        ],
        skipped: 1,
    },
    Case {
        file: "entra/risk-detection-leaked-credentials.json",
        subjects: &["entra_user:maya.singh@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:maya.singh@contoso.com",
            "confirm_user_compromised entra_user:maya.singh@contoso.com",
            "revoke_entra_sessions entra_user:maya.singh@contoso.com",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/risky-user-confirmed-compromised.json",
        subjects: &["entra_user:omar.haddad@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:omar.haddad@contoso.com",
            "confirm_user_compromised entra_user:omar.haddad@contoso.com",
            "revoke_entra_sessions entra_user:omar.haddad@contoso.com",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/risky-users-list-dismissed.json",
        subjects: &["entra_user:lena.berg@contoso.com"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "functions-host/eventhub-batch-triple-encoded.json",
        subjects: &[
            "entra_user:rosa.garcia@contoso.com",
            "entra_user:ines.duarte@contoso.com",
        ],
        actions: &[
            "disable_entra_user entra_user:rosa.garcia@contoso.com",
            "confirm_user_compromised entra_user:rosa.garcia@contoso.com",
            "revoke_entra_sessions entra_user:rosa.garcia@contoso.com",
            "update_defender_alert defender_alert:aa8b2d41c6-0f3e-4b1c-9a7d-5e6f7a8b9c0d",
        ],
        skipped: 1,
    },
    Case {
        file: "functions-host/http-graph-alert-query-string.json",
        subjects: &["entra_user:jordan.white@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:jordan.white@contoso.com",
            "confirm_user_compromised entra_user:jordan.white@contoso.com",
            "revoke_entra_sessions entra_user:jordan.white@contoso.com",
            "update_defender_alert defender_alert:da638362889287051192_1877443299",
        ],
        skipped: 0,
    },
    Case {
        file: "functions-host/http-runbook-query-object.json",
        subjects: &["entra_user:3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45"],
        actions: &["revoke_entra_sessions entra_user:3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45"],
        skipped: 0,
    },
    Case {
        file: "guardduty/archived-finding.json",
        subjects: &["access_key:AKIAZ4XQ7PLMQ9W8E7R6"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "guardduty/attack-sequence-compromised-credentials.json",
        subjects: &[
            "access_key:AKIAZ4XQ7PLMRPT5Y6U7",
            "role_session:etl-runner/etl-session-2211",
        ],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMRPT5Y6U7",
            "revoke_user_sessions iam_user:svc-reporting",
            "revoke_role_session role_session:etl-runner/etl-session-2211",
            "tag_principal iam_user:svc-reporting",
            "tag_principal iam_role:etl-runner",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/breakglass-user-protected.json",
        subjects: &["access_key:AKIAZ4XQ7PLMBG1A2S3D"],
        actions: &["notify finding:c1e3a5b7d9f14bc2d0f8b6d4f2b0d8ad"],
        skipped: 1,
    },
    Case {
        file: "guardduty/console-login-no-key.json",
        subjects: &["iam_user:finance-mwright"],
        actions: &[
            "revoke_user_sessions iam_user:finance-mwright",
            "tag_principal iam_user:finance-mwright",
            "notify iam_user:finance-mwright",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/ec2-backdoor-no-identity.json",
        subjects: &[],
        actions: &[],
        skipped: 0,
    },
    Case {
        file: "guardduty/federated-user-anomalous.json",
        subjects: &["federated_user:partner-sync"],
        actions: &["notify federated_user:partner-sync"],
        skipped: 0,
    },
    Case {
        file: "guardduty/iamuser-malicious-ip-temporary-key.json",
        subjects: &["access_key:ASIAZ4XQ7PLMN5B6V7C8"],
        actions: &[
            "revoke_user_sessions iam_user:data-analyst-jlee",
            "tag_principal iam_user:data-analyst-jlee",
            "notify iam_user:data-analyst-jlee",
        ],
        skipped: 1,
    },
    Case {
        file: "guardduty/iamuser-tor-caller-akia.json",
        subjects: &["access_key:AKIAZ4XQ7PLMCJ3N8R2T"],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMCJ3N8R2T",
            "revoke_user_sessions iam_user:ci-deployer",
            "tag_principal iam_user:ci-deployer",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/identity-center-session.json",
        subjects: &["identity_center_session:AWSReservedSSO_AdministratorAccess_6f1e2d3c4b5a6978"],
        actions: &[
            "notify identity_center_session:AWSReservedSSO_AdministratorAccess_6f1e2d3c4b5a6978",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/instance-credential-exfiltration-inside.json",
        subjects: &["role_session:batch-worker/i-04f1d2c3b4a596877"],
        actions: &[
            "revoke_role_session role_session:batch-worker/i-04f1d2c3b4a596877",
            "tag_principal iam_role:batch-worker",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/instance-credential-exfiltration-outside.json",
        subjects: &["role_session:web-checkout-ec2/i-0a7c3e9f1b2d4e6f8"],
        actions: &[
            "revoke_role_session role_session:web-checkout-ec2/i-0a7c3e9f1b2d4e6f8",
            "tag_principal iam_role:web-checkout-ec2",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/recon-malicious-ip.json",
        subjects: &["access_key:AKIAV7KQ2MPXR3C0N4XY"],
        actions: &["notify access_key:AKIAV7KQ2MPXR3C0N4XY"],
        skipped: 0,
    },
    Case {
        file: "guardduty/root-credential-usage.json",
        subjects: &["root:"],
        actions: &["notify root:"],
        skipped: 0,
    },
    Case {
        file: "guardduty/sample-finding.json",
        subjects: &["iam_user:GeneratedFindingUserName"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "guardduty/service-linked-role-session.json",
        subjects: &["role_session:AWSServiceRoleForECS/ecs-service-scheduler"],
        actions: &["notify finding:b0d2f4a6c8e04ab1c9e7a5c3e1a9c7fc"],
        skipped: 1,
    },
    Case {
        file: "guardduty/stealth-cloudtrail-disabled-low.json",
        subjects: &["role_session:jenkins-deploy/jenkins-deploy-8812"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "runbook/contain-entra-user.json",
        subjects: &["entra_user:nadia.petrova@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:nadia.petrova@contoso.com",
            "confirm_user_compromised entra_user:nadia.petrova@contoso.com",
            "revoke_entra_sessions entra_user:nadia.petrova@contoso.com",
        ],
        skipped: 0,
    },
    Case {
        // Without aws.identity_center.account, quell cannot reach Identity Center: a human.
        file: "runbook/contain-identity-center-user.json",
        subjects: &["identity_center_user:marco.rossi@example.com"],
        actions: &["notify identity_center_user:marco.rossi@example.com"],
        skipped: 0,
    },
    Case {
        file: "runbook/disable-access-key.json",
        subjects: &["access_key:AKIAZ4XQ7PLMGIST0001"],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMGIST0001",
            "tag_principal iam_user:ci-deployer",
        ],
        skipped: 0,
    },
    Case {
        file: "runbook/disable-dormant-keys.json",
        subjects: &["iam_user:old-jenkins"],
        actions: &[
            "deactivate_dormant_access_keys iam_user:old-jenkins",
            "tag_principal iam_user:old-jenkins",
        ],
        skipped: 0,
    },
    Case {
        file: "runbook/disable-service-principal-secret.json",
        subjects: &["service_principal:5e4d3c2b-1a09-4f8e-b7d6-c5b4a3f2e1d0"],
        actions: &[
            "remove_service_principal_credential service_principal:5e4d3c2b-1a09-4f8e-b7d6-c5b4a3f2e1d0",
        ],
        skipped: 0,
    },
    Case {
        file: "runbook/quarantine-iam-user.json",
        subjects: &["iam_user:contractor-apatel"],
        actions: &[
            "quarantine_user iam_user:contractor-apatel",
            "tag_principal iam_user:contractor-apatel",
        ],
        skipped: 0,
    },
    Case {
        file: "runbook/quarantine-managed-identity.json",
        subjects: &["managed_identity:a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"],
        actions: &["remove_role_assignments managed_identity:a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"],
        skipped: 0,
    },
    Case {
        file: "runbook/revoke-role-session.json",
        subjects: &["role_session:web-checkout-ec2/i-0a7c3e9f1b2d4e6f8"],
        actions: &[
            "revoke_role_session role_session:web-checkout-ec2/i-0a7c3e9f1b2d4e6f8",
            "tag_principal iam_role:web-checkout-ec2",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/custom-action-batch-two-findings.json",
        subjects: &[
            "access_key:AKIAV7KQ2MPXTOR9K8J7",
            "role_session:payments-api/payments-api-task-7d9c",
        ],
        actions: &[
            "deactivate_access_key access_key:AKIAV7KQ2MPXTOR9K8J7",
            "revoke_user_sessions iam_user:build-agent",
            "tag_principal iam_user:build-agent",
            "notify role_session:payments-api/payments-api-task-7d9c",
            "update_securityhub_finding securityhub_finding:2bd4f6a8c0e25a3f9d7b5f3d1b9f7d52",
            "update_securityhub_finding securityhub_finding:3ce5a7b9d1f36b4a8e6c4a2e0c8a6e63",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/forged-custom-product-prod-role.json",
        subjects: &["iam_role:payments"],
        actions: &["notify securityhub_finding:sandbox-import-4f1e9c2a"],
        skipped: 1,
    },
    Case {
        file: "securityhub/imported-aws-product-resource-in-other-account.json",
        subjects: &["access_key:AKIAZ4XQ7PLMX9C8B7A6"],
        actions: &["notify securityhub_finding:7e5c3a1f9d7b5e3c1a9f7d5b3e1c9a7f"],
        skipped: 1,
    },
    Case {
        file: "securityhub/imported-aggregator-member-account.json",
        subjects: &["iam_user:temp-migration"],
        actions: &[
            "deactivate_dormant_access_keys iam_user:temp-migration",
            "tag_principal iam_user:temp-migration",
            "update_securityhub_finding securityhub_finding:7f3e2d1c-0b9a-4877-9a65-4c3b2a1f0e2d",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/imported-guardduty-access-key.json",
        subjects: &["access_key:AKIAZ4XQ7PLMDV4R5T6Y"],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMDV4R5T6Y",
            "revoke_user_sessions iam_user:devops-tkim",
            "tag_principal iam_user:devops-tkim",
            "update_securityhub_finding securityhub_finding:1ac3e5a7b9d14f2e8c6a4e2c0a8e6c41",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/imported-iam3-key-rotation.json",
        subjects: &["iam_user:reporting-bot"],
        actions: &[
            "notify iam_user:reporting-bot",
            "update_securityhub_finding securityhub_finding:7f3e2d1c-0b9a-4877-9a65-4c3b2a1f0e3d",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/imported-iam6-root-mfa-account.json",
        subjects: &[],
        actions: &[
            "notify securityhub_finding:7f3e2d1c-0b9a-4877-9a65-4c3b2a1f0e6d",
            "update_securityhub_finding securityhub_finding:7f3e2d1c-0b9a-4877-9a65-4c3b2a1f0e6d",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/imported-iam8-unused-credentials.json",
        subjects: &["iam_user:old-etl-loader"],
        actions: &[
            "deactivate_dormant_access_keys iam_user:old-etl-loader",
            "tag_principal iam_user:old-etl-loader",
            "update_securityhub_finding securityhub_finding:7f3e2d1c-0b9a-4877-9a65-4c3b2a1f0e8d",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/imported-passed-control.json",
        subjects: &["iam_user:active-dev"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "securityhub/imported-resolved.json",
        subjects: &["iam_user:retired-contractor"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "guardduty/s3-exfiltration-local-user.json",
        subjects: &["access_key:AKIAZ4XQ7PLMREP0RT55"],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMREP0RT55",
            "revoke_user_sessions iam_user:reporting-etl",
            "tag_principal iam_user:reporting-etl",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/s3-impact-delete-role-session.json",
        subjects: &["role_session:backup-janitor/backup-janitor-1732"],
        actions: &[
            "revoke_role_session role_session:backup-janitor/backup-janitor-1732",
            "tag_principal iam_role:backup-janitor",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/s3-foreign-account-caller.json",
        subjects: &[],
        actions: &["notify finding:9c3e7a1f5b4d6e8a0c2e4a6c8e0a2c75"],
        skipped: 0,
    },
    Case {
        file: "guardduty/iamuser-unknown-type.json",
        subjects: &["access_key:AKIAZ4XQ7PLMCJ3N8R2T"],
        actions: &["notify access_key:AKIAZ4XQ7PLMCJ3N8R2T"],
        skipped: 0,
    },
    Case {
        file: "guardduty/iamuser-high-no-usable-actor.json",
        subjects: &[],
        actions: &["notify finding:2e6c0a4b8d7f9b1d3f5b7d9f1b3d5fa8"],
        skipped: 0,
    },
    Case {
        file: "defender/graph-alert-false-positive.json",
        subjects: &["entra_user:david.chen@contoso.com"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "defender/graph-alert-security-testing.json",
        subjects: &["entra_user:david.chen@contoso.com"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "defender/graph-alert-unknown-service-source.json",
        subjects: &["entra_user:david.chen@contoso.com"],
        actions: &["notify defender_alert:da638362889287051192_1877443262"],
        skipped: 1,
    },
    Case {
        file: "defender/graph-alert-pipeline-variants.json",
        subjects: &["entra_user:david.chen@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:david.chen@contoso.com",
            "confirm_user_compromised entra_user:david.chen@contoso.com",
            "revoke_entra_sessions entra_user:david.chen@contoso.com",
            "update_defender_alert defender_alert:da638362889287051192_1877443263",
        ],
        skipped: 0,
    },
    Case {
        file: "defender/xdr-impacted-and-related-users.json",
        subjects: &["entra_user:rosa.garcia@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:rosa.garcia@contoso.com",
            "confirm_user_compromised entra_user:rosa.garcia@contoso.com",
            "revoke_entra_sessions entra_user:rosa.garcia@contoso.com",
            "update_defender_alert defender_alert:ab7c3e52d7-1a4f-4c2d-8b8e-6f7a8b9c0d1e",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/risk-detection-unfamiliar-features.json",
        subjects: &["entra_user:maya.singh@contoso.com"],
        actions: &[
            "revoke_entra_sessions entra_user:maya.singh@contoso.com",
            "notify entra_user:maya.singh@contoso.com",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/risk-detection-bad-user-id-valid-upn.json",
        subjects: &["entra_user:maya.singh@contoso.com"],
        actions: &[
            "disable_entra_user entra_user:maya.singh@contoso.com",
            "confirm_user_compromised entra_user:maya.singh@contoso.com",
            "revoke_entra_sessions entra_user:maya.singh@contoso.com",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/risky-user-unknown-state.json",
        subjects: &["entra_user:leo.martin@contoso.com"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "securityhub/imported-arn-and-details-disagree.json",
        subjects: &[],
        actions: &["notify securityhub_finding:2c4e6a8c-0e2a-4c6e-8a0c-2e4a6c8e0a2c"],
        skipped: 0,
    },
    Case {
        file: "securityhub/imported-pci-iam7-no-region.json",
        subjects: &["iam_user:pos-terminal-sync"],
        actions: &[
            "deactivate_dormant_access_keys iam_user:pos-terminal-sync",
            "tag_principal iam_user:pos-terminal-sync",
            "update_securityhub_finding securityhub_finding:3d5f7b9d-1f3b-4d5f-9b1d-3f5b7d9f1b3d",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/sp-risk-detection-leaked-credentials.json",
        subjects: &[
            "service_principal:invoice-export-daemon",
            "service_principal:invoice-export-daemon",
        ],
        actions: &[
            "disable_service_principal service_principal:invoice-export-daemon",
            "remove_service_principal_credential service_principal:invoice-export-daemon",
            "remove_service_principal_credential service_principal:invoice-export-daemon",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/risky-service-principals-list.json",
        subjects: &[
            "service_principal:crm-sync-connector",
            "service_principal:legacy-report-runner",
        ],
        actions: &["disable_service_principal service_principal:crm-sync-connector"],
        skipped: 1,
    },
    Case {
        file: "entra/diagnostic-service-principal-risk.json",
        subjects: &[
            "service_principal:backup-orchestrator",
            "service_principal:backup-orchestrator",
        ],
        actions: &["disable_service_principal service_principal:backup-orchestrator"],
        skipped: 0,
    },
    Case {
        file: "securityhub/v2-guardduty-detection-access-key.json",
        subjects: &["access_key:AKIAZ4XQ7PLMB1LL1NG7"],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMB1LL1NG7",
            "revoke_user_sessions iam_user:svc-billing",
            "tag_principal iam_user:svc-billing",
            "update_securityhub_finding securityhub_ocsf_finding:5bd9f3a71c2e4b6d8f0a2c4e6a8c0e35",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/v2-compliance-iam8-user.json",
        subjects: &["iam_user:j.okafor"],
        actions: &[
            "deactivate_dormant_access_keys iam_user:j.okafor",
            "tag_principal iam_user:j.okafor",
            "update_securityhub_finding securityhub_ocsf_finding:8a0c2e4a-6c8e-4a0c-8e2a-4c6e8a0c2e4a",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/v2-forged-custom-product.json",
        subjects: &["access_key:AKIAZ4XQ7PLMB1LL1NG7"],
        actions: &["notify securityhub_ocsf_finding:sandbox-v2-import-77"],
        skipped: 1,
    },
    Case {
        file: "guardduty/attack-sequence-without-actors.json",
        subjects: &["access_key:AKIAZ4XQ7PLMDATA8K2L"],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMDATA8K2L",
            "revoke_user_sessions iam_user:data-eng-batch",
            "tag_principal iam_user:data-eng-batch",
        ],
        skipped: 0,
    },
    Case {
        file: "guardduty/attack-sequence-no-usable-identity.json",
        subjects: &[],
        actions: &["notify finding:2b4d6f8a0c2e4a6c8e0a2c4e6a8c0e02"],
        skipped: 0,
    },
    Case {
        file: "guardduty/beta-stage-prefix-s3-exfiltration.json",
        subjects: &["access_key:AKIAZ4XQ7PLMREP0RT55"],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMREP0RT55",
            "revoke_user_sessions iam_user:reporting-etl",
            "tag_principal iam_user:reporting-etl",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/v2-guardduty-identity-in-resource-data.json",
        subjects: &[
            "access_key:AKIAZ4XQ7PLMCIDEPLOY",
            "role_session:nightly-report/i-0f3c9a71b2d4e6f80",
        ],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMCIDEPLOY",
            "revoke_user_sessions iam_user:ci-deployer",
            "revoke_role_session role_session:nightly-report/i-0f3c9a71b2d4e6f80",
            "tag_principal iam_user:ci-deployer",
            "tag_principal iam_role:nightly-report",
            "update_securityhub_finding securityhub_ocsf_finding:7d9f1b3d5f7b4d9f1b3d5f7b9d1f3b57",
            "update_securityhub_finding securityhub_ocsf_finding:8e0a2c4e6a8c4e0a2c4e6a8c0e2a4c68",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/v2-compliance-iam8-user-id-in-uid.json",
        subjects: &["iam_user:m.fischer"],
        actions: &[
            "deactivate_dormant_access_keys iam_user:m.fischer",
            "tag_principal iam_user:m.fischer",
            "update_securityhub_finding securityhub_ocsf_finding:2d4f6b8d-0f2b-4d6f-8b0d-2f4b6d8f0b2d",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/v2-status-and-severity-words.json",
        subjects: &[
            "access_key:AKIAZ4XQ7PLMB1LL1NG7",
            "access_key:AKIAZ4XQ7PLMLEDGER01",
        ],
        actions: &[
            "deactivate_access_key access_key:AKIAZ4XQ7PLMB1LL1NG7",
            "revoke_user_sessions iam_user:svc-billing",
            "tag_principal iam_user:svc-billing",
            "update_securityhub_finding securityhub_ocsf_finding:9f1b3d5f7b9d4f1b3d5f7b9d1f3b5d79",
        ],
        skipped: 1,
    },
    Case {
        file: "entra/risky-user-history-remediated.json",
        subjects: &["entra_user:tomas.herrera@contoso.com"],
        actions: &[],
        skipped: 1,
    },
    Case {
        file: "entra/graph-value-single-object.json",
        subjects: &["entra_user:ingrid.svensson@contoso.com"],
        actions: &[
            "revoke_entra_sessions entra_user:ingrid.svensson@contoso.com",
            "notify entra_user:ingrid.svensson@contoso.com",
        ],
        skipped: 0,
    },
    Case {
        file: "entra/risk-detections-empty-page.json",
        subjects: &[],
        actions: &[],
        skipped: 0,
    },
    Case {
        file: "entra/risk-detection-unusable-ids.json",
        subjects: &[],
        actions: &[
            "notify finding:c0ffee00a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c",
        ],
        skipped: 0,
    },
    Case {
        file: "securityhub/v2-empty-page.json",
        subjects: &[],
        actions: &[],
        skipped: 0,
    },
    Case {
        file: "defender/graph-alert-custom-detection.json",
        subjects: &["entra_user:david.chen@contoso.com"],
        actions: &["notify defender_alert:da638362889287051192_1877443301"],
        skipped: 1,
    },
];

fn plan_json(file: &str) -> Value {
    let plan = plan_input(&event(file), &Policy::default(), &Context::default())
        .unwrap_or_else(|e| panic!("{file}: rejected: {e}"));
    serde_json::to_value(&plan).unwrap()
}

#[test]
fn every_event_plans_exactly_as_expected() {
    let mut failures = Vec::new();
    for case in CASES {
        let plan = plan_json(case.file);
        let subjects: Vec<String> = plan["findings"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["subjects"].as_array().unwrap().iter().map(label))
            .collect();
        let actions: Vec<String> = plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!("{} {}", a["kind"].as_str().unwrap(), label(&a["target"])))
            .collect();
        let skipped = plan["skipped"].as_array().unwrap().len();
        if subjects != case.subjects || actions != case.actions || skipped != case.skipped {
            failures.push(format!(
                "{}:\n  subjects {subjects:?}\n  expected {:?}\n  actions  {actions:?}\n  expected {:?}\n  skipped {skipped} (expected {})",
                case.file, case.subjects, case.actions, case.skipped
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_event_file_has_a_case_and_there_are_enough() {
    let files = json_files(&root().join("events"));
    let cased: Vec<&str> = CASES.iter().map(|c| c.file).collect();
    for f in &files {
        assert!(
            cased.contains(&f.as_str()),
            "events/{f} has no expectation in tests/events.rs"
        );
    }
    assert!(
        files.len() >= 30,
        "at least 30 events, found {}",
        files.len()
    );
}

#[test]
fn the_json_schema_has_the_documented_fields() {
    let plan = plan_json("securityhub/imported-guardduty-access-key.json");
    assert_eq!(plan["mode"], "dry-run");
    let f = &plan["findings"][0];
    for key in [
        "source", "id", "type", "severity", "subjects", "family", "status",
    ] {
        assert!(!f[key].is_null(), "finding.{key} missing");
    }
    assert_eq!(f["source"], "securityhub");
    assert_eq!(f["severity"]["label"], "high");
    assert_eq!(f["severity"]["score"], 7.0);
    let s = &f["subjects"][0];
    assert_eq!(s["cloud"], "aws");
    assert_eq!(s["kind"], "access_key");
    assert_eq!(s["account"], "111122223333");
    assert_eq!(s["access_key_id"], "AKIAZ4XQ7PLMDV4R5T6Y");
    let a = &plan["actions"][0];
    assert_eq!(a["kind"], "deactivate_access_key");
    assert_eq!(a["cloud"], "aws");
    assert_eq!(a["target"]["access_key_id"], "AKIAZ4XQ7PLMDV4R5T6Y");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("deactivate exactly this access key")
    );
    assert!(plan["skipped"].is_array());

    let azure = plan_json("entra/risk-detection-leaked-credentials.json");
    let s = &azure["findings"][0]["subjects"][0];
    assert_eq!(s["cloud"], "azure");
    assert_eq!(s["id"], "2d4f6a8c-0e2b-4d6f-8a0c-2e4b6d8f0a1c");
    assert_eq!(s["name"], "maya.singh@contoso.com");
}

#[test]
fn aggregated_findings_act_in_the_owning_account_not_the_envelope_account() {
    let plan = plan_json("securityhub/imported-aggregator-member-account.json");
    // The envelope account is 999988887777 (the Security Hub administrator).
    for a in plan["actions"].as_array().unwrap() {
        let acct = a["target"]["account"].as_str().unwrap();
        assert_eq!(acct, "444455556666", "{a}");
    }
}

#[test]
fn temporary_keys_are_never_deactivated() {
    for case in CASES {
        let plan = plan_json(case.file);
        for a in plan["actions"].as_array().unwrap() {
            if a["kind"] == "deactivate_access_key" {
                let key = a["target"]["access_key_id"].as_str().unwrap();
                assert!(key.starts_with("AKIA"), "{}: deactivates {key}", case.file);
            }
        }
    }
}

#[test]
fn the_blast_radius_cap_replaces_a_large_plan_with_one_notify() {
    // The attack sequence plans 5 actions, 3 of them containment (a key, a user's sessions, a
    // role session). A cap of 2 withholds them all.
    let mut policy = Policy {
        max_actions: 2,
        ..Policy::default()
    };
    let plan = plan_input(
        &event("guardduty/attack-sequence-compromised-credentials.json"),
        &policy,
        &Context::default(),
    )
    .unwrap();
    let kinds: Vec<&str> = plan.actions.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["notify"]);
    assert!(plan.actions[0].reason.contains(
        "blast-radius cap: the plan would take 3 containment actions, over max_actions = 2"
    ));
    let withheld: Vec<&str> = plan.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(withheld.len(), 5, "{withheld:?}");
    assert!(
        withheld
            .iter()
            .all(|r| r.ends_with("withheld by the blast-radius cap"))
    );

    // At the cap exactly, nothing is withheld.
    policy.max_actions = 3;
    let plan = plan_input(
        &event("guardduty/attack-sequence-compromised-credentials.json"),
        &policy,
        &Context::default(),
    )
    .unwrap();
    assert_eq!(plan.actions.len(), 5);
}

#[test]
fn forged_and_cross_account_security_hub_findings_contain_no_one_and_say_why() {
    let forged = plan_json("securityhub/forged-custom-product-prod-role.json");
    let why = forged["actions"][0]["reason"].as_str().unwrap();
    assert!(why.contains("untrusted Security Hub product"), "{why}");
    assert!(
        forged["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("aws.trusted_products")
    );
    let cross = plan_json("securityhub/imported-aws-product-resource-in-other-account.json");
    let why = cross["actions"][0]["reason"].as_str().unwrap();
    assert!(why.contains("account 444455556666"), "{why}");

    // The same forged finding pressed through quell's custom action: still no one contained.
    let mut v: Value =
        serde_json::from_slice(&event("securityhub/forged-custom-product-prod-role.json")).unwrap();
    v["detail-type"] = "Security Hub Findings - Custom Action".into();
    v["detail"]["actionName"] = "QuellContain".into();
    let plan = plan_input(
        v.to_string().as_bytes(),
        &Policy::default(),
        &Context::default(),
    )
    .unwrap();
    assert!(
        plan.actions
            .iter()
            .all(|a| a.kind == quell_core::ActionKind::Notify)
    );

    // A product the operator lists as trusted contains as usual.
    let mut policy = Policy::default();
    policy.aws.trusted_products = vec![
        quell_core::policy::Pattern::new(
            "arn:aws:securityhub:*:777788889999:product/777788889999/default",
        )
        .unwrap(),
    ];
    let mut same_account = v.clone();
    same_account["detail"]["findings"][0]["Resources"][0]["Id"] =
        "arn:aws:iam::777788889999:role/payments".into();
    let plan = plan_input(
        same_account.to_string().as_bytes(),
        &policy,
        &Context::default(),
    )
    .unwrap();
    assert!(
        plan.actions
            .iter()
            .any(|a| a.kind == quell_core::ActionKind::RevokeRoleSessions),
        "{:?}",
        plan.actions
    );
}

#[test]
fn each_reading_rule_says_why() {
    let reason =
        |plan: &Value, i: usize| plan["actions"][i]["reason"].as_str().unwrap().to_string();
    let skipped = |plan: &Value| plan["skipped"][0]["reason"].as_str().unwrap().to_string();

    // GuardDuty: an unknown type is escalated, never contained.
    let p = plan_json("guardduty/iamuser-unknown-type.json");
    assert_eq!(p["findings"][0]["family"], "unrecognized");
    assert!(
        reason(&p, 0).contains("human review of unrecognized findings"),
        "{}",
        reason(&p, 0)
    );
    // A foreign caller is named; no one here is contained.
    let p = plan_json("guardduty/s3-foreign-account-caller.json");
    assert!(reason(&p, 0).contains("999988887777"), "{}", reason(&p, 0));
    // A high-severity compromise with no usable actor is never silent.
    let p = plan_json("guardduty/iamuser-high-no-usable-actor.json");
    assert!(reason(&p, 0).contains("a human must find and contain the actor"));

    // Microsoft: benign classifications and context evidence are left alone.
    let p = plan_json("defender/graph-alert-false-positive.json");
    assert!(skipped(&p).contains("false positive or benign"));
    let p = plan_json("defender/xdr-impacted-and-related-users.json");
    let notes = p["findings"][0]["notes"].to_string();
    assert!(
        notes.contains("it.admin2@contoso.com appears only as context"),
        "{notes}"
    );
    let p = plan_json("defender/graph-alert-pipeline-variants.json");
    assert!(
        p["findings"][0]["notes"]
            .to_string()
            .contains("is not a tenant id")
    );
    assert_eq!(p["findings"][0]["severity"]["label"], "high");

    // Entra: one unconfirmed detection revokes and asks; a bad id falls back to the UPN.
    let p = plan_json("entra/risk-detection-unfamiliar-features.json");
    assert!(reason(&p, 1).contains("one unconfirmed risk detection"));
    let p = plan_json("entra/risk-detection-bad-user-id-valid-upn.json");
    assert!(
        p["findings"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("taken by UPN")
    );
    assert_eq!(
        p["findings"][0]["status"], "active",
        "AtRisk matches without case"
    );
    let p = plan_json("entra/risky-user-unknown-state.json");
    assert_eq!(p["findings"][0]["status"], "unknown");

    // Security Hub: the ARN is the identity of record; both names reach the human.
    let p = plan_json("securityhub/imported-arn-and-details-disagree.json");
    let why = reason(&p, 0);
    assert!(
        why.contains("ops-automation") && why.contains("finance-admin"),
        "{why}"
    );
    // A standard-specific control is the consolidated one; the region comes from the ARNs.
    let p = plan_json("securityhub/imported-pci-iam7-no-region.json");
    assert_eq!(p["findings"][0]["type"], "IAM.8");
    assert_eq!(p["findings"][0]["record"]["region"], "eu-central-1");
}

#[test]
fn errors_name_the_field_that_failed() {
    let mut v: Value =
        serde_json::from_slice(&event("securityhub/imported-iam8-unused-credentials.json"))
            .unwrap();
    v["detail"]["findings"][0]["Resources"][0]["Details"]["AwsIamUser"]["UserName"] =
        "old etl loader".into();
    v["detail"]["findings"][0]["Resources"][0]["Id"] =
        "arn:aws:iam::111122223333:user/old etl loader".into();
    let e = plan_input(
        v.to_string().as_bytes(),
        &Policy::default(),
        &Context::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/Details/AwsIamUser/UserName"), "{e}");
}

/// Real feeds' shapes degrade to what can be read, with a reason, never a rejection: an older
/// risk state is ignored for the newest, an empty page is an empty plan, an unreadable
/// resource or an attack sequence with no usable identity is noted and escalated.
#[test]
fn real_feed_shapes_degrade_to_what_can_be_read() {
    let history = plan_json("entra/risky-user-history-remediated.json");
    let ignored: Vec<&str> = history["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reason"].as_str().unwrap())
        .collect();
    assert_eq!(ignored.len(), 2, "{ignored:?}");
    assert!(
        ignored
            .iter()
            .all(|r| r.contains("quell acts on the newest"))
    );
    let empty = plan_json("entra/risk-detections-empty-page.json");
    assert!(
        empty["ignored"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("empty page")
    );
    let unusable = plan_json("entra/risk-detection-unusable-ids.json");
    assert!(
        unusable["actions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("quell does not guess")
    );
    let seq = plan_json("guardduty/attack-sequence-no-usable-identity.json");
    assert!(
        seq["actions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("attack sequence seq-bb71c9e3 names no identity")
    );
    let iam8 = plan_json("securityhub/v2-compliance-iam8-user-id-in-uid.json");
    assert!(
        iam8["findings"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("AIDAZ4XQ7PLMUNKNOWN34")
    );
    // The stage prefix does not change the catalog's answer.
    let beta = plan_json("guardduty/beta-stage-prefix-s3-exfiltration.json");
    let plain = plan_json("guardduty/s3-exfiltration-local-user.json");
    assert_eq!(
        beta["findings"][0]["family"],
        plain["findings"][0]["family"]
    );
}
