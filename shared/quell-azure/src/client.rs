//! A small Graph / ARM REST client: bearer tokens per scope, 429 with `Retry-After`, backoff on
//! 5xx, Identity Protection paced to one request per second, bounded retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::token::TokenSource;

/// A failed Graph or ARM call: HTTP status, the service's error code, and whether a retry later
/// may help. Never holds a token.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{code} (HTTP {status}): {message}")]
pub struct AzError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// Base URLs and token scopes, configurable for tests and sovereign clouds.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `https://graph.microsoft.com` (US Gov: `https://graph.microsoft.us`, China:
    /// `https://microsoftgraph.chinacloudapi.cn`).
    pub graph: String,
    /// `https://management.azure.com`
    pub arm: String,
    /// The token scope for Graph: `<graph>/.default` unless set otherwise.
    pub graph_scope: String,
    /// The token scope for ARM: `<arm>/.default` unless set otherwise.
    pub arm_scope: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints::new(
            "https://graph.microsoft.com",
            "https://management.azure.com",
        )
    }
}

/// `<base>/.default`: the scope of a resource, as Entra expects it for app-only tokens.
fn scope_of(base: &str) -> String {
    format!("{}/.default", base.trim_end_matches('/'))
}

impl Endpoints {
    /// Endpoints with the scopes their own URLs imply (a sovereign cloud's Graph takes tokens for
    /// that Graph, never the public one).
    pub fn new(graph: &str, arm: &str) -> Endpoints {
        Endpoints {
            graph: graph.to_string(),
            arm: arm.to_string(),
            graph_scope: scope_of(graph),
            arm_scope: scope_of(arm),
        }
    }

    /// `QUELL_GRAPH_URL` and `QUELL_ARM_URL` override the public cloud; `QUELL_GRAPH_SCOPE` and
    /// `QUELL_ARM_SCOPE` override the scopes they imply.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Endpoints {
        let d = Endpoints::default();
        let set = |k: &str| get(k).filter(|v| !v.is_empty());
        let mut e = Endpoints::new(
            &set("QUELL_GRAPH_URL").unwrap_or(d.graph),
            &set("QUELL_ARM_URL").unwrap_or(d.arm),
        );
        if let Some(s) = set("QUELL_GRAPH_SCOPE") {
            e.graph_scope = s;
        }
        if let Some(s) = set("QUELL_ARM_SCOPE") {
            e.arm_scope = s;
        }
        e
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), as a wait from
/// `now`. A date in the past means no wait.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, &format)
        .ok()?
        .assume_utc();
    let now = time::OffsetDateTime::from(now);
    let wait = at - now;
    Some(if wait.is_negative() {
        Duration::ZERO
    } else {
        Duration::from_secs(wait.whole_seconds().unsigned_abs())
    })
}

/// Identity Protection allows one request per second per tenant and sends no `Retry-After`.
/// The pace is kept per tenant for the whole process, whichever client makes the call.
static IDENTITY_PROTECTION: std::sync::OnceLock<Mutex<HashMap<String, Instant>>> =
    std::sync::OnceLock::new();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Graph,
    Arm,
}

/// A response that was not a throttle: the status and the parsed JSON body (`Null` if empty).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The service error in this response, for non-2xx statuses.
    pub fn error(&self) -> AzError {
        let e = &self.body["error"];
        AzError {
            status: self.status,
            code: e["code"].as_str().unwrap_or("HttpError").to_string(),
            message: e["message"]
                .as_str()
                .unwrap_or("no error message")
                .to_string(),
            retryable: matches!(self.status, 408 | 429 | 500 | 502 | 503 | 504),
        }
    }
}

pub struct Http {
    client: reqwest::Client,
    endpoints: Endpoints,
    tokens: Arc<dyn TokenSource>,
    /// The tenant this client acts in (its Identity Protection pace); `default` when unknown.
    tenant: String,
    max_attempts: u32,
    max_wait: Duration,
}

impl Http {
    pub fn new(endpoints: Endpoints, tokens: Arc<dyn TokenSource>) -> Http {
        Http {
            client: crate::tls::reqwest_builder()
                .timeout(Duration::from_secs(20))
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            endpoints,
            tokens,
            tenant: "default".into(),
            max_attempts: 4,
            max_wait: Duration::from_secs(30),
        }
    }

    /// The tenant this client acts in, for Identity Protection's per-tenant pace.
    pub fn with_tenant(mut self, tenant: &str) -> Http {
        self.tenant = tenant.to_ascii_lowercase();
        self
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The tenant quell acts in (`AZURE_TENANT_ID`), when known.
    pub fn tenant(&self) -> Option<&str> {
        (self.tenant != "default").then_some(self.tenant.as_str())
    }

    async fn pace(&self, path: &str) {
        if !path.contains("/identityProtection/") {
            return;
        }
        let lock = IDENTITY_PROTECTION.get_or_init(|| Mutex::new(HashMap::new()));
        let mut last = lock.lock().await;
        if let Some(t) = last.get(&self.tenant) {
            let next = *t + Duration::from_secs(1);
            if next > Instant::now() {
                tokio::time::sleep_until(next).await;
            }
        }
        last.insert(self.tenant.clone(), Instant::now());
    }

    /// Sends one request, retrying throttles (honouring `Retry-After`) and 5xx with backoff.
    /// Returns the final response, 2xx or not; transport failures are errors.
    pub async fn send(
        &self,
        method: reqwest::Method,
        api: Api,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, AzError> {
        let (base, scope) = match api {
            Api::Graph => (&self.endpoints.graph, &self.endpoints.graph_scope),
            Api::Arm => (&self.endpoints.arm, &self.endpoints.arm_scope),
        };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.pace(path).await;
            let token = self.tokens.token(scope).await?;
            let mut req = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(token)
                .header("Accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| AzError {
                status: 0,
                code: "Transport".into(),
                message: format!("{method} {path}: {}", e.without_url()),
                retryable: true,
            })?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, std::time::SystemTime::now()));
            let text = resp.text().await.unwrap_or_default();
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            let response = Response { status, body };
            let transient = matches!(status, 429 | 500 | 502 | 503 | 504);
            if !transient || attempt >= self.max_attempts {
                return Ok(response);
            }
            // Graph's Retry-After, else exponential backoff; Identity Protection sends none.
            let wait = retry_after
                .unwrap_or_else(|| Duration::from_millis(500 * 2u64.pow(attempt - 1)))
                .min(self.max_wait);
            tracing::warn!(
                status,
                ?wait,
                path,
                attempt,
                "throttled or unavailable; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// `send`, requiring a 2xx.
    pub async fn call(
        &self,
        method: reqwest::Method,
        api: Api,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, AzError> {
        let r = self.send(method, api, path, body).await?;
        if r.ok() { Ok(r) } else { Err(r.error()) }
    }
}

/// Escapes one path segment (UPNs contain `@`, `#EXT#`).
pub fn seg(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn scopes_follow_the_configured_cloud() {
        let e = Endpoints::from_env(|k| match k {
            "QUELL_GRAPH_URL" => Some("https://graph.microsoft.us".into()),
            "QUELL_ARM_URL" => Some("https://management.usgovcloudapi.net/".into()),
            _ => None,
        });
        assert_eq!(e.graph_scope, "https://graph.microsoft.us/.default");
        assert_eq!(e.arm_scope, "https://management.usgovcloudapi.net/.default");
        assert_eq!(
            Endpoints::default().graph_scope,
            "https://graph.microsoft.com/.default"
        );
    }
}
