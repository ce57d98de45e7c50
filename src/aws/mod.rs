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
pub mod secrets;
pub mod throttle;

pub use gateway::AwsKeyGateway;
pub use secrets::AwsSecretStore;

/// The SDK's retry and timeout settings. The defaults absorb API Gateway's 5-requests-a-second
/// limits on CreateApiKey and DeleteApiKey (TooManyRequests is retried with backoff), and bound
/// every call: no call outlives `operation_timeout`, whatever its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkSettings {
    /// Adaptive mode adds a client-side rate limiter that slows down after throttling, so a
    /// fleet of functions shares API Gateway's account limits with fewer refused calls.
    pub adaptive: bool,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
}

impl Default for SdkSettings {
    fn default() -> Self {
        SdkSettings {
            adaptive: true,
            // Many attempts with a short backoff cap: a throttled call comes back within
            // seconds, so a fleet keeps API Gateway's account rate busy instead of idling in long
            // backoffs, and the operation timeout still bounds every call. A fleet of 100 took
            // 1.13x the rate-limit floor with these against 1.64x with 10 attempts and a 20 s
            // cap (BENCHMARKS.md).
            max_attempts: 20,
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
