//! IAM policy documents quell writes. Pure: built from inputs, parsed back to check state.

use serde_json::{Value, json};

/// Inline policy that denies everything (user or role quarantine).
pub const QUARANTINE_POLICY: &str = "QuellQuarantine";
/// Inline role policy revoking every session issued before a time (the IAM console's name).
pub const ROLE_REVOKE_POLICY: &str = "AWSRevokeOlderSessions";
/// Inline user policy revoking the user's STS and console sessions issued before a time.
pub const USER_REVOKE_POLICY: &str = "QuellRevokeOlderSessions";
/// The tag quell writes on principals it contains.
pub const QUARANTINE_TAG: &str = "quell:quarantined";

/// Inline role policy name revoking one session (`aws:userid` = `AROA…:<session>`).
pub fn session_revoke_policy_name(userid: &str) -> String {
    format!(
        "QuellRevokeSession-{:016x}",
        quell_core::model::ids::stable_hash(&[userid])
    )
}

/// A statement id that records which finding a revocation came from.
pub fn revoke_sid(finding: &str) -> String {
    format!(
        "QuellRevoke{:016x}",
        quell_core::model::ids::stable_hash(&[finding])
    )
}

pub fn quarantine() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "QuellQuarantineDenyAll",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*"
        }]
    })
    .to_string()
}

/// Deny everything for tokens issued before `cutoff` (RFC 3339, second precision, `Z`).
/// Requests signed with long-term keys carry no `aws:TokenIssueTime` and are not affected.
pub fn revoke_older_sessions(sid: &str, cutoff: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": sid,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}}
        }]
    })
    .to_string()
}

/// Deny one role session (`AROA…:<session>`) for tokens issued before `cutoff`: the workload
/// gets fresh credentials, the stolen ones stop working.
pub fn revoke_one_session(sid: &str, userid: &str, cutoff: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": sid,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:userid": userid},
                "DateLessThan": {"aws:TokenIssueTime": cutoff}
            }
        }]
    })
    .to_string()
}

/// IAM returns policy documents URL-encoded; this decodes and parses one.
pub fn parse(doc: &str) -> Option<Value> {
    let decoded = urlencoding::decode(doc).ok()?;
    serde_json::from_str(&decoded).ok()
}

/// The `Sid` and `aws:TokenIssueTime` cut-off of a revocation document quell wrote.
pub fn revocation(doc: &Value) -> Option<(String, String)> {
    let st = doc.get("Statement")?;
    let st = if let Some(a) = st.as_array() {
        a.first()?
    } else {
        st
    };
    let sid = st
        .get("Sid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let cutoff = st
        .get("Condition")?
        .get("DateLessThan")?
        .get("aws:TokenIssueTime")?
        .as_str()?
        .to_string();
    Some((sid, cutoff))
}

/// True when `doc` denies every action on every resource with no condition.
pub fn is_deny_all(doc: &Value) -> bool {
    let Some(st) = doc.get("Statement") else {
        return false;
    };
    let stmts: Vec<&Value> = match st.as_array() {
        Some(a) => a.iter().collect(),
        None => vec![st],
    };
    stmts.iter().any(|s| {
        let one = |v: Option<&Value>| match v {
            Some(Value::String(x)) => x == "*",
            Some(Value::Array(a)) => a.iter().any(|x| x == "*"),
            _ => false,
        };
        s.get("Effect").and_then(Value::as_str) == Some("Deny")
            && one(s.get("Action"))
            && one(s.get("Resource"))
            && s.get("Condition").is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_through_url_encoding() {
        let doc = revoke_one_session(
            "QuellRevokeabc",
            "AROAEXAMPLE:i-0abc",
            "2026-11-23T10:00:00Z",
        );
        let encoded = urlencoding::encode(&doc).into_owned();
        let parsed = parse(&encoded).unwrap();
        assert_eq!(
            revocation(&parsed),
            Some(("QuellRevokeabc".into(), "2026-11-23T10:00:00Z".into()))
        );
        assert_eq!(
            parsed["Statement"][0]["Condition"]["StringEquals"]["aws:userid"],
            "AROAEXAMPLE:i-0abc"
        );
        assert!(is_deny_all(&parse(&quarantine()).unwrap()));
        assert!(!is_deny_all(&parsed));
    }

    #[test]
    fn names_are_stable_and_valid() {
        let a = session_revoke_policy_name("AROAEXAMPLE:i-0abc");
        assert_eq!(a, session_revoke_policy_name("AROAEXAMPLE:i-0abc"));
        assert_ne!(a, session_revoke_policy_name("AROAEXAMPLE:i-0abd"));
        assert!(a.len() <= 128 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert!(revoke_sid("x").chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
