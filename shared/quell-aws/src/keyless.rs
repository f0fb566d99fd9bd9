//! Cross-cloud access with no stored secret, both ways.
//!
//! - **AWS → Entra**: [`OutboundToken`] mints a short JWT with `sts:GetWebIdentityToken`
//!   (audience `api://AzureADTokenExchange`, 300 s, RS256), signed by the account's outbound
//!   issuer, `sub` = the function's role ARN. The Lambda edge hands it to Entra as the client
//!   assertion of an application whose federated credential trusts that issuer and subject
//!   (IAM User Guide, "Outbound identity federation"; Microsoft identity platform, "Workload
//!   identity federation"). Nothing is stored: the token lives five minutes and is cached until
//!   a minute before it expires.
//! - **Entra → AWS**: [`WebIdentityCredentials`] turns a token from the Azure handler's
//!   managed identity into credentials of quell's member role with
//!   `sts:AssumeRoleWithWebIdentity` (an unsigned call): the role's trust pins Entra's issuer,
//!   the audience and the identity's object id (`infra/aws/member-role.yaml`,
//!   `EntraTenantId`). The SDK's identity cache calls it again only when the credentials near
//!   their expiry.
//!
//! Tokens are never logged or formatted into errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use tokio::sync::Mutex;

use crate::error::{ExecError, classify};

/// The audience Entra expects of an external token exchanged for one of its own.
pub const ENTRA_TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";
/// How long the outbound token lives: the shortest useful, so a copy is worth little.
pub const OUTBOUND_TOKEN_SECONDS: i32 = 300;

/// What the functions' roles need for the outbound token, and the conditions that bound it
/// (the SAM template's `EntraKeyless` statement).
pub const OUTBOUND_PERMISSIONS: &[&str] = &["sts:GetWebIdentityToken"];

/// `sts:GetWebIdentityToken` for Entra, cached until a minute before it expires.
pub struct OutboundToken {
    sts: aws_sdk_sts::Client,
    cached: Mutex<Option<(String, SystemTime)>>,
}

impl fmt::Debug for OutboundToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundToken").finish_non_exhaustive()
    }
}

impl OutboundToken {
    pub fn new(sts: aws_sdk_sts::Client) -> OutboundToken {
        OutboundToken {
            sts,
            cached: Mutex::new(None),
        }
    }

    /// A JWT for Entra's token exchange.
    pub async fn token(&self) -> Result<String, ExecError> {
        let mut cached = self.cached.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && SystemTime::now() + Duration::from_secs(60) < *until
        {
            return Ok(t.clone());
        }
        let out = self
            .sts
            .get_web_identity_token()
            .audience(ENTRA_TOKEN_AUDIENCE)
            .duration_seconds(OUTBOUND_TOKEN_SECONDS)
            .signing_algorithm("RS256")
            .send()
            .await
            .map_err(classify)
            .map_err(|e| ExecError {
                message: format!(
                    "sts:GetWebIdentityToken failed ({}: {}); run `quell doctor` (is outbound identity federation enabled, and does the role allow sts:GetWebIdentityToken for {ENTRA_TOKEN_AUDIENCE}?)",
                    e.code, e.message
                ),
                ..e
            })?;
        let token = out
            .web_identity_token()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ExecError::new("EmptyToken", "STS returned no web identity token"))?
            .to_string();
        let until = out
            .expiration()
            .and_then(|d| SystemTime::try_from(*d).ok())
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(240));
        *cached = Some((token.clone(), until));
        Ok(token)
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A token from another identity provider for AWS (the Azure handler's managed identity
/// token for quell's audience), supplied by the edge.
pub trait WebToken: Send + Sync {
    fn token(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// Credentials of `role_arn` for a web identity token, with `sts:AssumeRoleWithWebIdentity`.
#[derive(Clone)]
pub struct WebIdentityCredentials {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session: String,
    token: Arc<dyn WebToken>,
    /// The last credentials, shared by clones: the eager check when clients are made and the
    /// SDK's first call use one `AssumeRoleWithWebIdentity`.
    last: Arc<Mutex<Option<Credentials>>>,
}

impl fmt::Debug for WebIdentityCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebIdentityCredentials")
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

impl WebIdentityCredentials {
    /// `sts` must not sign (AssumeRoleWithWebIdentity is unauthenticated; a config without
    /// credentials is enough).
    pub fn new(
        sts: aws_sdk_sts::Client,
        role_arn: &str,
        session: &str,
        token: Arc<dyn WebToken>,
    ) -> WebIdentityCredentials {
        WebIdentityCredentials {
            sts,
            role_arn: role_arn.to_string(),
            session: session.to_string(),
            token,
            last: Arc::new(Mutex::new(None)),
        }
    }

    async fn assume(&self) -> provider::Result {
        let mut last = self.last.lock().await;
        if let Some(c) = last.as_ref()
            && c.expiry()
                .is_some_and(|e| e > SystemTime::now() + Duration::from_secs(300))
        {
            return Ok(c.clone());
        }
        let fresh = self.assume_now().await?;
        *last = Some(fresh.clone());
        Ok(fresh)
    }

    async fn assume_now(&self) -> provider::Result {
        let token = self
            .token
            .token()
            .await
            .map_err(|e| CredentialsError::provider_error(format!("no token for AWS: {e}")))?;
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session)
            .web_identity_token(token)
            .send()
            .await
            .map_err(|e| {
                let e = classify(e);
                CredentialsError::provider_error(format!(
                    "sts:AssumeRoleWithWebIdentity into {} failed ({}: {}); run `quell doctor` to compare the token with the role's trust",
                    self.role_arn, e.code, e.message
                ))
            })?;
        let c = out.credentials().ok_or_else(|| {
            CredentialsError::provider_error("AssumeRoleWithWebIdentity returned no credentials")
        })?;
        let expiry = SystemTime::try_from(*c.expiration()).ok();
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expiry,
            "quell-web-identity",
        ))
    }
}

impl ProvideCredentials for WebIdentityCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.assume())
    }
}

/// The claims of a JWT, decoded without checking its signature: for `quell doctor` to show
/// and compare, never to trust.
pub fn claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64url(payload)?;
    serde_json::from_slice(&bytes).ok()
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn claims_decode_without_padding() {
        // {"sub":"arn:aws:iam::111122223333:role/quell-guardduty","aud":"api://AzureADTokenExchange"}
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcm46YXdzOmlhbTo6MTExMTIyMjIzMzMzOnJvbGUvcXVlbGwtZ3VhcmRkdXR5IiwiYXVkIjoiYXBpOi8vQXp1cmVBRFRva2VuRXhjaGFuZ2UifQ.sig";
        let c = super::claims(jwt).unwrap();
        assert_eq!(c["sub"], "arn:aws:iam::111122223333:role/quell-guardduty");
        assert_eq!(c["aud"], "api://AzureADTokenExchange");
        assert_eq!(super::claims("not a jwt"), None);
        assert_eq!(super::claims("a.!!!.c"), None);
    }
}
