//! The audit trail: one EventBridge event per plan run, `source: quell`,
//! `detail-type: Identity Containment Report`, detail = the report (with each inverse).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use quell_core::report::Report;

use crate::error::{ExecError, classify};

pub const SOURCE: &str = "quell";
pub const DETAIL_TYPE: &str = "Identity Containment Report";
/// EventBridge's entry limit is 256 KiB; keep room for the envelope.
const MAX_DETAIL_BYTES: usize = 240 * 1024;

/// Publishes `report` to `bus` (name or ARN).
pub async fn publish(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    report: &Report,
) -> Result<(), ExecError> {
    let mut detail = serde_json::to_string(report)
        .map_err(|e| ExecError::new("Serialization", e.to_string()))?;
    if detail.len() > MAX_DETAIL_BYTES {
        // Keep every outcome; drop the bulky finding copies.
        let mut slim = serde_json::to_value(report)
            .map_err(|e| ExecError::new("Serialization", e.to_string()))?;
        slim["findings"] = serde_json::json!("omitted: the report was over 240 KiB");
        detail = slim.to_string();
    }
    let resources: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.id.starts_with("arn:"))
        .map(|f| f.id.clone())
        .collect();
    let entry = PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(SOURCE)
        .detail_type(DETAIL_TYPE)
        .detail(detail)
        .set_resources(Some(resources))
        .build();
    let out = client
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(classify)?;
    if out.failed_entry_count() > 0 {
        let e = out.entries().first();
        return Err(ExecError::new(
            e.and_then(|e| e.error_code()).unwrap_or("PutEventsFailed"),
            e.and_then(|e| e.error_message())
                .unwrap_or("EventBridge rejected the audit event")
                .to_string(),
        ));
    }
    Ok(())
}
