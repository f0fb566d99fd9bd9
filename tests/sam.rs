//! The SAM template and the member role hold exactly the permissions quell's code can use:
//! no more (least privilege), no less (a new call cannot ship without its permission).

use std::collections::BTreeSet;

use quell_core::policy::{Mode, SessionScope};
use quell_core::{Cloud, Context, Policy, plan_input};
use quell_lambda::Accepts;
use quell_tests::{json_files, root};
use serde_yaml::Value;

fn template(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Every IAM / Security Hub action Allowed by a role resource.
fn role_actions(t: &Value, role: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let policies = t["Resources"][role]["Properties"]["Policies"]
        .as_sequence()
        .unwrap();
    for p in policies {
        for st in p["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            if st["Effect"] != "Allow" {
                continue;
            }
            let actions: Vec<&str> = match &st["Action"] {
                Value::String(s) => vec![s.as_str()],
                Value::Sequence(v) => v.iter().filter_map(|x| x.as_str()).collect(),
                _ => vec![],
            };
            for a in actions {
                if a.starts_with("iam:") || a.starts_with("securityhub:") {
                    out.insert(a.to_string());
                }
            }
        }
    }
    out
}

fn needed(kinds: &[quell_core::ActionKind]) -> BTreeSet<String> {
    kinds
        .iter()
        .flat_map(|k| quell_aws::permissions(*k).iter().map(|p| p.to_string()))
        .collect()
}

#[test]
fn each_function_role_holds_exactly_what_its_code_can_call() {
    let t = template("samplesam.yaml");
    for accepts in Accepts::ALL {
        let f = &t["Resources"][accepts.logical_id()];
        assert_eq!(
            f["Type"],
            "AWS::Serverless::Function",
            "{}",
            accepts.logical_id()
        );
        let role = f["Properties"]["Role"]["Fn::GetAtt"][0].as_str().unwrap();
        let have = role_actions(&t, role);
        let want = needed(accepts.action_kinds());
        assert_eq!(have, want, "{role}: template vs code");
    }
}

fn sweep_permissions() -> BTreeSet<String> {
    quell_aws::SWEEP_PERMISSIONS
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn the_member_role_holds_exactly_the_iam_calls_of_every_action_and_the_sweep() {
    let t = template("infra/aws/member-role.yaml");
    let mut want: BTreeSet<String> = needed(Accepts::Any.action_kinds())
        .into_iter()
        .filter(|a| a.starts_with("iam:"))
        .collect();
    want.extend(sweep_permissions());
    assert_eq!(role_actions(&t, "QuellMemberRole"), want);
}

#[test]
fn the_sweep_functions_hold_exactly_what_the_sweep_calls() {
    let t = template("samplesam.yaml");
    assert_eq!(role_actions(&t, "SweeperRole"), sweep_permissions());
    assert_eq!(
        role_actions(&t, "SweepSchedulerRole"),
        BTreeSet::new(),
        "the scheduler touches no IAM principal"
    );
    let sched = &t["Resources"]["SweepSchedulerFunction"]["Properties"]["Events"]["Schedule"];
    assert_eq!(sched["Type"], "Schedule");
    let rule =
        &t["Resources"]["SweeperFunction"]["Properties"]["Events"]["SweepRequested"]["Properties"];
    assert_eq!(rule["Pattern"]["detail-type"][0], "Sweep Requested");
    assert_eq!(rule["EventBusName"]["Ref"], "AuditBus");
}

/// Policies that switch on every optional action.
fn policies() -> Vec<Policy> {
    let base = Policy {
        mode: Mode::Enforce,
        max_actions: 1000,
        ..Policy::default()
    };
    let mut all_on = base.clone();
    all_on.aws.quarantine_users = true;
    all_on.aws.quarantine_roles = true;
    all_on.aws.delete_login_profile = true;
    all_on.aws.quarantine_unused_roles = true;
    all_on.aws.session_scope = SessionScope::Role;
    let mut everything = all_on.clone();
    for f in [
        &mut everything.families.anomalous_behavior,
        &mut everything.families.posture,
        &mut everything.families.unused_access,
        &mut everything.families.credential_compromise,
    ] {
        f.response = quell_core::policy::Response::Contain;
        f.min_severity = quell_core::SeverityLabel::Informational;
    }
    vec![base, all_on, everything]
}

#[test]
fn declared_action_kinds_cover_every_plan_from_each_functions_events() {
    let cases = [
        (Accepts::Guardduty, "guardduty"),
        (Accepts::Securityhub, "securityhub"),
        (Accepts::AccessAnalyzer, "access-analyzer"),
        (Accepts::Any, "runbook"),
    ];
    for (accepts, dir) in cases {
        let base = root().join("events").join(dir);
        for file in json_files(&base) {
            let bytes = std::fs::read(base.join(&file)).unwrap();
            for policy in policies() {
                let plan = plan_input(&bytes, &policy, &Context::default()).unwrap();
                for a in plan.actions.iter().filter(|a| a.cloud == Cloud::Aws) {
                    assert!(
                        accepts.action_kinds().contains(&a.kind),
                        "{dir}/{file}: {} is not declared for {:?}",
                        a.kind.as_str(),
                        accepts
                    );
                }
            }
        }
    }
}

#[test]
fn rules_route_each_source_to_its_function_with_retries_and_a_dead_letter_queue() {
    let t = template("samplesam.yaml");
    let expect = [
        ("GuardDutyFunction", "aws.guardduty"),
        ("SecurityHubFunction", "aws.securityhub"),
        ("AccessAnalyzerFunction", "aws.access-analyzer"),
    ];
    for (fun, source) in expect {
        let events = t["Resources"][fun]["Properties"]["Events"]
            .as_mapping()
            .unwrap();
        assert!(!events.is_empty(), "{fun} has no rule");
        for (_, ev) in events {
            assert_eq!(ev["Type"], "EventBridgeRule");
            let p = &ev["Properties"];
            assert_eq!(p["Pattern"]["source"][0], source, "{fun}");
            assert!(p["RetryPolicy"]["MaximumRetryAttempts"].as_u64().unwrap() <= 5);
            assert!(p["DeadLetterConfig"]["Arn"].is_mapping());
        }
        assert!(
            t["Resources"][fun]["Properties"]["ReservedConcurrentExecutions"]
                .as_u64()
                .is_some()
        );
    }
    // The custom-action rule listens to quell's own action only.
    let custom = &t["Resources"]["SecurityHubFunction"]["Properties"]["Events"]["QuellCustomAction"]
        ["Properties"]["Pattern"];
    assert!(
        custom["resources"][0]["Fn::Sub"]
            .as_str()
            .unwrap()
            .ends_with("action/custom/QuellContain")
    );
    assert_eq!(t["Parameters"]["Mode"]["Default"], "dry-run");
}
