//! In-memory Secrets Manager and API Gateway behind the function's own ports, for the model test.
//! They keep the rules the rotation relies on (a differential e2e case holds them to LocalStack):
//! versions are immutable; UpdateSecretVersionStage refuses a `RemoveFromVersionId` that does not
//! hold the label; moving AWSCURRENT moves AWSPREVIOUS; a key created with tags shows them. They
//! play AWS or LocalStack where the two differ (`Playing`): LocalStack hides tags added later from
//! GetApiKey and GetApiKeys, drops unlabelled versions, and lets a version be overwritten. Faults are injected per operation: a call that
//! fails before it takes effect, or one whose answer is lost after it took effect.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use api_key_rotator::error::{AwsError, StepResult};
use api_key_rotator::event::RotationToken;
use api_key_rotator::ports::{
    ApiKey, FunctionReader, FunctionSettings, KeyGateway, NewKey, Prober, SecretCatalog,
    SecretMetadata, SecretStore, SecretText, UsagePlan, VersionRef, AWSCURRENT, AWSPENDING,
    AWSPREVIOUS,
};
use api_key_rotator::secret::KeyValue;
use async_trait::async_trait;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a faulted call goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call fails and changes nothing.
    Fail,
    /// The call takes effect, and its answer is lost.
    LostAnswer,
}

/// One armed fault: the `nth` call (from 0) of `op` goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub op: &'static str,
    pub nth: u32,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Default)]
pub struct Version {
    pub value: Option<String>,
    pub stages: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub arn: String,
    pub name: String,
    pub tags: Vec<(String, String)>,
    pub versions: BTreeMap<String, Version>,
}

#[derive(Debug, Clone, Default)]
pub struct Key {
    pub key: ApiKey,
    /// Tags added after creation (TagResource).
    pub later_tags: BTreeMap<String, String>,
}

/// The whole fake account: one secret store and one gateway, shared by the ports and the test.
#[derive(Debug, Default)]
pub struct Account {
    pub secrets: Mutex<BTreeMap<String, Secret>>,
    pub keys: Mutex<BTreeMap<String, Key>>,
    pub plans: Mutex<BTreeMap<String, UsagePlan>>,
    pub attached: Mutex<BTreeSet<(String, String)>>,
    pub hide_later_tags: bool,
    /// LocalStack removes a version the moment it loses its last label; AWS keeps it.
    pub drop_unlabelled: bool,
    /// AWS refuses a second PutSecretValue of another value with the same ClientRequestToken;
    /// LocalStack overwrites the version.
    pub immutable_versions: bool,
    pub fault: Mutex<Option<Fault>>,
    calls: Mutex<BTreeMap<&'static str, u32>>,
    pub log: Mutex<Vec<String>>,
    /// Broken rules the function must never cause (a key deleted while attached, ...).
    pub violations: Mutex<Vec<String>>,
    next: Mutex<u32>,
    /// What AWS and LocalStack do that a kinder fake would not (issue 20).
    pub realism: Realism,
}

fn err(op: &'static str, code: &str, message: &str) -> AwsError {
    AwsError {
        operation: op,
        code: Some(code.to_owned()),
        message: message.to_owned(),
        request_id: None,
    }
}

/// Which service the fakes play where LocalStack and AWS differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playing {
    /// As AWS documents it: tags added later are visible, unlabelled versions are kept,
    /// versions are immutable.
    Aws,
    /// As LocalStack does it (the differential e2e case checks this mode against it).
    LocalStack,
}

impl Account {
    /// The role's policy allows UpdateApiKey and DeleteApiKey only on keys tied to a secret
    /// (template.yaml, `EnableDisableDeleteOwnKeys`): the code must tie an owned key before it
    /// disables or deletes it (issue 21 item 1). LocalStack enforces no IAM; the model does.
    fn untied_write(&self, key_id: &str, op: &str) {
        let keys = lock(&self.keys);
        let Some(k) = keys.get(key_id) else { return };
        let tied = k.key.tags.contains_key(api_key_rotator::config::TIE_TAG)
            || k.later_tags.contains_key(api_key_rotator::config::TIE_TAG);
        if !tied {
            lock(&self.violations).push(format!(
                "{op} on the untied key {key_id}: the role's policy refuses it"
            ));
        }
    }

    pub fn new(playing: Playing) -> Arc<Account> {
        let local = playing == Playing::LocalStack;
        Arc::new(Account {
            hide_later_tags: local,
            drop_unlabelled: local,
            immutable_versions: !local,
            realism: Realism::playing(playing),
            ..Account::default()
        })
    }

    /// Counts the call and says whether it fails before (Err) or loses its answer after (true).
    fn enter(&self, op: &'static str) -> Result<bool, AwsError> {
        let n = {
            let mut calls = lock(&self.calls);
            let n = calls.entry(op).or_insert(0);
            *n += 1;
            *n - 1
        };
        lock(&self.log).push(op.to_owned());
        let mut fault = lock(&self.fault);
        match fault.clone() {
            Some(f) if f.op == op && f.nth == n => {
                *fault = None;
                match f.kind {
                    FaultKind::Fail => Err(err(op, "InternalFailure", "injected failure")),
                    FaultKind::LostAnswer => Ok(true),
                }
            }
            _ => Ok(false),
        }
    }

    fn leave<T>(op: &'static str, lost: bool, out: T) -> Result<T, AwsError> {
        if lost {
            Err(err(op, "RequestTimeout", "injected: the answer was lost"))
        } else {
            Ok(out)
        }
    }

    pub fn reset_calls(&self) {
        lock(&self.calls).clear();
    }

    pub fn arm(&self, fault: Option<Fault>) {
        self.reset_calls();
        *lock(&self.fault) = fault;
    }

    pub fn fresh_id(&self, prefix: &str) -> String {
        let mut n = lock(&self.next);
        *n += 1;
        format!("{prefix}{:06}", *n)
    }

    // --- Set-up and inspection, outside the ports ---

    pub fn add_secret(&self, name: &str, value: Option<String>, tags: &[(&str, &str)]) -> String {
        let arn = format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}-AbCdEf");
        let mut versions = BTreeMap::new();
        if value.is_some() {
            versions.insert(
                "00000000-0000-0000-0000-000000000000".to_owned(),
                Version {
                    value,
                    stages: BTreeSet::from([AWSCURRENT.to_owned()]),
                },
            );
        }
        lock(&self.secrets).insert(
            arn.clone(),
            Secret {
                arn: arn.clone(),
                name: name.to_owned(),
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                versions,
            },
        );
        arn
    }

    pub fn set_tag(&self, arn: &str, key: &str, value: &str) {
        if let Some(s) = lock(&self.secrets).get_mut(arn) {
            s.tags.retain(|(k, _)| k != key);
            s.tags.push((key.to_owned(), value.to_owned()));
        }
    }

    pub fn add_plan(&self, id: &str, api: &str) {
        lock(&self.plans).insert(
            id.to_owned(),
            UsagePlan {
                id: id.to_owned(),
                api_stages: vec![(api.to_owned(), "prod".to_owned())],
            },
        );
    }

    /// A key made outside the function (by hand, by another rotator, by another secret's).
    pub fn add_key(&self, name: &str, tags: &[(&str, &str)]) -> String {
        let id = self.fresh_id("k");
        let n = *lock(&self.next);
        lock(&self.keys).insert(
            id.clone(),
            Key {
                key: ApiKey {
                    id: id.clone(),
                    name: name.to_owned(),
                    value: Some(KeyValue::new(format!("V{id}abcdefghijklmnopqrstu"))),
                    enabled: true,
                    description: None,
                    customer_id: None,
                    tags: tags
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    created: Some(i64::from(n)),
                },
                later_tags: BTreeMap::new(),
            },
        );
        id
    }

    pub fn key_value(&self, id: &str) -> Option<String> {
        lock(&self.keys)
            .get(id)
            .and_then(|k| k.key.value.as_ref().map(|v| v.expose().to_owned()))
    }

    pub fn attach_raw(&self, plan: &str, key: &str) {
        lock(&self.attached).insert((plan.to_owned(), key.to_owned()));
    }

    pub fn plans_of(&self, key: &str) -> BTreeSet<String> {
        lock(&self.attached)
            .iter()
            .filter(|(_, k)| k == key)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The labelled versions: id → stages.
    pub fn stages(&self, arn: &str) -> BTreeMap<String, BTreeSet<String>> {
        lock(&self.secrets)
            .get(arn)
            .map(|s| {
                s.versions
                    .iter()
                    .filter(|(_, v)| !v.stages.is_empty())
                    .map(|(id, v)| (id.clone(), v.stages.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn version_with(&self, arn: &str, stage: &str) -> Option<String> {
        self.stages(arn)
            .into_iter()
            .find(|(_, s)| s.contains(stage))
            .map(|(id, _)| id)
    }

    pub fn value_of(&self, arn: &str, version: &str) -> Option<String> {
        lock(&self.secrets)
            .get(arn)
            .and_then(|s| s.versions.get(version))
            .and_then(|v| v.value.clone())
    }

    /// RotateSecret: a valueless AWSPENDING version for a new token, or, while AWSPENDING sits
    /// off AWSCURRENT, the token of that unfinished rotation (AWS then re-runs it).
    pub fn rotate_secret(&self, arn: &str, token: &str) -> String {
        self.enable_rotation(arn);
        if let Some(pending) = self.version_with(arn, AWSPENDING) {
            if !self.stages(arn)[&pending].contains(AWSCURRENT) {
                return pending;
            }
        }
        let mut secrets = lock(&self.secrets);
        if let Some(s) = secrets.get_mut(arn) {
            for v in s.versions.values_mut() {
                v.stages.remove(AWSPENDING);
            }
            s.versions.insert(
                token.to_owned(),
                Version {
                    value: None,
                    stages: BTreeSet::from([AWSPENDING.to_owned()]),
                },
            );
        }
        token.to_owned()
    }

    fn move_label(
        &self,
        arn: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        let op = "UpdateSecretVersionStage";
        let mut secrets = lock(&self.secrets);
        let s = secrets
            .get_mut(arn)
            .ok_or_else(|| err(op, "ResourceNotFoundException", "no secret"))?;
        let holder = s
            .versions
            .iter()
            .find(|(_, v)| v.stages.contains(stage))
            .map(|(id, _)| id.clone());
        if holder.is_some() && holder.as_deref() != from && holder.as_deref() != to {
            return Err(err(
                op,
                "InvalidParameterException",
                "the label is attached to another version than RemoveFromVersionId",
            ));
        }
        if let Some(f) = from {
            if holder.as_deref() != Some(f) {
                return Err(err(
                    op,
                    "InvalidParameterException",
                    "RemoveFromVersionId does not hold the label",
                ));
            }
        }
        if let Some(t) = to {
            if !s.versions.contains_key(t) {
                return Err(err(op, "ResourceNotFoundException", "no such version"));
            }
        }
        if let Some(f) = from {
            if let Some(v) = s.versions.get_mut(f) {
                v.stages.remove(stage);
            }
        }
        if let Some(t) = to {
            if let Some(v) = s.versions.get_mut(t) {
                v.stages.insert(stage.to_owned());
            }
            if stage == AWSCURRENT {
                if let Some(f) = from.filter(|f| *f != t) {
                    for v in s.versions.values_mut() {
                        v.stages.remove(AWSPREVIOUS);
                    }
                    if let Some(v) = s.versions.get_mut(f) {
                        v.stages.insert(AWSPREVIOUS.to_owned());
                    }
                }
            }
        }
        if self.drop_unlabelled {
            s.versions.retain(|_, v| !v.stages.is_empty());
        }
        Ok(())
    }

    /// PutSecretValue as a person calls it: a new version holding `value`, with `stage` moved
    /// onto it (AWSCURRENT moves AWSPREVIOUS with it).
    pub fn put_by_hand(&self, arn: &str, version: &str, value: &str, stage: &str) {
        {
            let mut secrets = lock(&self.secrets);
            if let Some(s) = secrets.get_mut(arn) {
                s.versions.insert(
                    version.to_owned(),
                    Version {
                        value: Some(value.to_owned()),
                        stages: BTreeSet::new(),
                    },
                );
            }
        }
        let from = self.version_with(arn, stage);
        let _ = self.move_label(arn, stage, Some(version), from.as_deref());
    }

    /// UpdateSecretVersionStage, as an operator calls it.
    pub fn update_stage(
        &self,
        arn: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        self.move_label(arn, stage, to, from)
    }

    pub fn set_enabled_raw(&self, id: &str, enabled: bool) {
        if let Some(k) = lock(&self.keys).get_mut(id) {
            k.key.enabled = enabled;
        }
    }

    fn visible(&self, k: &Key) -> ApiKey {
        let mut key = k.key.clone();
        if !self.hide_later_tags {
            key.tags.extend(k.later_tags.clone());
        }
        key
    }
}

/// The Secrets Manager port.
pub struct FakeSecrets(pub Arc<Account>);
/// The API Gateway port.
pub struct FakeGateway(pub Arc<Account>);
/// The probe always answers 2xx: the model is about keys, not the data plane.
pub struct OkProber;

#[async_trait]
impl Prober for OkProber {
    async fn probe(&self, _: &reqwest::Url, _: &KeyValue) -> StepResult<()> {
        Ok(())
    }
}

/// The data plane, as API Gateway answers a request with `x-api-key` (testSecret's probe): 2xx
/// when a key with that value exists, is enabled and is on a usage plan covering the URL's API
/// (`https://{api}.execute-api.{region}.amazonaws.com/...`); otherwise 403. The probe is an
/// operation (`Probe`) a fault can make fail or time out.
pub struct DataPlane(pub Arc<Account>);

#[async_trait]
impl Prober for DataPlane {
    async fn probe(&self, url: &reqwest::Url, key: &KeyValue) -> StepResult<()> {
        tokio::task::yield_now().await;
        let failed = |why: &str| api_key_rotator::error::Failure::test(why.to_owned());
        match self.0.enter("Probe") {
            Err(_) => return Err(failed("injected: the probe failed")),
            Ok(true) => return Err(failed("injected: the probe timed out")),
            Ok(false) => {}
        }
        let api = url
            .host_str()
            .and_then(|h| h.split_once(".execute-api."))
            .map(|(api, _)| api.to_owned())
            .unwrap_or_default();
        let id = lock(&self.0.keys)
            .iter()
            .find(|(_, k)| k.key.value.as_ref().map(KeyValue::expose) == Some(key.expose()))
            .map(|(id, _)| id.clone());
        match id {
            Some(id) if self.0.key_works_on(&id, &api) => Ok(()),
            _ => Err(failed("the probe was answered 403 Forbidden")),
        }
    }
}

#[async_trait]
impl SecretStore for FakeSecrets {
    async fn describe(&self, secret_id: &str) -> Result<Option<SecretMetadata>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("DescribeSecret")?;
        // By ARN, or by name as Secrets Manager also takes it.
        let meta = lock(&self.0.secrets)
            .values()
            .find(|s| s.arn == secret_id || s.name == secret_id)
            .map(|s| SecretMetadata {
                arn: s.arn.clone(),
                name: s.name.clone(),
                rotation_enabled: self.0.rotation_enabled(&s.arn),
                versions: s
                    .versions
                    .iter()
                    .filter(|(_, v)| !v.stages.is_empty())
                    .map(|(id, v)| (id.clone(), v.stages.iter().cloned().collect()))
                    .collect(),
                tags: s.tags.clone(),
                ..SecretMetadata::default()
            });
        Account::leave("DescribeSecret", lost, meta)
    }

    async fn get_value(
        &self,
        secret_id: &str,
        version: VersionRef<'_>,
    ) -> Result<Option<SecretText>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("GetSecretValue")?;
        let secrets = lock(&self.0.secrets);
        let found = secrets
            .values()
            .find(|s| s.arn == secret_id || s.name == secret_id)
            .and_then(|s| match version {
                VersionRef::Id(id, stage) => s
                    .versions
                    .get(id)
                    .filter(|v| stage.is_none_or(|st| v.stages.contains(st))),
                VersionRef::Stage(stage) => s.versions.values().find(|v| v.stages.contains(stage)),
            });
        let out = found.and_then(|v| v.value.clone()).map(SecretText);
        drop(secrets);
        Account::leave("GetSecretValue", lost, out)
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretText,
        _: Option<&RotationToken>,
    ) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let op = "PutSecretValue";
        let lost = self.0.enter(op)?;
        {
            let mut secrets = lock(&self.0.secrets);
            let s = secrets
                .get_mut(secret_id)
                .ok_or_else(|| err(op, "ResourceNotFoundException", "no secret"))?;
            let immutable = self.0.immutable_versions;
            match s.versions.get(token).and_then(|v| v.value.clone()) {
                Some(existing) if existing != value.0 && immutable => {
                    return Err(err(
                        op,
                        "ResourceExistsException",
                        "a version with this ClientRequestToken already holds another value",
                    ))
                }
                Some(existing) if existing == value.0 => {}
                _ => {
                    for v in s.versions.values_mut() {
                        v.stages.remove(AWSPENDING);
                    }
                    let v = s.versions.entry(token.to_owned()).or_default();
                    v.value = Some(value.0.clone());
                    v.stages.insert(AWSPENDING.to_owned());
                }
            }
        }
        Account::leave(op, lost, ())
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("UpdateSecretVersionStage")?;
        self.0.move_label(secret_id, stage, to, from)?;
        Account::leave("UpdateSecretVersionStage", lost, ())
    }

    async fn tag_secret(&self, secret_id: &str, key: &str, value: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("secretsmanager:TagResource")?;
        if let Some(s) = lock(&self.0.secrets)
            .values_mut()
            .find(|s| s.arn == secret_id || s.name == secret_id)
        {
            s.tags.retain(|(k, _)| k != key);
            s.tags.push((key.to_owned(), value.to_owned()));
        }
        Account::leave("secretsmanager:TagResource", lost, ())
    }

    async fn untag_secret(&self, secret_id: &str, key: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("secretsmanager:UntagResource")?;
        if let Some(s) = lock(&self.0.secrets)
            .values_mut()
            .find(|s| s.arn == secret_id || s.name == secret_id)
        {
            s.tags.retain(|(k, _)| k != key);
        }
        Account::leave("secretsmanager:UntagResource", lost, ())
    }
}

#[async_trait]
impl KeyGateway for FakeGateway {
    async fn get_usage_plan(&self, plan_id: &str) -> Result<Option<UsagePlan>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("GetUsagePlan")?;
        let out = lock(&self.0.plans).get(plan_id).cloned();
        Account::leave("GetUsagePlan", lost, out)
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<ApiKey>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("GetApiKey")?;
        let out = lock(&self.0.keys).get(key_id).map(|k| self.0.visible(k));
        Account::leave("GetApiKey", lost, out)
    }

    async fn find_keys_with_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("GetApiKeys")?;
        let lagging = self.0.listing_lag();
        let out = lock(&self.0.keys)
            .values()
            .filter(|k| k.key.name.starts_with(prefix))
            .filter(|k| !lagging.contains(&k.key.id))
            .map(|k| ApiKey {
                value: None,
                ..self.0.visible(k)
            })
            .collect();
        Account::leave("GetApiKeys", lost, out)
    }

    async fn list_all_keys(&self) -> Result<Vec<ApiKey>, AwsError> {
        self.find_keys_with_prefix("").await
    }

    async fn create_key(&self, key: &NewKey) -> Result<ApiKey, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("CreateApiKey")?;
        self.0
            .tags_fit("CreateApiKey", &BTreeMap::new(), &key.tags)?;
        let id = self.0.fresh_id("k");
        let n = *lock(&self.0.next);
        let made = ApiKey {
            id: id.clone(),
            name: key.name.clone(),
            value: Some(KeyValue::new(format!("V{id}abcdefghijklmnopqrstu"))),
            enabled: true,
            description: key.description.clone(),
            customer_id: key.customer_id.clone(),
            tags: key.tags.clone(),
            created: Some(i64::from(n)),
        };
        self.0.start_lag(&id);
        lock(&self.0.keys).insert(
            id,
            Key {
                key: made.clone(),
                later_tags: BTreeMap::new(),
            },
        );
        Account::leave("CreateApiKey", lost, made)
    }

    async fn tag_key(&self, key_id: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("TagResource")?;
        self.0.tag_resource_checks(key_id, tags)?;
        if let Some(k) = lock(&self.0.keys).get_mut(key_id) {
            k.later_tags.extend(tags.clone());
        }
        Account::leave("TagResource", lost, ())
    }

    async fn key_tags(&self, key_id: &str) -> Result<BTreeMap<String, String>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("GetTags")?;
        // As on LocalStack, GetTags shows the tags TagResource added, and not those given at
        // creation; on AWS it shows both (`hide_later_tags` off).
        let out = lock(&self.0.keys)
            .get(key_id)
            .map(|k| {
                let mut tags = k.later_tags.clone();
                if !self.0.hide_later_tags {
                    tags.extend(k.key.tags.clone());
                }
                tags
            })
            .unwrap_or_else(|| self.0.ghost_tags(key_id));
        Account::leave("GetTags", lost, out)
    }

    async fn set_key_enabled(&self, key_id: &str, enabled: bool) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("UpdateApiKey")?;
        self.0.key_must_exist("UpdateApiKey", key_id)?;
        self.0.untied_write(key_id, "UpdateApiKey");
        self.0.set_enabled_raw(key_id, enabled);
        Account::leave("UpdateApiKey", lost, ())
    }

    async fn delete_key(&self, key_id: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("DeleteApiKey")?;
        self.0.untied_write(key_id, "DeleteApiKey");
        if !self.0.plans_of(key_id).is_empty() {
            lock(&self.0.violations).push(format!("key {key_id} deleted while attached"));
        }
        self.0.keep_ghost_tags(key_id);
        lock(&self.0.keys).remove(key_id);
        lock(&self.0.attached).retain(|(_, k)| k != key_id);
        Account::leave("DeleteApiKey", lost, ())
    }

    async fn delete_key_if_present(&self, key_id: &str) -> Result<bool, AwsError> {
        // The adapter reads DeleteApiKey's NotFoundException as "already gone".
        let present = lock(&self.0.keys).contains_key(key_id);
        self.delete_key(key_id).await.map(|()| present)
    }

    async fn plans_of_key(&self, key_id: &str) -> Result<Vec<String>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("GetUsagePlans")?;
        let out = self.0.plans_of(key_id).into_iter().collect();
        Account::leave("GetUsagePlans", lost, out)
    }

    async fn attach(&self, plan_id: &str, key_id: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let op = "CreateUsagePlanKey";
        let lost = self.0.enter(op)?;
        {
            let plans = lock(&self.0.plans);
            let plan = plans
                .get(plan_id)
                .ok_or_else(|| err(op, "NotFoundException", "no such usage plan"))?;
            if !lock(&self.0.keys).contains_key(key_id) {
                return Err(err(op, "NotFoundException", "no such key"));
            }
            let mut attached = lock(&self.0.attached);
            for (other, k) in attached.iter() {
                if k == key_id && other != plan_id {
                    let clash = plans.get(other).is_some_and(|o| {
                        o.api_stages.iter().any(|st| plan.api_stages.contains(st))
                    });
                    if clash {
                        lock(&self.0.violations).push(format!(
                            "key {key_id} attached to {plan_id} while on {other}, which covers the same stage"
                        ));
                        return Err(err(
                            op,
                            "BadRequestException",
                            "same API stage in two plans",
                        ));
                    }
                }
            }
            attached.insert((plan_id.to_owned(), key_id.to_owned()));
        }
        Account::leave(op, lost, ())
    }

    async fn detach(&self, plan_id: &str, key_id: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("DeleteUsagePlanKey")?;
        self.0.detach_from_missing_plan(plan_id)?;
        lock(&self.0.attached).remove(&(plan_id.to_owned(), key_id.to_owned()));
        Account::leave("DeleteUsagePlanKey", lost, ())
    }
}

#[async_trait]
impl SecretCatalog for FakeSecrets {
    async fn list_secrets(
        &self,
        tag_key: &str,
        name_prefix: Option<&str>,
    ) -> Result<Vec<String>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("ListSecrets")?;
        let out = lock(&self.0.secrets)
            .values()
            .filter(|s| s.tags.iter().any(|(k, _)| k == tag_key))
            .filter(|s| name_prefix.is_none_or(|p| s.name.starts_with(p)))
            .map(|s| s.arn.clone())
            .collect();
        Account::leave("ListSecrets", lost, out)
    }

    /// ListSecrets' tag-key and tag-value filters: prefixes, each matched by any tag.
    async fn list_secrets_tagged(
        &self,
        tag_key_prefix: &str,
        value_prefixes: &[String],
        name_prefix: Option<&str>,
        _rotated_by: Option<&str>,
    ) -> Result<Vec<String>, AwsError> {
        let mut out = Vec::new();
        for chunk in value_prefixes.chunks(10) {
            tokio::task::yield_now().await;
            let lost = self.0.enter("ListSecrets")?;
            let found: Vec<String> = lock(&self.0.secrets)
                .values()
                .filter(|s| s.tags.iter().any(|(k, _)| k.starts_with(tag_key_prefix)))
                .filter(|s| name_prefix.is_none_or(|p| s.name.starts_with(p)))
                .filter(|s| {
                    s.tags
                        .iter()
                        .any(|(_, v)| chunk.iter().any(|p| v.starts_with(p.as_str())))
                })
                .map(|s| s.arn.clone())
                .collect();
            out.extend(Account::leave("ListSecrets", lost, found)?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The model opens rotations itself; an operator's RotateSecret is not part of it.
    async fn start_rotation(&self, _secret_id: &str, _token: &str) -> Result<(), AwsError> {
        Ok(())
    }

    async fn version_dates(&self, secret_id: &str) -> Result<BTreeMap<String, i64>, AwsError> {
        tokio::task::yield_now().await;
        let lost = self.0.enter("ListSecretVersionIds")?;
        // Every version is old: an open rotation looks abandoned to the commands.
        let out = self
            .0
            .stages(secret_id)
            .into_keys()
            .map(|v| (v, 0))
            .collect();
        Account::leave("ListSecretVersionIds", lost, out)
    }
}

/// The rotation function cannot be read: the commands use the settings they are given.
pub struct NoFunctions;

#[async_trait]
impl FunctionReader for NoFunctions {
    async fn function_settings(
        &self,
        _function: &str,
    ) -> Result<Option<FunctionSettings>, AwsError> {
        Ok(None)
    }
}

/// API Gateway's tag limits (its documentation; LocalStack enforces none): at most 50 tags a
/// resource, keys of 1 to 128 characters, values of up to 256.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// Behaviours of the real services that the function could be wrong about (issue 20), each
/// held to LocalStack by `the_model_fakes_behave_as_the_local_aws` where LocalStack has it.
#[derive(Debug, Default)]
pub struct Realism {
    /// CreateApiKey and TagResource over API Gateway's tag limits answer BadRequestException
    /// (AWS; LocalStack takes anything).
    pub tag_limits: bool,
    /// TagResource on a key that does not exist succeeds, and GetTags then shows the tags,
    /// as do the tags of a deleted key (LocalStack keeps tags apart from the resource); AWS
    /// answers NotFoundException.
    pub tags_outlive_keys: bool,
    /// DeleteUsagePlanKey on a usage plan that does not exist answers InternalError
    /// (LocalStack); AWS answers NotFoundException, which the adapter reads as done.
    pub detach_missing_plan_fails: bool,
    /// Tags TagResource put on keys that do not exist (LocalStack only).
    ghosts: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// The generated fault "GetApiKeys lags": every key created while it is `Some(n)` is
    /// missing from the next `n` GetApiKeys listings.
    pub lag: Mutex<Option<u32>>,
    /// Key id -> how many more listings leave it out.
    lagging: Mutex<BTreeMap<String, u32>>,
    /// Every key a listing left out since the model last cleared it.
    pub lagged: Mutex<BTreeSet<String>>,
    /// The secrets whose rotation a person turned off (CancelRotateSecret); RotateSecret
    /// turns it on again.
    rotation_off: Mutex<BTreeSet<String>>,
}

impl Realism {
    fn playing(playing: Playing) -> Realism {
        let local = playing == Playing::LocalStack;
        Realism {
            tag_limits: !local,
            tags_outlive_keys: local,
            detach_missing_plan_fails: local,
            ..Realism::default()
        }
    }
}

impl Account {
    /// UpdateApiKey (and TagResource on AWS) on a key that does not exist: NotFoundException,
    /// as AWS and LocalStack answer.
    fn key_must_exist(&self, op: &'static str, key_id: &str) -> Result<(), AwsError> {
        if lock(&self.keys).contains_key(key_id) {
            Ok(())
        } else {
            Err(err(
                op,
                "NotFoundException",
                "Invalid API Key identifier specified",
            ))
        }
    }

    /// BadRequestException when `added` on top of `existing` breaks API Gateway's tag limits.
    fn tags_fit(
        &self,
        op: &'static str,
        existing: &BTreeMap<String, String>,
        added: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        if !self.realism.tag_limits {
            return Ok(());
        }
        let count = existing
            .keys()
            .chain(added.keys())
            .collect::<BTreeSet<_>>()
            .len();
        let bad = added.iter().find(|(k, v)| {
            !(1..=MAX_TAG_KEY_CHARS).contains(&k.chars().count())
                || v.chars().count() > MAX_TAG_VALUE_CHARS
        });
        if let Some((k, _)) = bad {
            return Err(err(
                op,
                "BadRequestException",
                &format!("the tag {k} is over API Gateway's key or value length limit"),
            ));
        }
        if count > MAX_TAGS {
            return Err(err(
                op,
                "BadRequestException",
                &format!("{count} tags: API Gateway takes at most {MAX_TAGS} a resource"),
            ));
        }
        Ok(())
    }

    /// TagResource's answers before it takes effect: NotFoundException for a missing key on
    /// AWS (LocalStack keeps the tags apart), BadRequestException over the tag limits.
    fn tag_resource_checks(
        &self,
        key_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        let op = "TagResource";
        let existing = lock(&self.keys).get(key_id).map(|k| {
            let mut all = k.key.tags.clone();
            all.extend(k.later_tags.clone());
            all
        });
        match existing {
            Some(existing) => self.tags_fit(op, &existing, tags),
            None if self.realism.tags_outlive_keys => {
                lock(&self.realism.ghosts)
                    .entry(key_id.to_owned())
                    .or_default()
                    .extend(tags.clone());
                Ok(())
            }
            None => self.key_must_exist(op, key_id),
        }
    }

    /// On LocalStack the tags TagResource added outlive the key.
    fn keep_ghost_tags(&self, key_id: &str) {
        if !self.realism.tags_outlive_keys {
            return;
        }
        if let Some(k) = lock(&self.keys).get(key_id) {
            lock(&self.realism.ghosts)
                .entry(key_id.to_owned())
                .or_default()
                .extend(k.later_tags.clone());
        }
    }

    /// GetTags on a key that does not exist: nothing on AWS (the adapter reads NotFound as no
    /// tags), what LocalStack kept on LocalStack.
    fn ghost_tags(&self, key_id: &str) -> BTreeMap<String, String> {
        lock(&self.realism.ghosts)
            .get(key_id)
            .cloned()
            .unwrap_or_default()
    }

    fn detach_from_missing_plan(&self, plan_id: &str) -> Result<(), AwsError> {
        if self.realism.detach_missing_plan_fails && !lock(&self.plans).contains_key(plan_id) {
            return Err(err(
                "DeleteUsagePlanKey",
                "InternalError",
                "LocalStack: no such usage plan",
            ));
        }
        Ok(())
    }

    /// Arms (or, with `None`, disarms) the lagging listing for keys created from now on.
    pub fn lag_new_keys(&self, listings: Option<u32>) {
        *lock(&self.realism.lag) = listings;
    }

    /// A person deletes the key (the console, the CLI): no port call, no rule checked.
    pub fn delete_by_hand(&self, key_id: &str) {
        self.keep_ghost_tags(key_id);
        lock(&self.keys).remove(key_id);
        lock(&self.attached).retain(|(_, k)| k != key_id);
    }

    /// Whether API Gateway lets a request with the key into `api`: the key exists, is enabled,
    /// and is on a usage plan that covers the API.
    pub fn key_works_on(&self, key_id: &str, api: &str) -> bool {
        let enabled = lock(&self.keys).get(key_id).is_some_and(|k| k.key.enabled);
        let plans = lock(&self.plans);
        enabled
            && self.plans_of(key_id).iter().any(|p| {
                plans
                    .get(p)
                    .is_some_and(|plan| plan.api_stages.iter().any(|(a, _)| a == api))
            })
    }

    /// The APIs a request with the key gets into.
    pub fn apis_of(&self, key_id: &str) -> BTreeSet<String> {
        let apis: BTreeSet<String> = lock(&self.plans)
            .values()
            .flat_map(|p| p.api_stages.iter().map(|(a, _)| a.clone()))
            .collect();
        apis.into_iter()
            .filter(|api| self.key_works_on(key_id, api))
            .collect()
    }

    /// CancelRotateSecret: rotation off, the labels left where they are.
    pub fn cancel_rotation(&self, arn: &str) {
        lock(&self.realism.rotation_off).insert(arn.to_owned());
    }

    pub fn enable_rotation(&self, arn: &str) {
        lock(&self.realism.rotation_off).remove(arn);
    }

    fn rotation_enabled(&self, arn: &str) -> bool {
        !lock(&self.realism.rotation_off).contains(arn)
    }

    /// Ends every lag at once: every key shows in the next listing.
    pub fn end_lag(&self) {
        *lock(&self.realism.lag) = None;
        lock(&self.realism.lagging).clear();
    }

    fn start_lag(&self, key_id: &str) {
        if let Some(n) = *lock(&self.realism.lag) {
            lock(&self.realism.lagging).insert(key_id.to_owned(), n);
        }
    }

    /// The keys this GetApiKeys listing leaves out; each lag is one listing shorter after it.
    fn listing_lag(&self) -> BTreeSet<String> {
        let mut lagging = lock(&self.realism.lagging);
        let hidden: BTreeSet<String> = lagging.keys().cloned().collect();
        lagging.retain(|_, n| {
            *n = n.saturating_sub(1);
            *n > 0
        });
        lock(&self.realism.lagged).extend(hidden.iter().cloned());
        hidden
    }
}
