//! Lambda: act on IAM Access Analyzer unused-access findings.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run(quell_lambda::Accepts::AccessAnalyzer).await
}
