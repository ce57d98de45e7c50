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
pub mod refusal;
pub mod secrets;
pub mod throttle;

pub use gateway::AwsKeyGateway;
pub use lambda::AwsFunctionReader;
pub use refusal::{Evidence, Refusal};
pub use secrets::AwsSecretStore;
pub use throttle::CallPolicy;
use throttle::GaveUp;

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
    /// `ROTATOR_ATTEMPT_TIMEOUT_MS`, `ROTATOR_OPERATION_TIMEOUT_MS`. The two backoffs must lie in
    /// `BACKOFF_MS`, the first no longer than the second: anything else is a configuration error,
    /// raised here, before any client is built or any call made.
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
        let initial_backoff =
            backoff_millis(lookup, "ROTATOR_INITIAL_BACKOFF_MS", d.initial_backoff)?;
        let max_backoff = backoff_millis(lookup, "ROTATOR_MAX_BACKOFF_MS", d.max_backoff)?;
        if initial_backoff > max_backoff {
            let default = |name| {
                if is_set(lookup, name) {
                    ""
                } else {
                    ", the default"
                }
            };
            return Err(Failure::config(format!(
                "ROTATOR_INITIAL_BACKOFF_MS ({} ms{}) is more than ROTATOR_MAX_BACKOFF_MS ({} ms{}): \
                 the first throttling wait cannot be longer than the longest",
                initial_backoff.as_millis(),
                default("ROTATOR_INITIAL_BACKOFF_MS"),
                max_backoff.as_millis(),
                default("ROTATOR_MAX_BACKOFF_MS"),
            )));
        }
        Ok(SdkSettings {
            adaptive,
            max_attempts,
            initial_backoff,
            max_backoff,
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

/// The throttling backoffs' valid range, in milliseconds. 0 would send throttled calls back to
/// back until the deadline; a wait of more than a minute outlasts any rate limit it waits for
/// (API Gateway's are per second) and most of an invocation (the template's timeout is 300 s).
pub const BACKOFF_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

fn is_set(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> bool {
    lookup(name).is_some_and(|v| !v.trim().is_empty())
}

/// A backoff variable, in milliseconds within `BACKOFF_MS`, or `default` when unset.
fn backoff_millis(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: Duration,
) -> StepResult<Duration> {
    let value = env_millis(lookup, name, default)?;
    let ms = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
    if !BACKOFF_MS.contains(&ms) {
        return Err(Failure::config(format!(
            "{name} must be from {} to {} milliseconds, not {ms}",
            BACKOFF_MS.start(),
            BACKOFF_MS.end()
        )));
    }
    Ok(value)
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
/// The cursor of a listing's next page: `None` at the last page, or when the answer repeats
/// the cursor just sent (a listing that would never end). Every paged listing follows it.
pub(crate) fn next_page(next: Option<&str>, sent: &Option<String>) -> Option<String> {
    next.filter(|n| !n.is_empty() && Some(*n) != sent.as_deref())
        .map(str::to_owned)
}

pub(crate) fn aws_error<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // The call policy's own account of a call it gave up on (throttle.rs).
    if let Some(gave_up) = std::error::Error::source(err).and_then(|e| e.downcast_ref::<GaveUp>()) {
        return AwsError {
            operation,
            code: gave_up.code.clone(),
            message: gave_up.message.clone(),
            request_id: gave_up.request_id.clone(),
        };
    }
    let (code, message) = match err {
        SdkError::ServiceError(_) => {
            let message = err.message().unwrap_or_default();
            let message = if Refusal::of_error(err) == Refusal::Quota {
                format!(
                    "{message} (read as a quota, not a rate limit: not retried, as waiting does not \
                     lift a quota)"
                )
            } else {
                message.to_owned()
            };
            (err.code().map(str::to_owned), message)
        }
        _ => (None, DisplayErrorContext(err).to_string()),
    };
    AwsError {
        operation,
        code,
        message,
        request_id: err.request_id().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn settings(vars: &[(&str, &str)]) -> StepResult<SdkSettings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SdkSettings::from_lookup(&|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn backoffs_that_make_sense_are_taken() {
        assert_eq!(settings(&[]), Ok(SdkSettings::default()));
        let s = settings(&[
            ("ROTATOR_INITIAL_BACKOFF_MS", "2"),
            ("ROTATOR_MAX_BACKOFF_MS", "10"),
        ]);
        assert_eq!(
            s.map(|s| (s.initial_backoff, s.max_backoff)),
            Ok((Duration::from_millis(2), Duration::from_millis(10)))
        );
        // The bounds themselves, and equal backoffs.
        for (initial, max) in [("1", "1"), ("60000", "60000"), ("1", "60000")] {
            assert!(
                settings(&[
                    ("ROTATOR_INITIAL_BACKOFF_MS", initial),
                    ("ROTATOR_MAX_BACKOFF_MS", max)
                ])
                .is_ok(),
                "{initial}, {max}"
            );
        }
        // Empty is unset: the default.
        assert_eq!(
            settings(&[("ROTATOR_MAX_BACKOFF_MS", " ")]).map(|s| s.max_backoff),
            Ok(SdkSettings::default().max_backoff)
        );
    }

    #[test]
    fn backoffs_that_make_no_sense_are_a_configuration_error_naming_the_variable() {
        for (vars, needle) in [
            (
                &[("ROTATOR_INITIAL_BACKOFF_MS", "0")][..],
                "ROTATOR_INITIAL_BACKOFF_MS must be from 1 to 60000",
            ),
            (
                &[("ROTATOR_MAX_BACKOFF_MS", "0")][..],
                "ROTATOR_MAX_BACKOFF_MS must be from 1 to 60000",
            ),
            (
                &[("ROTATOR_MAX_BACKOFF_MS", "60001")][..],
                "ROTATOR_MAX_BACKOFF_MS must be from 1 to 60000",
            ),
            (
                &[("ROTATOR_INITIAL_BACKOFF_MS", "18446744073709551615")][..],
                "ROTATOR_INITIAL_BACKOFF_MS must be from 1 to 60000",
            ),
            (
                &[
                    ("ROTATOR_INITIAL_BACKOFF_MS", "2000"),
                    ("ROTATOR_MAX_BACKOFF_MS", "1000"),
                ][..],
                "ROTATOR_INITIAL_BACKOFF_MS (2000 ms) is more than ROTATOR_MAX_BACKOFF_MS (1000 ms)",
            ),
            // Against the other's default (5000 ms), which the message says.
            (
                &[("ROTATOR_INITIAL_BACKOFF_MS", "6000")][..],
                "(5000 ms, the default)",
            ),
            (
                &[("ROTATOR_MAX_BACKOFF_MS", "500")][..],
                "ROTATOR_INITIAL_BACKOFF_MS (1000 ms, the default) is more than ROTATOR_MAX_BACKOFF_MS (500 ms)",
            ),
            (
                &[("ROTATOR_INITIAL_BACKOFF_MS", "-1")][..],
                "whole number of milliseconds",
            ),
        ] {
            let failure = settings(vars).err();
            assert!(
                failure.as_ref().is_some_and(|f| f.kind
                    == ErrorKind::InvalidConfiguration
                    && f.cause.contains(needle)),
                "{vars:?}: {failure:?}"
            );
        }
    }
}
