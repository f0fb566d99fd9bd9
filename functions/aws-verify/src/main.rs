//! Lambda: the checks after containment, from the verify queue (SQS): each message a verify request; a check can only contain more, never release.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run(quell_lambda::Accepts::VerifyQueue).await
}
