//! Access tokens: one scope per token, from azure_identity in Azure, a fixed one in tests.
//! Tokens and secrets are never logged or formatted into errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use crate::client::AzError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A capability: a bearer token for one scope (`https://graph.microsoft.com/.default`).
pub trait TokenSource: Send + Sync {
    fn token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<String, AzError>>;
}

/// A fixed token (tests, or a token obtained out of band).
pub struct StaticToken(pub String);

impl TokenSource for StaticToken {
    fn token<'a>(&'a self, _scope: &'a str) -> BoxFuture<'a, Result<String, AzError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// Tokens from an azure_identity credential (cached by the credential).
pub struct Identity(pub Arc<dyn TokenCredential>);

impl TokenSource for Identity {
    fn token<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<String, AzError>> {
        Box::pin(async move {
            let t = self
                .0
                .get_token(&[scope], None)
                .await
                .map_err(|e| AzError {
                    status: 0,
                    code: "TokenUnavailable".into(),
                    // azure_core errors name the endpoint and status, never the secret.
                    message: format!("could not get a token for {scope}: {e}"),
                    retryable: true,
                })?;
            Ok(t.token.secret().to_string())
        })
    }
}

/// Whatever mints the client assertion a keyless application presents to Entra (on AWS: the
/// function role's `sts:GetWebIdentityToken`, `quell_aws::keyless::OutboundToken`).
pub trait AssertionSource: Send + Sync {
    fn assertion(&self) -> BoxFuture<'_, Result<String, String>>;
}

struct Assertion(Arc<dyn AssertionSource>);

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for Assertion {
    async fn secret(
        &self,
        _: Option<azure_core::http::ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        self.0.assertion().await.map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, e)
        })
    }
}

/// Tokens for the Entra application `client_id` of `tenant`, earned with a client assertion
/// from `source` (azure_identity's `ClientAssertionCredential`: `POST
/// {authority}/{tenant}/oauth2/v2.0/token` with `client_assertion_type =
/// urn:ietf:params:oauth:client-assertion-type:jwt-bearer`). The application's federated
/// credential must trust the assertion's issuer and subject; no secret is stored anywhere.
/// `options` carries the HTTP transport (tests) and sovereign clouds.
pub fn from_assertion(
    tenant: &str,
    client_id: &str,
    source: Arc<dyn AssertionSource>,
    options: Option<azure_identity::ClientAssertionCredentialOptions>,
) -> Result<Arc<dyn TokenSource>, AzError> {
    crate::tls::install();
    let credential = azure_identity::ClientAssertionCredential::new(
        tenant.to_string(),
        client_id.to_string(),
        Assertion(source),
        options,
    )
    .map_err(|e| AzError {
        status: 0,
        code: "Configuration".into(),
        message: format!("client assertion credential: {e}"),
        retryable: false,
    })?;
    Ok(Arc::new(Identity(credential)))
}

/// Which credential to use, from configuration:
/// - `QUELL_AZURE_CREDENTIAL=managed_identity` (default): App Service/Functions managed identity
///   (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`), user-assigned when `AZURE_CLIENT_ID` is set;
/// - `workload_identity`: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`;
/// - `client_secret`: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` (local runs only);
/// - `azure_cli`: the engineer signed in with `az login` (the `quell` CLI: release and verify run
///   under the engineer's own identity).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Arc<dyn TokenSource>, AzError> {
    crate::tls::install();
    let bad = |m: String| AzError {
        status: 0,
        code: "Configuration".into(),
        message: m,
        retryable: false,
    };
    let kind = get("QUELL_AZURE_CREDENTIAL").unwrap_or_else(|| "managed_identity".into());
    let credential: Arc<dyn TokenCredential> = match kind.as_str() {
        "managed_identity" => {
            let options = get("AZURE_CLIENT_ID").filter(|c| !c.is_empty()).map(|id| {
                azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(id)),
                    ..Default::default()
                }
            });
            azure_identity::ManagedIdentityCredential::new(options)
                .map_err(|e| bad(format!("managed identity: {e}")))?
        }
        "azure_cli" => azure_identity::AzureCliCredential::new(None)
            .map_err(|e| bad(format!("Azure CLI credential: {e}")))?,
        "workload_identity" => azure_identity::WorkloadIdentityCredential::new(None)
            .map_err(|e| bad(format!("workload identity: {e}")))?,
        "client_secret" => {
            let need = |k: &str| {
                get(k).filter(|v| !v.is_empty()).ok_or_else(|| {
                    bad(format!(
                        "{k} is required for QUELL_AZURE_CREDENTIAL=client_secret"
                    ))
                })
            };
            let tenant = need("AZURE_TENANT_ID")?;
            let client = need("AZURE_CLIENT_ID")?;
            let secret = need("AZURE_CLIENT_SECRET")?;
            azure_identity::ClientSecretCredential::new(
                &tenant,
                client,
                azure_core::credentials::Secret::new(secret),
                None,
            )
            .map_err(|e| bad(format!("client secret credential: {e}")))?
        }
        other => {
            return Err(bad(format!(
                "QUELL_AZURE_CREDENTIAL={other:?}: use managed_identity, workload_identity, client_secret or azure_cli"
            )));
        }
    };
    Ok(Arc::new(Identity(credential)))
}
