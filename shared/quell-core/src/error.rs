//! Errors of the pure core. Each message says what was wrong, where, and what to do.

use serde_json::Value;
use thiserror::Error;

use crate::json::type_name;

/// Why an input was rejected. Rejected input never produces an action.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum InputError {
    #[error(
        "input is {bytes} bytes, over the {limit}-byte limit; send one event or batch at a time"
    )]
    TooLarge { bytes: usize, limit: usize },
    #[error("input is not UTF-8 (invalid byte at offset {offset}); send the event as UTF-8 JSON")]
    NotUtf8 { offset: usize },
    #[error("input is not valid JSON: {detail} at line {line} column {column}")]
    Syntax {
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("{pointer}: expected {expected}, found {found}")]
    WrongType {
        pointer: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{pointer}: missing {expected}")]
    Missing {
        pointer: String,
        expected: &'static str,
    },
    #[error("{pointer}: {value:?} is not {expected}")]
    Invalid {
        pointer: String,
        value: String,
        expected: &'static str,
    },
    #[error("{pointer}: {detail}")]
    Unsupported { pointer: String, detail: String },
    #[error(
        "{pointer}: source {source_name:?} does not match this event's shape ({detail}); quell only accepts events from the service that produces them"
    )]
    Spoofed {
        pointer: String,
        source_name: String,
        detail: String,
    },
    #[error("{pointer}: the batch holds no events; send at least one")]
    EmptyBatch { pointer: String },
    #[error(
        "{pointer}: unrecognised input: expected one of: an EventBridge event from aws.guardduty, aws.securityhub or aws.access-analyzer; a Defender XDR or Entra diagnostic Event Hub message ({{\"records\":[…]}}); a Graph security alert (alerts_v2) or list; an Entra riskDetection or riskyUser (or list); a runbook request ({{\"runbook\":…}}); or an Azure Functions host invocation ({{\"Data\":…}}){hint}"
    )]
    UnknownShape { pointer: String, hint: String },
}

impl InputError {
    pub(crate) fn wrong_type(pointer: &str, expected: &'static str, found: &Value) -> InputError {
        InputError::WrongType {
            pointer: pointer.to_string(),
            expected,
            found: type_name(found),
        }
    }

    pub(crate) fn invalid(pointer: &str, value: &str, expected: &'static str) -> InputError {
        // Never echo a huge value back into a log line.
        InputError::Invalid {
            pointer: pointer.to_string(),
            value: clip(value),
            expected,
        }
    }

    pub(crate) fn unsupported(pointer: &str, detail: impl Into<String>) -> InputError {
        InputError::Unsupported {
            pointer: pointer.to_string(),
            detail: detail.into(),
        }
    }
}

/// A policy file that cannot be used. The message names the line and the field.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PolicyError {
    #[error("policy {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("policy {origin}: line {line}: `{field}`: {message}")]
    Field {
        origin: String,
        line: usize,
        field: String,
        message: String,
    },
}

/// Shortens a value quoted in a message to 80 characters.
pub(crate) fn clip(value: &str) -> String {
    if value.chars().count() <= 80 {
        value.to_string()
    } else {
        value.chars().take(80).chain(std::iter::once('…')).collect()
    }
}
