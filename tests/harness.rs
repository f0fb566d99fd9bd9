//! Shared helpers for quell's integration tests.

use std::path::PathBuf;

use serde_json::Value;

/// The workspace root (tests run with the crate directory `tests/` as cwd).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Reads a file under `events/`.
pub fn event(rel: &str) -> Vec<u8> {
    let path = root().join("events").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A compact label of a subject or target in the plan JSON: `kind:who`.
pub fn label(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("?");
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let who = match kind {
        "access_key" => s("access_key_id"),
        "identity_center_user" => s("user_name"),
        "role_session" => Some(format!(
            "{}/{}",
            s("name").unwrap_or_default(),
            s("session").unwrap_or_default()
        )),
        "securityhub_finding" | "defender_alert" | "finding" => {
            s("id").map(|id| id.rsplit('/').next().unwrap_or_default().to_string())
        }
        "securityhub_ocsf_finding" => {
            s("uid").map(|id| id.rsplit('/').next().unwrap_or_default().to_string())
        }
        _ => s("name").or_else(|| s("id")).or_else(|| s("sid")),
    };
    format!("{kind}:{}", who.unwrap_or_default())
}

/// Every `.json` file under `dir`, relative to it, sorted.
pub fn json_files(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.extension().is_some_and(|x| x == "json")
                && let Ok(rel) = p.strip_prefix(base)
            {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A `moto_server` (AWS API emulator) on 127.0.0.1 with a free port, one per test binary.
/// It dies with the test process. Tests give their resources unique names instead of
/// resetting moto, so they can run in parallel.
pub struct Moto {
    pub url: String,
    /// The watchdog shell; it exits with moto when the test process ends.
    _watchdog: std::process::Child,
}

/// The account moto's default credentials act in: the "own" account of the tests' events.
pub const MOTO_ACCOUNT: &str = "111122223333";

impl Moto {
    pub fn shared() -> &'static Moto {
        static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }

    /// A second server for the account sweeps: IAM's credential report covers every user of
    /// the account, and moto fails to build it while other tests add and delete users.
    pub fn for_sweeps() -> &'static Moto {
        static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }

    // The watchdog shell outlives this function on purpose: it exits when the test process does.
    #[allow(clippy::zombie_processes)]
    fn start() -> Moto {
        let exe = std::env::var("QUELL_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join(".venv/moto/bin/moto_server"));
        assert!(
            exe.exists(),
            "moto_server not found at {}: run scripts/test (it installs moto into .venv/moto) or set QUELL_MOTO_SERVER",
            exe.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        // A watchdog shell stops moto when this test process exits.
        let script = format!(
            "\"{}\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill $m",
            exe.display(),
            std::process::id()
        );
        let watchdog = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("MOTO_ACCOUNT_ID", MOTO_ACCOUNT)
            // Quarantine attaches the AWS managed AWSDenyAll, which moto loads only on request.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if http_get_ok(port, "/moto-api/") {
                return Moto {
                    url,
                    _watchdog: watchdog,
                };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not answer on {url} within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// An Azurite service (the Azure Storage emulator: Table or Queue) on 127.0.0.1 with a free port,
/// one per service and test binary, in memory. Installed by `scripts/test` into `.azurite/` (npm `azurite`).
pub struct Azurite {
    /// `http://127.0.0.1:<port>/devstoreaccount1`: the account's endpoint for the service.
    pub url: String,
    _watchdog: std::process::Child,
}

impl Azurite {
    /// The Table service (the ledger).
    pub fn shared() -> &'static Azurite {
        static AZ: std::sync::OnceLock<Azurite> = std::sync::OnceLock::new();
        AZ.get_or_init(|| Azurite::start("table"))
    }

    /// The Queue service (the checks after containment).
    pub fn queue() -> &'static Azurite {
        static AZ: std::sync::OnceLock<Azurite> = std::sync::OnceLock::new();
        AZ.get_or_init(|| Azurite::start("queue"))
    }

    #[allow(clippy::zombie_processes)]
    fn start(service: &str) -> Azurite {
        // QUELL_AZURITE_TABLE names azurite-table; its siblings serve the other services.
        let table = std::env::var("QUELL_AZURITE_TABLE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join(".azurite/node_modules/.bin/azurite-table"));
        let exe = table.with_file_name(format!("azurite-{service}"));
        assert!(
            exe.exists(),
            "azurite-{service} not found at {}: run scripts/test (it installs azurite into .azurite) or set QUELL_AZURITE_TABLE",
            exe.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        let script = format!(
            "\"{}\" --{service}Host 127.0.0.1 --{service}Port {port} --inMemoryPersistence --skipApiVersionCheck --disableTelemetry >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill $m",
            exe.display(),
            std::process::id()
        );
        let watchdog = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start azurite");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Azurite {
                    url: format!("http://127.0.0.1:{port}/devstoreaccount1"),
                    _watchdog: watchdog,
                };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "azurite-{service} did not listen on 127.0.0.1:{port} within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn http_get_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200")
}

/// A name unique to this test run, for moto resources.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A file under `events/`, parsed.
pub fn event_json(rel: &str) -> Value {
    serde_json::from_slice(&event(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// An SDK configuration that reaches the shared moto with test credentials.
pub async fn moto_sdk() -> aws_config::SdkConfig {
    sdk_for(Moto::shared()).await
}

/// An SDK configuration that reaches the sweeps' moto ([`Moto::for_sweeps`]).
pub async fn sweep_sdk() -> aws_config::SdkConfig {
    sdk_for(Moto::for_sweeps()).await
}

async fn sdk_for(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(quell_aws::http::sdk_client())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// A new EventBridge bus in moto whose events matching `pattern` land in a new SQS queue.
/// Returns (bus name, queue URL).
pub async fn bus_to_queue(cfg: &aws_config::SdkConfig, pattern: &str) -> (String, String) {
    let eb = aws_sdk_eventbridge::Client::new(cfg);
    let sqs = aws_sdk_sqs::Client::new(cfg);
    let bus = unique("quell-bus");
    eb.create_event_bus().name(&bus).send().await.unwrap();
    let q = sqs
        .create_queue()
        .queue_name(unique("queue"))
        .send()
        .await
        .unwrap();
    let url = q.queue_url().unwrap().to_string();
    let arn_attr = aws_sdk_sqs::types::QueueAttributeName::QueueArn;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(arn_attr.clone())
        .send()
        .await
        .unwrap();
    let arn = attrs.attributes().unwrap()[&arn_attr].clone();
    let rule = unique("rule");
    eb.put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(pattern)
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("q")
        .arn(arn)
        .build()
        .unwrap();
    eb.put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(target)
        .send()
        .await
        .unwrap();
    (bus, url)
}

/// A Table Storage table name unique to this test run (letters and digits only, as Table
/// Storage requires).
pub fn unique_table(prefix: &str) -> String {
    unique(prefix).replace(['-', '_'], "x")
}

/// A ledger entry of `principal` for `finding`, contained at 2026-11-23T12:00:00Z and done, with
/// no actions: tests set what they need with struct update syntax.
pub fn ledger_entry(principal: &str, finding: &str) -> quell_ledger::Entry {
    let scope = match quell_core::key::PrincipalKey::parse(principal)
        .as_ref()
        .and_then(|k| k.aws_parts())
    {
        Some((account, _, _)) => format!("aws:{account}"),
        None => "azure:7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f".into(),
    };
    quell_ledger::Entry {
        principal: principal.into(),
        finding: finding.into(),
        scope,
        state: quell_ledger::State::Done,
        severity: quell_core::model::SeverityLabel::High,
        trigger: "test".into(),
        at: "2026-11-23T12:00:00Z".into(),
        updated: "2026-11-23T12:00:00Z".into(),
        lease_until: None,
        delivery: None,
        actions: vec![],
        released_at: None,
        released_by: None,
        expires: None,
        version: 1,
        history: vec![],
        stored_at: None,
    }
}

/// An inverse as a ledger row holds it (`{"call", "params"}`), read the way quell reads rows:
/// for forging entries as anyone who can write the ledger could.
pub fn inverse(call: &str, params: serde_json::Value) -> quell_core::report::Inverse {
    quell_core::report::Inverse::from_raw(quell_core::report::RawInverse {
        call: call.to_string(),
        params,
    })
}

/// The time the integration tests act at: every clock in them is fixed here.
pub const NOW: time::OffsetDateTime = time::macros::datetime!(2026-11-23 12:00:00 UTC);

/// The default policy in enforce mode.
pub fn enforce() -> quell_core::Policy {
    quell_core::Policy {
        mode: quell_core::policy::Mode::Enforce,
        ..quell_core::Policy::default()
    }
}

/// The SDK configuration for the shared moto server.
pub async fn sdk() -> aws_config::SdkConfig {
    moto_sdk().await
}

/// An IAM client on moto.
pub async fn iam() -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&moto_sdk().await)
}

/// The AWS executor on moto, at a fixed time.
pub async fn aws_executor(
    policy: quell_core::Policy,
    now: time::OffsetDateTime,
) -> quell_aws::AwsExecutor<quell_aws::Fixed> {
    quell_aws::AwsExecutor::new(
        quell_aws::Fixed(quell_aws::AwsClients::new(&moto_sdk().await)),
        policy,
        quell_core::Context::default(),
        std::sync::Arc::new(quell_core::clock::FixedClock(now)),
    )
}

/// The one pipeline over an in-memory ledger, with `exec` as both the executor and the undo of
/// its cloud, and no check queue: for tests of what the pipeline decides around one cloud.
pub fn memory_pipeline<'a, X>(
    policy: &'a quell_core::Policy,
    clock: &'a quell_core::clock::FixedClock,
    ledger: &'a quell_ledger::memory::MemoryLedger,
    exec: &'a X,
) -> quell_pipeline::Pipeline<'a, quell_ledger::memory::MemoryLedger>
where
    X: quell_pipeline::Executor + quell_pipeline::Undo,
{
    quell_pipeline::Pipeline {
        function: "test",
        policy,
        clock,
        ledger: Some(ledger),
        executor: Some(exec),
        undo: vec![exec],
        checks: None,
        audit: None,
    }
}
