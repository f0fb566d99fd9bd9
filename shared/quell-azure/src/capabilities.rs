//! quell's pipeline capabilities on Azure (`quell_pipeline::{Executor, Undo, CheckQueue}`).

use quell_core::model::Cloud;
use quell_core::plan::Plan;
use quell_core::report::Report;
use quell_ledger::{Entry, Step};
use quell_pipeline::{BoxFuture, CheckQueue, Executor, Releaser, Undo};

use crate::executor::AzureExecutor;
use crate::queue::VerifyQueue;

impl Executor for AzureExecutor {
    fn execute<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Report> {
        Box::pin(AzureExecutor::execute(self, plan))
    }
    fn resolve<'a>(&'a self, plan: Plan) -> BoxFuture<'a, Plan> {
        Box::pin(AzureExecutor::resolve_users(self, plan))
    }
}

/// Release and verify of Entra principals and managed identities over Graph and ARM, under the
/// executor's policy and identity (a protected principal is never written).
impl Undo for AzureExecutor {
    fn cloud(&self) -> Cloud {
        Cloud::Azure
    }
    fn release<'a>(&'a self, entry: &'a Entry, by: Releaser) -> BoxFuture<'a, Vec<Step>> {
        let by = match by {
            Releaser::Human { .. } => crate::release::Releaser::Human,
            Releaser::Automatic => crate::release::Releaser::Automatic,
        };
        Box::pin(crate::release::release(self.http(), entry, by))
    }
    fn verify<'a>(&'a self, entries: &'a [Entry], fix: bool) -> BoxFuture<'a, Vec<Step>> {
        Box::pin(async move {
            let protected = |s: &quell_core::model::Subject| self.protection(s);
            crate::release::verify(self.http(), entries, fix, &protected).await
        })
    }
    /// Entra objects carry no tag quell could check: the ledger's integrity is all there is
    /// (docs/operations.md, "Who can make quell act"), and the automatic release never grants.
    fn may_release_automatically<'a>(
        &'a self,
        _entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

impl CheckQueue for VerifyQueue {
    fn schedule<'a>(
        &'a self,
        principals: &'a [String],
        after_seconds: u32,
        not_before: Option<String>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            VerifyQueue::schedule_until(self, principals, after_seconds, not_before.as_deref())
                .await
                .map_err(|e| e.to_string())
        })
    }
}
