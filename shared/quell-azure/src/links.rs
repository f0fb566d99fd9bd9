//! Discovers one tenant's links to AWS: the AWS gallery apps (`AWS Single-Account Access`) with
//! their app roles and who is assigned them, the federated identity credentials of applications
//! that trust an AWS account's outbound issuer, and whether IAM Identity Center takes its users
//! from the tenant. Reads only; what the documents mean is decided in `quell_core::links`.
//!
//! Calls (Graph v1.0): `GET /servicePrincipals` (app roles and service principal names, paged),
//! per gallery app `GET /servicePrincipals/{id}/appRoleAssignedTo`, per assigned group
//! `GET /groups/{id}/transitiveMembers/microsoft.graph.user`, the assigned users' UPNs in
//! batches of 15 (`$filter=id in (…)`), and `GET /applications?$expand=federatedIdentityCredentials`.

use std::collections::BTreeMap;

use quell_core::links::{
    Assignment, AwsEnd, EntraEnd, FederatedCredential, Link, LinkKind, LinkMap, Strength,
    federated_credential_links, gallery_links, is_aws_gallery_app,
};
use serde_json::Value;

use crate::client::{Http, seg};
use crate::sweep::all_pages;

/// An Identity Center application's SAML identifier: `https://<region>.signin.aws.amazon.com/platform/saml/<id>`
/// (the "AWS IAM Identity Center" gallery app's Identifier; Microsoft Entra SaaS tutorial
/// "aws-single-sign-on-tutorial").
fn is_identity_center_app(sp: &Value) -> bool {
    sp["servicePrincipalNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|n| n.contains(".signin.aws.amazon.com/platform/saml/"))
}

/// The tenant's links; what could not be read is a gap, not an error.
/// `identity_center_account`: where quell reaches Identity Center (`aws.identity_center.account`).
pub async fn discover(
    http: &Http,
    tenant: &str,
    identity_center_account: Option<&str>,
    now: &str,
) -> LinkMap {
    let mut map = LinkMap {
        discovered_at: now.to_string(),
        ..LinkMap::default()
    };
    let (sps, apps) = tokio::join!(
        all_pages(
            http,
            "/v1.0/servicePrincipals?$select=id,appId,displayName,appRoles,servicePrincipalNames&$top=999"
        ),
        all_pages(
            http,
            "/v1.0/applications?$select=id,appId,displayName&$expand=federatedIdentityCredentials"
        )
    );
    match sps {
        Ok(sps) => {
            for sp in &sps {
                if is_identity_center_app(sp)
                    && let Some(account) = identity_center_account
                {
                    map.links.push(Link {
                        tenant: tenant.to_ascii_lowercase(),
                        entra: EntraEnd::AnyUser,
                        aws: AwsEnd::IdentityCenter {
                            account: account.to_string(),
                        },
                        kind: LinkKind::IdentityCenter,
                        strength: Strength::Inferred,
                    });
                }
                if !is_aws_gallery_app(&sp["appRoles"]) {
                    continue;
                }
                let Some(id) = sp["id"].as_str() else {
                    continue;
                };
                match assignments(http, id).await {
                    Ok(a) => map
                        .links
                        .extend(gallery_links(tenant, id, &sp["appRoles"], &a)),
                    Err(gap) => map.gaps.push(format!("gallery app {id}: {gap}")),
                }
            }
        }
        Err(e) => map.gaps.push(format!(
            "the service principals could not be read ({}: {}); grant Application.Read.All",
            e.code, e.message
        )),
    }
    match apps {
        Ok(apps) => {
            for app in &apps {
                let (Some(object_id), Some(app_id)) = (app["id"].as_str(), app["appId"].as_str())
                else {
                    continue;
                };
                let creds: Vec<FederatedCredential> = app["federatedIdentityCredentials"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| serde_json::from_value(c.clone()).ok())
                    .collect();
                map.links.extend(federated_credential_links(
                    tenant,
                    object_id,
                    app_id,
                    app["displayName"].as_str(),
                    &creds,
                ));
            }
        }
        Err(e) => map.gaps.push(format!(
            "the applications' federated credentials could not be read ({}: {}); grant Application.Read.All",
            e.code, e.message
        )),
    }
    map.normalized()
}

/// Every user assigned an app role of the gallery app, directly or through a group, with
/// their UPN (the session name the gallery app gives AWS).
async fn assignments(http: &Http, sp: &str) -> Result<Vec<Assignment>, String> {
    let rows = all_pages(
        http,
        &format!(
            "/v1.0/servicePrincipals/{}/appRoleAssignedTo?$top=999",
            seg(sp)
        ),
    )
    .await
    .map_err(|e| format!("assignments could not be read ({}: {})", e.code, e.message))?;
    // (user id, app role id)
    let mut pairs: Vec<(String, String)> = Vec::new();
    for r in &rows {
        let (Some(principal), Some(role)) = (r["principalId"].as_str(), r["appRoleId"].as_str())
        else {
            continue;
        };
        match r["principalType"].as_str() {
            Some("User") => pairs.push((principal.to_ascii_lowercase(), role.to_string())),
            Some("Group") => {
                let members = all_pages(
                    http,
                    &format!(
                        "/v1.0/groups/{}/transitiveMembers/microsoft.graph.user?$select=id&$top=999",
                        seg(principal)
                    ),
                )
                .await
                .map_err(|e| {
                    format!(
                        "members of group {principal} could not be read ({}: {}); grant GroupMember.Read.All",
                        e.code, e.message
                    )
                })?;
                pairs.extend(
                    members
                        .iter()
                        .filter_map(|m| m["id"].as_str())
                        .map(|id| (id.to_ascii_lowercase(), role.to_string())),
                );
            }
            _ => {}
        }
    }
    let mut ids: Vec<&str> = pairs.iter().map(|(u, _)| u.as_str()).collect();
    ids.sort();
    ids.dedup();
    let mut upns: BTreeMap<String, String> = BTreeMap::new();
    for chunk in ids.chunks(15) {
        let list: Vec<String> = chunk
            .iter()
            .map(|i| format!("'{}'", i.replace('\'', "")))
            .collect();
        let filter = format!("id in ({})", list.join(","));
        let users = all_pages(
            http,
            &format!(
                "/v1.0/users?$filter={}&$select=id,userPrincipalName",
                urlencoding::encode(&filter)
            ),
        )
        .await
        .map_err(|e| format!("users could not be read ({}: {})", e.code, e.message))?;
        for u in users {
            if let (Some(id), Some(upn)) = (u["id"].as_str(), u["userPrincipalName"].as_str()) {
                upns.insert(id.to_ascii_lowercase(), upn.to_string());
            }
        }
    }
    Ok(pairs
        .into_iter()
        .map(|(user_id, app_role_id)| Assignment {
            upn: upns.get(&user_id).cloned(),
            user_id,
            app_role_id,
        })
        .collect())
}
