//! Hostile and broken input is rejected with a clear error and never acted on, never a panic.

use proptest::prelude::*;
use quell_core::{Context, InputError, Policy, normalize, plan_input};
use quell_tests::{event, json_files, root};
use serde_json::{Value, json};

fn reject(input: &[u8]) -> String {
    match normalize(input) {
        Ok(b) => panic!("accepted bad input: {b:?}"),
        Err(e) => e.to_string(),
    }
}

fn reject_value(v: Value) -> String {
    reject(v.to_string().as_bytes())
}

fn gd_event() -> Value {
    serde_json::from_slice(&event("guardduty/iamuser-tor-caller-akia.json")).unwrap()
}

#[test]
fn truncated_json_names_the_position() {
    let full = event("guardduty/iamuser-tor-caller-akia.json");
    let e = reject(&full[..full.len() / 2]);
    assert!(
        e.starts_with("input is not valid JSON") && e.contains("line"),
        "{e}"
    );
}

#[test]
fn wrong_types_name_the_pointer_and_the_expected_type() {
    let mut v = gd_event();
    v["detail"]["resource"]["accessKeyDetails"]["userName"] = json!(42);
    let e = reject_value(v);
    assert_eq!(
        e,
        "/detail/resource/accessKeyDetails/userName: expected a string, found a number"
    );
    let mut v = gd_event();
    v["detail"]["severity"] = json!("very high");
    assert!(reject_value(v).starts_with("/detail/severity: expected a number"));
    let mut v = gd_event();
    v["detail"] = json!([1, 2]);
    assert_eq!(
        reject_value(v),
        "/detail: expected an object, found an array"
    );
}

#[test]
fn null_or_missing_identity_fields_are_rejected_not_guessed() {
    let mut v = gd_event();
    v["detail"]["resource"]["accessKeyDetails"]["userName"] = Value::Null;
    assert!(reject_value(v).contains("/detail/resource/accessKeyDetails/userName: missing"));
    let mut v = gd_event();
    v["detail"]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("accessKeyDetails");
    assert!(reject_value(v).contains("/detail/resource/accessKeyDetails: missing"));
    let mut v = gd_event();
    v["detail"]["accountId"] = json!("1234");
    assert!(reject_value(v).contains("is not a 12-digit AWS account id"));
    let mut v = gd_event();
    v["detail"]["resource"]["accessKeyDetails"]["userName"] = json!("alice/../admin");
    assert!(reject_value(v).contains("is not an IAM name"));
}

#[test]
fn deep_nesting_is_rejected_without_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(reject(deep.as_bytes()).contains("nesting deeper than 64 levels"));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    assert!(reject(deep_obj.as_bytes()).contains("nesting deeper than 64 levels"));
}

#[test]
fn huge_inputs_and_strings_are_rejected() {
    let ten_mb = format!("{{\"runbook\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    assert!(matches!(
        normalize(ten_mb.as_bytes()),
        Err(InputError::TooLarge { .. })
    ));
    let two_mb_string = format!("{{\"runbook\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    assert!(reject(two_mb_string.as_bytes()).contains("over the 1048576-byte limit"));
}

#[test]
fn duplicate_keys_are_rejected() {
    let text = r#"{"runbook":"disable_key","principal":"AKIAZ4XQ7PLMGIST0001","account":"111122223333","principal":"AKIAZ4XQ7PLMOTHER001","reason":"x"}"#;
    assert!(reject(text.as_bytes()).contains("duplicate key \"principal\""));
}

#[test]
fn spoofed_sources_are_rejected() {
    let mut v = gd_event();
    v["source"] = json!("custom.attacker");
    assert!(reject_value(v).contains("only aws.guardduty sends"));
    let mut v = gd_event();
    v["detail"]["service"]["serviceName"] = json!("not-guardduty");
    assert!(reject_value(v).contains("serviceName"));
    let mut sh: Value =
        serde_json::from_slice(&event("securityhub/imported-iam8-unused-credentials.json"))
            .unwrap();
    sh["source"] = json!("aws.guardduty");
    // aws.guardduty does not send Security Hub detail-types: not acted on.
    let batch = normalize(sh.to_string().as_bytes()).unwrap();
    assert!(batch.findings.is_empty() && batch.ignored.len() == 1);
    let mut sh2: Value =
        serde_json::from_slice(&event("securityhub/imported-iam8-unused-credentials.json"))
            .unwrap();
    sh2["source"] = json!("my.app");
    assert!(reject_value(sh2).contains("only aws.securityhub sends"));
}

#[test]
fn empty_envelopes_are_rejected() {
    assert!(reject_value(json!([])).contains("the batch holds no events"));
    assert!(
        reject_value(json!({"Data": {}, "Metadata": {}})).contains("the batch holds no events")
    );
    assert!(
        reject_value(json!({"Data": {"events": "[]"}, "Metadata": {}}))
            .contains("/Data/events: the batch holds no events")
    );
}

/// A feed that sends an empty page must not page a human: an empty plan, exit 0.
#[test]
fn empty_pages_are_empty_plans() {
    let mut sh: Value =
        serde_json::from_slice(&event("securityhub/imported-iam8-unused-credentials.json"))
            .unwrap();
    sh["detail"]["findings"] = json!([]);
    let mut v2: Value =
        serde_json::from_slice(&event("securityhub/v2-compliance-iam8-user.json")).unwrap();
    v2["detail"]["findings"] = json!([]);
    for page in [json!({"records": []}), json!({"value": []}), sh, v2] {
        let batch = normalize(page.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{page}: rejected: {e}"));
        assert!(batch.findings.is_empty(), "{page}");
        assert_eq!(batch.ignored.len(), 1, "{page}");
        assert!(batch.ignored[0].reason.contains("empty page"), "{page}");
        let plan = plan_input(
            page.to_string().as_bytes(),
            &Policy::default(),
            &Context::default(),
        )
        .unwrap();
        assert!(plan.actions.is_empty());
    }
}

#[test]
fn unknown_shapes_say_what_was_expected() {
    let e = reject_value(json!({"hello": "world"}));
    assert!(
        e.contains("expected one of") && e.contains("runbook request"),
        "{e}"
    );
    assert!(reject(b"42").contains("expected an event object"));
    assert!(reject(b"").contains("not valid JSON"));
}

#[test]
fn bad_runbook_requests_are_rejected() {
    let e = reject_value(json!({"runbook": "nuke", "principal": "x", "reason": "y"}));
    assert!(
        e.contains("/runbook: \"nuke\" is not one of contain"),
        "{e}"
    );
    let e = reject_value(
        json!({"runbook": "quarantine", "principal": "arn:aws:iam::111122223333:user/alice"}),
    );
    assert!(e.contains("/reason: missing"), "{e}");
    let e = reject_value(
        json!({"runbook": "disable_key", "principal": "AKIAZ4XQ7PLMGIST0001", "reason": "r"}),
    );
    assert!(e.contains("/account: missing"), "{e}");
    let e = reject_value(json!({"runbook": "quarantine", "principal": "root", "reason": "r"}));
    assert!(e.contains("/principal"), "{e}");
}

/// Every event and corpus file, as seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = json_files(&root().join("events"))
        .iter()
        .map(|f| event(f))
        .collect();
    // The public corpus too, where QUELL_CORPUS names it (.ci/run does).
    let corpus = std::env::var_os("QUELL_CORPUS")
        .filter(|d| !d.is_empty())
        .map(|d| root().join(std::path::PathBuf::from(d)))
        .unwrap_or_default();
    for f in json_files(&corpus) {
        out.push(std::fs::read(corpus.join(f)).unwrap());
    }
    out
}

/// Replaces the value at a pseudo-random position in `v` with `replacement`.
fn mutate(v: &mut Value, mut pick: usize, replacement: &Value) -> bool {
    match v {
        Value::Object(map) => {
            let n = map.len();
            if n == 0 {
                return false;
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[pick % n];
            pick /= n.max(1);
            let child = map.get_mut(key).unwrap();
            if pick.is_multiple_of(3) || !mutate(child, pick, replacement) {
                *child = replacement.clone();
            }
            true
        }
        Value::Array(items) => {
            let n = items.len();
            if n == 0 {
                return false;
            }
            let child = &mut items[pick % n];
            pick /= n.max(1);
            if pick.is_multiple_of(3) || !mutate(child, pick, replacement) {
                *child = replacement.clone();
            }
            true
        }
        _ => false,
    }
}

fn no_panic(bytes: &[u8]) {
    // Either a plan or a clear error; both must render.
    match plan_input(bytes, &Policy::default(), &Context::default()) {
        Ok(plan) => {
            let _ = quell_core::render::plan_text(&plan);
            let _ = serde_json::to_string(&plan).unwrap();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        no_panic(&bytes);
    }

    #[test]
    fn byte_mutations_of_real_events_never_panic(seed in any::<usize>(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<bool>()) {
        let seeds = seeds();
        let mut bytes = seeds[seed % seeds.len()].clone();
        let i = pos % bytes.len().max(1);
        if cut { bytes.truncate(i); } else if !bytes.is_empty() { bytes[i] = byte; }
        no_panic(&bytes);
    }

    #[test]
    fn structural_mutations_of_real_events_never_panic(
        seed in any::<usize>(),
        pick in any::<usize>(),
        replacement in prop_oneof![
            Just(Value::Null), Just(json!(true)), Just(json!(-1)), Just(json!(1e308)), Just(json!("")),
            Just(json!("AKIA0000000000000000")), Just(json!("ASIA0000000000000000")), Just(json!([])),
            Just(json!({})), Just(json!([null])), Just(json!({"records": []})),
            Just(json!("{\"records\":[{\"category\":\"AdvancedHunting-AlertInfo\"}]}")),
            ".{0,40}".prop_map(Value::String),
        ],
    ) {
        let seeds = seeds();
        let mut v: Value = match serde_json::from_slice(&seeds[seed % seeds.len()]) { Ok(v) => v, Err(_) => return Ok(()) };
        mutate(&mut v, pick, &replacement);
        no_panic(v.to_string().as_bytes());
    }
}
