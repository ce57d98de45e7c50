//! Step logic over in-memory fakes of the ports, written as given / when / then. The end-to-end
//! tests run the same steps against the emulator; these pin the edge cases cheaply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::*;
use crate::config::{OldKeyAction, TIE_TAG};
use crate::error::{AwsError, ErrorKind};
use crate::event::RotationToken;
use crate::ports::{ApiKey, NewKey, SecretText, UsagePlan, VersionRef, AWSPREVIOUS};
use crate::secret::KeyValue;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:1:secret:partner-a";
const T1: &str = "11111111-1111-1111-1111-111111111111";
const T2: &str = "22222222-2222-2222-2222-222222222222";
const T3: &str = "33333333-3333-3333-3333-333333333333";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct FakeSecrets {
    meta: Mutex<SecretMetadata>,
    values: Mutex<BTreeMap<String, String>>,
    puts: Mutex<u32>,
}

#[async_trait]
impl SecretStore for FakeSecrets {
    async fn describe(&self, _: &str) -> Result<Option<SecretMetadata>, AwsError> {
        Ok(Some(lock(&self.meta).clone()))
    }
    async fn get_value(
        &self,
        _: &str,
        version: VersionRef<'_>,
    ) -> Result<Option<SecretText>, AwsError> {
        let meta = lock(&self.meta).clone();
        let id = match version {
            VersionRef::Id(id, Some(stage)) if !meta.has_stage(id, stage) => return Ok(None),
            VersionRef::Id(id, _) => Some(id.to_owned()),
            VersionRef::Stage(stage) => meta.version_with(stage).map(str::to_owned),
        };
        Ok(id
            .and_then(|id| lock(&self.values).get(&id).cloned())
            .map(SecretText))
    }
    async fn put_pending(
        &self,
        _: &str,
        token: &str,
        value: &SecretText,
        _: Option<&RotationToken>,
    ) -> Result<(), AwsError> {
        *lock(&self.puts) += 1;
        let mut values = lock(&self.values);
        if values.get(token).is_some_and(|v| *v != value.0) {
            return Err(AwsError {
                operation: "PutSecretValue",
                code: Some("ResourceExistsException".into()),
                message: "a different value".into(),
                request_id: None,
            });
        }
        values.insert(token.to_owned(), value.0.clone());
        Ok(())
    }
    async fn move_stage(
        &self,
        _: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        let mut meta = lock(&self.meta);
        if let Some(from) = from {
            if let Some(v) = meta.versions.get_mut(from) {
                v.retain(|s| s != stage);
            }
            if stage == AWSCURRENT {
                for v in meta.versions.values_mut() {
                    v.retain(|s| s != AWSPREVIOUS);
                }
                if let Some(v) = meta.versions.get_mut(from) {
                    v.push(AWSPREVIOUS.into());
                }
            }
        }
        if let Some(to) = to {
            meta.versions
                .entry(to.to_owned())
                .or_default()
                .push(stage.to_owned());
        }
        Ok(())
    }
    async fn tag_secret(&self, _: &str, key: &str, value: &str) -> Result<(), AwsError> {
        let mut meta = lock(&self.meta);
        meta.tags.retain(|(k, _)| k != key);
        meta.tags.push((key.to_owned(), value.to_owned()));
        Ok(())
    }
    async fn untag_secret(&self, _: &str, key: &str) -> Result<(), AwsError> {
        lock(&self.meta).tags.retain(|(k, _)| k != key);
        Ok(())
    }
}

#[async_trait]
impl crate::ports::SecretCatalog for FakeSecrets {
    async fn list_secrets(&self, _: &str, _: Option<&str>) -> Result<Vec<String>, AwsError> {
        Ok(vec![ARN.to_owned()])
    }
    /// As ListSecrets' filters: a tag key with the prefix, and a tag value with one of the
    /// value prefixes (not necessarily the same tag).
    async fn list_secrets_tagged(
        &self,
        key_prefix: &str,
        value_prefixes: &[String],
        _name_prefix: Option<&str>,
        _rotated_by: Option<&str>,
    ) -> Result<Vec<String>, AwsError> {
        let meta = lock(&self.meta);
        let key = meta.tags.iter().any(|(k, _)| k.starts_with(key_prefix));
        let value = meta
            .tags
            .iter()
            .any(|(_, v)| value_prefixes.iter().any(|p| v.starts_with(p.as_str())));
        Ok(if key && value {
            vec![meta.arn.clone()]
        } else {
            vec![]
        })
    }
    async fn start_rotation(&self, _: &str, _: &str) -> Result<(), AwsError> {
        Ok(())
    }
    async fn version_dates(&self, _: &str) -> Result<BTreeMap<String, i64>, AwsError> {
        Ok(BTreeMap::new())
    }
}

#[derive(Default)]
struct FakeKeys {
    keys: Mutex<BTreeMap<String, ApiKey>>,
    plans: Mutex<BTreeMap<String, UsagePlan>>,
    attached: Mutex<BTreeSet<(String, String)>>,
    next: Mutex<u32>,
    /// CreateApiKey's answer is lost once and the retry creates a second key.
    duplicate_next_create: Mutex<bool>,
    creates: Mutex<u32>,
}

impl FakeKeys {
    fn insert(&self, name: &str, tags: &[(&str, &str)]) -> String {
        let mut n = lock(&self.next);
        *n += 1;
        let id = format!("key{:03}", *n);
        lock(&self.keys).insert(
            id.clone(),
            ApiKey {
                id: id.clone(),
                name: name.to_owned(),
                value: Some(KeyValue::new(format!("VALUE{id}abcdefghijklmnop"))),
                enabled: true,
                description: Some("first".into()),
                customer_id: Some("cust-1".into()),
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                created: Some(i64::from(*n)),
            },
        );
        id
    }
    fn plan(&self, id: &str, api: &str) {
        lock(&self.plans).insert(
            id.to_owned(),
            UsagePlan {
                id: id.to_owned(),
                api_stages: vec![(api.to_owned(), "prod".to_owned())],
            },
        );
    }
    fn ids(&self) -> BTreeSet<String> {
        lock(&self.keys).keys().cloned().collect()
    }
    fn key(&self, id: &str) -> Option<ApiKey> {
        lock(&self.keys).get(id).cloned()
    }
    fn is_on(&self, plan: &str, key: &str) -> bool {
        lock(&self.attached).contains(&(plan.to_owned(), key.to_owned()))
    }
}

#[async_trait]
impl KeyGateway for FakeKeys {
    async fn get_usage_plan(&self, id: &str) -> Result<Option<UsagePlan>, AwsError> {
        Ok(lock(&self.plans).get(id).cloned())
    }
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, AwsError> {
        Ok(self.key(id))
    }
    async fn find_keys_with_prefix(&self, prefix: &str) -> Result<Vec<ApiKey>, AwsError> {
        Ok(lock(&self.keys)
            .values()
            .filter(|k| k.name.starts_with(prefix))
            .map(|k| ApiKey {
                value: None,
                ..k.clone()
            })
            .collect())
    }
    async fn list_all_keys(&self) -> Result<Vec<ApiKey>, AwsError> {
        self.find_keys_with_prefix("").await
    }
    async fn create_key(&self, key: &NewKey) -> Result<ApiKey, AwsError> {
        *lock(&self.creates) += 1;
        let tags: Vec<(&str, &str)> = key
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let twice = std::mem::take(&mut *lock(&self.duplicate_next_create));
        if twice {
            self.insert(&key.name, &tags);
        }
        let id = self.insert(&key.name, &tags);
        let mut k = self.key(&id).unwrap_or_default();
        k.description = key.description.clone();
        k.customer_id = key.customer_id.clone();
        lock(&self.keys).insert(id, k.clone());
        Ok(k)
    }
    async fn tag_key(&self, id: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError> {
        if let Some(k) = lock(&self.keys).get_mut(id) {
            k.tags.extend(tags.clone());
        }
        Ok(())
    }
    async fn key_tags(&self, id: &str) -> Result<BTreeMap<String, String>, AwsError> {
        Ok(self.key(id).map(|k| k.tags).unwrap_or_default())
    }
    async fn set_key_enabled(&self, id: &str, enabled: bool) -> Result<(), AwsError> {
        if let Some(k) = lock(&self.keys).get_mut(id) {
            k.enabled = enabled;
        }
        Ok(())
    }
    async fn delete_key(&self, id: &str) -> Result<(), AwsError> {
        lock(&self.keys).remove(id);
        Ok(())
    }
    async fn plans_of_key(&self, id: &str) -> Result<Vec<String>, AwsError> {
        Ok(lock(&self.attached)
            .iter()
            .filter(|(_, k)| k == id)
            .map(|(p, _)| p.clone())
            .collect())
    }
    async fn attach(&self, plan: &str, key: &str) -> Result<(), AwsError> {
        lock(&self.attached).insert((plan.to_owned(), key.to_owned()));
        Ok(())
    }
    async fn detach(&self, plan: &str, key: &str) -> Result<(), AwsError> {
        lock(&self.attached).remove(&(plan.to_owned(), key.to_owned()));
        Ok(())
    }
}

#[derive(Default)]
struct FakeProber {
    fail: bool,
    calls: Mutex<u32>,
}

#[async_trait]
impl Prober for FakeProber {
    async fn probe(&self, _: &reqwest::Url, _: &KeyValue) -> StepResult<()> {
        *lock(&self.calls) += 1;
        if self.fail {
            Err(Failure::test("the TestUrl probe got HTTP 403"))
        } else {
            Ok(())
        }
    }
}

type Fake = Rotator<FakeSecrets, FakeKeys, FakeProber>;

/// Given a secret tagged for plan `p1` (API `a1`) whose AWSCURRENT value is `current`.
fn given(tags: &[(&str, &str)], current: Option<Value>) -> Fake {
    let secrets = FakeSecrets::default();
    {
        let mut meta = lock(&secrets.meta);
        meta.arn = ARN.into();
        meta.name = "partner-a".into();
        meta.rotation_enabled = true;
        meta.versions.insert("v0".into(), vec![AWSCURRENT.into()]);
        // The given tags override the defaults.
        meta.tags = [("KeyName", "partner-a"), ("UsagePlan", "p1")]
            .iter()
            .filter(|(k, _)| !tags.iter().any(|(t, _)| t == k))
            .chain(tags)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }
    if let Some(v) = current {
        lock(&secrets.values).insert("v0".into(), v.to_string());
    }
    let keys = FakeKeys::default();
    keys.plan("p1", "a1");
    keys.plan("p2", "a2");
    keys.plan("p3", "a1");
    Rotator::new(
        secrets,
        keys,
        FakeProber::default(),
        Ok(FunctionConfig::default()),
    )
}

/// What RotateSecret does: a valueless AWSPENDING version for the token (the label leaves
/// whichever version had it).
fn open(r: &Fake, token: &str) {
    let mut meta = lock(&r.secrets.meta);
    for stages in meta.versions.values_mut() {
        stages.retain(|s| s != AWSPENDING);
    }
    meta.versions.insert(token.into(), vec![AWSPENDING.into()]);
}

async fn step(r: &Fake, step: &str, token: &str) -> Result<(), crate::Error> {
    r.handle(&json!({"Step": step, "SecretId": ARN, "ClientRequestToken": token}))
        .await
}

async fn rotate(r: &Fake, token: &str) -> Result<(), crate::Error> {
    open(r, token);
    for s in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        step(r, s, token).await?;
    }
    Ok(())
}

fn current_key(r: &Fake) -> Option<String> {
    let version = lock(&r.secrets.meta).version_with(AWSCURRENT)?.to_owned();
    version_key(r, &version)
}

/// The key id a version's value holds.
fn version_key(r: &Fake, version: &str) -> Option<String> {
    let raw = lock(&r.secrets.values).get(version).cloned()?;
    serde_json::from_str::<Value>(&raw).ok()?["api_key_id"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_duplicate_from_a_lost_create_answer_is_stored_nowhere_and_swept_by_finish() {
    let r = given(&[], Some(json!({})));
    *lock(&r.keys.duplicate_next_create) = true;
    open(&r, T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    // CreateApiKey ran twice; the key it answered with is the one attached and stored.
    assert_eq!(r.keys.ids().len(), 2);
    let stored = version_key(&r, T1);
    assert_eq!(stored.as_deref(), Some("key002"));
    assert!(r.keys.is_on("p1", "key002"));
    assert!(!r.keys.is_on("p1", "key001"));
    for s in ["setSecret", "testSecret", "finishSecret"] {
        assert_eq!(step(&r, s, T1).await, Ok(()));
    }
    assert_eq!(r.keys.ids().into_iter().collect::<Vec<_>>(), ["key002"]);
}

#[tokio::test]
async fn a_create_retry_that_finds_two_keys_for_its_token_keeps_the_earliest() {
    let r = given(&[], Some(json!({})));
    *lock(&r.keys.duplicate_next_create) = true;
    open(&r, T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    // As if the function had crashed before PutSecretValue: no value stored.
    lock(&r.secrets.values).remove(T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    // createSecret deletes nothing (a concurrent delivery may be storing the other key); the
    // earliest is kept and stored, and finishSecret retires the other.
    assert_eq!(version_key(&r, T1).as_deref(), Some("key001"));
    assert!(r.keys.is_on("p1", "key001"));
    for s in ["setSecret", "testSecret", "finishSecret"] {
        assert_eq!(step(&r, s, T1).await, Ok(()), "{s}");
    }
    assert_eq!(r.keys.ids().into_iter().collect::<Vec<_>>(), ["key001"]);
    assert!(
        !r.keys.is_on("p1", "key002"),
        "the deleted key was not detached"
    );
}

#[tokio::test]
async fn create_repeated_after_a_crash_reuses_the_token_key() {
    let r = given(&[], Some(json!({})));
    open(&r, T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    // A crash before PutSecretValue: the value is gone, the key remains.
    lock(&r.secrets.values).remove(T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    assert_eq!(*lock(&r.keys.creates), 1);
    assert_eq!(r.keys.ids().len(), 1);
    // With the value stored, a third run changes nothing at all.
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    assert_eq!(*lock(&r.secrets.puts), 2);
}

#[tokio::test]
async fn create_validates_everything_before_any_change() {
    for (tags, current) in [
        (vec![("UsagePlan", "p1,p3")], json!({})),
        (vec![("UsagePlan", "p9")], json!({})),
        (vec![("TestUrl", "https://evil.example/")], json!({})),
        (vec![], json!({"api_key_id": "nope"})),
        (vec![], json!({"api_key_id": 3})),
    ] {
        let r = given(&tags, Some(current.clone()));
        open(&r, T1);
        let err = step(&r, "createSecret", T1).await.err();
        assert_eq!(
            err.map(|e| e.kind),
            Some(ErrorKind::InvalidConfiguration),
            "{tags:?} {current}"
        );
        assert!(r.keys.ids().is_empty(), "{tags:?}: a key was created");
        assert_eq!(*lock(&r.secrets.puts), 0);
    }
}

#[tokio::test]
async fn adoption_ties_the_key_and_carries_its_metadata() {
    let keys_first = given(&[("Project", "billing")], None);
    let old = keys_first.keys.insert("legacy", &[]);
    lock(&keys_first.secrets.values).insert(
        "v0".into(),
        json!({"api_key_id": old, "owner": "x"}).to_string(),
    );
    let r = keys_first;
    open(&r, T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    let old_key = r.keys.key(&old);
    assert_eq!(
        old_key.and_then(|k| k.tags.get(TIE_TAG).cloned()),
        Some(ARN.to_owned())
    );
    let new = r
        .keys
        .ids()
        .into_iter()
        .find(|id| *id != old)
        .unwrap_or_default();
    let new_key = r.keys.key(&new).unwrap_or_default();
    assert_eq!(new_key.description.as_deref(), Some("first"));
    assert_eq!(new_key.customer_id.as_deref(), Some("cust-1"));
    assert_eq!(
        new_key.tags.get("Project").map(String::as_str),
        Some("billing")
    );
    let pending: Value = serde_json::from_str(&lock(&r.secrets.values)[T1]).unwrap_or_default();
    assert_eq!(pending["owner"], "x", "unowned field carried over");
}

#[tokio::test]
async fn policies_retire_the_old_key() {
    for (action, survives, enabled) in [
        ("delete", false, false),
        ("disable", true, false),
        ("keep-previous", true, true),
    ] {
        let r = given(&[("OldKeyAction", action)], Some(json!({})));
        assert_eq!(rotate(&r, T1).await, Ok(()));
        let first = current_key(&r).unwrap_or_default();
        assert_eq!(rotate(&r, T2).await, Ok(()));
        let old = r.keys.key(&first);
        assert_eq!(old.is_some(), survives, "{action}");
        assert_eq!(old.map(|k| k.enabled).unwrap_or(false), enabled, "{action}");
        assert_eq!(
            OldKeyAction::parse(action).map(|a| a.as_str()),
            Some(action)
        );
    }
}

#[tokio::test]
async fn a_retried_finish_after_the_label_moved_still_retires() {
    let r = given(&[], Some(json!({})));
    assert_eq!(rotate(&r, T1).await, Ok(()));
    let first = current_key(&r).unwrap_or_default();
    open(&r, T2);
    for s in ["createSecret", "setSecret", "testSecret"] {
        assert_eq!(step(&r, s, T2).await, Ok(()));
    }
    // The label moved, then the function crashed before retiring anything.
    let from = lock(&r.secrets.meta)
        .version_with(AWSCURRENT)
        .map(str::to_owned);
    let moved = r
        .secrets
        .move_stage(ARN, AWSCURRENT, Some(T2), from.as_deref())
        .await;
    assert!(moved.is_ok());
    assert!(r.keys.key(&first).is_some());
    assert_eq!(rotate_steps_again(&r, T2).await, Ok(()));
    assert!(r.keys.key(&first).is_none(), "the old key was not retired");
    // No label of the rotation is left behind: AWSPENDING is gone, AWSCURRENT is on T2.
    let meta = lock(&r.secrets.meta).clone();
    assert_eq!(meta.version_with(AWSPENDING), None);
    assert!(meta.has_stage(T2, AWSCURRENT));
}

async fn rotate_steps_again(r: &Fake, token: &str) -> Result<(), crate::Error> {
    for s in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        step(r, s, token).await?;
    }
    Ok(())
}

#[tokio::test]
async fn set_secret_repairs_a_detached_or_disabled_pending_key() {
    let r = given(&[("UsagePlan", "p1,p2")], Some(json!({})));
    open(&r, T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    let id = r.keys.ids().into_iter().next().unwrap_or_default();
    let _ = r.keys.detach("p2", &id).await;
    let _ = r.keys.set_key_enabled(&id, false).await;
    assert_eq!(
        step(&r, "testSecret", T1).await.err().map(|e| e.kind),
        Some(ErrorKind::TestFailed)
    );
    assert_eq!(step(&r, "setSecret", T1).await, Ok(()));
    assert!(r.keys.is_on("p2", &id) && r.keys.key(&id).is_some_and(|k| k.enabled));
    assert_eq!(step(&r, "testSecret", T1).await, Ok(()));
}

#[tokio::test]
async fn test_secret_probes_only_with_a_test_url_and_fails_on_a_bad_answer() {
    let r = given(&[], Some(json!({})));
    assert_eq!(rotate(&r, T1).await, Ok(()));
    assert_eq!(*lock(&r.prober.calls), 0);

    let mut r = given(
        &[(
            "TestUrl",
            "https://a1.execute-api.us-east-1.amazonaws.com/prod/",
        )],
        Some(json!({})),
    );
    r.prober.fail = true;
    open(&r, T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    let err = step(&r, "testSecret", T1).await.err();
    assert_eq!(err.as_ref().map(|e| e.kind), Some(ErrorKind::TestFailed));
    assert_eq!(*lock(&r.prober.calls), 1);
    assert!(
        lock(&r.secrets.meta).has_stage("v0", AWSCURRENT),
        "nothing promoted"
    );
}

#[tokio::test]
async fn errors_name_secret_and_step_and_never_a_key_value() {
    let r = given(&[], Some(json!({})));
    open(&r, T1);
    assert_eq!(step(&r, "createSecret", T1).await, Ok(()));
    let id = r.keys.ids().into_iter().next().unwrap_or_default();
    let value = r
        .keys
        .key(&id)
        .and_then(|k| k.value)
        .map(|v| v.expose().to_owned())
        .unwrap_or_default();
    // The key now holds another value than the secret: testSecret must say so without either.
    if let Some(k) = lock(&r.keys.keys).get_mut(&id) {
        k.value = Some(KeyValue::new("OTHERVALUEabcdefghijklmnop"));
    }
    let err = step(&r, "testSecret", T1).await.err();
    let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(text.contains(ARN) && text.contains("testSecret"), "{text}");
    assert!(
        !text.contains(&value) && !text.contains("OTHERVALUE"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains(&value));
}

#[tokio::test]
async fn an_invalid_environment_fails_every_invocation_clearly() {
    let mut r = given(&[], Some(json!({})));
    r.config = Err(Failure::config(
        "OLD_KEY_ACTION must be one of delete, disable, keep-previous",
    ));
    open(&r, T1);
    let err = step(&r, "createSecret", T1).await.err();
    assert_eq!(
        err.as_ref().map(|e| e.kind),
        Some(ErrorKind::InvalidConfiguration)
    );
    assert!(r.keys.ids().is_empty());
}

#[test]
fn the_step_call_list_matches_the_adapters() {
    let adapters = [
        include_str!("../aws/gateway.rs"),
        include_str!("../aws/secrets.rs"),
        include_str!("../aws/lambda.rs"),
    ]
    .concat();
    let named: BTreeSet<&str> = adapters
        .split("aws_error(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let listed: BTreeSet<&str> = STEP_CALLS
        .iter()
        .flat_map(|(_, calls)| calls.iter().copied())
        .chain(crate::ops::OPERATOR_CALLS.iter().copied())
        .chain(SWEEP_CALLS.iter().copied())
        .collect();
    assert_eq!(
        named, listed,
        "an adapter call missing from STEP_CALLS (or OPERATOR_CALLS), or the reverse"
    );
    for call in &crate::ops::OPERATOR_CALLS {
        assert!(
            STEP_CALLS.iter().all(|(_, calls)| !calls.contains(call)),
            "{call} is a step's call: the fault matrix must cover it"
        );
    }
    for step in Step::ALL {
        assert!(step_calls(step).contains(&"DescribeSecret"), "{step}");
    }
}

#[tokio::test]
async fn replaying_finish_leaves_the_key_of_a_later_open_rotation_alone() {
    let r = given(&[], Some(json!({})));
    assert_eq!(rotate(&r, T1).await, Ok(()));
    assert_eq!(rotate(&r, T2).await, Ok(()));
    open(&r, T3);
    assert_eq!(step(&r, "createSecret", T3).await, Ok(()));
    let later = version_key(&r, T3).unwrap_or_default();
    // A late duplicate delivery of the finished rotation's last step.
    assert_eq!(step(&r, "finishSecret", T2).await, Ok(()));
    assert!(
        r.keys.key(&later).is_some(),
        "the later rotation's key was swept"
    );
    for s in ["setSecret", "testSecret", "finishSecret"] {
        assert_eq!(step(&r, s, T3).await, Ok(()));
    }
    assert_eq!(current_key(&r), Some(later));
}

/// The schedule tag's due time for `key`, if the secret has one.
fn scheduled(r: &Fake, key: &str) -> Option<i64> {
    crate::grace::Schedule::from_tags(&lock(&r.secrets.meta).tags)
        .due
        .get(key)
        .copied()
}

/// Moves every schedule entry of the secret `by` seconds earlier, as time passing would.
fn pass_time(r: &Fake, by: i64) {
    let mut meta = lock(&r.secrets.meta);
    let schedule = crate::grace::Schedule::from_tags(&meta.tags);
    for (key, due) in schedule.due {
        let (k, v) = crate::grace::schedule_tag(&key, due - by);
        meta.tags.retain(|(t, _)| *t != k);
        meta.tags.push((k, v));
    }
}

#[tokio::test]
async fn with_a_grace_period_the_previous_key_works_until_the_sweep_after_its_due_time() {
    let r = given(&[("GracePeriod", "2h")], Some(json!({})));
    assert_eq!(rotate(&r, T1).await, Ok(()));
    let k1 = current_key(&r).unwrap_or_default();
    let before = crate::grace::now_secs();
    assert_eq!(rotate(&r, T2).await, Ok(()));
    let due = scheduled(&r, &k1).unwrap_or_default();
    // Due the grace after AWSCURRENT moved: never sooner, and not minutes later.
    assert!(
        due > before + 7200 && due <= crate::grace::now_secs() + 7200 + 2,
        "{due}"
    );
    assert!(r.keys.key(&k1).is_some_and(|k| k.enabled));
    // A sweep before the due time changes nothing.
    let early = r.sweep().await.ok();
    assert_eq!(early.map(|o| (o.due_secrets, o.retired)), Some((0, 0)));
    assert!(r.keys.key(&k1).is_some());
    // After it, the key is deleted and its schedule entry removed.
    pass_time(&r, 7201);
    let swept = r.sweep().await.ok();
    assert_eq!(swept.map(|o| (o.due_secrets, o.retired)), Some((1, 1)));
    assert!(r.keys.key(&k1).is_none());
    assert_eq!(scheduled(&r, &k1), None);
    // A second sweep finds nothing to do.
    let again = r.sweep().await.ok();
    assert_eq!(again.map(|o| o.due_secrets), Some(0));
}

#[tokio::test]
async fn two_rotations_within_one_grace_keep_both_old_keys_until_each_ends() {
    let r = given(
        &[("GracePeriod", "1h"), ("OldKeyAction", "disable")],
        Some(json!({})),
    );
    assert_eq!(rotate(&r, T1).await, Ok(()));
    let k1 = current_key(&r).unwrap_or_default();
    assert_eq!(rotate(&r, T2).await, Ok(()));
    let k2 = current_key(&r).unwrap_or_default();
    pass_time(&r, 1800);
    assert_eq!(rotate(&r, T3).await, Ok(()));
    // k1 is held by no version now, and still in its grace: kept, enabled.
    assert!(r.keys.key(&k1).is_some_and(|k| k.enabled));
    assert!(r.keys.key(&k2).is_some_and(|k| k.enabled));
    pass_time(&r, 1801);
    let swept = r.sweep().await.ok();
    assert_eq!(swept.map(|o| o.retired), Some(1));
    // k1's grace ended: held by no version, it is deleted; k2's has not.
    assert!(r.keys.key(&k1).is_none());
    assert!(r.keys.key(&k2).is_some_and(|k| k.enabled));
    pass_time(&r, 3600);
    assert_eq!(r.sweep().await.ok().map(|o| o.retired), Some(1));
    // k2 is AWSPREVIOUS's: disabled by the policy, kept.
    assert!(r.keys.key(&k2).is_some_and(|k| !k.enabled));
}

#[tokio::test]
async fn a_key_rolled_back_to_during_its_grace_survives_the_sweep() {
    let r = given(&[("GracePeriod", "30m")], Some(json!({})));
    assert_eq!(rotate(&r, T1).await, Ok(()));
    let k1 = current_key(&r).unwrap_or_default();
    assert_eq!(rotate(&r, T2).await, Ok(()));
    // A roll-back: AWSCURRENT back on T1's version.
    r.secrets
        .move_stage(ARN, AWSCURRENT, Some(T1), Some(T2))
        .await
        .ok();
    pass_time(&r, 1801);
    let swept = r.sweep().await.ok();
    assert_eq!(swept.map(|o| (o.retired, o.released)), Some((0, 1)));
    assert!(r.keys.key(&k1).is_some_and(|k| k.enabled));
    assert_eq!(scheduled(&r, &k1), None);
}

#[tokio::test]
async fn a_grace_period_is_refused_with_keep_previous_and_bounded() {
    for (tags, code) in [
        (
            vec![("GracePeriod", "2h"), ("OldKeyAction", "keep-previous")],
            "grace-period-with-keep-previous",
        ),
        (vec![("GracePeriod", "8d")], "grace-period-invalid"),
        (vec![("GracePeriod", "soon")], "grace-period-invalid"),
    ] {
        let r = given(&tags, Some(json!({})));
        open(&r, T1);
        let err = step(&r, "createSecret", T1).await.err();
        assert!(
            err.as_ref().is_some_and(|e| e.cause.contains(code)),
            "{tags:?}: {err:?}"
        );
        assert!(r.keys.ids().is_empty());
    }
}
