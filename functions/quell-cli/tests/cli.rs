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
            .http_client(quell_aws::http::sdk_client())
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

/// A moto-backed world for the ledger flows: its own ledger table, a fixed time.
struct World {
    moto: &'static quell_tests::Moto,
    table: String,
    dir: std::path::PathBuf,
    rt: tokio::runtime::Runtime,
    iam: aws_sdk_iam::Client,
}

impl World {
    fn new(policy: &str) -> World {
        let moto = quell_tests::Moto::shared();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let iam = rt.block_on(async { aws_sdk_iam::Client::new(&quell_tests::moto_sdk().await) });
        let table = quell_tests::unique("quell-ledger");
        let dir = std::env::temp_dir().join(quell_tests::unique("quell-world"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.toml"), policy).unwrap();
        World {
            moto,
            table,
            dir,
            rt,
            iam,
        }
    }
    fn quell(&self, args: &[&str]) -> Output {
        self.quell_at("2026-11-23T12:00:00Z", args)
    }
    /// [`World::quell`] at another time than the world's.
    fn quell_at(&self, now: &str, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if matches!(args.first(), Some(&"apply" | &"release" | &"verify")) {
            all.push("--policy".into());
            all.push(self.dir.join("policy.toml").display().to_string());
        }
        Command::new(env!("CARGO_BIN_EXE_quell"))
            .args(&all)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env("AWS_ENDPOINT_URL", &self.moto.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("QUELL_LEDGER_TABLE", &self.table)
            .env("QUELL_NOW", now)
            .output()
            .unwrap()
    }
    /// Deletes `user` and everything on it, so any IAM call on it fails with NoSuchEntity.
    fn delete_user(&self, user: &str) {
        self.rt.block_on(async {
            let iam = &self.iam;
            for p in iam
                .list_attached_user_policies()
                .user_name(user)
                .send()
                .await
                .unwrap()
                .attached_policies()
            {
                iam.detach_user_policy()
                    .user_name(user)
                    .policy_arn(p.policy_arn().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            for name in iam
                .list_user_policies()
                .user_name(user)
                .send()
                .await
                .unwrap()
                .policy_names()
            {
                iam.delete_user_policy()
                    .user_name(user)
                    .policy_name(name)
                    .send()
                    .await
                    .unwrap();
            }
            for k in iam
                .list_access_keys()
                .user_name(user)
                .send()
                .await
                .unwrap()
                .access_key_metadata()
            {
                iam.delete_access_key()
                    .user_name(user)
                    .access_key_id(k.access_key_id().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            iam.delete_user().user_name(user).send().await.unwrap();
        });
    }
    /// A user with one active key.
    fn user(&self, prefix: &str) -> (String, String) {
        self.rt.block_on(async {
            let user = quell_tests::unique(prefix);
            self.iam
                .create_user()
                .user_name(&user)
                .send()
                .await
                .unwrap();
            let k = self
                .iam
                .create_access_key()
                .user_name(&user)
                .send()
                .await
                .unwrap();
            (user, k.access_key().unwrap().access_key_id().to_string())
        })
    }
    /// A GuardDuty finding of `key` of `user`, written to a file.
    fn finding(&self, user: &str, key: &str, id: &str) -> String {
        let mut v: serde_json::Value =
            quell_tests::event_json("guardduty/iamuser-tor-caller-akia.json");
        let d = &mut v["detail"];
        d["resource"]["accessKeyDetails"]["userName"] = user.into();
        d["resource"]["accessKeyDetails"]["accessKeyId"] = key.into();
        d["accountId"] = quell_tests::MOTO_ACCOUNT.into();
        d["id"] = id.into();
        let path = self.dir.join(format!("{id}.json"));
        std::fs::write(&path, v.to_string()).unwrap();
        path.display().to_string()
    }
    fn key_active(&self, user: &str, key: &str) -> bool {
        self.rt.block_on(async {
            let out = self
                .iam
                .list_access_keys()
                .user_name(user)
                .send()
                .await
                .unwrap();
            out.access_key_metadata().iter().any(|k| {
                k.access_key_id() == Some(key) && k.status().map(|s| s.as_str()) == Some("Active")
            })
        })
    }
    fn attached(&self, user: &str) -> Vec<String> {
        self.rt.block_on(async {
            let out = self
                .iam
                .list_attached_user_policies()
                .user_name(user)
                .send()
                .await
                .unwrap();
            out.attached_policies()
                .iter()
                .filter_map(|p| p.policy_name().map(str::to_string))
                .collect()
        })
    }
    fn inline(&self, user: &str) -> Vec<String> {
        self.rt.block_on(async {
            let out = self
                .iam
                .list_user_policies()
                .user_name(user)
                .send()
                .await
                .unwrap();
            out.policy_names().to_vec()
        })
    }
    fn tags(&self, user: &str) -> Vec<String> {
        self.rt.block_on(async {
            let out = self
                .iam
                .list_user_tags()
                .user_name(user)
                .send()
                .await
                .unwrap();
            out.tags().iter().map(|t| t.key().to_string()).collect()
        })
    }
}

#[test]
fn ledger_release_redelivery_and_verify_end_to_end() {
    let w = World::new("[aws]\nquarantine_users = true\n");
    let init = w.quell(&["ledger", "init"]);
    assert_eq!(init.status.code(), Some(0), "{}", text(&init.stderr));
    assert!(text(&init.stdout).contains("created"));
    assert!(text(&w.quell(&["ledger", "init"]).stdout).contains("already exists"));

    let (user, key) = w.user("ledgered");
    let arn = format!("arn:aws:iam::{}:user/{user}", quell_tests::MOTO_ACCOUNT);
    let f1 = w.finding(&user, &key, &quell_tests::unique("finding-one"));
    let out = w.quell(&["apply", &f1, "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!w.key_active(&user, &key));
    assert_eq!(w.attached(&user), ["AWSDenyAll"]);
    assert!(!w.inline(&user).is_empty());
    assert!(w.tags(&user).contains(&"quell:quarantined".to_string()));
    let list = w.quell(&["ledger", "list", &arn]);
    assert!(
        text(&list.stdout).contains("1 entries, 1 still in force"),
        "{}",
        text(&list.stdout)
    );

    // Release: every policy and tag quell added is gone; the key stays inactive.
    let rel = w.quell(&["release", &arn, "--yes", "--by", "oncall@example.com"]);
    assert_eq!(
        rel.status.code(),
        Some(0),
        "{}{}",
        text(&rel.stdout),
        text(&rel.stderr)
    );
    let said = text(&rel.stdout);
    assert!(said.contains("stay(s) inactive"), "{said}");
    assert!(w.attached(&user).is_empty(), "{:?}", w.attached(&user));
    assert!(w.inline(&user).is_empty(), "{:?}", w.inline(&user));
    assert!(!w.tags(&user).contains(&"quell:quarantined".to_string()));
    assert!(!w.key_active(&user, &key));

    // The same finding re-delivered contains no one; a new finding does.
    let again = w.quell(&["apply", &f1, "--yes"]);
    let said = text(&again.stdout);
    assert!(
        said.contains("withheld") && said.contains("released by oncall@example.com"),
        "{said}"
    );
    assert!(w.attached(&user).is_empty());
    let f2 = w.finding(&user, &key, &quell_tests::unique("finding-two"));
    let new = w.quell(&["apply", &f2, "--yes"]);
    assert_eq!(new.status.code(), Some(0), "{}", text(&new.stderr));
    assert_eq!(w.attached(&user), ["AWSDenyAll"]);

    // A key created after containment is the attacker's: verify deactivates it.
    let (fresh, _) = w.rt.block_on(async {
        let k = w
            .iam
            .create_access_key()
            .user_name(&user)
            .send()
            .await
            .unwrap();
        (k.access_key().unwrap().access_key_id().to_string(), ())
    });
    let dry = w.quell(&["verify", &arn]);
    assert!(
        text(&dry.stdout).contains("would deactivate"),
        "{}",
        text(&dry.stdout)
    );
    assert!(w.key_active(&user, &fresh));
    let fix = w.quell(&["verify", &arn, "--yes"]);
    assert_eq!(fix.status.code(), Some(0), "{}", text(&fix.stderr));
    assert!(
        text(&fix.stdout).contains("attacker persistence"),
        "{}",
        text(&fix.stdout)
    );
    assert!(!w.key_active(&user, &fresh));
}

#[test]
fn a_release_marks_every_entry_it_undid_even_after_one_failed() {
    let w = World::new("[aws]\nquarantine_users = true\n");
    assert_eq!(w.quell(&["ledger", "init"]).status.code(), Some(0));
    // One finding contains two users; the newer containment is released first, and fails.
    let finding = quell_tests::unique("two-users");
    let (older, older_key) = w.user("undone");
    let (newer, newer_key) = w.user("vanished");
    let f = w.finding(&older, &older_key, &finding);
    ok(&w.quell_at("2026-11-23T12:00:00Z", &["apply", &f, "--yes"]));
    let f = w.finding(&newer, &newer_key, &finding);
    ok(&w.quell_at("2026-11-23T12:05:00Z", &["apply", &f, "--yes"]));
    w.delete_user(&newer);

    let rel = w.quell_at(
        "2026-11-23T13:00:00Z",
        &[
            "release",
            "--finding",
            &finding,
            "--yes",
            "--by",
            "oncall@example.com",
        ],
    );
    assert_eq!(rel.status.code(), Some(1), "{}", text(&rel.stdout));
    let err = text(&rel.stderr);
    assert!(
        err.contains("1 containment(s) not released") && err.contains(&newer),
        "{err}"
    );
    // The older user's containment was undone and is recorded released, whatever came before.
    assert!(w.attached(&older).is_empty(), "{:?}", w.attached(&older));
    let arn = |u: &str| format!("arn:aws:iam::{}:user/{u}", quell_tests::MOTO_ACCOUNT);
    let list = text(&w.quell(&["ledger", "list", &arn(&older)]).stdout);
    assert!(list.contains("1 entries, 0 still in force"), "{list}");
    let list = text(&w.quell(&["ledger", "list", &arn(&newer)]).stdout);
    assert!(list.contains("1 entries, 1 still in force"), "{list}");
}

#[test]
fn the_breaker_withholds_the_fourth_and_fifth_containment_in_an_hour() {
    let w = World::new("[breaker]\nmax_containments_per_account_per_hour = 3\n");
    assert_eq!(w.quell(&["ledger", "init"]).status.code(), Some(0));
    let mut withheld = 0;
    for i in 0..5 {
        let (user, key) = w.user(&format!("storm{i}"));
        let f = w.finding(&user, &key, &quell_tests::unique("storm"));
        let out = w.quell(&["apply", &f, "--yes"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let said = text(&out.stdout);
        if said.contains("breaker is open") {
            withheld += 1;
            assert!(said.contains("applied notify"), "{said}");
            assert!(
                w.key_active(&user, &key),
                "withheld: the key must stay active"
            );
        } else {
            assert!(!w.key_active(&user, &key), "{said}");
        }
    }
    assert_eq!(withheld, 2);
    let scope = format!("aws:{}", quell_tests::MOTO_ACCOUNT);
    let status = w.quell(&["breaker", "status", "--scope", &scope]);
    assert!(
        text(&status.stdout).contains("3 containment(s)"),
        "{}",
        text(&status.stdout)
    );
    assert_eq!(
        w.quell(&["breaker", "reset", "--scope", &scope])
            .status
            .code(),
        Some(0)
    );
    assert!(
        text(&w.quell(&["breaker", "status", "--scope", &scope]).stdout)
            .contains("0 containment(s)")
    );
}

/// A stateful Entra fake: users' `accountEnabled`, the risky-user dismissals, and the managed
/// identity token endpoint (Graph's documented paths and status codes: `GET /v1.0/users/{id}`
/// 200 or 404, `PATCH` 204, `riskyUsers/dismiss` 204).
#[derive(Clone, Default)]
struct Entra {
    enabled: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, bool>>>,
}

impl wiremock::Respond for Entra {
    fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
        use wiremock::ResponseTemplate;
        let path = req.url.path().to_string();
        if path == "/msi/token" {
            let expires = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600)
                .to_string();
            return ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "t", "expires_on": expires, "token_type": "Bearer",
                "resource": "https://graph.microsoft.com"}));
        }
        if path.starts_with("/v1.0/users/") && path.ends_with("/authentication/methods") {
            return ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": []}));
        }
        let Some(id) = path.strip_prefix("/v1.0/users/") else {
            return ResponseTemplate::new(404).set_body_json(
                serde_json::json!({"error": {"code": "NotFound", "message": path}}),
            );
        };
        let id = id.to_string();
        let mut users = self.enabled.lock().unwrap();
        let Some(enabled) = users.get(&id).copied() else {
            return ResponseTemplate::new(404).set_body_json(
                serde_json::json!({"error": {"code": "Request_ResourceNotFound", "message": "no such user"}}),
            );
        };
        match req.method.as_str() {
            "GET" => ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": id, "userPrincipalName": format!("{id}@contoso.com"),
                "accountEnabled": enabled, "onPremisesSyncEnabled": null})),
            "PATCH" => {
                let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                users.insert(id, body["accountEnabled"].as_bool().unwrap());
                ResponseTemplate::new(204)
            }
            _ => ResponseTemplate::new(405),
        }
    }
}

/// The Azure world: Azurite holds the ledger, the Entra fake stands in for Graph.
struct AzureWorld {
    table: String,
    dir: std::path::PathBuf,
    entra: Entra,
    graph: wiremock::MockServer,
    _rt: tokio::runtime::Runtime,
}

const TENANT: &str = "7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f";

impl AzureWorld {
    fn new(policy: &str) -> AzureWorld {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let entra = Entra::default();
        let graph = rt.block_on(async {
            let s = wiremock::MockServer::start().await;
            wiremock::Mock::given(wiremock::matchers::any())
                .respond_with(entra.clone())
                .mount(&s)
                .await;
            s
        });
        let dir = std::env::temp_dir().join(quell_tests::unique("quell-azure-world"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.toml"), policy).unwrap();
        AzureWorld {
            table: quell_tests::unique_table("quell"),
            dir,
            entra,
            graph,
            _rt: rt,
        }
    }
    /// A new enabled user; its object id.
    fn user(&self) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id());
        self.entra.enabled.lock().unwrap().insert(id.clone(), true);
        id
    }
    fn enabled(&self, id: &str) -> bool {
        self.entra.enabled.lock().unwrap()[id]
    }
    fn set_enabled(&self, id: &str, on: bool) {
        self.entra.enabled.lock().unwrap().insert(id.into(), on);
    }
    /// A runbook request to contain `user` for finding `id`, written to a file.
    fn finding(&self, user: &str, id: &str) -> String {
        let v = serde_json::json!({"runbook": "quarantine", "principal": user, "tenant": TENANT,
            "reason": "SEC-4420: pass-the-ticket", "requested_by": "soc@contoso.com", "id": id});
        let path = self.dir.join(format!("{id}.json"));
        std::fs::write(&path, v.to_string()).unwrap();
        path.display().to_string()
    }
    fn quell(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if matches!(args.first(), Some(&"apply" | &"release" | &"verify")) {
            all.push("--policy".into());
            all.push(self.dir.join("policy.toml").display().to_string());
        }
        Command::new(env!("CARGO_BIN_EXE_quell"))
            .args(&all)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env("QUELL_LEDGER_TABLE", &self.table)
            .env("QUELL_LEDGER_ENDPOINT", &quell_tests::Azurite::shared().url)
            .env(
                "QUELL_LEDGER_ACCOUNT_KEY",
                "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
            )
            .env("QUELL_AZURE_CREDENTIAL", "managed_identity")
            .env("IDENTITY_ENDPOINT", format!("{}/msi/token", self.graph.uri()))
            .env("IDENTITY_HEADER", "x")
            .env("QUELL_GRAPH_URL", self.graph.uri())
            .env("QUELL_NOW", "2026-11-23T12:00:00Z")
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn entra_user_ledger_release_redelivery_and_verify_end_to_end() {
    let w = AzureWorld::new("");
    assert!(ok(&w.quell(&["ledger", "init"])).contains("created"));
    assert!(ok(&w.quell(&["ledger", "init"])).contains("already exists"));
    let user = w.user();
    let f1 = w.finding(&user, &quell_tests::unique("finding-one"));
    ok(&w.quell(&["apply", &f1, "--yes"]));
    assert!(!w.enabled(&user), "apply disables the user");
    let list = ok(&w.quell(&["ledger", "list", &user]));
    assert!(list.contains("1 entries, 1 still in force"), "{list}");

    // Release re-enables the user and is recorded.
    let said = ok(&w.quell(&["release", &user, "--yes", "--by", "oncall@contoso.com"]));
    assert!(said.contains("accountEnabled = true"), "{said}");
    assert!(w.enabled(&user));
    let again = ok(&w.quell(&["release", &user, "--yes"]));
    assert!(again.contains("nothing in force"), "{again}");

    // The same finding re-delivered contains no one; a new finding does.
    let said = ok(&w.quell(&["apply", &f1, "--yes"]));
    assert!(
        said.contains("withheld") && said.contains("released by oncall@contoso.com"),
        "{said}"
    );
    assert!(w.enabled(&user));
    let f2 = w.finding(&user, &quell_tests::unique("finding-two"));
    ok(&w.quell(&["apply", &f2, "--yes"]));
    assert!(!w.enabled(&user));

    // Someone enables the account again: verify says so, and with --yes disables it again.
    w.set_enabled(&user, true);
    let dry = ok(&w.quell(&["verify", &user]));
    assert!(dry.contains("would disable it again"), "{dry}");
    assert!(w.enabled(&user));
    let fix = ok(&w.quell(&["verify", &user, "--yes"]));
    assert!(fix.contains("attacker persistence"), "{fix}");
    assert!(!w.enabled(&user));
    let held = ok(&w.quell(&["verify", &user, "--yes"]));
    assert!(held.contains("still disabled"), "{held}");
}

#[test]
fn the_breaker_withholds_the_fourth_and_fifth_entra_containment_in_an_hour() {
    let w = AzureWorld::new("[breaker]\nmax_containments_per_tenant_per_hour = 3\n");
    ok(&w.quell(&["ledger", "init"]));
    let mut withheld = 0;
    for _ in 0..5 {
        let user = w.user();
        let f = w.finding(&user, &quell_tests::unique("storm"));
        let said = ok(&w.quell(&["apply", &f, "--yes"]));
        if said.contains("breaker is open") {
            withheld += 1;
            assert!(said.contains("applied notify"), "{said}");
            assert!(w.enabled(&user), "withheld: the user stays enabled");
        } else {
            assert!(!w.enabled(&user), "{said}");
        }
    }
    assert_eq!(withheld, 2);
    let scope = format!("azure:{TENANT}");
    let status = ok(&w.quell(&["breaker", "status", "--scope", &scope]));
    assert!(status.contains("3 containment(s)"), "{status}");
}

const DOCTOR_ISSUER: &str =
    "https://a1d2b0fd-4c1e-4a55-9e2b-7f3c9d1e0b23.tokens.sts.global.api.aws";
const DOCTOR_ROLE: &str = "arn:aws:iam::123456789012:role/quell-guardduty-fn";

/// `quell doctor --entra-client-id … --function-role …` against a fake STS, IAM (answering
/// GetOutboundWebIdentityFederationInfo with `outbound`), managed-identity endpoint and Graph.
fn doctor_with(outbound: wiremock::ResponseTemplate) -> Output {
    let (issuer, role) = (DOCTOR_ISSUER, DOCTOR_ROLE);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        use wiremock::matchers::{body_string_contains, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        // STS and IAM in the Query protocol (moto has no outbound federation).
        Mock::given(method("POST"))
            .and(body_string_contains("Action=GetCallerIdentity"))
            .respond_with(ResponseTemplate::new(200).insert_header("content-type", "text/xml").set_body_string(
                r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/ir-engineer</Arn><UserId>AIDAEXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"#))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_string_contains("Action=GetOutboundWebIdentityFederationInfo"))
            .respond_with(outbound)
            .mount(&server)
            .await;
        let expires = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600).to_string();
        Mock::given(method("GET"))
            .and(path("/msi/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "t", "expires_on": expires, "token_type": "Bearer", "resource": "https://graph.microsoft.com"})))
            .mount(&server)
            .await;
        // The credential trusts the function's session ARN: Entra compares it with the token's
        // sub, which is the role ARN, and refuses every exchange.
        Mock::given(method("GET"))
            .and(path("/v1.0/applications(appId='5e6f7a8b-1c2d-4e3f-9a0b-1c2d3e4f5a6b')/federatedIdentityCredentials"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": [
                {"id": "f1", "name": "quell-lambda", "issuer": issuer,
                 "subject": "arn:aws:sts::123456789012:assumed-role/quell-guardduty-fn/quell-guardduty",
                 "audiences": ["api://AzureADTokenExchange"]}]})))
            .mount(&server)
            .await;
        server
    });
    let out = Command::new(env!("CARGO_BIN_EXE_quell"))
        .args([
            "doctor",
            "--entra-client-id",
            "5e6f7a8b-1c2d-4e3f-9a0b-1c2d3e4f5a6b",
            "--function-role",
            role,
        ])
        .env("AWS_ENDPOINT_URL", server.uri())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("QUELL_AZURE_CREDENTIAL", "managed_identity")
        .env("IDENTITY_ENDPOINT", format!("{}/msi/token", server.uri()))
        .env("IDENTITY_HEADER", "x")
        .env("QUELL_GRAPH_URL", server.uri())
        .output()
        .unwrap();
    drop(server);
    out
}

/// IAM's Query-protocol answer to GetOutboundWebIdentityFederationInfo.
fn outbound_enabled() -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(200).insert_header("content-type", "text/xml").set_body_string(format!(
        r#"<GetOutboundWebIdentityFederationInfoResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><GetOutboundWebIdentityFederationInfoResult><IssuerIdentifier>{DOCTOR_ISSUER}</IssuerIdentifier><JwtVendingEnabled>true</JwtVendingEnabled></GetOutboundWebIdentityFederationInfoResult><ResponseMetadata><RequestId>2</RequestId></ResponseMetadata></GetOutboundWebIdentityFederationInfoResponse>"#))
}

fn iam_error(status: u16, code: &str) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(status).insert_header("content-type", "text/xml").set_body_string(format!(
        r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{code}</Message></Error><RequestId>3</RequestId></ErrorResponse>"#))
}

#[test]
fn doctor_reports_a_federated_credential_with_the_wrong_subject_and_the_fix() {
    let (issuer, role) = (DOCTOR_ISSUER, DOCTOR_ROLE);
    let out = doctor_with(outbound_enabled());
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}\n{}", text(&out.stderr));
    assert!(
        s.contains(&format!(
            "ok      outbound federation: account 123456789012 issues tokens as {issuer}"
        )),
        "{s}"
    );
    assert!(
        s.contains("MISSING federated credential: wrong subject"),
        "{s}"
    );
    assert!(
        s.contains(&format!("the function's tokens carry sub = {role}")),
        "{s}"
    );
    assert!(s.contains(&format!("{{\"subject\":\"{role}\"}}")), "{s}");
    assert!(s.contains("fix: az ad app federated-credential update --id 5e6f7a8b-1c2d-4e3f-9a0b-1c2d3e4f5a6b --federated-credential-id quell-lambda"), "{s}");
}

#[test]
fn doctor_tells_outbound_federation_off_from_a_read_it_may_not_make() {
    let off = doctor_with(iam_error(404, "FeatureDisabled"));
    let s = text(&off.stdout);
    assert_eq!(off.status.code(), Some(1), "{s}");
    assert!(s.contains("outbound identity federation is off"), "{s}");
    assert!(
        s.contains("fix: aws iam enable-outbound-web-identity-federation"),
        "{s}"
    );
    let denied = doctor_with(iam_error(403, "AccessDenied"));
    let s = text(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{s}");
    assert!(s.contains("could not be read (AccessDenied"), "{s}");
    assert!(
        !s.contains("is off"),
        "a refusal is not a disabled feature: {s}"
    );
}
