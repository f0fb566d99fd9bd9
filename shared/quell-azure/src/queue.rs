//! The check after containment on Azure: one message per contained principal on the storage
//! queue `quell-verify`, invisible for the policy's `[verify] after_seconds` (Put Message
//! `visibilitytimeout`), which the handler's `Verify` function (a queue trigger) receives once
//! Entra has propagated, as a `verify` runbook request. A verify can only contain more, never
//! release; a failed check fails the invocation, so the host retries it and, past
//! `maxDequeueCount`, moves it to `quell-verify-poison`.
//!
//! The message text is base64, as the Functions queue trigger expects by default
//! (host.json `extensions.queues.messageEncoding`). REST contract: "Put Message" and
//! "Peek Messages" (Queue service REST API); authentication as the ledger's (bearer token with
//! `x-ms-version` 2019-02-02 or later, or Shared Key Lite for Azurite).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::AzError;
use crate::ledger::{TableAuth, http_date};

const VERSION: &str = "2019-02-02";
/// The queue the Bicep creates and the `Verify` function reads.
pub const QUEUE: &str = "quell-verify";
/// A scheduled check that nobody received in a day is stale: `quell verify` checks on demand.
const MESSAGE_TTL_SECONDS: u32 = 86_400;

/// The runbook request a scheduled check carries.
pub fn request(principal: &str) -> Value {
    json!({
        "runbook": "verify",
        "principal": principal,
        "reason": "automatic check after propagation",
        "requested_by": "quell",
    })
}

pub struct VerifyQueue {
    client: reqwest::Client,
    /// `https://<account>.queue.core.windows.net/quell-verify` or
    /// `http://127.0.0.1:<port>/<account>/quell-verify`.
    url: String,
    auth: TableAuth,
}

fn err(status: u16, code: &str, message: impl Into<String>, retryable: bool) -> AzError {
    AzError {
        status,
        code: code.into(),
        message: message.into(),
        retryable,
    }
}

impl VerifyQueue {
    pub fn new(url: &str, auth: TableAuth) -> VerifyQueue {
        VerifyQueue {
            client: crate::tls::reqwest_builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_default(),
            url: url.trim_end_matches('/').to_string(),
            auth,
        }
    }

    /// Azurite's development account: `endpoint` is `http://127.0.0.1:<port>/devstoreaccount1`.
    pub fn azurite(endpoint: &str, queue: &str) -> VerifyQueue {
        VerifyQueue::new(
            &format!("{}/{queue}", endpoint.trim_end_matches('/')),
            TableAuth::azurite(),
        )
    }

    async fn send(
        &self,
        method: Method,
        suffix: &str,
        body: Option<String>,
    ) -> Result<(u16, String), AzError> {
        let url = format!("{}{suffix}", self.url);
        let date = http_date();
        let content_type = if body.is_some() {
            "application/xml"
        } else {
            ""
        };
        let mut req = self
            .client
            .request(method.clone(), &url)
            .header("x-ms-date", &date)
            .header("x-ms-version", VERSION);
        if body.is_some() {
            req = req.header("Content-Type", content_type);
        }
        // Shared Key Lite for the Queue service: verb, Content-MD5, Content-Type, Date (empty:
        // x-ms-date is sent), the x-ms- headers, then the canonicalized resource.
        req = self
            .auth
            .authorize(req, &url, |resource| {
                format!(
                    "{}\n\n{content_type}\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n{resource}",
                    method.as_str()
                )
            })
            .await?;
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| {
            err(
                0,
                "Transport",
                format!("queue storage: {}", e.without_url()),
                true,
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 => Ok((status, text)),
            401 | 403 => Err(err(
                status,
                "AuthorizationFailure",
                format!(
                    "queue storage refused quell ({status}): grant the identity Storage Queue Data Contributor (or Message Sender) on the account"
                ),
                false,
            )),
            408 | 429 | 500.. => Err(err(
                status,
                "QueueStorageUnavailable",
                format!("queue storage answered {status}"),
                true,
            )),
            _ => Err(err(
                status,
                "QueueStorageError",
                format!(
                    "queue storage answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                ),
                false,
            )),
        }
    }

    /// Creates the queue when it is missing (tests and local runs; the Bicep creates it in
    /// Azure). True when it was created.
    pub async fn ensure(&self) -> Result<bool, AzError> {
        let (status, _) = self.send(Method::PUT, "", None).await?;
        Ok(status == 201)
    }

    /// Schedules one check per principal, `delay_seconds` from now.
    pub async fn schedule(&self, principals: &[String], delay_seconds: u32) -> Result<(), AzError> {
        self.schedule_until(principals, delay_seconds, None).await
    }

    /// [`VerifyQueue::schedule`], the message carrying `not_before` (RFC 3339) when given.
    pub async fn schedule_until(
        &self,
        principals: &[String],
        delay_seconds: u32,
        not_before: Option<&str>,
    ) -> Result<(), AzError> {
        for p in principals {
            let mut req = request(p);
            if let Some(t) = not_before {
                req["not_before"] = serde_json::json!(t);
            }
            let text = STANDARD.encode(req.to_string());
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>{text}</MessageText></QueueMessage>"
            );
            self.send(
                Method::POST,
                &format!(
                    "/messages?visibilitytimeout={delay_seconds}&messagettl={MESSAGE_TTL_SECONDS}"
                ),
                Some(body),
            )
            .await?;
        }
        Ok(())
    }

    /// The visible messages' texts, decoded, without taking them off the queue (diagnostics and
    /// tests: what the `Verify` function will receive).
    pub async fn peek(&self) -> Result<Vec<String>, AzError> {
        let (_, xml) = self
            .send(
                Method::GET,
                "/messages?peekonly=true&numofmessages=32",
                None,
            )
            .await?;
        Ok(xml
            .split("<MessageText>")
            .skip(1)
            .filter_map(|rest| rest.split("</MessageText>").next())
            .filter_map(|b64| STANDARD.decode(b64.trim()).ok())
            .filter_map(|bytes| String::from_utf8(bytes).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_a_verify_request_and_nothing_else() {
        let r = request("azure:user/3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45");
        assert_eq!(r["runbook"], "verify");
        assert_eq!(r["requested_by"], "quell");
        assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()));
    }
}
