//! Lambda: the hourly release of containments whose family's release_after_hours has passed (EventBridge schedule).
#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_lambda::run(quell_lambda::Accepts::ReleaseExpired).await
}
