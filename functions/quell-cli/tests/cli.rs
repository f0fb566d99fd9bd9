//! The `quell` binary's contract: exit codes, one-line errors, text and JSON output.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn quell(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quell"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn plan_without_a_file_uses_the_built_in_sample_and_changes_nothing() {
    let out = quell(&["plan"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("mode: dry-run"), "{s}");
    assert!(s.contains("revoke_role_session"), "{s}");
    assert!(s.contains("built-in sample event"), "{s}");
}

#[test]
fn json_output_parses_and_has_the_schema_keys() {
    let out = quell(
        &[
            "plan",
            "events/guardduty/iamuser-tor-caller-akia.json",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["mode", "findings", "actions", "skipped"] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["actions"][0]["kind"], "deactivate_access_key");
}

#[test]
fn stdin_is_read_with_dash() {
    let input = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/runbook/quarantine-iam-user.json"
    ))
    .unwrap();
    let out = quell(&["plan", "-"], Some(&input));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("quarantine_user"));
}

#[test]
fn an_empty_plan_still_exits_zero() {
    let out = quell(&["plan", "events/guardduty/sample-finding.json"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("actions: none"));
}

#[test]
fn rejected_input_exits_two_with_one_line() {
    let out = quell(
        &["plan", "-"],
        Some(br#"{"runbook":"quarantine","principal":"#),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("quell: rejected: standard input: input is not valid JSON"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_invalid_policy_is_rejected_naming_line_and_field() {
    let dir = std::env::temp_dir().join(format!("quell-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(
        &p,
        "mode = \"dry-run\"\n[aws]\nsession_scope = \"everything\"\n",
    )
    .unwrap();
    let out = quell(
        &[
            "plan",
            "events/guardduty/iamuser-tor-caller-akia.json",
            "--policy",
            p.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("session_scope"),
        "{err}"
    );
}

#[test]
fn a_policy_changes_the_plan() {
    let dir = std::env::temp_dir().join(format!("quell-cli-p-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("role-scope.toml");
    std::fs::write(&p, "[aws]\nsession_scope = \"role\"\n").unwrap();
    let out = quell(
        &[
            "plan",
            "events/guardduty/instance-credential-exfiltration-outside.json",
            "--policy",
            p.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(
        s.contains("revoke_role_sessions") && !s.contains("revoke_role_session "),
        "{s}"
    );
}

#[test]
fn a_missing_file_exits_one() {
    let out = quell(&["plan", "no/such/file.json"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read no/such/file.json"));
}

#[test]
fn apply_refuses_without_confirmation() {
    let out = quell(
        &["apply", "events/runbook/quarantine-iam-user.json"],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refusing to change anything without confirmation: pass --yes")
    );
}

#[test]
fn apply_with_yes_contains_for_real_and_a_second_run_changes_nothing() {
    use aws_credential_types::Credentials;
    let moto = quell_tests::Moto::shared();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let user = quell_tests::unique("cli-apply");
    rt.block_on(async {
        let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "t"))
            .load()
            .await;
        aws_sdk_iam::Client::new(&cfg)
            .create_user()
            .user_name(&user)
            .send()
            .await
            .unwrap();
    });
    let dir = std::env::temp_dir().join(format!("quell-apply-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ev = dir.join("req.json");
    std::fs::write(
        &ev,
        format!(r#"{{"runbook":"quarantine","principal":"arn:aws:iam::{}:user/{user}","reason":"cli test"}}"#, quell_tests::MOTO_ACCOUNT),
    )
    .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_quell"))
            .args(["apply", ev.to_str().unwrap(), "--yes"])
            .env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let s = text(&first.stdout);
    assert!(
        s.contains(&format!("applied quarantine_user iam_user {user}")),
        "{s}"
    );
    assert!(s.contains("2 applied, 0 already in state"), "{s}");
    let second = run();
    assert!(
        text(&second.stdout).contains("0 applied, 2 already in state"),
        "{}",
        text(&second.stdout)
    );
}

#[test]
fn sweep_aws_reports_in_dry_run_by_default() {
    let moto = quell_tests::Moto::shared();
    let out = Command::new(env!("CARGO_BIN_EXE_quell"))
        .args(["sweep", "aws"])
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains(&format!("account {}", quell_tests::MOTO_ACCOUNT)),
        "{s}"
    );
    assert!(s.contains("dry-run (pass --yes to deactivate)"), "{s}");
    assert!(s.contains("0 changes made"), "{s}");
}

#[test]
fn sweep_azure_reports_stale_secrets_in_dry_run() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let expires = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600).to_string();
        Mock::given(method("GET"))
            .and(path("/msi/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "t", "expires_on": expires, "token_type": "Bearer", "resource": "https://graph.microsoft.com"})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1.0/applications"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": [
                {"id": "app-1", "appId": "appid-1", "displayName": "billing-sync", "passwordCredentials": [
                    {"keyId": "k-expired", "startDateTime": "2020-01-01T00:00:00Z", "endDateTime": "2021-01-01T00:00:00Z"}]}]})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": []})))
            .mount(&server)
            .await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).expect(0).mount(&server).await;
        server
    });
    let out = Command::new(env!("CARGO_BIN_EXE_quell"))
        .args(["sweep", "azure"])
        .env("QUELL_AZURE_CREDENTIAL", "managed_identity")
        .env("IDENTITY_ENDPOINT", format!("{}/msi/token", server.uri()))
        .env("IDENTITY_HEADER", "x")
        .env("QUELL_GRAPH_URL", server.uri())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("k-expired") && s.contains("expired") && s.contains("DryRun"),
        "{s}"
    );
    assert!(s.contains("0 removed, 1 would be"), "{s}");
}

/// The plan `quell plan FILE --format json` prints: (kind, target name) per action.
fn planned(file: &str) -> Vec<(String, String)> {
    let out = quell(&["plan", file, "--format", "json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let t = &a["target"];
            let who = t["name"]
                .as_str()
                .or(t["access_key_id"].as_str())
                .or(t["id"].as_str())
                .unwrap_or("");
            (a["kind"].as_str().unwrap().to_string(), who.to_string())
        })
        .collect()
}

#[test]
fn plan_contains_the_right_identity_for_the_findings_a_responder_cares_about() {
    // A GuardDuty S3 exfiltration by a local user contains that user.
    let p = planned("events/guardduty/s3-exfiltration-local-user.json");
    assert!(
        p.contains(&(
            "deactivate_access_key".into(),
            "AKIAZ4XQ7PLMREP0RT55".into()
        )),
        "{p:?}"
    );
    assert!(
        p.contains(&("revoke_user_sessions".into(), "reporting-etl".into())),
        "{p:?}"
    );
    // A false-positive Graph alert contains no one.
    assert!(planned("events/defender/graph-alert-false-positive.json").is_empty());
    // A risky service principal is disabled.
    let p = planned("events/entra/risky-service-principals-list.json");
    assert_eq!(
        p,
        [(
            "disable_service_principal".to_string(),
            "crm-sync-connector".to_string()
        )]
    );
}
