//! Guards that a test must notice when deleted (issue 20). Each case arranges the one state only
//! its guard refuses, so that removing the guard changes the outcome the case asserts: a
//! different error (or none), a key retired, a label moved. docs/reliability.md's table of
//! guards names the mutation each case was seen to catch.
//!
//! Where an earlier guard would refuse first through the public entry point, the case goes
//! through the narrowest real path: the operator's own code in-process (`Operator`, on the real
//! AWS adapters against the local AWS), with the state arranged by the local AWS's SDK clients.

use std::collections::BTreeSet;
use std::sync::Arc;

use api_key_rotator::config::TIE_TAG;
use api_key_rotator::ops::{DeletedSecretKeys, KeyView, Role, SettingsOverrides, Shared};
use api_key_rotator::ports::KeyGateway;
use api_key_rotator::{AwsOperator, ErrorKind};
use serde_json::json;

use crate::adversary::create_refused_at_put;
use crate::cases::{rotator, setup, tied_ids};
use crate::ensure;
use crate::operator::{cli, codes};
use crate::support::proxy::Proxy;
use crate::support::world::{fast_sdk, sdk_config, str_field, World, REGION};
use crate::support::R;

const AWSCURRENT: &str = "AWSCURRENT";
const AWSPENDING: &str = "AWSPENDING";
const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// The operator commands' code, in-process, on the real AWS adapters against the local AWS.
pub(crate) async fn operator(w: &World) -> R<AwsOperator> {
    let sdk = sdk_config(&w.endpoint, &fast_sdk()).await;
    Ok(api_key_rotator::operator_from_sdk(
        &sdk,
        SettingsOverrides::default(),
        REGION.to_owned(),
    ))
}

/// The key id a labelled version's value names.
async fn key_with(w: &World, secret: &str, stage: &str) -> R<String> {
    str_field(&w.value(secret, stage).await?, "api_key_id")
        .ok_or_else(|| format!("no api_key_id in {stage}").into())
}

/// Writes `value` as a new version of `secret` carrying only `stage` (a person's edit).
async fn put_by_hand(w: &World, secret: &str, value: &str, stage: &str) -> R<String> {
    let version = w.token();
    w.sm.put_secret_value()
        .secret_id(secret)
        .client_request_token(&version)
        .secret_string(value)
        .version_stages(stage)
        .send()
        .await?;
    Ok(version)
}

/// Guard: `check_not_stale` (src/rotation/pending.rs), called by createSecret on a stored
/// pending value, by setSecret and testSecret through `pending_value`, and by finishSecret.
/// createSecret writes the pending value, then a person writes a new AWSCURRENT by hand: every
/// step on the pending version is refused with `pending-stale` and nothing changes. Without the
/// guard, createSecret, setSecret and testSecret succeed and finishSecret promotes the version
/// over the hand-written value.
pub async fn guard_every_step_refuses_a_stale_pending_version(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let r = rotator(&w).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let first_key = key_with(&w, &s.secret, AWSCURRENT).await?;
    let token = w.open_rotation(&s.secret).await?;
    r.handle(&World::event("createSecret", &s.secret, &token))
        .await?;
    let by_hand = put_by_hand(
        &w,
        &s.secret,
        &json!({"api_key_id": first_key}).to_string(),
        AWSCURRENT,
    )
    .await?;
    let before = w.snapshot(&s.secret, &[&s.plan]).await?;
    let mut wrong = Vec::new();
    for step in crate::support::world::STEPS {
        match r.handle(&World::event(step, &s.secret, &token)).await {
            Err(e)
                if e.kind == ErrorKind::RotationState
                    && e.cause.contains("[pending-stale]")
                    && e.cause.contains("AWSCURRENT has moved") => {}
            other => wrong.push(format!("{step}: {other:?}")),
        }
    }
    ensure!(
        wrong.is_empty(),
        "steps on a stale pending version were not refused as pending-stale: {wrong:?}"
    );
    ensure!(
        before == w.snapshot(&s.secret, &[&s.plan]).await?,
        "a refused step changed something"
    );
    let versions = w.versions(&s.secret).await?;
    ensure!(
        versions
            .get(&by_hand)
            .is_some_and(|l| l.iter().any(|s| s == AWSCURRENT)),
        "AWSCURRENT left the hand-written version: {versions:?}"
    );
    Ok(())
}

/// Guard: "the token's version is neither AWSPENDING nor AWSCURRENT" (`check_token`,
/// src/rotation/mod.rs). A version carrying only a custom label is a version of the secret, is
/// not AWSPREVIOUS (so the rolled-back guard does not see it) and is not AWSPENDING: only this
/// guard refuses it. Without it, createSecret makes a key for the version.
pub async fn guard_a_version_with_only_a_custom_label_is_no_rotation(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let r = rotator(&w).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let current = key_with(&w, &s.secret, AWSCURRENT).await?;
    let custom = put_by_hand(
        &w,
        &s.secret,
        &json!({"api_key_id": current}).to_string(),
        "BACKUP",
    )
    .await?;
    let before = w.snapshot(&s.secret, &[&s.plan]).await?;
    let mut wrong = Vec::new();
    for step in crate::support::world::STEPS {
        match r.handle(&World::event(step, &s.secret, &custom)).await {
            Err(e)
                if e.kind == ErrorKind::RotationState
                    && e.cause.contains("neither AWSPENDING nor AWSCURRENT") => {}
            other => wrong.push(format!("{step}: {other:?}")),
        }
    }
    ensure!(
        wrong.is_empty(),
        "steps on a version labelled only BACKUP: {wrong:?}"
    );
    ensure!(
        before == w.snapshot(&s.secret, &[&s.plan]).await?,
        "a refused step changed something"
    );
    Ok(())
}

/// Guard: `Code::CurrentKeyForeign` in `validate::current_key` (src/rotation/validate.rs), as
/// createSecret applies it. The AWSCURRENT value names a key tied to another secret: refused as
/// `current-key-foreign`, and the key keeps its tie. Without the guard the same key falls
/// through to `adopted-key-not-found` (same error kind): the case tells them apart by the code.
pub async fn guard_create_refuses_a_current_key_of_another_secret_as_foreign(
    w: Arc<World>,
) -> R<()> {
    let other = w.create_secret(Some("{}"), &[("KeyName", "other")]).await?;
    let foreign = w
        .create_tied_key(&w.unique("guards-foreign"), &other)
        .await?;
    let s = setup(&w, Some(&json!({"api_key_id": foreign}).to_string()), &[]).await?;
    let r = rotator(&w).await?;
    let token = w.open_rotation(&s.secret).await?;
    let before = w.snapshot(&s.secret, &[&s.plan]).await?;
    let e = r
        .handle(&World::event("createSecret", &s.secret, &token))
        .await
        .err();
    ensure!(
        e.as_ref()
            .is_some_and(|e| e.kind == ErrorKind::InvalidConfiguration
                && e.cause.contains("[current-key-foreign]")
                && e.cause.contains(&format!(
                    "key {foreign} belongs to another secret ({other})"
                ))),
        "createSecret on a value naming another secret's key: {e:?}"
    );
    ensure!(
        before == w.snapshot(&s.secret, &[&s.plan]).await?,
        "the refused createSecret changed something"
    );
    let key = w.key(&foreign).await?.ok_or("the foreign key is gone")?;
    ensure!(
        key.tags().and_then(|t| t.get(TIE_TAG)) == Some(&other),
        "the foreign key's tie changed: {:?}",
        key.tags()
    );
    ensure!(
        tied_ids(&w, &s.secret).await?.is_empty(),
        "a key was tied to the secret"
    );
    Ok(())
}

/// Guard: cleanup reads the secret again before each change (src/ops/cleanup.rs). The
/// inspection finds an orphan; a rotation opens before cleanup acts on it: cleanup is refused
/// and the orphan is left alone. The `cleanup` command inspects and acts within one run, so the
/// race is played in-process between `Operator::inspect` and `Operator::cleanup`. Then, the
/// rotation cancelled, the same cleanup retires the orphan (the case can see a retirement).
pub async fn guard_cleanup_reads_the_secret_again_before_each_delete(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let r = rotator(&w).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let orphan = w
        .create_tied_key(&w.unique("guards-orphan"), &s.secret)
        .await?;
    let op = operator(&w).await?;
    let seen = op
        .inspect(&s.secret, None)
        .await
        .map_err(|e| format!("inspect: {e:?}"))?;
    ensure!(
        seen.keys
            .iter()
            .any(|k| k.id == orphan && k.role == Role::Orphan),
        "the inspection did not find the orphan: {:?}",
        seen.keys
    );
    // A rotation starts between the inspection and the first delete.
    let token = w.open_rotation(&s.secret).await?;
    let out = op.cleanup(&seen, true).await;
    ensure!(
        out.retired.is_empty()
            && out
                .refused
                .as_deref()
                .is_some_and(|m| m.contains("changed during the cleanup")),
        "cleanup acted on a secret whose labels moved since it was read: {out:?}"
    );
    ensure!(
        w.key(&orphan).await?.is_some(),
        "the orphan was deleted while a rotation was open"
    );
    // Cancelled, and read again: the orphan is retired.
    w.sm.update_secret_version_stage()
        .secret_id(&s.secret)
        .version_stage(AWSPENDING)
        .remove_from_version_id(&token)
        .send()
        .await?;
    let seen = op
        .inspect(&s.secret, None)
        .await
        .map_err(|e| format!("inspect: {e:?}"))?;
    let out = op.cleanup(&seen, true).await;
    ensure!(
        out.retired == [orphan.clone()] && out.refused.is_none(),
        "cleanup of an unchanged secret: {out:?}"
    );
    ensure!(w.key(&orphan).await?.is_none(), "the orphan survived");
    Ok(())
}

/// Guard: `cleanup --all` reads a deleted secret again before each of its keys is deleted, and
/// leaves the keys alone when it exists again (`cleanup_deleted`, src/ops/cleanup.rs). A
/// secret force-deleted in AWS never comes back under its ARN, so the listing that found it
/// gone is played by hand: the keys of a live secret, as `deleted_secret_keys` would report
/// them had it been read as gone a moment earlier. Once it is really deleted, the same call
/// retires them.
pub async fn guard_cleanup_all_leaves_the_keys_of_a_secret_that_exists_again(
    w: Arc<World>,
) -> R<()> {
    let secret = w
        .create_secret(Some("{}"), &[("KeyName", &w.unique("guards-back"))])
        .await?;
    let key = w.create_tied_key(&w.unique("guards-back"), &secret).await?;
    let op = operator(&w).await?;
    let gone = DeletedSecretKeys {
        secret: secret.clone(),
        scheduled_for_deletion: false,
        keys: vec![KeyView {
            id: key.clone(),
            name: "guards-back".into(),
            enabled: true,
            usage_plan_ids: vec![],
            created: None,
            tie: Some(secret.clone()),
            role: Role::Orphan,
            retire_at: None,
        }],
        errors: vec![],
    };
    let out = op.cleanup_deleted(&gone, true, None).await;
    ensure!(
        out.retired.is_empty()
            && out
                .refused
                .as_deref()
                .is_some_and(|m| m.contains("exists again")),
        "cleanup --all acted on the keys of a secret that exists: {out:?}"
    );
    ensure!(
        w.key(&key).await?.is_some(),
        "the live secret's key was deleted"
    );
    w.sm.delete_secret()
        .secret_id(&secret)
        .force_delete_without_recovery(true)
        .send()
        .await?;
    let out = op.cleanup_deleted(&gone, true, None).await;
    ensure!(
        out.retired == [key.clone()] && out.refused.is_none(),
        "cleanup --all of a deleted secret's key: {out:?}"
    );
    ensure!(
        w.key(&key).await?.is_none(),
        "the deleted secret's key survived"
    );
    Ok(())
}

/// Guard: the region filter of `deleted_secret_keys` (src/ops/deleted.rs): a key tied to a
/// secret of another region is never an orphan here (the region's own Secrets Manager cannot
/// see that secret, so it would look deleted). Two keys under one name prefix: one tied to a
/// force-deleted secret of this region (reported), one tied to a secret ARN of eu-west-1 that
/// this region has no secret for (never reported). In-process, with `--prefix`'s scope, so that
/// the other cases' keys stay out of it.
pub async fn guard_cleanup_all_never_takes_a_key_of_another_regions_secret(w: Arc<World>) -> R<()> {
    let prefix = w.unique("guards-region");
    let dead = w
        .create_secret_named(
            &format!("{prefix}-dead"),
            Some("{}"),
            &[("KeyName", "guards-dead")],
        )
        .await?;
    let dead_key = w.create_tied_key(&format!("{prefix}-dead"), &dead).await?;
    w.sm.delete_secret()
        .secret_id(&dead)
        .force_delete_without_recovery(true)
        .send()
        .await?;
    let elsewhere = dead.replacen(&format!(":{REGION}:"), ":eu-west-1:", 1);
    ensure!(elsewhere != dead, "no region in {dead}");
    let far_key = w
        .create_tied_key(&format!("{prefix}-far"), &elsewhere)
        .await?;
    let op = operator(&w).await?;
    let listing = op
        .rotator
        .keys
        .list_all_keys()
        .await
        .map_err(|e| format!("list_all_keys: {e}"))?;
    ensure!(
        listing.iter().any(|k| k.id == far_key),
        "the listing does not show the key of the other region's secret"
    );
    let shared = Shared::new(listing, None);
    let deleted = op
        .deleted_secret_keys(&shared, &BTreeSet::new(), &BTreeSet::new(), Some(&prefix))
        .await;
    let reported: BTreeSet<&str> = deleted
        .iter()
        .flat_map(|d| d.keys.iter().map(|k| k.id.as_str()))
        .collect();
    ensure!(
        reported.contains(dead_key.as_str()),
        "the deleted secret's key was not reported: {deleted:?}"
    );
    ensure!(
        !reported.contains(far_key.as_str()) && deleted.iter().all(|d| d.secret != elsewhere),
        "a key of another region's secret was taken for an orphan: {deleted:?}"
    );
    Ok(())
}

/// Guard: rollback's foreign-tie refusal (src/ops/rollback.rs, "is tied to another secret").
/// The AWSPREVIOUS version names a key tied to another secret, and AWSCURRENT was rotated from
/// it: `rollback --apply` refuses, and nothing moves. Without the guard it puts that key on the
/// secret's plan and moves AWSCURRENT onto it. The versions are written by hand (the local
/// AWS's GetApiKey does not show a tie changed by TagResource after creation, so a key the
/// function made cannot be re-tied here).
pub async fn guard_rollback_refuses_a_key_tied_to_another_secret(w: Arc<World>) -> R<()> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let key_name = w.unique("guards-back");
    let other = w.create_secret(Some("{}"), &[("KeyName", "other")]).await?;
    let full = |id: &str, value: &str, from: Option<&str>| {
        let mut v = json!({"api_key_id": id, "api_key_value": value, "key_name": key_name,
            "usage_plan_ids": [plan]});
        if let Some(from) = from {
            v["rotated_from"] = json!(from);
        }
        v.to_string()
    };
    let foreign = w.create_tied_key(&key_name, &other).await?;
    let foreign_value = w
        .key(&foreign)
        .await?
        .and_then(|k| k.value().map(str::to_owned))
        .ok_or("no value for the foreign key")?;
    let secret = w
        .create_secret(
            Some(&full(&foreign, &foreign_value, None)),
            &[("KeyName", &key_name), ("UsagePlan", &plan)],
        )
        .await?;
    let previous = w
        .versions(&secret)
        .await?
        .into_iter()
        .find(|(_, l)| l.iter().any(|s| s == AWSCURRENT))
        .map(|(v, _)| v)
        .ok_or("no AWSCURRENT version")?;
    let own = w.create_tied_key(&key_name, &secret).await?;
    w.attach(&plan, &own).await?;
    let own_value = w
        .key(&own)
        .await?
        .and_then(|k| k.value().map(str::to_owned))
        .ok_or("no value for the secret's key")?;
    put_by_hand(
        &w,
        &secret,
        &full(&own, &own_value, Some(&previous)),
        AWSCURRENT,
    )
    .await?;
    ensure!(
        w.versions(&secret)
            .await?
            .get(&previous)
            .is_some_and(|l| l.iter().any(|s| s == AWSPREVIOUS)),
        "the first version is not AWSPREVIOUS"
    );
    let before = w.snapshot(&secret, &[&plan]).await?;
    let run = cli(&w, &["--json", "rollback", &secret, "--apply"]).await?;
    let e = &run.json["secrets"][0];
    ensure!(
        run.code == 1
            && e["refused"].as_str().is_some_and(|m| m.contains(&format!(
                "the key {foreign} is tied to another secret ({other})"
            ))),
        "rollback to a key tied to another secret: exit {} {}",
        run.code,
        run.stdout
    );
    ensure!(
        before == w.snapshot(&secret, &[&plan]).await?,
        "the refused roll-back changed something"
    );
    crate::operator::no_key_values(&w, &[&run]).await?;
    Ok(())
}

/// Guard: the tie tag must fit (`validate::tie_fits` in createSecret, `validate::tie_too_long`
/// in `check`; API Gateway takes tag values of at most 256 characters and the tie tag's value
/// is the secret's ARN). A secret whose ARN is 257 characters or more: createSecret is refused
/// with `secret-arn-too-long` before any change (no key, no value, nothing tied), and `check`
/// reports the finding. A secret whose ARN is exactly 256 characters rotates, and `check` does
/// not report it (the boundary).
pub async fn guard_a_secret_arn_too_long_for_the_tie_tag_is_refused_before_any_change(
    w: Arc<World>,
) -> R<()> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    // The ARN's length without the name: measured on a short secret (the suffix Secrets
    // Manager appends is of fixed length).
    let probe_name = w.unique("guards-arn");
    let probe = w
        .create_secret_named(&probe_name, Some("{}"), &[("KeyName", "probe")])
        .await?;
    let overhead = probe.chars().count() - probe_name.chars().count();
    let named = |len: usize| {
        let mut name = w.unique("guards-arn");
        while name.len() < len {
            name.push('x');
        }
        name
    };
    let mut runs = Vec::new();
    for (arn_len, refused) in [(257, true), (256, false)] {
        let name = named(arn_len - overhead);
        let key_name = w.unique("guards-arn");
        let secret = w
            .create_secret_named(
                &name,
                Some("{}"),
                &[("KeyName", &key_name), ("UsagePlan", &plan)],
            )
            .await?;
        ensure!(
            secret.chars().count() == arn_len,
            "the ARN is {} characters, expected {arn_len}: {secret}",
            secret.chars().count()
        );
        let r = rotator(&w).await?;
        let token = w.open_rotation(&secret).await?;
        let before = w.snapshot(&secret, &[&plan]).await?;
        let e = r
            .handle(&World::event("createSecret", &secret, &token))
            .await
            .err();
        let run = cli(&w, &["--json", "check", &secret]).await?;
        let finding = codes(&run.json["secrets"][0])
            .get("secret-arn-too-long")
            .cloned();
        if refused {
            ensure!(
                e.as_ref()
                    .is_some_and(|e| e.kind == ErrorKind::InvalidConfiguration
                        && e.cause.contains("[secret-arn-too-long]")
                        && e.cause
                            .contains(&format!("the secret's ARN is {arn_len} characters"))),
                "createSecret with a {arn_len}-character ARN: {e:?}"
            );
            ensure!(
                before == w.snapshot(&secret, &[&plan]).await?,
                "the refused createSecret changed something"
            );
            ensure!(
                w.keys_with_prefix(&key_name).await?.is_empty()
                    && w.value(&secret, AWSPENDING).await?.is_none(),
                "the refused createSecret made a key or stored a value"
            );
            ensure!(
                finding.as_deref() == Some("error") && run.code == 1,
                "check on a {arn_len}-character ARN: exit {} {}",
                run.code,
                run.stdout
            );
        } else {
            ensure!(
                e.is_none(),
                "createSecret with a {arn_len}-character ARN: {e:?}"
            );
            ensure!(
                finding.is_none(),
                "check on a {arn_len}-character ARN: {}",
                run.stdout
            );
            for step in ["setSecret", "testSecret", "finishSecret"] {
                r.handle(&World::event(step, &secret, &token)).await?;
            }
            let key = key_with(&w, &secret, AWSCURRENT).await?;
            let k = w.key(&key).await?.ok_or("the new key does not exist")?;
            ensure!(
                k.tags().and_then(|t| t.get(TIE_TAG)) == Some(&secret),
                "the key does not carry the 256-character tie"
            );
        }
        runs.push(run);
    }
    crate::operator::no_key_values(&w, &runs.iter().collect::<Vec<_>>()).await?;
    Ok(())
}

/// Guard: the name-suffix skip (`Survey::unneeded`, src/ownership/mod.rs): a key named for an
/// open rotation's version and held by no version yet is that rotation's createSecret's work in
/// progress, not an orphan. createSecret makes the key and fails at PutSecretValue; then the
/// previous rotation's finishSecret is delivered late (a replay): it must leave the key alone,
/// `status` must call it `duplicate`, not `orphan`, and the re-run rotation completes with that
/// very key. Without the skip the late finishSecret deletes it (and a createSecret in flight
/// between CreateApiKey and PutSecretValue would store a value naming a deleted key). `cleanup`
/// never reaches the skip: it refuses a secret with an open rotation first.
pub async fn guard_a_late_finish_spares_the_key_an_open_rotation_is_making(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, crate::cases::config()).await?;
    let s = setup(&w, Some("{}"), &[]).await?;
    let (first, errors) = w.rotate(&r, &s.secret, 1).await?;
    ensure!(errors.is_empty(), "{errors:?}");
    let token = w.open_rotation(&s.secret).await?;
    create_refused_at_put(&r, &proxy, &s.secret, &token).await?;
    let made = w
        .keys_with_prefix(&format!("{}-{token}", s.key_name))
        .await?;
    ensure!(made.len() == 1, "{} keys for the open rotation", made.len());
    let made = made[0].id().unwrap_or_default().to_owned();
    r.handle(&World::event("finishSecret", &s.secret, &first))
        .await?;
    ensure!(
        w.key(&made).await?.is_some(),
        "the late finishSecret deleted the key the open rotation made"
    );
    let run = cli(&w, &["--json", "status", &s.secret]).await?;
    let role = run.json["secrets"][0]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["id"] == made.as_str())
        .map(|k| k["role"].clone());
    ensure!(
        role == Some(json!("duplicate")),
        "status gives the open rotation's key the role {role:?}: {}",
        run.stdout
    );
    World::drive(&r, &s.secret, &token, 1, || {}).await?;
    let current = crate::cases::assert_rotated(&w, &s, &token, &[&s.plan]).await?;
    ensure!(
        current == made,
        "the re-run made {current}, not the key {made} its first try made"
    );
    Ok(())
}

/// Guard: `cleanup --all` reads a deleted secret's namesake again before each of its keys is
/// deleted (`cleanup_deleted`, src/ops/cleanup.rs). The section was read while no secret had
/// the name; a person then recreates the secret under it (a new ARN) with the old value, which
/// names the key. The key is left alone and reported, not deleted.
pub async fn guard_cleanup_all_spares_a_key_a_namesake_recreated_during_the_run_holds(
    w: Arc<World>,
) -> R<()> {
    let name = w.unique("guards-namesake");
    let dead = w
        .create_secret_named(&name, Some("{}"), &[("KeyName", &name)])
        .await?;
    let key = w
        .create_tied_key(&w.unique("guards-namesake"), &dead)
        .await?;
    let op = operator(&w).await?;
    w.sm.delete_secret()
        .secret_id(&dead)
        .force_delete_without_recovery(true)
        .send()
        .await?;
    let gone = DeletedSecretKeys {
        secret: dead.clone(),
        scheduled_for_deletion: false,
        keys: vec![KeyView {
            id: key.clone(),
            name: "guards-namesake".into(),
            enabled: true,
            usage_plan_ids: vec![],
            created: None,
            tie: Some(dead.clone()),
            role: Role::Orphan,
            retire_at: None,
        }],
        errors: vec![],
    };
    let value = json!({ "api_key_id": key }).to_string();
    let restored = w
        .create_secret_named(&name, Some(&value), &[("KeyName", &name)])
        .await?;
    ensure!(restored != dead, "the recreated secret kept the old ARN");
    let out = op.cleanup_deleted(&gone, true, None).await;
    ensure!(
        out.retired.is_empty()
            && out
                .failed
                .iter()
                .any(|(id, why)| *id == key && why.contains("holds it now")),
        "cleanup --all of a key the recreated namesake holds: {out:?}"
    );
    ensure!(
        w.key(&key).await?.is_some(),
        "the key the recreated secret holds was deleted"
    );
    Ok(())
}
