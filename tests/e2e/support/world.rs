//! The test world: SDK clients on the local AWS for set-up and inspection, and a stand-in for
//! Secrets Manager that opens a rotation with RotateSecret and then invokes the steps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use api_key_rotator::aws::{AwsKeyGateway, AwsSecretStore, SdkSettings};
use api_key_rotator::config::{FunctionConfig, TIE_TAG};
use api_key_rotator::probe::HttpProber;
use api_key_rotator::{AwsRotator, Error, Rotator};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_apigateway::types::{ApiStage, QuotaPeriodType, QuotaSettings, ThrottleSettings};
use aws_sdk_secretsmanager::config::Credentials;
use aws_sdk_secretsmanager::types::{RotationRulesType, Tag};
use serde_json::{json, Value};

use super::R;

pub const REGION: &str = "us-east-1";

/// Every key value and RotationToken the test world saw or sent, for the log scan.
pub static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub fn remember(secret: &str) {
    if let Ok(mut seen) = SEEN.lock() {
        seen.push(secret.to_owned());
    }
}
pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// The access key of the local AWS's default account (000000000000).
pub const DEFAULT_ACCESS_KEY: &str = "test";

pub async fn sdk_config(endpoint: &str, settings: &SdkSettings) -> SdkConfig {
    sdk_config_as(endpoint, settings, DEFAULT_ACCESS_KEY).await
}

/// The same, as `access_key`: the local AWS takes a 12-digit access key id as the account id.
pub async fn sdk_config_as(endpoint: &str, settings: &SdkSettings, access_key: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(access_key, "test", None, None, "e2e"))
        .retry_config(settings.retry_config())
        .timeout_config(settings.timeout_config())
        .load()
        .await
}

/// Millisecond backoffs, so that faults play out fast.
pub fn fast_sdk() -> SdkSettings {
    SdkSettings {
        adaptive: false,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(30),
    }
}

pub struct World {
    pub endpoint: String,
    pub sm: aws_sdk_secretsmanager::Client,
    pub ag: aws_sdk_apigateway::Client,
    pub lambda_arn: String,
    /// The access key every client of this world signs with: it names the account.
    pub access_key: String,
    counter: AtomicU32,
}

/// Accounts made by `World::in_own_account`, so far.
static ACCOUNTS: AtomicU32 = AtomicU32::new(0);

/// A snapshot of everything a rotation could change, to prove that a refused one changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub keys: BTreeMap<String, (String, bool)>,
    pub attachments: BTreeMap<String, BTreeSet<String>>,
    pub versions: BTreeMap<String, Vec<String>>,
    pub current: Option<String>,
}

impl World {
    pub async fn new(endpoint: &str) -> R<World> {
        Self::new_as(endpoint, DEFAULT_ACCESS_KEY).await
    }

    /// A world on the same local AWS in an account of its own, which no other case touches:
    /// for what acts on a whole account (the retirement sweep) or counts its calls.
    pub async fn in_own_account(&self) -> R<World> {
        let n = ACCOUNTS.fetch_add(1, Ordering::SeqCst);
        let account = format!("1{:05}{:06}", std::process::id() % 100_000, n);
        let world = Self::new_as(&self.endpoint, &account).await?;
        if !world.lambda_arn.contains(&format!(":{account}:")) {
            return Err(format!(
                "the local AWS did not put the world in account {account}: {}",
                world.lambda_arn
            )
            .into());
        }
        Ok(world)
    }

    async fn new_as(endpoint: &str, access_key: &str) -> R<World> {
        let sdk = sdk_config_as(endpoint, &SdkSettings::default(), access_key).await;
        let lambda = aws_sdk_lambda::Client::new(&sdk);
        let zip = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stub-function.zip"
        ))?;
        let created = lambda
            .create_function()
            .function_name("api-key-rotator")
            .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
            .role("arn:aws:iam::000000000000:role/api-key-rotator")
            .handler("bootstrap")
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(zip.into())
                    .build(),
            )
            .send()
            .await;
        // A first call on a cold local AWS can be slow enough for the SDK to send it again: the
        // function then exists already.
        let lambda_arn = match created {
            Ok(f) => f.function_arn().unwrap_or_default().to_owned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_conflict_exception()) =>
            {
                lambda
                    .get_function()
                    .function_name("api-key-rotator")
                    .send()
                    .await?
                    .configuration()
                    .and_then(|c| c.function_arn())
                    .unwrap_or_default()
                    .to_owned()
            }
            Err(e) => return Err(e.into()),
        };
        Ok(World {
            endpoint: endpoint.to_owned(),
            sm: aws_sdk_secretsmanager::Client::new(&sdk),
            ag: aws_sdk_apigateway::Client::new(&sdk),
            lambda_arn,
            access_key: access_key.to_owned(),
            counter: AtomicU32::new(0),
        })
    }

    pub fn unique(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// A fresh 36-character token, as Secrets Manager makes.
    pub fn token(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let hex = format!(
            "{:016x}{:08x}{:08x}{:04x}",
            t as u64,
            std::process::id(),
            n,
            0xabcu32
        );
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// A rotator on the real AWS adapters, talking to `endpoint` (the emulator or a proxy).
    pub async fn rotator(&self, endpoint: &str, config: FunctionConfig) -> R<AwsRotator> {
        self.rotator_with(endpoint, config, &fast_sdk()).await
    }

    pub async fn rotator_with(
        &self,
        endpoint: &str,
        config: FunctionConfig,
        sdk: &SdkSettings,
    ) -> R<AwsRotator> {
        let sdk_cfg = sdk_config_as(endpoint, sdk, &self.access_key).await;
        Ok(Rotator::new(
            AwsSecretStore::new(&sdk_cfg),
            AwsKeyGateway::new(&sdk_cfg),
            HttpProber::new(config.probe),
            Ok(config),
        ))
    }

    /// A REST API whose GET / needs an API key (MOCK integration), deployed to stage `prod`.
    pub async fn create_api(&self) -> R<String> {
        let api = self
            .ag
            .create_rest_api()
            .name(self.unique("api"))
            .send()
            .await?;
        let api_id = api.id().unwrap_or_default().to_owned();
        let resources = self.ag.get_resources().rest_api_id(&api_id).send().await?;
        let root = resources
            .items()
            .iter()
            .find(|r| r.path() == Some("/"))
            .and_then(|r| r.id())
            .ok_or("no root resource")?
            .to_owned();
        self.ag
            .put_method()
            .rest_api_id(&api_id)
            .resource_id(&root)
            .http_method("GET")
            .authorization_type("NONE")
            .api_key_required(true)
            .send()
            .await?;
        self.ag
            .put_integration()
            .rest_api_id(&api_id)
            .resource_id(&root)
            .http_method("GET")
            .r#type(aws_sdk_apigateway::types::IntegrationType::Mock)
            .request_templates("application/json", r#"{"statusCode": 200}"#)
            .send()
            .await?;
        self.ag
            .put_method_response()
            .rest_api_id(&api_id)
            .resource_id(&root)
            .http_method("GET")
            .status_code("200")
            .send()
            .await?;
        self.ag
            .put_integration_response()
            .rest_api_id(&api_id)
            .resource_id(&root)
            .http_method("GET")
            .status_code("200")
            .response_templates("application/json", r#"{"ok": true}"#)
            .send()
            .await?;
        self.ag
            .create_deployment()
            .rest_api_id(&api_id)
            .stage_name("prod")
            .send()
            .await?;
        Ok(api_id)
    }

    /// A usage plan (5 rps, burst 10, 1000 a day) covering `api`'s `prod` stage, if given.
    pub async fn create_plan(&self, api: Option<&str>) -> R<String> {
        let mut req = self
            .ag
            .create_usage_plan()
            .name(self.unique("plan"))
            .throttle(
                ThrottleSettings::builder()
                    .rate_limit(5.0)
                    .burst_limit(10)
                    .build(),
            )
            .quota(
                QuotaSettings::builder()
                    .limit(1000)
                    .period(QuotaPeriodType::Day)
                    .build(),
            );
        if let Some(api) = api {
            req = req.api_stages(ApiStage::builder().api_id(api).stage("prod").build());
        }
        Ok(req.send().await?.id().unwrap_or_default().to_owned())
    }

    pub async fn create_key(&self, name: &str) -> R<(String, String)> {
        let k = self
            .ag
            .create_api_key()
            .name(name)
            .enabled(true)
            .description("the partner's first key")
            .customer_id("marketplace-customer-1")
            .send()
            .await?;
        Ok((
            k.id().unwrap_or_default().to_owned(),
            k.value().unwrap_or_default().to_owned(),
        ))
    }

    /// A key as createSecret makes it (named for a token, tied to the secret), as if an earlier
    /// try had made it and crashed before storing it.
    pub async fn create_tied_key(&self, name: &str, secret_arn: &str) -> R<String> {
        let k = self
            .ag
            .create_api_key()
            .name(name)
            .enabled(true)
            .tags(TIE_TAG, secret_arn)
            .send()
            .await?;
        Ok(k.id().unwrap_or_default().to_owned())
    }

    pub async fn attach(&self, plan: &str, key: &str) -> R<()> {
        self.ag
            .create_usage_plan_key()
            .usage_plan_id(plan)
            .key_id(key)
            .key_type("API_KEY")
            .send()
            .await?;
        Ok(())
    }

    /// A secret with these tags and value, rotation enabled through RotationRules.
    pub async fn create_secret(&self, value: Option<&str>, tags: &[(&str, &str)]) -> R<String> {
        self.create_secret_named(&self.unique("partner-secret"), value, tags)
            .await
    }

    pub async fn create_secret_named(
        &self,
        name: &str,
        value: Option<&str>,
        tags: &[(&str, &str)],
    ) -> R<String> {
        let mut req = self.sm.create_secret().name(name);
        if let Some(v) = value {
            req = req.secret_string(v);
        }
        for (k, v) in tags {
            req = req.tags(Tag::builder().key(*k).value(*v).build());
        }
        Ok(req.send().await?.arn().unwrap_or_default().to_owned())
    }

    /// What Secrets Manager does first: RotateSecret opens the token's AWSPENDING version with
    /// no value (the registered function cannot run here).
    pub async fn open_rotation(&self, secret: &str) -> R<String> {
        self.open_rotation_with(secret, &self.lambda_arn).await
    }

    /// The same, with `function` as the secret's rotation function.
    pub async fn open_rotation_with(&self, secret: &str, function: &str) -> R<String> {
        let token = self.token();
        self.sm
            .rotate_secret()
            .secret_id(secret)
            .rotation_lambda_arn(function)
            .rotation_rules(
                RotationRulesType::builder()
                    .automatically_after_days(30)
                    .build(),
            )
            .client_request_token(&token)
            .send()
            .await?;
        Ok(token)
    }

    pub fn event(step: &str, secret: &str, token: &str) -> Value {
        json!({"Step": step, "SecretId": secret, "ClientRequestToken": token})
    }

    /// Opens a rotation and runs createSecret and setSecret, leaving testSecret to the caller.
    pub async fn open_until_test(&self, rotator: &AwsRotator, secret: &str) -> R<String> {
        let token = self.open_rotation(secret).await?;
        for step in ["createSecret", "setSecret"] {
            rotator.handle(&Self::event(step, secret, &token)).await?;
        }
        Ok(token)
    }

    /// Invokes the four steps in order, stopping at the first error.
    pub async fn run_steps(rotator: &AwsRotator, secret: &str, token: &str) -> Result<(), Error> {
        for step in STEPS {
            rotator.handle(&Self::event(step, secret, token)).await?;
        }
        Ok(())
    }

    /// A whole rotation as Secrets Manager plays it: open it, run the steps, and on a failure
    /// run the whole rotation again with the same token, up to `tries` times.
    pub async fn rotate(
        &self,
        rotator: &AwsRotator,
        secret: &str,
        tries: u32,
    ) -> R<(String, Vec<Error>)> {
        let token = self.open_rotation(secret).await?;
        let errors = Self::drive(rotator, secret, &token, tries, || {}).await?;
        Ok((token, errors))
    }

    /// Re-runs the whole rotation with the same token until it succeeds; `between` runs after
    /// each failed try (e.g. to clear a fault).
    pub async fn drive(
        rotator: &AwsRotator,
        secret: &str,
        token: &str,
        tries: u32,
        mut between: impl FnMut(),
    ) -> R<Vec<Error>> {
        let mut errors = Vec::new();
        for _ in 0..tries {
            match Self::run_steps(rotator, secret, token).await {
                Ok(()) => return Ok(errors),
                Err(e) => {
                    errors.push(e);
                    between();
                }
            }
        }
        Err(format!("rotation did not complete in {tries} tries: {errors:?}").into())
    }

    pub async fn all_keys(&self) -> R<Vec<aws_sdk_apigateway::types::ApiKey>> {
        let mut keys = Vec::new();
        let mut position: Option<String> = None;
        loop {
            let out = self
                .ag
                .get_api_keys()
                .include_values(true)
                .limit(500)
                .set_position(position.clone())
                .send()
                .await?;
            keys.extend(out.items().iter().cloned());
            match out.position() {
                Some(p) if Some(p) != position.as_deref() && !p.is_empty() => {
                    position = Some(p.to_owned())
                }
                _ => return Ok(keys),
            }
        }
    }

    /// Keys tied to the secret by the function's tag.
    pub async fn tied_keys(&self, secret_arn: &str) -> R<Vec<aws_sdk_apigateway::types::ApiKey>> {
        Ok(self
            .all_keys()
            .await?
            .into_iter()
            .filter(|k| {
                k.tags().and_then(|t| t.get(TIE_TAG)).map(String::as_str) == Some(secret_arn)
            })
            .collect())
    }

    pub async fn key(&self, id: &str) -> R<Option<aws_sdk_apigateway::types::ApiKey>> {
        match self
            .ag
            .get_api_key()
            .api_key(id)
            .include_value(true)
            .send()
            .await
        {
            Ok(k) => Ok(Some(
                aws_sdk_apigateway::types::ApiKey::builder()
                    .set_id(k.id().map(str::to_owned))
                    .set_name(k.name().map(str::to_owned))
                    .set_value(k.value().map(str::to_owned))
                    .enabled(k.enabled())
                    .set_description(k.description().map(str::to_owned))
                    .set_customer_id(k.customer_id().map(str::to_owned))
                    .set_tags(k.tags().cloned())
                    .build(),
            )),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Keys whose name starts with `prefix` (nameQuery narrows, the filter makes it exact).
    pub async fn keys_with_prefix(
        &self,
        prefix: &str,
    ) -> R<Vec<aws_sdk_apigateway::types::ApiKey>> {
        let out = self
            .ag
            .get_api_keys()
            .name_query(prefix)
            .include_values(true)
            .limit(500)
            .send()
            .await?;
        Ok(out
            .items()
            .iter()
            .filter(|k| k.name().is_some_and(|n| n.starts_with(prefix)))
            .cloned()
            .collect())
    }

    pub async fn plan_keys(&self, plan: &str) -> R<BTreeSet<String>> {
        let out = self
            .ag
            .get_usage_plan_keys()
            .usage_plan_id(plan)
            .limit(500)
            .send()
            .await?;
        Ok(out
            .items()
            .iter()
            .filter_map(|k| k.id().map(str::to_owned))
            .collect())
    }

    pub async fn versions(&self, secret: &str) -> R<BTreeMap<String, Vec<String>>> {
        let d = self.sm.describe_secret().secret_id(secret).send().await?;
        Ok(d.version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let mut v = v.clone();
                        v.sort();
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn value(&self, secret: &str, stage: &str) -> R<Option<Value>> {
        match self
            .sm
            .get_secret_value()
            .secret_id(secret)
            .version_stage(stage)
            .send()
            .await
        {
            Ok(v) => Ok(match v.secret_string() {
                Some(s) if !s.is_empty() => {
                    let value: Value = serde_json::from_str(s)?;
                    if let Some(k) = value.get("api_key_value").and_then(Value::as_str) {
                        remember(k);
                    }
                    Some(value)
                }
                _ => None,
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn snapshot(&self, secret: &str, plans: &[&str]) -> R<Snapshot> {
        let keys = self
            .all_keys()
            .await?
            .into_iter()
            .map(|k| {
                (
                    k.id().unwrap_or_default().to_owned(),
                    (k.name().unwrap_or_default().to_owned(), k.enabled()),
                )
            })
            .collect();
        let mut attachments = BTreeMap::new();
        for p in plans {
            attachments.insert((*p).to_owned(), self.plan_keys(p).await?);
        }
        let current = match self.sm.get_secret_value().secret_id(secret).send().await {
            Ok(v) => v.secret_string().map(str::to_owned),
            Err(_) => None,
        };
        Ok(Snapshot {
            keys,
            attachments,
            versions: self.versions(secret).await?,
            current,
        })
    }

    /// Enables or disables a key behind the function's back (UpdateApiKey).
    pub async fn set_key_enabled(&self, id: &str, enabled: bool) -> R<()> {
        self.ag
            .update_api_key()
            .api_key(id)
            .patch_operations(
                aws_sdk_apigateway::types::PatchOperation::builder()
                    .op(aws_sdk_apigateway::types::Op::Replace)
                    .path("/enabled")
                    .value(if enabled { "true" } else { "false" })
                    .build(),
            )
            .send()
            .await?;
        Ok(())
    }

    /// Disables or detaches the pending key behind the function's back, so that setSecret must
    /// repair it (or testSecret must refuse it).
    pub async fn break_pending_key(
        &self,
        secret: &str,
        token: &str,
        plan: &str,
        disable: bool,
    ) -> R<()> {
        let pending = self
            .sm
            .get_secret_value()
            .secret_id(secret)
            .version_id(token)
            .send()
            .await?;
        let v: Value = serde_json::from_str(pending.secret_string().unwrap_or("{}"))?;
        let id = v["api_key_id"].as_str().unwrap_or_default().to_owned();
        if disable {
            self.set_key_enabled(&id, false).await?;
        } else {
            self.ag
                .delete_usage_plan_key()
                .usage_plan_id(plan)
                .key_id(&id)
                .send()
                .await?;
        }
        Ok(())
    }

    /// The data plane: GET / on `api`'s prod stage with this key, path-style.
    pub fn stage_url(&self, api: &str) -> String {
        format!("{}/_aws/execute-api/{api}/prod/", self.endpoint)
    }

    pub async fn call_stage(&self, api: &str, key: &str) -> R<u16> {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(self.stage_url(api))
            .header("x-api-key", key)
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }
}

pub fn str_field(v: &Option<Value>, field: &str) -> Option<String> {
    v.as_ref()
        .and_then(|v| v.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned)
}
