//! A small Graph / ARM REST client: bearer tokens per scope, 429 with `Retry-After`, backoff on
//! 5xx, Identity Protection paced to one request per second, bounded retries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::token::TokenSource;

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

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

/// Base URLs, configurable for tests and sovereign clouds.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `https://graph.microsoft.com`
    pub graph: String,
    /// `https://management.azure.com`
    pub arm: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            graph: "https://graph.microsoft.com".into(),
            arm: "https://management.azure.com".into(),
        }
    }
}

impl Endpoints {
    /// `QUELL_GRAPH_URL` and `QUELL_ARM_URL` override the public cloud.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Endpoints {
        let d = Endpoints::default();
        Endpoints {
            graph: get("QUELL_GRAPH_URL")
                .filter(|v| !v.is_empty())
                .unwrap_or(d.graph),
            arm: get("QUELL_ARM_URL")
                .filter(|v| !v.is_empty())
                .unwrap_or(d.arm),
        }
    }
}

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
    /// Identity Protection allows one request per second per tenant and sends no Retry-After.
    identity_protection: Mutex<Option<Instant>>,
    max_attempts: u32,
    max_wait: Duration,
}

impl Http {
    pub fn new(endpoints: Endpoints, tokens: Arc<dyn TokenSource>) -> Http {
        Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            endpoints,
            tokens,
            identity_protection: Mutex::new(None),
            max_attempts: 4,
            max_wait: Duration::from_secs(30),
        }
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    async fn pace(&self, path: &str) {
        if !path.contains("/identityProtection/") {
            return;
        }
        let mut last = self.identity_protection.lock().await;
        if let Some(t) = *last {
            let next = t + Duration::from_secs(1);
            if next > Instant::now() {
                tokio::time::sleep_until(next).await;
            }
        }
        *last = Some(Instant::now());
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
            Api::Graph => (&self.endpoints.graph, GRAPH_SCOPE),
            Api::Arm => (&self.endpoints.arm, ARM_SCOPE),
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
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
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
