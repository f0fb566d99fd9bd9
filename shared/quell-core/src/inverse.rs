//! How to undo an applied action: a closed, typed set per cloud.
//!
//! Release and verify match on [`Inverse`] exhaustively; what an inverse may do is fixed here, by
//! quell's code, never by the text of a stored row. On the wire (the report, the ledger) an
//! inverse is still `{"call": "<api call>", "params": {…}}`, as quell has always written it, so
//! the rows written before these types still read: the call text is read once, in
//! [`Inverse::from_raw`], and nowhere else. A call quell does not know reads as
//! [`Inverse::Unknown`], which is listed and never acted on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// An IAM user or role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IamKind {
    User,
    Role,
}

impl IamKind {
    /// The IAM API's parameter naming the principal: `UserName` or `RoleName`.
    pub fn name_param(self) -> &'static str {
        match self {
            IamKind::User => "UserName",
            IamKind::Role => "RoleName",
        }
    }
    fn word(self) -> &'static str {
        match self {
            IamKind::User => "User",
            IamKind::Role => "Role",
        }
    }
}

/// The inverse as stored: the API call and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawInverse {
    pub call: String,
    #[serde(default)]
    pub params: Value,
}

/// How to undo one applied action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawInverse", into = "RawInverse")]
pub enum Inverse {
    Aws(AwsInverse),
    Azure(AzureInverse),
    /// A call quell's code does not know (a row from another writer): never acted on.
    Unknown(RawInverse),
}

/// The inverses of quell's AWS actions.
#[derive(Debug, Clone, PartialEq)]
pub enum AwsInverse {
    /// `iam:UpdateAccessKey` back to `Active`: only on a human's explicit request.
    ReactivateKeys { user: String, keys: Vec<String> },
    /// `iam:Detach{User,Role}Policy` of the quarantine.
    DetachPolicy {
        kind: IamKind,
        name: String,
        policy_arn: String,
    },
    /// `iam:Delete{User,Role}Policy` (no document before quell's) or `iam:Put{User,Role}Policy`
    /// (the document before quell's).
    RestoreInline {
        kind: IamKind,
        name: String,
        policy: String,
        previous: Option<Value>,
    },
    /// `iam:Untag{User,Role}` (no tag before quell's) or `iam:Tag{User,Role}` (the value before),
    /// with what the principal held at containment, for verify to compare with.
    RestoreTag {
        kind: IamKind,
        name: String,
        tag: String,
        previous: Option<String>,
        trust_policy: Option<Value>,
        policies: Option<Value>,
    },
    /// `iam:CreateLoginProfile`: a deleted console password cannot be restored.
    LoginProfile { user: String },
    /// `securityhub:BatchUpdateFindings` (or `…V2`): the finding's workflow, left as it is.
    SecurityhubWorkflow { v2: bool, params: Value },
    /// `sso:PutInlinePolicyToPermissionSet`: take the Identity Center user out of quell's deny
    /// statement in each permission set (the statement goes when it names no one), then
    /// provision them.
    IdentityCenterDeny {
        /// The account that administers Identity Center, where quell wrote the statement.
        account: String,
        instance_arn: String,
        user_id: String,
        permission_sets: Vec<String>,
        /// Each permission set's inline policy as quell found it (`None`: it had none), so a
        /// release can put back the very bytes, when they say what quell would write anyway.
        previous: std::collections::BTreeMap<String, Option<String>>,
    },
}

const IDENTITY_CENTER_CALL: &str = "sso:PutInlinePolicyToPermissionSet";

/// Which object a password credential belonged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialOwner {
    /// The object id, as a Graph path segment.
    ServicePrincipal(String),
    Application(String),
}

impl CredentialOwner {
    /// The owner's Graph path (`/v1.0/servicePrincipals/{id}`, `/v1.0/applications/{id}`).
    pub fn path(&self) -> String {
        match self {
            CredentialOwner::ServicePrincipal(id) => format!("/v1.0/servicePrincipals/{id}"),
            CredentialOwner::Application(id) => format!("/v1.0/applications/{id}"),
        }
    }
    fn parse(path: &str) -> Option<CredentialOwner> {
        let id = |rest: &str| {
            (!rest.is_empty() && !rest.contains(['/', '?', '#'])).then(|| rest.to_string())
        };
        if let Some(rest) = path.strip_prefix("/v1.0/servicePrincipals/") {
            return id(rest).map(CredentialOwner::ServicePrincipal);
        }
        path.strip_prefix("/v1.0/applications/")
            .and_then(id)
            .map(CredentialOwner::Application)
    }
}

/// The inverses of quell's Azure actions.
#[derive(Debug, Clone, PartialEq)]
pub enum AzureInverse {
    /// `graph:PATCH /v1.0/users/{id}`, `accountEnabled = true`.
    EnableUser { id: String },
    /// `graph:PATCH /v1.0/servicePrincipals/{id}`, `accountEnabled = true`, with the
    /// application's federated credential ids, and the key ids of every secret and certificate
    /// on the service principal and its application, read at containment: the baselines verify
    /// compares with (Graph's `startDateTime` is set by whoever adds the credential).
    EnableServicePrincipal {
        id: String,
        federated_credentials: Option<Vec<String>>,
        credentials: Option<Vec<String>>,
    },
    /// `graph:POST /v1.0/identityProtection/riskyUsers/dismiss`.
    DismissRisk { user_ids: Vec<String> },
    /// `graph:POST {owner}/addPassword`: a removed secret cannot be restored. `credentials`:
    /// the key ids of the secrets and certificates left on the owner, verify's baseline.
    AddPassword {
        owner: CredentialOwner,
        credentials: Option<Vec<String>>,
    },
    /// `arm:PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}`: the role
    /// assignments quell removed (`id`, `roleDefinitionId`, `principalId`).
    RestoreRoleAssignments { assignments: Vec<Value> },
    /// `graph:PATCH /v1.0/security/alerts_v2/{id}`: the alert's status, left as it is.
    AlertStatus { id: String, status: Value },
    /// `graph:POST /v1.0/applications(appId='{appId}')/federatedIdentityCredentials`: the
    /// federated credential quell removed because the AWS role it trusts was compromised, as
    /// Graph returned it. Only a human's release recreates it, and only on the entry's own
    /// application, with an AWS issuer and a role ARN as subject.
    RestoreFederatedCredential {
        app_id: String,
        credential: crate::links::FederatedCredential,
    },
}

const FEDERATED_CREDENTIAL_CALL: &str =
    "graph:POST /v1.0/applications(appId='{appId}')/federatedIdentityCredentials";

const ROLE_ASSIGNMENTS_CALL: &str =
    "arm:PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}";

/// The value at a JSON pointer, or null.
fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl Inverse {
    /// The call as stored (`iam:DetachUserPolicy`, `graph:PATCH /v1.0/users/{id}`, …).
    pub fn call(&self) -> String {
        RawInverse::from(self.clone()).call
    }

    /// The parameters as stored.
    pub fn params(&self) -> Value {
        RawInverse::from(self.clone()).params
    }

    /// Reads a stored inverse: the only place the call text is looked at.
    pub fn from_raw(raw: RawInverse) -> Inverse {
        Inverse::parse(&raw).unwrap_or(Inverse::Unknown(raw))
    }

    fn parse(raw: &RawInverse) -> Option<Inverse> {
        let p = &raw.params;
        // `iam:{verb}User{suffix}` or `iam:{verb}Role{suffix}`.
        let iam = |call: &str, verb: &str, suffix: &str| -> Option<IamKind> {
            [IamKind::User, IamKind::Role]
                .into_iter()
                .find(|k| call == format!("iam:{verb}{}{suffix}", k.word()))
        };
        let name = |k: IamKind| text(p.get(k.name_param()).unwrap_or(&Value::Null));
        let call = raw.call.as_str();
        let aws = |i: AwsInverse| Some(Inverse::Aws(i));
        let azure = |i: AzureInverse| Some(Inverse::Azure(i));
        match call {
            "iam:UpdateAccessKey" => {
                let keys = match (at(p, "/AccessKeyId"), at(p, "/AccessKeyIds")) {
                    (Value::String(k), _) => vec![k.clone()],
                    (_, ids) => strings(ids)?,
                };
                return aws(AwsInverse::ReactivateKeys {
                    user: text(at(p, "/UserName")).unwrap_or_default(),
                    keys,
                });
            }
            "iam:CreateLoginProfile" => {
                return aws(AwsInverse::LoginProfile {
                    user: text(at(p, "/UserName")).unwrap_or_default(),
                });
            }
            IDENTITY_CENTER_CALL => {
                return aws(AwsInverse::IdentityCenterDeny {
                    account: text(at(p, "/Account"))?,
                    instance_arn: text(at(p, "/InstanceArn"))?,
                    user_id: text(at(p, "/UserId"))?,
                    permission_sets: strings(at(p, "/PermissionSetArns"))?,
                    previous: at(p, "/Previous")
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            "securityhub:BatchUpdateFindings" | "securityhub:BatchUpdateFindingsV2" => {
                return aws(AwsInverse::SecurityhubWorkflow {
                    v2: call.ends_with("V2"),
                    params: p.clone(),
                });
            }
            "graph:PATCH /v1.0/users/{id}" => {
                return azure(AzureInverse::EnableUser {
                    id: text(at(p, "/id"))?,
                });
            }
            "graph:PATCH /v1.0/servicePrincipals/{id}" => {
                return azure(AzureInverse::EnableServicePrincipal {
                    id: text(at(p, "/id"))?,
                    federated_credentials: strings(at(p, "/federated_credentials")),
                    credentials: strings(at(p, "/credentials")),
                });
            }
            "graph:POST /v1.0/identityProtection/riskyUsers/dismiss" => {
                return azure(AzureInverse::DismissRisk {
                    user_ids: strings(at(p, "/userIds"))?,
                });
            }
            "graph:PATCH /v1.0/security/alerts_v2/{id}" => {
                return azure(AzureInverse::AlertStatus {
                    id: text(at(p, "/id"))?,
                    status: at(p, "/status").clone(),
                });
            }
            FEDERATED_CREDENTIAL_CALL => {
                return azure(AzureInverse::RestoreFederatedCredential {
                    app_id: text(at(p, "/appId"))?,
                    credential: serde_json::from_value(at(p, "/credential").clone()).ok()?,
                });
            }
            ROLE_ASSIGNMENTS_CALL => {
                return azure(AzureInverse::RestoreRoleAssignments {
                    assignments: at(p, "/assignments").as_array()?.clone(),
                });
            }
            _ => {}
        }
        if let Some(owner) = call
            .strip_prefix("graph:POST ")
            .and_then(|c| c.strip_suffix("/addPassword"))
        {
            return azure(AzureInverse::AddPassword {
                owner: CredentialOwner::parse(owner)?,
                credentials: strings(at(p, "/credentials")),
            });
        }
        if let Some(kind) = iam(call, "Detach", "Policy") {
            return aws(AwsInverse::DetachPolicy {
                kind,
                name: name(kind)?,
                policy_arn: text(at(p, "/PolicyArn"))?,
            });
        }
        if let Some(kind) = iam(call, "Delete", "Policy").or_else(|| iam(call, "Put", "Policy")) {
            return aws(AwsInverse::RestoreInline {
                kind,
                name: name(kind)?,
                policy: text(at(p, "/PolicyName"))?,
                previous: call
                    .starts_with("iam:Put")
                    .then(|| at(p, "/PolicyDocument").clone())
                    .filter(|d| !d.is_null()),
            });
        }
        if let Some(kind) = iam(call, "Untag", "").or_else(|| iam(call, "Tag", "")) {
            let (tag, previous) = if call.starts_with("iam:Untag") {
                (text(at(p, "/TagKeys/0"))?, None)
            } else {
                (
                    text(at(p, "/Tags/0/Key"))?,
                    Some(text(at(p, "/Tags/0/Value"))?),
                )
            };
            return aws(AwsInverse::RestoreTag {
                kind,
                name: name(kind)?,
                tag,
                previous,
                trust_policy: Some(at(p, "/trust_policy").clone()).filter(|v| !v.is_null()),
                policies: Some(at(p, "/policies").clone()).filter(|v| !v.is_null()),
            });
        }
        None
    }
}

impl From<RawInverse> for Inverse {
    fn from(raw: RawInverse) -> Inverse {
        Inverse::from_raw(raw)
    }
}

impl From<AwsInverse> for Inverse {
    fn from(i: AwsInverse) -> Inverse {
        Inverse::Aws(i)
    }
}

impl From<AzureInverse> for Inverse {
    fn from(i: AzureInverse) -> Inverse {
        Inverse::Azure(i)
    }
}

impl From<Inverse> for RawInverse {
    fn from(i: Inverse) -> RawInverse {
        let raw = |call: String, params: Value| RawInverse { call, params };
        match i {
            Inverse::Unknown(r) => r,
            Inverse::Aws(a) => match a {
                AwsInverse::ReactivateKeys { user, keys } => {
                    let p = match keys.as_slice() {
                        [one] => json!({"UserName": user, "AccessKeyId": one, "Status": "Active"}),
                        _ => json!({"UserName": user, "AccessKeyIds": keys, "Status": "Active"}),
                    };
                    raw("iam:UpdateAccessKey".into(), p)
                }
                AwsInverse::DetachPolicy {
                    kind,
                    name,
                    policy_arn,
                } => raw(
                    format!("iam:Detach{}Policy", kind.word()),
                    json!({kind.name_param(): name, "PolicyArn": policy_arn}),
                ),
                AwsInverse::RestoreInline {
                    kind,
                    name,
                    policy,
                    previous,
                } => match previous {
                    Some(doc) => raw(
                        format!("iam:Put{}Policy", kind.word()),
                        json!({kind.name_param(): name, "PolicyName": policy, "PolicyDocument": doc}),
                    ),
                    None => raw(
                        format!("iam:Delete{}Policy", kind.word()),
                        json!({kind.name_param(): name, "PolicyName": policy}),
                    ),
                },
                AwsInverse::RestoreTag {
                    kind,
                    name,
                    tag,
                    previous,
                    trust_policy,
                    policies,
                } => {
                    let mut p = Map::new();
                    p.insert(kind.name_param().into(), json!(name));
                    let call = match previous {
                        None => {
                            p.insert("TagKeys".into(), json!([tag]));
                            format!("iam:Untag{}", kind.word())
                        }
                        Some(v) => {
                            p.insert("Tags".into(), json!([{"Key": tag, "Value": v}]));
                            format!("iam:Tag{}", kind.word())
                        }
                    };
                    if let Some(t) = trust_policy {
                        p.insert("trust_policy".into(), t);
                    }
                    if let Some(h) = policies {
                        p.insert("policies".into(), h);
                    }
                    raw(call, Value::Object(p))
                }
                AwsInverse::IdentityCenterDeny {
                    account,
                    instance_arn,
                    user_id,
                    permission_sets,
                    previous,
                } => raw(
                    IDENTITY_CENTER_CALL.into(),
                    json!({"Account": account, "InstanceArn": instance_arn, "UserId": user_id, "PermissionSetArns": permission_sets, "Previous": previous, "Note": "remove the user from quell's deny statement, then provision"}),
                ),
                AwsInverse::LoginProfile { user } => raw(
                    "iam:CreateLoginProfile".into(),
                    json!({"UserName": user, "PasswordResetRequired": true, "Note": "the old password cannot be restored; set a new one"}),
                ),
                AwsInverse::SecurityhubWorkflow { v2, params } => raw(
                    if v2 {
                        "securityhub:BatchUpdateFindingsV2"
                    } else {
                        "securityhub:BatchUpdateFindings"
                    }
                    .into(),
                    params,
                ),
            },
            Inverse::Azure(z) => {
                match z {
                    AzureInverse::EnableUser { id } => raw(
                        "graph:PATCH /v1.0/users/{id}".into(),
                        json!({"id": id, "accountEnabled": true}),
                    ),
                    AzureInverse::EnableServicePrincipal {
                        id,
                        federated_credentials,
                        credentials,
                    } => {
                        let mut p = serde_json::Map::new();
                        p.insert("id".into(), json!(id));
                        p.insert("accountEnabled".into(), json!(true));
                        if let Some(ids) = federated_credentials {
                            p.insert("federated_credentials".into(), json!(ids));
                        }
                        if let Some(ids) = credentials {
                            p.insert("credentials".into(), json!(ids));
                        }
                        raw(
                            "graph:PATCH /v1.0/servicePrincipals/{id}".into(),
                            Value::Object(p),
                        )
                    }
                    AzureInverse::DismissRisk { user_ids } => raw(
                        "graph:POST /v1.0/identityProtection/riskyUsers/dismiss".into(),
                        json!({"userIds": user_ids}),
                    ),
                    AzureInverse::AddPassword { owner, credentials } => {
                        let mut p = serde_json::Map::new();
                        p.insert("note".into(), json!("a removed secret cannot be restored; add a new one and distribute it"));
                        if let Some(ids) = credentials {
                            p.insert("credentials".into(), json!(ids));
                        }
                        raw(
                            format!("graph:POST {}/addPassword", owner.path()),
                            Value::Object(p),
                        )
                    }
                    AzureInverse::RestoreRoleAssignments { assignments } => raw(
                        ROLE_ASSIGNMENTS_CALL.into(),
                        json!({"assignments": assignments}),
                    ),
                    AzureInverse::AlertStatus { id, status } => raw(
                        "graph:PATCH /v1.0/security/alerts_v2/{id}".into(),
                        json!({"id": id, "status": status}),
                    ),
                    AzureInverse::RestoreFederatedCredential { app_id, credential } => raw(
                        FEDERATED_CREDENTIAL_CALL.into(),
                        json!({"appId": app_id, "credential": credential}),
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inverses exactly as quell wrote them before they were typed (ledger rows of today).
    const WRITTEN: &[&str] = &[
        r#"{"call":"iam:UpdateAccessKey","params":{"UserName":"alice","AccessKeyId":"AKIAEXAMPLE00000001","Status":"Active"}}"#,
        r#"{"call":"iam:UpdateAccessKey","params":{"UserName":"alice","AccessKeyIds":["AKIAEXAMPLE00000001","AKIAEXAMPLE00000002"],"Status":"Active"}}"#,
        r#"{"call":"iam:DetachUserPolicy","params":{"UserName":"alice","PolicyArn":"arn:aws:iam::aws:policy/AWSDenyAll"}}"#,
        r#"{"call":"iam:DetachRolePolicy","params":{"RoleName":"web","PolicyArn":"arn:aws:iam::aws:policy/AWSDenyAll"}}"#,
        r#"{"call":"iam:DeleteRolePolicy","params":{"RoleName":"web","PolicyName":"QuellRevokeOlderSessions"}}"#,
        r#"{"call":"iam:PutUserPolicy","params":{"UserName":"alice","PolicyName":"QuellRevokeOlderSessions","PolicyDocument":{"Version":"2012-10-17","Statement":[]}}}"#,
        r#"{"call":"iam:UntagUser","params":{"UserName":"alice","TagKeys":["quell:quarantined"],"policies":{"attached":[],"inline":[]}}}"#,
        r#"{"call":"iam:TagRole","params":{"RoleName":"web","Tags":[{"Key":"quell:quarantined","Value":"gd-1 2026"}],"trust_policy":{"Statement":[]}}}"#,
        r#"{"call":"iam:CreateLoginProfile","params":{"UserName":"alice","PasswordResetRequired":true,"Note":"the old password cannot be restored; set a new one"}}"#,
        r#"{"call":"securityhub:BatchUpdateFindingsV2","params":{"StatusId":1}}"#,
        r#"{"call":"graph:PATCH /v1.0/users/{id}","params":{"id":"6f6a4b1e-0000-4000-8000-000000000001","accountEnabled":true}}"#,
        r#"{"call":"graph:PATCH /v1.0/servicePrincipals/{id}","params":{"id":"sp-1","accountEnabled":true,"federated_credentials":["fc-1"]}}"#,
        r#"{"call":"graph:POST /v1.0/identityProtection/riskyUsers/dismiss","params":{"userIds":["u-1"]}}"#,
        r#"{"call":"graph:POST /v1.0/applications/app-1/addPassword","params":{"note":"a removed secret cannot be restored; add a new one and distribute it"}}"#,
        r#"{"call":"arm:PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}","params":{"assignments":[{"id":"/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/r","roleDefinitionId":"d","principalId":"p"}]}}"#,
        r#"{"call":"graph:PATCH /v1.0/security/alerts_v2/{id}","params":{"id":"a-1","status":"new"}}"#,
        r#"{"call":"graph:POST /v1.0/applications(appId='{appId}')/federatedIdentityCredentials","params":{"appId":"5e6f","credential":{"id":"f-1","name":"aws-etl","issuer":"https://abc.tokens.sts.global.api.aws","subject":"arn:aws:iam::111122223333:role/etl","audiences":["api://AzureADTokenExchange"]}}}"#,
    ];

    #[test]
    fn todays_rows_read_as_typed_inverses_and_write_back_the_same() {
        for row in WRITTEN {
            let v: Value = serde_json::from_str(row).unwrap();
            let i: Inverse = serde_json::from_value(v.clone()).unwrap();
            assert!(!matches!(i, Inverse::Unknown(_)), "{row}");
            assert_eq!(serde_json::to_value(&i).unwrap(), v, "{row}");
        }
    }

    #[test]
    fn a_call_quell_does_not_know_is_kept_and_never_typed() {
        for row in [
            r#"{"call":"iam:AttachUserPolicy","params":{"UserName":"alice","PolicyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}}"#,
            r#"{"call":"graph:PATCH /v1.0/applications/{id}","params":{"id":"x"}}"#,
            r#"{"call":"graph:POST /v1.0/users/u/addPassword","params":{}}"#,
            r#"{"call":"iam:DetachUserPolicy","params":{"PolicyArn":"arn:aws:iam::aws:policy/AWSDenyAll"}}"#,
        ] {
            let i: Inverse = serde_json::from_str(row).unwrap();
            assert!(matches!(i, Inverse::Unknown(_)), "{row}: {i:?}");
        }
    }
}
