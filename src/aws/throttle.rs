//! Throttling is waiting, not failure: every AWS call the adapters make goes through
//! [`CallPolicy::send`], which retries throttled calls until the invocation's work deadline and
//! leaves every other error to the SDK's few ordinary retries.
//!
//! Why a helper rather than the SDK's retry settings:
//! - `max_attempts` counts throttling and server errors alike, so no value of it both waits out
//!   a fleet's throttling and fails a 5xx fast.
//! - The standard and adaptive strategies pay for each retry from a retry-quota token bucket
//!   (500 tokens, 5 a throttling retry) shared by every client of a retry partition in the
//!   process and kept across warm invocations. Sustained throttling empties it within about a
//!   hundred retries, after which the SDK retries nothing at all, server errors included.
//! - Adaptive mode's client-side rate limiter lives in one process, and each secret's rotation
//!   runs in its own Lambda environment, so it coordinates nothing across a fleet.
//!
//! So each call carries, through `customize().config_override(..)`, a retry classifier that
//! forbids the SDK to retry throttling and quota refusals (no token is spent on them), and
//! timeouts cut to the time left. The helper then waits out throttling itself: exponential
//! backoff with full jitter (`ROTATOR_INITIAL_BACKOFF_MS` doubling up to
//! `ROTATOR_MAX_BACKOFF_MS`), until the next wait would pass the deadline. A fleet shares the
//! account's rate only through that jitter; nothing coordinates the functions.
//!
//! Quota refusals (`LimitExceededException`, such as API Gateway's 10,000 keys a region) are not
//! throttling, although the SDK's own list counts them as such: waiting does not lift a quota,
//! so they fail at once. Every other error (5xx, timeouts, connection errors) gets the SDK's
//! ordinary retries (`ROTATOR_MAX_ATTEMPTS`) and then fails.

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::interceptors::InterceptorContext;
use aws_sdk_secretsmanager::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use tokio::time::Instant;

use crate::deadline;

/// No attempt starts with less time than this left: it could not come back in time.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// Error codes that mean "too fast, try again": API Gateway's and Secrets Manager's throttling.
pub const THROTTLING_CODES: [&str; 3] = [
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
];

/// Error codes that mean a quota is used up: retrying does not help.
pub const QUOTA_CODES: [&str; 1] = ["LimitExceededException"];

/// What an AWS error code says about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Throttling: wait and retry, until the deadline.
    Throttled,
    /// A quota: fail now.
    Quota,
    /// Anything else: the SDK's ordinary retries decide.
    Other,
}

impl Refusal {
    pub fn of_code(code: Option<&str>) -> Refusal {
        match code {
            Some(c) if THROTTLING_CODES.contains(&c) => Refusal::Throttled,
            Some(c) if QUOTA_CODES.contains(&c) => Refusal::Quota,
            _ => Refusal::Other,
        }
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How the adapters bound and retry their calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// The first throttling wait's upper bound; it doubles with each refusal.
    pub initial_backoff: Duration,
    /// The most any one throttling wait can be.
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    /// Outside an invocation (no deadline in scope), the most a call may take, throttling
    /// waits included.
    pub budget: Duration,
}

/// What one SDK send is given: its timeouts, cut to the time left, and the classifier that keeps
/// throttling out of the SDK's retries. Each adapter turns it into its client's config override.
pub(crate) struct CallOverride<E> {
    pub timeouts: TimeoutConfig,
    pub classifier: NoSdkRetryForThrottling<E>,
}

impl CallPolicy {
    /// Sends a call (`send` builds and sends it with the override it is given), retrying
    /// throttling until the work deadline. The result is the SDK's, for the adapter to map.
    pub(crate) async fn send<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut send: F,
    ) -> Result<T, SdkError<E, HttpResponse>>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut(CallOverride<E>) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let invocation = deadline::current();
        let deadline = invocation
            .as_ref()
            .map(|i| i.deadline())
            .unwrap_or_else(|| Instant::now() + self.budget);
        let mut refusals = 0u32;
        // The last throttling refusal: when the deadline then cuts a retry short, it is the
        // cause worth reporting.
        let mut throttled: Option<SdkError<E, HttpResponse>> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                return Err(throttled.unwrap_or_else(|| {
                    SdkError::timeout_error(format!(
                        "{operation} not sent: no time left before the invocation's deadline"
                    ))
                }));
            }
            let timeouts = TimeoutConfig::builder()
                .connect_timeout(self.connect_timeout.min(left))
                .operation_attempt_timeout(self.attempt_timeout.min(left))
                .operation_timeout(left)
                .build();
            let call = send(CallOverride {
                timeouts,
                classifier: NoSdkRetryForThrottling::new(),
            });
            let sent = Instant::now();
            // The SDK's operation timeout already bounds the call; this makes it a guarantee.
            let err = match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(out)) => {
                    // What DEBUG adds: each call by name and outcome, never its content
                    // (docs/contract.md, Logs).
                    tracing::debug!(
                        operation,
                        elapsed_ms = elapsed_ms(sent),
                        "AWS call succeeded"
                    );
                    return Ok(out);
                }
                Ok(Err(err)) => {
                    tracing::debug!(
                        operation,
                        elapsed_ms = elapsed_ms(sent),
                        code = err.code().unwrap_or("none"),
                        "AWS call failed"
                    );
                    err
                }
                Err(_) => SdkError::timeout_error(format!(
                    "{operation} cut short at the invocation's deadline"
                )),
            };
            if Refusal::of_code(err.code()) != Refusal::Throttled {
                return match (err, throttled) {
                    (SdkError::TimeoutError(_), Some(refusal)) => Err(refusal),
                    (err, _) => Err(err),
                };
            }
            refusals += 1;
            if let Some(inv) = &invocation {
                inv.record_throttled(refusals == 1);
            }
            if refusals == 1 {
                // The ThrottledCalls metric: each call retried for throttling, once.
                crate::metrics::record(crate::metrics::Effect::ThrottledCall);
            }
            let wait = self.backoff(refusals);
            if Instant::now() + wait + MIN_ATTEMPT > deadline {
                tracing::warn!(
                    operation,
                    refusals,
                    "still throttled with no time left before the invocation's deadline"
                );
                return Err(err);
            }
            tracing::debug!(
                operation,
                refusals,
                wait_ms = wait.as_millis() as u64,
                "throttled; waiting"
            );
            throttled = Some(err);
            tokio::time::sleep(wait).await;
        }
    }

    /// Full jitter: a uniform wait up to `initial × 2^(refusals-1)`, capped at `max_backoff`.
    fn backoff(&self, refusals: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << refusals.saturating_sub(1).min(16))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A retry classifier, added to every call, that forbids the SDK to retry throttling and quota
/// refusals: the SDK's own list counts both as throttling and spends retry quota on them.
/// `RetryForbidden` overrides every other classifier, wherever this one runs.
pub(crate) struct NoSdkRetryForThrottling<E> {
    _error: PhantomData<fn() -> E>,
}

impl<E> NoSdkRetryForThrottling<E> {
    fn new() -> Self {
        NoSdkRetryForThrottling {
            _error: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for NoSdkRetryForThrottling<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoSdkRetryForThrottling")
    }
}

impl<E> ClassifyRetry for NoSdkRetryForThrottling<E>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let code = match ctx.output_or_error() {
            Some(Err(err)) => err
                .as_operation_error()
                .and_then(|e| e.downcast_ref::<E>())
                .and_then(|e| e.code()),
            _ => None,
        };
        match Refusal::of_code(code) {
            Refusal::Throttled | Refusal::Quota => RetryAction::RetryForbidden,
            Refusal::Other => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "NoSdkRetryForThrottling"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_quota_are_told_apart() {
        assert_eq!(
            Refusal::of_code(Some("TooManyRequestsException")),
            Refusal::Throttled
        );
        assert_eq!(
            Refusal::of_code(Some("ThrottlingException")),
            Refusal::Throttled
        );
        assert_eq!(
            Refusal::of_code(Some("LimitExceededException")),
            Refusal::Quota
        );
        assert_eq!(Refusal::of_code(Some("InternalFailure")), Refusal::Other);
        assert_eq!(Refusal::of_code(None), Refusal::Other);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = CallPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(1),
            budget: Duration::from_secs(1),
        };
        for refusals in 1..40 {
            let ceiling = Duration::from_millis((100u64 << (refusals - 1).min(16)).min(1000));
            for _ in 0..20 {
                assert!(p.backoff(refusals) <= ceiling);
            }
        }
    }
}
