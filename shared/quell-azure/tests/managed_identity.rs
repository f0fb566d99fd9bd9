//! Tokens come from the real azure_identity ManagedIdentityCredential, talking to a fake App
//! Service managed-identity endpoint (IDENTITY_ENDPOINT / IDENTITY_HEADER), and reach Graph as
//! a bearer token. Its own test binary: it sets process environment.

use quell_azure::client::Api;
use quell_azure::{Endpoints, Http};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_managed_identity_token_is_fetched_per_scope_and_used_as_bearer() {
    let server = MockServer::start().await;
    let expires = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600)
        .to_string();
    Mock::given(method("GET"))
        .and(path("/msi/token"))
        .and(header("x-identity-header", "test-identity-header"))
        .and(query_param("resource", "https://graph.microsoft.com"))
        .and(query_param(
            "client_id",
            "11111111-2222-4333-8444-555555555555",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "graph-token-from-msi", "expires_on": expires,
            "token_type": "Bearer", "resource": "https://graph.microsoft.com"
        })))
        .expect(1) // cached by the credential after the first call
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/users/u1/revokeSignInSessions"))
        .and(header("authorization", "Bearer graph-token-from-msi"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": true})))
        .expect(2)
        .mount(&server)
        .await;
    // SAFETY: this test binary holds only this test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", format!("{}/msi/token", server.uri()));
        std::env::set_var("IDENTITY_HEADER", "test-identity-header");
    }
    let env = |k: &str| match k {
        "AZURE_CLIENT_ID" => Some("11111111-2222-4333-8444-555555555555".to_string()),
        _ => None,
    };
    let tokens = quell_azure::token::from_env(env).unwrap();
    let http = Http::new(
        Endpoints {
            // A fake Graph standing in for the public one: tokens are for the public scope.
            graph_scope: "https://graph.microsoft.com/.default".into(),
            ..Endpoints::new(&server.uri(), &server.uri())
        },
        tokens,
    );
    for _ in 0..2 {
        let r = http
            .call(
                reqwest::Method::POST,
                Api::Graph,
                "/v1.0/users/u1/revokeSignInSessions",
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.body["value"], true);
    }
}

#[test]
fn credential_configuration_errors_name_what_to_set() {
    let e = quell_azure::token::from_env(|k| {
        (k == "QUELL_AZURE_CREDENTIAL").then(|| "client_secret".to_string())
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("AZURE_TENANT_ID is required"), "{e}");
    let e = quell_azure::token::from_env(|k| {
        (k == "QUELL_AZURE_CREDENTIAL").then(|| "password".to_string())
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("use managed_identity, workload_identity, client_secret or azure_cli"),
        "{e}"
    );
}
