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
    role_actions_with(t, role, &["iam:", "securityhub:"])
}

/// A role's inline policies, a conditional one (`Fn::If`) as if its condition held.
fn role_policies<'a>(t: &'a Value, role: &str) -> Vec<&'a Value> {
    t["Resources"][role]["Properties"]["Policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| match p.get("Fn::If") {
            Some(branches) => &branches[1],
            None => p,
        })
        .collect()
}

/// Every action with one of `prefixes` Allowed by a role resource.
fn role_actions_with(t: &Value, role: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in role_policies(t, role) {
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
                if prefixes.iter().any(|p| a.starts_with(p)) {
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
        let want: BTreeSet<String> = accepts
            .iam_permissions()
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(have, want, "{role}: template vs code");
    }
}

fn release_permissions() -> BTreeSet<String> {
    quell_aws::RELEASE_PERMISSIONS
        .iter()
        .map(|p| p.to_string())
        .collect()
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
    want.extend(release_permissions());
    assert_eq!(role_actions(&t, "QuellMemberRole"), want);
}

#[test]
fn the_sweep_functions_hold_exactly_what_the_sweep_calls() {
    let t = template("samplesam.yaml");
    assert_eq!(role_actions(&t, "SweeperRole"), sweep_permissions());
    // It records what it changed in the ledger, and nothing more there.
    let ledger: BTreeSet<String> = quell_aws::ledger::SWEEP_LEDGER_PERMISSIONS
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(role_actions_with(&t, "SweeperRole", &["dynamodb:"]), ledger);
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

/// Why a trust policy lets more than the exact quell roles assume the role: a wildcard or an
/// account root as principal, a name pattern on `aws:PrincipalArn`, or no organization check.
/// A pattern such as `role/quell-*` lets anyone who can create a role of that name in the
/// security account take over every member account.
fn trust_violations(t: &Value, trust: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for st in trust["Statement"].as_sequence().unwrap() {
        if st["Effect"] != "Allow" {
            continue;
        }
        let principal = &st["Principal"]["AWS"];
        let literal: Vec<&str> = match principal {
            Value::String(s) => vec![s.as_str()],
            Value::Sequence(v) => v.iter().filter_map(|x| x.as_str()).collect(),
            Value::Mapping(m) => match m.get("Ref").and_then(|r| r.as_str()) {
                Some(param) => {
                    let pattern = t["Parameters"][param]["AllowedPattern"]
                        .as_str()
                        .unwrap_or("");
                    if pattern.contains('*') || !pattern.contains(":role/quell-") {
                        out.push(format!(
                            "principal parameter {param} admits patterns: {pattern:?}"
                        ));
                    }
                    vec![]
                }
                None => {
                    let sub = m.get("Fn::Sub").and_then(|s| s.as_str()).unwrap_or("*");
                    vec![sub]
                }
            },
            _ => vec!["*"],
        };
        for p in literal {
            if p.contains('*') || p.ends_with(":root") || !p.contains(":role/") {
                out.push(format!("principal {p:?} is not one exact role"));
            }
        }
        let cond = &st["Condition"];
        for op in ["ArnLike", "StringLike"] {
            if let Some(v) = cond[op]["aws:PrincipalArn"]
                .as_str()
                .or_else(|| cond[op]["aws:PrincipalArn"]["Fn::Sub"].as_str())
                && v.contains('*')
            {
                out.push(format!("{op} aws:PrincipalArn {v:?} is a name pattern"));
            }
        }
        if cond["StringEquals"]["aws:PrincipalOrgID"].is_null() {
            out.push("no aws:PrincipalOrgID condition".into());
        }
    }
    out
}

#[test]
fn the_member_role_trusts_exact_roles_inside_the_organization_and_a_pattern_is_rejected() {
    let t = template("infra/aws/member-role.yaml");
    let role = &t["Resources"]["QuellMemberRole"]["Properties"];
    // Without the Entra trust (the second branch): the functions' roles only.
    let trust = &role["AssumeRolePolicyDocument"]["Fn::If"];
    assert_eq!(trust[0], "TrustsQuellManagedIdentity");
    assert_eq!(trust_violations(&t, &trust[2]), Vec::<String>::new());
    // The trust this template used to have: account root plus a role-name pattern.
    let old: Value = serde_yaml::from_str(
        r#"
Statement:
  - Effect: Allow
    Principal: {AWS: {"Fn::Sub": "arn:${AWS::Partition}:iam::${QuellAccountId}:root"}}
    Action: sts:AssumeRole
    Condition:
      ArnLike:
        aws:PrincipalArn: {"Fn::Sub": "arn:${AWS::Partition}:iam::${QuellAccountId}:role/quell-*"}
"#,
    )
    .unwrap();
    let v = trust_violations(&t, &old);
    assert!(v.iter().any(|x| x.contains("name pattern")), "{v:?}");
    assert!(v.iter().any(|x| x.contains("not one exact role")), "{v:?}");
    assert!(v.iter().any(|x| x.contains("PrincipalOrgID")), "{v:?}");
    // Every role that acts in member accounts is in the list the member role trusts.
    let sam = template("samplesam.yaml");
    let listed = &sam["Outputs"]["MemberTrustedRoleArns"]["Value"]["Fn::Join"][1];
    let listed: BTreeSet<&str> = listed
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["Fn::GetAtt"][0].as_str().unwrap())
        .collect();
    for accepts in Accepts::ALL {
        let role = sam["Resources"][accepts.logical_id()]["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap();
        assert!(
            listed.contains(role),
            "{role} is not trusted by the member role"
        );
    }
    assert!(listed.contains("SweeperRole"));
    assert!(!listed.contains("SweepSchedulerRole"));
}

/// Every statement in `t`'s roles that allows attaching a managed policy.
fn attach_statements(t: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, r) in t["Resources"].as_mapping().unwrap() {
        if r["Type"] != "AWS::IAM::Role" {
            continue;
        }
        for p in role_policies(t, name.as_str().unwrap()) {
            for st in p["PolicyDocument"]["Statement"].as_sequence().unwrap() {
                let actions: Vec<&str> = match &st["Action"] {
                    Value::String(s) => vec![s.as_str()],
                    Value::Sequence(v) => v.iter().filter_map(|x| x.as_str()).collect(),
                    _ => vec![],
                };
                if st["Effect"] == "Allow"
                    && actions.iter().any(|a| {
                        a.starts_with("iam:Attach") || a.starts_with("iam:Detach") || *a == "iam:*"
                    })
                {
                    out.push((name.as_str().unwrap().to_string(), st.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn roles_may_attach_only_aws_deny_all() {
    for path in ["samplesam.yaml", "infra/aws/member-role.yaml"] {
        let t = template(path);
        let found = attach_statements(&t);
        assert!(
            !found.is_empty(),
            "{path}: quarantine needs an attach statement"
        );
        for (role, st) in found {
            let cond = st["Condition"].as_mapping().unwrap();
            assert_eq!(cond.len(), 1, "{path} {role}: {st:?}");
            assert_eq!(
                st["Condition"]["ArnEquals"]["iam:PolicyARN"]["Fn::Sub"],
                "arn:${AWS::Partition}:iam::aws:policy/AWSDenyAll",
                "{path} {role}"
            );
            let actions = st["Action"].as_sequence().map(|v| v.len()).unwrap_or(1);
            let attach = quell_aws::ATTACH_ACTIONS.len();
            assert!(actions <= attach, "{path} {role}: only attach actions here");
        }
    }
}

#[test]
fn role_names_fit_iam_limits_in_every_region() {
    let t = template("samplesam.yaml");
    let deployment = t["Parameters"]["DeploymentId"]["AllowedPattern"]
        .as_str()
        .unwrap();
    assert_eq!(deployment, "[a-z0-9]{1,16}");
    let longest_region = "ap-southeast-7x"; // 15: longer than any region name today
    for (name, r) in t["Resources"].as_mapping().unwrap() {
        if r["Type"] != "AWS::IAM::Role" {
            continue;
        }
        let sub = r["Properties"]["RoleName"]["Fn::Sub"].as_str().unwrap();
        let longest = sub
            .replace("${AWS::Region}", longest_region)
            .replace("${DeploymentId}", &"x".repeat(16));
        assert!(
            longest.len() <= 64,
            "{:?}: {longest} is {} characters",
            name,
            longest.len()
        );
        assert!(
            sub.starts_with("quell-"),
            "{name:?}: quell protects its roles by this prefix"
        );
    }
}

#[test]
fn the_dead_letter_queue_takes_eventbridge_messages() {
    let t = template("samplesam.yaml");
    let q = &t["Resources"]["DeadLetterQueue"]["Properties"];
    // alias/aws/sqs would lock EventBridge out: its key policy does not admit the service.
    assert!(q["KmsMasterKeyId"].is_null());
    assert_eq!(q["SqsManagedSseEnabled"], true);
    let policy = &t["Resources"]["DeadLetterQueuePolicy"]["Properties"];
    assert_eq!(policy["Queues"][0]["Ref"], "DeadLetterQueue");
    let st = &policy["PolicyDocument"]["Statement"][0];
    assert_eq!(st["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(st["Action"], "sqs:SendMessage");
    assert!(
        st["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .contains(":events:${AWS::Region}:${AWS::AccountId}:rule/")
    );
}

#[test]
fn the_scp_guards_the_member_role_quell_roles_and_containment() {
    let t = template("infra/aws/scp.yaml");
    let p = &t["Resources"]["QuellGuardRails"]["Properties"];
    assert_eq!(p["Type"], "SERVICE_CONTROL_POLICY");
    let sts = p["Content"]["Statement"].as_sequence().unwrap();
    let by_sid = |sid: &str| {
        sts.iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no {sid}"))
    };
    for st in sts {
        assert_eq!(st["Effect"], "Deny");
    }
    let assume = by_sid("OnlyQuellAssumesTheMemberRole");
    assert_eq!(assume["Action"], "sts:AssumeRole");
    let roles = by_sid("OnlyAdminsChangeQuellRoles");
    assert!(
        roles["Action"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|a| a == "iam:Create*")
    );
    let hold = by_sid("ContainmentStaysUntilReleased");
    assert_eq!(
        hold["Condition"]["Null"]["aws:ResourceTag/quell:quarantined"],
        "false"
    );
    let actions: Vec<&str> = hold["Action"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for a in [
        "iam:DetachUserPolicy",
        "iam:DetachRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:CreateAccessKey",
    ] {
        assert!(actions.contains(&a), "{a}");
    }
    let tags = by_sid("OnlyQuellTagsContainment");
    assert_eq!(
        tags["Condition"]["ForAnyValue:StringEquals"]["aws:TagKeys"],
        quell_aws::docs::QUARANTINE_TAG
    );
    // The rendered policy fits Organizations' 5,120-character SCP limit with long parameters.
    let rendered = serde_json::to_string(&p["Content"]).unwrap();
    let worst = rendered.len() + 4 * 200; // four substitutions of long admin-role lists
    assert!(worst <= 5120, "{worst}");
}

#[test]
fn the_ledger_table_is_durable_and_every_containing_function_holds_exactly_its_calls() {
    let t = template("samplesam.yaml");
    let table = &t["Resources"]["LedgerTable"];
    assert_eq!(table["DeletionPolicy"], "Retain");
    let p = &table["Properties"];
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(p["DeletionProtectionEnabled"], true);
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(p["SSESpecification"]["SSEEnabled"], true);
    assert_eq!(p["TimeToLiveSpecification"]["AttributeName"], "ttl");
    assert_eq!(
        p["GlobalSecondaryIndexes"][0]["IndexName"],
        quell_aws::ledger::BY_FINDING
    );
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["QUELL_LEDGER_TABLE"]["Ref"],
        "LedgerTable"
    );
    let base: BTreeSet<String> = quell_aws::ledger::LEDGER_PERMISSIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(
        !base.contains("dynamodb:Scan"),
        "only the hourly release reads it all"
    );
    let ev = &t["Resources"]["ReleaseExpiredFunction"]["Properties"]["Events"]["ReleaseExpired"];
    assert_eq!(ev["Type"], "Schedule");
    let input: serde_json::Value =
        serde_json::from_str(ev["Properties"]["Input"].as_str().unwrap()).unwrap();
    assert_eq!(input["runbook"], "release_expired");
    assert!(ev["Properties"]["DeadLetterConfig"]["Arn"].is_mapping());
    for accepts in Accepts::ALL {
        let want: BTreeSet<String> = accepts
            .ledger_permissions()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let role = t["Resources"][accepts.logical_id()]["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap();
        let mut have = BTreeSet::new();
        for pol in role_policies(&t, role) {
            for st in pol["PolicyDocument"]["Statement"].as_sequence().unwrap() {
                for a in st["Action"].as_sequence().into_iter().flatten() {
                    if let Some(a) = a.as_str().filter(|a| a.starts_with("dynamodb:")) {
                        have.insert(a.to_string());
                        assert_eq!(st["Resource"][0]["Fn::GetAtt"][0], "LedgerTable", "{role}");
                    }
                }
            }
        }
        assert_eq!(have, want, "{role}");
    }
}

#[test]
fn alerts_reach_an_encrypted_topic_and_the_alarms_watch_what_quell_logs() {
    type Value = serde_json::Value;
    let t: Value = serde_json::to_value(template("samplesam.yaml")).unwrap();
    let r = &t["Resources"];
    // The rule forwards exactly what the functions publish, as the alert's text.
    let rule = &r["AlertsRule"]["Properties"];
    assert_eq!(rule["EventBusName"]["Ref"], "AuditBus");
    assert_eq!(rule["EventPattern"]["source"][0], quell_aws::audit::SOURCE);
    assert_eq!(
        rule["EventPattern"]["detail-type"][0],
        quell_lambda::ALERT_DETAIL_TYPE
    );
    let target = &rule["Targets"][0];
    assert_eq!(target["Arn"]["Ref"], "AlertsTopic");
    assert_eq!(
        target["InputTransformer"]["InputPathsMap"]["text"],
        "$.detail.text"
    );
    assert_eq!(target["InputTransformer"]["InputTemplate"], "\"<text>\"");
    assert!(target["DeadLetterConfig"]["Arn"].is_object());
    // A customer managed key whose policy admits the publishers (the AWS managed SNS key
    // does not), rotated.
    assert_eq!(
        r["AlertsTopic"]["Properties"]["KmsMasterKeyId"]["Ref"],
        "AlertsKey"
    );
    let key = &r["AlertsKey"]["Properties"];
    assert_eq!(key["EnableKeyRotation"], true);
    let services: Vec<&Value> = key["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Principal"]["Service"].as_array())
        .flatten()
        .collect();
    assert!(services.contains(&&Value::from("events.amazonaws.com")));
    assert!(services.contains(&&Value::from("cloudwatch.amazonaws.com")));
    // Only the alerts rule (by ARN) and this account's alarms may publish.
    let stmts = r["AlertsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    for s in stmts {
        assert!(s["Condition"].is_object(), "unconditioned publisher: {s}");
    }
    // Every alarm notifies the topic; the failed-actions alarm reads the EMF metric the
    // functions log (namespace and dimension as quell_lambda::metrics writes them).
    let alarms: Vec<(&String, &Value)> = r
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["Type"] == "AWS::CloudWatch::Alarm")
        .collect();
    assert!(alarms.len() >= 4, "failed actions, DLQ, errors, throttles");
    for (name, a) in &alarms {
        assert_eq!(
            a["Properties"]["AlarmActions"][0]["Ref"], "AlertsTopic",
            "{name}"
        );
    }
    let failed = &r["FailedActionsAlarm"]["Properties"];
    assert_eq!(failed["Namespace"], quell_lambda::metrics::NAMESPACE);
    assert_eq!(failed["MetricName"], "Failed");
    assert_eq!(failed["Dimensions"][0]["Name"], "Service");
    assert_eq!(failed["Dimensions"][0]["Value"], "quell");
    let doc = quell_lambda::metrics::documents("guardduty", Ok(&serde_json::json!({})), 1.0, 0);
    assert!(doc[0]["Failed"].is_number() && doc[0]["Service"] == "quell");
    // The error and throttle alarms cover every function.
    for alarm in ["FunctionErrorsAlarm", "FunctionThrottlesAlarm"] {
        let covered: BTreeSet<String> = r[alarm]["Properties"]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"].as_str())
            .map(str::to_string)
            .collect();
        let functions: BTreeSet<String> = r
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v["Type"] == "AWS::Serverless::Function")
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(covered, functions, "{alarm}");
    }
}

/// SQS actions a role's statements allow on `resource` (a logical id).
fn sqs_actions_on(t: &serde_json::Value, role: &str, resource: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for pol in t["Resources"][role]["Properties"]["Policies"]
        .as_array()
        .unwrap()
    {
        // A conditional policy, as if its condition held.
        let pol = pol.get("Fn::If").map_or(pol, |b| &b[1]);
        for st in pol["PolicyDocument"]["Statement"].as_array().unwrap() {
            if st["Effect"] != "Allow" || st["Resource"]["Fn::GetAtt"][0] != resource {
                continue;
            }
            let actions = match &st["Action"] {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Array(v) => v
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => vec![],
            };
            out.extend(actions.into_iter().filter(|a| a.starts_with("sqs:")));
        }
    }
    out
}

#[test]
fn checks_after_containment_are_scheduled_by_containing_roles_and_run_by_the_verify_function() {
    let t: serde_json::Value = serde_json::to_value(template("samplesam.yaml")).unwrap();
    let r = &t["Resources"];
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["QUELL_VERIFY_QUEUE"]["Ref"],
        "VerifyQueue"
    );
    let q = &r["VerifyQueue"]["Properties"];
    assert_eq!(q["SqsManagedSseEnabled"], true);
    // The event source mapping needs a visibility timeout of at least the function timeout.
    let timeout = t["Globals"]["Function"]["Timeout"].as_u64().unwrap();
    assert!(q["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout);
    assert_eq!(
        q["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0],
        "DeadLetterQueue"
    );
    assert!(q["RedrivePolicy"]["maxReceiveCount"].as_u64().unwrap() > 1);
    // The longest delay the policy accepts is one SQS can carry (DelaySeconds <= 900).
    assert!(Policy::from_toml("[verify]\nafter_seconds = 900\n", "t").is_ok());
    assert!(Policy::from_toml("[verify]\nafter_seconds = 901\n", "t").is_err());
    // The verify function receives the checks one at a time, within its reserved concurrency.
    let f = &r["VerifyFunction"]["Properties"];
    let ev = &f["Events"]["Verify"];
    assert_eq!(ev["Type"], "SQS");
    assert_eq!(ev["Properties"]["Queue"]["Fn::GetAtt"][0], "VerifyQueue");
    assert_eq!(ev["Properties"]["BatchSize"], 1);
    assert!(
        ev["Properties"]["ScalingConfig"]["MaximumConcurrency"]
            .as_u64()
            .unwrap()
            <= f["ReservedConcurrentExecutions"].as_u64().unwrap()
    );
    let send: BTreeSet<String> = quell_aws::verify_queue::SEND_PERMISSIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let receive: BTreeSet<String> = quell_aws::verify_queue::RECEIVE_PERMISSIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut containing = BTreeSet::new();
    for accepts in Accepts::ALL {
        let role = r[accepts.logical_id()]["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap();
        // The containing functions schedule checks; only the verify function receives them.
        let want = match accepts {
            Accepts::VerifyQueue => receive.clone(),
            Accepts::ReleaseExpired => BTreeSet::new(),
            _ => send.clone(),
        };
        if accepts.contains() {
            containing.insert(role.to_string());
        }
        assert_eq!(sqs_actions_on(&t, role, "VerifyQueue"), want, "{role}");
    }
    for (accepts, events) in [
        (Accepts::Any, 0),
        (Accepts::VerifyQueue, 1),
        (Accepts::ReleaseExpired, 1),
    ] {
        let ev = &r[accepts.logical_id()]["Properties"]["Events"];
        assert_eq!(
            ev.as_object().map_or(0, |o| o.len()),
            events,
            "{}: one job each",
            accepts.logical_id()
        );
    }
    for role in ["SweeperRole", "SweepSchedulerRole"] {
        assert!(sqs_actions_on(&t, role, "VerifyQueue").is_empty(), "{role}");
    }
    // A check that is not taken off the queue raises an alarm before it can expire unseen.
    let stalled = r
        .as_object()
        .unwrap()
        .values()
        .find(|v| {
            v["Type"] == "AWS::CloudWatch::Alarm"
                && v["Properties"]["MetricName"] == "ApproximateAgeOfOldestMessage"
                && v["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0] == "VerifyQueue"
        })
        .expect("an alarm on the verify queue's oldest message");
    assert!(
        stalled["Properties"]["Threshold"].as_u64().unwrap()
            < q["MessageRetentionPeriod"].as_u64().unwrap()
    );
    // The dashboard is valid JSON once CloudFormation substitutes its names, and shows the
    // checks waiting on the queue.
    let sub = &r["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"];
    let mut body = sub[0].as_str().unwrap().to_string();
    while let Some(start) = body.find("${") {
        let end = start + body[start..].find('}').unwrap();
        body.replace_range(start..=end, "x");
    }
    let dashboard: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        dashboard["widgets"]
            .to_string()
            .contains("ApproximateAgeOfOldestMessage")
    );
    assert_eq!(sub[1]["Checks"]["Fn::GetAtt"][0], "VerifyQueue");
    // The queue policy refuses every other sender, and plain HTTP.
    let stmts = r["VerifyQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let only = stmts
        .iter()
        .find(|s| s["Effect"] == "Deny" && s["Action"] == "sqs:SendMessage")
        .unwrap();
    let allowed: BTreeSet<String> = only["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["Fn::GetAtt"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(allowed, containing);
    assert!(
        stmts
            .iter()
            .any(|s| s["Effect"] == "Deny"
                && s["Condition"]["Bool"]["aws:SecureTransport"] == "false")
    );
}

#[test]
fn only_the_scheduler_may_put_sweep_requested_on_the_bus() {
    let t = template("samplesam.yaml");
    let p = &t["Resources"]["AuditBusSweepPolicy"]["Properties"];
    assert_eq!(p["EventBusName"]["Ref"], "AuditBus");
    let st = &p["Statement"];
    assert_eq!(st["Effect"], "Deny");
    assert_eq!(st["Principal"], "*");
    assert_eq!(st["Action"], "events:PutEvents");
    assert_eq!(
        st["Condition"]["StringEquals"]["events:detail-type"],
        quell_aws::audit::SWEEP_REQUESTED
    );
    assert_eq!(
        st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]["Fn::GetAtt"][0],
        "SweepSchedulerRole"
    );
    // The sweeper's rule matches exactly what the policy guards.
    let rule = &t["Resources"]["SweeperFunction"]["Properties"]["Events"]["SweepRequested"]["Properties"]
        ["Pattern"];
    assert_eq!(rule["detail-type"][0], quell_aws::audit::SWEEP_REQUESTED);
}

#[test]
fn identity_center_is_reached_only_through_the_member_role_of_its_account() {
    let idc = ["sso:", "identitystore:"];
    let member = template("infra/aws/member-role.yaml");
    let want: BTreeSet<String> = quell_aws::IDENTITY_CENTER_CONTAIN
        .iter()
        .chain(quell_aws::IDENTITY_CENTER_RELEASE)
        .map(|a| a.to_string())
        .collect();
    assert_eq!(role_actions_with(&member, "QuellMemberRole", &idc), want);
    // Only where the stack is given the instance: everywhere else the role holds none of it.
    let conditional = member["Resources"]["QuellMemberRole"]["Properties"]["Policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|p| p.get("Fn::If"))
        .expect("a conditional Identity Center policy");
    assert_eq!(conditional[0], "ContainsIdentityCenterUsers");
    assert_eq!(conditional[2]["Ref"], "AWS::NoValue");
    // quell's own function roles never write a permission set.
    let sam = template("samplesam.yaml");
    for accepts in Accepts::ALL {
        let f = &sam["Resources"][accepts.logical_id()];
        let role = f["Properties"]["Role"]["Fn::GetAtt"][0].as_str().unwrap();
        assert!(role_actions_with(&sam, role, &idc).is_empty(), "{role}");
    }
}

#[test]
fn the_member_roles_entra_trust_pins_the_issuer_the_audience_and_the_managed_identity() {
    let t = template("infra/aws/member-role.yaml");
    let branch = &t["Resources"]["QuellMemberRole"]["Properties"]["AssumeRolePolicyDocument"]["Fn::If"]
        [1]["Fn::Sub"];
    let text = branch[0]
        .as_str()
        .unwrap()
        .replace(
            "${Functions}",
            "arn:aws:iam::111122223333:role/quell-guardduty-x",
        )
        .replace("${OrganizationId}", "o-abcdefghij")
        .replace(
            "${EntraOidcProvider}",
            "arn:aws:iam::222233334444:oidc-provider/sts.windows.net/t/",
        )
        .replace("${EntraTenantId}", "t")
        .replace("${EntraAudience}", "api://quell-aws")
        .replace("${QuellManagedIdentityObjectId}", "mi-object-id");
    assert!(
        !text.contains("${"),
        "every placeholder is a parameter: {text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let st = &doc["Statement"];
    // The functions' statement is the same as without the Entra trust.
    assert_eq!(
        st[0]["Principal"]["AWS"][0],
        "arn:aws:iam::111122223333:role/quell-guardduty-x"
    );
    assert_eq!(
        st[0]["Condition"]["StringEquals"]["aws:PrincipalOrgID"],
        "o-abcdefghij"
    );
    // The managed identity's: exact issuer (the provider), audience and subject.
    assert_eq!(st[1]["Action"], "sts:AssumeRoleWithWebIdentity");
    let eq = &st[1]["Condition"]["StringEquals"];
    assert_eq!(eq["sts.windows.net/t/:aud"], "api://quell-aws");
    assert_eq!(eq["sts.windows.net/t/:sub"], "mi-object-id");
    assert!(st[1]["Condition"].get("StringLike").is_none());
    // quell doctor reads this trust the same way.
    let claims = serde_json::json!({"iss": "https://sts.windows.net/t/", "aud": "api://quell-aws", "sub": "mi-object-id"});
    assert!(
        quell_core::links::check_trust("QuellMemberRole", &doc, &claims)
            .iter()
            .all(|c| c.ok)
    );
    let provider = &t["Resources"]["EntraOidcProvider"];
    assert_eq!(provider["Condition"], "TrustsQuellManagedIdentity");
    assert_eq!(
        provider["Properties"]["Url"]["Fn::Sub"],
        "https://sts.windows.net/${EntraTenantId}/"
    );
}

#[test]
fn only_functions_that_reach_entra_may_mint_a_short_token_for_its_exchange_audience() {
    let t = template("samplesam.yaml");
    for accepts in Accepts::ALL {
        let role = t["Resources"][accepts.logical_id()]["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap();
        let have = role_actions_with(&t, role, &["sts:GetWebIdentityToken"]);
        let want: BTreeSet<String> = if accepts.reaches_entra() {
            quell_aws::keyless::OUTBOUND_PERMISSIONS
                .iter()
                .map(|p| p.to_string())
                .collect()
        } else {
            BTreeSet::new()
        };
        assert_eq!(have, want, "{role}");
        for p in role_policies(&t, role) {
            for st in p["PolicyDocument"]["Statement"].as_sequence().unwrap() {
                if st["Action"] == "sts:GetWebIdentityToken" {
                    let c = &st["Condition"];
                    assert_eq!(
                        c["ForAllValues:StringEquals"]["sts:IdentityTokenAudience"],
                        "api://AzureADTokenExchange"
                    );
                    assert_eq!(
                        c["NumericLessThanEquals"]["sts:DurationSeconds"].as_i64(),
                        Some(quell_aws::keyless::OUTBOUND_TOKEN_SECONDS as i64)
                    );
                    assert_eq!(c["StringEquals"]["sts:SigningAlgorithm"], "RS256");
                }
            }
        }
    }
    for role in ["SweeperRole", "SweepSchedulerRole"] {
        assert!(
            role_actions_with(&t, role, &["sts:GetWebIdentityToken"]).is_empty(),
            "{role}"
        );
    }
}

#[test]
fn the_stackset_deploys_the_member_role_to_the_organization_with_its_parameters_unchanged() {
    let set = template("infra/aws/member-role-stackset.yaml");
    let member = template("infra/aws/member-role.yaml");
    let p = &set["Resources"]["QuellMemberRoleStackSet"]["Properties"];
    assert_eq!(p["PermissionModel"], "SERVICE_MANAGED");
    assert_eq!(p["AutoDeployment"]["Enabled"], true);
    assert_eq!(p["Capabilities"][0], "CAPABILITY_NAMED_IAM");
    // IAM is global: one Region per account.
    assert_eq!(
        p["StackInstancesGroup"][0]["Regions"]
            .as_sequence()
            .unwrap()
            .len(),
        1
    );
    // Every member-role parameter but the Identity Center one (deploy that account's stack by
    // hand: service-managed StackSets skip the management account) is passed through, and
    // validated the same way here.
    let passed: BTreeSet<&str> = p["Parameters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|x| x["ParameterKey"].as_str().unwrap())
        .collect();
    let want: BTreeSet<&str> = member["Parameters"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| *k != "IdentityCenterInstanceArn")
        .collect();
    assert_eq!(passed, want);
    for name in want {
        assert_eq!(
            set["Parameters"][name]["AllowedPattern"], member["Parameters"][name]["AllowedPattern"],
            "{name}"
        );
        assert_eq!(
            set["Parameters"][name]["Default"], member["Parameters"][name]["Default"],
            "{name}"
        );
    }
}
