//! Conformance over the public corpus of real sample events (`QUELL_CORPUS`, which `.ci/run`
//! sets to `../shared/corpus`). Every file either plans or is rejected with a clear reason, and
//! each file's outcome is pinned: a normalizer change that alters one fails here.

use quell_core::{Context, Policy, plan_input};
use quell_tests::{json_files, root};

enum Outcome {
    Planned {
        findings: usize,
        actions: usize,
        ignored: usize,
    },
    /// The error message contains this text.
    Rejected(&'static str),
}

const EXPECTED: &[(&str, Outcome)] = &[
    (
        "access_analyzer/docs_external-access_Access-Analyzer-Finding_s3.json",
        Outcome::Planned {
            findings: 0,
            actions: 0,
            ignored: 1,
        },
    ),
    (
        "access_analyzer/docs_internal-access_InternalAccess_role.json",
        Outcome::Planned {
            findings: 0,
            actions: 0,
            ignored: 1,
        },
    ),
    (
        "access_analyzer/docs_unused-access_UnusedIAMRole_error-INTERNAL_ERROR.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "access_analyzer/docs_unused-access_UnusedPermission_role.json",
        Outcome::Planned {
            findings: 1,
            actions: 1,
            ignored: 0,
        },
    ),
    (
        "azure_functions/cloudevents_spec_B234_xml-data_unsetextension-null.json",
        Outcome::Rejected("/: unrecognised input"),
    ),
    (
        "azure_functions/cloudevents_spec_C234_json-object-data.json",
        Outcome::Rejected("/: unrecognised input"),
    ),
    (
        "azure_functions/cloudevents_spec_D234_string-data.json",
        Outcome::Rejected("/: unrecognised input"),
    ),
    (
        "azure_functions/customhandler_request_httpTrigger_docs.json",
        Outcome::Rejected("/Data/req/Body: unrecognised input"),
    ),
    (
        "azure_functions/customhandler_request_queueTrigger_docs.json",
        Outcome::Rejected("/Data/myQueueItem: a string that is not a JSON event"),
    ),
    (
        "azure_functions/customhandler_response_generic_docs.json",
        Outcome::Rejected("/: unrecognised input"),
    ),
    (
        "azure_functions/customhandler_response_order_nulls_docs.json",
        Outcome::Rejected("/: unrecognised input"),
    ),
    (
        "azure_functions/eventgrid_schema_BlobCreated_array_docs2017.json",
        Outcome::Rejected("/0: unrecognised input"),
    ),
    (
        "azure_functions/eventgrid_schema_customtopic_array_docs2017.json",
        Outcome::Rejected("/0: unrecognised input"),
    ),
    (
        "defender/entra_diag_RiskyUsers_atRisk_medium.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/entra_diag_RiskyUsers_isDeleted_bad-timestamp.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/entra_diag_UserRiskEvents_anonymizedIPAddress_high.json",
        Outcome::Planned {
            findings: 1,
            actions: 2,
            ignored: 0,
        },
    ),
    (
        "defender/entra_diag_UserRiskEvents_passwordSpray_bad-timestamp.json",
        Outcome::Planned {
            findings: 1,
            actions: 2,
            ignored: 0,
        },
    ),
    (
        "defender/graph_alerts_v2_get_MDE_processEvidence-SYSTEM.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/graph_riskDetection_get_docs_invalid-ip_value-wrapper.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/graph_riskDetection_single_remediated.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/graph_riskDetections_list_anonymizedIPAddress_atRisk.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/graph_riskyUsers_list_dismissed.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/sentinel_api_SecurityAlert_entity_ASC.json",
        Outcome::Rejected("/: unrecognised input"),
    ),
    (
        "defender/xdr_eventhub_record_AlertEvidence_File.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "defender/xdr_eventhub_record_AlertInfo_MDE.json",
        Outcome::Planned {
            findings: 1,
            actions: 2,
            ignored: 0,
        },
    ),
    (
        "guardduty/cc_envelope_Backdoor-EC2-CCActivity.B-DNS_instance.json",
        Outcome::Planned {
            findings: 0,
            actions: 0,
            ignored: 1,
        },
    ),
    (
        "guardduty/cc_envelope_UnauthorizedAccess-IAMUser-TorIPCaller_sample.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "guardduty/detailonly_elastic_Discovery-IAMUser-AnomalousBehavior_userType-GeneratedFindingUserType.json",
        Outcome::Rejected("bare GuardDuty finding"),
    ),
    (
        "guardduty/detailonly_gdars_Canary-EC2-Stateless.IntegTest.json",
        Outcome::Rejected("bare GuardDuty finding"),
    ),
    (
        "guardduty/detailonly_gdars_PenTest-S3-ParrotLinux_s3bucket.json",
        Outcome::Rejected("bare GuardDuty finding"),
    ),
    (
        "guardduty/detailonly_gdars_Recon-IAMUser-MaliciousIPCaller.Custom_archived.json",
        Outcome::Rejected("bare GuardDuty finding"),
    ),
    (
        "guardduty/partial-envelope_waf-acl_UnauthorizedAccess-EC2-SSHBruteForce.json",
        Outcome::Rejected("partial envelope"),
    ),
    (
        "securityhub/asffonly_asr_IAM.3_AwsIamUser_test-admin2.json",
        Outcome::Rejected("bare ASFF finding"),
    ),
    (
        "securityhub/asffonly_asr_IAM.8_AwsIamUser_nodetails_userid-in-arn.json",
        Outcome::Rejected("bare ASFF finding"),
    ),
    (
        "securityhub/asffonly_asr_IAM.8_AwsIamUser_sharrtest.json",
        Outcome::Rejected("bare ASFF finding"),
    ),
    (
        "securityhub/asffonly_ocsf_guardduty_Stealth-IAMUser-CloudTrailLoggingDisabled_AssumedRole.json",
        Outcome::Rejected("bare ASFF finding"),
    ),
    (
        "securityhub/asr_custom-action_CIS-1.3_AwsIamUser_PASSED.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "securityhub/asr_custom-action_CIS-1.3_AwsIamUser_iamuser1.json",
        Outcome::Planned {
            findings: 1,
            actions: 3,
            ignored: 0,
        },
    ),
    (
        "securityhub/asr_custom-action_batch2_CIS-1.6_FAILED-and-RESOLVED.json",
        Outcome::Planned {
            findings: 2,
            actions: 2,
            ignored: 0,
        },
    ),
    (
        "securityhub/asr_custom-action_batch2_IAM.6-root-mfa_and_RDS.4.json",
        Outcome::Planned {
            findings: 1,
            actions: 2,
            ignored: 1,
        },
    ),
    (
        "securityhub/asr_imported_CIS-1.3_missing-GeneratorId.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "securityhub/asr_imported_CIS-1.3_unused-credentials_AwsAccount.json",
        Outcome::Planned {
            findings: 1,
            actions: 0,
            ignored: 0,
        },
    ),
    (
        "securityhub/cc_custom-action_cis_AwsCloudTrailTrail.json",
        Outcome::Planned {
            findings: 0,
            actions: 0,
            ignored: 1,
        },
    ),
    (
        "securityhub/cc_custom-action_custom-product_cross-account.json",
        Outcome::Planned {
            findings: 0,
            actions: 0,
            ignored: 1,
        },
    ),
    (
        "securityhub/cc_custom-action_guardduty-ConsoleLogin_AwsIamAccessKey-null.json",
        Outcome::Planned {
            findings: 1,
            actions: 4,
            ignored: 0,
        },
    ),
    (
        "securityhub/cc_insight-results.json",
        Outcome::Planned {
            findings: 0,
            actions: 0,
            ignored: 1,
        },
    ),
    (
        "securityhub/sumo_legacy-detail-type_Security-Hub-Findings_third-party.json",
        Outcome::Planned {
            findings: 0,
            actions: 0,
            ignored: 1,
        },
    ),
];

/// The corpus named by `QUELL_CORPUS` (relative to the workspace root, where `.ci/run` runs),
/// or `None`: a clone with nothing beside it skips the conformance test and says so.
fn corpus_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("QUELL_CORPUS").filter(|d| !d.is_empty())?;
    let dir = root().join(std::path::PathBuf::from(dir));
    // Named but missing is a broken setup (CI names it), not a reason to skip silently.
    assert!(
        dir.is_dir(),
        "QUELL_CORPUS={} is not a directory",
        dir.display()
    );
    Some(dir)
}

#[test]
fn every_corpus_file_plans_or_is_rejected_with_a_reason() {
    let Some(dir) = corpus_dir() else {
        println!("corpus conformance skipped: QUELL_CORPUS is not set (.ci/run sets it)");
        return;
    };
    let files = json_files(&dir);
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for file in &files {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let result = plan_input(&bytes, &Policy::default(), &Context::default());
        let line = match &result {
            Ok(p) => format!(
                "planned   {file}: {} findings, {} actions, {} ignored",
                p.findings.len(),
                p.actions.len(),
                p.ignored.len()
            ),
            Err(e) => format!("rejected  {file}: {e}"),
        };
        report.push(line.clone());
        let Some((_, expected)) = EXPECTED.iter().find(|(f, _)| f == file) else {
            failures.push(format!("no expectation for corpus file {file} ({line})"));
            continue;
        };
        let ok = match (expected, &result) {
            (
                Outcome::Planned {
                    findings,
                    actions,
                    ignored,
                },
                Ok(p),
            ) => {
                p.findings.len() == *findings
                    && p.actions.len() == *actions
                    && p.ignored.len() == *ignored
            }
            (Outcome::Rejected(text), Err(e)) => e.to_string().contains(text),
            _ => false,
        };
        if !ok {
            failures.push(format!("unexpected outcome: {line}"));
        }
    }
    println!(
        "corpus conformance ({} files):\n{}",
        files.len(),
        report.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
