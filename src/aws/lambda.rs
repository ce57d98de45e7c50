//! Lambda behind `FunctionReader`: the operator commands read the rotation function's own
//! settings (its allow-lists, its timeout). The Lambda function itself never builds this client.

use async_trait::async_trait;
use aws_sdk_lambda::error::ProvideErrorMetadata;
use aws_sdk_lambda::{config, Client};

use super::throttle::{CallOverride, CallPolicy};
use super::{aws_error, policy_of};
use crate::error::AwsError;
use crate::ports::{FunctionReader, FunctionSettings};

#[derive(Debug, Clone)]
pub struct AwsFunctionReader {
    client: Client,
    policy: CallPolicy,
}

impl AwsFunctionReader {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let client = Client::new(sdk);
        let policy = policy_of(
            client.config().retry_config(),
            client.config().timeout_config(),
        );
        AwsFunctionReader { client, policy }
    }
}

fn overrides<E>(o: CallOverride<E>) -> config::Builder
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    config::Builder::default()
        .timeout_config(o.timeouts)
        .retry_classifier(o.classifier)
}

#[async_trait]
impl FunctionReader for AwsFunctionReader {
    async fn function_settings(
        &self,
        function: &str,
    ) -> Result<Option<FunctionSettings>, AwsError> {
        let sent = self
            .policy
            .send("GetFunctionConfiguration", |o| {
                self.client
                    .get_function_configuration()
                    .function_name(function)
                    .customize()
                    .config_override(overrides(o))
                    .send()
            })
            .await;
        match sent {
            Ok(out) => Ok(Some(FunctionSettings {
                environment: out
                    .environment()
                    .and_then(|e| e.variables())
                    .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                timeout_seconds: out.timeout().and_then(|t| u32::try_from(t).ok()),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(aws_error("GetFunctionConfiguration", &e)),
        }
    }
}
