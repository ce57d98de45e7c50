//! The four rotation steps. Every step starts with the same checks on the secret's metadata, in
//! the style of AWS's rotation template; then each step is safe to repeat at any point.

use serde_json::Value;
use tracing::Instrument;

use crate::config::FunctionConfig;
use crate::error::{Error, Failure, StepResult};
use crate::event::{EventLabels, RotationEvent, Step};
use crate::metrics::{self, Invocation};
use crate::ports::{KeyGateway, Prober, SecretMetadata, SecretStore, AWSCURRENT, AWSPENDING};

pub(crate) use pending::check_not_stale;
pub use retire::Outcome;
pub use sweep::{SweepOutcome, SWEEP_ACTION, SWEEP_CALLS};

mod create_secret;
mod finish_secret;
mod new_key;
mod pending;
mod plans;
mod retire;
mod set_secret;
mod sweep;
mod test_secret;
pub(crate) mod validate;

/// Every AWS call each step can make, by operation name (happy path or not). The fault matrix
/// takes its rows from this list, and the end-to-end tests fail when a step makes a call that
/// is missing here, so a new call cannot escape the matrix.
pub const STEP_CALLS: [(Step, &[&str]); 4] = [
    (
        Step::Create,
        &[
            "DescribeSecret",
            "GetSecretValue",
            "GetUsagePlan",
            "GetApiKey",
            "GetTags",
            "TagResource",
            "GetApiKeys",
            "CreateApiKey",
            "GetUsagePlans",
            "DeleteUsagePlanKey",
            "CreateUsagePlanKey",
            "PutSecretValue",
        ],
    ),
    (
        Step::Set,
        &[
            "DescribeSecret",
            "GetSecretValue",
            "GetApiKey",
            "GetTags",
            "UpdateApiKey",
            "GetUsagePlans",
            "DeleteUsagePlanKey",
            "CreateUsagePlanKey",
        ],
    ),
    (
        Step::Test,
        &[
            "DescribeSecret",
            "GetSecretValue",
            "GetUsagePlan",
            "GetApiKey",
            "GetTags",
            "GetUsagePlans",
        ],
    ),
    (
        Step::Finish,
        &[
            "DescribeSecret",
            "GetSecretValue",
            "UpdateSecretVersionStage",
            "GetApiKeys",
            "GetUsagePlans",
            "DeleteUsagePlanKey",
            "DeleteApiKey",
            "UpdateApiKey",
            "GetApiKey",
            "GetTags",
            "TagResource",
            "secretsmanager:TagResource",
        ],
    ),
];

/// The AWS calls `step` can make.
pub fn step_calls(step: Step) -> &'static [&'static str] {
    STEP_CALLS
        .iter()
        .find(|(s, _)| *s == step)
        .map(|(_, calls)| *calls)
        .unwrap_or(&[])
}

/// The rotation function: its capabilities, built once, and the function's configuration.
pub struct Rotator<S, K, P> {
    pub secrets: S,
    pub keys: K,
    pub prober: P,
    /// An invalid environment is reported on every invocation rather than crashing the runtime.
    pub config: Result<FunctionConfig, Failure>,
}

/// Where the token stands, after the shared checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenState {
    Pending,
    AlreadyCurrent,
}

/// What each step gets to work with.
pub(crate) struct StepCtx<'a> {
    pub ev: &'a RotationEvent,
    pub meta: SecretMetadata,
    pub config: &'a FunctionConfig,
    pub state: TokenState,
}

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub fn new(secrets: S, keys: K, prober: P, config: Result<FunctionConfig, Failure>) -> Self {
        Rotator {
            secrets,
            keys,
            prober,
            config,
        }
    }

    /// Handles one raw invocation payload.
    pub async fn handle(&self, payload: &Value) -> Result<(), Error> {
        self.handle_measured(payload).await.0
    }

    /// Handles one raw invocation payload, recording its effects for the metrics
    /// (`crate::metrics`). The Lambda entry point writes them as EMF lines.
    pub async fn handle_measured(&self, payload: &Value) -> (Result<(), Error>, Invocation) {
        let started = std::time::Instant::now();
        let (result, counts, name) = metrics::measured(self.handle_event(payload)).await;
        let labels = EventLabels::from_payload(payload);
        let invocation = Invocation {
            step: Step::parse(&labels.step),
            secret: name.unwrap_or(labels.secret),
            duration: started.elapsed(),
            error: result.as_ref().err().map(|e| e.kind),
            counts,
        };
        (result, invocation)
    }

    async fn handle_event(&self, payload: &Value) -> Result<(), Error> {
        let event = crate::event::is_sweep(payload)
            .and_then(|sweep| match sweep {
                // The sweep is the Lambda entry point's (`crate::Function`): a rotator without
                // a secret catalog cannot run it.
                true => Err(Failure::new(
                    crate::error::ErrorKind::InvalidEvent,
                    "the retirement sweep's event is handled by the function's entry point",
                )),
                false => RotationEvent::parse(payload),
            })
            .map_err(|failure| {
                let labels = EventLabels::from_payload(payload);
                tracing::error!(error = %failure, "rejected the event; nothing was changed");
                Error::new(&labels.secret, &labels.step, failure)
            })?;
        let span = tracing::info_span!(
            "rotation",
            step = %event.step,
            secret = %event.secret_id,
            token = %event.token
        );
        self.run(&event)
            .instrument(span.clone())
            .await
            .map_err(|failure| {
                span.in_scope(
                    || tracing::error!(kind = %failure.kind, error = %failure.cause, "step failed"),
                );
                Error::new(&event.secret_id, event.step.as_str(), failure)
            })
    }

    async fn run(&self, ev: &RotationEvent) -> StepResult<()> {
        let config = self.config.as_ref().map_err(Clone::clone)?;
        let meta = self.secrets.describe(&ev.secret_id).await?.ok_or_else(|| {
            Failure::state("the secret does not exist (or this function may not see it)")
        })?;
        metrics::record_secret_name(&meta.name);
        let state = check_token(&meta, &ev.token)?;
        let ctx = StepCtx {
            ev,
            meta,
            config,
            state,
        };
        match ev.step {
            Step::Create => self.create_secret(&ctx).await,
            Step::Set => self.set_secret(&ctx).await,
            Step::Test => self.test_secret(&ctx).await,
            Step::Finish => self.finish_secret(&ctx).await,
        }
    }
}

/// The checks every step makes first.
pub(crate) fn check_token(meta: &SecretMetadata, token: &str) -> StepResult<TokenState> {
    if !meta.rotation_enabled {
        return Err(Failure::state("rotation is not enabled for the secret"));
    }
    if meta.stages_of(token).is_none() {
        return Err(Failure::state(
            "the ClientRequestToken is not a version of the secret",
        ));
    }
    if meta.has_stage(token, AWSCURRENT) {
        return Ok(TokenState::AlreadyCurrent);
    }
    if !meta.has_stage(token, AWSPENDING) {
        return Err(Failure::state(
            "the token's version is neither AWSPENDING nor AWSCURRENT",
        ));
    }
    if let Some(finding) = validate::rolled_back_pending(meta, token) {
        return Err(finding.into());
    }
    Ok(TokenState::Pending)
}

#[cfg(test)]
mod tests;
