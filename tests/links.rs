//! One person on two clouds: discovery of the links (moto's IAM SAML providers and roles, a
//! wiremock Graph with the AWS gallery app and a federated credential), an Entra compromise
//! that revokes her federated AWS sessions and no one else's, and an AWS role compromise that
//! removes the Entra federated credential trusting it, which a human's release recreates.

use std::sync::Arc;

use quell_azure::{AzureExecutor, Endpoints, Http, StaticToken};
use quell_core::clock::FixedClock;
use quell_core::links::LinkMap;
use quell_core::report::Status;
use quell_core::{ActionKind, Context, plan_input};
use quell_ledger::memory::MemoryLedger;
use quell_pipeline::{Answer, Clouds, Done, Pipeline, Releaser, Undo};
use quell_tests::{MOTO_ACCOUNT, NOW, enforce, unique};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TENANT: &str = "7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f";
const ALICE: &str = "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45";
const BOB: &str = "5d1e3f70-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
const GALLERY_SP: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const APP_ID: &str = "5e6f7a8b-1c2d-4e3f-9a0b-1c2d3e4f5a6b";
const ISSUER: &str = "https://a1d2b0fd-4c1e-4a55-9e2b-7f3c9d1e0b23.tokens.sts.global.api.aws";

/// Entra's tenant-specific SAML metadata, long enough for IAM's 1,000-character minimum.
fn entra_metadata() -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><EntityDescriptor ID="_6c2f" entityID="https://sts.windows.net/{TENANT}/" xmlns="urn:oasis:names:tc:SAML:2.0:metadata"><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data><X509Certificate>{}</X509Certificate></X509Data></KeyInfo></KeyDescriptor><SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://login.microsoftonline.com/{TENANT}/saml2"/></IDPSSODescriptor></EntityDescriptor>"#,
        "MIIC8DCCAdigAwIBAgIQ".repeat(60)
    )
}

struct World {
    provider: String,
    /// Assigned to alice through the gallery app.
    admins: String,
    /// Assigned to bob (through a group).
    read_only: String,
    /// Trusts another identity provider.
    okta_role: String,
    /// Trusted by an Entra application's federated credential.
    etl: String,
}

fn saml_trust(provider: &str) -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": provider},
        "Action": "sts:AssumeRoleWithSAML",
        "Condition": {"StringEquals": {"SAML:aud": "https://signin.aws.amazon.com/saml"}}
    }]})
    .to_string()
}

async fn world() -> World {
    let iam = quell_tests::iam().await;
    let provider = iam
        .create_saml_provider()
        .name(unique("EntraID"))
        .saml_metadata_document(entra_metadata())
        .send()
        .await
        .unwrap()
        .saml_provider_arn()
        .unwrap()
        .to_string();
    let okta = iam
        .create_saml_provider()
        .name(unique("Okta"))
        .saml_metadata_document(entra_metadata().replace(
            &format!("https://sts.windows.net/{TENANT}/"),
            "http://www.okta.com/exk1fedabc",
        ))
        .send()
        .await
        .unwrap()
        .saml_provider_arn()
        .unwrap()
        .to_string();
    let role = |name: String, trust: String| {
        let iam = iam.clone();
        async move {
            iam.create_role()
                .role_name(&name)
                .assume_role_policy_document(trust)
                .send()
                .await
                .unwrap();
            name
        }
    };
    let ec2 = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}).to_string();
    World {
        admins: role(unique("FedAdmins"), saml_trust(&provider)).await,
        read_only: role(unique("FedReadOnly"), saml_trust(&provider)).await,
        okta_role: role(unique("OktaAdmins"), saml_trust(&okta)).await,
        etl: role(unique("etl-runner"), ec2).await,
        provider,
    }
}

fn http_to(server: &MockServer) -> Http {
    Http::new(
        Endpoints::new(&server.uri(), &format!("{}/arm", server.uri())),
        Arc::new(StaticToken("t".into())),
    )
}

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{MOTO_ACCOUNT}:role/{name}")
}

fn federated_credential(w: &World) -> Value {
    json!({"id": "f0c1d2e3-0000-4000-8000-00000000e7c1", "name": "aws-etl-runner", "issuer": ISSUER,
           "subject": role_arn(&w.etl), "audiences": ["api://AzureADTokenExchange"],
           "description": "etl-runner on AWS reads Graph"})
}

/// Graph as the tenant has it: the AWS gallery app (alice directly, bob through a group), an
/// unrelated app, and an application whose federated credential trusts the etl role.
async fn tenant(server: &MockServer, w: &World) {
    let value = |role: &str| format!("{},{}", role_arn(role), w.provider);
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": GALLERY_SP, "appId": "8b1025e4-1dd2-430b-a150-2ef79cd700f5", "displayName": "AWS Single-Account Access",
             "servicePrincipalNames": ["https://signin.aws.amazon.com/saml"],
             "appRoles": [
                {"id": "11111111-aaaa-4aaa-8aaa-111111111111", "value": value(&w.admins), "displayName": "Admins"},
                {"id": "22222222-aaaa-4aaa-8aaa-222222222222", "value": value(&w.read_only), "displayName": "ReadOnly"},
                {"id": "33333333-aaaa-4aaa-8aaa-333333333333", "value": "msiam_access", "displayName": "msiam_access"}]},
            {"id": "0f0e0d0c-0b0a-4909-8807-060504030201", "appId": "00000003-0000-0000-c000-000000000000", "displayName": "Microsoft Graph",
             "appRoles": [{"id": "df021288-bdef-4463-88db-98f22de89214", "value": "User.Read.All"}]}
        ]})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/servicePrincipals/{GALLERY_SP}/appRoleAssignedTo")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"principalId": ALICE, "principalType": "User", "appRoleId": "11111111-aaaa-4aaa-8aaa-111111111111", "principalDisplayName": "Alice Chen"},
            {"principalId": "6e7f8a9b-0c1d-4e2f-8a3b-4c5d6e7f8a9b", "principalType": "Group", "appRoleId": "22222222-aaaa-4aaa-8aaa-222222222222", "principalDisplayName": "aws-readers"}
        ]})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/6e7f8a9b-0c1d-4e2f-8a3b-4c5d6e7f8a9b/transitiveMembers/microsoft.graph.user"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [{"id": BOB}]})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": ALICE, "userPrincipalName": "alice@contoso.com"},
            {"id": BOB, "userPrincipalName": "bob@contoso.com"}
        ]})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/applications"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e", "appId": APP_ID, "displayName": "etl-graph-reader",
             "federatedIdentityCredentials": [federated_credential(w),
                {"id": "gh", "name": "github", "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:contoso/etl:ref:refs/heads/main", "audiences": ["api://AzureADTokenExchange"]}]}
        ]})))
        .mount(server)
        .await;
}

async fn discover(w: &World, server: &MockServer) -> LinkMap {
    let iam = quell_tests::iam().await;
    let stamp = "2026-11-23T11:00:00Z";
    let mut map = quell_aws::links::discover(&iam, MOTO_ACCOUNT, stamp).await;
    map.extend(quell_azure::links::discover(&http_to(server), TENANT, None, stamp).await);
    // Only this test's roles: moto's account is shared with the other tests.
    let mine = [&w.admins, &w.read_only, &w.okta_role, &w.etl];
    map.links.retain(
        |l| matches!(&l.aws, quell_core::links::AwsEnd::Role { name, .. } if mine.contains(&name)),
    );
    map.discovered_at = stamp.into();
    map.normalized()
}

#[tokio::test]
async fn discovery_builds_the_map_from_the_saml_provider_the_gallery_app_and_federated_credentials()
{
    let w = world().await;
    let server = MockServer::start().await;
    tenant(&server, &w).await;
    let map = discover(&w, &server).await;
    assert!(map.gaps.is_empty(), "{:?}", map.gaps);
    let lines: Vec<String> = map.links.iter().map(|l| l.describe()).collect();
    let has = |want: &str| lines.iter().any(|l| l == want);
    // Exact: the gallery app's assignments, a group expanded to its members.
    assert!(
        has(&format!(
            "alice@contoso.com ↔ role {} in {MOTO_ACCOUNT} (saml_app_role, exact)",
            w.admins
        )),
        "{lines:#?}"
    );
    assert!(
        has(&format!(
            "bob@contoso.com ↔ role {} in {MOTO_ACCOUNT} (saml_app_role, exact)",
            w.read_only
        )),
        "{lines:#?}"
    );
    // Inferred: each role that trusts the tenant's SAML provider.
    for role in [&w.admins, &w.read_only] {
        assert!(
            has(&format!(
                "any user of tenant {TENANT} ↔ role {role} in {MOTO_ACCOUNT} (saml_provider, inferred)"
            )),
            "{lines:#?}"
        );
    }
    // The application that trusts the etl role's AWS tokens; the GitHub credential is no link.
    assert!(
        has(&format!(
            "application etl-graph-reader ({APP_ID}) ↔ role {} in {MOTO_ACCOUNT} (federated_credential, exact)",
            w.etl
        )),
        "{lines:#?}"
    );
    // Another identity provider's roles are not linked to the tenant.
    assert!(
        !lines.iter().any(|l| l.contains(&w.okta_role)),
        "{lines:#?}"
    );
    assert_eq!(map.links.len(), 5, "{lines:#?}");

    // Stored in the ledger and read back whole.
    let ledger = MemoryLedger::default();
    quell_ledger::links::store(&ledger, "aws-test", &map)
        .await
        .unwrap();
    assert_eq!(quell_ledger::links::load(&ledger).await.unwrap(), Some(map));
}

fn linked(map: LinkMap) -> Context {
    Context {
        links: Some(Arc::new(map)),
        ..Context::default()
    }
}

/// The session revocation statements quell keeps on a role (`aws:userid` values denied).
async fn denied_userids(role: &str) -> Vec<String> {
    let iam = quell_tests::iam().await;
    let Ok(out) = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(quell_aws::docs::SESSION_REVOKE_POLICY)
        .send()
        .await
    else {
        return Vec::new();
    };
    let doc = quell_aws::docs::parse(out.policy_document()).unwrap();
    let mut ids = Vec::new();
    for st in doc["Statement"].as_array().unwrap() {
        let v = &st["Condition"]["StringLike"]["aws:userid"];
        match v {
            Value::String(s) => ids.push(s.clone()),
            Value::Array(a) => ids.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string))),
            _ => ids.extend(
                st["Condition"]
                    .as_object()
                    .into_iter()
                    .flat_map(|c| c.values())
                    .filter_map(|kv| kv.get("aws:userid"))
                    .flat_map(|x| match x {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect(),
                        _ => vec![],
                    }),
            ),
        }
    }
    ids
}

/// An Entra tenant that answers the calls revoking alice's Entra sessions.
async fn entra_user(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": ALICE, "userPrincipalName": "alice@contoso.com", "accountEnabled": true, "signInSessionsValidFromDateTime": "2026-01-01T00:00:00Z"})))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/users/{ALICE}/revokeSignInSessions")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": true})))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn an_entra_compromise_revokes_her_federated_aws_sessions_and_no_one_elses() {
    let w = world().await;
    let server = MockServer::start().await;
    tenant(&server, &w).await;
    let map = discover(&w, &server).await;
    entra_user(&server).await;

    let policy = enforce();
    let input = json!({"runbook": "revoke_sessions", "principal": "alice@contoso.com", "tenant": TENANT, "reason": "IR-77: alice's Entra session was stolen"}).to_string();
    let plan = plan_input(input.as_bytes(), &policy, &linked(map)).unwrap();
    let aws_actions: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| a.cloud == quell_core::Cloud::Aws)
        .collect();
    // Her exact link and both inferred ones name two roles; bob's assignment is not hers.
    assert_eq!(aws_actions.len(), 2, "{:#?}", plan.actions);
    assert!(
        aws_actions
            .iter()
            .all(|a| a.kind == ActionKind::RevokeRoleSession && a.via.is_some())
    );

    let aws = quell_tests::aws_executor(policy.clone(), NOW).await;
    let azure = AzureExecutor::new(
        http_to(&server),
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec![],
    );
    let clouds = Clouds {
        aws: Some(&aws),
        azure: Some(&azure),
    };
    let (clock, ledger) = (FixedClock(NOW), MemoryLedger::default());
    let pipeline = Pipeline {
        function: "test",
        policy: &policy,
        clock: &clock,
        ledger: Some(&ledger),
        executor: Some(&clouds),
        undo: vec![],
        checks: None,
        audit: None,
    };
    let Answer::Done(Done::Contained(report)) = pipeline.contain(plan.clone()).await else {
        panic!("not contained")
    };
    assert_eq!(report.summary.failed, 0, "{report:#?}");
    assert!(
        report
            .results
            .iter()
            .any(|r| r.action.kind == ActionKind::RevokeEntraSessions
                && r.outcome.status == Status::Applied),
        "{report:#?}"
    );

    // Her UPN-named sessions are denied on both roles her sign-ins reach, and only hers.
    for role in [&w.admins, &w.read_only] {
        let ids = denied_userids(role).await;
        assert_eq!(ids.len(), 1, "{role}: {ids:?}");
        assert!(ids[0].ends_with(":alice@contoso.com"), "{ids:?}");
    }
    assert!(denied_userids(&w.okta_role).await.is_empty());
    assert!(denied_userids(&w.etl).await.is_empty());

    // Again: nothing changes.
    let again = aws.execute(&plan).await;
    for r in again
        .results
        .iter()
        .filter(|r| r.action.cloud == quell_core::Cloud::Aws)
    {
        assert_eq!(r.outcome.status, Status::AlreadyInState, "{r:#?}");
    }
}

#[tokio::test]
async fn a_link_the_role_no_longer_has_contains_nothing() {
    let w = world().await;
    let server = MockServer::start().await;
    tenant(&server, &w).await;
    let map = discover(&w, &server).await;
    // The role stops trusting the tenant after discovery (or the row was forged).
    let iam = quell_tests::iam().await;
    let ec2 = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}).to_string();
    iam.update_assume_role_policy()
        .role_name(&w.admins)
        .policy_document(ec2)
        .send()
        .await
        .unwrap();
    let policy = enforce();
    let input = json!({"runbook": "revoke_sessions", "principal": "alice@contoso.com", "tenant": TENANT, "reason": "t"}).to_string();
    let plan = plan_input(input.as_bytes(), &policy, &linked(map)).unwrap();
    let aws = quell_tests::aws_executor(policy, NOW).await;
    let report = aws.execute(&plan).await;
    let on_admins: Vec<_> = report
        .results
        .iter()
        .filter(|r| {
            r.action.kind == ActionKind::RevokeRoleSession
                && r.action.target.label().contains(&w.admins)
        })
        .collect();
    assert!(!on_admins.is_empty());
    for r in on_admins {
        assert_eq!(r.outcome.status, Status::Skipped, "{r:#?}");
        assert!(r.outcome.detail.contains("no longer lets"), "{r:#?}");
    }
    assert!(denied_userids(&w.admins).await.is_empty());
}

#[tokio::test]
async fn an_aws_role_compromise_removes_the_entra_credential_that_trusts_it_and_release_recreates_it()
 {
    let w = world().await;
    let server = MockServer::start().await;
    tenant(&server, &w).await;
    let map = discover(&w, &server).await;
    let fic = federated_credential(&w);
    let fic_path = format!(
        "/v1.0/applications(appId='{APP_ID}')/federatedIdentityCredentials/{}",
        fic["id"].as_str().unwrap()
    );
    Mock::given(method("GET"))
        .and(path(fic_path.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_json(fic.clone()))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(fic_path.clone()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let policy = enforce();
    let input = json!({"runbook": "contain", "principal": format!("arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/{}/i-0a7c3e9f1b2d4e6f8", w.etl), "reason": "IR-78: etl-runner's instance credentials were used from outside"}).to_string();
    let plan = plan_input(input.as_bytes(), &policy, &linked(map)).unwrap();
    assert!(
        plan.actions
            .iter()
            .any(|a| a.kind == ActionKind::RemoveFederatedCredential),
        "{:#?}",
        plan.actions
    );

    let aws = quell_tests::aws_executor(policy.clone(), NOW).await;
    let azure = AzureExecutor::new(
        http_to(&server),
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec![],
    );
    let clouds = Clouds {
        aws: Some(&aws),
        azure: Some(&azure),
    };
    let (clock, ledger) = (FixedClock(NOW), MemoryLedger::default());
    let pipeline = Pipeline {
        function: "test",
        policy: &policy,
        clock: &clock,
        ledger: Some(&ledger),
        executor: Some(&clouds),
        undo: vec![],
        checks: None,
        audit: None,
    };
    let Answer::Done(Done::Contained(report)) = pipeline.contain(plan).await else {
        panic!("not contained")
    };
    let removed = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::RemoveFederatedCredential)
        .unwrap();
    assert_eq!(removed.outcome.status, Status::Applied, "{removed:#?}");
    assert!(
        report
            .results
            .iter()
            .any(|r| r.action.kind == ActionKind::QuarantineRole
                && r.outcome.status == Status::Applied),
        "{report:#?}"
    );

    // The ledger keeps the credential under the application, in the tenant's breaker scope.
    let entries = quell_ledger::Ledger::list(&ledger, None).await.unwrap();
    let entry = entries
        .iter()
        .find(|e| e.principal.contains(APP_ID))
        .expect("an entry for the application");
    assert!(
        entry.scope.contains(TENANT) || entry.scope.starts_with("azure"),
        "{}",
        entry.scope
    );

    // The automatic release never recreates it; a human's does, exactly as it was.
    let steps = azure.release(entry, Releaser::Automatic).await;
    assert!(
        steps.iter().all(|s| s.outcome.status != Status::Applied),
        "{steps:#?}"
    );
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1.0/applications(appId='{APP_ID}')/federatedIdentityCredentials"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/applications(appId='{APP_ID}')/federatedIdentityCredentials")))
        .and(body_json(json!({"name": "aws-etl-runner", "issuer": ISSUER, "subject": role_arn(&w.etl),
                               "audiences": ["api://AzureADTokenExchange"], "description": "etl-runner on AWS reads Graph"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(fic.clone()))
        .expect(1)
        .mount(&server)
        .await;
    let steps = azure
        .release(
            entry,
            Releaser::Human {
                reactivate_keys: false,
            },
        )
        .await;
    let recreated = steps
        .iter()
        .find(|s| s.what.contains("remove_federated_credential"))
        .expect("a step for the credential");
    assert_eq!(recreated.outcome.status, Status::Applied, "{steps:#?}");
}

#[tokio::test]
async fn a_forged_row_cannot_make_the_release_trust_another_issuer_or_app() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&server)
        .await;
    let azure = AzureExecutor::new(
        http_to(&server),
        enforce(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec![],
    );
    let forged = |app: &str, issuer: &str| {
        let mut e = quell_tests::ledger_entry(&format!("azure:sp/{APP_ID}"), "f");
        e.actions.push(quell_ledger::Recorded {
            kind: ActionKind::RemoveFederatedCredential,
            target: quell_core::Target::Subject(quell_core::Subject::ServicePrincipal {
                tenant: Some(TENANT.into()),
                id: APP_ID.into(),
                app_id: Some(APP_ID.into()),
                name: None,
                key_id: Some("x".into()),
            }),
            status: Status::Applied,
            detail: "removed".into(),
            inverse: Some(quell_tests::inverse(
                "graph:POST /v1.0/applications(appId='{appId}')/federatedIdentityCredentials",
                json!({"appId": app, "credential": {"id": "x", "name": "backdoor", "issuer": issuer,
                        "subject": "arn:aws:iam::999999999999:role/attacker", "audiences": ["api://AzureADTokenExchange"]}}),
            )),
        });
        e
    };
    for entry in [
        forged(APP_ID, "https://token.actions.githubusercontent.com"),
        forged("00000003-0000-0000-c000-000000000000", ISSUER),
    ] {
        let steps = azure
            .release(
                &entry,
                Releaser::Human {
                    reactivate_keys: false,
                },
            )
            .await;
        assert!(
            steps.iter().all(|s| s.outcome.status == Status::Failed),
            "{steps:#?}"
        );
    }
}
