//! The scheduled sweep across accounts: a scheduler emits one `Sweep Requested` event per
//! account onto the quell bus; the sweeper receives each (its own invocation, so throttling
//! in one account never stops another) and sweeps that account through the member role.

use std::sync::Arc;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use quell_aws::audit::{self, SWEEP_REPORT, SWEEP_REQUESTED};
use quell_aws::sweep::{SweepOptions, sweep_account};
use quell_aws::{ClientSource, ExecError};
use quell_core::clock::Clock;
use quell_core::model::ids;
use quell_core::policy::Mode;
use quell_core::{Context, Policy};
use serde_json::{Value, json};

use crate::EdgeError;

/// Where the scheduler finds the accounts to sweep.
pub enum AccountList {
    Explicit(Vec<String>),
    Organization(aws_sdk_organizations::Client),
}

pub struct Scheduler {
    pub accounts: AccountList,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub bus: String,
}

/// A retryable error fails the invocation (EventBridge and Lambda retry it); any other is
/// answered as `failed` with what to do, logged, and not retried: a missing member role or a
/// denied call will not fix itself in the next minutes.
fn answer(e: ExecError) -> Result<Value, EdgeError> {
    if e.retryable {
        return Err(EdgeError::Retryable {
            reason: format!(
                "the sweep failed with a retryable error ({}: {})",
                e.code, e.message
            ),
        });
    }
    tracing::error!(code = %e.code, error = %e.message, "not retried");
    Ok(json!({"status": "failed", "error_code": e.code, "error": e.message}))
}

/// Organizations lists accounts only for its management account or a delegated administrator.
fn organization_error(e: ExecError) -> ExecError {
    let denied = [
        "AccessDeniedException",
        "AccessDenied",
        "AWSOrganizationsNotInUseException",
    ];
    if !denied.contains(&e.code.as_str()) {
        return e;
    }
    ExecError {
        message: format!(
            "{}: organizations:ListAccounts works only in the organization's management account or a delegated administrator account. Set the SweepAccounts parameter (QUELL_SWEEP_ACCOUNTS) or aws.sweep_accounts in the policy to the accounts to sweep, or deploy quell in the management or delegated-administrator account",
            e.message
        ),
        ..e
    }
}

impl Scheduler {
    /// One `Sweep Requested` event per account.
    pub async fn handle(&self) -> Result<Value, EdgeError> {
        let accounts = match &self.accounts {
            AccountList::Explicit(list) => list.clone(),
            AccountList::Organization(org) => match audit::organization_accounts(org).await {
                Ok(a) => a,
                Err(e) => return answer(organization_error(e)),
            },
        };
        if let Err(e) = audit::request_sweeps(&self.eventbridge, &self.bus, &accounts).await {
            return answer(e);
        }
        tracing::info!(accounts = accounts.len(), "sweeps requested");
        Ok(json!({"requested": accounts.len(), "accounts": accounts}))
    }
}

pub struct Sweeper<S> {
    pub source: S,
    pub policy: Policy,
    pub ctx: Context,
    pub clock: Arc<dyn Clock>,
    pub audit: Option<(aws_sdk_eventbridge::Client, String)>,
}

impl<S: ClientSource> Sweeper<S> {
    /// Sweeps the account a `Sweep Requested` event names; dry-run unless the mode is enforce.
    pub async fn handle(&self, payload: Value) -> Result<Value, EdgeError> {
        let rejected = |e: String| {
            tracing::warn!(error = %e, "sweep request rejected");
            Ok(json!({"status": "rejected", "error": e}))
        };
        let ev = match serde_json::from_value::<EventBridgeEvent<Value>>(payload) {
            Ok(ev) if ev.source == audit::SOURCE && ev.detail_type == SWEEP_REQUESTED => ev,
            Ok(ev) => {
                return rejected(format!(
                    "this function handles quell \"Sweep Requested\" events, not {:?} / {:?}",
                    ev.source, ev.detail_type
                ));
            }
            Err(e) => return rejected(format!("not an EventBridge event: {e}")),
        };
        let Some(account) = ev.detail["account"].as_str().filter(|a| ids::is_account(a)) else {
            return rejected("/detail/account: expected a 12-digit AWS account id".into());
        };
        let clients = match self.source.clients(account, "quell-sweep").await {
            Ok(c) => c,
            Err(e) => return answer(e),
        };
        let opts = SweepOptions {
            account: account.to_string(),
            policy: self.policy.clone(),
            ctx: self.ctx.clone(),
            now: self.clock.now(),
            enforce: self.policy.mode == Mode::Enforce,
            concurrency: 8,
            progress: None,
        };
        let report = match sweep_account(&clients.iam, &opts).await {
            Ok(r) => r,
            Err(e) => return answer(e),
        };
        if let Some((client, bus)) = &self.audit
            && let Err(e) = audit::publish_detail(client, bus, SWEEP_REPORT, &report, vec![]).await
        {
            tracing::error!(error = %e, "sweep report not published; it is in this log");
        }
        tracing::info!(account, keys = report.keys.len(), "account swept");
        serde_json::to_value(&report).map_err(|e| EdgeError::Config(e.to_string()))
    }
}
