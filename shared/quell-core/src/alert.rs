//! The message a human gets when quell needs one: a report holding a `notify`, a failed action
//! or a withheld containment (blast-radius cap, breaker, another invocation, a human's
//! release), or an event quell rejected. Short, plain text (e-mail, SMS and chat all show it):
//! which finding, which identity, what quell did, what it needs from a human, and how to undo.
//!
//! Finding titles, reasons and error details come from whoever produced the event: every
//! value is cut to a bounded length, control characters are dropped, and double quotes and
//! backslashes become plain quotes and slashes, so the text drops into a JSON string (the
//! EventBridge input template that forwards it to SNS) as it is.

use serde::Serialize;

use crate::plan::{ActionKind, Target};
use crate::policy::Mode;
use crate::report::{Report, Status};

/// At most this many action lines per message; the rest are counted.
const MAX_LINES: usize = 40;
/// At most this many characters of any one value.
const MAX_VALUE: usize = 300;

/// What a report needs from a human.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Needs {
    pub notify: usize,
    pub failed: usize,
    pub withheld: usize,
}

impl Needs {
    pub fn any(&self) -> bool {
        self.notify + self.failed + self.withheld > 0
    }
}

/// The most an alert's text holds, in bytes: it always fits one EventBridge entry and one SNS
/// message (256 KiB each, with the event around it) and stays readable; the full report is in
/// the audit event.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

/// `text` cut at [`MAX_TEXT_BYTES`] on a character boundary, saying so.
pub fn capped(mut text: String) -> String {
    const MORE: &str = "\n… (cut: the full report is in the audit event and the function's log)\n";
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES - MORE.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MORE);
    text
}

/// A rendered alert: `subject` fits an e-mail subject (SNS allows 100 characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub subject: String,
    pub text: String,
    pub needs: Needs,
    /// The identities the alert is about (labels, cleaned, at most [`MAX_PRINCIPALS`]): what an
    /// alert rule splits on, so each principal's alert reaches a human on its own.
    pub principals: Vec<String>,
}

/// How many identities an alert names in `principals` (the text names them all).
pub const MAX_PRINCIPALS: usize = 10;

impl Alert {
    /// The alert as one JSON record, the same on every edge: the Lambda's bus event detail,
    /// and the Azure handler's `quell.alert` log line that the Bicep's alert rules read.
    pub fn record(&self, function: &str) -> serde_json::Value {
        serde_json::json!({
            "function": function,
            "needs_human": true,
            "subject": self.subject,
            "text": self.text,
            "needs": self.needs,
            "principals": self.principals,
        })
    }
}

/// A value from an event, safe to show: bounded, without control characters or characters
/// that would need escaping in a JSON string.
pub fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c => c,
        })
        .take(MAX_VALUE)
        .collect();
    if s.chars().count() > MAX_VALUE {
        out.push('…');
    }
    out
}

/// Counts what `report` needs from a human.
pub fn needs(report: &Report) -> Needs {
    Needs {
        notify: report
            .results
            .iter()
            .filter(|r| r.action.kind == ActionKind::Notify)
            .count(),
        failed: report
            .results
            .iter()
            .filter(|r| r.outcome.status == Status::Failed)
            .count(),
        withheld: report
            .skipped
            .iter()
            .filter(|s| s.reason.contains("withheld"))
            .count(),
    }
}

/// The alert for `report`, or `None` when it needs no human.
pub fn for_report(report: &Report, function: &str) -> Option<Alert> {
    let needs = needs(report);
    if !needs.any() {
        return None;
    }
    let mode = match report.mode {
        Mode::Enforce => "enforce",
        _ => "dry-run",
    };
    let first = report.findings.first();
    let subject = clean(&format!(
        "quell needs a human: {}",
        first.map_or("a containment", |f| f.title.as_str())
    ))
    .chars()
    .take(100)
    .collect();
    let mut t = String::new();
    let mut counts = Vec::new();
    for (n, what) in [
        (needs.notify, "to notify"),
        (needs.failed, "failed"),
        (needs.withheld, "withheld"),
    ] {
        if n > 0 {
            counts.push(format!("{n} {what}"));
        }
    }
    t.push_str(&format!(
        "quell needs a human: {} ({mode}, {})\n",
        counts.join(", "),
        clean(function)
    ));
    if report.mode != Mode::Enforce {
        t.push_str("Dry-run: quell changed nothing. Contain by hand, or run quell apply.\n");
    }
    let mut lines = 0usize;
    let mut hidden = 0usize;
    let mut undo = Vec::new();
    for f in &report.findings {
        t.push_str(&format!(
            "\nFinding: {}\n  id: {}\n  source: {:?}, {} ({:?} {:.1})\n",
            clean(&f.title),
            clean(&f.id),
            f.source,
            f.family.as_str(),
            f.severity.label,
            f.severity.score
        ));
        for s in &f.subjects {
            t.push_str(&format!("  identity: {}\n", clean(&s.label())));
        }
        let results: Vec<_> = report
            .results
            .iter()
            .filter(|r| r.action.finding == f.id)
            .collect();
        if !results.is_empty() {
            t.push_str("What quell did:\n");
        }
        for r in &results {
            if lines >= MAX_LINES {
                hidden += 1;
                continue;
            }
            lines += 1;
            let code = r
                .outcome
                .error_code
                .as_deref()
                .map(|c| format!(" [{}]", clean(c)))
                .unwrap_or_default();
            t.push_str(&format!(
                "  {:<16} {} {}{code}\n",
                r.outcome.status.as_str(),
                r.action.kind.as_str(),
                clean(&r.action.target.label()),
            ));
            if r.outcome.status == Status::Applied
                && r.action.kind != ActionKind::Notify
                && let Target::Subject(s) = &r.action.target
                && let Some(k) = crate::key::PrincipalKey::of_subject(s, &report.partition)
                    .map(|k| k.to_string())
                && !undo.contains(&k)
            {
                undo.push(k);
            }
        }
        let mut asks = Vec::new();
        for r in &results {
            if r.action.kind == ActionKind::Notify {
                asks.push(format!("decide: {}", clean(&r.action.reason)));
            } else if r.outcome.status == Status::Failed {
                let retry = if r.outcome.retryable {
                    "quell retries it; if it keeps failing, act by hand"
                } else {
                    "quell will not retry it: act by hand"
                };
                asks.push(format!(
                    "failed {} on {}: {} ({retry})",
                    r.action.kind.as_str(),
                    clean(&r.action.target.label()),
                    clean(&r.outcome.detail)
                ));
            }
        }
        for s in report
            .skipped
            .iter()
            .filter(|s| s.finding == f.id && s.reason.contains("withheld"))
        {
            asks.push(format!("review what was withheld: {}", clean(&s.reason)));
        }
        if !asks.is_empty() {
            t.push_str("Needs a human:\n");
            for a in asks.iter().take(MAX_LINES) {
                t.push_str(&format!("  - {a}\n"));
            }
        }
    }
    if hidden > 0 {
        t.push_str(&format!(
            "\n… and {hidden} more action(s): see the report on the quell event bus or in the logs.\n"
        ));
    }
    if !undo.is_empty() {
        t.push_str("\nTo undo quell's containment once cleared:\n");
        for k in &undo {
            t.push_str(&format!("  quell release {k} --by <you>\n"));
        }
    }
    let mut principals: Vec<String> = Vec::new();
    for s in report.findings.iter().flat_map(|f| &f.subjects) {
        let label = clean(&s.label());
        if principals.len() < MAX_PRINCIPALS && !principals.contains(&label) {
            principals.push(label);
        }
    }
    Some(Alert {
        subject,
        text: capped(t),
        needs,
        principals,
    })
}

/// The alert for an event quell refused: who sent what, and why nothing was done.
pub fn for_rejected(function: &str, error: &str) -> Alert {
    Alert {
        subject: "quell rejected an event".into(),
        text: capped(format!(
            "quell rejected an event and took no action ({}).\nWhy: {}\nA malformed or spoofed event never contains anyone; if this was a real finding, fix its source or run the runbook by hand.\n",
            clean(function),
            clean(error)
        )),
        needs: Needs::default(),
        principals: Vec::new(),
    }
}

/// The alert for a sweep that wrote nothing because it would have made more changes than its
/// own cap (`where_` names the account or the tenant).
pub fn for_sweep_withheld(function: &str, where_: &str, why: &str) -> Alert {
    Alert {
        subject: "quell withheld a dormant-credential sweep".into(),
        text: capped(format!(
            "quell's sweep of {} changed nothing ({}).\nWhy: {}\nA sweep that would change this much is more likely a wrong clock, a policy mistake or a forged request than real dormancy: read the sweep report before raising the cap.\n",
            clean(where_),
            clean(function),
            clean(why)
        )),
        needs: Needs {
            withheld: 1,
            ..Needs::default()
        },
        principals: vec![clean(where_)],
    }
}

/// The alert for a check of one contained principal (`quell verify`, or the automatic check
/// after containment), or `None` when every step found the containment in place. Anything else
/// needs a human: something changed the principal after quell contained it (what quell
/// contained again is attacker persistence), a step failed, quell reports what it cannot fix
/// itself (a certificate, federated credentials), or a dry-run would have acted.
pub fn for_check(
    principal: &str,
    function: &str,
    mode: Mode,
    steps: &[(&str, &crate::report::Outcome)],
) -> Option<Alert> {
    let found: Vec<_> = steps
        .iter()
        .filter(|(_, o)| o.status != Status::AlreadyInState)
        .collect();
    if found.is_empty() {
        return None;
    }
    let failed = found
        .iter()
        .filter(|(_, o)| o.status == Status::Failed)
        .count();
    let needs = Needs {
        notify: found.len() - failed,
        failed,
        withheld: 0,
    };
    let principal = clean(principal);
    let mode_name = match mode {
        Mode::Enforce => "enforce",
        _ => "dry-run",
    };
    let subject = clean(&format!(
        "quell needs a human: the containment of {principal} did not hold"
    ))
    .chars()
    .take(100)
    .collect();
    let mut t = format!(
        "quell needs a human: the check of {principal} after containment found {} thing(s) ({mode_name}, {})\n",
        found.len(),
        clean(function)
    );
    if mode != Mode::Enforce {
        t.push_str(&format!(
            "Dry-run: quell changed nothing. Run quell verify {principal} --yes to contain what it found.\n"
        ));
    }
    t.push_str("What the check found:\n");
    for (what, o) in found.iter().take(MAX_LINES) {
        t.push_str(&format!(
            "  {:<16} {}: {}\n",
            o.status.as_str(),
            clean(what),
            clean(&o.detail)
        ));
    }
    if found.len() > MAX_LINES {
        t.push_str(&format!(
            "  … and {} more: see the logs\n",
            found.len() - MAX_LINES
        ));
    }
    t.push_str("Needs a human:\n");
    t.push_str(&format!(
        "  - something changed {principal} after quell contained it: find who and how (CloudTrail, the Entra audit log) and what else they reach\n"
    ));
    if failed > 0 {
        t.push_str(&format!(
            "  - {failed} step(s) failed: act by hand, then run quell verify {principal}\n"
        ));
    }
    Some(Alert {
        subject,
        text: capped(t),
        needs,
        principals: vec![clean(&principal)],
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_alert_always_fits_the_bus_and_the_topic() {
        // Values from events are bounded already (`clean`); a report with thousands of actions
        // is what grows, and the cut keeps whole characters.
        let long = format!("x{}", "é".repeat(MAX_TEXT_BYTES));
        let t = capped(long);
        assert!(t.len() <= MAX_TEXT_BYTES, "{}", t.len());
        assert!(t.ends_with("the function's log)\n"));
        assert_eq!(capped("short".into()), "short");
        let a = for_rejected("guardduty", &"y".repeat(MAX_TEXT_BYTES));
        assert!(a.text.len() <= MAX_TEXT_BYTES);
    }

    use super::*;
    use crate::plan::Skip;
    use crate::report::{ActionResult, Outcome};
    use crate::{Context, Policy, plan_input};

    /// A report with a containment applied, one failed, a notify, and one withheld by the cap.
    fn report() -> Report {
        let input = br#"{"runbook":"contain","principal":"arn:aws:iam::111122223333:user/alice","reason":"SEC-7 \"stolen\" key\u0007","id":"SEC-7"}"#;
        let policy = Policy {
            mode: Mode::Enforce,
            ..Policy::default()
        };
        let plan = plan_input(input, &policy, &Context::default()).unwrap();
        let mut results: Vec<ActionResult> = plan
            .actions
            .iter()
            .take(2)
            .cloned()
            .zip([
                Outcome::applied("AWSDenyAll attached", None),
                Outcome::failed("AccessDenied", "not authorized to iam:PutUserPolicy", false),
            ])
            .map(|(action, outcome)| ActionResult { action, outcome })
            .collect();
        let mut notify = plan.actions[0].clone();
        notify.kind = ActionKind::Notify;
        notify.reason = "the user's MFA device was replaced an hour ago".into();
        results.push(ActionResult {
            action: notify,
            outcome: Outcome::applied("notified", None),
        });
        let mut plan = plan;
        plan.skipped.push(Skip {
            finding: "SEC-7".into(),
            target: None,
            reason: "delete_login_profile withheld by the blast-radius cap".into(),
        });
        Report::new(&plan, "2026-11-23T12:00:00Z".into(), results)
    }

    #[test]
    fn the_notification_says_what_was_done_what_needs_a_human_and_how_to_undo() {
        let a = for_report(&report(), "aws-runbook").unwrap();
        assert_eq!(
            a.needs,
            Needs {
                notify: 1,
                failed: 1,
                withheld: 1
            }
        );
        assert_eq!(
            a.subject,
            "quell needs a human: runbook contain on iam_user alice in 111122223333"
        );
        let expected = "\
quell needs a human: 1 to notify, 1 failed, 1 withheld (enforce, aws-runbook)

Finding: runbook contain on iam_user alice in 111122223333
  id: SEC-7
  source: Runbook, manual (High 8.0)
  identity: iam_user alice in 111122223333
What quell did:
  applied          quarantine_user iam_user alice in 111122223333
  failed           revoke_user_sessions iam_user alice in 111122223333 [AccessDenied]
  applied          notify iam_user alice in 111122223333
Needs a human:
  - failed revoke_user_sessions on iam_user alice in 111122223333: not authorized to iam:PutUserPolicy (quell will not retry it: act by hand)
  - decide: the user's MFA device was replaced an hour ago
  - review what was withheld: delete_login_profile withheld by the blast-radius cap

To undo quell's containment once cleared:
  quell release arn:aws:iam::111122223333:user/alice --by <you>
";
        assert_eq!(a.text, expected, "\n{}", a.text);
    }

    #[test]
    fn a_report_that_needs_no_human_sends_nothing() {
        let mut r = report();
        r.results
            .retain(|x| x.outcome.status == Status::Applied && x.action.kind != ActionKind::Notify);
        r.skipped.clear();
        assert_eq!(for_report(&r, "aws-guardduty"), None);
    }

    #[test]
    fn values_from_events_cannot_break_the_message() {
        assert_eq!(clean("a\"b\\c\nd\u{0007}"), "a'b/cd");
        let long = "x".repeat(1_000);
        assert_eq!(clean(&long).chars().count(), MAX_VALUE + 1);
        let r = for_rejected("aws-guardduty", "source \"aws.guardduty\" spoofed\n");
        assert!(!r.text.contains('"'), "{}", r.text);
        assert!(r.text.contains("took no action"));
    }

    #[test]
    fn a_check_alerts_only_when_the_containment_did_not_hold() {
        let held = Outcome::already("AWSDenyAll is still attached");
        assert!(
            for_check(
                "aws:111122223333:user/alice",
                "runbook",
                Mode::Enforce,
                &[("quarantine of alice", &held)]
            )
            .is_none()
        );
        let back = Outcome::applied(
            "attacker persistence: key AKIAEXAMPLE was created after containment; deactivated",
            None,
        );
        let refused = Outcome::failed("AccessDenied", "not authorized \"x\"", false);
        let a = for_check(
            "aws:111122223333:user/alice",
            "runbook",
            Mode::Enforce,
            &[
                ("quarantine of alice", &held),
                ("key AKIAEXAMPLE", &back),
                ("session revocation of alice", &refused),
            ],
        )
        .unwrap();
        assert_eq!(
            a.needs,
            Needs {
                notify: 1,
                failed: 1,
                withheld: 0
            }
        );
        assert!(
            a.subject
                .starts_with("quell needs a human: the containment of aws:111122223333:user/alice")
        );
        assert!(a.subject.chars().count() <= 100);
        assert!(
            a.text.contains("attacker persistence: key AKIAEXAMPLE"),
            "{}",
            a.text
        );
        assert!(!a.text.contains("still attached"), "{}", a.text);
        assert!(a.text.contains("1 step(s) failed"), "{}", a.text);
        assert!(!a.text.contains('"'), "{}", a.text);
        let dry = for_check(
            "azure:user/3b9e2f71",
            "Verify",
            Mode::DryRun,
            &[(
                "disable_entra_user user",
                &Outcome::dry_run("would disable it again; pass --yes"),
            )],
        )
        .unwrap();
        assert!(
            dry.text.contains("Dry-run: quell changed nothing"),
            "{}",
            dry.text
        );
    }
}
