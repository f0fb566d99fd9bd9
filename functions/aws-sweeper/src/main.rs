//! Lambda: sweep the account a `Sweep Requested` event names for dormant access keys.
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run_sweeper().await
}
