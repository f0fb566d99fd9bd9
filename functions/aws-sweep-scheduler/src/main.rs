//! Lambda: on a schedule, request one dormant-credential sweep per account.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run_scheduler().await
}
