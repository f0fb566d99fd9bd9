//! Lambda: a runbook request or any test event from `events/`, invoked directly.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run(quell_lambda::Accepts::Any).await
}
