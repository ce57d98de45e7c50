//! api-key-rotator: a Secrets Manager rotation function for Amazon API Gateway API keys.
//!
//! Raw event + secret tags are validated into settings with no side effects (`event`,
//! `config`, `secret`); the steps (`rotation`) work on those through narrow traits (`ports`),
//! which the SDK adapters (`aws`) and the HTTP probe (`probe`) implement. Each invocation runs
//! inside its deadline (`deadline`), which bounds every call the adapters and the probe make.

pub mod aws;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod error;
pub mod event;
pub mod finding;
pub mod grace;
pub mod metrics;
pub mod ops;
pub mod ownership;
pub mod ports;
pub mod probe;
pub mod rotation;
pub mod secret;
pub mod telemetry;

pub use error::{Error, ErrorKind};
pub use rotation::Rotator;

/// The production rotator: the AWS adapters and the HTTP probe.
pub type AwsRotator = Rotator<aws::AwsSecretStore, aws::AwsKeyGateway, probe::HttpProber>;

/// The operator commands over the AWS adapters.
pub type AwsOperator = ops::Operator<
    aws::AwsSecretStore,
    aws::AwsKeyGateway,
    probe::HttpProber,
    aws::AwsFunctionReader,
>;

/// The operator commands' clients, built once from `sdk`. The rotator's own configuration is the
/// default: the commands resolve the rotation function's settings per secret.
pub fn operator_from_sdk(
    sdk: &aws_config::SdkConfig,
    overrides: ops::SettingsOverrides,
    region: String,
) -> AwsOperator {
    ops::Operator::new(
        Rotator::new(
            aws::AwsSecretStore::new(sdk),
            aws::AwsKeyGateway::new(sdk),
            probe::HttpProber::new(Default::default()),
            Ok(config::FunctionConfig::default()),
        ),
        aws::AwsFunctionReader::new(sdk),
        overrides,
        region,
    )
}

/// The function Lambda runs: the rotator, and the margin each invocation keeps before its
/// deadline.
pub struct Function {
    pub rotator: AwsRotator,
    pub margin: std::time::Duration,
}

impl Function {
    /// Builds the function from the process environment. Clients are built here, once.
    pub async fn from_env() -> Result<Function, Box<dyn std::error::Error + Send + Sync>> {
        let margin = deadline::margin_from_lookup(&|name| std::env::var(name).ok())
            .map_err(|f| f.to_string())?;
        Ok(Function {
            rotator: rotator_from_env().await?,
            margin,
        })
    }

    /// One invocation: the step (or the retirement sweep) runs inside the deadline Lambda
    /// handed it, less the margin. `invocation` is fresh for each call; read
    /// `throttled_calls()` from it afterwards.
    pub async fn handle(
        &self,
        payload: &serde_json::Value,
        invocation: &std::sync::Arc<deadline::Invocation>,
    ) -> Result<serde_json::Value, Error> {
        self.handle_measured(payload, invocation).await.0
    }

    /// The same, with the invocation's metrics (`metrics`): what it changed, how long it took,
    /// and the calls it retried for throttling. A rotation step answers `null`; the sweep
    /// (`{"Action": "retire-expired-keys"}`) answers its summary.
    pub async fn handle_measured(
        &self,
        payload: &serde_json::Value,
        invocation: &std::sync::Arc<deadline::Invocation>,
    ) -> (Result<serde_json::Value, Error>, Measured) {
        match event::is_sweep(payload) {
            Ok(true) => {
                let started = std::time::Instant::now();
                let ((result, outcome), counts, _) = invocation
                    .scope(metrics::measured(self.rotator.handle_sweep()))
                    .await;
                let outcome = outcome.unwrap_or_default();
                let run = metrics::SweepRun {
                    duration: started.elapsed(),
                    due_secrets: outcome.due_secrets as u64,
                    retired_at_expiry: outcome.retired,
                    past_grace: outcome.past_grace,
                    failed: result.is_err(),
                    counts,
                };
                (result, Measured::Sweep(run))
            }
            Ok(false) | Err(_) => {
                let (result, measured) = invocation
                    .scope(self.rotator.handle_measured(payload))
                    .await;
                (
                    result.map(|()| serde_json::Value::Null),
                    Measured::Step(measured),
                )
            }
        }
    }
}

/// What one invocation is measured as.
#[derive(Debug, Clone)]
pub enum Measured {
    Step(metrics::Invocation),
    Sweep(metrics::SweepRun),
}

impl Measured {
    /// Writes its EMF lines.
    pub fn write(&self, emf: &metrics::Emf, request_id: &str) {
        match self {
            Measured::Step(inv) => emf.write(inv, request_id),
            Measured::Sweep(run) => emf.write_sweep(run, request_id),
        }
    }
}

/// Builds the production rotator from the process environment. Clients are built here, once.
pub async fn rotator_from_env() -> Result<AwsRotator, Box<dyn std::error::Error + Send + Sync>> {
    let lookup = |name: &str| std::env::var(name).ok();
    let sdk_settings = aws::SdkSettings::from_lookup(&lookup).map_err(|f| f.to_string())?;
    let sdk = aws::load_sdk_config(&sdk_settings).await;
    let config = config::FunctionConfig::from_lookup(&lookup);
    let probe_config = config.as_ref().map(|c| c.probe).unwrap_or_default();
    Ok(Rotator::new(
        aws::AwsSecretStore::new(&sdk),
        aws::AwsKeyGateway::new(&sdk),
        probe::HttpProber::new(probe_config),
        config,
    ))
}
