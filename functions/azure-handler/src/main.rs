//! `handler`: the custom-handler binary the Functions host starts (host.json
//! `defaultExecutablePath`). Listens on 127.0.0.1:`FUNCTIONS_CUSTOMHANDLER_PORT`.

use std::sync::Arc;

use anyhow::Context as _;
use azure_handler::{App, router};
use quell_azure::{AzureExecutor, Endpoints, Http, TableAuth, TableLedger, VerifyQueue};
use quell_core::clock::SystemClock;
use quell_core::{Context, Policy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The host captures stdout into the function logs.
    // `RUST_LOG`: a level or `target=level` pairs (tracing-subscriber's `Targets`; no regex
    // engine in the binary).
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing_subscriber::filter::LevelFilter::INFO)
        });
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_ansi(false))
            .with(filter)
            .init();
    }
    let env = |k: &str| std::env::var(k).ok();
    let port: u16 = env("FUNCTIONS_CUSTOMHANDLER_PORT")
        .unwrap_or_else(|| "8080".into())
        .parse()
        .context("FUNCTIONS_CUSTOMHANDLER_PORT must be a port number")?;
    let policy = Policy::load(env, |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })?;
    let mut ctx = Context::default();
    // The managed identity quell runs as is never contained.
    for id in ["QUELL_OWN_OBJECT_ID", "AZURE_CLIENT_ID"] {
        if let Some(v) = env(id).filter(|v| !v.is_empty()) {
            ctx = ctx.with_azure_identity(&v);
        }
    }
    let tokens = quell_azure::token::from_env(env)?;
    let mut http = Http::new(Endpoints::from_env(env), tokens);
    if let Some(tenant) = env("AZURE_TENANT_ID").filter(|t| !t.is_empty()) {
        http = http.with_tenant(&tenant);
    }
    let subscriptions: Vec<String> = env("QUELL_AZURE_SUBSCRIPTIONS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let executor = AzureExecutor::new(
        http,
        policy.clone(),
        ctx.clone(),
        Arc::new(SystemClock),
        subscriptions,
    );
    // The ledger: the storage account's table endpoint and table, with the managed identity's
    // token (Storage Table Data Contributor on the account).
    let ledger = match (env("QUELL_LEDGER_ENDPOINT"), env("QUELL_LEDGER_TABLE")) {
        (Some(endpoint), Some(table)) if !endpoint.is_empty() && !table.is_empty() => {
            let tokens = quell_azure::token::from_env(env)?;
            Some(TableLedger::new(
                &endpoint,
                &table,
                TableAuth::Token(tokens),
            ))
        }
        _ => None,
    };
    // The checks after containment: the storage queue the `Verify` function reads, with the
    // managed identity's token (Storage Queue Data Message Sender on the account).
    let verify_queue = match env("QUELL_VERIFY_QUEUE").filter(|q| !q.is_empty()) {
        Some(url) => Some(VerifyQueue::new(
            &url,
            TableAuth::Token(quell_azure::token::from_env(env)?),
        )),
        None => None,
    };
    let aws = aws_side(&policy, &ctx, env).await?;
    tracing::info!(mode = ?policy.mode, ledger = ledger.is_some(), verify_queue = verify_queue.is_some(), aws = aws.is_some(), "quell initialised");
    let app = Arc::new(App {
        policy,
        ctx,
        executor,
        clock: Arc::new(SystemClock),
        ledger,
        http_release: env("QUELL_HTTP_RELEASE").as_deref() == Some("enabled"),
        verify_queue,
        aws,
        links: Default::default(),
    });
    app.refresh_links().await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    tracing::info!(port, "quell custom handler listening");
    axum::serve(listener, router(app)).await?;
    Ok(())
}

/// AWS, reached with the managed identity's token for `QUELL_AWS_AUDIENCE` (the audience the
/// member roles' trust pins) and `sts:AssumeRoleWithWebIdentity` into each account's member
/// role: no AWS secret anywhere. Off unless built with the `aws` feature and configured.
#[cfg(feature = "aws")]
async fn aws_side(
    policy: &Policy,
    ctx: &Context,
    env: impl Fn(&str) -> Option<String> + Copy,
) -> anyhow::Result<Option<azure_handler::AwsSide>> {
    let Some(audience) = env("QUELL_AWS_AUDIENCE").filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let tokens = quell_azure::token::from_env(env)?;
    let token = Arc::new(azure_handler::ManagedIdentityToken::new(tokens, &audience));
    let base = quell_aws::config_without_credentials(None).await;
    let partition = env("QUELL_AWS_PARTITION").unwrap_or_else(|| "aws".into());
    let accounts =
        quell_aws::Accounts::web_identity(base, &partition, &policy.aws.member_role_name, token);
    Ok(Some(quell_aws::AwsExecutor::new(
        accounts,
        policy.clone(),
        ctx.clone(),
        Arc::new(SystemClock),
    )))
}

#[cfg(not(feature = "aws"))]
async fn aws_side(
    _: &Policy,
    _: &Context,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<azure_handler::AwsSide>> {
    if env("QUELL_AWS_AUDIENCE").is_some_and(|a| !a.is_empty()) {
        tracing::warn!(
            "QUELL_AWS_AUDIENCE is set but this handler was built without the aws feature: the AWS side of a compromise fails with what to do"
        );
    }
    Ok(None)
}
