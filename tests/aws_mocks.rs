//! What moto cannot emulate, with aws-smithy-mocks: Security Hub BatchUpdateFindings (and its
//! UnprocessedFindings), and throttling that the SDK must retry.

use std::sync::Arc;

use aws_sdk_iam::operation::get_user::GetUserOutput;
use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
use aws_sdk_iam::operation::update_access_key::UpdateAccessKeyOutput;
use aws_sdk_iam::types::{AccessKeyMetadata, StatusType, User};
use aws_sdk_securityhub::operation::batch_update_findings::BatchUpdateFindingsOutput;
use aws_sdk_securityhub::operation::get_findings::GetFindingsOutput;
use aws_sdk_securityhub::types::{
    AwsSecurityFinding, BatchUpdateFindingsUnprocessedFinding, Workflow, WorkflowStatus,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use quell_aws::{AwsClients, AwsExecutor, Fixed};
use quell_core::clock::FixedClock;
use quell_core::policy::Mode;
use quell_core::report::Status;
use quell_core::{ActionKind, Context, Policy, plan_input};
use quell_tests::event;

const NOW: time::OffsetDateTime = time::macros::datetime!(2026-11-23 12:00:00 UTC);

fn enforce() -> Policy {
    Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    }
}

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
    AwsClients {
        iam,
        securityhub: sh,
    }
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
    let get = mock!(aws_sdk_securityhub::Client::get_findings)
        .then_output(|| GetFindingsOutput::builder().build());
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
    let r = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::UpdateSecurityhubFinding)
        .unwrap();
    assert_eq!(r.outcome.status, Status::Applied, "{:?}", r.outcome);
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn an_already_notified_finding_is_not_updated_again() {
    let get = mock!(aws_sdk_securityhub::Client::get_findings).then_output(|| {
        GetFindingsOutput::builder()
            .findings(
                AwsSecurityFinding::builder()
                    .workflow(Workflow::builder().status(WorkflowStatus::Notified).build())
                    .build(),
            )
            .build()
    });
    let update = mock!(aws_sdk_securityhub::Client::batch_update_findings)
        .then_output(|| BatchUpdateFindingsOutput::builder().build());
    let sh = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&get, &update]);
    let report = executor(sh_only(sh), enforce()).execute(&iam6_plan()).await;
    let r = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::UpdateSecurityhubFinding)
        .unwrap();
    assert_eq!(r.outcome.status, Status::AlreadyInState);
    assert_eq!(update.num_calls(), 0);
}

#[tokio::test]
async fn unprocessed_findings_are_reported_as_failures_with_their_code() {
    let get = mock!(aws_sdk_securityhub::Client::get_findings)
        .then_output(|| GetFindingsOutput::builder().build());
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
    let r = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::UpdateSecurityhubFinding)
        .unwrap();
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
    mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        &[&get, &list, update, &tag],
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
        &[&mock!(aws_sdk_securityhub::Client::get_findings)
            .then_output(|| GetFindingsOutput::builder().build())]
    );
    let clients = AwsClients {
        iam: iam_with(&update),
        securityhub: sh,
    };
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
        &[&mock!(aws_sdk_securityhub::Client::get_findings)
            .then_output(|| GetFindingsOutput::builder().build())]
    );
    let clients = AwsClients {
        iam: iam_with(&update),
        securityhub: sh,
    };
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
