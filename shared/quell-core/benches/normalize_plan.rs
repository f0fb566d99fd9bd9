//! Normalize + plan, per event, for each source. `cargo bench -p quell-core`.

use criterion::{Criterion, criterion_group, criterion_main};
use quell_core::{Context, Policy, plan_input};

const CASES: &[(&str, &str)] = &[
    (
        "guardduty",
        "guardduty/instance-credential-exfiltration-outside.json",
    ),
    (
        "guardduty_attack_sequence",
        "guardduty/attack-sequence-compromised-credentials.json",
    ),
    (
        "securityhub_imported",
        "securityhub/imported-guardduty-access-key.json",
    ),
    (
        "securityhub_custom_action_2",
        "securityhub/custom-action-batch-two-findings.json",
    ),
    ("access_analyzer", "access-analyzer/unused-access-key.json"),
    (
        "defender_xdr_records",
        "defender/xdr-mdi-pass-the-ticket.json",
    ),
    (
        "graph_alert",
        "defender/graph-alert-mdi-compromised-user.json",
    ),
    (
        "entra_risk_detection",
        "entra/risk-detection-leaked-credentials.json",
    ),
    (
        "entra_diagnostic_records",
        "entra/diagnostic-records-mixed.json",
    ),
    ("runbook", "runbook/quarantine-iam-user.json"),
    (
        "functions_host_eventhub_batch",
        "functions-host/eventhub-batch-triple-encoded.json",
    ),
];

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
    let policy = Policy::default();
    let ctx = Context::default();
    let mut group = c.benchmark_group("normalize_plan");
    for (name, file) in CASES {
        let bytes = std::fs::read(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            plan_input(&bytes, &policy, &ctx).is_ok(),
            "{file} must plan"
        );
        group.bench_function(*name, |b| {
            b.iter(|| plan_input(std::hint::black_box(&bytes), &policy, &ctx))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
