//! The retirement sweep: a recurring EventBridge rule invokes the function with
//! `{"Action": "retire-expired-keys"}`, and every key whose grace period has ended is retired by
//! the part it plays now (`Survey::retirement`: a key rolled back to is needed, and survives).
//!
//! Cost: one ListSecrets call per ten due-time prefixes (at most four) finds the secrets with a
//! retirement due, whatever the fleet's size; then, only when one is due, one key listing for the
//! run and a few calls per due secret. Secrets not reached before the invocation's deadline are
//! left to the next run, as is every retirement that failed: its schedule entry stays until the
//! key is retired.

use std::time::Duration;

use super::{Outcome, Rotator};
use crate::config::{FunctionConfig, RotationSettings};
use crate::error::{Error, Failure, StepResult};
use crate::grace::{
    due_prefixes, now_secs, schedule_tag_key, Schedule, LATE_AFTER, RETIRE_TAG_PREFIX,
};
use crate::ownership::{Survey, Values};
use crate::ports::{ApiKey, KeyGateway, Prober, SecretCatalog, SecretStore};
use tracing::Instrument;

pub use crate::event::SWEEP_ACTION;

/// Every AWS call a sweep can make. `secretsmanager:UntagResource` is Secrets Manager's.
pub const SWEEP_CALLS: &[&str] = &[
    "ListSecrets",
    "GetApiKeys",
    "DescribeSecret",
    "GetSecretValue",
    "GetApiKey",
    "GetTags",
    "GetUsagePlans",
    "DeleteUsagePlanKey",
    "DeleteApiKey",
    "UpdateApiKey",
    "secretsmanager:UntagResource",
];

/// A secret is started only with this much of the invocation left: what one secret's
/// retirements take, throttling included. The rest is the next run's.
const RESERVE: Duration = Duration::from_secs(10);

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Secrets ListSecrets found with a retirement due.
    pub due_secrets: usize,
    /// Keys retired at the end of their grace (deleted or disabled).
    pub retired: u64,
    /// Schedule entries removed without retiring: the key was needed (rolled back to), gone,
    /// retired already, or not the secret's.
    pub released: u64,
    /// Secrets whose due retirements failed, each with why: retried by the next run.
    pub failed: Vec<(String, Failure)>,
    /// Secrets not reached before the deadline, or whose labels moved while they were read:
    /// the next run's.
    pub left: usize,
    /// Keys more than `grace::LATE_AFTER` past their due time and still not retired at the end
    /// of this run (failed, or not reached): the alarm's metric. Keys a big batch leaves to the
    /// next run, a minute later, are not.
    pub past_grace: u64,
}

impl<S: SecretStore + SecretCatalog, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    /// Retires every key whose grace period has ended, secret by secret, until the deadline.
    /// `Err` only when the due secrets cannot be found (or the function's configuration is
    /// invalid); a secret that fails is reported in the outcome and retried by the next run.
    pub async fn sweep(&self) -> StepResult<SweepOutcome> {
        let config = self.config.as_ref().map_err(Clone::clone)?;
        let now = now_secs();
        let arns = self.due_secrets(now, config).await?;
        let mut outcome = SweepOutcome {
            due_secrets: arns.len(),
            ..SweepOutcome::default()
        };
        if arns.is_empty() {
            tracing::info!("no retirement is due");
            return Ok(outcome);
        }
        // Every key in the account, once for the run (before any secret is described).
        let listing = self.keys.list_all_keys().await?;
        // Secrets not reached, or whose labels moved while they were read: the next run's.
        let mut unfinished: Vec<&str> = Vec::new();
        for arn in &arns {
            if crate::deadline::current().is_some_and(|i| i.time_left() < RESERVE) {
                outcome.left += 1;
                unfinished.push(arn);
                continue;
            }
            let span = tracing::info_span!("retirement", secret = %arn);
            match self
                .retire_due(arn, now, &listing, config)
                .instrument(span)
                .await
            {
                Ok(Done::Retired { retired, released }) => {
                    outcome.retired += retired;
                    outcome.released += released;
                }
                Ok(Done::Moved) => {
                    outcome.left += 1;
                    unfinished.push(arn);
                }
                Err((late, failure)) => {
                    tracing::error!(secret = %arn, kind = %failure.kind, error = %failure.cause, "the retirement failed; the next run tries again");
                    outcome.past_grace += late;
                    outcome.failed.push((arn.clone(), failure));
                }
            }
        }
        // The alarm's figure counts keys late by more than `LATE_AFTER`, not those a big batch
        // leaves to the next run a minute later: the secrets left are counted when a listing of
        // what was due by then names them (a few calls, only when some were left).
        if !unfinished.is_empty() {
            let late = self.due_secrets(now - LATE_AFTER, config).await;
            outcome.past_grace += match late {
                Ok(late) => unfinished
                    .iter()
                    .filter(|arn| late.iter().any(|l| l == *arn))
                    .count() as u64,
                Err(_) => unfinished.len() as u64,
            };
        }
        if outcome.left > 0 {
            tracing::warn!(
                left = outcome.left,
                "the deadline came before every due secret was reached; the next run goes on"
            );
        }
        tracing::info!(
            due_secrets = outcome.due_secrets,
            retired = outcome.retired,
            released = outcome.released,
            failed = outcome.failed.len(),
            left = outcome.left,
            "sweep done"
        );
        Ok(outcome)
    }

    /// The secrets of this function with a retirement due by `at`.
    async fn due_secrets(
        &self,
        at: i64,
        config: &FunctionConfig,
    ) -> Result<Vec<String>, crate::error::AwsError> {
        self.secrets
            .list_secrets_tagged(
                RETIRE_TAG_PREFIX,
                &due_prefixes(at),
                config.secret_name_prefix.as_deref(),
                config.function_name.as_deref(),
            )
            .await
    }

    /// One sweep as an invocation: its summary (`due_secrets`, `retired`, `released`, `left`),
    /// or an error naming the first secret whose retirements failed and how many did.
    pub async fn handle_sweep(&self) -> (Result<serde_json::Value, Error>, Option<SweepOutcome>) {
        match self.sweep().await {
            Err(failure) => {
                tracing::error!(kind = %failure.kind, error = %failure.cause, "the sweep could not find the due secrets; the next run tries again");
                (
                    Err(Error::new("<due secrets>", SWEEP_ACTION, failure)),
                    None,
                )
            }
            Ok(outcome) => {
                let result = match outcome.failed.first() {
                    None => Ok(serde_json::json!({
                        "due_secrets": outcome.due_secrets,
                        "retired": outcome.retired,
                        "released": outcome.released,
                        "left": outcome.left,
                    })),
                    Some((arn, first)) => Err(Error::new(
                        arn,
                        SWEEP_ACTION,
                        Failure::new(
                            first.kind,
                            format!(
                                "{} (the retirements of {} secret(s) failed; the next run tries again)",
                                first.cause,
                                outcome.failed.len()
                            ),
                        ),
                    )),
                };
                (result, Some(outcome))
            }
        }
    }

    /// The due retirements of one secret, or the number of its keys late by more than
    /// `LATE_AFTER` and why they could not be retired.
    async fn retire_due(
        &self,
        arn: &str,
        now: i64,
        listing: &[ApiKey],
        config: &FunctionConfig,
    ) -> Result<Done, (u64, Failure)> {
        let nothing = Done::Retired {
            retired: 0,
            released: 0,
        };
        let meta = match self.secrets.describe(arn).await {
            Ok(Some(meta)) => meta,
            // Deleted since it was listed: its keys are `cleanup --all`'s.
            Ok(None) => return Ok(nothing),
            Err(e) => return Err((1, e.into())),
        };
        let due = Schedule::from_tags(&meta.tags).due_by(now);
        let late = due.iter().filter(|(_, d)| *d < now - LATE_AFTER).count() as u64;
        let fail = |f: Failure| (late, f);
        if due.is_empty() {
            return Ok(nothing); // the listing lagged behind a change
        }
        // The secret's settings are validated before anything is changed.
        let settings = RotationSettings::from_tags(&meta.tags, config).map_err(fail)?;
        let survey = Survey::read(
            &self.secrets,
            &self.keys,
            &meta,
            Values::new(),
            Some(listing),
        )
        .await
        .map_err(fail)?;
        // The labels and the schedule are read again just before acting: a roll-back or a
        // rotation that moved the labels since is not raced (the secret is the next run's), and
        // a key whose entry changed or went (a roll-back took it out, a sweep running at the
        // same time retired it) is left alone.
        let Some(again) = self
            .secrets
            .describe(arn)
            .await
            .map_err(|e| fail(e.into()))?
        else {
            return Ok(nothing);
        };
        if again.versions != meta.versions {
            tracing::info!("the secret's labels moved while it was read (a rotation or a roll-back); nothing was changed, and the next run tries again");
            return Ok(Done::Moved);
        }
        let still = Schedule::from_tags(&again.tags);
        let (mut retired, mut released) = (0, 0);
        for (id, due_at) in &due {
            if still.due.get(id) != Some(due_at) {
                tracing::info!(key_id = %id, "the key's schedule entry changed while the secret was read; it is left alone");
                continue;
            }
            let result = self
                .retire_now(&survey, id, settings.old_key_action, Some(config))
                .await
                .map_err(fail)?;
            match result {
                Outcome::Deleted | Outcome::Disabled => {
                    retired += 1;
                    tracing::info!(key_id = %id, outcome = result.as_str(), "retired the key: its grace period ended");
                }
                // A key a version needs while a rotation is open keeps its entry: that
                // rotation's finishSecret (a re-run after a move that failed) writes it again,
                // and a removal racing that write could erase the fresh one. The next run
                // looks again.
                Outcome::Kept(_) if again.open_rotation().is_some() => {
                    tracing::info!(key_id = %id, "the key is needed and a rotation is open; its schedule entry is left for the next run");
                    continue;
                }
                other => {
                    released += 1;
                    tracing::info!(key_id = %id, outcome = other.as_str(), "the key's grace period ended; nothing to retire");
                }
            }
            self.secrets
                .untag_secret(arn, &schedule_tag_key(id))
                .await
                .map_err(|e| fail(e.into()))?;
        }
        Ok(Done::Retired { retired, released })
    }
}

/// What became of one due secret.
enum Done {
    Retired {
        retired: u64,
        released: u64,
    },
    /// Its labels moved while it was read: the next run's.
    Moved,
}
