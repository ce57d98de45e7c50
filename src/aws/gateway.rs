//! API Gateway behind `KeyGateway`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_apigateway::error::ProvideErrorMetadata;
use aws_sdk_apigateway::types::{Op, PatchOperation};
use aws_sdk_apigateway::{config, Client};

use super::throttle::{CallOverride, CallPolicy};
use super::{aws_error, next_page, policy_of};
use crate::error::AwsError;
use crate::ports::{ApiKey, KeyGateway, NewKey, PlanCatalog, UsagePlan};
use crate::secret::KeyValue;

/// GetApiKeys, GetUsagePlans and GetUsagePlanKeys return at most 500 items a page.
const PAGE: i32 = 500;

#[derive(Debug, Clone)]
pub struct AwsKeyGateway {
    client: Client,
    region: String,
    policy: CallPolicy,
}

impl AwsKeyGateway {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        Self::from_client(Client::new(sdk), region)
    }
    /// The call policy (throttling backoff, timeouts, budget) comes from the client's settings.
    pub fn from_client(client: Client, region: String) -> Self {
        let policy = policy_of(
            client.config().retry_config(),
            client.config().timeout_config(),
        );
        AwsKeyGateway {
            client,
            region,
            policy,
        }
    }
    fn key_arn(&self, key_id: &str) -> String {
        let partition = if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        format!(
            "arn:{partition}:apigateway:{}::/apikeys/{key_id}",
            self.region
        )
    }
}

/// GetApiKey, GetApiKeys and CreateApiKey answer with three types of the same shape: one
/// conversion serves them all.
macro_rules! to_key {
    ($k:expr) => {{
        let k = $k;
        ApiKey {
            id: k.id().unwrap_or_default().to_owned(),
            name: k.name().unwrap_or_default().to_owned(),
            value: k.value().map(KeyValue::new),
            enabled: k.enabled(),
            description: k.description().map(str::to_owned),
            customer_id: k.customer_id().map(str::to_owned),
            tags: k
                .tags()
                .map(|t| t.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
                .unwrap_or_default(),
            created: k.created_date().map(|d| d.secs()),
        }
    }};
}

/// GetUsagePlan and GetUsagePlans answer with two types of the same shape.
macro_rules! to_plan {
    ($p:expr, $id:expr) => {{
        let p = $p;
        UsagePlan {
            id: p.id().unwrap_or($id).to_owned(),
            api_stages: p
                .api_stages()
                .iter()
                .map(|s| {
                    (
                        s.api_id().unwrap_or_default().to_owned(),
                        s.stage().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
        }
    }};
}

/// One call's override: its timeouts and the classifier that keeps throttling to the helper.
fn overrides<E>(o: CallOverride<E>) -> config::Builder
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    config::Builder::default()
        .timeout_config(o.timeouts)
        .retry_classifier(o.classifier)
}

/// Sends `$req` (rebuilt for each try) through the call policy: throttling waited out until the
/// deadline, every other error after the SDK's ordinary retries.
macro_rules! send {
    ($self:ident, $op:literal, $req:expr) => {
        $self
            .policy
            .send($op, |o| {
                $req.customize().config_override(overrides(o)).send()
            })
            .await
    };
}

fn to_hash(tags: &BTreeMap<String, String>) -> HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl AwsKeyGateway {
    async fn get_api_keys(
        &self,
        name: Option<&str>,
        values: bool,
    ) -> Result<Vec<ApiKey>, AwsError> {
        let mut keys = Vec::new();
        let mut position: Option<String> = None;
        loop {
            let out = send!(
                self,
                "GetApiKeys",
                self.client
                    .get_api_keys()
                    .set_name_query(name.map(str::to_owned))
                    .include_values(values)
                    .limit(PAGE)
                    .set_position(position.clone())
            )
            .map_err(|e| aws_error("GetApiKeys", &e))?;
            keys.extend(out.items().iter().map(|k| to_key!(k)));
            position = next_page(out.position(), &position);
            if position.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Every usage plan (GetUsagePlans, every page), or only those the key is on.
    async fn get_usage_plans(
        &self,
        key_id: Option<&str>,
    ) -> Result<Vec<aws_sdk_apigateway::types::UsagePlan>, AwsError> {
        let mut plans = Vec::new();
        let mut position: Option<String> = None;
        loop {
            let out = send!(
                self,
                "GetUsagePlans",
                self.client
                    .get_usage_plans()
                    .set_key_id(key_id.map(str::to_owned))
                    .limit(PAGE)
                    .set_position(position.clone())
            )
            .map_err(|e| aws_error("GetUsagePlans", &e))?;
            plans.extend(out.items().iter().cloned());
            position = next_page(out.position(), &position);
            if position.is_none() {
                return Ok(plans);
            }
        }
    }
}

#[async_trait]
impl KeyGateway for AwsKeyGateway {
    async fn get_usage_plan(&self, plan_id: &str) -> Result<Option<UsagePlan>, AwsError> {
        match send!(
            self,
            "GetUsagePlan",
            self.client.get_usage_plan().usage_plan_id(plan_id)
        ) {
            Ok(out) => Ok(Some(to_plan!(&out, plan_id))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(aws_error("GetUsagePlan", &e)),
        }
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<ApiKey>, AwsError> {
        match send!(
            self,
            "GetApiKey",
            self.client
                .get_api_key()
                .api_key(key_id)
                .include_value(true)
        ) {
            Ok(out) => Ok(Some(to_key!(&out))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(aws_error("GetApiKey", &e)),
        }
    }

    async fn find_keys_with_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>, AwsError> {
        let mut keys = self.get_api_keys(Some(prefix), false).await?;
        keys.retain(|k| k.name.starts_with(prefix));
        Ok(keys)
    }

    async fn list_all_keys(&self) -> Result<Vec<ApiKey>, AwsError> {
        self.get_api_keys(None, false).await
    }

    async fn create_key(&self, key: &NewKey) -> Result<ApiKey, AwsError> {
        let out = send!(
            self,
            "CreateApiKey",
            self.client
                .create_api_key()
                .name(&key.name)
                .set_description(key.description.clone())
                .set_customer_id(key.customer_id.clone())
                .enabled(true)
                .set_tags(Some(to_hash(&key.tags)))
        )
        .map_err(|e| aws_error("CreateApiKey", &e))?;
        Ok(to_key!(&out))
    }

    async fn tag_key(&self, key_id: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        send!(
            self,
            "TagResource",
            self.client
                .tag_resource()
                .resource_arn(self.key_arn(key_id))
                .set_tags(Some(to_hash(tags)))
        )
        .map(|_| ())
        .map_err(|e| aws_error("TagResource", &e))
    }

    async fn key_tags(&self, key_id: &str) -> Result<BTreeMap<String, String>, AwsError> {
        match send!(
            self,
            "GetTags",
            self.client.get_tags().resource_arn(self.key_arn(key_id))
        ) {
            Ok(out) => Ok(out
                .tags()
                .map(|t| t.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
                .unwrap_or_default()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(BTreeMap::new())
            }
            Err(e) => Err(aws_error("GetTags", &e)),
        }
    }

    async fn set_key_enabled(&self, key_id: &str, enabled: bool) -> Result<(), AwsError> {
        send!(
            self,
            "UpdateApiKey",
            self.client
                .update_api_key()
                .api_key(key_id)
                .patch_operations(
                    PatchOperation::builder()
                        .op(Op::Replace)
                        .path("/enabled")
                        .value(if enabled { "true" } else { "false" })
                        .build(),
                )
        )
        .map(|_| ())
        .map_err(|e| aws_error("UpdateApiKey", &e))
    }

    async fn delete_key(&self, key_id: &str) -> Result<(), AwsError> {
        self.delete_key_if_present(key_id).await.map(|_| ())
    }

    async fn delete_key_if_present(&self, key_id: &str) -> Result<bool, AwsError> {
        match send!(
            self,
            "DeleteApiKey",
            self.client.delete_api_key().api_key(key_id)
        ) {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(aws_error("DeleteApiKey", &e)),
        }
    }

    async fn plans_of_key(&self, key_id: &str) -> Result<Vec<String>, AwsError> {
        Ok(self
            .get_usage_plans(Some(key_id))
            .await?
            .iter()
            .filter_map(|p| p.id().map(str::to_owned))
            .collect())
    }

    async fn attach(&self, plan_id: &str, key_id: &str) -> Result<(), AwsError> {
        match send!(
            self,
            "CreateUsagePlanKey",
            self.client
                .create_usage_plan_key()
                .usage_plan_id(plan_id)
                .key_id(key_id)
                .key_type("API_KEY")
        ) {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conflict_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_error("CreateUsagePlanKey", &e)),
        }
    }

    async fn detach(&self, plan_id: &str, key_id: &str) -> Result<(), AwsError> {
        match send!(
            self,
            "DeleteUsagePlanKey",
            self.client
                .delete_usage_plan_key()
                .usage_plan_id(plan_id)
                .key_id(key_id)
        ) {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_error("DeleteUsagePlanKey", &e)),
        }
    }
}

#[async_trait]
impl PlanCatalog for AwsKeyGateway {
    async fn list_plans(&self) -> Result<Vec<UsagePlan>, AwsError> {
        Ok(self
            .get_usage_plans(None)
            .await?
            .iter()
            .filter(|p| p.id().is_some())
            .map(|p| to_plan!(p, ""))
            .collect())
    }

    async fn plan_key_ids(&self, plan_id: &str) -> Result<Option<Vec<String>>, AwsError> {
        let mut keys = Vec::new();
        let mut position: Option<String> = None;
        loop {
            let out = match send!(
                self,
                "GetUsagePlanKeys",
                self.client
                    .get_usage_plan_keys()
                    .usage_plan_id(plan_id)
                    .limit(PAGE)
                    .set_position(position.clone())
            ) {
                Ok(out) => out,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_not_found_exception()) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(aws_error("GetUsagePlanKeys", &e)),
            };
            keys.extend(out.items().iter().filter_map(|k| k.id().map(str::to_owned)));
            position = next_page(out.position(), &position);
            if position.is_none() {
                return Ok(Some(keys));
            }
        }
    }
}
