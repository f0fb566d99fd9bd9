//! The Azure Functions host invocation envelope: `{"Data": {<binding>: …}, "Metadata": {…}}`.
//!
//! The host JSON-encodes arrays and strings, so an Event Hub batch with `cardinality: many`
//! arrives as a string holding an array of strings, each the raw message body. Every level
//! accepts either the value or its string encoding.

use serde_json::Value;

use super::{Batch, normalize_at};
use crate::error::InputError;
use crate::json::Obj;

pub(super) fn invocation(o: &Obj<'_>, layers: usize) -> Result<Batch, InputError> {
    let data = o.obj_req("Data")?;
    if data.is_empty() {
        return Err(InputError::EmptyBatch {
            pointer: data.here().to_string(),
        });
    }
    let mut out = Batch::default();
    // Bindings in document order; output bindings are never in `Data`.
    for key in data.keys() {
        let Some(value) = data.get(key) else { continue };
        let at = data.pointer(key);
        if let Some(b) = special_binding(value, &at)? {
            out.extend(b);
            continue;
        }
        out.extend(normalize_at(value, at, layers)?);
    }
    Ok(out)
}

/// HTTP requests (`{"Method","Body",…}`) and timer ticks are bindings, not events.
fn special_binding(value: &Value, at: &str) -> Result<Option<Batch>, InputError> {
    let Value::Object(map) = value else {
        return Ok(None);
    };
    if map.contains_key("Method") && (map.contains_key("Url") || map.contains_key("Body")) {
        let req = Obj::view(value, at.to_string())?;
        let body_at = req.pointer("Body");
        return match req.get("Body") {
            None | Some(Value::Null) => Err(InputError::Missing {
                pointer: body_at,
                expected: "a request body holding one event",
            }),
            Some(Value::String(s)) if s.trim().is_empty() => Err(InputError::Missing {
                pointer: body_at,
                expected: "a request body holding one event",
            }),
            Some(body) => normalize_at(body, body_at, 0).map(Some),
        };
    }
    if map.contains_key("IsPastDue") || map.contains_key("ScheduleStatus") {
        return Ok(Some(Batch::ignore(
            at,
            "timer tick: posture sweeps run from the timer function, not the event planner",
        )));
    }
    Ok(None)
}

/// The messages of a host invocation, each normalized on its own, so that one malformed Event
/// Hub message is reported without blocking the others in its batch, and each is held to the
/// limits of one event (4 MiB, 1 MiB per string) however large the batch. Input that is not a
/// host invocation is one message. Parse the envelope itself with
/// [`crate::json::Limits::ENVELOPE`].
pub fn messages(value: &Value) -> Vec<(String, Result<Batch, InputError>)> {
    let Value::Object(map) = value else {
        return vec![("/".into(), super::normalize_value(value))];
    };
    let Some(Value::Object(data)) = map.get("Data") else {
        return vec![("/".into(), super::normalize_value(value))];
    };
    if data.is_empty() {
        return vec![(
            "/Data".into(),
            Err(InputError::EmptyBatch {
                pointer: "/Data".into(),
            }),
        )];
    }
    let mut out = Vec::new();
    for (key, v) in data {
        let at = format!("/Data/{}", key.replace('~', "~0").replace('/', "~1"));
        match special_binding(v, &at) {
            Ok(Some(b)) => {
                out.push((at, Ok(b)));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                out.push((at, Err(e)));
                continue;
            }
        }
        // A batch: a JSON string holding an array (cardinality many), or the array itself.
        // The batch string is as large as the envelope; each message in it is then held to
        // the limits of one event.
        let decoded = match v {
            Value::String(s) => {
                crate::json::parse_with(s.as_bytes(), crate::json::Limits::ENVELOPE).ok()
            }
            _ => None,
        };
        match decoded.as_ref().unwrap_or(v) {
            Value::Array(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    let result = match item {
                        // A string is parsed under the limits of one event.
                        Value::String(_) => normalize_at(item, p.clone(), 1),
                        _ => within_event_limits(item)
                            .and_then(|()| normalize_at(item, p.clone(), 1)),
                    };
                    out.push((p, result));
                }
            }
            _ => out.push((at.clone(), normalize_at(v, at, 0))),
        }
    }
    out
}

/// A message given as a value rather than a string still gets one event's size limit.
fn within_event_limits(item: &Value) -> Result<(), InputError> {
    let bytes = item.to_string().len();
    if bytes > crate::json::MAX_INPUT_BYTES {
        return Err(InputError::TooLarge {
            bytes,
            limit: crate::json::MAX_INPUT_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn one_bad_message_does_not_block_the_batch() {
        let good =
            json!({"runbook":"revoke_sessions","principal":"alice@contoso.com","reason":"r"})
                .to_string();
        let batch = json!([good, "{not json", good]).to_string();
        let msgs = super::messages(&json!({"Data": {"events": batch}, "Metadata": {}}));
        assert_eq!(msgs.len(), 3);
        assert!(msgs[0].1.is_ok() && msgs[2].1.is_ok());
        let err = msgs[1].1.as_ref().unwrap_err().to_string();
        assert!(err.starts_with("/Data/events/1:"), "{err}");
    }

    #[test]
    fn non_host_input_is_one_message() {
        let msgs = super::messages(&json!({"hello": 1}));
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].1.is_err());
    }
}
