//! Cross-cloud links: which AWS roles an Entra identity can act as, and which Entra
//! applications trust an AWS role's tokens. Pure: the adapters read the clouds
//! (`quell_aws::links`, `quell_azure::links`) and hand the raw documents to the functions here.
//!
//! A link map is data, not authority. The planner uses it to decide what to ask for; every
//! cross-cloud action names the link it comes from ([`Link`] in `Action::via`), and the executor
//! re-reads that link live before it writes (the role's trust policy still names the provider;
//! the federated credential still trusts the role), so a forged or stale row can at most make
//! quell contain a real, live link of the compromised identity.
//!
//! What a link lets quell do:
//!
//! | link | how it is known | strength | quell does |
//! |---|---|---|---|
//! | `saml_app_role` | the AWS gallery app assigns the user an app role `"<role ARN>,<provider ARN>"` | exact | deny the role's sessions named by the user's UPN |
//! | `saml_provider` | the role trusts a SAML provider whose metadata names the tenant | inferred | the same deny (a UPN-named session is hers only if the app names sessions by UPN, the gallery app's default) |
//! | `oidc_subject` | the role trusts the tenant's OIDC issuer with an exact `sub` | exact | deny every session of the role issued before now (a web-identity session is named by its caller, so it cannot be singled out) |
//! | `oidc_tenant` | the role trusts the tenant's OIDC issuer without an exact `sub` | inferred | reported only |
//! | `federated_credential` | an Entra application trusts the AWS account's outbound issuer with the role ARN as subject | exact | remove the federated credential (kept in the ledger; a human's release recreates it) |
//! | `identity_center` | Identity Center takes its users from the tenant (user name = UPN) | inferred | deny the Identity Center user in every permission set |

use serde::{Deserialize, Serialize};

use crate::model::{Subject, ids};

/// A link map older than this is called stale in the plan: the sweeps refresh it daily.
pub const STALE_AFTER_SECONDS: i64 = 24 * 3600;

/// How quell learned a link, which says how far it is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    /// Named on both sides: an app role assignment, an exact `sub` condition, a federated
    /// credential's subject.
    Exact,
    /// Follows from a configuration that lets anyone of the tenant in (a SAML provider trust,
    /// sessions named by UPN).
    Inferred,
}

/// What kind of link, and the facts its executor re-checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LinkKind {
    /// The AWS gallery app (`AWS Single-Account Access`) assigns the user this role.
    SamlAppRole {
        /// The gallery app's service principal.
        service_principal: String,
        app_role: String,
    },
    /// The role trusts the tenant's SAML provider (`sts:AssumeRoleWithSAML`).
    SamlProvider,
    /// The role trusts the tenant's OIDC issuer with exactly this `sub`.
    OidcSubject { sub: String },
    /// The role trusts the tenant's OIDC issuer for any subject of an audience.
    OidcTenant,
    /// An Entra application's federated identity credential trusts the role's tokens.
    FederatedCredential(FederatedCredential),
    /// Identity Center takes its users from the tenant; its user name is the UPN.
    IdentityCenter,
}

impl LinkKind {
    pub fn name(&self) -> &'static str {
        match self {
            LinkKind::SamlAppRole { .. } => "saml_app_role",
            LinkKind::SamlProvider => "saml_provider",
            LinkKind::OidcSubject { .. } => "oidc_subject",
            LinkKind::OidcTenant => "oidc_tenant",
            LinkKind::FederatedCredential(_) => "federated_credential",
            LinkKind::IdentityCenter => "identity_center",
        }
    }
}

/// An Entra federated identity credential as Graph returns it
/// (`microsoft.graph.federatedIdentityCredential`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FederatedCredential {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The Entra end of a link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntraEnd {
    /// One person.
    User {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upn: Option<String>,
    },
    /// Any user of the tenant (a SAML or Identity Center trust of the whole tenant).
    AnyUser,
    /// A service principal or managed identity, by object id (the token's `sub`/`oid`).
    Principal { id: String },
    /// An application registration (the owner of a federated credential).
    Application {
        object_id: String,
        app_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

/// The AWS end of a link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AwsEnd {
    Role {
        account: String,
        name: String,
        /// The SAML or OIDC provider the role's trust names.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
    },
    IdentityCenter {
        account: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Link {
    pub tenant: String,
    pub entra: EntraEnd,
    pub aws: AwsEnd,
    #[serde(flatten)]
    pub kind: LinkKind,
    pub strength: Strength,
}

impl Link {
    /// One line: what links to what, and how it is known.
    pub fn describe(&self) -> String {
        let entra = match &self.entra {
            EntraEnd::User { upn: Some(u), .. } => u.clone(),
            EntraEnd::User { id: Some(i), .. } => format!("user {i}"),
            EntraEnd::User { .. } => "a user".into(),
            EntraEnd::AnyUser => format!("any user of tenant {}", self.tenant),
            EntraEnd::Principal { id } => format!("service principal {id}"),
            EntraEnd::Application { app_id, name, .. } => match name {
                Some(n) => format!("application {n} ({app_id})"),
                None => format!("application {app_id}"),
            },
        };
        let aws = match &self.aws {
            AwsEnd::Role { account, name, .. } => format!("role {name} in {account}"),
            AwsEnd::IdentityCenter { account } => format!("Identity Center in {account}"),
        };
        let strength = match self.strength {
            Strength::Exact => "exact",
            Strength::Inferred => "inferred",
        };
        format!("{entra} ↔ {aws} ({}, {strength})", self.kind.name())
    }
}

/// Every link quell found, and when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkMap {
    /// RFC 3339, by the injected clock of the run that discovered it.
    pub discovered_at: String,
    #[serde(default)]
    pub links: Vec<Link>,
    /// What discovery could not read (an account without the member role, a Graph 403).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
}

impl LinkMap {
    /// Sorted and deduplicated, so one discovery always stores the same bytes.
    pub fn normalized(mut self) -> LinkMap {
        self.links
            .sort_by_key(|l| serde_json::to_string(l).unwrap_or_default());
        self.links.dedup();
        self.gaps.sort();
        self.gaps.dedup();
        self
    }

    /// Merges the map of another cloud or account.
    pub fn extend(&mut self, other: LinkMap) {
        self.links.extend(other.links);
        self.gaps.extend(other.gaps);
    }

    /// The links of one identity, as a finding names it.
    pub fn of_subject(&self, s: &Subject) -> Vec<&Link> {
        self.links.iter().filter(|l| l.involves(s)).collect()
    }

    /// The links of a principal named by the CLI: a UPN, an object id, a role ARN or name.
    pub fn of_name(&self, name: &str) -> Vec<&Link> {
        let n = name.to_ascii_lowercase();
        self.links
            .iter()
            .filter(|l| {
                let entra = match &l.entra {
                    EntraEnd::User { id, upn } => {
                        id.as_deref().is_some_and(|i| i.eq_ignore_ascii_case(&n))
                            || upn.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(&n))
                    }
                    EntraEnd::AnyUser => false,
                    EntraEnd::Principal { id } => id.eq_ignore_ascii_case(&n),
                    EntraEnd::Application {
                        object_id, app_id, ..
                    } => object_id.eq_ignore_ascii_case(&n) || app_id.eq_ignore_ascii_case(&n),
                };
                let aws = match &l.aws {
                    AwsEnd::Role { account, name, .. } => {
                        n == name.to_ascii_lowercase()
                            || n.ends_with(&format!(
                                ":{account}:role/{}",
                                name.to_ascii_lowercase()
                            ))
                    }
                    AwsEnd::IdentityCenter { .. } => false,
                };
                entra || aws
            })
            .collect()
    }

    /// Seconds since discovery, by `now_unix`; `None` when the map's time does not parse.
    pub fn age_seconds(&self, now_unix: i64) -> Option<i64> {
        let at = time::OffsetDateTime::parse(
            &self.discovered_at,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()?;
        Some(now_unix - at.unix_timestamp())
    }
}

impl Link {
    fn involves(&self, s: &Subject) -> bool {
        let tenant_ok = |t: &Option<String>| {
            t.as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(&self.tenant))
        };
        match (s, &self.entra, &self.aws) {
            (
                Subject::EntraUser {
                    tenant, id, name, ..
                },
                EntraEnd::User { id: lid, upn },
                _,
            ) => {
                tenant_ok(tenant)
                    && ((id.is_some()
                        && lid.is_some()
                        && id.as_deref().map(str::to_ascii_lowercase)
                            == lid.as_deref().map(str::to_ascii_lowercase))
                        || (name.is_some()
                            && upn.is_some()
                            && name.as_deref().map(str::to_ascii_lowercase)
                                == upn.as_deref().map(str::to_ascii_lowercase)))
            }
            (
                Subject::EntraUser {
                    tenant,
                    name: Some(_),
                    ..
                },
                EntraEnd::AnyUser,
                _,
            ) => tenant_ok(tenant),
            (
                Subject::ServicePrincipal { tenant, id, .. }
                | Subject::ManagedIdentity { tenant, id, .. },
                EntraEnd::Principal { id: lid },
                _,
            ) => tenant_ok(tenant) && id.eq_ignore_ascii_case(lid),
            (
                Subject::IamRole { account, name } | Subject::RoleSession { account, name, .. },
                _,
                AwsEnd::Role {
                    account: la,
                    name: ln,
                    ..
                },
            ) => {
                matches!(self.kind, LinkKind::FederatedCredential(_))
                    && account == la
                    && name.eq_ignore_ascii_case(ln)
            }
            _ => false,
        }
    }
}

// ---- Pure discovery: raw documents in, links out. ----

/// The Entra tenant a SAML provider's metadata names: Entra's tenant-specific metadata has
/// `entityID="https://sts.windows.net/<tenant>/"` (Microsoft identity platform, "Federation
/// metadata"). `None` for any other identity provider.
pub fn tenant_of_saml_metadata(xml: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(i) = rest.find("entityID=") {
        let after = rest.get(i + "entityID=".len()..)?;
        let quote = after.chars().next()?;
        if quote == '"' || quote == '\'' {
            let value = after.get(1..)?;
            let end = value.find(quote)?;
            if let Some(t) = tenant_of_issuer(value.get(..end)?) {
                return Some(t);
            }
        }
        rest = after;
    }
    None
}

/// The Entra tenant an issuer or OIDC provider URL names: `https://sts.windows.net/<tenant>/`
/// (v1 tokens, what managed identities get for most audiences) or
/// `https://login.microsoftonline.com/<tenant>/v2.0`. IAM stores OIDC provider URLs without the
/// scheme; both forms are accepted.
pub fn tenant_of_issuer(url: &str) -> Option<String> {
    let u = url
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let rest = u
        .strip_prefix("sts.windows.net/")
        .or_else(|| u.strip_prefix("login.microsoftonline.com/"))?;
    let tenant = rest.split('/').next()?;
    ids::is_guid(tenant).then(|| tenant.to_ascii_lowercase())
}

/// True for an AWS account's outbound web identity issuer
/// (`https://<id>.tokens.sts.global.api.aws`, IAM "Outbound identity federation").
pub fn is_aws_outbound_issuer(issuer: &str) -> bool {
    let Some(host) = issuer
        .strip_prefix("https://")
        .map(|h| h.trim_end_matches('/'))
    else {
        return false;
    };
    host.strip_suffix(".tokens.sts.global.api.aws")
        .is_some_and(|id| {
            !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// One provider quell found in an account, with the tenant it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub arn: String,
    pub tenant: String,
    /// The OIDC provider's URL as IAM stores it (no scheme), the prefix of its condition keys.
    pub oidc_url: Option<String>,
}

/// The links one role's trust policy makes to the tenants' providers.
pub fn trust_links(
    account: &str,
    role: &str,
    trust: &serde_json::Value,
    providers: &[Provider],
) -> Vec<Link> {
    let mut out = Vec::new();
    for st in statements(trust) {
        if st.get("Effect").and_then(|e| e.as_str()) != Some("Allow") {
            continue;
        }
        let actions = strings(st.get("Action"));
        let federated = strings(st.get("Principal").and_then(|p| p.get("Federated")));
        for provider in providers
            .iter()
            .filter(|p| federated.iter().any(|f| *f == p.arn))
        {
            let aws = AwsEnd::Role {
                account: account.to_string(),
                name: role.to_string(),
                provider: Some(provider.arn.clone()),
            };
            let saml = actions
                .iter()
                .any(|a| a.eq_ignore_ascii_case("sts:AssumeRoleWithSAML"));
            let web = actions
                .iter()
                .any(|a| a.eq_ignore_ascii_case("sts:AssumeRoleWithWebIdentity"));
            if saml && provider.oidc_url.is_none() {
                out.push(Link {
                    tenant: provider.tenant.clone(),
                    entra: EntraEnd::AnyUser,
                    aws: aws.clone(),
                    kind: LinkKind::SamlProvider,
                    strength: Strength::Inferred,
                });
            }
            if let (true, Some(url)) = (web, &provider.oidc_url) {
                let subs = exact_condition(st.get("Condition"), &format!("{url}:sub"));
                if subs.is_empty() {
                    out.push(Link {
                        tenant: provider.tenant.clone(),
                        entra: EntraEnd::AnyUser,
                        aws: aws.clone(),
                        kind: LinkKind::OidcTenant,
                        strength: Strength::Inferred,
                    });
                }
                for sub in subs.into_iter().filter(|s| ids::is_guid(s)) {
                    out.push(Link {
                        tenant: provider.tenant.clone(),
                        entra: EntraEnd::Principal {
                            id: sub.to_ascii_lowercase(),
                        },
                        aws: aws.clone(),
                        kind: LinkKind::OidcSubject {
                            sub: sub.to_ascii_lowercase(),
                        },
                        strength: Strength::Exact,
                    });
                }
            }
        }
    }
    out
}

/// True when `trust` still lets `provider` federate into the role with `action`: what the
/// executor re-reads before acting on a link.
pub fn trust_names_provider(trust: &serde_json::Value, provider: &str, saml: bool) -> bool {
    let want = if saml {
        "sts:AssumeRoleWithSAML"
    } else {
        "sts:AssumeRoleWithWebIdentity"
    };
    statements(trust).iter().any(|st| {
        st.get("Effect").and_then(|e| e.as_str()) == Some("Allow")
            && strings(st.get("Action"))
                .iter()
                .any(|a| a.eq_ignore_ascii_case(want))
            && strings(st.get("Principal").and_then(|p| p.get("Federated"))).contains(&provider)
    })
}

/// True when `trust` still lets the OIDC `provider` (an `oidc-provider/<url>` ARN) federate
/// into the role for exactly `sub` (a `StringEquals` on `<url>:sub`): what the executor
/// re-reads before revoking a role's sessions for a compromised service principal.
pub fn trust_names_subject(trust: &serde_json::Value, provider: &str, sub: &str) -> bool {
    let Some(url) = provider.split_once(":oidc-provider/").map(|(_, u)| u) else {
        return false;
    };
    statements(trust).iter().any(|st| {
        st.get("Effect").and_then(|e| e.as_str()) == Some("Allow")
            && strings(st.get("Action"))
                .iter()
                .any(|a| a.eq_ignore_ascii_case("sts:AssumeRoleWithWebIdentity"))
            && strings(st.get("Principal").and_then(|p| p.get("Federated"))).contains(&provider)
            && exact_condition(st.get("Condition"), &format!("{url}:sub"))
                .iter()
                .any(|s| s.eq_ignore_ascii_case(sub))
    })
}

/// One assignment of the AWS gallery app (`GET /servicePrincipals/{id}/appRoleAssignedTo`),
/// with the user's UPN once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub app_role_id: String,
    pub user_id: String,
    pub upn: Option<String>,
}

/// The role and provider an AWS gallery app role's `value` names: `"<role ARN>,<provider ARN>"`
/// (the SAML `Role` attribute's format; either order is accepted).
pub fn gallery_role_value(value: &str) -> Option<(String, String, String)> {
    let (a, b) = value.split_once(',')?;
    let (a, b) = (a.trim(), b.trim());
    let (role, provider) = if a.contains(":saml-provider/") {
        (b, a)
    } else {
        (a, b)
    };
    let account = arn_account(role)?;
    let name = role.split(":role/").nth(1)?.rsplit('/').next()?;
    if !provider.contains(":saml-provider/") || arn_account(provider)? != account {
        return None;
    }
    ids::is_iam_name(name).then(|| (account, name.to_string(), provider.to_string()))
}

fn arn_account(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", p, "iam", "", account, _] if p.starts_with("aws") && ids::is_account(account) => {
            Some(account.to_string())
        }
        _ => None,
    }
}

/// The links an AWS gallery app makes: each user assigned an app role that names a role and its
/// SAML provider. `app_roles` is the service principal's `appRoles` array.
pub fn gallery_links(
    tenant: &str,
    service_principal: &str,
    app_roles: &serde_json::Value,
    assignments: &[Assignment],
) -> Vec<Link> {
    let roles: Vec<(String, (String, String, String))> = app_roles
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let id = r.get("id")?.as_str()?.to_ascii_lowercase();
            let value = gallery_role_value(r.get("value")?.as_str()?)?;
            Some((id, value))
        })
        .collect();
    let mut out = Vec::new();
    for a in assignments {
        for (_, (account, name, provider)) in roles
            .iter()
            .filter(|(id, _)| id.eq_ignore_ascii_case(&a.app_role_id))
        {
            out.push(Link {
                tenant: tenant.to_ascii_lowercase(),
                entra: EntraEnd::User {
                    id: Some(a.user_id.to_ascii_lowercase()),
                    upn: a.upn.as_ref().map(|u| u.to_ascii_lowercase()),
                },
                aws: AwsEnd::Role {
                    account: account.clone(),
                    name: name.clone(),
                    provider: Some(provider.clone()),
                },
                kind: LinkKind::SamlAppRole {
                    service_principal: service_principal.to_string(),
                    app_role: a.app_role_id.to_ascii_lowercase(),
                },
                strength: Strength::Exact,
            });
        }
    }
    out
}

/// True when a service principal's app roles look like the AWS gallery app's.
pub fn is_aws_gallery_app(app_roles: &serde_json::Value) -> bool {
    app_roles
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("value")?.as_str())
        .any(|v| gallery_role_value(v).is_some())
}

/// The links an application's federated credentials make to AWS roles: issuer an AWS outbound
/// issuer, subject a role ARN (the `sub` of a role session's `GetWebIdentityToken`).
pub fn federated_credential_links(
    tenant: &str,
    object_id: &str,
    app_id: &str,
    name: Option<&str>,
    credentials: &[FederatedCredential],
) -> Vec<Link> {
    credentials
        .iter()
        .filter(|c| is_aws_outbound_issuer(&c.issuer))
        .filter_map(|c| {
            let account = arn_account(&c.subject)?;
            let role = c.subject.split(":role/").nth(1)?.rsplit('/').next()?;
            ids::is_iam_name(role).then(|| Link {
                tenant: tenant.to_ascii_lowercase(),
                entra: EntraEnd::Application {
                    object_id: object_id.to_ascii_lowercase(),
                    app_id: app_id.to_ascii_lowercase(),
                    name: name.map(str::to_string),
                },
                aws: AwsEnd::Role {
                    account,
                    name: role.to_string(),
                    provider: None,
                },
                kind: LinkKind::FederatedCredential(c.clone()),
                strength: Strength::Exact,
            })
        })
        .collect()
}

fn statements(doc: &serde_json::Value) -> Vec<&serde_json::Value> {
    match doc.get("Statement") {
        Some(serde_json::Value::Array(a)) => a.iter().collect(),
        Some(o @ serde_json::Value::Object(_)) => vec![o],
        _ => Vec::new(),
    }
}

fn strings(v: Option<&serde_json::Value>) -> Vec<&str> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// The values an exact (`StringEquals`) condition on `key` allows.
fn exact_condition(cond: Option<&serde_json::Value>, key: &str) -> Vec<String> {
    let Some(serde_json::Value::Object(ops)) = cond else {
        return Vec::new();
    };
    ops.iter()
        .filter(|(op, _)| {
            op.as_str() == "StringEquals" || op.as_str() == "ForAnyValue:StringEquals"
        })
        .filter_map(|(_, kv)| kv.as_object())
        .flat_map(|kv| {
            kv.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                .flat_map(|(_, v)| strings(Some(v)).into_iter().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---- `quell doctor`: what a deployment's cross-cloud reach lacks. Pure comparisons. ----

/// The audience Entra requires of an external token it exchanges.
pub const ENTRA_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// One check of `quell doctor`: what it found, and when something is missing, the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: &str, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }
    pub fn gap(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Whether the Entra application `app_id` has a federated credential that accepts the AWS
/// tokens of `subject` (a role ARN) from `issuer` (the account's outbound issuer): Entra
/// matches `issuer` and `subject` exactly and requires the exchange audience (Microsoft
/// identity platform, "Workload identity federation": the credential's issuer, subject and
/// audience must match the external token's `iss`, `sub` and `aud`).
pub fn check_federated_credential(
    app_id: &str,
    issuer: &str,
    subject: &str,
    found: &[FederatedCredential],
) -> Check {
    const CHECK: &str = "federated credential";
    let create = format!(
        "az ad app federated-credential create --id {app_id} --parameters '{{\"name\":\"quell-{}\",\"issuer\":\"{issuer}\",\"subject\":\"{subject}\",\"audiences\":[\"{ENTRA_EXCHANGE_AUDIENCE}\"]}}'",
        subject.rsplit('/').next().unwrap_or("aws")
    );
    let audience_ok =
        |c: &FederatedCredential| c.audiences.iter().any(|a| a == ENTRA_EXCHANGE_AUDIENCE);
    if let Some(c) = found
        .iter()
        .find(|c| c.issuer == issuer && c.subject == subject)
    {
        return if audience_ok(c) {
            Check::ok(
                CHECK,
                format!("{:?} trusts {subject} from {issuer}", c.name),
            )
        } else {
            Check::gap(
                CHECK,
                format!(
                    "{:?} matches issuer and subject, but its audiences are {:?}, not [{ENTRA_EXCHANGE_AUDIENCE}]",
                    c.name, c.audiences
                ),
                format!(
                    "az ad app federated-credential update --id {app_id} --federated-credential-id {} --parameters '{{\"audiences\":[\"{ENTRA_EXCHANGE_AUDIENCE}\"]}}'",
                    c.name
                ),
            )
        };
    }
    if let Some(c) = found.iter().find(|c| c.issuer == issuer) {
        return Check::gap(
            CHECK,
            format!(
                "wrong subject: {:?} trusts subject {} from this issuer, but the function's tokens carry sub = {subject} (its role ARN, not a session ARN)",
                c.name, c.subject
            ),
            format!(
                "az ad app federated-credential update --id {app_id} --federated-credential-id {} --parameters '{{\"subject\":\"{subject}\"}}'",
                c.name
            ),
        );
    }
    if let Some(c) = found.iter().find(|c| c.subject == subject) {
        return Check::gap(
            CHECK,
            format!(
                "wrong issuer: {:?} trusts {subject} from {}, but this account's outbound issuer is {issuer}",
                c.name, c.issuer
            ),
            format!(
                "az ad app federated-credential update --id {app_id} --federated-credential-id {} --parameters '{{\"issuer\":\"{issuer}\"}}'",
                c.name
            ),
        );
    }
    Check::gap(
        CHECK,
        format!("application {app_id} has no federated credential for {subject} from {issuer}"),
        create,
    )
}

/// Whether a role's trust policy lets a token with `claims` in through
/// `sts:AssumeRoleWithWebIdentity`: the OIDC provider of the token's issuer, and the `aud` and
/// `sub` conditions (IAM User Guide, "Available keys for OIDC federation": `<provider
/// url>:aud` and `:sub` are the token's claims).
pub fn check_trust(
    role: &str,
    trust: &serde_json::Value,
    claims: &serde_json::Value,
) -> Vec<Check> {
    const CHECK: &str = "member role trust";
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (iss, aud, sub) = (text("iss"), text("aud"), text("sub"));
    let url = iss
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string();
    let provider_suffix = format!(":oidc-provider/{url}");
    let allowing: Vec<&serde_json::Value> = statements(trust)
        .into_iter()
        .filter(|st| {
            st.get("Effect").and_then(|e| e.as_str()) == Some("Allow")
                && strings(st.get("Action"))
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case("sts:AssumeRoleWithWebIdentity"))
                && strings(st.get("Principal").and_then(|p| p.get("Federated")))
                    .iter()
                    .any(|f| f.ends_with(&provider_suffix))
        })
        .collect();
    if allowing.is_empty() {
        return vec![Check::gap(
            CHECK,
            format!(
                "{role} does not trust the token's issuer {iss} (no sts:AssumeRoleWithWebIdentity for an OIDC provider {url})"
            ),
            "deploy infra/aws/member-role.yaml with EntraTenantId, EntraAudience and QuellManagedIdentityObjectId set",
        )];
    }
    let mut out = Vec::new();
    for (claim, value) in [("aud", &aud), ("sub", &sub)] {
        let allowed: Vec<String> = allowing
            .iter()
            .flat_map(|st| exact_condition(st.get("Condition"), &format!("{url}:{claim}")))
            .collect();
        if allowed.is_empty() {
            out.push(Check::gap(
                CHECK,
                format!("{role} sets no {claim} condition: any identity of the issuer with any {claim} could assume it"),
                format!("pin {url}:{claim} to {value} in the trust policy (infra/aws/member-role.yaml does)"),
            ));
        } else if allowed.iter().any(|a| a == value) {
            out.push(Check::ok(
                CHECK,
                format!("{claim} = {value} is what {role} trusts"),
            ));
        } else {
            let hint = if claim == "aud" {
                " (a managed identity's token may carry the application's client id rather than its identifier URI: use what the token carries)"
            } else {
                " (sub is the managed identity's object id, its principalId)"
            };
            out.push(Check::gap(
                CHECK,
                format!(
                    "wrong {claim}: the token carries {value}, {role} trusts {allowed:?}{hint}"
                ),
                format!(
                    "set the member role's {} to {value} and redeploy infra/aws/member-role.yaml",
                    if claim == "aud" {
                        "EntraAudience"
                    } else {
                        "QuellManagedIdentityObjectId"
                    }
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "11111111-2222-3333-4444-555555555555";
    const ACCOUNT: &str = "123456789012";

    fn saml_provider() -> Provider {
        Provider {
            arn: format!("arn:aws:iam::{ACCOUNT}:saml-provider/EntraID"),
            tenant: TENANT.into(),
            oidc_url: None,
        }
    }

    #[test]
    fn entra_metadata_names_its_tenant() {
        let xml = format!(
            r#"<?xml version="1.0"?><EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" ID="_x" entityID="https://sts.windows.net/{TENANT}/"><IDPSSODescriptor/></EntityDescriptor>"#
        );
        assert_eq!(tenant_of_saml_metadata(&xml).as_deref(), Some(TENANT));
        assert_eq!(
            tenant_of_saml_metadata(r#"<EntityDescriptor entityID="http://www.okta.com/exk1"/>"#),
            None
        );
        assert_eq!(tenant_of_saml_metadata("entityID="), None);
        assert_eq!(
            tenant_of_issuer(&format!("login.microsoftonline.com/{TENANT}/v2.0")).as_deref(),
            Some(TENANT)
        );
        assert_eq!(tenant_of_issuer("sts.windows.net/not-a-guid/"), None);
    }

    #[test]
    fn saml_trust_links_the_role_to_the_tenant() {
        let trust = json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{ACCOUNT}:saml-provider/EntraID")},
            "Action": "sts:AssumeRoleWithSAML",
            "Condition": {"StringEquals": {"SAML:aud": "https://signin.aws.amazon.com/saml"}}
        }]});
        let links = trust_links(ACCOUNT, "Admins", &trust, &[saml_provider()]);
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].kind, LinkKind::SamlProvider);
        assert_eq!(links[0].strength, Strength::Inferred);
        assert!(trust_names_provider(&trust, &saml_provider().arn, true));
        assert!(!trust_names_provider(&trust, &saml_provider().arn, false));
        // A provider of another IdP links nothing.
        assert!(trust_links(ACCOUNT, "Admins", &trust, &[]).is_empty());
    }

    #[test]
    fn an_exact_sub_is_an_exact_link_and_no_sub_is_inferred() {
        let url = format!("sts.windows.net/{TENANT}/");
        let p = Provider {
            arn: format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{url}"),
            tenant: TENANT.into(),
            oidc_url: Some(url.clone()),
        };
        let mi = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        let exact = json!({"Statement": {"Effect": "Allow", "Principal": {"Federated": [p.arn.clone()]},
            "Action": ["sts:AssumeRoleWithWebIdentity"],
            "Condition": {"StringEquals": {format!("{url}:sub"): mi, format!("{url}:aud"): "api://quell"}}}});
        let links = trust_links(ACCOUNT, "Reader", &exact, std::slice::from_ref(&p));
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].entra, EntraEnd::Principal { id: mi.into() });
        assert_eq!(links[0].strength, Strength::Exact);
        let mi_subject = Subject::ManagedIdentity {
            tenant: Some(TENANT.into()),
            id: mi.into(),
            name: None,
        };
        let map = LinkMap {
            links: links.clone(),
            ..LinkMap::default()
        };
        assert_eq!(map.of_subject(&mi_subject).len(), 1);
        assert!(trust_names_subject(&exact, &p.arn, mi));
        assert!(!trust_names_subject(
            &exact,
            &p.arn,
            "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"
        ));
        let open = json!({"Statement": [{"Effect": "Allow", "Principal": {"Federated": p.arn.clone()},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringLike": {format!("{url}:sub"): "*"}}}]});
        let links = trust_links(ACCOUNT, "Reader", &open, &[p]);
        assert_eq!(links[0].kind, LinkKind::OidcTenant);
        assert_eq!(links[0].strength, Strength::Inferred);
    }

    #[test]
    fn the_gallery_app_links_each_assigned_user_to_their_roles() {
        let roles = json!([
            {"id": "r1", "value": format!("arn:aws:iam::{ACCOUNT}:role/Admins,arn:aws:iam::{ACCOUNT}:saml-provider/EntraID")},
            {"id": "r2", "value": format!("arn:aws:iam::{ACCOUNT}:saml-provider/EntraID,arn:aws:iam::{ACCOUNT}:role/ReadOnly")},
            {"id": "r3", "value": "User"},
            {"id": "r4", "value": format!("arn:aws:iam::{ACCOUNT}:role/Other,arn:aws:iam::999999999999:saml-provider/X")}
        ]);
        assert!(is_aws_gallery_app(&roles));
        assert!(!is_aws_gallery_app(&json!([{"id": "x", "value": "User"}])));
        let assignments = [
            Assignment {
                app_role_id: "r1".into(),
                user_id: "a1".into(),
                upn: Some("Alice@contoso.com".into()),
            },
            Assignment {
                app_role_id: "r2".into(),
                user_id: "a1".into(),
                upn: Some("alice@contoso.com".into()),
            },
            Assignment {
                app_role_id: "r4".into(),
                user_id: "b1".into(),
                upn: Some("bob@contoso.com".into()),
            },
        ];
        let links = gallery_links(TENANT, "sp", &roles, &assignments);
        let names: Vec<_> = links
            .iter()
            .map(|l| match &l.aws {
                AwsEnd::Role { name, .. } => name.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(names, ["Admins", "ReadOnly"]);
        let map = LinkMap {
            links,
            ..LinkMap::default()
        };
        let alice = Subject::EntraUser {
            tenant: Some(TENANT.into()),
            id: None,
            name: Some("ALICE@contoso.com".into()),
            on_premises_synced: None,
        };
        assert_eq!(map.of_subject(&alice).len(), 2);
        let other_tenant = Subject::EntraUser {
            tenant: Some("99999999-2222-3333-4444-555555555555".into()),
            id: None,
            name: Some("alice@contoso.com".into()),
            on_premises_synced: None,
        };
        assert!(map.of_subject(&other_tenant).is_empty());
        assert_eq!(map.of_name("alice@contoso.com").len(), 2);
        assert_eq!(map.of_name("Admins").len(), 1);
    }

    #[test]
    fn a_federated_credential_on_an_aws_issuer_links_the_role() {
        let fic = |issuer: &str, subject: &str| FederatedCredential {
            id: "f1".into(),
            name: "aws-role".into(),
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
            description: None,
        };
        let role = format!("arn:aws:iam::{ACCOUNT}:role/service/etl-runner");
        let creds = [
            fic("https://a1d2b0fd-1234.tokens.sts.global.api.aws", &role),
            fic("https://token.actions.githubusercontent.com", "repo:x/y"),
            fic("https://evil.example/.tokens.sts.global.api.aws", &role),
        ];
        let links = federated_credential_links(TENANT, "obj", "app", Some("etl"), &creds);
        assert_eq!(links.len(), 1);
        let map = LinkMap {
            links,
            ..LinkMap::default()
        };
        let session = Subject::RoleSession {
            account: ACCOUNT.into(),
            name: "etl-runner".into(),
            id: None,
            session: "i-0abc".into(),
            access_key_id: None,
        };
        assert_eq!(map.of_subject(&session).len(), 1);
        let other = Subject::IamRole {
            account: "210987654321".into(),
            name: "etl-runner".into(),
        };
        assert!(map.of_subject(&other).is_empty());
    }

    #[test]
    fn age_reads_the_discovery_time() {
        let map = LinkMap {
            discovered_at: "2026-12-03T00:00:00Z".into(),
            ..LinkMap::default()
        };
        // 2026-12-04T12:00:00Z
        assert_eq!(map.age_seconds(1_796_385_600), Some(36 * 3600));
        let bad = LinkMap {
            discovered_at: "yesterday".into(),
            ..LinkMap::default()
        };
        assert_eq!(bad.age_seconds(1_796_385_600), None);
    }

    #[test]
    fn the_doctor_names_a_wrong_subject_and_the_fix() {
        let issuer = "https://a1d2.tokens.sts.global.api.aws";
        let role = format!("arn:aws:iam::{ACCOUNT}:role/quell-guardduty");
        let cred = |subject: &str, audiences: &[&str]| FederatedCredential {
            id: "1".into(),
            name: "quell-aws".into(),
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            description: None,
        };
        let ok = check_federated_credential(
            "app",
            issuer,
            &role,
            &[cred(&role, &[ENTRA_EXCHANGE_AUDIENCE])],
        );
        assert!(ok.ok, "{ok:?}");
        let session = format!("arn:aws:sts::{ACCOUNT}:assumed-role/quell-guardduty/fn");
        let wrong = check_federated_credential(
            "app",
            issuer,
            &role,
            &[cred(&session, &[ENTRA_EXCHANGE_AUDIENCE])],
        );
        assert!(
            !wrong.ok && wrong.detail.starts_with("wrong subject"),
            "{wrong:?}"
        );
        assert!(wrong.fix.unwrap().contains(&role));
        let aud =
            check_federated_credential("app", issuer, &role, &[cred(&role, &["api://other"])]);
        assert!(!aud.ok && aud.detail.contains("audiences"), "{aud:?}");
        let none = check_federated_credential("app", issuer, &role, &[]);
        assert!(
            !none.ok
                && none
                    .fix
                    .unwrap()
                    .starts_with("az ad app federated-credential create")
        );
    }

    #[test]
    fn the_doctor_compares_a_token_with_the_member_roles_trust() {
        let url = format!("sts.windows.net/{TENANT}/");
        let trust = serde_json::json!({"Statement": [{"Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{url}")},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {format!("{url}:aud"): "api://quell-aws", format!("{url}:sub"): "mi-object"}}}]});
        let claims = |aud: &str, sub: &str| serde_json::json!({"iss": format!("https://{url}"), "aud": aud, "sub": sub});
        assert!(
            check_trust("r", &trust, &claims("api://quell-aws", "mi-object"))
                .iter()
                .all(|c| c.ok)
        );
        let wrong = check_trust("r", &trust, &claims("0000-app-guid", "mi-object"));
        assert!(
            wrong
                .iter()
                .any(|c| !c.ok && c.detail.starts_with("wrong aud")),
            "{wrong:?}"
        );
        let other = check_trust(
            "r",
            &trust,
            &serde_json::json!({"iss": "https://login.microsoftonline.com/x/v2.0", "aud": "a", "sub": "s"}),
        );
        assert!(
            !other[0].ok && other[0].detail.contains("does not trust"),
            "{other:?}"
        );
    }
}
