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
    /// Where the sweep records what it changed (`QUELL_LEDGER_TABLE`).
    pub ledger: Option<quell_aws::ledger::DynamoLedger>,
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
        // Only quell's scheduler asks for sweeps: the bus policy denies `Sweep Requested` to
        // every other principal, and the request must come from quell's own account (the
        // event's `account` is the sender's, set by EventBridge) and name an account the
        // scheduler would (`aws.sweep_accounts` when set).
        if let Some(own) = &self.ctx.account
            && ev.account.as_deref() != Some(own.as_str())
        {
            return rejected(format!(
                "a \"Sweep Requested\" event from account {:?}: only quell's scheduler in account {own} asks for sweeps",
                ev.account.as_deref().unwrap_or("unknown")
            ));
        }
        let listed = &self.policy.aws.sweep_accounts;
        if !listed.is_empty() && !listed.iter().any(|a| a == account) {
            return rejected(format!(
                "account {account} is not in aws.sweep_accounts (QUELL_SWEEP_ACCOUNTS): quell's scheduler never asks to sweep it"
            ));
        }
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
        // The account's cross-cloud links are refreshed beside the sweep (read-only calls).
        let stamp = quell_core::clock::rfc3339_seconds(opts.now);
        let (report, links) = tokio::join!(
            sweep_account(&clients.iam, &opts),
            quell_aws::links::discover(&clients.iam, account, &stamp)
        );
        let report = match report {
            Ok(r) => r,
            Err(e) => return answer(e),
        };
        let mut links_out = json!({"links": links.links.len(), "gaps": links.gaps});
        if let Some(ledger) = &self.ledger
            && let Err(e) =
                quell_ledger::links::store(ledger, &format!("aws-{account}"), &links).await
        {
            tracing::error!(error = %e, "the account's link map could not be stored");
            links_out["error"] = json!(e.to_string());
        }
        let mut recorded = Value::Null;
        if let Some(ledger) = &self.ledger {
            let partition = self.ctx.partition.as_deref().unwrap_or("aws");
            match quell_ledger::record_sweep(
                ledger,
                &report.ledger_id(),
                report.changes(partition),
                opts.now,
            )
            .await
            {
                Ok(n) => recorded = json!({"ledger_id": report.ledger_id(), "entries": n}),
                // The changes are made and the report says what they were; a retry would find
                // nothing left to record. A human hears of it.
                Err(e) => {
                    tracing::error!(error = %e, "the sweep's changes are not in the ledger");
                    recorded = json!({"error": e.to_string()});
                }
            }
        }
        if let Some((client, bus)) = &self.audit
            && let Err(e) = audit::publish_detail(client, bus, SWEEP_REPORT, &report, vec![]).await
        {
            tracing::error!(error = %e, "sweep report not published; it is in this log");
        }
        if let Some(why) = &report.withheld {
            tracing::error!(account, "{why}");
            let a = quell_core::alert::for_sweep_withheld(
                "sweeper",
                &format!("account {account}"),
                why,
            );
            if let Some((client, bus)) = &self.audit {
                let detail = a.record("sweeper");
                // An alert is never just a log line: a failed publish fails the invocation,
                // and the retry sweeps again (read-only while the cap holds).
                if let Err(e) =
                    audit::publish_detail(client, bus, crate::ALERT_DETAIL_TYPE, &detail, vec![])
                        .await
                {
                    return Err(EdgeError::Retryable {
                        reason: format!("the sweep's alert could not be published: {e}"),
                    });
                }
            }
        }
        tracing::info!(account, keys = report.keys.len(), "account swept");
        let mut out =
            serde_json::to_value(&report).map_err(|e| EdgeError::Config(e.to_string()))?;
        if !recorded.is_null() {
            out["ledger"] = recorded;
        }
        out["links"] = links_out;
        Ok(out)
    }
}
