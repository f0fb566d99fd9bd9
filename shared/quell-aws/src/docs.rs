//! IAM policy documents quell writes. Pure: built from inputs, parsed back to check state.

use serde_json::{Value, json};

/// The AWS managed policy quarantine attaches (`Deny *` on `*`). Attaching a managed policy
/// needs `iam:Attach*Policy`, which the roles may only use on this ARN (`iam:PolicyARN`), where
/// an inline `Put*Policy` would let the holder write any policy.
pub const DENY_ALL_POLICY: &str = "AWSDenyAll";
/// Inline role policy holding quell's per-session revocations, one statement (or two, for an
/// EC2 instance bound to its VPC) per session.
pub const SESSION_REVOKE_POLICY: &str = "QuellRevokeSessions";
/// Inline role policy revoking every session issued before a time (the IAM console's name).
pub const ROLE_REVOKE_POLICY: &str = "AWSRevokeOlderSessions";
/// Inline user policy revoking the user's STS and console sessions issued before a time.
pub const USER_REVOKE_POLICY: &str = "QuellRevokeOlderSessions";
/// The tag quell writes on principals it contains.
pub const QUARANTINE_TAG: &str = "quell:quarantined";

/// The finding id as the `quell:quarantined` tag carries it (IAM tag values allow letters,
/// digits, spaces and `_.:/=+-@`, up to 256 characters): the tag is `<finding> <time>`.
pub fn tag_finding(finding: &str) -> String {
    finding
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(*c))
        .take(200)
        .collect()
}

/// `arn:<partition>:iam::aws:policy/AWSDenyAll`.
pub fn deny_all_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/{DENY_ALL_POLICY}")
}

/// The partition of a region: `aws-us-gov` for `us-gov-*`, `aws-cn` for `cn-*`, else `aws`.
pub fn partition_of_region(region: &str) -> &'static str {
    if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("cn-") {
        "aws-cn"
    } else {
        "aws"
    }
}

/// IAM's aggregate inline-policy quotas, in characters excluding white space
/// (IAM User Guide, "IAM and AWS STS quotas": role 10,240, user 2,048).
pub const ROLE_INLINE_QUOTA: usize = 10_240;
pub const USER_INLINE_QUOTA: usize = 2_048;

/// The size IAM counts for a policy document: its characters, white space excluded.
pub fn policy_size(doc: &str) -> usize {
    let decoded = urlencoding::decode(doc)
        .map(|d| d.into_owned())
        .unwrap_or_else(|_| doc.to_string());
    decoded.chars().filter(|c| !c.is_whitespace()).count()
}

/// Revocation statements older than this are pruned: every token they deny has expired.
/// Role credentials from `AssumeRole*` last at most the role's `MaxSessionDuration` (≤ 12 h),
/// but credentials AWS services issue for a role (EC2 instance profiles) are not bound by it,
/// so the floor is 12 hours.
pub fn prune_after_seconds(max_session_duration: Option<i32>) -> i64 {
    i64::from(max_session_duration.unwrap_or(3600)).max(12 * 3600)
}

/// The statement id of one session's revocation by one finding.
pub fn session_sid(finding: &str, userid: &str) -> String {
    format!(
        "QuellRevoke{:016x}",
        quell_core::model::ids::stable_hash(&[finding, userid])
    )
}

/// A statement id that records which finding a revocation came from.
pub fn revoke_sid(finding: &str) -> String {
    format!(
        "QuellRevoke{:016x}",
        quell_core::model::ids::stable_hash(&[finding])
    )
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

/// The statements denying one role session (`aws:userid` = `AROA…:<session>`) for tokens
/// issued before `cutoff`.
///
/// `bind_to_instance` (EC2 instance credentials) follows AWS's documented pattern for
/// credentials used outside their instance (IAM User Guide, global condition keys
/// `aws:ec2InstanceSourceVPC` and `aws:ec2InstanceSourcePrivateIPv4`): deny unless the
/// instance's VPC equals the request's `aws:SourceVpc` and its private IP the request's
/// `aws:VpcSourceIp`, for EC2 role credentials (`ec2:SourceInstanceARN` present) not used by an
/// AWS service on the caller's behalf. `aws:SourceVpc` and `aws:VpcSourceIp` are present only
/// on calls through a VPC endpoint, so the instance's own calls to public endpoints with these
/// credentials are denied too, until EC2 rotates them. moto cannot evaluate policies; the
/// documents are checked against that pattern in the unit tests.
pub fn session_statements(
    sid: &str,
    userid: &str,
    cutoff: &str,
    bind_to_instance: bool,
) -> Vec<Value> {
    if !bind_to_instance {
        return vec![json!({
            "Sid": sid,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:userid": userid},
                "DateLessThan": {"aws:TokenIssueTime": cutoff}
            }
        })];
    }
    let outside = |suffix: &str, key: &str, variable: &str| {
        json!({
            "Sid": format!("{sid}{suffix}"),
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:userid": userid},
                "DateLessThan": {"aws:TokenIssueTime": cutoff},
                "StringNotEquals": {key: variable},
                "Null": {"ec2:SourceInstanceARN": "false"},
                "BoolIfExists": {"aws:ViaAWSService": "false"}
            }
        })
    };
    vec![
        outside("Vpc", "aws:ec2InstanceSourceVPC", "${aws:SourceVpc}"),
        outside(
            "Ip",
            "aws:ec2InstanceSourcePrivateIPv4",
            "${aws:VpcSourceIp}",
        ),
    ]
}

/// A policy document from statements.
pub fn document(statements: Vec<Value>) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// The statements of a parsed policy document (a single object counts as one).
pub fn statements(doc: &Value) -> Vec<Value> {
    match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        _ => Vec::new(),
    }
}

/// What a revocation statement says: its Sid, the `aws:userid` it names (none: every
/// session) and its `aws:TokenIssueTime` cut-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub sid: String,
    pub userid: Option<String>,
    pub cutoff: String,
}

pub fn revocation_of(st: &Value) -> Option<Revocation> {
    let cond = st.get("Condition")?;
    let cutoff = cond
        .get("DateLessThan")?
        .get("aws:TokenIssueTime")?
        .as_str()?
        .to_string();
    Some(Revocation {
        sid: st
            .get("Sid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        userid: cond
            .get("StringEquals")
            .and_then(|s| s.get("aws:userid"))
            .and_then(Value::as_str)
            .map(str::to_string),
        cutoff,
    })
}

/// Whether an existing revocation with `cutoff` (and statement id `sid`) already denies the
/// stolen credentials. Every token used at `last_seen` was issued before it, so a cut-off at or
/// after the finding's last occurrence covers it; a later occurrence of the same finding (a
/// re-stolen credential) is not covered and moves the cut-off. Without an occurrence time, the
/// same finding's own statement counts as covering.
pub fn covers(cutoff: &str, sid: &str, our_sid: &str, now: &str, last_seen: Option<&str>) -> bool {
    cutoff >= now
        || match last_seen {
            Some(seen) => cutoff >= seen,
            None => sid == our_sid,
        }
}

/// A smithy `Document` (what `GetFindingsV2` returns for each OCSF finding) as JSON.
pub fn document_json(d: &aws_smithy_types::Document) -> Value {
    use aws_smithy_types::{Document, Number};
    match d {
        Document::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), document_json(v)))
                .collect(),
        ),
        Document::Array(a) => Value::Array(a.iter().map(document_json).collect()),
        Document::Number(Number::PosInt(n)) => json!(n),
        Document::Number(Number::NegInt(n)) => json!(n),
        Document::Number(Number::Float(f)) => json!(f),
        Document::String(s) => json!(s),
        Document::Bool(b) => json!(b),
        Document::Null => Value::Null,
    }
}

/// IAM returns policy documents URL-encoded; this decodes and parses one.
pub fn parse(doc: &str) -> Option<Value> {
    let decoded = urlencoding::decode(doc).ok()?;
    serde_json::from_str(&decoded).ok()
}

/// The first revocation of a document quell wrote (the single-statement policies).
pub fn revocation(doc: &Value) -> Option<Revocation> {
    statements(doc).first().and_then(revocation_of)
}

/// Whether every statement of `doc` denies: a document quell may write back from the ledger
/// (a revocation's previous version). Anything that could allow is refused, so an entry written
/// into the ledger by someone else cannot make a release grant access.
pub fn deny_only(doc: &Value) -> bool {
    let st = statements(doc);
    !st.is_empty() && st.iter().all(|s| s["Effect"] == "Deny")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_through_url_encoding() {
        let doc = document(session_statements(
            "QuellRevokeabc",
            "AROAEXAMPLE:alice",
            "2026-11-23T10:00:00Z",
            false,
        ));
        let encoded = urlencoding::encode(&doc).into_owned();
        let parsed = parse(&encoded).unwrap();
        assert_eq!(
            revocation(&parsed),
            Some(Revocation {
                sid: "QuellRevokeabc".into(),
                userid: Some("AROAEXAMPLE:alice".into()),
                cutoff: "2026-11-23T10:00:00Z".into()
            })
        );
        assert_eq!(policy_size(&encoded), policy_size(&doc));
        assert_eq!(policy_size("{ \"a\" : 1 }"), 7);
    }

    /// AWS's documented example for EC2 credentials used outside their instance (IAM User
    /// Guide, aws:ec2InstanceSourceVPC): two Deny statements, each with StringNotEquals on the
    /// instance key against the request's VPC variable, Null ec2:SourceInstanceARN false and
    /// BoolIfExists aws:ViaAWSService false. quell's adds the session and the cut-off.
    #[test]
    fn the_instance_binding_follows_the_documented_pattern() {
        let sts = session_statements(
            "S",
            "AROAEXAMPLE:i-0abc12345678def90",
            "2026-11-23T10:00:00Z",
            true,
        );
        assert_eq!(sts.len(), 2);
        let want = [
            ("aws:ec2InstanceSourceVPC", "${aws:SourceVpc}"),
            ("aws:ec2InstanceSourcePrivateIPv4", "${aws:VpcSourceIp}"),
        ];
        for (st, (key, var)) in sts.iter().zip(want) {
            assert_eq!(st["Effect"], "Deny");
            assert_eq!(st["Action"], "*");
            assert_eq!(st["Resource"], "*");
            let c = st["Condition"].as_object().unwrap();
            assert_eq!(c.len(), 5, "{c:?}");
            assert_eq!(c["StringNotEquals"][key], var);
            assert_eq!(c["Null"]["ec2:SourceInstanceARN"], "false");
            assert_eq!(c["BoolIfExists"]["aws:ViaAWSService"], "false");
            assert_eq!(
                c["StringEquals"]["aws:userid"],
                "AROAEXAMPLE:i-0abc12345678def90"
            );
            assert_eq!(
                c["DateLessThan"]["aws:TokenIssueTime"],
                "2026-11-23T10:00:00Z"
            );
        }
        assert_ne!(sts[0]["Sid"], sts[1]["Sid"]);
    }

    #[test]
    fn coverage_follows_the_last_occurrence() {
        let now = "2026-11-23T12:00:00Z";
        // The same finding re-delivered: covered.
        assert!(covers(
            "2026-11-23T10:00:00Z",
            "A",
            "A",
            now,
            Some("2026-11-23T09:59:00Z")
        ));
        // A later occurrence of the same finding: not covered, the cut-off moves.
        assert!(!covers(
            "2026-11-23T10:00:00Z",
            "A",
            "A",
            now,
            Some("2026-11-23T11:00:00Z")
        ));
        // No occurrence time: the finding's own statement covers it, another's does not.
        assert!(covers("2026-11-23T10:00:00Z", "A", "A", now, None));
        assert!(!covers("2026-11-23T10:00:00Z", "B", "A", now, None));
        // A cut-off at or after now covers anything.
        assert!(covers(now, "B", "A", now, Some(now)));
    }

    #[test]
    fn ids_are_stable_and_valid() {
        let a = session_sid("f1", "AROAEXAMPLE:i-0abc");
        assert_eq!(a, session_sid("f1", "AROAEXAMPLE:i-0abc"));
        assert_ne!(a, session_sid("f1", "AROAEXAMPLE:i-0abd"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(revoke_sid("x").chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(partition_of_region("us-gov-west-1"), "aws-us-gov");
        assert_eq!(
            deny_all_arn("aws-cn"),
            "arn:aws-cn:iam::aws:policy/AWSDenyAll"
        );
        assert_eq!(prune_after_seconds(Some(3600)), 12 * 3600);
    }

    #[test]
    fn only_deny_documents_may_be_written_back() {
        assert!(deny_only(
            &serde_json::from_str::<Value>(&revoke_older_sessions("Sid1", "2026-11-23T12:00:00Z"))
                .unwrap()
        ));
        let allow = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Action": "*", "Resource": "*"},
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]});
        assert!(!deny_only(&allow));
        assert!(!deny_only(
            &json!({"Version": "2012-10-17", "Statement": []})
        ));
        assert!(!deny_only(&json!("not a policy")));
        let single = json!({"Statement": {"Effect": "Allow", "Action": "iam:*", "Resource": "*"}});
        assert!(!deny_only(&single));
    }
}
