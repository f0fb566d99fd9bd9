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

/// A fresh world, its tenant's Graph, and the link map discovered from both.
async fn discovered() -> (World, MockServer, LinkMap) {
    let w = world().await;
    let server = MockServer::start().await;
    tenant(&server, &w).await;
    let map = discover(&w, &server).await;
    (w, server, map)
}

#[tokio::test]
async fn discovery_builds_the_map_from_the_saml_provider_the_gallery_app_and_federated_credentials()
{
    let (w, _graph, map) = discovered().await;
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

/// The AWS executor on moto and the Azure executor on `graph`, at the tests' fixed time.
async fn executors(
    policy: &quell_core::Policy,
    graph: &MockServer,
) -> (quell_aws::AwsExecutor<quell_aws::Fixed>, AzureExecutor) {
    let aws = quell_tests::aws_executor(policy.clone(), NOW).await;
    let azure = AzureExecutor::new(
        http_to(graph),
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec![],
    );
    (aws, azure)
}

/// The one pipeline over `ledger`, each action on its own cloud: the report of a containment.
async fn contain_on_both(
    policy: &quell_core::Policy,
    aws: &quell_aws::AwsExecutor<quell_aws::Fixed>,
    azure: &AzureExecutor,
    ledger: &MemoryLedger,
    plan: quell_core::Plan,
) -> quell_core::report::Report {
    let clouds = Clouds {
        aws: Some(aws),
        azure: Some(azure),
    };
    let clock = FixedClock(NOW);
    let pipeline = Pipeline {
        function: "test",
        policy,
        clock: &clock,
        ledger: Some(ledger),
        executor: Some(&clouds),
        undo: vec![],
        checks: None,
        audit: None,
    };
    match pipeline.contain(plan).await {
        Answer::Done(Done::Contained(report)) => report,
        other => panic!("not contained: {:?}", other.to_json()),
    }
}

#[tokio::test]
async fn an_entra_compromise_revokes_her_federated_aws_sessions_and_no_one_elses() {
    let (w, server, map) = discovered().await;
    entra_user(&server).await;

    let policy = enforce();
    // Identity Protection's risk detection for alice, as Graph returns it (an unfamiliar
    // sign-in: quell revokes her sessions and asks a human to review).
    let input = std::str::from_utf8(&quell_tests::event(
        "entra/risk-detection-unfamiliar-features.json",
    ))
    .unwrap()
    .replace("2d4f6a8c-0e2b-4d6f-8a0c-2e4b6d8f0a1c", ALICE)
    .replace("maya.singh@contoso.com", "alice@contoso.com")
    .replace("Maya Singh", "Alice Chen");
    let plan = plan_input(input.as_bytes(), &policy, &linked(map)).unwrap();
    let aws_actions: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| a.cloud == quell_core::Cloud::Aws)
        .collect();
    // Her gallery-app role only: ReadOnly trusts the same SAML provider, but the gallery app
    // assigns it to bob's group, and Entra signs users only into the roles it assigns them.
    assert_eq!(aws_actions.len(), 1, "{:#?}", plan.actions);
    assert!(
        aws_actions
            .iter()
            .all(|a| a.kind == ActionKind::RevokeRoleSession && a.via.is_some())
    );

    let (aws, azure) = executors(&policy, &server).await;
    let ledger = MemoryLedger::default();
    let report = contain_on_both(&policy, &aws, &azure, &ledger, plan.clone()).await;
    assert_eq!(report.summary.failed, 0, "{report:#?}");
    assert!(
        report
            .results
            .iter()
            .any(|r| r.action.kind == ActionKind::RevokeEntraSessions
                && r.outcome.status == Status::Applied),
        "{report:#?}"
    );

    // Her UPN-named sessions are denied on the role her sign-ins reach, and only hers.
    let ids = denied_userids(&w.admins).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].ends_with(":alice@contoso.com"), "{ids:?}");
    assert!(denied_userids(&w.read_only).await.is_empty());
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
    let (w, _graph, map) = discovered().await;
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
    let (w, server, map) = discovered().await;
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
    // GuardDuty: the etl role's instance credentials used from outside AWS.
    let input = std::str::from_utf8(&quell_tests::event(
        "guardduty/instance-credential-exfiltration-outside.json",
    ))
    .unwrap()
    .replace("111122223333", MOTO_ACCOUNT)
    .replace("web-checkout-ec2", &w.etl)
    .replace("AROAZ4XQ7PLMYV3KJ8N2Q:", "");
    let plan = plan_input(input.as_bytes(), &policy, &linked(map)).unwrap();
    assert!(
        plan.actions
            .iter()
            .any(|a| a.kind == ActionKind::RemoveFederatedCredential),
        "{:#?}",
        plan.actions
    );

    let (aws, azure) = executors(&policy, &server).await;
    let ledger = MemoryLedger::default();
    let report = contain_on_both(&policy, &aws, &azure, &ledger, plan).await;
    let removed = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::RemoveFederatedCredential)
        .unwrap();
    assert_eq!(removed.outcome.status, Status::Applied, "{removed:#?}");
    assert!(
        report.results.iter().any(|r| matches!(
            r.action.kind,
            ActionKind::RevokeRoleSession | ActionKind::RevokeRoleSessions
        ) && r.outcome.status == Status::Applied),
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

// ---- Keyless, both ways. ----

/// Sends what azure_identity addresses to `https://login.microsoftonline.com` to a local fake
/// instead (azure_identity accepts only HTTPS authorities; the request itself is unchanged).
#[derive(Debug)]
struct ToLocal {
    port: u16,
    inner: Arc<dyn azure_core::http::HttpClient>,
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for ToLocal {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        let mut r = request.clone();
        let url = r.url_mut();
        url.set_scheme("http").unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        self.inner.execute_request(&r).await
    }
}

fn to_local(server: &MockServer) -> azure_identity::ClientAssertionCredentialOptions {
    let port = server.address().port();
    // azure_core's reqwest client needs quell's TLS provider installed first, as every
    // quell_azure constructor does (reqwest is built without a provider of its own).
    quell_azure::tls::install();
    let transport = azure_core::http::Transport::new(Arc::new(ToLocal {
        port,
        inner: azure_core::http::new_http_client(None),
    }));
    azure_identity::ClientAssertionCredentialOptions {
        client_options: azure_core::http::ClientOptions {
            transport: Some(transport),
            ..Default::default()
        },
    }
}

/// A JWT as `sts:GetWebIdentityToken` returns it (header and signature are opaque here).
const AWS_JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkVYQU1QTEUifQ.eyJpc3MiOiJodHRwczovL2ExZDJiMGZkLTRjMWUtNGE1NS05ZTJiLTdmM2M5ZDFlMGIyMy50b2tlbnMuc3RzLmdsb2JhbC5hcGkuYXdzIiwic3ViIjoiYXJuOmF3czppYW06OjEyMzQ1Njc4OTAxMjpyb2xlL3F1ZWxsLWd1YXJkZHV0eSIsImF1ZCI6ImFwaTovL0F6dXJlQURUb2tlbkV4Y2hhbmdlIn0.c2lnbmF0dXJl";

#[tokio::test]
async fn the_lambda_reaches_graph_with_its_aws_token_as_the_client_assertion() {
    // STS: GetWebIdentityToken in the Query protocol, as the STS API reference documents it
    // (moto has no outbound federation).
    let sts = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_string_contains("Action=GetWebIdentityToken"))
        .and(wiremock::matchers::body_string_contains("Audience.member.1=api%3A%2F%2FAzureADTokenExchange"))
        .and(wiremock::matchers::body_string_contains("DurationSeconds=300"))
        .and(wiremock::matchers::body_string_contains("SigningAlgorithm=RS256"))
        .respond_with(ResponseTemplate::new(200).insert_header("content-type", "text/xml").set_body_string(format!(
            r#"<GetWebIdentityTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetWebIdentityTokenResult><WebIdentityToken>{AWS_JWT}</WebIdentityToken><Expiration>2099-01-01T00:05:00Z</Expiration></GetWebIdentityTokenResult><ResponseMetadata><RequestId>4b1c</RequestId></ResponseMetadata></GetWebIdentityTokenResponse>"#
        )))
        .expect(1)
        .mount(&sts)
        .await;
    // Entra's token endpoint: the client-credentials grant with the AWS JWT as the assertion.
    let entra = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
        .and(wiremock::matchers::body_string_contains("grant_type=client_credentials"))
        .and(wiremock::matchers::body_string_contains(format!("client_id={APP_ID}").as_str()))
        .and(wiremock::matchers::body_string_contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"))
        .and(wiremock::matchers::body_string_contains(format!("client_assertion={AWS_JWT}").as_str()))
        .and(wiremock::matchers::body_string_contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "graph-token-for-aws-role"})))
        .expect(1)
        .mount(&entra)
        .await;
    let graph = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/organization"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer graph-token-for-aws-role",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [{"id": TENANT}]})))
        .expect(2)
        .mount(&graph)
        .await;

    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(quell_aws::http::sdk_client())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(sts.uri())
        .credentials_provider(aws_credential_types::Credentials::for_tests())
        .load()
        .await;
    let graph_url = graph.uri();
    let env = |k: &str| match k {
        "QUELL_ENTRA_TENANT_ID" => Some(TENANT.to_string()),
        "QUELL_ENTRA_CLIENT_ID" => Some(APP_ID.to_string()),
        "QUELL_GRAPH_URL" => Some(graph_url.clone()),
        "QUELL_GRAPH_SCOPE" => Some("https://graph.microsoft.com/.default".to_string()),
        _ => None,
    };
    let azure = quell_lambda::entra_executor(&config, &enforce(), env, Some(to_local(&entra)))
        .unwrap()
        .expect("configured");
    for _ in 0..2 {
        let r = azure
            .http()
            .call(
                reqwest::Method::GET,
                quell_azure::client::Api::Graph,
                "/v1.0/organization",
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.body["value"][0]["id"], TENANT);
    }
    // Both calls used one AWS token and one Entra token (each cached); wiremock checks the counts.
    let unconfigured = quell_lambda::entra_executor(&config, &enforce(), |_| None, None).unwrap();
    assert!(unconfigured.is_none());
}

/// The handler's managed identity, as its token source sees requests: the scope asked for.
struct Recording(std::sync::Mutex<Vec<String>>);

impl quell_azure::token::TokenSource for Recording {
    fn token<'a>(
        &'a self,
        scope: &'a str,
    ) -> quell_azure::token::BoxFuture<'a, Result<String, quell_azure::AzError>> {
        self.0.lock().unwrap().push(scope.to_string());
        Box::pin(async { Ok("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtaSJ9.c2ln".to_string()) })
    }
}

#[tokio::test]
async fn the_handler_assumes_the_member_role_with_its_managed_identity_token_and_contains_her_aws_side()
 {
    let (w, graph, map) = discovered().await;
    entra_user(&graph).await;

    // The member role the handler reaches: created here, named as the policy says.
    let iam = quell_tests::iam().await;
    let member = unique("quell-member");
    iam.create_role()
        .role_name(&member)
        .assume_role_policy_document(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{MOTO_ACCOUNT}:oidc-provider/sts.windows.net/{TENANT}/")},
            "Action": "sts:AssumeRoleWithWebIdentity"}]}).to_string())
        .send()
        .await
        .unwrap();
    let mut policy = enforce();
    policy.aws.member_role_name = member.clone();
    let tokens = Arc::new(Recording(std::sync::Mutex::new(Vec::new())));
    let token = Arc::new(azure_handler::ManagedIdentityToken::new(
        tokens.clone(),
        "api://quell-aws",
    ));
    let accounts =
        quell_aws::Accounts::web_identity(quell_tests::moto_sdk().await, "aws", &member, token);
    {
        use quell_aws::ClientSource;
        accounts.clients(MOTO_ACCOUNT, "quell-test").await.unwrap();
    }
    // What the clients sign with is the member role's session, from the web identity token.
    let cfg = quell_tests::moto_sdk().await;
    let provider = quell_aws::keyless::WebIdentityCredentials::new(
        aws_sdk_sts::Client::new(&cfg),
        &format!("arn:aws:iam::{MOTO_ACCOUNT}:role/{member}"),
        "quell-probe",
        Arc::new(azure_handler::ManagedIdentityToken::new(
            tokens.clone(),
            "api://quell-aws",
        )),
    );
    let signed = cfg
        .into_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build();
    let caller = aws_sdk_sts::Client::new(&signed)
        .get_caller_identity()
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    assert!(
        caller.contains(&format!("assumed-role/{member}/quell-probe")),
        "{caller}"
    );
    tokens.0.lock().unwrap().pop();
    assert_eq!(
        tokens.0.lock().unwrap().as_slice(),
        ["api://quell-aws/.default"]
    );

    let aws = quell_aws::AwsExecutor::new(
        accounts,
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
    );
    let executor = AzureExecutor::new(
        http_to(&graph),
        policy.clone(),
        Context::default(),
        Arc::new(FixedClock(NOW)),
        vec![],
    );
    let app = azure_handler::App {
        policy,
        ctx: Context::default(),
        executor,
        clock: Arc::new(FixedClock(NOW)),
        ledger: None,
        http_release: false,
        verify_queue: None,
        aws: Some(aws),
        links: quell_ledger::links::LinkCache::with(map),
    };
    let req = json!({"runbook": "revoke_sessions", "principal": "alice@contoso.com", "tenant": TENANT, "reason": "IR-79"});
    let body = json!({"Data": {"req": {"Url": "https://quell-func.azurewebsites.net/api/Runbook", "Method": "POST",
        "Query": {}, "Headers": {"Content-Type": ["application/json"]}, "Params": {}, "Body": req.to_string()}},
        "Metadata": {"sys": {"MethodName": "Runbook", "UtcNow": "2026-11-23T12:00:00Z"}}});
    let reply = app
        .handle(
            azure_handler::Function::Runbook,
            body.to_string().as_bytes(),
        )
        .await;
    let text = reply.to_string();
    assert!(!text.contains("NoAccess"), "{reply:#}");
    let ids = denied_userids(&w.admins).await;
    assert_eq!(ids.len(), 1, "{ids:?} {reply:#}");
    assert!(ids[0].ends_with(":alice@contoso.com"), "{ids:?}");
    assert!(denied_userids(&w.read_only).await.is_empty());
    // Still one managed identity token: the SDK caches the member role's credentials.
    assert_eq!(tokens.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_managed_identity_compromise_revokes_the_sessions_of_the_roles_that_trust_exactly_it() {
    let iam = quell_tests::iam().await;
    let url = format!("sts.windows.net/{TENANT}/");
    // moto keeps one provider per URL; an earlier test run may have made it.
    let provider = match iam
        .create_open_id_connect_provider()
        .url(format!("https://{url}"))
        .client_id_list("api://quell-aws")
        .thumbprint_list("0123456789abcdef0123456789abcdef01234567")
        .send()
        .await
    {
        Ok(out) => out.open_id_connect_provider_arn().unwrap().to_string(),
        Err(_) => format!("arn:aws:iam::{MOTO_ACCOUNT}:oidc-provider/{url}"),
    };
    let mi = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    let other = "0f1e2d3c-4b5a-4968-8776-655443322110";
    let trust = |sub: &str| {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": provider},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {format!("{url}:aud"): "api://quell-aws", format!("{url}:sub"): sub}}}]})
        .to_string()
    };
    let mine = unique("mi-reader");
    let theirs = unique("other-reader");
    for (name, sub) in [(&mine, mi), (&theirs, other)] {
        iam.create_role()
            .role_name(name)
            .assume_role_policy_document(trust(sub))
            .send()
            .await
            .unwrap();
    }
    let mut map = quell_aws::links::discover(&iam, MOTO_ACCOUNT, "2026-11-23T11:00:00Z").await;
    map.links.retain(|l| matches!(&l.aws, quell_core::links::AwsEnd::Role { name, .. } if *name == mine || *name == theirs));
    assert_eq!(map.links.len(), 2, "{:#?}", map.links);

    let policy = enforce();
    let input = json!({"runbook": "revoke_sessions", "principal": mi, "principal_type": "managed_identity", "tenant": TENANT, "reason": "SEC-4416"}).to_string();
    let plan = plan_input(input.as_bytes(), &policy, &linked(map)).unwrap();
    let revoke: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| a.kind == ActionKind::RevokeRoleSessions)
        .collect();
    assert_eq!(revoke.len(), 1, "{:#?}", plan.actions);
    assert!(revoke[0].target.label().contains(&mine), "{revoke:#?}");
    let aws = quell_tests::aws_executor(policy, NOW).await;
    let report = aws.execute(&plan).await;
    let r = report
        .results
        .iter()
        .find(|r| r.action.kind == ActionKind::RevokeRoleSessions)
        .unwrap();
    assert_eq!(r.outcome.status, Status::Applied, "{r:#?}");
    let has_revocation = |role: String| async move {
        quell_tests::iam()
            .await
            .get_role_policy()
            .role_name(role)
            .policy_name(quell_aws::docs::ROLE_REVOKE_POLICY)
            .send()
            .await
            .is_ok()
    };
    assert!(has_revocation(mine.clone()).await);
    assert!(!has_revocation(theirs.clone()).await);
}
