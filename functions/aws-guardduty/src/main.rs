//! Lambda: contain the identities in GuardDuty findings (EventBridge `aws.guardduty`).
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run(quell_lambda::Accepts::Guardduty).await
}
