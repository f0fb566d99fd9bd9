//! Strict, bounded JSON parsing and typed navigation with JSON-pointer errors.
//!
//! Every input quell acts on passes through [`parse`]: the size is checked before a byte is
//! parsed, nesting depth and string length are bounded while parsing, and duplicate keys are
//! rejected (two `"accessKeyId"` values in one object is either a bug or an attempt to make two
//! parsers disagree about which key to disable).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::InputError;

/// Largest input accepted, in bytes. EventBridge caps entries at 256 KiB and Event Hub
/// messages at 1 MiB; a Functions-host batch wraps many messages, so 4 MiB leaves room.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting accepted. Real events nest about 10 levels deep.
pub const MAX_DEPTH: usize = 64;
/// Longest string accepted, in bytes. Names and ids are far shorter, but the Functions host
/// delivers a whole Event Hub batch as one JSON-encoded string.
pub const MAX_STRING_BYTES: usize = 1024 * 1024;

/// Size limits for one parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub input_bytes: usize,
    pub string_bytes: usize,
}

impl Limits {
    /// One event: 4 MiB, 1 MiB per string.
    pub const EVENT: Limits = Limits {
        input_bytes: MAX_INPUT_BYTES,
        string_bytes: MAX_STRING_BYTES,
    };
    /// A Functions-host envelope: the host posts a whole Event Hub batch as one JSON string in
    /// `Data`, so the envelope and that string may hold many events. Each event inside is
    /// parsed again under [`Limits::EVENT`].
    pub const ENVELOPE: Limits = Limits {
        input_bytes: MAX_ENVELOPE_BYTES,
        string_bytes: MAX_ENVELOPE_BYTES,
    };
}

/// Largest Functions-host envelope accepted: host.json's `maxEventBatchSize` (16) messages of
/// at most 1 MiB each (Event Hubs Standard), each escaped up to three times over by the host's
/// nested string encoding, with room to spare.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024 * 1024;

/// Parses `input` as JSON under quell's limits for one event.
pub fn parse(input: &[u8]) -> Result<Value, InputError> {
    parse_with(input, Limits::EVENT)
}

/// Parses `input` as JSON under `limits` (depth and duplicate keys are always checked).
pub fn parse_with(input: &[u8], limits: Limits) -> Result<Value, InputError> {
    if input.len() > limits.input_bytes {
        return Err(InputError::TooLarge {
            bytes: input.len(),
            limit: limits.input_bytes,
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| InputError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictSeed {
        depth: 0,
        max_string: limits.string_bytes,
    }
    .deserialize(&mut de)
    .map_err(syntax_error)?;
    de.end().map_err(syntax_error)?;
    Ok(value)
}

fn syntax_error(e: serde_json::Error) -> InputError {
    let msg = e.to_string();
    // serde_json appends " at line L column C"; keep our own copy of the position.
    let detail = match msg.find(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(&msg).to_string(),
        None => msg,
    };
    InputError::Syntax {
        line: e.line(),
        column: e.column(),
        detail,
    }
}

#[derive(Clone, Copy)]
struct StrictSeed {
    depth: usize,
    max_string: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn check_str<E: de::Error>(s: &str, max: usize) -> Result<(), E> {
    if s.len() > max {
        Err(E::custom(format_args!(
            "string of {} bytes is over the {max}-byte limit",
            s.len()
        )))
    } else {
        Ok(())
    }
}

impl StrictSeed {
    fn nested<E: de::Error>(self) -> Result<StrictSeed, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(format_args!(
                "nesting deeper than {MAX_DEPTH} levels"
            )))
        } else {
            Ok(StrictSeed {
                depth: self.depth + 1,
                max_string: self.max_string,
            })
        }
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        check_str(v, self.max_string)?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        check_str(&v, self.max_string)?;
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            check_str(&key, self.max_string)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Escapes one reference token of a JSON pointer (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A JSON object together with its JSON pointer, for typed reads with precise errors.
#[derive(Clone)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

/// Views `v` as the root object of a document.
pub fn root(v: &Value) -> Result<Obj<'_>, InputError> {
    Obj::view(v, String::new())
}

/// Describes a JSON value's type for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    /// Views `v` as an object located at pointer `at`.
    pub fn view(v: &'a Value, at: String) -> Result<Obj<'a>, InputError> {
        match v {
            Value::Object(map) => Ok(Obj { map, at }),
            other => Err(InputError::wrong_type(
                if at.is_empty() { "/" } else { &at },
                "an object",
                other,
            )),
        }
    }
    /// This object's JSON pointer (`/` for the root).
    pub fn here(&self) -> &str {
        if self.at.is_empty() { "/" } else { &self.at }
    }
    pub fn pointer(&self, key: &str) -> String {
        format!("{}/{}", self.at, escape(key))
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// The keys, in document order.
    pub fn keys(&self) -> impl Iterator<Item = &'a String> + 'a {
        self.map.keys()
    }
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
    /// The raw value; `None` when absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }
    /// A string field; `None` when absent or null; an error for any other type.
    pub fn str_opt(&self, key: &str) -> Result<Option<&'a str>, InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(InputError::wrong_type(
                &self.pointer(key),
                "a string",
                other,
            )),
        }
    }
    /// A string field that must be present and non-empty.
    pub fn str_req(&self, key: &str) -> Result<&'a str, InputError> {
        match self.str_opt(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(InputError::Missing {
                pointer: self.pointer(key),
                expected: "a non-empty string",
            }),
            None => Err(InputError::Missing {
                pointer: self.pointer(key),
                expected: "a string",
            }),
        }
    }
    /// A non-empty string, or `None` for absent, null or blank values.
    pub fn text(&self, key: &str) -> Result<Option<&'a str>, InputError> {
        Ok(self.str_opt(key)?.filter(|s| !s.trim().is_empty()))
    }
    /// A boolean; accepts the strings `"true"`/`"false"` that several AWS fields use.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(InputError::wrong_type(
                &self.pointer(key),
                "a boolean",
                other,
            )),
        }
    }
    /// A number; accepts numeric strings (ASFF `Severity.Original` is `"8.3"`).
    pub fn num_opt(&self, key: &str) -> Result<Option<f64>, InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
                InputError::wrong_type(&self.pointer(key), "a number", &Value::String(s.clone()))
            }),
            Some(other) => Err(InputError::wrong_type(
                &self.pointer(key),
                "a number",
                other,
            )),
        }
    }
    /// A nested object; `None` when absent or null.
    pub fn obj_opt(&self, key: &str) -> Result<Option<Obj<'a>>, InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Obj::view(v, self.pointer(key)).map(Some),
        }
    }
    /// A nested object that must be present.
    pub fn obj_req(&self, key: &str) -> Result<Obj<'a>, InputError> {
        self.obj_opt(key)?.ok_or_else(|| InputError::Missing {
            pointer: self.pointer(key),
            expected: "an object",
        })
    }
    /// The objects of an array field, each with its pointer; absent or null is empty.
    pub fn objs(&self, key: &str) -> Result<Vec<Obj<'a>>, InputError> {
        let base = self.pointer(key);
        self.arr(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| Obj::view(v, format!("{base}/{i}")))
            .collect()
    }
    /// An array; empty when absent or null.
    pub fn arr(&self, key: &str) -> Result<&'a [Value], InputError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(items)) => Ok(items.as_slice()),
            Some(other) => Err(InputError::wrong_type(
                &self.pointer(key),
                "an array",
                other,
            )),
        }
    }
}

/// A stable fingerprint of some bytes (FNV-1a, 64 bits, hex): the same delivery retried has the
/// same one. Not a security boundary, only an identity for retries.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let v = parse(br#"{"a":[1,2.5,"x",null,true],"b":{"c":"d"}}"#).unwrap();
        assert_eq!(v["b"]["c"], "d");
    }

    #[test]
    fn rejects_duplicate_keys_with_position() {
        let e = parse(br#"{"id":"a","id":"b"}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("duplicate key \"id\""), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn rejects_deep_nesting_without_overflow() {
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        let msg = parse(deep.as_bytes()).unwrap_err().to_string();
        assert!(msg.contains("nesting deeper than 64"), "{msg}");
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_oversized_input_before_parsing() {
        let big = vec![b' '; MAX_INPUT_BYTES + 1];
        assert!(matches!(parse(&big), Err(InputError::TooLarge { .. })));
    }

    #[test]
    fn rejects_long_strings() {
        let s = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_STRING_BYTES + 1));
        assert!(
            parse(s.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("over the")
        );
    }

    #[test]
    fn rejects_trailing_garbage_and_truncation() {
        assert!(parse(br#"{"a":1} x"#).is_err());
        assert!(parse(br#"{"a":"#).is_err());
        assert!(parse(b"").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn typed_reads_name_the_pointer() {
        let v = parse(br#"{"a/b":{"n":5,"s":"x","t":"true"}}"#).unwrap();
        let o = root(&v).unwrap();
        let inner = o.obj_req("a/b").unwrap();
        let err = inner.str_req("n").unwrap_err().to_string();
        assert!(err.contains("/a~1b/n"), "{err}");
        assert_eq!(inner.bool_opt("t").unwrap(), Some(true));
        assert_eq!(inner.num_opt("n").unwrap(), Some(5.0));
        assert!(inner.str_req("missing").is_err());
    }
}
