//! The invocation's deadline, and what waiting against it cost.
//!
//! Lambda hands every invocation a deadline (`lambda-runtime-deadline-ms`). The function opens an
//! [`Invocation`] from it, minus a margin that leaves time to report a clean error, and runs the
//! step inside [`Invocation::scope`]. Every AWS call (`crate::aws`) and the TestUrl probe
//! (`crate::probe`) read the work deadline from the scope, so no call outlives it, and the AWS
//! adapters count here the calls they retried for throttling.
//!
//! Outside a scope (the end-to-end tests drive the handler directly) there is no deadline: the
//! adapters then bound each call by their configured budget (`ROTATOR_OPERATION_TIMEOUT_MS`) and
//! the probe by its own (`TEST_URL_BUDGET_MS`).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::config::env_millis;
use crate::error::StepResult;

/// How long before Lambda's deadline the work stops, by default: long enough for a call cut
/// short to come back and for the step to report its error before Lambda ends the process.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(5);

/// The budget of an invocation whose runtime handed no usable deadline: the template's timeout
/// less the default margin.
pub const UNKNOWN_DEADLINE_BUDGET: Duration = Duration::from_secs(295);

/// The margin, from `ROTATOR_DEADLINE_MARGIN_MS` (milliseconds, default 5000).
pub fn margin_from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> StepResult<Duration> {
    env_millis(lookup, "ROTATOR_DEADLINE_MARGIN_MS", DEFAULT_MARGIN)
}

/// One invocation: the instant its work must be done by, and the throttling it met.
#[derive(Debug)]
pub struct Invocation {
    deadline: Instant,
    throttled_calls: AtomicU32,
    throttled_responses: AtomicU32,
}

tokio::task_local! {
    static CURRENT: Arc<Invocation>;
}

impl Invocation {
    /// Work must be done by `deadline`.
    pub fn until(deadline: Instant) -> Arc<Invocation> {
        Arc::new(Invocation {
            deadline,
            throttled_calls: AtomicU32::new(0),
            throttled_responses: AtomicU32::new(0),
        })
    }

    /// Work gets `budget` from now (operator commands, tests).
    pub fn with_budget(budget: Duration) -> Arc<Invocation> {
        Self::until(Instant::now() + budget)
    }

    /// From Lambda's deadline (milliseconds since the epoch, as the Runtime API hands it), less
    /// `margin`. A deadline already past, or closer than the margin, leaves no time at all.
    pub fn from_lambda_deadline(deadline_ms: u64, margin: Duration) -> Arc<Invocation> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_millis(deadline_ms).saturating_sub(now);
        // Lambda never starts an invocation past its deadline; a local runtime may hand none
        // that is usable (cargo lambda watch's is already past). Then the time left is unknown,
        // and the invocation gets the budget a function's timeout allows (the template's 300 s).
        if left.is_zero() {
            return Self::with_budget(UNKNOWN_DEADLINE_BUDGET);
        }
        // A margin never takes more than a tenth of the time left: a function with a short
        // timeout still gets most of it to work in.
        let margin = margin.min(left / 10);
        Self::until(Instant::now() + left.saturating_sub(margin))
    }

    /// Runs `work` with this invocation as the current one.
    pub async fn scope<F: Future>(self: &Arc<Self>, work: F) -> F::Output {
        CURRENT.scope(self.clone(), work).await
    }

    /// The instant the work must be done by (Lambda's deadline less the margin).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time left before the work deadline (zero once it has passed).
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// AWS calls that were refused for throttling at least once and retried during this
    /// invocation (each call counts once, however many times it was refused). This is what the
    /// `ThrottledCalls` metric reports.
    pub fn throttled_calls(&self) -> u32 {
        self.throttled_calls.load(Ordering::Relaxed)
    }

    /// Throttling refusals during this invocation, every retry of every call counted.
    pub fn throttled_responses(&self) -> u32 {
        self.throttled_responses.load(Ordering::Relaxed)
    }

    /// Records a throttling refusal; `first` when it is the call's first.
    pub(crate) fn record_throttled(&self, first: bool) {
        self.throttled_responses.fetch_add(1, Ordering::Relaxed);
        if first {
            self.throttled_calls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The invocation the current task runs in, if any.
pub fn current() -> Option<Arc<Invocation>> {
    CURRENT.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lambda_deadline_less_the_margin_is_the_work_deadline() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let inv = Invocation::from_lambda_deadline(now_ms + 300_000, Duration::from_secs(5));
        let left = inv.time_left();
        assert!(left <= Duration::from_secs(295), "{left:?}");
        assert!(left >= Duration::from_secs(294), "{left:?}");
        // A margin takes at most a tenth of a short deadline.
        let short =
            Invocation::from_lambda_deadline(now_ms + 2_000, Duration::from_secs(5)).time_left();
        assert!(
            short <= Duration::from_millis(1_800) && short >= Duration::from_millis(1_700),
            "{short:?}"
        );
        // A deadline already past (cargo lambda watch hands one) is no deadline: the budget.
        let past =
            Invocation::from_lambda_deadline(now_ms.saturating_sub(1_000), Duration::from_secs(5))
                .time_left();
        assert!(past >= Duration::from_secs(294), "{past:?}");
    }

    #[tokio::test]
    async fn the_scope_is_seen_inside_and_not_outside() {
        assert!(current().is_none());
        let inv = Invocation::with_budget(Duration::from_secs(10));
        let seen = inv
            .scope(async {
                current().map(|i| {
                    i.record_throttled(true);
                    i.record_throttled(false);
                    i.deadline()
                })
            })
            .await;
        assert_eq!(seen, Some(inv.deadline()));
        assert_eq!((inv.throttled_calls(), inv.throttled_responses()), (1, 2));
        assert!(current().is_none());
    }

    #[test]
    fn the_margin_is_read_in_milliseconds() {
        assert_eq!(margin_from_lookup(&|_| None), Ok(DEFAULT_MARGIN));
        assert_eq!(
            margin_from_lookup(&|_| Some("1500".into())),
            Ok(Duration::from_millis(1500))
        );
        assert!(margin_from_lookup(&|_| Some("soon".into())).is_err());
    }
}
