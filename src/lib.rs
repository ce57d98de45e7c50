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

    /// One invocation: the step runs inside the deadline Lambda handed it, less the margin.
    /// `invocation` is fresh for each call; read `throttled_calls()` from it afterwards.
    pub async fn handle(
        &self,
        payload: &serde_json::Value,
        invocation: &std::sync::Arc<deadline::Invocation>,
    ) -> Result<(), Error> {
        invocation.scope(self.rotator.handle(payload)).await
    }

    /// The same, with the invocation's metrics (`metrics`): what it changed, how long it took,
    /// and the calls it retried for throttling.
    pub async fn handle_measured(
        &self,
        payload: &serde_json::Value,
        invocation: &std::sync::Arc<deadline::Invocation>,
    ) -> (Result<(), Error>, metrics::Invocation) {
        invocation
            .scope(self.rotator.handle_measured(payload))
            .await
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
