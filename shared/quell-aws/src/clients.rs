//! Where the executor gets SDK clients for an account: its own, or a member account through
//! the member role (`AssumeRoleProvider`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_iam::error::SdkError;
use tokio::sync::Mutex;

use crate::error::ExecError;

/// The clients an executor uses in one account.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub iam: aws_sdk_iam::Client,
    pub securityhub: aws_sdk_securityhub::Client,
    /// IAM Identity Center (`sso-admin` and `identitystore`), used only in the account that
    /// administers it.
    pub identity_center: crate::identity_center::Clients,
}

impl AwsClients {
    pub fn new(cfg: &SdkConfig) -> AwsClients {
        AwsClients {
            iam: aws_sdk_iam::Client::new(cfg),
            securityhub: aws_sdk_securityhub::Client::new(cfg),
            identity_center: crate::identity_center::Clients {
                sso: aws_sdk_ssoadmin::Client::new(cfg),
                store: aws_sdk_identitystore::Client::new(cfg),
            },
        }
    }

    /// IAM and Security Hub clients of the caller's making (tests with mocked clients), and
    /// Identity Center clients that reach nothing.
    pub fn with(iam: aws_sdk_iam::Client, securityhub: aws_sdk_securityhub::Client) -> AwsClients {
        let nowhere = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        AwsClients {
            identity_center: crate::identity_center::Clients {
                sso: aws_sdk_ssoadmin::Client::new(&nowhere),
                store: aws_sdk_identitystore::Client::new(&nowhere),
            },
            iam,
            securityhub,
        }
    }
}

/// A capability: clients acting in a given account.
pub trait ClientSource: Send + Sync {
    /// Clients for `account`; `session` names the assumed-role session (it shows in CloudTrail).
    fn clients(
        &self,
        account: &str,
        session: &str,
    ) -> impl Future<Output = Result<AwsClients, ExecError>> + Send;
    /// Clients in quell's own account (Security Hub updates, the audit bus).
    fn home(&self) -> AwsClients;
}

/// The same clients for every account: a single-account deployment, or tests.
pub struct Fixed(pub AwsClients);

impl ClientSource for Fixed {
    async fn clients(&self, _account: &str, _session: &str) -> Result<AwsClients, ExecError> {
        Ok(self.0.clone())
    }
    fn home(&self) -> AwsClients {
        self.0.clone()
    }
}

/// How many member accounts' clients one process keeps: enough for a burst of findings across
/// accounts, bounded for a sweeper that sees every account of the organization in turn.
pub const CACHED_ACCOUNTS: usize = 32;

/// Own-account clients, and member-account clients through `arn:<partition>:iam::<account>:role/<member role>`.
pub struct Accounts {
    base: SdkConfig,
    home: AwsClients,
    own_account: String,
    partition: String,
    member_role: String,
    /// Member-account clients, at most [`CACHED_ACCOUNTS`] (oldest out first): a warm sweeper
    /// is handed a thousand accounts in a row, and each account's clients hold their own
    /// connection pools (`benches/sweep_thousand_accounts.py` measured about 0.37 MB each).
    cache: Mutex<(
        HashMap<String, AwsClients>,
        std::collections::VecDeque<String>,
    )>,
    /// Reach every account's member role with this web identity token instead of AWS
    /// credentials (the Azure handler: its managed identity's token, no stored secret).
    web: Option<Arc<dyn crate::keyless::WebToken>>,
}

impl Accounts {
    pub fn new(base: SdkConfig, own_account: &str, partition: &str, member_role: &str) -> Accounts {
        Accounts {
            home: AwsClients::new(&base),
            base,
            own_account: own_account.to_string(),
            partition: partition.to_string(),
            member_role: member_role.to_string(),
            cache: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
            web: None,
        }
    }

    /// Every account through its member role, assumed with `token`
    /// (`sts:AssumeRoleWithWebIdentity`): a deployment outside AWS, holding no AWS secret.
    /// `base` needs no credentials.
    pub fn web_identity(
        base: SdkConfig,
        partition: &str,
        member_role: &str,
        token: Arc<dyn crate::keyless::WebToken>,
    ) -> Accounts {
        let mut a = Accounts::new(base, "", partition, member_role);
        a.web = Some(token);
        a
    }

    /// How many member accounts' clients are held now.
    pub async fn cached(&self) -> usize {
        self.cache.lock().await.0.len()
    }

    pub fn member_role_arn(&self, account: &str) -> String {
        format!(
            "arn:{}:iam::{account}:role/{}",
            self.partition, self.member_role
        )
    }
}

impl ClientSource for Accounts {
    async fn clients(&self, account: &str, session: &str) -> Result<AwsClients, ExecError> {
        if account == self.own_account {
            return Ok(self.home.clone());
        }
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.0.get(account) {
            return Ok(c.clone());
        }
        let role = self.member_role_arn(account);
        let provider = match &self.web {
            Some(token) => {
                let unsigned = self.base.clone().into_builder().build();
                SharedCredentialsProvider::new(crate::keyless::WebIdentityCredentials::new(
                    aws_sdk_sts::Client::new(&unsigned),
                    &role,
                    session,
                    token.clone(),
                ))
            }
            None => SharedCredentialsProvider::new(
                AssumeRoleProvider::builder(role.clone())
                    .configure(&self.base)
                    .session_name(session)
                    .build()
                    .await,
            ),
        };
        // Assume the role now, so a refusal is reported as what it is. Left to the clients,
        // it would surface from every call as a dispatch failure and be retried as a network
        // error.
        if let Err(e) = provider.provide_credentials().await {
            return Err(assume_role_error(&role, account, &e));
        }
        let cfg = self
            .base
            .clone()
            .into_builder()
            .credentials_provider(provider)
            .build();
        let clients = AwsClients::new(&cfg);
        if cache.1.len() >= CACHED_ACCOUNTS
            && let Some(oldest) = cache.1.pop_front()
        {
            cache.0.remove(&oldest);
        }
        cache.0.insert(account.to_string(), clients.clone());
        cache.1.push_back(account.to_string());
        Ok(clients)
    }
    fn home(&self) -> AwsClients {
        self.home.clone()
    }
}

/// Why the member role could not be assumed, classified by the STS error inside the
/// credentials error: `AccessDenied` (role missing, or its trust policy does not name this
/// function's role) is not retryable; throttling, 5xx and transport failures are.
pub fn assume_role_error(role: &str, account: &str, e: &CredentialsError) -> ExecError {
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    let inner = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>())
        .map(crate::error::classify_ref);
    let (code, message, retryable) = match (inner, e) {
        (Some(x), _) => (x.code, x.message, x.retryable),
        (None, CredentialsError::ProviderTimedOut(_)) => (
            "Timeout".to_string(),
            "STS did not answer in time".to_string(),
            true,
        ),
        (None, other) => ("AssumeRoleFailed".to_string(), other.to_string(), false),
    };
    let hint = if retryable {
        "try again"
    } else {
        "deploy infra/aws/member-role.yaml in that account with this function's role among QuellRoleArns"
    };
    ExecError {
        message: format!(
            "could not assume {role} in account {account} ({code}: {message}); {hint}"
        ),
        code,
        retryable,
    }
}

/// Who quell runs as, and where it can act.
pub struct Session {
    /// Clients for quell's own account, and member accounts through the member role.
    pub accounts: Accounts,
    /// The caller's account.
    pub account: String,
    /// The caller's ARN (`sts:GetCallerIdentity`).
    pub arn: String,
    /// Protects the caller itself (its role and every session of it) from containment.
    pub ctx: quell_core::Context,
}

/// Asks STS who quell is (`GetCallerIdentity`) and builds the account-aware clients.
pub async fn session(config: SdkConfig, member_role: &str) -> Result<Session, ExecError> {
    let me = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .map_err(crate::error::classify)
        .map_err(|e| ExecError {
            message: format!(
                "sts:GetCallerIdentity failed ({}); check the AWS credentials and region",
                e.message
            ),
            ..e
        })?;
    let arn = me.arn().unwrap_or_default().to_string();
    let account = me.account().unwrap_or_default().to_string();
    let partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
    Ok(Session {
        accounts: Accounts::new(config, &account, &partition, member_role),
        ctx: quell_core::Context::default().with_aws_caller(&arn),
        account,
        arn,
    })
}

/// The SDK configuration quell uses: standard retry (5 attempts, jittered backoff from 200 ms,
/// at most 5 s between attempts) and a 20 s bound per operation including retries.
/// `endpoint_url` (or `AWS_ENDPOINT_URL`) points every client at an emulator.
pub async fn load_config(endpoint_url: Option<&str>) -> SdkConfig {
    loader(endpoint_url).load().await
}

/// The loader both configurations share: retries, timeouts, and the endpoint.
fn loader(endpoint_url: Option<&str>) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::http::sdk_client())
        .retry_config(retry_config())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(20))
                .connect_timeout(Duration::from_secs(3))
                .build(),
        );
    match endpoint_url {
        Some(url) => loader.endpoint_url(url),
        None => loader,
    }
}

/// [`load_config`] with no AWS credentials at all: a deployment outside AWS that reaches the
/// member roles only with a web identity token ([`Accounts::web_identity`]).
pub async fn config_without_credentials(endpoint_url: Option<&str>) -> SdkConfig {
    loader(endpoint_url).no_credentials().load().await
}

pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(5))
}

/// A session name from a finding id: `quell-<id>` restricted to `[\w+=,.@-]`, ≤ 64 characters.
pub fn session_name(finding: &str) -> String {
    let clean: String = finding
        .chars()
        .rev()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(*c))
        .take(58)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("quell-{clean}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_names_are_valid_and_bounded() {
        let s = super::session_name(
            "arn:aws:securityhub:us-east-1:111122223333:subscription/aws-foundational/v/1.0.0/IAM.8/finding/7f3e2d1c-0b9a-4877-9a65-4c3b2a1f0e8d",
        );
        assert!(s.len() <= 64, "{s}");
        assert!(s.starts_with("quell-") && s.ends_with("0e8d"));
        assert!(
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c))
        );
    }
}
