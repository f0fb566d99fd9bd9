use std::sync::Mutex;

use quell_core::clock::FixedClock;
use quell_core::report::{ActionResult, Outcome};
use quell_core::{Context, plan_input};
use quell_ledger::memory::MemoryLedger;
use quell_ledger::{Ledger, State};
use time::OffsetDateTime;

use super::*;

const NOW: OffsetDateTime = time::macros::datetime!(2026-11-23 12:00:00 UTC);

fn enforce() -> Policy {
    Policy {
        mode: Mode::Enforce,
        ..Policy::default()
    }
}

fn contain_plan(user: &str, finding: &str) -> Plan {
    let req = format!(
        r#"{{"runbook":"contain","principal":"arn:aws:iam::111122223333:user/{user}","reason":"t","id":"{finding}"}}"#
    );
    plan_input(req.as_bytes(), &enforce(), &Context::default()).unwrap()
}

/// Applies every action; fails those on `fail` (retryably).
struct FakeExecutor {
    fail: Option<String>,
}

impl Executor for FakeExecutor {
    fn execute<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Report> {
        Box::pin(async move {
            let results = plan
                .actions
                .iter()
                .map(|a| ActionResult {
                    action: a.clone(),
                    outcome: if self
                        .fail
                        .as_deref()
                        .is_some_and(|f| a.target.label().contains(f))
                    {
                        Outcome::failed("Throttling", "slow down", true)
                    } else {
                        Outcome::applied("done", None)
                    },
                })
                .collect();
            Report::new(plan, "t".into(), results)
        })
    }
}

/// Releases every entry but those of `fail`; records what it was asked.
struct FakeUndo {
    fail: String,
    released: Mutex<Vec<String>>,
    /// The action kinds each release was asked to undo.
    undone: Mutex<Vec<quell_core::plan::ActionKind>>,
    evidence: bool,
}

impl Undo for FakeUndo {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }
    fn release<'a>(&'a self, entry: &'a Entry, _by: Releaser) -> BoxFuture<'a, Vec<Step>> {
        Box::pin(async move {
            self.released.lock().unwrap().push(entry.principal.clone());
            self.undone
                .lock()
                .unwrap()
                .extend(entry.actions.iter().map(|a| a.kind));
            let outcome = if entry.principal.contains(&self.fail) {
                Outcome::failed("AccessDenied", "no", false)
            } else {
                Outcome::applied("undone", None)
            };
            vec![Step {
                what: format!("undo {}", entry.principal),
                outcome,
            }]
        })
    }
    fn verify<'a>(&'a self, entries: &'a [Entry], _fix: bool) -> BoxFuture<'a, Vec<Step>> {
        Box::pin(async move {
            entries
                .iter()
                .map(|e| Step {
                    what: format!("check {}", e.principal),
                    outcome: if e.principal.contains(&self.fail) {
                        Outcome::failed("AccessDenied", "no", false)
                    } else {
                        Outcome::already("holds")
                    },
                })
                .collect()
        })
    }
    fn may_release_automatically<'a>(
        &'a self,
        _entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.evidence {
                Ok(())
            } else {
                Err("no tag".into())
            }
        })
    }
}

struct FailingQueue;

impl CheckQueue for FailingQueue {
    fn schedule<'a>(
        &'a self,
        _: &'a [String],
        _: u32,
        _: Option<String>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("QueueDoesNotExist".to_string()) })
    }
}

/// One scheduling: the principals, the delay, and `not_before`.
type Scheduled = (Vec<String>, u32, Option<String>);

/// A queue that records what it was asked to schedule.
#[derive(Default)]
struct RecordingQueue(Mutex<Vec<Scheduled>>);

impl CheckQueue for RecordingQueue {
    fn schedule<'a>(
        &'a self,
        principals: &'a [String],
        after: u32,
        not_before: Option<String>,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.0
            .lock()
            .unwrap()
            .push((principals.to_vec(), after, not_before));
        Box::pin(async { Ok(()) })
    }
}

#[test]
fn an_identity_center_user_is_checked_again_an_hour_later_through_a_short_queue() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let (exec, undo) = (FakeExecutor { fail: None }, undo("-"));
    let queue = RecordingQueue::default();
    let mut p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    p.checks = Some(&queue);
    let person = "aws:identity-center:user/priya@example.com".to_string();
    let user = "arn:aws:iam::111122223333:user/alice".to_string();
    run(p.schedule_checks(&[person.clone(), user.clone()])).unwrap();
    let asked = queue.0.lock().unwrap().clone();
    let after = policy.verify.after_seconds;
    let later = IDENTITY_CENTER_RECHECK_SECONDS + after;
    let due = quell_core::clock::rfc3339_seconds(NOW + time::Duration::seconds(i64::from(later)));
    assert_eq!(asked[0], (vec![person.clone()], later, Some(due.clone())));
    assert_eq!(asked[1], (vec![person.clone(), user], after, None));
    // The queue delivers it early (SQS holds 15 minutes): the check waits again, until then.
    let msg = serde_json::json!({"runbook": "verify", "principal": person, "reason": "r", "not_before": due});
    let answer = run(p.scheduled_check(&msg));
    assert!(
        format!("{answer:?}").contains("not due until"),
        "{answer:?}"
    );
    let again = queue.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(again, (vec![person.clone()], later, Some(due)));
    // Once due, it checks.
    let past = serde_json::json!({"runbook": "verify", "principal": person, "reason": "r", "not_before": "2026-01-01T00:00:00Z"});
    let answer = run(p.scheduled_check(&past));
    assert!(
        !format!("{answer:?}").contains("not due until"),
        "{answer:?}"
    );
}

fn undo(fail: &str) -> FakeUndo {
    FakeUndo {
        fail: fail.into(),
        released: Mutex::new(Vec::new()),
        undone: Mutex::new(Vec::new()),
        evidence: true,
    }
}

fn pipeline<'a>(
    policy: &'a Policy,
    clock: &'a FixedClock,
    ledger: &'a MemoryLedger,
    executor: &'a FakeExecutor,
    undo: &'a FakeUndo,
) -> Pipeline<'a, MemoryLedger> {
    Pipeline {
        function: "test",
        policy,
        clock,
        ledger: Some(ledger),
        executor: Some(executor),
        undo: vec![undo],
        checks: None,
        audit: None,
    }
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_failed_release_of_one_entry_never_keeps_another_in_force() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let (exec, undo) = (FakeExecutor { fail: None }, undo("bob"));
    let p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    run(async {
        for (user, f) in [("alice", "f1"), ("bob", "f1"), ("carol", "f1")] {
            assert!(matches!(
                p.contain(contain_plan(user, f)).await,
                Answer::Done(_)
            ));
        }
        let entries = p.in_force(Select::Finding("f1")).await.unwrap();
        assert_eq!(entries.len(), 3);
        let r = p
            .release(&entries, "alice@example.com", Releaser::Automatic)
            .await
            .unwrap();
        assert!(!r.complete());
        // bob's failure leaves bob in force, and only bob.
        for e in ledger.list(None).await.unwrap() {
            let want = if e.principal.contains("bob") {
                State::Done
            } else {
                State::Released
            };
            assert_eq!(e.state, want, "{}", e.principal);
        }
    });
}

#[test]
fn a_check_that_cannot_be_scheduled_answers_retry_with_the_report() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let (exec, undo) = (FakeExecutor { fail: None }, undo("-"));
    let mut p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    p.checks = Some(&FailingQueue);
    let answer = run(p.contain(contain_plan("alice", "f1")));
    let Answer::Retry { reason, done } = &answer else {
        panic!("{answer:?}");
    };
    assert!(reason.contains("not scheduled"), "{reason}");
    assert!(matches!(done, Some(Done::Contained(r)) if r.summary.applied > 0));
    assert_eq!(answer.to_json()["status"], "retry");
}

#[test]
fn a_retryable_action_failure_answers_retry_and_alerts() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let exec = FakeExecutor {
        fail: Some("alice".into()),
    };
    let undo = undo("-");
    let p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    let answer = run(p.contain(contain_plan("alice", "f1")));
    assert!(matches!(&answer, Answer::Retry { reason, .. } if reason.contains("Throttling")));
    assert_eq!(answer.alerts("test").len(), 1);
}

#[test]
fn the_verify_queue_only_verifies_and_a_failed_check_retries() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let (exec, undo) = (FakeExecutor { fail: None }, undo("bob"));
    let p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    run(async {
        p.contain(contain_plan("bob", "f1")).await;
        let release = serde_json::json!({"runbook": "release", "principal": "arn:aws:iam::111122223333:user/bob", "reason": "x"});
        assert!(matches!(
            p.scheduled_check(&release).await,
            Answer::Rejected(_)
        ));
        let verify = serde_json::json!({"runbook": "verify", "principal": "arn:aws:iam::111122223333:user/bob", "reason": "x"});
        let answer = p.scheduled_check(&verify).await;
        assert!(matches!(answer, Answer::Retry { .. }), "{answer:?}");
        // The failed check owes a human an alert.
        assert_eq!(answer.alerts("test").len(), 1);
        assert!(undo.released.lock().unwrap().is_empty());
    });
}

#[test]
fn a_principal_of_another_cloud_is_refused_by_name() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let (exec, undo) = (FakeExecutor { fail: None }, undo("-"));
    let p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    let req = LedgerRequest::parse(
        &serde_json::json!({"runbook": "verify", "principal": "alice@contoso.com", "reason": "x"}),
    )
    .unwrap();
    let answer = run(p.ledger_request(&req));
    assert!(
        matches!(&answer, Answer::Rejected(e) if e.contains("azure:user/alice@contoso.com") && e.contains("AWS")),
        "{answer:?}"
    );
}

#[test]
fn the_hourly_release_without_a_ledger_or_an_expiry_skips() {
    let (policy, clock) = (enforce(), FixedClock(NOW));
    let p: Pipeline<'_, MemoryLedger> = Pipeline {
        function: "test",
        policy: &policy,
        clock: &clock,
        ledger: None,
        executor: None,
        undo: vec![],
        checks: None,
        audit: None,
    };
    let answer = run(p.release_expired());
    assert_eq!(answer.to_json()["status"], "skipped");
    assert!(answer.alerts("test").is_empty());
}

#[test]
fn the_hourly_release_needs_the_principals_own_evidence() {
    let mut policy = enforce();
    policy.families.credential_compromise.release_after_hours = Some(1);
    let clock = FixedClock(NOW);
    let ledger = MemoryLedger::default();
    let exec = FakeExecutor { fail: None };
    let mut u = undo("-");
    u.evidence = false;
    run(async {
        let p = pipeline(&policy, &clock, &ledger, &exec, &u);
        // A GuardDuty-like family: contain through a runbook is manual, so write the entry's
        // expiry as the gate would for an expiring family.
        p.contain(contain_plan("alice", "f1")).await;
        let mut e = ledger.list(None).await.unwrap().remove(0);
        let v = e.version;
        e.expires = Some("2026-11-23T11:00:00Z".into());
        e.version = v + 1;
        assert!(ledger.put(&e, Some(v)).await.unwrap());
        let later = FixedClock(NOW + time::Duration::hours(2));
        let p = Pipeline {
            clock: &later,
            ..pipeline(&policy, &clock, &ledger, &exec, &u)
        };
        let answer = p.release_expired().await;
        assert!(matches!(answer, Answer::Retry { .. }), "{answer:?}");
        assert!(u.released.lock().unwrap().is_empty());
        assert!(ledger.list(None).await.unwrap()[0].in_force());
    });
}

#[test]
fn releasing_one_finding_keeps_what_another_in_force_relies_on() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let (exec, undo) = (FakeExecutor { fail: None }, undo("-"));
    let p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    run(async {
        // Two findings quarantined the same user.
        let quarantine = |f: &str| {
            let req = format!(
                r#"{{"runbook":"quarantine","principal":"arn:aws:iam::111122223333:user/alice","reason":"t","id":"{f}"}}"#
            );
            plan_input(req.as_bytes(), &policy, &Context::default()).unwrap()
        };
        p.contain(quarantine("f1")).await;
        p.contain(quarantine("f2")).await;
        let f1 = p.in_force(Select::Finding("f1")).await.unwrap();
        let r = p.release(&f1, "oncall", Releaser::Automatic).await.unwrap();
        assert!(r.complete());
        let undone = undo.undone.lock().unwrap().clone();
        assert!(
            !undone.contains(&quell_core::plan::ActionKind::QuarantineUser),
            "{undone:?}"
        );
        assert!(
            r.steps
                .iter()
                .any(|s| s.outcome.detail.contains("finding f2"))
        );
        // Releasing the last one undoes the quarantine too.
        undo.undone.lock().unwrap().clear();
        let f2 = p.in_force(Select::Finding("f2")).await.unwrap();
        p.release(&f2, "oncall", Releaser::Automatic).await.unwrap();
        assert!(
            undo.undone
                .lock()
                .unwrap()
                .contains(&quell_core::plan::ActionKind::QuarantineUser)
        );
    });
}

/// An invocation that claimed a containment and then crashed (or timed out, or could not
/// record) leaves a live lease: the retry of the same delivery proceeds and contains; another
/// delivery of the same containment waits for the lease.
#[test]
fn a_retry_of_the_same_delivery_proceeds_through_its_own_lease() {
    let (policy, clock, ledger) = (enforce(), FixedClock(NOW), MemoryLedger::default());
    let (exec, undo) = (FakeExecutor { fail: None }, undo("-"));
    let p = pipeline(&policy, &clock, &ledger, &exec, &undo);
    let delivered = |d: &str| {
        let mut plan = contain_plan("alice", "f1");
        plan.delivery = Some(d.to_string());
        plan
    };
    run(async {
        // The first try claims, then dies before it acts or records.
        let crashed = quell_ledger::gate(&ledger, delivered("event:1"), &policy, NOW)
            .await
            .unwrap();
        assert_eq!(crashed.claims.len(), 1);
        // Another delivery of the same finding, inside the lease: withheld.
        let other = p.contain(delivered("event:2")).await;
        let Some(Done::Contained(r)) = other.done() else {
            panic!("{other:?}");
        };
        assert_eq!(r.summary.applied, 0, "{r:?}");
        assert!(
            r.skipped
                .iter()
                .any(|s| s.reason.contains("another invocation holds"))
        );
        // Lambda's retry of the first delivery: contains, and records.
        let retried = p.contain(delivered("event:1")).await;
        let Some(Done::Contained(r)) = retried.done() else {
            panic!("{retried:?}");
        };
        assert!(r.summary.applied > 0, "{r:?}");
        let e = ledger.list(None).await.unwrap().remove(0);
        assert_eq!(e.state, State::Done);
    });
}
