//! AWS adapters: the SDK behind the `ports` traits. Service errors are mapped to domain results
//! here and only here. Clients are built once, in `main`, from one `SdkConfig`.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::RequestId;

use crate::config::env_millis;
use crate::error::{AwsError, Failure, StepResult};

pub mod gateway;
pub mod lambda;
pub mod secrets;
pub mod throttle;

pub use gateway::AwsKeyGateway;
pub use lambda::AwsFunctionReader;
pub use secrets::AwsSecretStore;
pub use throttle::{CallPolicy, Refusal};

/// The adapters' retry and timeout settings.
///
/// Throttling is not retried by the SDK: `throttle::CallPolicy` waits it out, with backoff
/// between `initial_backoff` and `max_backoff`, until the invocation's deadline (see
/// `crate::deadline`). `max_attempts` is therefore the SDK's ordinary retries of everything else
/// (5xx, timeouts, connection errors), which fail fast. No call outlives the invocation's
/// deadline; outside an invocation, `operation_timeout` bounds each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkSettings {
    /// Adaptive mode's client-side rate limiter only reacts to throttling the SDK retries, and
    /// the SDK retries none: it changes nothing here, and stays selectable for comparison.
    pub adaptive: bool,
    /// Attempts at a call that fails with anything but throttling (the SDK's ordinary retries).
    pub max_attempts: u32,
    /// The first backoff (SDK retries and throttling waits alike); it doubles each time.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    /// Outside an invocation (no Lambda deadline), the most a call may take, throttling waits
    /// included. Inside one, the invocation's deadline bounds every call instead.
    pub operation_timeout: Duration,
}

impl Default for SdkSettings {
    fn default() -> Self {
        SdkSettings {
            adaptive: false,
            // Three attempts, as the SDK's standard mode has: a 5xx or a timeout is tried again
            // twice and then fails the step, which Secrets Manager re-runs.
            max_attempts: 3,
            // Throttling waits draw uniformly up to 1 s, 2 s, 4 s, then 5 s each: a throttled
            // call comes back within seconds, so a fleet keeps API Gateway's account rate busy
            // instead of idling in long backoffs (BENCHMARKS.md, the fleet).
            initial_backoff: Duration::from_millis(1000),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(60),
        }
    }
}

impl SdkSettings {
    /// Overrides, all optional: `ROTATOR_RETRY_MODE` (`adaptive` or `standard`),
    /// `ROTATOR_MAX_ATTEMPTS`, and in milliseconds
    /// `ROTATOR_INITIAL_BACKOFF_MS`, `ROTATOR_MAX_BACKOFF_MS`, `ROTATOR_CONNECT_TIMEOUT_MS`,
    /// `ROTATOR_ATTEMPT_TIMEOUT_MS`, `ROTATOR_OPERATION_TIMEOUT_MS`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> StepResult<SdkSettings> {
        let d = SdkSettings::default();
        let max_attempts = match lookup("ROTATOR_MAX_ATTEMPTS") {
            Some(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=20).contains(n))
                .ok_or_else(|| {
                    Failure::config("ROTATOR_MAX_ATTEMPTS must be a number from 1 to 20")
                })?,
            _ => d.max_attempts,
        };
        let adaptive = match lookup("ROTATOR_RETRY_MODE").as_deref().map(str::trim) {
            None | Some("") => d.adaptive,
            Some("adaptive") => true,
            Some("standard") => false,
            Some(_) => {
                return Err(Failure::config(
                    "ROTATOR_RETRY_MODE must be adaptive or standard",
                ))
            }
        };
        Ok(SdkSettings {
            adaptive,
            max_attempts,
            initial_backoff: env_millis(lookup, "ROTATOR_INITIAL_BACKOFF_MS", d.initial_backoff)?,
            max_backoff: env_millis(lookup, "ROTATOR_MAX_BACKOFF_MS", d.max_backoff)?,
            connect_timeout: env_millis(lookup, "ROTATOR_CONNECT_TIMEOUT_MS", d.connect_timeout)?,
            attempt_timeout: env_millis(lookup, "ROTATOR_ATTEMPT_TIMEOUT_MS", d.attempt_timeout)?,
            operation_timeout: env_millis(
                lookup,
                "ROTATOR_OPERATION_TIMEOUT_MS",
                d.operation_timeout,
            )?,
        })
    }

    pub fn retry_config(&self) -> RetryConfig {
        let base = if self.adaptive {
            RetryConfig::adaptive()
        } else {
            RetryConfig::standard()
        };
        base.with_max_attempts(self.max_attempts)
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    /// How the adapters send their calls under these settings.
    pub fn call_policy(&self) -> CallPolicy {
        CallPolicy {
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            connect_timeout: self.connect_timeout,
            attempt_timeout: self.attempt_timeout,
            budget: self.operation_timeout,
        }
    }

    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// Loads the shared SDK configuration once: region, credentials and `AWS_ENDPOINT_URL` come
/// from the usual `AWS_*` variables.
pub async fn load_sdk_config(settings: &SdkSettings) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(settings.retry_config())
        .timeout_config(settings.timeout_config())
        .load()
        .await
}

/// The call policy a client's configuration implies (the settings it was built from), with
/// `SdkSettings`' defaults for whatever it leaves unset.
pub(crate) fn policy_of(
    retry: Option<&RetryConfig>,
    timeouts: Option<&TimeoutConfig>,
) -> CallPolicy {
    let d = SdkSettings::default();
    CallPolicy {
        initial_backoff: retry.map_or(d.initial_backoff, |r| r.initial_backoff()),
        max_backoff: retry.map_or(d.max_backoff, |r| r.max_backoff()),
        connect_timeout: timeouts
            .and_then(|t| t.connect_timeout())
            .unwrap_or(d.connect_timeout),
        attempt_timeout: timeouts
            .and_then(|t| t.operation_attempt_timeout())
            .unwrap_or(d.attempt_timeout),
        budget: timeouts
            .and_then(|t| t.operation_timeout())
            .unwrap_or(d.operation_timeout),
    }
}

/// An SDK error as a domain `AwsError`, keeping its code and request id.
pub(crate) fn aws_error<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, message) = match err {
        SdkError::ServiceError(_) => (
            err.code().map(str::to_owned),
            err.message().unwrap_or_default().to_owned(),
        ),
        _ => (None, DisplayErrorContext(err).to_string()),
    };
    AwsError {
        operation,
        code,
        message,
        request_id: err.request_id().map(str::to_owned),
    }
}
