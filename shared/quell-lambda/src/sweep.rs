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

fn aws(e: ExecError) -> EdgeError {
    if e.retryable {
        EdgeError::Retryable {
            failed: 1,
            codes: e.code,
        }
    } else {
        EdgeError::Aws(e.to_string())
    }
}

impl Scheduler {
    /// One `Sweep Requested` event per account.
    pub async fn handle(&self) -> Result<Value, EdgeError> {
        let accounts = match &self.accounts {
            AccountList::Explicit(list) => list.clone(),
            AccountList::Organization(org) => {
                audit::organization_accounts(org).await.map_err(aws)?
            }
        };
        audit::request_sweeps(&self.eventbridge, &self.bus, &accounts)
            .await
            .map_err(aws)?;
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
        let clients = self
            .source
            .clients(account, "quell-sweep")
            .await
            .map_err(aws)?;
        let opts = SweepOptions {
            account: account.to_string(),
            policy: self.policy.clone(),
            ctx: self.ctx.clone(),
            now: self.clock.now(),
            enforce: self.policy.mode == Mode::Enforce,
            concurrency: 8,
            progress: None,
        };
        let report = sweep_account(&clients.iam, &opts).await.map_err(aws)?;
        if let Some((client, bus)) = &self.audit
            && let Err(e) = audit::publish_detail(client, bus, SWEEP_REPORT, &report, vec![]).await
        {
            tracing::error!(error = %e, "sweep report not published; it is in this log");
        }
        tracing::info!(account, keys = report.keys.len(), "account swept");
        serde_json::to_value(&report).map_err(|e| EdgeError::Config(e.to_string()))
    }
}
