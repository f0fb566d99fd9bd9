//! Discovers one account's links to Entra tenants: the IAM SAML and OIDC providers whose
//! metadata or URL names an Entra tenant, and the roles whose trust policy lets them federate
//! in. Reads only; what the documents mean is decided in `quell_core::links`.
//!
//! Calls: `ListSAMLProviders` and `GetSAMLProvider` per provider, `ListOpenIDConnectProviders`
//! and `GetOpenIDConnectProvider` per provider (all together), then, only when an Entra
//! provider was found, `GetAccountAuthorizationDetails` (roles, with their trust policies) in
//! pages: the same call the sweep already makes.

use aws_sdk_iam::types::EntityType;
use quell_core::links::{
    LinkMap, Provider, tenant_of_issuer, tenant_of_saml_metadata, trust_links,
};

use crate::error::classify;

/// The account's links; what could not be read is a gap, not an error.
pub async fn discover(iam: &aws_sdk_iam::Client, account: &str, now: &str) -> LinkMap {
    let mut map = LinkMap {
        discovered_at: now.to_string(),
        ..LinkMap::default()
    };
    let (saml, oidc) = tokio::join!(saml_providers(iam), oidc_providers(iam));
    let mut providers = Vec::new();
    for found in [saml, oidc] {
        match found {
            Ok(p) => providers.extend(p),
            Err(gap) => map.gaps.push(format!("account {account}: {gap}")),
        }
    }
    if providers.is_empty() {
        return map;
    }
    let mut marker: Option<String> = None;
    loop {
        let page = match iam
            .get_account_authorization_details()
            .filter(EntityType::Role)
            .set_marker(marker.take())
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                map.gaps.push(format!(
                    "account {account}: the roles could not be read ({})",
                    classify(e)
                ));
                return map;
            }
        };
        for r in page.role_detail_list() {
            let (Some(name), Some(trust)) = (
                r.role_name(),
                r.assume_role_policy_document().and_then(crate::docs::parse),
            ) else {
                continue;
            };
            map.links
                .extend(trust_links(account, name, &trust, &providers));
        }
        match (page.is_truncated(), page.marker()) {
            (true, Some(m)) => marker = Some(m.to_string()),
            _ => break,
        }
    }
    map.normalized()
}

async fn saml_providers(iam: &aws_sdk_iam::Client) -> Result<Vec<Provider>, String> {
    let list = iam
        .list_saml_providers()
        .send()
        .await
        .map_err(|e| format!("the SAML providers could not be listed ({})", classify(e)))?;
    let arns: Vec<String> = list
        .saml_provider_list()
        .iter()
        .filter_map(|p| p.arn().map(str::to_string))
        .collect();
    let reads = arns.iter().map(|arn| async move {
        let out = iam.get_saml_provider().saml_provider_arn(arn).send().await;
        (arn.clone(), out)
    });
    let mut providers = Vec::new();
    for (arn, out) in futures_util::future::join_all(reads).await {
        let Ok(out) = out else { continue };
        if let Some(tenant) = out
            .saml_metadata_document()
            .and_then(tenant_of_saml_metadata)
        {
            providers.push(Provider {
                arn,
                tenant,
                oidc_url: None,
            });
        }
    }
    Ok(providers)
}

async fn oidc_providers(iam: &aws_sdk_iam::Client) -> Result<Vec<Provider>, String> {
    let list = iam
        .list_open_id_connect_providers()
        .send()
        .await
        .map_err(|e| format!("the OIDC providers could not be listed ({})", classify(e)))?;
    let arns: Vec<String> = list
        .open_id_connect_provider_list()
        .iter()
        .filter_map(|p| p.arn().map(str::to_string))
        .collect();
    let reads = arns.iter().map(|arn| async move {
        let out = iam
            .get_open_id_connect_provider()
            .open_id_connect_provider_arn(arn)
            .send()
            .await;
        (arn.clone(), out)
    });
    let mut providers = Vec::new();
    for (arn, out) in futures_util::future::join_all(reads).await {
        let Ok(out) = out else { continue };
        let Some(url) = out.url() else { continue };
        // IAM keeps the URL without its scheme; the condition keys use it as is.
        let url = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string();
        if let Some(tenant) = tenant_of_issuer(&url) {
            providers.push(Provider {
                arn,
                tenant,
                oidc_url: Some(url),
            });
        }
    }
    Ok(providers)
}
