//! The audit trail on the quell EventBridge bus (`source: quell`): one
//! `Identity Containment Report` per plan run (detail = the report, with each inverse), one
//! `Dormant Credential Sweep Report` per account sweep, and the `Sweep Requested` fan-out.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use quell_core::report::Report;
use serde::Serialize;

use crate::error::{ExecError, classify};

pub const SOURCE: &str = "quell";
pub const DETAIL_TYPE: &str = "Identity Containment Report";
pub const SWEEP_REPORT: &str = "Dormant Credential Sweep Report";
pub const SWEEP_REQUESTED: &str = "Sweep Requested";
/// EventBridge's entry limit is 256 KiB; keep room for the envelope.
const MAX_DETAIL_BYTES: usize = 240 * 1024;

/// Publishes a plan run's `report` to `bus` (name or ARN).
pub async fn publish(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    report: &Report,
) -> Result<(), ExecError> {
    let resources: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.id.starts_with("arn:"))
        .map(|f| f.id.clone())
        .collect();
    publish_detail(client, bus, DETAIL_TYPE, report, resources).await
}

/// Publishes one `source: quell` event. A detail over 240 KiB keeps its outcomes and drops
/// the bulky copies of findings.
pub async fn publish_detail(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    detail_type: &str,
    detail: &impl Serialize,
    resources: Vec<String>,
) -> Result<(), ExecError> {
    let ser = |e: serde_json::Error| ExecError::new("Serialization", e.to_string());
    let mut text = serde_json::to_string(detail).map_err(ser)?;
    if text.len() > MAX_DETAIL_BYTES {
        let mut slim = serde_json::to_value(detail).map_err(ser)?;
        if slim.get("findings").is_some() {
            slim["findings"] = serde_json::json!("omitted: the report was over 240 KiB");
        }
        text = slim.to_string();
    }
    let entry = PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(SOURCE)
        .detail_type(detail_type)
        .detail(text)
        .set_resources(Some(resources))
        .build();
    put(client, vec![entry]).await
}

async fn put(
    client: &aws_sdk_eventbridge::Client,
    entries: Vec<PutEventsRequestEntry>,
) -> Result<(), ExecError> {
    let out = client
        .put_events()
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(classify)?;
    if out.failed_entry_count() > 0 {
        let e = out.entries().iter().find(|e| e.error_code().is_some());
        return Err(ExecError::new(
            e.and_then(|e| e.error_code()).unwrap_or("PutEventsFailed"),
            e.and_then(|e| e.error_message())
                .unwrap_or("EventBridge rejected an event")
                .to_string(),
        ));
    }
    Ok(())
}

/// Emits one `Sweep Requested` event per account (PutEvents takes 10 entries per call).
pub async fn request_sweeps(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    accounts: &[String],
) -> Result<(), ExecError> {
    for chunk in accounts.chunks(10) {
        let entries = chunk
            .iter()
            .map(|a| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(bus)
                    .source(SOURCE)
                    .detail_type(SWEEP_REQUESTED)
                    .detail(serde_json::json!({"account": a}).to_string())
                    .build()
            })
            .collect();
        put(client, entries).await?;
    }
    Ok(())
}

/// The active accounts of the organization (AWS Organizations `ListAccounts`, paginated).
pub async fn organization_accounts(
    client: &aws_sdk_organizations::Client,
) -> Result<Vec<String>, ExecError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_accounts()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(classify)?;
        for a in page.accounts() {
            let active = a.state().map(|s| s.as_str() == "ACTIVE").unwrap_or(true)
                && a.status().map(|s| s.as_str() == "ACTIVE").unwrap_or(true);
            if active && let Some(id) = a.id() {
                out.push(id.to_string());
            }
        }
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}
