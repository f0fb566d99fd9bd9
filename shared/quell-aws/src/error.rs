//! Errors from AWS calls, reduced to what a report needs: the provider's code, a message, and
//! whether trying again later may help.

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::error::SdkError;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct ExecError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// Error codes AWS uses for throttling and transient server faults.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "InternalException",
    "ServiceFailure",
    // IAM: another write to the same principal is in flight.
    "ConcurrentModification",
    "ConcurrentModificationException",
    // Security Hub BatchUpdateFindings UnprocessedFindings codes.
    "ConcurrentUpdateError",
];

impl ExecError {
    pub fn new(code: &str, message: impl Into<String>) -> ExecError {
        ExecError {
            code: code.to_string(),
            message: message.into(),
            retryable: RETRYABLE_CODES.contains(&code),
        }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

impl From<ExecError> for quell_core::report::Outcome {
    /// A failed outcome carrying the AWS error code.
    fn from(e: ExecError) -> Self {
        quell_core::report::Outcome::failed(e.code, e.message, e.retryable)
    }
}

/// Classifies any SDK error. Transport failures (no answer, timeouts) are retryable.
pub fn classify<E, R>(err: SdkError<E, R>) -> ExecError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    classify_ref(&err)
}

/// [`classify`] on a borrowed error.
pub fn classify_ref<E, R>(err: &SdkError<E, R>) -> ExecError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("Unknown").to_string();
            let message = e.message().unwrap_or("no message").to_string();
            ExecError::new(&code, message)
        }
        SdkError::TimeoutError(_) => ExecError {
            code: "Timeout".into(),
            message: "the request timed out; try again".into(),
            retryable: true,
        },
        SdkError::DispatchFailure(d) => ExecError {
            code: "DispatchFailure".into(),
            message: format!("could not reach the AWS endpoint: {d:?}"),
            retryable: true,
        },
        SdkError::ResponseError(r) => ExecError {
            code: "ResponseError".into(),
            message: format!("unreadable response: {r:?}"),
            retryable: true,
        },
        SdkError::ConstructionFailure(c) => ExecError {
            code: "ConstructionFailure".into(),
            message: format!("request could not be built: {c:?}"),
            retryable: false,
        },
        _ => ExecError {
            code: "Unknown".into(),
            message: err.to_string(),
            retryable: false,
        },
    }
}
