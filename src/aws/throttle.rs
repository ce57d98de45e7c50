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
//! forbids the SDK to retry throttling and `LimitExceededException` (no token is spent on them),
//! and timeouts cut to the time left. The helper then waits out throttling itself: exponential
//! backoff with full jitter (`ROTATOR_INITIAL_BACKOFF_MS` doubling up to
//! `ROTATOR_MAX_BACKOFF_MS`), until the next wait would pass the deadline, and then fails with
//! the refusal, noting that no time was left. A fleet shares the account's rate only through
//! that jitter; nothing coordinates the functions.
//!
//! `LimitExceededException` means two things, the rate limit and a quota:
//! [`super::refusal`] tells them apart; a rate limit is waited out like throttling (each wait
//! at least its `Retry-After` hint, never past the deadline), a quota fails at once.
//!
//! Every other error (5xx, timeouts, connection errors) gets the SDK's ordinary retries
//! (`ROTATOR_MAX_ATTEMPTS`) and then fails. The error reported is always what happened last: a
//! timeout after throttling is reported as a timeout (the call may have been committed), with
//! the throttling before it named in its message.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::interceptors::InterceptorContext;
use aws_sdk_secretsmanager::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::RequestId;
use tokio::time::Instant;

use super::refusal::{Evidence, Refusal};
use crate::deadline;

/// No attempt starts with less time than this left: it could not come back in time.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// Why the call policy gave up on a call, in place of the SDK's error: the refusal's code,
/// message and request id, and what the policy adds (the deadline, the hint, earlier
/// throttling). `aws_error` reports it as it is.
#[derive(Debug)]
pub(crate) struct GaveUp {
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GaveUp {}

/// `err` (a refusal) given up on, with `note` saying why.
fn gave_up<E>(err: &SdkError<E, HttpResponse>, note: String) -> SdkError<E, HttpResponse>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = match err.message() {
        Some(m) if !m.is_empty() => format!("{m} ({note})"),
        _ => note,
    };
    SdkError::timeout_error(GaveUp {
        code: err.code().map(str::to_owned),
        message,
        request_id: err.request_id().map(str::to_owned),
    })
}

/// Why a refusal was given up on at the deadline; for an ambiguous `LimitExceededException`, that
/// it may be a quota after all.
fn out_of_time(refusal: Refusal, refusals: u32) -> String {
    let ambiguous = matches!(
        refusal,
        Refusal::RateLimited {
            evidence: Evidence::Neither,
            ..
        }
    );
    format!(
        "still refused after {refusals} tries, no time left before the invocation's deadline{}",
        if ambiguous {
            "; this LimitExceededException had no Retry-After and a message naming neither a \
             rate nor a quota, so it was read as the rate limit: it may be a quota instead, such \
             as API Gateway's 10,000 API keys a region"
        } else {
            ""
        }
    )
}

fn is_timeout<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) => d.is_timeout(),
        _ => false,
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
        // The last refusal waited out: when no time is left to send the retry, it is the cause
        // worth reporting.
        let mut refused: Option<(Refusal, SdkError<E, HttpResponse>)> = None;
        // Its code, for a timeout that follows it.
        let mut refused_code: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                return Err(match &refused {
                    Some((refusal, err)) => gave_up(err, out_of_time(*refusal, refusals)),
                    None => SdkError::timeout_error(format!(
                        "{operation} not sent: no time left before the invocation's deadline"
                    )),
                });
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
            let refusal = Refusal::of_error(&err);
            let hint = match refusal {
                Refusal::Throttled => None,
                Refusal::RateLimited { retry_after, .. } => retry_after,
                Refusal::Quota | Refusal::Other => {
                    // What happened last is the error. A timeout after throttling may have been
                    // committed: say so, and name the throttling before it.
                    return Err(match refused_code {
                        Some(code) if is_timeout(&err) => SdkError::timeout_error(GaveUp {
                            code: None,
                            message: format!(
                                "{operation} timed out, so it may have been committed, after {refusals} \
                                 earlier {code} refusals were waited out: {}",
                                DisplayErrorContext(&err)
                            ),
                            request_id: None,
                        }),
                        _ => err,
                    });
                }
            };
            refusals += 1;
            if let Some(inv) = &invocation {
                inv.record_throttled(refusals == 1);
            }
            if refusals == 1 {
                // The ThrottledCalls metric: each call retried for throttling, once.
                crate::metrics::record(crate::metrics::Effect::ThrottledCall);
            }
            // The longest wait that still leaves an attempt time before the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let room = left.saturating_sub(MIN_ATTEMPT);
            let wait = match hint {
                Some(hint) if hint > room => {
                    tracing::warn!(
                        operation,
                        refusals,
                        retry_after_ms = u64::try_from(hint.as_millis()).unwrap_or(u64::MAX),
                        "rate limited, asked to wait past the invocation's deadline"
                    );
                    return Err(gave_up(
                        &err,
                        format!(
                            "API Gateway's rate limit asked to retry after {:.1} s, more than the {:.1} s \
                             left before the invocation's deadline: not retried",
                            hint.as_secs_f64(),
                            left.as_secs_f64()
                        ),
                    ));
                }
                // The hint, then the usual backoff on top: functions told the same do not all
                // come back at once, and a hint of 0 repeated still backs off exponentially.
                Some(hint) => hint.saturating_add(self.backoff(refusals)).min(room),
                None => self.backoff(refusals),
            };
            if wait > room {
                tracing::warn!(
                    operation,
                    refusals,
                    "still throttled with no time left before the invocation's deadline"
                );
                return Err(gave_up(&err, out_of_time(refusal, refusals)));
            }
            tracing::debug!(
                operation,
                refusals,
                wait_ms = wait.as_millis() as u64,
                "throttled; waiting"
            );
            refused_code = err.code().map(str::to_owned);
            refused = Some((refusal, err));
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
        // Every LimitExceededException, rate limit and quota alike: the helper waits out the
        // first and fails the second at once.
        match Refusal::of_code(code) {
            Refusal::Other => RetryAction::NoActionIndicated,
            _ => RetryAction::RetryForbidden,
        }
    }

    fn name(&self) -> &'static str {
        "NoSdkRetryForThrottling"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::refusal::LIMIT_EXCEEDED;
    use crate::deadline::Invocation;
    use aws_sdk_apigateway::operation::create_api_key::CreateApiKeyError;
    use aws_sdk_apigateway::types::error::{LimitExceededException, TooManyRequestsException};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use std::sync::atomic::{AtomicU32, Ordering};

    type Error = SdkError<CreateApiKeyError, HttpResponse>;
    type Boxed = Box<dyn std::error::Error>;

    fn policy() -> CallPolicy {
        CallPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(1),
            budget: Duration::from_secs(1),
        }
    }

    /// A service's refusal as the SDK hands it over: the error and the raw 429 it came in.
    fn refused(err: CreateApiKeyError) -> Result<Error, Boxed> {
        let status = aws_smithy_runtime_api::http::StatusCode::try_from(429u16)?;
        Ok(SdkError::service_error(
            err,
            HttpResponse::new(status, SdkBody::empty()),
        ))
    }

    fn throttled() -> Result<Error, Boxed> {
        refused(CreateApiKeyError::TooManyRequestsException(
            TooManyRequestsException::builder()
                .meta(
                    ErrorMetadata::builder()
                        .code("TooManyRequestsException")
                        .message("slow down")
                        .build(),
                )
                .message("slow down")
                .build(),
        ))
    }

    fn rate_limited(retry_after: &str) -> Result<Error, Boxed> {
        refused(CreateApiKeyError::LimitExceededException(
            LimitExceededException::builder()
                .meta(
                    ErrorMetadata::builder()
                        .code(LIMIT_EXCEEDED)
                        .message("Rate exceeded")
                        .build(),
                )
                .message("Rate exceeded")
                .retry_after_seconds(retry_after)
                .build(),
        ))
    }

    /// `send` through the policy inside an invocation of `budget`, answering the calls in turn
    /// from `answers` (the last one repeated): the error it reports, as the adapters map it, and
    /// how many calls were made.
    async fn run(budget: Duration, answers: Vec<Answer>) -> (Option<crate::error::AwsError>, u32) {
        let calls = AtomicU32::new(0);
        let invocation = Invocation::with_budget(budget);
        let answers = &answers;
        let calls_ref = &calls;
        let result: Result<(), Error> =
            invocation
                .scope(policy().send("CreateApiKey", |_| async move {
                    let n = calls_ref.fetch_add(1, Ordering::SeqCst) as usize;
                    let answer = answers.get(n).or(answers.last());
                    match answer {
                        Some(Answer::Throttled) => Err(throttled()
                            .map_err(|e| SdkError::construction_failure(e.to_string()))?),
                        Some(Answer::RateLimited(hint)) => Err(rate_limited(hint)
                            .map_err(|e| SdkError::construction_failure(e.to_string()))?),
                        Some(Answer::SdkTimeout) => Err(SdkError::timeout_error(
                            "HTTP read timeout occurred after 1s",
                        )),
                        Some(Answer::Hang) => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            Ok(())
                        }
                        Some(Answer::Ok) | None => Ok(()),
                    }
                }))
                .await;
        (
            result
                .err()
                .map(|e| super::super::aws_error("CreateApiKey", &e)),
            calls.load(Ordering::SeqCst),
        )
    }

    #[derive(Debug, Clone)]
    enum Answer {
        Throttled,
        RateLimited(&'static str),
        /// The SDK's own attempt timeout.
        SdkTimeout,
        /// No answer before the invocation's deadline.
        Hang,
        Ok,
    }

    #[tokio::test]
    async fn a_timeout_after_throttling_is_reported_as_the_timeout_naming_the_throttling() {
        for last in [Answer::SdkTimeout, Answer::Hang] {
            let (err, calls) = run(
                Duration::from_millis(800),
                vec![Answer::Throttled, Answer::Throttled, last.clone()],
            )
            .await;
            assert_eq!(calls, 3, "{last:?}");
            let err = err.map(|e| (e.code, e.message));
            assert!(
                matches!(&err, Some((None, m)) if m.contains("timed out")
                    && m.contains("may have been committed")
                    && m.contains("2 earlier TooManyRequestsException refusals")),
                "{last:?}: {err:?}"
            );
        }
        // Without earlier throttling, a timeout is reported as the SDK's, untouched.
        let (err, _) = run(Duration::from_millis(800), vec![Answer::SdkTimeout]).await;
        assert!(
            err.as_ref()
                .is_some_and(|e| e.code.is_none() && !e.message.contains("refusals")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_rate_limit_hint_is_waited_out_at_least_and_never_past_the_deadline() {
        // Honoured: the retry comes no sooner than the hint.
        let started = Instant::now();
        let (err, calls) = run(
            Duration::from_secs(2),
            vec![Answer::RateLimited("0.3"), Answer::Ok],
        )
        .await;
        assert_eq!((err, calls), (None, 2));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Longer than the time left: no wait, no retry, and an error that says so.
        let started = Instant::now();
        let (err, calls) = run(
            Duration::from_millis(500),
            vec![Answer::RateLimited("30"), Answer::Ok],
        )
        .await;
        assert_eq!(calls, 1);
        assert!(started.elapsed() < Duration::from_millis(200));
        let err = err.map(|e| (e.code, e.message));
        assert!(
            matches!(&err, Some((Some(code), m)) if code == LIMIT_EXCEEDED
                && m.contains("retry after 30.0 s")
                && m.contains("left before the invocation's deadline")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn throttling_until_the_deadline_keeps_the_code_and_says_so() {
        let (err, calls) = run(Duration::from_millis(300), vec![Answer::Throttled]).await;
        assert!(calls > 3, "{calls} calls");
        let err = err.map(|e| (e.code, e.message));
        assert!(
            matches!(&err, Some((Some(code), m)) if code == "TooManyRequestsException"
                && m.starts_with("slow down (still refused after")
                && m.contains("no time left before the invocation's deadline")),
            "{err:?}"
        );
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
