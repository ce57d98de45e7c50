//! What an AWS refusal says about retrying: throttling, API Gateway's rate limit, a quota, or
//! anything else. The call policy (`super::throttle`) acts on it.
//!
//! `LimitExceededException` means two things. API Gateway's model defines it as its rate limit
//! ("the request exceeded the rate limit. Retry after the specified time period", with
//! `retryAfterSeconds`, read from the `Retry-After` header), and API Gateway also answers it for
//! a quota, such as 10,000 API keys a region, which waiting does not lift. [`Refusal::of_limit`]
//! tells them apart:
//! - a `Retry-After` hint makes it the rate limit, whatever the message says: a quota has no
//!   time after which to retry. It is waited out like throttling, each wait the hint plus the
//!   usual jittered backoff (so functions given the same hint do not return together, and a
//!   hint of 0 repeated still backs off), cut to the time left. A hint longer than the time left
//!   before the deadline fails the call at once, with an error that says so: waiting part of it
//!   would only be refused again.
//! - without a hint, a message that names a rate ("rate limit", "throttl", ...) makes it the rate
//!   limit, with the usual backoff; one that names a quota ("quota", "maximum", "limit of", ...)
//!   makes it a quota, which fails at once, the error saying it was read as a quota.
//! - neither (no hint, a message naming nothing we know) is read as the rate limit, with the
//!   usual backoff. The model defines the code as the rate limit, and the two mistakes cost
//!   differently: a quota waited out costs one invocation's time (the refused call changed
//!   nothing) and then fails with an error that names a quota as the likely cause, while a rate
//!   limit failed at once fails rotations that the account's rate would have let through
//!   seconds later, and in a fleet fails many at once, each re-run spending more of the rate.
//!
//! Secrets Manager's `LimitExceededException` is a quota by its model, always. A rate-limit
//! `LimitExceededException` counts in `ThrottledCalls` like throttling; a quota does not.
//!

use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;

/// Error codes that mean "too fast, try again": API Gateway's and Secrets Manager's throttling.
pub const THROTTLING_CODES: [&str; 3] = [
    "TooManyRequestsException",
    "ThrottlingException",
    "Throttling",
];

/// The code API Gateway answers for its rate limit and for its quotas alike (and Secrets Manager
/// for its quotas): [`Refusal::of_limit`] tells them apart.
pub const LIMIT_EXCEEDED: &str = "LimitExceededException";

/// Words in a `LimitExceededException`'s message that name a rate, which time lifts. Looked for
/// before [`QUOTA_WORDS`]: a rate's limit is still a rate ("rate limit of 5 per second").
const RATE_WORDS: [&str; 7] = [
    "rate limit",
    "rate exceeded",
    "request rate",
    "throttl",
    "too many requests",
    "retry after",
    "slow down",
];

/// Words that name a quota: a count of things that waiting does not lower.
const QUOTA_WORDS: [&str; 8] = [
    "quota",
    "maximum",
    "at most",
    "cannot exceed",
    "can't exceed",
    "no more than",
    "limit of",
    "exhausted",
];

/// What an AWS refusal says about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Throttling (`TooManyRequestsException`, `ThrottlingException`): wait and retry, until the
    /// deadline.
    Throttled,
    /// A `LimitExceededException` read as API Gateway's rate limit: wait (at least
    /// `retry_after`, when API Gateway gave one) and retry, until the deadline.
    RateLimited {
        retry_after: Option<Duration>,
        evidence: Evidence,
    },
    /// A quota: fail now.
    Quota,
    /// Anything else: the SDK's ordinary retries decide.
    Other,
}

/// Why a `LimitExceededException` reads as the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// It carries a `Retry-After` header (the SDK's `retryAfterSeconds`).
    RetryAfter,
    /// Its message names a rate.
    Message,
    /// Nothing either way: no hint, and a message that names neither a rate nor a quota (the
    /// module documentation says why that is waited out).
    Neither,
}

impl Refusal {
    /// What a code alone says. `LimitExceededException` without its hint or message reads as
    /// the ambiguous rate limit; [`Refusal::of_error`] reads them.
    pub fn of_code(code: Option<&str>) -> Refusal {
        Refusal::classify(code, None, None, SystemTime::now())
    }

    /// A refusal from its code, its message and its `Retry-After` header (`now` reads an
    /// HTTP-date hint).
    pub fn classify(
        code: Option<&str>,
        message: Option<&str>,
        retry_after: Option<&str>,
        now: SystemTime,
    ) -> Refusal {
        match code {
            Some(c) if THROTTLING_CODES.contains(&c) => Refusal::Throttled,
            Some(LIMIT_EXCEEDED) => Refusal::of_limit(message, retry_after, now),
            _ => Refusal::Other,
        }
    }

    /// An API Gateway `LimitExceededException`: the rate limit when it carries a `Retry-After`
    /// hint (whatever its message) or its message names a rate; a quota when its message names
    /// one; otherwise, ambiguous, the rate limit.
    pub fn of_limit(message: Option<&str>, retry_after: Option<&str>, now: SystemTime) -> Refusal {
        if let Some(hint) = retry_after.map(str::trim).filter(|h| !h.is_empty()) {
            return Refusal::RateLimited {
                retry_after: parse_retry_after(hint, now),
                evidence: Evidence::RetryAfter,
            };
        }
        let message = message.unwrap_or_default().to_ascii_lowercase();
        if RATE_WORDS.iter().any(|w| message.contains(w)) {
            Refusal::RateLimited {
                retry_after: None,
                evidence: Evidence::Message,
            }
        } else if QUOTA_WORDS.iter().any(|w| message.contains(w)) {
            Refusal::Quota
        } else {
            Refusal::RateLimited {
                retry_after: None,
                evidence: Evidence::Neither,
            }
        }
    }

    /// A failed call's refusal. The hint is API Gateway's `retryAfterSeconds` as the SDK read it
    /// from the `Retry-After` header, or that header itself (any service, any operation).
    /// Secrets Manager's `LimitExceededException` is a quota by its model: it has no rate form.
    pub(crate) fn of_error<E>(err: &SdkError<E, HttpResponse>) -> Refusal
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if err.code() != Some(LIMIT_EXCEEDED) {
            return Refusal::of_code(err.code());
        }
        let exception = err.as_service_error().and_then(|e| e.source());
        if exception
            .is_some_and(|e| e.is::<aws_sdk_secretsmanager::types::error::LimitExceededException>())
        {
            return Refusal::Quota;
        }
        let hint = exception
            .and_then(|e| {
                e.downcast_ref::<aws_sdk_apigateway::types::error::LimitExceededException>()
            })
            .and_then(|e| e.retry_after_seconds())
            .or_else(|| {
                err.raw_response()
                    .and_then(|r| r.headers().get("retry-after"))
            });
        Refusal::of_limit(err.message(), hint, SystemTime::now())
    }
}

/// A `Retry-After` value: delay-seconds (whole, or with a fraction), or an HTTP-date (a date
/// already past is no wait). `None` when it reads as neither.
fn parse_retry_after(hint: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = hint.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = hint.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = SystemTime::try_from(DateTime::from_str(hint, Format::HttpDate).ok()?).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(message: &str, retry_after: Option<&str>) -> Refusal {
        Refusal::classify(
            Some(LIMIT_EXCEEDED),
            Some(message),
            retry_after,
            SystemTime::now(),
        )
    }

    #[test]
    fn throttling_rate_limits_and_quotas_are_told_apart() {
        assert_eq!(
            Refusal::of_code(Some("TooManyRequestsException")),
            Refusal::Throttled
        );
        assert_eq!(
            Refusal::of_code(Some("ThrottlingException")),
            Refusal::Throttled
        );
        assert_eq!(Refusal::of_code(Some("InternalFailure")), Refusal::Other);
        assert_eq!(Refusal::of_code(None), Refusal::Other);
        // A hint makes it the rate limit, whatever the message says.
        for message in ["", "Rate exceeded", "API key quota exceeded"] {
            assert_eq!(
                limit(message, Some("2")),
                Refusal::RateLimited {
                    retry_after: Some(Duration::from_secs(2)),
                    evidence: Evidence::RetryAfter
                },
                "{message:?}"
            );
        }
        // Without one, the message decides; a rate's limit is a rate.
        for message in [
            "Rate exceeded",
            "Request rate limit of 5 per second exceeded",
            "Throttled: slow down",
            "Too Many Requests",
        ] {
            assert_eq!(
                limit(message, None),
                Refusal::RateLimited {
                    retry_after: None,
                    evidence: Evidence::Message
                },
                "{message:?}"
            );
        }
        for message in [
            "API key quota exceeded",
            "Cannot exceed the limit of 10000 API keys",
            "Maximum number of usage plans for this API key reached",
            "Usage plan quota exhausted",
        ] {
            assert_eq!(limit(message, None), Refusal::Quota, "{message:?}");
        }
        // Neither: the ambiguous case is read as the rate limit (the module doc says why).
        for message in ["", "Limit Exceeded", "API key limit exceeded"] {
            assert_eq!(
                limit(message, None),
                Refusal::RateLimited {
                    retry_after: None,
                    evidence: Evidence::Neither
                },
                "{message:?}"
            );
        }
        assert_eq!(
            Refusal::of_code(Some(LIMIT_EXCEEDED)),
            Refusal::RateLimited {
                retry_after: None,
                evidence: Evidence::Neither
            }
        );
        // An empty hint is no hint.
        assert_eq!(limit("quota", Some(" ")), Refusal::Quota);
    }

    #[test]
    fn retry_after_reads_seconds_fractions_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("0.25", now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date already past is no wait.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["-1", "NaN", "inf", "soon", "1e400"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
        // Unreadable, it is still a hint: the rate limit, with the usual backoff.
        assert_eq!(
            limit("", Some("soon")),
            Refusal::RateLimited {
                retry_after: None,
                evidence: Evidence::RetryAfter
            }
        );
    }
}
