//! What happened when a plan ran: one outcome per action, with the inverse of each change.
//! Pure: executors build [`ActionResult`]s; this module assembles and summarizes them.

use serde::{Deserialize, Serialize};

use crate::model::Finding;
use crate::plan::{Action, Plan, Skip};
use crate::policy::Mode;

/// How one action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The change was made.
    Applied,
    /// Nothing to change: the target was already contained (re-runs land here).
    AlreadyInState,
    /// Deliberately not done (exempt, protected found at execution time, dry-run, unsupported).
    Skipped,
    /// The call failed; `error_code` says why.
    Failed,
    /// Dry-run: this is what would be done.
    DryRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Applied => "applied",
            Status::AlreadyInState => "already_in_state",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::DryRun => "dry_run",
        }
    }
}

pub use crate::inverse::{AwsInverse, AzureInverse, CredentialOwner, IamKind, Inverse, RawInverse};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    /// What was seen or done, for humans.
    pub detail: String,
    /// The provider's error code (`AccessDenied`, `Throttling`, `NoSuchEntity`, Graph codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// True when trying again later may succeed (throttling, 5xx, network).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse: Option<Inverse>,
}

impl Outcome {
    pub fn applied(detail: impl Into<String>, inverse: Option<Inverse>) -> Outcome {
        Outcome {
            status: Status::Applied,
            detail: detail.into(),
            error_code: None,
            retryable: false,
            inverse,
        }
    }
    pub fn already(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::AlreadyInState,
            detail: detail.into(),
            error_code: None,
            retryable: false,
            inverse: None,
        }
    }
    pub fn skipped(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Skipped,
            detail: detail.into(),
            error_code: None,
            retryable: false,
            inverse: None,
        }
    }
    pub fn dry_run(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::DryRun,
            detail: detail.into(),
            error_code: None,
            retryable: false,
            inverse: None,
        }
    }
    pub fn failed(code: impl Into<String>, detail: impl Into<String>, retryable: bool) -> Outcome {
        Outcome {
            status: Status::Failed,
            detail: detail.into(),
            error_code: Some(code.into()),
            retryable,
            inverse: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub action: Action,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub applied: usize,
    pub already_in_state: usize,
    pub skipped: usize,
    pub failed: usize,
    pub dry_run: usize,
}

fn summarize(results: &[ActionResult]) -> Summary {
    let mut summary = Summary::default();
    for r in results {
        match r.outcome.status {
            Status::Applied => summary.applied += 1,
            Status::AlreadyInState => summary.already_in_state += 1,
            Status::Skipped => summary.skipped += 1,
            Status::Failed => summary.failed += 1,
            Status::DryRun => summary.dry_run += 1,
        }
    }
    summary
}

/// The report of one plan run. It is also the audit event's `detail`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// When the plan ran (RFC 3339), as the injected clock said.
    pub executed_at: String,
    pub findings: Vec<Finding>,
    pub results: Vec<ActionResult>,
    pub skipped: Vec<Skip>,
    pub summary: Summary,
    /// The AWS partition the plan's principal keys are in (the deployment's).
    #[serde(skip)]
    pub partition: String,
}

impl Report {
    pub fn new(plan: &Plan, executed_at: String, results: Vec<ActionResult>) -> Report {
        Report {
            mode: plan.mode,
            executed_at,
            findings: plan.findings.clone(),
            summary: summarize(&results),
            results,
            skipped: plan.skipped.clone(),
            partition: plan.partition.clone(),
        }
    }

    /// One report of several plan runs (one per Event Hub message of an invocation).
    pub fn merge(mode: Mode, executed_at: String, reports: Vec<Report>) -> Report {
        let mut out = Report {
            mode,
            executed_at,
            findings: Vec::new(),
            results: Vec::new(),
            skipped: Vec::new(),
            summary: Summary::default(),
            partition: reports
                .first()
                .map_or_else(|| "aws".to_string(), |r| r.partition.clone()),
        };
        for r in reports {
            out.findings.extend(r.findings);
            out.results.extend(r.results);
            out.skipped.extend(r.skipped);
        }
        out.summary = summarize(&out.results);
        out
    }

    /// The dry-run report: every action as it would run, nothing changed.
    pub fn dry_run(plan: &Plan, executed_at: String) -> Report {
        let results = plan
            .actions
            .iter()
            .map(|a| ActionResult {
                action: a.clone(),
                outcome: Outcome::dry_run(format!(
                    "would {} on {}",
                    a.kind.as_str(),
                    a.target.label()
                )),
            })
            .collect();
        Report::new(plan, executed_at, results)
    }

    /// True when some action failed in a way a later retry may fix.
    pub fn should_retry(&self) -> bool {
        self.results
            .iter()
            .any(|r| r.outcome.status == Status::Failed && r.outcome.retryable)
    }

    /// One log line per action: `applied deactivate_access_key access_key AKIA… in 1111…: …`.
    pub fn lines(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|r| {
                let status = r.outcome.status.as_str();
                let code = r
                    .outcome
                    .error_code
                    .as_deref()
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default();
                format!(
                    "{status} {} {}{code}: {}",
                    r.action.kind.as_str(),
                    r.action.target.label(),
                    r.outcome.detail
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, Policy, plan_input};

    #[test]
    fn dry_run_reports_every_action_and_changes_nothing() {
        let input = br#"{"runbook":"contain","principal":"arn:aws:iam::111122223333:user/alice","reason":"test"}"#;
        let plan = plan_input(input, &Policy::default(), &Context::default()).unwrap();
        let report = Report::dry_run(&plan, "2026-11-23T00:00:00Z".into());
        assert_eq!(report.results.len(), plan.actions.len());
        assert_eq!(report.summary.dry_run, plan.actions.len());
        assert!(report.results.iter().all(|r| r.outcome.inverse.is_none()));
        assert!(!report.should_retry());
        assert!(report.lines()[0].starts_with("dry_run quarantine_user iam_user alice"));
    }

    #[test]
    fn summary_counts_each_status_and_retry_follows_retryable_failures() {
        let input = br#"{"runbook":"contain","principal":"arn:aws:iam::111122223333:user/alice","reason":"test"}"#;
        let plan = plan_input(input, &Policy::default(), &Context::default()).unwrap();
        let outcomes = [
            Outcome::applied("done", None),
            Outcome::failed("Throttling", "rate exceeded", true),
            Outcome::already("already"),
        ];
        let results = plan
            .actions
            .iter()
            .zip(outcomes)
            .map(|(a, o)| ActionResult {
                action: a.clone(),
                outcome: o,
            })
            .collect();
        let report = Report::new(&plan, "t".into(), results);
        assert_eq!(report.summary.applied, 1);
        assert_eq!(report.summary.failed, 1);
        assert_eq!(report.summary.already_in_state, 1);
        assert!(report.should_retry());
    }
}
