//! What moto cannot emulate, with aws-smithy-mocks: Security Hub BatchUpdateFindings (and its
//! UnprocessedFindings), and throttling that the SDK must retry.

use std::sync::Arc;

use aws_sdk_iam::operation::get_user::GetUserOutput;
use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
use aws_sdk_iam::operation::update_access_key::UpdateAccessKeyOutput;
use aws_sdk_iam::types::{AccessKeyMetadata, StatusType, User};
use aws_sdk_securityhub::operation::batch_update_findings::BatchUpdateFindingsOutput;
use aws_sdk_securityhub::operation::get_findings_v2::GetFindingsV2Output;
use aws_sdk_securityhub::types::{BatchUpdateFindingsUnprocessedFinding, WorkflowStatus};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use quell_aws::{AwsClients, AwsExecutor, Fixed};
use quell_core::clock::FixedClock;
use quell_core::report::Status;
use quell_core::{ActionKind, Context, Policy, plan_input};
use quell_tests::event;
use quell_tests::{NOW, enforce};

fn user(name: &str) -> GetUserOutput {
    GetUserOutput::builder()
        .user(
            User::builder()
                .path("/")
                .user_name(name)
                .user_id("AIDAEXAMPLE000000001")
                .arn(format!("arn:aws:iam::111122223333:user/{name}"))
                .create_date(DateTime::from_secs(1_700_000_000))
                .build()
                .unwrap(),
        )
        .build()
}

fn keys(id: &str) -> ListAccessKeysOutput {
    ListAccessKeysOutput::builder()
        .access_key_metadata(
            AccessKeyMetadata::builder()
                .access_key_id(id)
                .status(StatusType::Active)
                .user_name("ci-deployer")
                .build(),
        )
        .build()
        .unwrap()
}

const THROTTLING: &str = r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ErrorResponse>"#;

/// A user's policy lists and groups (empty): read after tagging, as the baseline verify
/// compares with.
fn user_policy_lists() -> [aws_smithy_mocks::Rule; 3] {
    [
        mock!(aws_sdk_iam::Client::list_attached_user_policies).then_output(|| {
            aws_sdk_iam::operation::list_attached_user_policies::ListAttachedUserPoliciesOutput::builder()
                .build()
        }),
        mock!(aws_sdk_iam::Client::list_user_policies).then_output(|| {
            aws_sdk_iam::operation::list_user_policies::ListUserPoliciesOutput::builder()
                .set_policy_names(Some(vec![]))
                .build()
                .unwrap()
        }),
        mock!(aws_sdk_iam::Client::list_groups_for_user).then_output(|| {
            aws_sdk_iam::operation::list_groups_for_user::ListGroupsForUserOutput::builder()
                .set_groups(Some(vec![]))
                .build()
                .unwrap()
        }),
    ]
}

fn executor(clients: AwsClients, policy: Policy) -> AwsExecutor<Fixed> {
    AwsExecutor::new(
        Fixed(clients),
        policy,
        Context::default(),
        Arc::new(FixedClock(NOW)),
    )
}

fn sh_only(sh: aws_sdk_securityhub::Client) -> AwsClients {
    let iam = mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        &[&mock!(aws_sdk_iam::Client::get_user).then_output(|| user("unused"))]
    );
    AwsClients::with(iam, sh)
}

/// The outcome of the plan's Security Hub update.
fn sh_update(report: &quell_core::report::Report) -> &quell_core::report::ActionResult {
    report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::UpdateSecurityhubFinding)
        .expect("the plan updates its Security Hub finding")
}

/// The Security Hub update of the IAM.6 finding (a notify-only plan: no IAM call).
fn iam6_plan() -> quell_core::Plan {
    let mut policy = enforce();
    policy.aws.update_securityhub = true;
    plan_input(
        &event("securityhub/imported-iam6-root-mfa-account.json"),
        &policy,
        &Context::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn security_hub_findings_are_marked_notified_with_a_note() {
    let get = mock!(aws_sdk_securityhub::Client::get_findings_v2)
        .then_output(|| GetFindingsV2Output::builder().build());
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings)
        .match_requests(|r| {
            r.workflow().and_then(|w| w.status()) == Some(&WorkflowStatus::Notified)
                && r.note().is_some_and(|n| {
                    n.updated_by() == Some("quell")
                        && n.text().is_some_and(|t| t.starts_with("quell: notify"))
                })
                && r.finding_identifiers().len() == 1
                && r.finding_identifiers()[0].product_arn()
                    == Some("arn:aws:securityhub:us-east-1::product/aws/securityhub")
        })
        .then_output(|| BatchUpdateFindingsOutput::builder().build());
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&get, &update]);
    let report = executor(sh_only(sh), enforce()).execute(&iam6_plan()).await;
    let r = sh_update(&report);
    assert_eq!(r.outcome.status, Status::Applied, "{:?}", r.outcome);
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn an_already_notified_finding_is_not_updated_again() {
    let get = mock!(aws_sdk_securityhub::Client::get_findings_v2)
        .then_output(|| asff(serde_json::json!({"Workflow": {"Status": "NOTIFIED"}})));
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings)
        .then_output(|| BatchUpdateFindingsOutput::builder().build());
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&get, &update]);
    let report = executor(sh_only(sh), enforce()).execute(&iam6_plan()).await;
    let r = sh_update(&report);
    assert_eq!(r.outcome.status, Status::AlreadyInState);
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn unprocessed_findings_are_reported_as_failures_with_their_code() {
    let get = mock!(aws_sdk_securityhub::Client::get_findings_v2)
        .then_output(|| GetFindingsV2Output::builder().build());
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings).then_output(|| {
        BatchUpdateFindingsOutput::builder()
            .set_processed_findings(Some(vec![]))
            .unprocessed_findings(
                BatchUpdateFindingsUnprocessedFinding::builder()
                    .finding_identifier(
                        aws_sdk_securityhub::types::AwsSecurityFindingIdentifier::builder()
                            .id("x")
                            .product_arn("y")
                            .build(),
                    )
                    .error_code("FindingNotFound")
                    .error_message("Finding not found")
                    .build(),
            )
            .build()
    });
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&get, &update]);
    let report = executor(sh_only(sh), enforce()).execute(&iam6_plan()).await;
    let r = sh_update(&report);
    assert_eq!(r.outcome.status, Status::Failed);
    assert_eq!(r.outcome.error_code.as_deref(), Some("FindingNotFound"));
    // The notify before it still ran: one failure hides nothing.
    assert!(
        report
            .results
            .iter()
            .any(|r| r.action.kind == ActionKind::Notify && r.outcome.status == Status::Applied)
    );
}

fn key_plan() -> quell_core::Plan {
    let mut policy = enforce();
    policy.aws.update_securityhub = false;
    let input = br#"{"runbook":"disable_key","principal":"AKIAZ4XQ7PLMGIST0001","account":"111122223333","user":"ci-deployer","reason":"throttling test"}"#;
    plan_input(input, &policy, &Context::default()).unwrap()
}

fn iam_with(update: &aws_smithy_mocks::Rule) -> aws_sdk_iam::Client {
    let get = mock!(aws_sdk_iam::Client::get_user).then_output(|| user("ci-deployer"));
    let list =
        mock!(aws_sdk_iam::Client::list_access_keys).then_output(|| keys("AKIAZ4XQ7PLMGIST0001"));
    let tag = mock!(aws_sdk_iam::Client::tag_user)
        .then_output(|| aws_sdk_iam::operation::tag_user::TagUserOutput::builder().build());
    let lists = user_policy_lists();
    mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        &[&get, &list, update, &tag, &lists[0], &lists[1], &lists[2]],
        |c| c.retry_config(quell_aws::clients::retry_config())
    )
}

#[tokio::test]
async fn throttling_is_retried_until_it_succeeds() {
    let update = mock!(aws_sdk_iam::Client::update_access_key)
        .sequence()
        .http_status(400, Some(THROTTLING.to_string()))
        .times(2)
        .output(|| UpdateAccessKeyOutput::builder().build())
        .build();
    let sh = mock_client!(
        aws_sdk_securityhub,
        RuleMode::MatchAny,
        &[&mock!(aws_sdk_securityhub::Client::get_findings_v2)
            .then_output(|| GetFindingsV2Output::builder().build())]
    );
    let clients = AwsClients::with(iam_with(&update), sh);
    let report = executor(clients, enforce()).execute(&key_plan()).await;
    let r = &report.results[0];
    assert_eq!(r.action.kind, ActionKind::DeactivateAccessKey);
    assert_eq!(r.outcome.status, Status::Applied, "{:?}", r.outcome);
    assert_eq!(
        update.num_calls(),
        3,
        "two throttled attempts, then success"
    );
    assert!(!report.should_retry());
}

#[tokio::test]
async fn persistent_throttling_fails_retryably_without_hiding_other_actions() {
    let update = mock!(aws_sdk_iam::Client::update_access_key)
        .sequence()
        .http_status(400, Some(THROTTLING.to_string()))
        .repeatedly()
        .build();
    let sh = mock_client!(
        aws_sdk_securityhub,
        RuleMode::MatchAny,
        &[&mock!(aws_sdk_securityhub::Client::get_findings_v2)
            .then_output(|| GetFindingsV2Output::builder().build())]
    );
    let clients = AwsClients::with(iam_with(&update), sh);
    let report = executor(clients, enforce()).execute(&key_plan()).await;
    let r = &report.results[0];
    assert_eq!(r.outcome.status, Status::Failed);
    assert_eq!(r.outcome.error_code.as_deref(), Some("Throttling"));
    assert!(r.outcome.retryable);
    assert_eq!(
        update.num_calls(),
        5,
        "the SDK's bounded retry budget: 5 attempts"
    );
    assert!(
        report.should_retry(),
        "a Lambda edge retries the invocation"
    );
    // The tag after it still ran.
    assert_eq!(report.results[1].action.kind, ActionKind::TagPrincipal);
    assert_eq!(report.results[1].outcome.status, Status::Applied);
}

const ACCESS_DENIED: &str = r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized to perform: iam:UpdateAccessKey</Message></Error><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ErrorResponse>"#;
const CONCURRENT: &str = r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>ConcurrentModification</Code><Message>Cannot perform the operation due to a concurrent modification</Message></Error><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ErrorResponse>"#;

/// A Security Hub GuardDuty finding naming one key, planned under enforce.
fn sh_key_plan() -> quell_core::Plan {
    plan_input(
        &event("securityhub/imported-guardduty-access-key.json"),
        &enforce(),
        &Context::default(),
    )
    .unwrap()
}

/// What `GetFindings` answers for one ASFF finding, as quell reads it: through
/// `GetFindingsV2`'s documents (`quell_aws::securityhub`).
fn asff(finding: serde_json::Value) -> GetFindingsV2Output {
    GetFindingsV2Output::builder()
        .findings(document(&finding))
        .build()
}

fn document(v: &serde_json::Value) -> aws_smithy_types::Document {
    use aws_smithy_types::Document;
    match v {
        serde_json::Value::Object(m) => {
            Document::Object(m.iter().map(|(k, v)| (k.clone(), document(v))).collect())
        }
        serde_json::Value::Array(a) => Document::Array(a.iter().map(document).collect()),
        serde_json::Value::String(s) => Document::from(s.as_str()),
        serde_json::Value::Bool(b) => Document::Bool(*b),
        serde_json::Value::Number(n) => Document::from(n.as_u64().unwrap_or_default()),
        serde_json::Value::Null => Document::Null,
    }
}

fn sh_finding_with_note(note: Option<&str>) -> GetFindingsV2Output {
    let mut f = serde_json::json!({"Workflow": {"Status": "NEW"}});
    if let Some(text) = note {
        f["Note"] = serde_json::json!({"Text": text, "UpdatedBy": "quell", "UpdatedAt": "2026-11-23T12:00:00Z"});
    }
    asff(f)
}

#[tokio::test]
async fn a_finding_whose_containment_failed_stays_new_with_a_note() {
    // The key's deactivation is denied: the finding must not be marked NOTIFIED.
    let denied = mock!(aws_sdk_iam::Client::update_access_key).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
            aws_smithy_types::body::SdkBody::from(ACCESS_DENIED),
        )
    });
    let put = mock!(aws_sdk_iam::Client::put_user_policy).then_output(|| {
        aws_sdk_iam::operation::put_user_policy::PutUserPolicyOutput::builder().build()
    });
    let get_pol = mock!(aws_sdk_iam::Client::get_user_policy).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(404).unwrap(),
            aws_smithy_types::body::SdkBody::from(r#"<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>none</Message></Error></ErrorResponse>"#),
        )
    });
    let get = mock!(aws_sdk_iam::Client::get_user).then_output(|| user("devops-tkim"));
    let list =
        mock!(aws_sdk_iam::Client::list_access_keys).then_output(|| keys("AKIAZ4XQ7PLMDV4R5T6Y"));
    let tag = mock!(aws_sdk_iam::Client::tag_user)
        .then_output(|| aws_sdk_iam::operation::tag_user::TagUserOutput::builder().build());
    let lists = user_policy_lists();
    let iam = mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        &[
            &get, &list, &denied, &put, &get_pol, &tag, &lists[0], &lists[1], &lists[2]
        ]
    );
    let find = mock!(aws_sdk_securityhub::Client::get_findings_v2)
        .then_output(|| sh_finding_with_note(None));
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings)
        .match_requests(|r| {
            r.workflow().is_none()
                && r.note().and_then(|n| n.text()).is_some_and(|t| {
                    t.starts_with("quell: NOT CONTAINED") && t.contains("deactivate_access_key")
                })
        })
        .then_output(|| BatchUpdateFindingsOutput::builder().build());
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&find, &update]);
    let report = executor(AwsClients::with(iam, sh), enforce())
        .execute(&sh_key_plan())
        .await;
    let r = sh_update(&report);
    assert_eq!(r.outcome.status, Status::Applied, "{:?}", r.outcome);
    assert!(r.outcome.detail.contains("stays NEW"));
    assert_eq!(update.num_calls(), 1, "a note, no workflow change");
}

#[tokio::test]
async fn an_unchanged_note_is_not_written_again_so_findings_do_not_loop() {
    // Every action fails the same way on each delivery (IAM denies the reads); the second
    // delivery, Security Hub's own event for quell's note, finds that note unchanged.
    let denied = mock!(aws_sdk_iam::Client::get_user).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
            aws_smithy_types::body::SdkBody::from(ACCESS_DENIED),
        )
    });
    // The key list is read beside the user: denied too.
    let denied_keys = mock!(aws_sdk_iam::Client::list_access_keys).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
            aws_smithy_types::body::SdkBody::from(ACCESS_DENIED),
        )
    });
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, &[&denied, &denied_keys]);
    let key_plan = sh_key_plan();
    // First delivery: learn the note quell writes.
    let find = mock!(aws_sdk_securityhub::Client::get_findings_v2)
        .then_output(|| sh_finding_with_note(None));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let keep = seen.clone();
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings)
        .match_requests(move |r| {
            *keep.lock().unwrap() = r.note().and_then(|n| n.text()).unwrap_or("").to_string();
            true
        })
        .then_output(|| BatchUpdateFindingsOutput::builder().build());
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&find, &update]);
    executor(AwsClients::with(iam.clone(), sh), enforce())
        .execute(&key_plan)
        .await;
    let note = seen.lock().unwrap().clone();
    assert!(note.starts_with("quell: NOT CONTAINED"), "{note}");
    // Second delivery (Security Hub's own Imported event for that note): nothing written.
    let find = mock!(aws_sdk_securityhub::Client::get_findings_v2)
        .then_output(move || sh_finding_with_note(Some(&note)));
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings)
        .then_output(|| BatchUpdateFindingsOutput::builder().build());
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&find, &update]);
    let report = executor(AwsClients::with(iam, sh), enforce())
        .execute(&key_plan)
        .await;
    let r = sh_update(&report);
    assert_eq!(r.outcome.status, Status::AlreadyInState, "{:?}", r.outcome);
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn the_dormant_key_loop_continues_past_a_failed_deactivation() {
    let get = mock!(aws_sdk_iam::Client::get_user).then_output(|| user("legacy"));
    let list = mock!(aws_sdk_iam::Client::list_access_keys).then_output(|| {
        let k = |id: &str| {
            AccessKeyMetadata::builder()
                .access_key_id(id)
                .status(StatusType::Active)
                .create_date(DateTime::from_secs(1_600_000_000))
                .build()
        };
        ListAccessKeysOutput::builder()
            .access_key_metadata(k("AKIAZ4XQ7PLMDORM0001"))
            .access_key_metadata(k("AKIAZ4XQ7PLMDORM0002"))
            .build()
            .unwrap()
    });
    let last = mock!(aws_sdk_iam::Client::get_access_key_last_used).then_output(|| {
        aws_sdk_iam::operation::get_access_key_last_used::GetAccessKeyLastUsedOutput::builder()
            .build()
    });
    let fail_first = mock!(aws_sdk_iam::Client::update_access_key)
        .match_requests(|r| r.access_key_id() == Some("AKIAZ4XQ7PLMDORM0001"))
        .then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
                aws_smithy_types::body::SdkBody::from(ACCESS_DENIED),
            )
        });
    let ok_second = mock!(aws_sdk_iam::Client::update_access_key)
        .match_requests(|r| r.access_key_id() == Some("AKIAZ4XQ7PLMDORM0002"))
        .then_output(|| UpdateAccessKeyOutput::builder().build());
    let tag = mock!(aws_sdk_iam::Client::tag_user)
        .then_output(|| aws_sdk_iam::operation::tag_user::TagUserOutput::builder().build());
    let lists = user_policy_lists();
    let iam = mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        &[
            &get,
            &list,
            &last,
            &fail_first,
            &ok_second,
            &tag,
            &lists[0],
            &lists[1],
            &lists[2]
        ]
    );
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[]);
    let plan = plan_input(
        br#"{"runbook":"disable_dormant_keys","principal":"arn:aws:iam::111122223333:user/legacy","reason":"t"}"#,
        &enforce(),
        &Context::default(),
    )
    .unwrap();
    let report = executor(AwsClients::with(iam, sh), enforce())
        .execute(&plan)
        .await;
    let r = &report.results[0];
    assert_eq!(r.action.kind, ActionKind::DeactivateDormantAccessKeys);
    assert_eq!(r.outcome.status, Status::Failed);
    assert_eq!(r.outcome.error_code.as_deref(), Some("AccessDenied"));
    assert!(
        r.outcome
            .detail
            .contains("deactivated [AKIAZ4XQ7PLMDORM0002]"),
        "{}",
        r.outcome.detail
    );
    let inv = r
        .outcome
        .inverse
        .as_ref()
        .expect("the applied half keeps its inverse");
    assert!(
        matches!(inv, quell_core::report::Inverse::Aws(quell_core::report::AwsInverse::ReactivateKeys { keys, .. }) if keys == &["AKIAZ4XQ7PLMDORM0002"]),
        "{inv:?}"
    );
    assert_eq!(ok_second.num_calls(), 1);
}

#[tokio::test]
async fn concurrent_modification_is_retryable() {
    let update = mock!(aws_sdk_iam::Client::update_access_key)
        .sequence()
        .http_status(409, Some(CONCURRENT.to_string()))
        .repeatedly()
        .build();
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[]);
    let clients = AwsClients::with(iam_with(&update), sh);
    let report = executor(clients, enforce()).execute(&key_plan()).await;
    let r = &report.results[0];
    assert_eq!(
        r.outcome.error_code.as_deref(),
        Some("ConcurrentModification")
    );
    assert!(r.outcome.retryable);
    assert!(report.should_retry());
}

/// A fake STS that answers AssumeRole with `status` and an error `code`.
async fn sts_answering(status: u16, code: &str) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    let body = format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code><Message>User: arn:aws:sts::111122223333:assumed-role/quell-guardduty-us-east-1-main/x is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::444455556666:role/QuellMemberRole</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"#
    );
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(status)
                .insert_header("content-type", "text/xml")
                .set_body_string(body),
        )
        .mount(&server)
        .await;
    server
}

async fn base_config(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(quell_aws::http::sdk_client())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

#[tokio::test]
async fn a_refused_assume_role_is_a_clear_non_retryable_error_not_a_network_failure() {
    use quell_aws::ClientSource;
    let sts = sts_answering(403, "AccessDenied").await;
    let accounts = quell_aws::Accounts::new(
        base_config(&sts.uri()).await,
        "111122223333",
        "aws",
        "QuellMemberRole",
    );
    let e = accounts
        .clients("444455556666", "quell-test")
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied", "{e:?}");
    assert!(!e.retryable);
    assert!(
        e.message
            .contains("arn:aws:iam::444455556666:role/QuellMemberRole"),
        "{}",
        e.message
    );
    assert!(e.message.contains("member-role.yaml"), "{}", e.message);

    // STS throttling or an outage is worth retrying.
    let sts = sts_answering(400, "Throttling").await;
    let accounts = quell_aws::Accounts::new(
        base_config(&sts.uri()).await,
        "111122223333",
        "aws",
        "QuellMemberRole",
    );
    let e = accounts
        .clients("444455556666", "quell-test")
        .await
        .unwrap_err();
    assert_eq!(e.code, "Throttling");
    assert!(e.retryable);
}

#[tokio::test]
async fn the_sweep_functions_answer_non_retryable_errors_instead_of_failing_the_invocation() {
    use quell_lambda::sweep::{AccountList, Scheduler, Sweeper};
    // The sweeper cannot assume the member role: answered as failed, not retried.
    let sts = sts_answering(403, "AccessDenied").await;
    let cfg = base_config(&sts.uri()).await;
    let sweeper = Sweeper {
        source: quell_aws::Accounts::new(cfg.clone(), "111122223333", "aws", "QuellMemberRole"),
        policy: Policy::default(),
        ctx: Context::default(),
        clock: Arc::new(FixedClock(NOW)),
        audit: None,
        ledger: None,
    };
    let ev = serde_json::json!({"version":"0","id":"1","detail-type":"Sweep Requested","source":"quell","account":"111122223333","time":"2026-11-23T12:00:00Z","region":"us-east-1","resources":[],"detail":{"account":"444455556666"}});
    let out = sweeper.handle(ev.clone()).await.unwrap();
    assert_eq!(out["status"], "failed");
    assert_eq!(out["error_code"], "AccessDenied");
    // STS throttled: the invocation fails so EventBridge retries it.
    let sts = sts_answering(400, "Throttling").await;
    let sweeper = Sweeper {
        source: quell_aws::Accounts::new(
            base_config(&sts.uri()).await,
            "111122223333",
            "aws",
            "QuellMemberRole",
        ),
        ..sweeper
    };
    assert!(sweeper.handle(ev).await.is_err());

    // The scheduler outside the management account: says what to set.
    let org = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(400)
                .insert_header("content-type", "application/x-amz-json-1.1")
                .set_body_string(r#"{"__type":"AccessDeniedException","Message":"You don't have permissions to access this resource."}"#),
        )
        .mount(&org)
        .await;
    let cfg = base_config(&org.uri()).await;
    let scheduler = Scheduler {
        accounts: AccountList::Organization(aws_sdk_organizations::Client::new(&cfg)),
        eventbridge: aws_sdk_eventbridge::Client::new(&cfg),
        bus: "quell-audit".into(),
    };
    let out = scheduler.handle().await.unwrap();
    assert_eq!(out["status"], "failed");
    let msg = out["error"].as_str().unwrap();
    assert!(
        msg.contains("SweepAccounts") && msg.contains("aws.sweep_accounts"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_ocsf_finding_is_updated_through_the_v2_api() {
    use aws_sdk_securityhub::operation::batch_update_findings_v2::BatchUpdateFindingsV2Output;
    let plan = plan_input(
        &event("securityhub/v2-compliance-iam8-user.json"),
        &enforce(),
        &Context::default(),
    )
    .unwrap();
    let get = mock!(aws_sdk_securityhub::Client::get_findings_v2).then_output(|| {
        let mut f = std::collections::HashMap::new();
        f.insert(
            "status_id".to_string(),
            aws_smithy_types::Document::from(1u64),
        );
        GetFindingsV2Output::builder()
            .findings(aws_smithy_types::Document::Object(f))
            .build()
    });
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings_v2)
        .match_requests(|r| {
            r.status_id() == Some(2)
                && r.comment()
                    .is_some_and(|c| c.starts_with("quell: deactivate_dormant_access_keys"))
                && r.finding_identifiers().first().is_some_and(|i| {
                    i.cloud_account_uid() == Some("111122223333")
                        && i.metadata_product_uid()
                            == Some("arn:aws:securityhub:eu-west-1::productv2/aws/securityhub")
                        && i.finding_info_uid()
                            .is_some_and(|u| u.ends_with("8a0c2e4a-6c8e-4a0c-8e2a-4c6e8a0c2e4a"))
                })
        })
        .then_output(|| BatchUpdateFindingsV2Output::builder().build());
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&get, &update]);
    // The IAM side: the user has no dormant key.
    let lists = user_policy_lists();
    let iam = mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        &[
            &mock!(aws_sdk_iam::Client::get_user).then_output(|| user("j.okafor")),
            &mock!(aws_sdk_iam::Client::list_access_keys).then_output(|| {
                ListAccessKeysOutput::builder()
                    .set_access_key_metadata(Some(vec![]))
                    .build()
                    .unwrap()
            }),
            &mock!(aws_sdk_iam::Client::tag_user)
                .then_output(|| aws_sdk_iam::operation::tag_user::TagUserOutput::builder().build()),
            &lists[0],
            &lists[1],
            &lists[2],
        ]
    );
    let report = executor(AwsClients::with(iam, sh), enforce())
        .execute(&plan)
        .await;
    let r = sh_update(&report);
    assert_eq!(r.outcome.status, Status::Applied, "{:?}", report.results);
    assert_eq!(update.num_calls(), 1);
    assert_eq!(r.outcome.inverse.as_ref().unwrap().params()["StatusId"], 1);
}

/// The ASFF read on the wire: `GetFindings` as the Security Hub API reference has it
/// (`POST /findings`, filters by `Id` and `ProductArn`, signed for `securityhub`), its ASFF
/// answer read for the workflow, and no update of a finding already NOTIFIED.
#[tokio::test]
async fn the_asff_read_is_get_findings_on_the_wire() {
    use wiremock::matchers::{body_json, header_exists, method, path};
    let server = wiremock::MockServer::start().await;
    let plan = iam6_plan();
    let Some(quell_core::plan::Target::Record(quell_core::model::FindingRef::SecurityhubFinding {
        id,
        product_arn,
        ..
    })) = plan
        .actions
        .iter()
        .find(|a| a.kind == ActionKind::UpdateSecurityhubFinding)
        .map(|a| &a.target)
    else {
        panic!("no ASFF finding update in the plan");
    };
    wiremock::Mock::given(method("POST"))
        .and(path("/findings"))
        .and(header_exists("authorization"))
        .and(body_json(serde_json::json!({
            "Filters": {
                "Id": [{"Value": id, "Comparison": "EQUALS"}],
                "ProductArn": [{"Value": product_arn, "Comparison": "EQUALS"}],
            },
            "MaxResults": 1,
        })))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "Findings": [{
                "SchemaVersion": "2018-10-08",
                "Id": id,
                "ProductArn": product_arn,
                "Resources": [{"Type": "AwsAccount", "Id": "AWS::::Account:111122223333",
                    "Details": {"Other": {"k": "v"}}}],
                "Workflow": {"Status": "NOTIFIED"},
                "Note": {"Text": "quell: earlier", "UpdatedBy": "quell", "UpdatedAt": "2026-12-04T10:00:00Z"},
            }],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let cfg = base_config(&server.uri()).await;
    let sh = aws_sdk_securityhub::Client::new(&cfg);
    let report = executor(sh_only(sh), enforce()).execute(&plan).await;
    let r = sh_update(&report);
    assert_eq!(r.outcome.status, Status::AlreadyInState, "{:?}", r.outcome);
    // No BatchUpdateFindings: the only request was the read (`expect(1)` checks it on drop).
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// A throttled `GetFindings` is retried by the SDK, and the retry is the same `POST /findings`.
#[tokio::test]
async fn the_asff_read_is_retried_as_the_same_request() {
    use wiremock::matchers::{body_json, method, path};
    let server = wiremock::MockServer::start().await;
    let body = serde_json::json!({
        "Filters": {
            "Id": [{"Value": "f-1", "Comparison": "EQUALS"}],
            "ProductArn": [{"Value": "p-1", "Comparison": "EQUALS"}],
        },
        "MaxResults": 1,
    });
    wiremock::Mock::given(method("POST"))
        .and(path("/findings"))
        .and(body_json(body.clone()))
        .respond_with(
            wiremock::ResponseTemplate::new(429)
                .insert_header("x-amzn-errortype", "TooManyRequestsException")
                .set_body_json(serde_json::json!({"message": "Rate exceeded"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    wiremock::Mock::given(method("POST"))
        .and(path("/findings"))
        .and(body_json(body))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "Findings": [{"Id": "f-1", "Workflow": {"Status": "NEW"}}],
            })),
        )
        .mount(&server)
        .await;
    let cfg = base_config(&server.uri())
        .await
        .into_builder()
        .retry_config(quell_aws::clients::retry_config())
        .build();
    let sh = aws_sdk_securityhub::Client::new(&cfg);
    let f = quell_aws::securityhub::asff_finding(&sh, "f-1", "p-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f["Workflow"]["Status"], "NEW");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "one throttled attempt, then the answer");
    assert!(requests.iter().all(|r| r.url.path() == "/findings"));
}
