//! The grace period's races, over the shared fakes (found by the attacker review of issue 19;
//! each failed before its fix): an interrupted roll-back run again, a finishSecret re-run after
//! a lost move answer, and a sweep racing a rotation's re-run.

#[path = "fakes/mod.rs"]
mod fakes;

use std::sync::Arc;

use api_key_rotator::config::FunctionConfig;
use api_key_rotator::ops::{Operator, SettingsOverrides};
use api_key_rotator::ports::{AWSCURRENT, AWSPREVIOUS};
use api_key_rotator::Rotator;
use fakes::{
    lock, Account, DataPlane, FakeGateway, FakeSecrets, Fault, FaultKind, NoFunctions, Playing,
};
use serde_json::json;

const T1: &str = "00000001-0000-4000-8000-000000000001";
const T2: &str = "00000002-0000-4000-8000-000000000002";

type Op = Operator<FakeSecrets, FakeGateway, DataPlane, NoFunctions>;

fn world(tags: &[(&str, &str)]) -> (Arc<Account>, String, Op) {
    let account = Account::new(Playing::Aws);
    account.add_plan("p1", "a1");
    let id = account.add_key("partner-a", &[]);
    account.attach_raw("p1", &id);
    let value = json!({"api_key_id": id, "api_key_value": account.key_value(&id),
        "key_name": "partner-a", "usage_plan_ids": ["p1"]})
    .to_string();
    let mut all = vec![("KeyName", "partner-a"), ("UsagePlan", "p1")];
    all.extend_from_slice(tags);
    let arn = account.add_secret("partner-a-secret", Some(value), &all);
    let operator = Operator::new(
        Rotator::new(
            FakeSecrets(account.clone()),
            FakeGateway(account.clone()),
            DataPlane(account.clone()),
            Ok(FunctionConfig::default()),
        ),
        NoFunctions,
        SettingsOverrides {
            allowed_usage_plan_ids: Some(String::new()),
            allowed_test_url_hosts: Some(String::new()),
            old_key_action: None,
        },
        "us-east-1".to_owned(),
    );
    (account, arn, operator)
}

async fn rotate(account: &Account, op: &Op, arn: &str, token: &str) {
    account.rotate_secret(arn, token);
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let r = op
            .rotator
            .handle(&json!({"Step": step, "SecretId": arn, "ClientRequestToken": token}))
            .await;
        assert_eq!(r, Ok(()), "{step}");
    }
}

fn key_of(account: &Account, arn: &str, stage: &str) -> String {
    let v = account.version_with(arn, stage).unwrap_or_default();
    let raw = account.value_of(arn, &v).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&raw)
        .ok()
        .and_then(|j| j["api_key_id"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn scheduled(account: &Account, arn: &str, key: &str) -> bool {
    let secrets = lock(&account.secrets);
    let tags = secrets.get(arn).map(|s| s.tags.clone()).unwrap_or_default();
    api_key_rotator::grace::Schedule::from_tags(&tags)
        .due
        .contains_key(key)
}

fn exists(account: &Account, key: &str) -> bool {
    lock(&account.keys).contains_key(key)
}

/// rollback --apply interrupted after MoveCurrent (its ScheduleRetirement call fails, as a
/// crash or Ctrl-C there would leave it): the re-run, which "finishes what is left", takes the
/// secret for rolled back already and never schedules the key rolled back from; the next
/// rotation then deletes that key at once, though it was AWSCURRENT moments before.
#[tokio::test]
async fn a_rollback_run_again_after_its_move_gives_the_rolled_back_from_key_its_grace(
) -> Result<(), String> {
    let (account, arn, op) = world(&[("OldKeyAction", "delete"), ("GracePeriod", "2h")]);
    rotate(&account, &op, &arn, T1).await;
    let k1 = key_of(&account, &arn, AWSCURRENT);
    account.arm(Some(Fault {
        op: "secretsmanager:TagResource",
        nth: 0,
        kind: FaultKind::Fail,
    }));
    let seen = op.inspect(&arn, None).await.map_err(|e| e.0)?;
    let first = op.rollback(&seen, true, false).await.map_err(|e| e.0)?;
    assert!(
        first.failed.is_some(),
        "the injected failure stops the roll-back: {first:?}"
    );
    assert_eq!(
        key_of(&account, &arn, AWSPREVIOUS),
        k1,
        "AWSCURRENT moved back"
    );
    account.arm(None);
    let seen = op.inspect(&arn, None).await.map_err(|e| e.0)?;
    let again = op.rollback(&seen, true, false).await.map_err(|e| e.0)?;
    eprintln!(
        "re-run: refused={:?} failed={:?} steps={:?}",
        again.refused, again.failed, again.steps
    );
    let has_grace = scheduled(&account, &arn, &k1);
    // What that costs: the next rotation deletes it at once.
    rotate(&account, &op, &arn, T2).await;
    let survives = exists(&account, &k1);
    assert!(
        has_grace && survives,
        "the re-run left the key rolled back from ({k1}) without a grace period (scheduled: {has_grace}), and the next rotation deleted it at once (exists: {survives})"
    );
    Ok(())
}

/// Control for the test above: uninterrupted, the roll-back gives the key it rolls back from
/// its grace, and the next rotation keeps it.
#[tokio::test]
async fn a_rollback_schedules_the_rolled_back_from_key() -> Result<(), String> {
    let (account, arn, op) = world(&[("OldKeyAction", "delete"), ("GracePeriod", "2h")]);
    rotate(&account, &op, &arn, T1).await;
    let k1 = key_of(&account, &arn, AWSCURRENT);
    let seen = op.inspect(&arn, None).await.map_err(|e| e.0)?;
    let out = op.rollback(&seen, true, false).await.map_err(|e| e.0)?;
    assert!(out.failed.is_none() && out.refused.is_none(), "{out:?}");
    assert!(scheduled(&account, &arn, &k1));
    rotate(&account, &op, &arn, T2).await;
    assert!(exists(&account, &k1));
    Ok(())
}

fn due_of(account: &Account, arn: &str, key: &str) -> Option<i64> {
    let secrets = lock(&account.secrets);
    let tags = secrets.get(arn).map(|s| s.tags.clone()).unwrap_or_default();
    api_key_rotator::grace::Schedule::from_tags(&tags)
        .due
        .get(key)
        .copied()
}

/// finishSecret's move takes effect and its answer is lost (or the invocation dies right
/// after it): the re-run (TokenState::AlreadyCurrent) keeps the pre-move due time, which
/// includes the invocation's whole remaining time (up to the 300 s timeout). With the sweep's
/// 4-minute interval the key can live ~2h10m after the move, past the promised 2h05m, and
/// `status` never reports key-past-grace (it measures from that later due time).
#[tokio::test]
async fn a_finish_rerun_after_a_lost_move_answer_brings_the_due_time_back_to_move_plus_grace(
) -> Result<(), String> {
    let (account, arn, op) = world(&[("OldKeyAction", "delete"), ("GracePeriod", "2h")]);
    rotate(&account, &op, &arn, T1).await;
    let k1 = key_of(&account, &arn, AWSCURRENT);
    account.rotate_secret(&arn, T2);
    for step in ["createSecret", "setSecret", "testSecret"] {
        let r = op
            .rotator
            .handle(&json!({"Step": step, "SecretId": arn, "ClientRequestToken": T2}))
            .await;
        assert_eq!(r, Ok(()), "{step}");
    }
    account.arm(Some(Fault {
        op: "UpdateSecretVersionStage",
        nth: 0,
        kind: FaultKind::LostAnswer,
    }));
    let moved_at = api_key_rotator::grace::now_secs();
    let first = op
        .rotator
        .handle(&json!({"Step": "finishSecret", "SecretId": arn, "ClientRequestToken": T2}))
        .await;
    assert!(first.is_err(), "the lost answer fails the first try");
    account.arm(None);
    let retry = op
        .rotator
        .handle(&json!({"Step": "finishSecret", "SecretId": arn, "ClientRequestToken": T2}))
        .await;
    assert_eq!(retry, Ok(()));
    let due = due_of(&account, &arn, &k1).unwrap_or_default();
    assert!(
        due <= moved_at + 7200 + 2,
        "the previous key is due {} s after move + grace (sweep lateness comes on top)",
        due - moved_at - 7200
    );
    Ok(())
}

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use api_key_rotator::error::AwsError;
use api_key_rotator::event::RotationToken;
use api_key_rotator::ports::{SecretCatalog, SecretMetadata, SecretStore, SecretText, VersionRef};
use async_trait::async_trait;

/// The fake Secrets Manager, with a finishSecret retry that lands right after the sweep's
/// second DescribeSecret (its re-read before acting), as a throttled UntagResource would let it.
struct FinishLandsAfterReread {
    inner: FakeSecrets,
    describes: AtomicUsize,
    finisher: Op,
    arn: String,
    token: &'static str,
    /// Which DescribeSecret call (from 0) the steps land after.
    hook_on: AtomicUsize,
    /// Open a rotation with `token` first (RotateSecret), and run these steps of it.
    open: bool,
    steps: &'static [&'static str],
}

#[async_trait]
impl SecretStore for FinishLandsAfterReread {
    async fn describe(&self, id: &str) -> Result<Option<SecretMetadata>, AwsError> {
        let mut out = self.inner.describe(id).await;
        if let Ok(Some(meta)) = &mut out {
            meta.rotation.lambda_arn =
                Some("arn:aws:lambda:us-east-1:000000000000:function:api-key-rotator".into());
        }
        if self.describes.fetch_add(1, Ordering::SeqCst) == self.hook_on.load(Ordering::SeqCst) {
            if self.open {
                self.inner.0.rotate_secret(&self.arn, self.token);
            }
            for step in self.steps {
                let r = self
                    .finisher
                    .rotator
                    .handle(&json!({"Step": step, "SecretId": self.arn, "ClientRequestToken": self.token}))
                    .await;
                assert_eq!(r, Ok(()), "{step} landing in between");
            }
        }
        out
    }
    async fn get_value(&self, id: &str, v: VersionRef<'_>) -> Result<Option<SecretText>, AwsError> {
        self.inner.get_value(id, v).await
    }
    async fn put_pending(
        &self,
        id: &str,
        t: &str,
        v: &SecretText,
        r: Option<&RotationToken>,
    ) -> Result<(), AwsError> {
        self.inner.put_pending(id, t, v, r).await
    }
    async fn move_stage(
        &self,
        id: &str,
        s: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        self.inner.move_stage(id, s, to, from).await
    }
    async fn tag_secret(&self, id: &str, k: &str, v: &str) -> Result<(), AwsError> {
        self.inner.tag_secret(id, k, v).await
    }
    async fn untag_secret(&self, id: &str, k: &str) -> Result<(), AwsError> {
        self.inner.untag_secret(id, k).await
    }
}

#[async_trait]
impl SecretCatalog for FinishLandsAfterReread {
    async fn list_secrets(&self, t: &str, p: Option<&str>) -> Result<Vec<String>, AwsError> {
        self.inner.list_secrets(t, p).await
    }
    async fn list_secrets_tagged(
        &self,
        k: &str,
        v: &[String],
        p: Option<&str>,
        r: Option<&str>,
    ) -> Result<Vec<String>, AwsError> {
        self.inner.list_secrets_tagged(k, v, p, r).await
    }
    async fn start_rotation(&self, id: &str, t: &str) -> Result<(), AwsError> {
        self.inner.start_rotation(id, t).await
    }
    async fn version_dates(&self, id: &str) -> Result<BTreeMap<String, i64>, AwsError> {
        self.inner.version_dates(id).await
    }
}

/// A finishSecret whose move failed leaves its pre-move schedule tag on the key that stays
/// AWSCURRENT. Once that tag is due, the sweep finds the key needed (current) and removes "its"
/// tag, by key alone: if the retried finishSecret lands between the sweep's re-read and that
/// UntagResource, the sweep removes the fresh entry the retry wrote for the key it just made
/// AWSPREVIOUS. That key is then never retired by the sweep (it lives until the next rotation).
#[tokio::test]
async fn the_sweep_never_removes_a_schedule_entry_a_rotation_rewrites_after_its_reread(
) -> Result<(), String> {
    let (account, arn, op) = world(&[("OldKeyAction", "delete"), ("GracePeriod", "2h")]);
    rotate(&account, &op, &arn, T1).await;
    let k1 = key_of(&account, &arn, AWSCURRENT);
    account.rotate_secret(&arn, T2);
    for step in ["createSecret", "setSecret", "testSecret"] {
        let r = op
            .rotator
            .handle(&json!({"Step": step, "SecretId": arn, "ClientRequestToken": T2}))
            .await;
        assert_eq!(r, Ok(()), "{step}");
    }
    // The move fails: k1 stays AWSCURRENT with the pre-move tag.
    account.arm(Some(Fault {
        op: "UpdateSecretVersionStage",
        nth: 0,
        kind: FaultKind::Fail,
    }));
    let failed = op
        .rotator
        .handle(&json!({"Step": "finishSecret", "SecretId": arn, "ClientRequestToken": T2}))
        .await;
    assert!(failed.is_err());
    account.arm(None);
    assert!(
        scheduled(&account, &arn, &k1),
        "the pre-move tag is on the current key"
    );
    // Two hours and more pass before the rotation is retried: that tag is due.
    let (k, v) = api_key_rotator::grace::schedule_tag(&k1, api_key_rotator::grace::now_secs() - 60);
    account.set_tag(&arn, &k, &v);
    let finisher = world_sharing(&account);
    let sweeper = api_key_rotator::Rotator::new(
        FinishLandsAfterReread {
            inner: FakeSecrets(account.clone()),
            describes: AtomicUsize::new(0),
            finisher,
            arn: arn.clone(),
            token: T2,
            hook_on: AtomicUsize::new(1),
            open: false,
            steps: &["finishSecret"],
        },
        FakeGateway(account.clone()),
        DataPlane(account.clone()),
        Ok(FunctionConfig::default()),
    );
    let swept = sweeper.sweep().await;
    eprintln!("sweep: {swept:?}");
    assert_eq!(
        key_of(&account, &arn, AWSPREVIOUS),
        k1,
        "the retry moved AWSCURRENT"
    );
    assert!(exists(&account, &k1));
    assert!(
        scheduled(&account, &arn, &k1),
        "k1 is AWSPREVIOUS and alive, and its schedule entry (written by the retry) is gone: no sweep will retire it"
    );
    Ok(())
}

fn world_sharing(account: &Arc<Account>) -> Op {
    Operator::new(
        Rotator::new(
            FakeSecrets(account.clone()),
            FakeGateway(account.clone()),
            DataPlane(account.clone()),
            Ok(FunctionConfig::default()),
        ),
        NoFunctions,
        SettingsOverrides {
            allowed_usage_plan_ids: Some(String::new()),
            allowed_test_url_hosts: Some(String::new()),
            old_key_action: None,
        },
        "us-east-1".to_owned(),
    )
}
