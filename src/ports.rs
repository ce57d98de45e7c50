//! The capabilities the rotation needs, one trait each, with domain types in and out. The AWS
//! adapters (`crate::aws`) implement them; unit tests use in-memory fakes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;

use crate::error::{AwsError, StepResult};
use crate::event::RotationToken;
use crate::secret::KeyValue;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// A secret's metadata: what DescribeSecret says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretMetadata {
    pub arn: String,
    pub name: String,
    pub rotation_enabled: bool,
    /// Version id → staging labels.
    pub versions: BTreeMap<String, Vec<String>>,
    pub tags: Vec<(String, String)>,
    /// How the secret rotates, as DescribeSecret reports it.
    pub rotation: RotationInfo,
    /// Seconds since the epoch when the secret was scheduled for deletion.
    pub deleted: Option<i64>,
}

/// A secret's rotation configuration and history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RotationInfo {
    pub lambda_arn: Option<String>,
    /// `rate(30 days)`, `cron(...)`, or `every N days` from AutomaticallyAfterDays.
    pub schedule: Option<String>,
    /// Seconds since the epoch.
    pub last_rotated: Option<i64>,
    pub next_rotation: Option<i64>,
}

impl SecretMetadata {
    pub fn stages_of(&self, version: &str) -> Option<&[String]> {
        self.versions.get(version).map(Vec::as_slice)
    }
    pub fn has_stage(&self, version: &str, stage: &str) -> bool {
        self.stages_of(version)
            .is_some_and(|s| s.iter().any(|l| l == stage))
    }
    /// The version an open rotation carries: AWSPENDING on a version other than AWSCURRENT.
    pub fn open_rotation(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| opens_rotation(stages))
            .map(|(v, _)| v.as_str())
    }
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(v, _)| v.as_str())
    }
}

/// Whether a version with these labels is an open rotation's: AWSPENDING, and not AWSCURRENT.
pub fn opens_rotation(stages: &[String]) -> bool {
    stages.iter().any(|s| s == AWSPENDING) && !stages.iter().any(|s| s == AWSCURRENT)
}

/// A secret's string value: may hold a key value, so never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Which version to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef<'a> {
    /// This version id, and it must carry this stage.
    Id(&'a str, Option<&'a str>),
    /// Whatever version carries this stage.
    Stage(&'a str),
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// `None` when there is no such secret.
    async fn describe(&self, secret_id: &str) -> Result<Option<SecretMetadata>, AwsError>;
    /// `None` when the version (or stage) has no value, as with the placeholder RotateSecret makes.
    async fn get_value(
        &self,
        secret_id: &str,
        version: VersionRef<'_>,
    ) -> Result<Option<SecretText>, AwsError>;
    /// Writes the token's version, staged AWSPENDING.
    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretText,
        rotation_token: Option<&RotationToken>,
    ) -> Result<(), AwsError>;
    /// UpdateSecretVersionStage.
    async fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError>;
    /// Sets one tag on the secret (TagResource), replacing its value if it has one.
    async fn tag_secret(&self, secret_id: &str, key: &str, value: &str) -> Result<(), AwsError>;
    /// Removes one tag from the secret (UntagResource); succeeds when it has none.
    async fn untag_secret(&self, secret_id: &str, key: &str) -> Result<(), AwsError>;
}

/// What the operator commands read besides what the rotation reads.
#[async_trait]
pub trait SecretCatalog: Send + Sync {
    /// The ARNs of the secrets that carry a tag whose key is exactly `tag_key`, whose names
    /// start with `name_prefix` when one is given (ListSecrets with filters, every page; its
    /// tag-key filter matches prefixes, the adapter makes it exact).
    async fn list_secrets(
        &self,
        tag_key: &str,
        name_prefix: Option<&str>,
    ) -> Result<Vec<String>, AwsError>;
    /// The ARNs of the secrets with a tag whose key starts with `tag_key_prefix` and a tag whose
    /// value starts with one of `value_prefixes`, whose names start with `name_prefix` when one
    /// is given (ListSecrets' tag-key, tag-value and name filters, ten values a call, every
    /// page), less those whose rotation function the listing names and is not `rotated_by` (a
    /// function name). The caller reads each secret's tags again: a listing may lag, and the
    /// two tag filters may match different tags.
    async fn list_secrets_tagged(
        &self,
        tag_key_prefix: &str,
        value_prefixes: &[String],
        name_prefix: Option<&str>,
        rotated_by: Option<&str>,
    ) -> Result<Vec<String>, AwsError>;
    /// Starts a rotation now with `token` as its version (RotateSecret, RotateImmediately):
    /// Secrets Manager invokes the rotation function.
    async fn start_rotation(&self, secret_id: &str, token: &str) -> Result<(), AwsError>;
    /// Version id → created (seconds since the epoch) of the versions that carry a label.
    async fn version_dates(&self, secret_id: &str) -> Result<BTreeMap<String, i64>, AwsError>;
}

/// A Lambda function's settings, as GetFunctionConfiguration reports them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionSettings {
    pub environment: BTreeMap<String, String>,
    pub timeout_seconds: Option<u32>,
}

#[async_trait]
pub trait FunctionReader: Send + Sync {
    /// `Ok(None)` when the function does not exist; an error when it cannot be read (no
    /// permission included).
    async fn function_settings(&self, function: &str)
        -> Result<Option<FunctionSettings>, AwsError>;
}

/// A usage plan and the API stages it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePlan {
    pub id: String,
    /// (API id, stage name)
    pub api_stages: Vec<(String, String)>,
}

impl UsagePlan {
    pub fn api_ids(plans: &[UsagePlan]) -> BTreeSet<String> {
        plans
            .iter()
            .flat_map(|p| p.api_stages.iter().map(|(api, _)| api.clone()))
            .collect()
    }
}

/// An API key as API Gateway describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// Present when the call asked for values.
    pub value: Option<KeyValue>,
    pub enabled: bool,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created: Option<i64>,
}

/// What CreateApiKey is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[async_trait]
pub trait KeyGateway: Send + Sync {
    async fn get_usage_plan(&self, plan_id: &str) -> Result<Option<UsagePlan>, AwsError>;
    /// With its value. `None` when it does not exist.
    async fn get_key(&self, key_id: &str) -> Result<Option<ApiKey>, AwsError>;
    /// Keys whose name starts with `prefix`, without values (GetApiKeys' nameQuery matches
    /// prefixes; the adapter makes it exact).
    async fn find_keys_with_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>, AwsError>;
    /// Every key in the account and region, without values: one GetApiKeys page per 500 keys.
    async fn list_all_keys(&self) -> Result<Vec<ApiKey>, AwsError>;
    async fn create_key(&self, key: &NewKey) -> Result<ApiKey, AwsError>;
    async fn tag_key(&self, key_id: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError>;
    /// The key's tags as GetTags reports them: unlike GetApiKey on some emulators, it shows
    /// tags added after creation. Empty when the key has none (or no longer exists).
    async fn key_tags(&self, key_id: &str) -> Result<BTreeMap<String, String>, AwsError>;
    async fn set_key_enabled(&self, key_id: &str, enabled: bool) -> Result<(), AwsError>;
    /// Succeeds when the key is already gone.
    async fn delete_key(&self, key_id: &str) -> Result<(), AwsError>;
    /// Like `delete_key`, and says whether this call deleted the key (false: it was already
    /// gone), so that the metrics count deletions, not attempts.
    async fn delete_key_if_present(&self, key_id: &str) -> Result<bool, AwsError> {
        self.delete_key(key_id).await.map(|()| true)
    }
    /// The ids of the usage plans the key is attached to.
    async fn plans_of_key(&self, key_id: &str) -> Result<Vec<String>, AwsError>;
    /// Succeeds when already attached.
    async fn attach(&self, plan_id: &str, key_id: &str) -> Result<(), AwsError>;
    /// Succeeds when already detached.
    async fn detach(&self, plan_id: &str, key_id: &str) -> Result<(), AwsError>;
}

/// What the operator commands read of API Gateway besides what the rotation reads: the usage
/// plans and their keys, read once for a run over many secrets instead of once per key.
#[async_trait]
pub trait PlanCatalog: Send + Sync {
    /// Every usage plan in the account and region (GetUsagePlans, every page).
    async fn list_plans(&self) -> Result<Vec<UsagePlan>, AwsError>;
    /// The ids of the keys on the plan (GetUsagePlanKeys, every page); `None` when the plan
    /// does not exist (deleted since it was listed).
    async fn plan_key_ids(&self, plan_id: &str) -> Result<Option<Vec<String>>, AwsError>;
}

/// The testSecret probe: a GET with `x-api-key` that must answer 2xx.
#[async_trait]
pub trait Prober: Send + Sync {
    async fn probe(&self, url: &reqwest::Url, key: &KeyValue) -> StepResult<()>;
}
