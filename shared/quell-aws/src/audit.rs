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
/// EventBridge's entry limit is 256 KiB (detail, detail-type, source and resources together);
/// keep room for the rest.
pub const MAX_DETAIL_BYTES: usize = 240 * 1024;

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

/// Publishes one `source: quell` event, or several when the detail would pass EventBridge's
/// 256 KiB entry limit (see [`split_detail`]): an audit event never fails for its size.
pub async fn publish_detail(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    detail_type: &str,
    detail: &impl Serialize,
    resources: Vec<String>,
) -> Result<(), ExecError> {
    let value =
        serde_json::to_value(detail).map_err(|e| ExecError::new("Serialization", e.to_string()))?;
    // Resources count against the entry size too; a long list is dropped, not the event.
    let resources = if resources.iter().map(String::len).sum::<usize>() > MAX_RESOURCE_BYTES {
        Vec::new()
    } else {
        resources
    };
    for part in split_detail(value, MAX_DETAIL_BYTES)? {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(part)
            .set_resources(Some(resources.clone()))
            .build();
        put(client, vec![entry]).await?;
    }
    Ok(())
}

/// Room left for the resources of an entry.
const MAX_RESOURCE_BYTES: usize = 8 * 1024;

/// Splits a detail into parts of at most `max` bytes. A detail that fits is one part. Else the
/// copies of the findings are dropped (the results name each finding), and if it still does
/// not fit, its largest array (a report's `results`, a sweep's `keys`) is spread over several
/// parts, each carrying every other field and `"part": {"index", "of", "field"}`.
pub fn split_detail(mut value: serde_json::Value, max: usize) -> Result<Vec<String>, ExecError> {
    use serde_json::{Value, json};
    let text = value.to_string();
    if text.len() <= max {
        return Ok(vec![text]);
    }
    if value.get("findings").is_some() {
        value["findings"] = json!("omitted: the report was over the EventBridge entry limit");
        let text = value.to_string();
        if text.len() <= max {
            return Ok(vec![text]);
        }
    }
    let Some(obj) = value.as_object_mut() else {
        return Err(ExecError::new(
            "DetailTooLarge",
            "the detail is not an object",
        ));
    };
    let largest = obj
        .iter()
        .filter_map(|(k, v)| {
            v.as_array()
                .map(|a| (k.clone(), Value::Array(a.clone()).to_string().len()))
        })
        .max_by_key(|(_, n)| *n)
        .map(|(k, _)| k);
    let Some(field) = largest else {
        return Err(ExecError::new(
            "DetailTooLarge",
            "the detail has no array to split",
        ));
    };
    let items = match obj.remove(&field) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let overhead = 96 + field.len();
    let base = Value::Object(obj.clone()).to_string().len() + overhead;
    if base >= max {
        return Err(ExecError::new(
            "DetailTooLarge",
            format!("the detail without {field} is {base} bytes, over the {max}-byte limit"),
        ));
    }
    let mut chunks: Vec<Vec<Value>> = vec![Vec::new()];
    let mut size = base;
    for item in items {
        let n = item.to_string().len() + 1;
        if base + n > max {
            return Err(ExecError::new(
                "DetailTooLarge",
                format!("one element of {field} is {n} bytes, over the {max}-byte limit"),
            ));
        }
        if size + n > max {
            chunks.push(Vec::new());
            size = base;
        }
        size += n;
        if let Some(last) = chunks.last_mut() {
            last.push(item);
        }
    }
    let of = chunks.len();
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut part = obj.clone();
            part.insert(field.clone(), Value::Array(chunk));
            part.insert(
                "part".into(),
                json!({"index": i + 1, "of": of, "field": field}),
            );
            Value::Object(part).to_string()
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_detail_that_fits_is_one_part() {
        let parts = split_detail(json!({"a": [1, 2, 3]}), 1000).unwrap();
        assert_eq!(parts, vec![r#"{"a":[1,2,3]}"#.to_string()]);
    }

    #[test]
    fn a_large_detail_is_spread_over_parts_that_each_fit_and_lose_nothing() {
        let keys: Vec<_> = (0..500)
            .map(|i| json!({"user": format!("user-{i:04}"), "pad": "x".repeat(40)}))
            .collect();
        let detail = json!({"account": "111122223333", "keys": keys, "roles": [1]});
        let parts = split_detail(detail, 4096).unwrap();
        assert!(parts.len() > 5);
        let mut seen = 0;
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 4096, "{}", p.len());
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            assert_eq!(v["account"], "111122223333");
            assert_eq!(v["part"]["index"], i + 1);
            assert_eq!(v["part"]["of"], parts.len());
            assert_eq!(v["part"]["field"], "keys");
            seen += v["keys"].as_array().unwrap().len();
        }
        assert_eq!(seen, 500);
    }

    #[test]
    fn findings_are_dropped_before_anything_is_split() {
        let detail = json!({"findings": ["x".repeat(5000)], "results": [1, 2]});
        let parts = split_detail(detail, 1000).unwrap();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].contains("omitted"));
    }
}
