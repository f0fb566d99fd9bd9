//! quell's pipeline capabilities on AWS (`quell_pipeline::{Executor, Undo, CheckQueue}`).

use quell_core::model::Cloud;
use quell_core::plan::Plan;
use quell_core::report::Report;
use quell_ledger::{Entry, Step};
use quell_pipeline::{BoxFuture, CheckQueue, Executor, Releaser, Undo};

use crate::clients::ClientSource;
use crate::executor::AwsExecutor;

impl<S: ClientSource> Executor for AwsExecutor<S> {
    fn execute<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Report> {
        Box::pin(AwsExecutor::execute(self, plan))
    }
    fn resolve<'a>(&'a self, plan: Plan) -> BoxFuture<'a, Plan> {
        Box::pin(async move {
            let plan = AwsExecutor::resolve_keys(self, plan).await;
            AwsExecutor::resolve_identity_center_users(self, plan).await
        })
    }
    fn prefetch<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, ()> {
        Box::pin(AwsExecutor::prefetch(self, plan))
    }
}

/// The executor releases and verifies through its own client source.
impl<S: ClientSource> Undo for AwsExecutor<S> {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }
    fn release<'a>(&'a self, entry: &'a Entry, by: Releaser) -> BoxFuture<'a, Vec<Step>> {
        release_with(self.source(), entry, by)
    }
    fn verify<'a>(&'a self, entries: &'a [Entry], fix: bool) -> BoxFuture<'a, Vec<Step>> {
        Box::pin(async move {
            let protect = crate::release::Protection {
                policy: self.policy(),
                ctx: self.ctx(),
            };
            crate::release::verify(self.source(), entries, fix, &protect).await
        })
    }
    fn may_release_automatically<'a>(
        &'a self,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(crate::release::tagged_by_quell(self.source(), entries))
    }
}

/// Release and verify of AWS principals through a client source (the function's role, the
/// member role in other accounts, or an engineer's credentials), respecting the policy's
/// protected principals and the caller's own identity.
pub struct AwsUndo<'a, S>(pub &'a S, pub crate::release::Protection<'a>);

fn release_with<'a, S: ClientSource>(
    source: &'a S,
    entry: &'a Entry,
    by: Releaser,
) -> BoxFuture<'a, Vec<Step>> {
    let reactivate = matches!(
        by,
        Releaser::Human {
            reactivate_keys: true
        }
    );
    Box::pin(crate::release::release(source, entry, reactivate))
}

impl<S: ClientSource> Undo for AwsUndo<'_, S> {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }
    fn release<'a>(&'a self, entry: &'a Entry, by: Releaser) -> BoxFuture<'a, Vec<Step>> {
        release_with(self.0, entry, by)
    }
    fn verify<'a>(&'a self, entries: &'a [Entry], fix: bool) -> BoxFuture<'a, Vec<Step>> {
        Box::pin(crate::release::verify(self.0, entries, fix, &self.1))
    }
    fn may_release_automatically<'a>(
        &'a self,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(crate::release::tagged_by_quell(self.0, entries))
    }
}

/// The SQS verify queue (`QUELL_VERIFY_QUEUE`).
pub struct SqsChecks {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl CheckQueue for SqsChecks {
    fn schedule<'a>(
        &'a self,
        principals: &'a [String],
        after_seconds: u32,
        not_before: Option<String>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            crate::verify_queue::schedule(
                &self.client,
                &self.url,
                principals,
                after_seconds,
                not_before.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())
        })
    }
}
