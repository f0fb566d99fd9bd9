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
use quell_ledger::LedgerError;

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
        /// A cross-cloud link map (`quell links discover --format json`), to plan the other
        /// cloud's side of a compromised identity too.
        #[arg(long)]
        links: Option<PathBuf>,
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
        /// A cross-cloud link map file; without it, the ledger's (when one is configured).
        #[arg(long)]
        links: Option<PathBuf>,
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
    /// The containment ledger (DynamoDB table QUELL_LEDGER_TABLE).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Undo quell's containment of a principal (or of every principal of a finding), newest
    /// first, from the ledger. Access keys stay inactive unless --reactivate-keys.
    Release {
        /// IAM user or role ARN (any path), or an assumed-role ARN.
        principal: Option<String>,
        /// Release everything this finding contained instead.
        #[arg(long)]
        finding: Option<String>,
        #[arg(long)]
        yes: bool,
        /// Reactivate the access keys quell deactivated (AWS recommends against it).
        #[arg(long)]
        reactivate_keys: bool,
        /// Who releases, for the ledger (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Check that quell's containment of a principal still holds, and contain what appeared
    /// since (new keys, a console password, a detached quarantine) with --yes.
    Verify {
        principal: String,
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The fleet breaker: containments per account and UTC hour, counted in the ledger.
    Breaker {
        #[command(subcommand)]
        command: BreakerCommand,
    },
    /// Check a deployment's cross-cloud reach before an incident: each token, what it must
    /// match on the other side, one read there; prints what is missing with the fix.
    Doctor {
        /// AWS → Entra: the Entra application (client id) the Lambda functions sign in as
        /// (AZURE_TENANT_ID names the tenant; Graph is read as you, QUELL_AZURE_CREDENTIAL).
        #[arg(long)]
        entra_client_id: Option<String>,
        /// The function role whose tokens the application must trust (default: the caller's
        /// role, when run as it).
        #[arg(long)]
        function_role: Option<String>,
        /// Entra → AWS: the audience the handler's managed identity asks a token for.
        #[arg(long)]
        aws_audience: Option<String>,
        /// The account whose member role the handler assumes.
        #[arg(long)]
        aws_account: Option<String>,
        /// A token to check instead of the managed identity's (e.g. `az account
        /// get-access-token --resource <audience>` as the identity).
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Cross-cloud links: which AWS roles an Entra identity reaches, which Entra applications
    /// trust an AWS role.
    Links {
        #[command(subcommand)]
        command: LinksCommand,
    },
}

#[derive(Subcommand)]
enum LinksCommand {
    /// Read both clouds and store the link map in the ledger (printed as JSON without one).
    Discover {
        /// AWS accounts to read, through the member role (default: the caller's account).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// Skip AWS.
        #[arg(long)]
        no_aws: bool,
        /// Read the Entra tenant too (QUELL_AZURE_CREDENTIAL, AZURE_TENANT_ID).
        #[arg(long)]
        azure: bool,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One identity's links: a UPN, an object id, a role name or ARN.
    Show {
        principal: String,
        /// A link map file instead of the ledger's.
        #[arg(long)]
        links: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Create the table if it is missing (on-demand, by-finding index, TTL).
    Init,
    /// What quell did, and what is still in force.
    List {
        principal: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(Subcommand)]
enum BreakerCommand {
    /// Containments counted this hour in a scope (`aws:<account>`).
    Status {
        #[arg(long)]
        scope: String,
    },
    /// Close the breaker for a scope this hour, after a human reviewed.
    Reset {
        #[arg(long)]
        scope: String,
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
            links,
            format,
        } => {
            let policy = load_policy(policy.as_ref())?;
            let (input, origin) = read_input(file.as_ref())?;
            let ctx = with_links(Context::default(), links_file(links.as_ref())?, now()?);
            let plan = plan_input(&input, &policy, &ctx)
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
            links,
            format,
        } => apply(&file, policy.as_ref(), yes, links.as_ref(), format),
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
        Command::Ledger { command } => ledger_command(command),
        Command::Release {
            principal,
            finding,
            yes,
            reactivate_keys,
            by,
            policy,
            format,
        } => release(
            principal,
            finding,
            yes,
            reactivate_keys,
            by,
            policy.as_ref(),
            format,
        ),
        Command::Verify {
            principal,
            yes,
            policy,
            format,
        } => verify(&principal, yes, policy.as_ref(), format),
        Command::Breaker { command } => breaker(command),
        Command::Links { command } => links_command(command),
        Command::Doctor {
            entra_client_id,
            function_role,
            aws_audience,
            aws_account,
            token_file,
            policy,
            format,
        } => doctor(
            entra_client_id,
            function_role,
            aws_audience,
            aws_account,
            token_file,
            policy.as_ref(),
            format,
        ),
    }
}

/// The ledger's link map, when a ledger is configured and holds one; a read that fails is
/// said and planning goes on without it.
fn ledger_links() -> Option<quell_core::links::LinkMap> {
    env("QUELL_LEDGER_TABLE")?;
    let runtime = tokio::runtime::Runtime::new().ok()?;
    runtime.block_on(async {
        let ledger = ledger().await.ok()??;
        match quell_ledger::links::load(&ledger).await {
            Ok(map) => map,
            Err(e) => {
                eprintln!(
                    "the link map could not be read from the ledger ({e}); planning without it"
                );
                None
            }
        }
    })
}

/// A link map file (`quell links discover --format json`).
fn links_file(path: Option<&PathBuf>) -> anyhow::Result<Option<quell_core::links::LinkMap>> {
    let Some(p) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Rejected(format!("{}: not a link map: {e}", p.display())).into())
}

/// The planning context with a link map, called stale when older than a day.
fn with_links(
    mut ctx: Context,
    map: Option<quell_core::links::LinkMap>,
    now: time::OffsetDateTime,
) -> Context {
    if let Some(map) = map {
        ctx.links_stale = map
            .age_seconds(now.unix_timestamp())
            .is_none_or(|age| age > quell_core::links::STALE_AFTER_SECONDS);
        ctx.links = Some(std::sync::Arc::new(map));
    }
    ctx
}

fn links_command(command: LinksCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    match command {
        LinksCommand::Discover {
            accounts,
            no_aws,
            azure,
            policy,
            format,
        } => runtime.block_on(async {
            use quell_aws::ClientSource;
            let policy = load_policy(policy.as_ref())?;
            let stamp = quell_core::clock::rfc3339_seconds(now()?);
            let mut parts: Vec<(String, quell_core::links::LinkMap)> = Vec::new();
            if !no_aws {
                let (source, own, _) = aws_session(&policy).await?;
                let accounts = if accounts.is_empty() {
                    vec![own]
                } else {
                    accounts
                };
                for account in accounts {
                    let clients = source
                        .clients(&account, "quell-links")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let map = quell_aws::links::discover(&clients.iam, &account, &stamp).await;
                    parts.push((format!("aws-{account}"), map));
                }
            }
            if azure {
                let http = azure_http()?;
                let tenant = env("AZURE_TENANT_ID").ok_or_else(|| {
                    Rejected("--azure needs AZURE_TENANT_ID, the tenant to read".into())
                })?;
                let map = quell_azure::links::discover(
                    &http,
                    &tenant,
                    policy.aws.identity_center.account.as_deref(),
                    &stamp,
                )
                .await;
                parts.push((format!("azure-{tenant}"), map));
            }
            let mut all = quell_core::links::LinkMap {
                discovered_at: stamp.clone(),
                ..Default::default()
            };
            if let Some(ledger) = ledger().await? {
                for (part, map) in &parts {
                    quell_ledger::links::store(&ledger, part, map)
                        .await
                        .map_err(|e| anyhow::anyhow!("the link map could not be stored: {e}"))?;
                }
                eprintln!(
                    "stored {} part(s) of the link map in the ledger",
                    parts.len()
                );
            }
            for (_, map) in parts {
                all.extend(map);
            }
            let all = all.normalized();
            print_links(
                &all.links.iter().collect::<Vec<_>>(),
                &all.gaps,
                format,
                &all,
            )?;
            Ok(())
        }),
        LinksCommand::Show {
            principal,
            links,
            format,
        } => runtime.block_on(async {
            let map = match links_file(links.as_ref())? {
                Some(m) => m,
                None => {
                    let ledger = require_ledger().await?;
                    quell_ledger::links::load(&ledger)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .ok_or_else(|| {
                            Rejected("no link map in the ledger: run `quell links discover`".into())
                        })?
                }
            };
            let found = map.of_name(&principal);
            if let Some(age) = map.age_seconds(now()?.unix_timestamp())
                && age > quell_core::links::STALE_AFTER_SECONDS
            {
                eprintln!(
                    "the link map is {} hours old: run `quell links discover`",
                    age / 3600
                );
            }
            print_links(&found, &map.gaps, format, &map)
        }),
    }
}

fn print_links(
    links: &[&quell_core::links::Link],
    gaps: &[String],
    format: Format,
    map: &quell_core::links::LinkMap,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let shown = quell_core::links::LinkMap {
                discovered_at: map.discovered_at.clone(),
                links: links.iter().map(|l| (*l).clone()).collect(),
                gaps: gaps.to_vec(),
            };
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Format::Text => {
            println!("links discovered {}:", map.discovered_at);
            if links.is_empty() {
                println!("  (none)");
            }
            for l in links {
                println!("  {}", l.describe());
            }
            for g in gaps {
                println!("  gap: {g}");
            }
        }
    }
    Ok(())
}

/// The time quell acts at: the wall clock, or `QUELL_NOW` (RFC 3339) for replays and tests.
fn now() -> anyhow::Result<time::OffsetDateTime> {
    match std::env::var("QUELL_NOW").ok().filter(|v| !v.is_empty()) {
        Some(v) => quell_core::clock::parse_rfc3339(&v)
            .ok_or_else(|| Rejected(format!("QUELL_NOW {v:?} is not an RFC 3339 time")).into()),
        None => Ok(quell_core::clock::Clock::now(
            &quell_core::clock::SystemClock,
        )),
    }
}

/// The ledger named by `QUELL_LEDGER_TABLE`, if set.
/// The ledger this CLI reads and writes: DynamoDB (`QUELL_LEDGER_TABLE`), or Azure Table
/// Storage when `QUELL_LEDGER_ENDPOINT` names the account's table endpoint too.
enum AnyLedger {
    Dynamo(quell_aws::ledger::DynamoLedger),
    Table(quell_azure::TableLedger),
}

macro_rules! delegate {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            AnyLedger::Dynamo($l) => $e,
            AnyLedger::Table($l) => $e,
        }
    };
}

impl quell_ledger::Ledger for AnyLedger {
    async fn get(&self, p: &str, f: &str) -> Result<Option<quell_ledger::Entry>, LedgerError> {
        delegate!(self, l => l.get(p, f).await)
    }
    async fn put(&self, e: &quell_ledger::Entry, v: Option<u64>) -> Result<bool, LedgerError> {
        delegate!(self, l => l.put(e, v).await)
    }
    async fn delete(&self, p: &str, f: &str, v: u64) -> Result<bool, LedgerError> {
        delegate!(self, l => l.delete(p, f, v).await)
    }
    async fn list(&self, p: Option<&str>) -> Result<Vec<quell_ledger::Entry>, LedgerError> {
        delegate!(self, l => l.list(p).await)
    }
    async fn by_finding(&self, f: &str) -> Result<Vec<quell_ledger::Entry>, LedgerError> {
        delegate!(self, l => l.by_finding(f).await)
    }
    async fn take_slot(&self, s: &str, h: &str, cap: u32) -> Result<bool, LedgerError> {
        delegate!(self, l => l.take_slot(s, h, cap).await)
    }
    async fn slots(&self, s: &str, h: &str) -> Result<u32, LedgerError> {
        delegate!(self, l => l.slots(s, h).await)
    }
    async fn return_slot(&self, s: &str, h: &str) -> Result<(), LedgerError> {
        delegate!(self, l => l.return_slot(s, h).await)
    }
    async fn reset_slots(&self, s: &str, h: &str) -> Result<(), LedgerError> {
        delegate!(self, l => l.reset_slots(s, h).await)
    }
    async fn put_document(&self, n: &str, b: &str) -> Result<(), LedgerError> {
        delegate!(self, l => l.put_document(n, b).await)
    }
    async fn documents(&self, p: &str) -> Result<Vec<(String, String)>, LedgerError> {
        delegate!(self, l => l.documents(p).await)
    }
}

impl AnyLedger {
    fn table(&self) -> &str {
        delegate!(self, l => l.table())
    }
    async fn ensure_table(&self) -> anyhow::Result<bool> {
        match self {
            AnyLedger::Dynamo(l) => l.ensure_table().await.map_err(|e| anyhow::anyhow!("{e}")),
            AnyLedger::Table(l) => l.ensure_table().await.map_err(|e| anyhow::anyhow!("{e}")),
        }
    }
}

/// The AWS partition quell runs in, `aws` when not known.
fn ctx_partition(ctx: &Context) -> String {
    ctx.partition.clone().unwrap_or_else(|| "aws".into())
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

async fn ledger() -> anyhow::Result<Option<AnyLedger>> {
    let Some(table) = env("QUELL_LEDGER_TABLE") else {
        return Ok(None);
    };
    if let Some(endpoint) = env("QUELL_LEDGER_ENDPOINT") {
        // Azure: the Table endpoint (`https://<account>.table.core.windows.net`), with a
        // Shared Key when `QUELL_LEDGER_ACCOUNT_KEY` is set (Azurite, local runs), else a token
        // from QUELL_AZURE_CREDENTIAL (e.g. `azure_cli`).
        let auth = match env("QUELL_LEDGER_ACCOUNT_KEY") {
            Some(key) => {
                use base64::Engine;
                quell_azure::TableAuth::SharedKey {
                    account: env("QUELL_LEDGER_ACCOUNT")
                        .unwrap_or_else(|| "devstoreaccount1".into()),
                    key: base64::engine::general_purpose::STANDARD
                        .decode(key.trim())
                        .map_err(|_| Rejected("QUELL_LEDGER_ACCOUNT_KEY is not base64".into()))?,
                }
            }
            None => quell_azure::TableAuth::Token(
                quell_azure::token::from_env(env).map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        return Ok(Some(AnyLedger::Table(quell_azure::TableLedger::new(
            &endpoint, &table, auth,
        ))));
    }
    let config = quell_aws::load_config(None).await;
    Ok(Some(AnyLedger::Dynamo(
        quell_aws::ledger::DynamoLedger::new(&config, &table),
    )))
}

async fn require_ledger() -> anyhow::Result<AnyLedger> {
    ledger().await?.ok_or_else(|| {
        Rejected("set QUELL_LEDGER_TABLE to the ledger's DynamoDB table (and QUELL_LEDGER_ENDPOINT for Azure Table Storage)".into()).into()
    })
}

/// Graph and ARM for an Azure release or verify, as the engineer (QUELL_AZURE_CREDENTIAL,
/// QUELL_GRAPH_URL, QUELL_ARM_URL).
fn azure_http() -> anyhow::Result<quell_azure::Http> {
    let tokens = quell_azure::token::from_env(env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut http = quell_azure::Http::new(quell_azure::Endpoints::from_env(env), tokens);
    if let Some(t) = env("AZURE_TENANT_ID") {
        http = http.with_tenant(&t);
    }
    Ok(http)
}

/// The Azure executor the engineer acts through (QUELL_AZURE_CREDENTIAL; QUELL_OWN_OBJECT_ID is
/// protected; QUELL_AZURE_SUBSCRIPTIONS are searched for role assignments).
fn azure_executor(
    policy: Policy,
    now: time::OffsetDateTime,
) -> anyhow::Result<quell_azure::AzureExecutor> {
    let mut ctx = Context::default();
    if let Some(id) = env("QUELL_OWN_OBJECT_ID") {
        ctx = ctx.with_azure_identity(&id);
    }
    let subscriptions = env("QUELL_AZURE_SUBSCRIPTIONS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Ok(quell_azure::AzureExecutor::new(
        azure_http()?,
        policy,
        ctx,
        std::sync::Arc::new(quell_core::clock::FixedClock(now)),
        subscriptions,
    ))
}

fn ledger_command(command: LedgerCommand) -> anyhow::Result<()> {
    use quell_ledger::Ledger;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ledger = require_ledger().await?;
        match command {
            LedgerCommand::Init => {
                let created = ledger.ensure_table().await?;
                println!(
                    "ledger table {} {}",
                    ledger.table(),
                    if created { "created" } else { "already exists" }
                );
            }
            LedgerCommand::List { principal, format } => {
                let key = match principal.as_deref() {
                    Some(p) => Some(principal_key(p)?),
                    None => None,
                };
                let mut entries = match key
                    .as_deref()
                    .and_then(quell_core::key::PrincipalKey::parse)
                {
                    Some(k) => quell_ledger::list_principal(&ledger, &k).await,
                    None => ledger.list(None).await,
                }
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                entries.sort_by(|a, b| b.at.cmp(&a.at));
                match format {
                    Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
                    Format::Text => {
                        println!(
                            "{:<44} {:<10} {:<20} {:<20} {:<8} finding",
                            "principal", "state", "contained at", "expires", "actions"
                        );
                        for e in &entries {
                            let state = serde_json::to_value(e.state)?;
                            println!(
                                "{:<44} {:<10} {:<20} {:<20} {:<8} {}",
                                e.principal,
                                state.as_str().unwrap_or("?"),
                                e.at,
                                e.expires.as_deref().unwrap_or("-"),
                                e.actions.len(),
                                e.finding
                            );
                        }
                        let in_force = entries.iter().filter(|e| e.in_force()).count();
                        println!(
                            "
{} entries, {in_force} still in force",
                            entries.len()
                        );
                    }
                }
            }
        }
        anyhow::Ok(())
    })
}

fn principal_key(arg: &str) -> anyhow::Result<String> {
    quell_ledger::key_of_argument(arg, None).ok_or_else(|| {
        Rejected(format!(
            "{arg:?} is not a principal quell knows: give an IAM user or role ARN, an assumed-role ARN, an Entra user's UPN or object id, or a ledger key (azure:sp/<appId>, azure:mi/<objectId>)"
        ))
        .into()
    })
}

fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!("refusing to change anything without confirmation: pass --yes");
    }
    eprint!("{question} type yes: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        anyhow::bail!("nothing changed");
    }
    Ok(())
}

fn print_steps(steps: &[quell_aws::release::Step], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(steps)?),
        Format::Text => {
            for s in steps {
                println!(
                    "{:<16} {}: {}",
                    s.outcome.status.as_str(),
                    s.what,
                    s.outcome.detail
                );
            }
        }
    }
    Ok(())
}

/// The pipeline of a CLI command: the ledger, and the release/verify capabilities of the clouds
/// the principals named belong to (each built only when needed, as the engineer).
struct Undoers {
    /// The engineer's AWS session and identity (protected like the functions' own roles).
    aws: Option<(quell_aws::Accounts, Context)>,
    /// Graph and ARM as the engineer, under the policy (protected principals are never written).
    azure: Option<quell_azure::AzureExecutor>,
}

impl Undoers {
    async fn for_keys<'k>(
        keys: impl IntoIterator<Item = &'k str>,
        policy: &Policy,
    ) -> anyhow::Result<Undoers> {
        let (mut aws, mut azure) = (false, false);
        for k in keys {
            match quell_pipeline::cloud_of_key(k) {
                Some(quell_core::Cloud::Aws) => aws = true,
                Some(_) => azure = true,
                None => {}
            }
        }
        Ok(Undoers {
            aws: match aws {
                true => {
                    let (source, _, ctx) = aws_session(policy).await?;
                    Some((source, ctx))
                }
                false => None,
            },
            azure: if azure {
                Some(azure_executor(policy.clone(), now()?)?)
            } else {
                None
            },
        })
    }
}

/// Runs `f` with the pipeline over `ledger` and the undoers.
fn pipeline<'a>(
    policy: &'a Policy,
    clock: &'a quell_core::clock::FixedClock,
    ledger: &'a AnyLedger,
    aws: Option<&'a quell_aws::capabilities::AwsUndo<'a, quell_aws::Accounts>>,
    azure: Option<&'a quell_azure::AzureExecutor>,
) -> quell_pipeline::Pipeline<'a, AnyLedger> {
    let mut undo: Vec<&dyn quell_pipeline::Undo> = Vec::new();
    if let Some(a) = aws {
        undo.push(a);
    }
    if let Some(z) = azure {
        undo.push(z);
    }
    quell_pipeline::Pipeline {
        function: "cli",
        policy,
        clock,
        ledger: Some(ledger),
        executor: None,
        undo,
        checks: None,
        audit: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn release(
    principal: Option<String>,
    finding: Option<String>,
    yes: bool,
    reactivate_keys: bool,
    by: Option<String>,
    policy: Option<&PathBuf>,
    format: Format,
) -> anyhow::Result<()> {
    let policy = load_policy(policy)?;
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "quell release".into());
    let clock = quell_core::clock::FixedClock(now()?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ledger = require_ledger().await?;
        let key = principal.as_deref().map(principal_key).transpose()?;
        let select = match (&key, &finding) {
            (Some(k), None) => quell_pipeline::Select::Principal(k),
            (None, Some(f)) => quell_pipeline::Select::Finding(f),
            _ => {
                return Err(
                    Rejected("name a principal or --finding ID (one of them)".into()).into(),
                );
            }
        };
        let listing = pipeline(&policy, &clock, &ledger, None, None);
        let entries = listing
            .in_force(select)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if entries.is_empty() {
            println!("nothing in force to release");
            return Ok(());
        }
        for e in &entries {
            eprintln!(
                "{} for finding {} (contained {}): {} action(s)",
                e.principal,
                e.finding,
                e.at,
                e.actions.len()
            );
        }
        confirm(
            &format!("\nrelease these {} containment(s)?", entries.len()),
            yes,
        )?;
        let undoers =
            Undoers::for_keys(entries.iter().map(|e| e.principal.as_str()), &policy).await?;
        let aws = undoers.aws.as_ref().map(|(source, ctx)| {
            quell_aws::capabilities::AwsUndo(
                source,
                quell_aws::release::Protection {
                    policy: &policy,
                    ctx,
                },
            )
        });
        let p = pipeline(&policy, &clock, &ledger, aws.as_ref(), undoers.azure.as_ref());
        let released = p
            .release(
                &entries,
                &by,
                quell_pipeline::Releaser::Human { reactivate_keys },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        print_steps(&released.steps, format)?;
        let kept: Vec<String> = released
            .entries
            .iter()
            .filter(|(_, _, r)| !r)
            .map(|(p, f, _)| format!("{p} (finding {f})"))
            .collect();
        if !kept.is_empty() {
            anyhow::bail!(
                "{} containment(s) not released, still in force in the ledger: {}; every other one was released",
                kept.len(),
                kept.join(", ")
            );
        }
        Ok(())
    })
}

fn verify(
    principal: &str,
    yes: bool,
    policy: Option<&PathBuf>,
    format: Format,
) -> anyhow::Result<()> {
    let policy = load_policy(policy)?;
    let clock = quell_core::clock::FixedClock(now()?);
    let key = principal_key(principal)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ledger = require_ledger().await?;
        let listing = pipeline(&policy, &clock, &ledger, None, None);
        let in_force = listing
            .in_force(quell_pipeline::Select::Principal(&key))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if in_force.is_empty() {
            println!("quell holds no containment of {principal} in force");
            return Ok(());
        }
        let undoers = Undoers::for_keys([key.as_str()], &policy).await?;
        let aws = undoers.aws.as_ref().map(|(source, ctx)| {
            quell_aws::capabilities::AwsUndo(
                source,
                quell_aws::release::Protection {
                    policy: &policy,
                    ctx,
                },
            )
        });
        let p = pipeline(
            &policy,
            &clock,
            &ledger,
            aws.as_ref(),
            undoers.azure.as_ref(),
        );
        let (_, steps) = p
            .verify(&key, yes)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        print_steps(&steps, format)?;
        let failed = steps
            .iter()
            .filter(|s| s.outcome.status == quell_core::report::Status::Failed)
            .count();
        if failed > 0 {
            anyhow::bail!("{failed} check(s) failed");
        }
        Ok(())
    })
}

fn breaker(command: BreakerCommand) -> anyhow::Result<()> {
    use quell_ledger::Ledger;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ledger = require_ledger().await?;
        let hour = quell_ledger::hour_of(now()?);
        match command {
            BreakerCommand::Status { scope } => {
                let n = ledger
                    .slots(&scope, &hour)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{scope}: {n} containment(s) in hour {hour}");
            }
            BreakerCommand::Reset { scope } => {
                ledger
                    .reset_slots(&scope, &hour)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("{scope}: breaker reset for hour {hour}");
            }
        }
        anyhow::Ok(())
    })
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
        let report = quell_aws::sweep::sweep_account(&clients.iam, &opts)
            .await
            .map_err(|e| anyhow::anyhow!("sweep failed: {e}"))?;
        // What the sweep changed goes into the ledger, when there is one, so `quell release
        // --finding <sweep id>` can undo it.
        if let Some(ledger) = ledger().await? {
            let partition = ctx_partition(&opts.ctx);
            let n = quell_ledger::record_sweep(
                &ledger,
                &report.ledger_id(),
                report.changes(&partition),
                opts.now,
            )
            .await
            .map_err(|e| anyhow::anyhow!("the sweep's changes could not be recorded in the ledger: {e}"))?;
            if n > 0 {
                eprintln!(
                    "recorded in the ledger as {} ({n} principals): `quell release --finding {}` undoes it",
                    report.ledger_id(),
                    report.ledger_id()
                );
            }
        }
        Ok::<_, anyhow::Error>(report)
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
    links: Option<&PathBuf>,
    format: Format,
) -> anyhow::Result<()> {
    let mut policy = load_policy(policy)?;
    policy.mode = quell_core::Mode::Enforce;
    let (input, origin) = read_input(Some(file))?;
    let map = match links_file(links)? {
        Some(m) => Some(m),
        None => ledger_links(),
    };
    let ctx = with_links(Context::default(), map, now()?);
    let mut plan =
        plan_input(&input, &policy, &ctx).map_err(|e| Rejected(format!("{origin}: {e}")))?;
    // Running `quell apply` again on the same event is a retry of the same delivery: it
    // proceeds through its own live claim instead of waiting out the lease.
    plan.delivery = Some(format!("payload:{}", quell_core::json::fingerprint(&input)));
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
        eprint!("\napply these {changes} changes with your own credentials? type yes: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            anyhow::bail!("not applied");
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let now = now()?;
    // Azure actions run against Graph and ARM as the engineer (QUELL_AZURE_CREDENTIAL, e.g.
    // azure_cli), AWS actions with the engineer's AWS credentials: each cloud only when the
    // plan has actions there (a cross-cloud plan has both).
    let on = |cloud| plan.actions.iter().any(|a| a.cloud == cloud);
    let (azure, aws) = (on(quell_core::Cloud::Azure), on(quell_core::Cloud::Aws));
    let (report, retry) = runtime.block_on(async {
        let ledger = ledger().await?;
        let clock = quell_core::clock::FixedClock(now);
        let clock_arc = std::sync::Arc::new(quell_core::clock::FixedClock(now));
        let azure_exec = if azure {
            Some(azure_executor(policy.clone(), now)?)
        } else {
            None
        };
        let aws_exec = if aws || !azure {
            let (source, _, ctx) = aws_session(&policy).await?;
            // Keys are in the partition quell acts in: the caller's.
            plan.partition = ctx.partition.clone().unwrap_or_else(|| "aws".into());
            Some(quell_aws::AwsExecutor::new(
                source,
                policy.clone(),
                ctx,
                clock_arc,
            ))
        } else {
            None
        };
        let executor = quell_pipeline::Clouds {
            aws: aws_exec
                .as_ref()
                .map(|e| e as &dyn quell_pipeline::Executor),
            azure: azure_exec
                .as_ref()
                .map(|e| e as &dyn quell_pipeline::Executor),
        };
        // With a ledger: claim each containment first (withheld when another process holds
        // it, a human released it, or the breaker is open), record what was done after.
        let p = quell_pipeline::Pipeline {
            function: "cli",
            policy: &policy,
            clock: &clock,
            ledger: ledger.as_ref(),
            executor: Some(&executor),
            undo: Vec::new(),
            checks: None,
            audit: None,
        };
        match p.contain(plan).await {
            quell_pipeline::Answer::Done(quell_pipeline::Done::Contained(r)) => {
                anyhow::Ok((r, None))
            }
            // Printed, then the command fails: run it again (every action is idempotent, and
            // the ledger takes a re-run as a retry).
            quell_pipeline::Answer::Retry {
                done: Some(quell_pipeline::Done::Contained(r)),
                reason,
            } => anyhow::Ok((r, Some(reason))),
            quell_pipeline::Answer::Retry { reason, .. } => anyhow::bail!("{reason}"),
            quell_pipeline::Answer::Rejected(e) => Err(Rejected(e).into()),
            other => anyhow::bail!("unexpected answer: {:?}", other.to_json()),
        }
    })?;
    match format {
        Format::Text => {
            for line in report.lines() {
                println!("{line}");
            }
            for skip in report
                .skipped
                .iter()
                .filter(|s| s.reason.contains("withheld"))
            {
                let target = skip.target.as_ref().map(|t| t.label()).unwrap_or_default();
                println!("withheld {target}: {}", skip.reason);
            }
            let s = &report.summary;
            println!(
                "\n{} applied, {} already in state, {} skipped, {} failed",
                s.applied, s.already_in_state, s.skipped, s.failed
            );
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if let Some(reason) = retry {
        anyhow::bail!("{reason}; run the same command again");
    }
    if report.summary.failed > 0 {
        anyhow::bail!("{} action(s) failed; see the report", report.summary.failed);
    }
    Ok(())
}

/// `quell doctor`: both directions of keyless reach, each check with its fix.
fn doctor(
    entra_client_id: Option<String>,
    function_role: Option<String>,
    aws_audience: Option<String>,
    aws_account: Option<String>,
    token_file: Option<PathBuf>,
    policy: Option<&PathBuf>,
    format: Format,
) -> anyhow::Result<()> {
    use quell_core::links::Check;
    if entra_client_id.is_none() && aws_audience.is_none() {
        return Err(Rejected(
            "name what to check: --entra-client-id (AWS → Entra) and/or --aws-audience (Entra → AWS)".into(),
        )
        .into());
    }
    let policy = load_policy(policy)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let checks: Vec<Check> = runtime.block_on(async {
        let mut checks = Vec::new();
        if let Some(client) = &entra_client_id {
            checks.extend(doctor_outbound(client, function_role.as_deref()).await?);
        }
        if let Some(audience) = &aws_audience {
            checks.extend(
                doctor_inbound(
                    &policy,
                    audience,
                    aws_account.as_deref(),
                    token_file.as_ref(),
                )
                .await?,
            );
        }
        anyhow::Ok(checks)
    })?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
        Format::Text => {
            for c in &checks {
                let mark = if c.ok { "ok     " } else { "MISSING" };
                println!("{mark} {}: {}", c.check, c.detail);
                if let Some(fix) = &c.fix {
                    println!("        fix: {fix}");
                }
            }
        }
    }
    let gaps = checks.iter().filter(|c| !c.ok).count();
    if gaps > 0 {
        anyhow::bail!(
            "{gaps} cross-cloud check(s) failed; apply the fixes above and run quell doctor again"
        );
    }
    Ok(())
}

/// Who the AWS credentials are: (ARN, account).
async fn caller_identity(sts: &aws_sdk_sts::Client) -> anyhow::Result<(String, String)> {
    let me = sts.get_caller_identity().send().await.map_err(|e| {
        anyhow::anyhow!(
            "sts:GetCallerIdentity failed: {}",
            quell_aws::error::classify(e)
        )
    })?;
    Ok((
        me.arn().unwrap_or_default().to_string(),
        me.account().unwrap_or_default().to_string(),
    ))
}

/// AWS → Entra: the account's outbound issuer, the application's federated credential for the
/// function role, and (run as the function role) a real token exchanged and one Graph read.
async fn doctor_outbound(
    client: &str,
    function_role: Option<&str>,
) -> anyhow::Result<Vec<quell_core::links::Check>> {
    use quell_core::links::Check;
    let mut checks = Vec::new();
    let config = quell_aws::load_config(None).await;
    let (caller, account) = caller_identity(&aws_sdk_sts::Client::new(&config)).await?;
    // The role a token of the caller would name: arn:…:role/<name> for an assumed role.
    let caller_role = caller.split_once(":assumed-role/").map(|(head, rest)| {
        format!(
            "{}:role/{}",
            head.replace(":sts:", ":iam:"),
            rest.split('/').next().unwrap_or_default()
        )
    });
    let Some(subject) = function_role.map(str::to_string).or(caller_role.clone()) else {
        return Ok(vec![Check::gap(
            "function role",
            format!("the caller {caller} is not a role; name the function role"),
            "pass --function-role arn:aws:iam::<account>:role/<the Lambda function's role>",
        )]);
    };
    let iam = aws_sdk_iam::Client::new(&config);
    // Off: IAM says so, or answers FeatureDisabled (404) for an account that never enabled it.
    let issuer = match iam.get_outbound_web_identity_federation_info().send().await {
        Ok(info) if info.jwt_vending_enabled() => info.issuer_identifier().map(str::to_string),
        Ok(_) => None,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_feature_disabled_exception()) =>
        {
            None
        }
        Err(e) => {
            let e = quell_aws::error::classify(e);
            checks.push(Check::gap(
                "outbound federation",
                format!(
                    "account {account}'s outbound federation could not be read ({}: {})",
                    e.code, e.message
                ),
                "run quell doctor with credentials that may call iam:GetOutboundWebIdentityFederationInfo",
            ));
            return Ok(checks);
        }
    };
    let Some(issuer) = issuer else {
        checks.push(Check::gap(
            "outbound federation",
            format!("account {account} does not issue web identity tokens (outbound identity federation is off)"),
            "aws iam enable-outbound-web-identity-federation   # once per account",
        ));
        return Ok(checks);
    };
    checks.push(Check::ok(
        "outbound federation",
        format!("account {account} issues tokens as {issuer}"),
    ));
    // The application's federated credentials, read as the engineer.
    let http = azure_http()?;
    match http
        .call(
            reqwest::Method::GET,
            quell_azure::client::Api::Graph,
            &format!(
                "/v1.0/applications(appId='{}')/federatedIdentityCredentials",
                quell_azure::client::seg(client)
            ),
            None,
        )
        .await
    {
        Ok(r) => {
            let found: Vec<quell_core::links::FederatedCredential> = r.body["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect();
            checks.push(quell_core::links::check_federated_credential(client, &issuer, &subject, &found));
        }
        Err(e) => checks.push(Check::gap(
            "federated credential",
            format!("the application {client}'s federated credentials could not be read ({}: {})", e.code, e.message),
            "run as someone who can read the application (Application.Read.All), with QUELL_AZURE_CREDENTIAL=azure_cli",
        )),
    }
    // Run as the function role itself: a real token, exchanged, and one read.
    if caller_role.as_deref() == Some(subject.as_str()) {
        let outbound = quell_aws::keyless::OutboundToken::new(aws_sdk_sts::Client::new(&config));
        match outbound.token().await {
            Ok(jwt) => {
                let claims = quell_aws::keyless::claims(&jwt).unwrap_or_default();
                let sub = claims["sub"].as_str().unwrap_or_default();
                checks.push(if sub == subject && claims["iss"].as_str() == Some(issuer.as_str()) {
                    Check::ok("aws token", format!("iss {issuer}, sub {sub}, aud {}", claims["aud"]))
                } else {
                    Check::gap("aws token", format!("the token carries iss {}, sub {sub}", claims["iss"]), "the federated credential must match what the token carries")
                });
            }
            Err(e) => checks.push(Check::gap(
                "aws token",
                e.to_string(),
                format!("allow sts:GetWebIdentityToken on {subject} for audience {} (the SAM template's EntraKeyless statement)", quell_aws::keyless::ENTRA_TOKEN_AUDIENCE),
            )),
        }
    }
    Ok(checks)
}

/// Entra → AWS: the managed identity's token (or `token_file`) against the member role's trust,
/// then `sts:AssumeRoleWithWebIdentity` with it.
async fn doctor_inbound(
    policy: &Policy,
    audience: &str,
    account: Option<&str>,
    token_file: Option<&PathBuf>,
) -> anyhow::Result<Vec<quell_core::links::Check>> {
    use quell_core::links::Check;
    let token = match token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .trim()
            .to_string(),
        None => {
            let tokens = quell_azure::token::from_env(env).map_err(|e| anyhow::anyhow!("{e}"))?;
            match tokens
                .token(&format!("{}/.default", audience.trim_end_matches('/')))
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    return Ok(vec![Check::gap(
                        "managed identity token",
                        e.message,
                        format!(
                            "run where the handler's identity is (or pass --token-file), and expose an application with identifier {audience}"
                        ),
                    )]);
                }
            }
        }
    };
    let Some(claims) = quell_aws::keyless::claims(&token) else {
        return Ok(vec![Check::gap(
            "managed identity token",
            "the token is not a JWT",
            "pass the access token itself",
        )]);
    };
    let mut checks = vec![Check::ok(
        "managed identity token",
        format!(
            "iss {}, aud {}, sub {}",
            claims["iss"], claims["aud"], claims["sub"]
        ),
    )];
    let config = quell_aws::load_config(None).await;
    let account = match account {
        Some(a) => a.to_string(),
        None => caller_identity(&aws_sdk_sts::Client::new(&config)).await?.1,
    };
    let role = &policy.aws.member_role_name;
    match aws_sdk_iam::Client::new(&config).get_role().role_name(role).send().await {
        Ok(out) => {
            let trust = out
                .role()
                .and_then(|r| r.assume_role_policy_document())
                .and_then(quell_aws::docs::parse)
                .unwrap_or_default();
            checks.extend(quell_core::links::check_trust(role, &trust, &claims));
        }
        Err(e) => checks.push(Check::gap(
            "member role trust",
            format!("{role} in {account} could not be read ({})", quell_aws::error::classify(e)),
            "deploy infra/aws/member-role.yaml in that account, and run quell doctor with credentials that may read it",
        )),
    }
    let arn = format!("arn:aws:iam::{account}:role/{role}");
    let sts = aws_sdk_sts::Client::new(&quell_aws::config_without_credentials(None).await);
    checks.push(
        match sts
            .assume_role_with_web_identity()
            .role_arn(&arn)
            .role_session_name("quell-doctor")
            .web_identity_token(token)
            .send()
            .await
        {
            Ok(_) => Check::ok("assume the member role", format!("sts:AssumeRoleWithWebIdentity into {arn} works")),
            Err(e) => Check::gap(
                "assume the member role",
                format!("sts:AssumeRoleWithWebIdentity into {arn} failed ({})", quell_aws::error::classify(e)),
                "fix the trust checks above; the account needs the OIDC provider of the tenant (member-role.yaml creates it)",
            ),
        },
    );
    Ok(checks)
}
