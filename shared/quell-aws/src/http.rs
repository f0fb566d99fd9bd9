//! The one HTTP stack every quell binary links: reqwest over rustls with the *ring* provider,
//! serving the AWS SDK (through the SDK's `HttpClient` extension point) as well as Graph, ARM
//! and the Entra token endpoint.
//!
//! The SDK's own client (`default-https-client`) brings a second hyper client, HTTP/2 (`h2`)
//! and aws-lc-rs; beside reqwest that linked the HTTP stack twice. Why ring
//! (docs/performance.md, "Lambda functions"): it is the smaller of the two rustls providers
//! (aws-lc-rs was about 1 MB of C in each binary, ring is about 0.3 MB), and it offers the
//! same TLS 1.2/1.3 suites, certificate checks and key exchanges except the post-quantum
//! hybrid `X25519MLKEM768` (aws-lc-rs only). quell's traffic
//! is short-lived credentials and API calls, not long-term secrets, so the hybrid's
//! protection against later decryption of recorded traffic is a small loss against a
//! megabyte in every function.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// A reqwest client builder with *ring* installed as the process's rustls provider (reqwest
/// is built without a provider of its own; quell-azure's clients do the same, `quell_azure::tls`).
fn reqwest_builder() -> reqwest::ClientBuilder {
    // `Err` means a provider is already installed (this one, by an earlier call).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// The AWS SDK's HTTP client: reqwest, one connection pool per distinct set of connector
/// settings (the SDK asks per operation; quell's configuration has one set).
pub fn sdk_client() -> SharedHttpClient {
    SharedHttpClient::new(Sdk::default())
}

/// The connect and read timeouts a connector was asked for.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug, Default)]
struct Sdk {
    /// Each pool, or why it could not be built (every call through it then fails with that
    /// reason instead of panicking).
    pools: Mutex<HashMap<Timeouts, Result<reqwest::Client, String>>>,
}

impl HttpClient for Sdk {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let client = pools
            .entry(key)
            .or_insert_with(|| {
                let mut b = reqwest_builder();
                if let Some(t) = key.0 {
                    b = b.connect_timeout(t);
                }
                if let Some(t) = key.1 {
                    b = b.read_timeout(t);
                }
                b.build().map_err(|e| {
                    tracing::error!(error = %e, "could not build the AWS HTTP client");
                    format!("could not build the AWS HTTP client ({e}); check the TLS set-up (quell_aws::http)")
                })
            })
            .clone();
        SharedHttpConnector::new(Connector(client))
    }
}

#[derive(Debug)]
struct Connector(Result<reqwest::Client, String>);

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            match client {
                Ok(client) => send(&client, request).await,
                Err(why) => Err(ConnectorError::other(why.into(), None)),
            }
        })
    }
}

async fn send(
    client: &reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let (parts, body) = request.into_parts();
    // Every request quell makes has an in-memory body (no streaming uploads).
    let Some(bytes) = body.bytes().map(<[u8]>::to_vec) else {
        return Err(ConnectorError::user(
            "a streaming request body; quell's HTTP client sends in-memory bodies only".into(),
        ));
    };
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(bytes)
        .send()
        .await
        .map_err(connector_error)?;
    let mut out = http::Response::builder().status(response.status());
    if let Some(h) = out.headers_mut() {
        *h = response.headers().clone();
    }
    let body = response.bytes().await.map_err(connector_error)?;
    let out = out
        .body(SdkBody::from(body))
        .map_err(|e| ConnectorError::other(e.into(), None))?;
    HttpResponse::try_from(out).map_err(|e| ConnectorError::other(e.into(), None))
}

/// The SDK retries timeouts and I/O errors (a new connection); anything else is reported.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() {
        ConnectorError::io(e.into()).never_connected()
    } else if e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_string, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn request(url: &str, body: &str) -> HttpRequest {
        let r = http::Request::builder()
            .method("POST")
            .uri(url)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "DynamoDB_20120810.GetItem")
            .body(SdkBody::from(body.to_string()))
            .unwrap();
        HttpRequest::try_from(r).unwrap()
    }

    #[tokio::test]
    async fn a_request_and_its_answer_pass_through_unchanged() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/x"))
            .and(header("x-amz-target", "DynamoDB_20120810.GetItem"))
            .and(body_string(r#"{"TableName":"t"}"#))
            .respond_with(
                ResponseTemplate::new(400)
                    .insert_header("x-amzn-requestid", "r-1")
                    .set_body_string(r#"{"__type":"ThrottlingException"}"#),
            )
            .expect(1)
            .mount(&server)
            .await;
        let client = reqwest_builder().build().unwrap();
        let out = send(
            &client,
            request(&format!("{}/x", server.uri()), r#"{"TableName":"t"}"#),
        )
        .await
        .unwrap();
        assert_eq!(out.status().as_u16(), 400);
        assert_eq!(out.headers().get("x-amzn-requestid"), Some("r-1"));
        assert_eq!(
            out.body().bytes(),
            Some(&br#"{"__type":"ThrottlingException"}"#[..])
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_the_sdk_retries() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = reqwest_builder().build().unwrap();
        let e = send(&client, request(&format!("http://127.0.0.1:{port}/"), "{}"))
            .await
            .unwrap_err();
        assert!(e.is_io(), "{e:?}");
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_read_timeout_is_a_timeout() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let client = reqwest_builder()
            .read_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let e = send(&client, request(&server.uri(), "{}"))
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
    }

    #[test]
    fn one_pool_per_distinct_timeouts() {
        let sdk = Sdk::default();
        let settings = |ms| {
            HttpConnectorSettings::builder()
                .connect_timeout(Duration::from_millis(ms))
                .build()
        };
        let components =
            aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder::for_tests()
                .build()
                .unwrap();
        for ms in [3000, 3000, 500] {
            let _ = sdk.http_connector(&settings(ms), &components);
        }
        assert_eq!(sdk.pools.lock().unwrap().len(), 2);
    }
}

#[cfg(test)]
mod smoke {
    /// TLS against a real endpoint: the handshake with ring and the platform's root store.
    /// Needs the internet, so it is not part of the suite: `cargo test -p quell-aws --
    /// --ignored tls_smoke`.
    #[tokio::test]
    #[ignore]
    async fn tls_smoke() {
        let client = super::reqwest_builder().build().unwrap();
        let r = client.get("https://pypi.org/simple/").send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        // The same server under a name its certificate does not hold: refused.
        let addr = tokio::net::lookup_host("pypi.org:443")
            .await
            .unwrap()
            .next()
            .unwrap();
        let wrong = super::reqwest_builder()
            .resolve("not-pypi.example", addr)
            .build()
            .unwrap();
        let e = wrong
            .get("https://not-pypi.example/simple/")
            .send()
            .await
            .unwrap_err();
        assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
    }
}
