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
