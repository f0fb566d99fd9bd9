//! CloudWatch metrics from every invocation, through the Embedded Metric Format: JSON lines on
//! the function's own stdout, which CloudWatch Logs turns into metrics (no API call, no
//! `cloudwatch:PutMetricData` permission). Specification followed: "Specification: Embedded
//! metric format" (Amazon CloudWatch User Guide), and "Using the embedded metric format with
//! Lambda": one JSON object per line on stdout.
//!
//! Namespace `quell`. Per invocation, with dimensions `[Service]` and `[Service, Function]`:
//! `Invocations`, `Findings`, `Actions`, `Applied`, `AlreadyInState`, `DryRun`, `Failed`,
//! `Skipped`, `Withheld`, `Notify`, `Rejected`, `Errors`, `Duration` (ms). Per action kind and
//! outcome, with `[Service, ActionKind, Outcome]`: `Actions`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "quell";

/// The EMF documents for one invocation's outcome (`Ok` the function's answer, `Err` the
/// error it failed with), `duration_ms` long, at `timestamp_ms`.
pub fn documents(
    function: &str,
    outcome: Result<&Value, &str>,
    duration_ms: f64,
    timestamp_ms: i64,
) -> Vec<Value> {
    let mut counts: BTreeMap<&str, f64> = [
        "Invocations",
        "Findings",
        "Actions",
        "Applied",
        "AlreadyInState",
        "DryRun",
        "Failed",
        "Skipped",
        "Withheld",
        "Notify",
        "Rejected",
        "Errors",
    ]
    .into_iter()
    .map(|k| (k, 0.0))
    .collect();
    let mut bump = |k: &'static str, n: usize| {
        *counts.entry(k).or_default() += n as f64;
    };
    bump("Invocations", 1);
    let mut by_kind: BTreeMap<(String, String), usize> = BTreeMap::new();
    match outcome {
        Err(_) => bump("Errors", 1),
        Ok(v) if v["status"] == "rejected" => bump("Rejected", 1),
        Ok(v) => {
            bump("Findings", v["findings"].as_array().map_or(0, Vec::len));
            for r in v["results"].as_array().into_iter().flatten() {
                let kind = r["action"]["kind"].as_str().unwrap_or("unknown");
                let status = r["outcome"]["status"].as_str().unwrap_or("unknown");
                bump("Actions", 1);
                match status {
                    "applied" => bump("Applied", 1),
                    "already_in_state" => bump("AlreadyInState", 1),
                    "dry_run" => bump("DryRun", 1),
                    "failed" => bump("Failed", 1),
                    "skipped" => bump("Skipped", 1),
                    _ => {}
                }
                if kind == "notify" {
                    bump("Notify", 1);
                }
                *by_kind
                    .entry((kind.to_string(), status.to_string()))
                    .or_default() += 1;
            }
            bump(
                "Withheld",
                v["skipped"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["reason"].as_str().is_some_and(|r| r.contains("withheld")))
                    .count(),
            );
        }
    }
    let mut metrics: Vec<Value> = counts
        .keys()
        .map(|k| json!({"Name": k, "Unit": "Count"}))
        .collect();
    metrics.push(json!({"Name": "Duration", "Unit": "Milliseconds"}));
    let mut main = Map::new();
    main.insert(
        "_aws".into(),
        json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
            "Namespace": NAMESPACE,
            "Dimensions": [["Service"], ["Service", "Function"]],
            "Metrics": metrics,
        }]}),
    );
    main.insert("Service".into(), json!("quell"));
    main.insert("Function".into(), json!(function));
    for (k, n) in &counts {
        main.insert((*k).into(), json!(n));
    }
    main.insert("Duration".into(), json!(duration_ms));
    let mut out = vec![Value::Object(main)];
    for ((kind, status), n) in by_kind {
        out.push(json!({
            "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Service", "ActionKind", "Outcome"]],
                "Metrics": [{"Name": "Actions", "Unit": "Count"}],
            }]},
            "Service": "quell", "Function": function, "ActionKind": kind, "Outcome": status,
            "Actions": n,
        }));
    }
    out
}

/// Writes the documents to stdout, one line each, as EMF requires (not through `tracing`,
/// whose JSON wraps each line in its own object).
pub fn emit(docs: &[Value]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for d in docs {
        let _ = writeln!(out, "{d}");
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_becomes_counts_per_function_and_per_kind_and_outcome() {
        let report = json!({
            "findings": [{}],
            "results": [
                {"action": {"kind": "quarantine_user"}, "outcome": {"status": "applied"}},
                {"action": {"kind": "notify"}, "outcome": {"status": "applied"}},
                {"action": {"kind": "deactivate_access_key"}, "outcome": {"status": "failed"}},
            ],
            "skipped": [{"reason": "delete_login_profile withheld by the blast-radius cap"}],
        });
        let docs = documents("guardduty", Ok(&report), 12.5, 1_700_000_000_000);
        let main = &docs[0];
        assert_eq!(main["_aws"]["CloudWatchMetrics"][0]["Namespace"], "quell");
        assert_eq!(main["Function"], "guardduty");
        assert_eq!(main["Applied"], 2.0);
        assert_eq!(main["Failed"], 1.0);
        assert_eq!(main["Notify"], 1.0);
        assert_eq!(main["Withheld"], 1.0);
        assert_eq!(main["Duration"], 12.5);
        // Every metric declared has a value in the document, and only those.
        for m in main["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            assert!(main[m["Name"].as_str().unwrap()].is_number(), "{m}");
        }
        assert_eq!(docs.len(), 4);
        assert!(
            docs.iter()
                .any(|d| d["ActionKind"] == "deactivate_access_key"
                    && d["Outcome"] == "failed"
                    && d["Actions"] == 1)
        );
    }

    #[test]
    fn rejected_and_failed_invocations_are_counted() {
        let docs = documents("runbook", Ok(&json!({"status": "rejected"})), 1.0, 0);
        assert_eq!(docs[0]["Rejected"], 1.0);
        let docs = documents("runbook", Err("boom"), 1.0, 0);
        assert_eq!(docs[0]["Errors"], 1.0);
        assert_eq!(docs.len(), 1);
    }
}
