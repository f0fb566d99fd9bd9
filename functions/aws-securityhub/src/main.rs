//! Lambda: contain the identities in Security Hub findings, Imported and Custom Action.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run(quell_lambda::Accepts::Securityhub).await
}
