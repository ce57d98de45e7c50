//! The function's errors: a small, fixed set of kinds, each naming the secret, the step and the
//! cause. No error ever carries an API key value or a RotationToken.

use std::fmt;

use lambda_runtime::Diagnostic;

/// What went wrong, in the words an operator acts on. The set is fixed and listed in docs/contract.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The invocation payload is not a rotation event this function understands.
    InvalidEvent,
    /// The secret's tags, its current value or the function's environment are wrong. Nothing was
    /// changed.
    InvalidConfiguration,
    /// The secret's versions or the keys are not in a state this step can work from.
    RotationState,
    /// The testSecret probe or checks found the pending key unusable.
    TestFailed,
    /// An AWS call failed past the SDK's own retries.
    AwsFailure,
}

impl ErrorKind {
    /// The `errorType` Lambda reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidEvent => "InvalidEvent",
            ErrorKind::InvalidConfiguration => "InvalidConfiguration",
            ErrorKind::RotationState => "RotationState",
            ErrorKind::TestFailed => "TestFailed",
            ErrorKind::AwsFailure => "AwsFailure",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An AWS call that failed, as the adapters saw it: the error code and request id survive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.operation)?;
        if let Some(code) = &self.code {
            write!(f, " with {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// A failure inside a step, before it is tied to the secret and step that saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub cause: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, cause: impl Into<String>) -> Self {
        Failure {
            kind,
            cause: cause.into(),
        }
    }
    pub fn config(cause: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfiguration, cause)
    }
    pub fn state(cause: impl Into<String>) -> Self {
        Self::new(ErrorKind::RotationState, cause)
    }
    pub fn test(cause: impl Into<String>) -> Self {
        Self::new(ErrorKind::TestFailed, cause)
    }
}

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Self {
        Failure::new(ErrorKind::AwsFailure, e.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.cause)
    }
}

/// The error a rotation step returns to Lambda (and so to Secrets Manager).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} in {step} for secret {secret}: {cause}")]
pub struct Error {
    pub kind: ErrorKind,
    /// The secret as the event named it, or "<unknown>" when the event could not be read.
    pub secret: String,
    /// The step as the event named it, or "<unknown>".
    pub step: String,
    pub cause: String,
}

impl Error {
    pub fn new(secret: &str, step: &str, failure: Failure) -> Self {
        Error {
            kind: failure.kind,
            secret: secret.to_owned(),
            step: step.to_owned(),
            cause: failure.cause,
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(e: Error) -> Self {
        Diagnostic {
            error_type: e.kind.as_str().to_owned(),
            error_message: e.to_string(),
        }
    }
}

pub type StepResult<T> = Result<T, Failure>;
