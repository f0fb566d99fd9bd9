//! The automatic check after containment: a delayed SQS message per contained principal
//! (`DelaySeconds`, at most 900), which the runbook function receives as a `verify` runbook
//! request once IAM has propagated. Only quell's roles can send to the queue (IAM and the
//! queue policy), and a verify can only contain more, never release.

use serde_json::json;

use crate::error::{ExecError, classify};

/// The calls a function that schedules checks makes.
pub const SEND_PERMISSIONS: &[&str] = &["sqs:SendMessage"];
/// The calls the runbook function's SQS event source mapping makes for it.
pub const RECEIVE_PERMISSIONS: &[&str] = &[
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
];

/// The runbook request a scheduled check carries; `not_before` (RFC 3339) when the check is
/// due later than the queue can hold it.
pub fn request(principal: &str, not_before: Option<&str>) -> serde_json::Value {
    let mut r = json!({
        "runbook": "verify",
        "principal": principal,
        "reason": "automatic check after IAM propagation",
        "requested_by": "quell",
    });
    if let Some(t) = not_before {
        r["not_before"] = json!(t);
    }
    r
}

/// Schedules one check per principal, `delay_seconds` from now: SQS holds a message 900
/// seconds at most, so a later check carries `not_before` and waits again when it arrives.
pub async fn schedule(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    principals: &[String],
    delay_seconds: u32,
    not_before: Option<&str>,
) -> Result<(), ExecError> {
    for p in principals {
        client
            .send_message()
            .queue_url(queue_url)
            .delay_seconds(i32::try_from(delay_seconds.min(900)).unwrap_or(900))
            .message_body(request(p, not_before).to_string())
            .send()
            .await
            .map_err(classify)?;
    }
    Ok(())
}
