//! `quell`: replay any event locally and see exactly what quell would do.
//!
//! Exit codes: 0 a plan was made (even an empty one), 2 the input or policy was rejected
//! (one line says what and where), 1 anything else.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use quell_core::{Context, Policy, plan_input, render};

/// The sample event `quell plan` uses when given no file: stolen EC2 role credentials used
/// outside AWS.
const SAMPLE_EVENT: &str =
    include_str!("../../../events/guardduty/instance-credential-exfiltration-outside.json");

#[derive(Parser)]
#[command(
    name = "quell",
    version,
    about = "Contain compromised or stale cloud identities"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print the containment plan for an event (never changes anything).
    Plan {
        /// Event file, or `-` for standard input. Without it, a built-in sample event.
        file: Option<PathBuf>,
        /// Policy file (TOML); the built-in default otherwise.
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Execute the plan for an event with your AWS credentials (standard credential chain;
    /// `AWS_ENDPOINT_URL` points at an emulator). Asks for confirmation unless `--yes`.
    Apply {
        /// Event file, or `-` for standard input (then `--yes` is required).
        file: PathBuf,
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Do not ask; apply at once.
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Sweep for dormant access keys and console passwords (dry-run unless --yes).
    Sweep {
        #[command(subcommand)]
        cloud: SweepCloud,
    },
    /// Print the effective policy (the built-in default, or FILE checked and filled in).
    Policy {
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SweepCloud {
    /// The Entra tenant: stale application and service-principal secrets. Tokens come from
    /// QUELL_AZURE_CREDENTIAL (managed_identity, workload_identity or client_secret).
    Azure {
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Remove the stale secrets (otherwise report only).
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One AWS account: the credential report, then only the calls dormant keys need.
    Aws {
        /// Account to sweep through the member role (default: the caller's account).
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Deactivate the dormant keys (otherwise report only).
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Concurrent per-user calls.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

/// A failure that maps to exit code 2: the user's input or policy was rejected.
#[derive(Debug)]
struct Rejected(String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Rejected>() {
            Some(r) => {
                eprintln!("quell: rejected: {r}");
                ExitCode::from(2)
            }
            None => {
                eprintln!("quell: error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Policy> {
    match path {
        None => Ok(Policy::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read policy file {}", p.display()))?;
            Policy::from_toml(&text, &p.display().to_string())
                .map_err(|e| Rejected(e.to_string()).into())
        }
    }
}

fn read_input(file: Option<&PathBuf>) -> anyhow::Result<(Vec<u8>, String)> {
    match file {
        None => Ok((
            SAMPLE_EVENT.as_bytes().to_vec(),
            "built-in sample event".into(),
        )),
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(quell_core::json::MAX_INPUT_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            Ok((buf, "standard input".into()))
        }
        Some(p) => {
            let meta =
                std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
            if meta.len() > quell_core::json::MAX_INPUT_BYTES as u64 {
                return Err(Rejected(format!(
                    "{}: {} bytes is over the {}-byte input limit",
                    p.display(),
                    meta.len(),
                    quell_core::json::MAX_INPUT_BYTES
                ))
                .into());
            }
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Ok((bytes, p.display().to_string()))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plan {
            file,
            policy,
            format,
        } => {
            let policy = load_policy(policy.as_ref())?;
            let (input, origin) = read_input(file.as_ref())?;
            let plan = plan_input(&input, &policy, &Context::default())
                .map_err(|e| Rejected(format!("{origin}: {e}")))?;
            match format {
                Format::Text => {
                    if file.is_none() {
                        println!(
                            "(no event file given: planning the {origin}; try `quell plan events/<file>.json`)\n"
                        );
                    }
                    print!("{}", render::plan_text(&plan));
                }
                Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            }
            Ok(())
        }
        Command::Apply {
            file,
            policy,
            yes,
            format,
        } => apply(&file, policy.as_ref(), yes, format),
        Command::Sweep {
            cloud:
                SweepCloud::Aws {
                    account,
                    policy,
                    yes,
                    format,
                    concurrency,
                },
        } => sweep_aws(account, policy.as_ref(), yes, format, concurrency),
        Command::Sweep {
            cloud:
                SweepCloud::Azure {
                    policy,
                    yes,
                    format,
                },
        } => sweep_azure(policy.as_ref(), yes, format),
        Command::Policy { policy } => {
            let policy = load_policy(policy.as_ref())?;
            println!("{}", serde_json::to_string_pretty(&policy)?);
            Ok(())
        }
    }
}

/// The caller's identity and an account-aware client source, from the standard credential chain.
async fn aws_session(policy: &Policy) -> anyhow::Result<(quell_aws::Accounts, String, Context)> {
    let config = quell_aws::load_config(None).await;
    let me = quell_aws::session(config, &policy.aws.member_role_name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((me.accounts, me.account, me.ctx))
}

fn sweep_aws(
    account: Option<String>,
    policy: Option<&PathBuf>,
    yes: bool,
    format: Format,
    concurrency: usize,
) -> anyhow::Result<()> {
    use quell_aws::ClientSource;
    use quell_core::report::Status;
    use std::io::IsTerminal;
    let policy = load_policy(policy)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let (source, own, ctx) = aws_session(&policy).await?;
        let account = account.unwrap_or(own);
        let clients = source
            .clients(&account, "quell-sweep")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let progress: Option<std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>> =
            if std::io::stderr().is_terminal() {
                Some(std::sync::Arc::new(|done, total| {
                    if total >= 20 {
                        eprint!("\rchecking users with dormant keys: {done}/{total}");
                        if done == total {
                            eprintln!();
                        }
                    }
                }))
            } else {
                None
            };
        let opts = quell_aws::sweep::SweepOptions {
            account,
            policy: policy.clone(),
            ctx,
            now: quell_core::clock::Clock::now(&quell_core::clock::SystemClock),
            enforce: yes,
            concurrency,
            progress,
        };
        quell_aws::sweep::sweep_account(&clients.iam, &opts)
            .await
            .map_err(|e| anyhow::anyhow!("sweep failed: {e}"))
    })?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            let mode = if report.enforce {
                "enforce"
            } else {
                "dry-run (pass --yes to deactivate)"
            };
            println!(
                "account {} · {} users · dormant after {} days · {mode}\n",
                report.account, report.users, report.dormancy_days
            );
            println!(
                "{:<32} {:<4} {:<22} {:<16} detail",
                "user", "slot", "key", "outcome"
            );
            for k in &report.keys {
                let status = format!("{:?}", k.outcome.status);
                let key = k.access_key_id.as_deref().unwrap_or("-");
                println!(
                    "{:<32} {:<4} {key:<22} {status:<16} {}",
                    k.user, k.slot, k.outcome.detail
                );
            }
            for p in &report.passwords {
                let status = format!("{:?}", p.outcome.status);
                println!(
                    "{:<32} {:<4} {:<22} {status:<16} {}",
                    p.user, "pw", "-", p.outcome.detail
                );
            }
            for r in &report.roles {
                let status = format!("{:?}", r.outcome.status);
                println!(
                    "{:<32} {:<4} {:<22} {status:<16} {}",
                    r.role, "role", "-", r.outcome.detail
                );
            }
            let skipped = report
                .keys
                .iter()
                .filter(|k| k.outcome.status == Status::Skipped)
                .count();
            println!(
                "\n{} changes made, {} would be, {skipped} keys skipped, {} failed; {} dormant console passwords; {} unused roles",
                report.count(Status::Applied),
                report.count(Status::DryRun),
                report.count(Status::Failed),
                report.passwords.len(),
                report.roles.len()
            );
        }
    }
    if report.count(Status::Failed) > 0 {
        anyhow::bail!("some keys could not be deactivated; see the report");
    }
    Ok(())
}

fn sweep_azure(policy: Option<&PathBuf>, yes: bool, format: Format) -> anyhow::Result<()> {
    use quell_core::report::Status;
    let policy = load_policy(policy)?;
    let env = |k: &str| std::env::var(k).ok();
    let tokens = quell_azure::token::from_env(env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut http = quell_azure::Http::new(quell_azure::Endpoints::from_env(env), tokens);
    if let Some(tenant) = env("AZURE_TENANT_ID").filter(|t| !t.is_empty()) {
        http = http.with_tenant(&tenant);
    }
    let mut ctx = Context::default();
    if let Some(id) = env("AZURE_CLIENT_ID").filter(|v| !v.is_empty()) {
        ctx = ctx.with_azure_identity(&id);
    }
    let opts = quell_azure::sweep::AzureSweepOptions {
        policy: &policy,
        ctx: &ctx,
        now: quell_core::clock::Clock::now(&quell_core::clock::SystemClock),
        enforce: yes,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime
        .block_on(quell_azure::sweep::sweep_tenant(&http, &opts))
        .map_err(|e| anyhow::anyhow!("sweep failed: {e}"))?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            let mode = if report.enforce {
                "enforce"
            } else {
                "dry-run (pass --yes to remove)"
            };
            let activity = if report.activity_available {
                "sign-in activity"
            } else {
                "expiry only (no sign-in activity available)"
            };
            println!(
                "tenant · {} credentials checked · dormant after {} days · judged by {activity} · {mode}\n",
                report.credentials_checked, report.dormancy_days
            );
            println!(
                "{:<36} {:<38} {:<12} {:<16} detail",
                "owner", "keyId", "reason", "outcome"
            );
            for c in &report.credentials {
                let owner = format!("{} {}", c.owner_kind, c.display_name);
                let status = format!("{:?}", c.outcome.status);
                println!(
                    "{owner:<36} {:<38} {:<12} {status:<16} {}",
                    c.key_id, c.reason, c.outcome.detail
                );
            }
            for p in &report.stale_service_principals {
                let status = format!("{:?}", p.outcome.status);
                println!(
                    "{:<36} {:<38} {:<12} {status:<16} {}",
                    format!("servicePrincipal {}", p.id),
                    "-",
                    "no sign-in",
                    p.outcome.detail
                );
            }
            println!(
                "\n{} removed, {} would be, {} failed; {} service principals without recent sign-in",
                report.count(Status::Applied),
                report.count(Status::DryRun),
                report.count(Status::Failed),
                report.stale_service_principals.len()
            );
        }
    }
    if report.count(Status::Failed) > 0 {
        anyhow::bail!("some credentials could not be removed; see the report");
    }
    Ok(())
}

fn apply(
    file: &PathBuf,
    policy: Option<&PathBuf>,
    yes: bool,
    format: Format,
) -> anyhow::Result<()> {
    let mut policy = load_policy(policy)?;
    policy.mode = quell_core::Mode::Enforce;
    let (input, origin) = read_input(Some(file))?;
    let plan = plan_input(&input, &policy, &Context::default())
        .map_err(|e| Rejected(format!("{origin}: {e}")))?;
    eprint!("{}", render::plan_text(&plan));
    let changes = plan
        .actions
        .iter()
        .filter(|a| a.kind != quell_core::ActionKind::Notify)
        .count();
    if changes == 0 {
        eprintln!("\nnothing to apply");
        return Ok(());
    }
    if !yes {
        if file.as_os_str() == "-" || !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            anyhow::bail!("refusing to change anything without confirmation: pass --yes");
        }
        eprint!("\napply these {changes} changes with your AWS credentials? type yes: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            anyhow::bail!("not applied");
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let (source, _, ctx) = aws_session(&policy).await?;
        let executor = quell_aws::AwsExecutor::new(
            source,
            policy.clone(),
            ctx,
            std::sync::Arc::new(quell_aws::SystemClock),
        );
        anyhow::Ok(executor.execute(&plan).await)
    })?;
    match format {
        Format::Text => {
            for line in report.lines() {
                println!("{line}");
            }
            let s = &report.summary;
            println!(
                "\n{} applied, {} already in state, {} skipped, {} failed",
                s.applied, s.already_in_state, s.skipped, s.failed
            );
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if report.summary.failed > 0 {
        anyhow::bail!("{} action(s) failed; see the report", report.summary.failed);
    }
    Ok(())
}
