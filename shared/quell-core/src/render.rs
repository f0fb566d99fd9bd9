//! Human-readable rendering of a plan, for the CLI and logs.

use std::fmt::Write;

use crate::plan::Plan;
use crate::policy::Mode;

/// Renders a plan as text: the findings, each action with its reason, and what was skipped.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let mode = match plan.mode {
        Mode::DryRun => "dry-run (nothing will be changed)",
        Mode::Enforce => "enforce",
    };
    let _ = writeln!(out, "quell plan · mode: {mode}");
    for f in &plan.findings {
        let _ = writeln!(
            out,
            "\nfinding {} [{}]\n  type:     {}\n  title:    {}\n  severity: {:?} ({:.1})  family: {}  status: {:?}",
            f.id,
            serde_json::to_value(f.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            f.kind,
            f.title,
            f.severity.label,
            f.severity.score,
            f.family.as_str(),
            f.status
        );
        if let Some(a) = &f.account {
            let _ = writeln!(out, "  account:  {a}");
        }
        if let Some(t) = &f.tenant {
            let _ = writeln!(out, "  tenant:   {t}");
        }
        if f.subjects.is_empty() {
            let _ = writeln!(out, "  subjects: none");
        }
        for s in &f.subjects {
            let _ = writeln!(out, "  subject:  {}", s.label());
        }
        for n in &f.notes {
            let _ = writeln!(out, "  note:     {n}");
        }
    }
    if plan.actions.is_empty() {
        let _ = writeln!(out, "\nactions: none");
    } else {
        let _ = writeln!(out, "\nactions, in order:");
        for (i, a) in plan.actions.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>2}. {:<34} {}\n      why: {}",
                i + 1,
                a.kind.as_str(),
                a.target.label(),
                a.reason
            );
        }
    }
    if !plan.skipped.is_empty() {
        let _ = writeln!(out, "\nskipped:");
        for s in &plan.skipped {
            match &s.target {
                Some(t) => {
                    let _ = writeln!(out, "  - {} ({}): {}", t.label(), s.finding, s.reason);
                }
                None => {
                    let _ = writeln!(out, "  - finding {}: {}", s.finding, s.reason);
                }
            }
        }
    }
    for i in &plan.ignored {
        let _ = writeln!(out, "\nignored {}: {}", i.pointer, i.reason);
    }
    out
}
