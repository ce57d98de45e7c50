//! The adversary's sequences (issue 18, items 2 to 9) on the local AWS: each builds the state
//! with the real emulator, drives the real handler or the real command-line binary, and checks
//! the outcome and that nothing outside the secret changed. Each case names the guard in `src/`
//! it proves: with that guard removed, the case fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api_key_rotator::aws::AwsFunctionReader;
use api_key_rotator::config::{OldKeyAction, TIE_TAG};
use api_key_rotator::ops::{Operator, SettingsOverrides, Shared};
use api_key_rotator::ports::{KeyGateway, AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use api_key_rotator::ErrorKind;
use serde_json::{json, Value};

use crate::cases::{config, rotator, tied_ids};
use crate::ensure;
use crate::operator::{cli, cli_with, codes, move_stage, no_key_values, step_actions, Run};
use crate::ownership::{given, invariant, plans_of, rotate_checked, set_tag, Owned, Start};
use crate::support::proxy::{Fault, Proxy};
use crate::support::world::{fast_sdk, sdk_config, str_field, Snapshot, World, REGION, STEPS};
use crate::support::R;

/// The command line's SDK retries, fast: a call faulted on every attempt fails in milliseconds.
const FAST_CLI: [(&str, &str); 3] = [
    ("ROTATOR_MAX_ATTEMPTS", "2"),
    ("ROTATOR_INITIAL_BACKOFF_MS", "2"),
    ("ROTATOR_MAX_BACKOFF_MS", "10"),
];

/// The account outside one secret, to prove that nothing there changed: every key the secret is
/// not tied to and that none of its labelled versions named when this was taken (by name and
/// enabled state), and the other keys on the given plans. Taken before anything writes a value
/// naming a key outside the secret.
struct Outside {
    arn: String,
    mine: BTreeSet<String>,
    plans: Vec<String>,
    before: Snapshot,
}

impl Outside {
    async fn take(w: &World, arn: &str, plans: &[&str]) -> R<Outside> {
        let mut mine = tied_ids(w, arn).await?;
        for version in w.versions(arn).await?.keys() {
            mine.extend(key_of_version(w, arn, version).await?);
        }
        Ok(Outside {
            arn: arn.to_owned(),
            mine,
            plans: plans.iter().map(|p| (*p).to_owned()).collect(),
            before: w.snapshot(arn, plans).await?,
        })
    }

    async fn unchanged(&self, w: &World, what: &str) -> R<()> {
        let mut mine = self.mine.clone();
        mine.extend(tied_ids(w, &self.arn).await?);
        let plans: Vec<&str> = self.plans.iter().map(String::as_str).collect();
        let after = w.snapshot(&self.arn, &plans).await?;
        for (id, state) in &self.before.keys {
            if !mine.contains(id) {
                ensure!(
                    after.keys.get(id) == Some(state),
                    "{what}: key {id} outside the secret changed: {state:?} -> {:?}",
                    after.keys.get(id)
                );
            }
        }
        for id in after.keys.keys() {
            ensure!(
                self.before.keys.contains_key(id) || mine.contains(id),
                "{what}: a key {id} appeared that is not tied to the secret"
            );
        }
        let others = |keys: Option<&BTreeSet<String>>| -> BTreeSet<String> {
            keys.into_iter()
                .flatten()
                .filter(|k| !mine.contains(*k))
                .cloned()
                .collect()
        };
        for plan in &self.plans {
            let (was, now) = (
                others(self.before.attachments.get(plan)),
                others(after.attachments.get(plan)),
            );
            ensure!(
                was == now,
                "{what}: the keys outside the secret on plan {plan} changed: {was:?} -> {now:?}"
            );
        }
        Ok(())
    }
}

/// The key a version's value names, when the value is JSON with an `api_key_id` (a version
/// RotateSecret opened has no value yet).
async fn key_of_version(w: &World, arn: &str, version: &str) -> R<Option<String>> {
    let v = match w
        .sm
        .get_secret_value()
        .secret_id(arn)
        .version_id(version)
        .send()
        .await
    {
        Ok(v) => v,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    Ok(v.secret_string()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v["api_key_id"].as_str().map(str::to_owned)))
}

/// The version that carries `stage`.
async fn version_with(w: &World, arn: &str, stage: &str) -> R<Option<String>> {
    Ok(w.versions(arn)
        .await?
        .into_iter()
        .find(|(_, s)| s.iter().any(|l| l == stage))
        .map(|(v, _)| v))
}

fn plans(o: &Owned) -> Vec<&str> {
    o.plans.iter().map(String::as_str).collect()
}

async fn key_id_with(w: &World, arn: &str, stage: &str) -> R<String> {
    Ok(str_field(&w.value(arn, stage).await?, "api_key_id")
        .ok_or_else(|| format!("no key in the {stage} value"))?)
}

/// Runs createSecret while PutSecretValue fails past the SDK's retries: the key is made and
/// attached, and no value names it.
pub(crate) async fn create_refused_at_put(
    r: &api_key_rotator::AwsRotator,
    proxy: &Proxy,
    arn: &str,
    token: &str,
) -> R<()> {
    proxy.inject_in(
        Some("createSecret"),
        "PutSecretValue",
        Fault::FailBefore,
        u32::MAX,
    );
    proxy.set_phase(Some("createSecret"));
    let failed = r.handle(&World::event("createSecret", arn, token)).await;
    proxy.set_phase(None);
    proxy.clear();
    ensure!(
        proxy.injected("PutSecretValue") >= 1,
        "the PutSecretValue fault was not injected"
    );
    ensure!(
        failed.is_err(),
        "createSecret did not fail at PutSecretValue"
    );
    Ok(())
}

fn findings_named<'a>(entry: &'a Value, code: &str) -> Vec<&'a Value> {
    entry["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["code"] == code)
        .collect()
}

/// Item 2: `KeyName` flip-flops under `keep-previous`. A try under `KeyName=b` makes `b-<T>`
/// and is refused at PutSecretValue; `KeyName` goes back to `a` and the re-run completes with
/// `a-<T>`; later `KeyName=b` again and one more rotation. The stray `b-<T>` is gone by the end
/// of the rotation it was made in, and the key AWSPREVIOUS names is alive and enabled at the end.
///
/// Guard: finishSecret retires every owned key no version will need, from a survey that lists
/// every key (`Survey::read`, `Survey::unneeded` in src/ownership/mod.rs): a name protects a key
/// only while it names an *open* rotation's version (`open(keeping, v) && named_for(..)`). With
/// that condition weakened to "named for any version that keeps a label", or the listing
/// narrowed to the current KeyName's prefix, `b-<T>` survives.
pub async fn adversary_keyname_flip_flop_under_keep_previous(w: Arc<World>) -> R<()> {
    let policy = OldKeyAction::KeepPrevious;
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, config()).await?;
    let mut o = given(&w, Start::Migrated, policy).await?;
    rotate_checked(&w, &r, &mut o, policy, "before the flip-flop").await?;
    let outside = Outside::take(&w, &o.arn, &plans(&o)).await?;
    let a = o.key_name.clone();
    // Outside `a`'s prefix: only a listing of every key finds it.
    let b = w.unique("flop");

    set_tag(&w, &o.arn, "KeyName", &b).await?;
    let token = w.open_rotation(&o.arn).await?;
    create_refused_at_put(&r, &proxy, &o.arn, &token).await?;
    let stray = w.keys_with_prefix(&format!("{b}-{token}")).await?;
    ensure!(
        stray.len() == 1,
        "expected the one key of the refused try under KeyName=b, found {}",
        stray.len()
    );
    let stray = stray[0].id().unwrap_or_default().to_owned();

    set_tag(&w, &o.arn, "KeyName", &a).await?;
    World::drive(&r, &o.arn, &token, 3, || {}).await?;
    ensure!(
        str_field(&w.value(&o.arn, AWSCURRENT).await?, "key_name") == Some(format!("{a}-{token}")),
        "the re-run did not complete with {a}-{token}"
    );
    ensure!(
        w.key(&stray).await?.is_none(),
        "the stray {b}-{token} survived the rotation it was made in"
    );
    invariant(&w, &mut o, policy)
        .await
        .map_err(|e| format!("after the re-run under KeyName=a: {e}"))?;
    let back = key_id_with(&w, &o.arn, AWSCURRENT).await?;

    set_tag(&w, &o.arn, "KeyName", &b).await?;
    let last = rotate_checked(&w, &r, &mut o, policy, "KeyName=b again").await?;
    ensure!(
        str_field(&w.value(&o.arn, AWSCURRENT).await?, "key_name") == Some(format!("{b}-{last}")),
        "the last rotation did not make {b}-{last}"
    );
    let previous = key_id_with(&w, &o.arn, AWSPREVIOUS).await?;
    ensure!(
        previous == back,
        "AWSPREVIOUS names {previous}, want the key {a}-{token} ({back})"
    );
    let k = w
        .key(&previous)
        .await?
        .ok_or("the key AWSPREVIOUS names is gone")?;
    ensure!(k.enabled(), "the key AWSPREVIOUS names is disabled");
    let value =
        str_field(&w.value(&o.arn, AWSPREVIOUS).await?, "api_key_value").unwrap_or_default();
    ensure!(
        w.call_stage(&o.api, &value).await? == 200,
        "the previous key no longer gets through the gateway"
    );
    outside.unchanged(&w, "flip-flop").await
}

/// Item 3: someone stages a full AWSPENDING value on S naming a *disabled* key K of another
/// secret S2 (tied to S2; even named `<KeyName>-<T>` for S's open rotation, with S's plans and
/// `rotated_from` = S's AWSCURRENT version). setSecret, testSecret and finishSecret each refuse
/// (RotationState: the key was not made for the version) and change nothing: K stays disabled
/// and on no plan, S's AWSCURRENT does not move. `check S` reports `pending-key-not-made-for-it`.
///
/// Guard: a step acts on a pending key only when the function made it for the version: named
/// for it *and* tied to the secret (`ownership::made_for` through `pending_key` in
/// src/rotation/pending.rs for setSecret and testSecret; `Survey::made_for` in finishSecret;
/// `rules::open_rotation_findings` for check). With the tie test dropped, setSecret enables K
/// and puts it on S's plan.
pub async fn adversary_a_staged_pending_value_naming_another_secrets_key(w: Arc<World>) -> R<()> {
    let policy = OldKeyAction::Delete;
    let r = rotator(&w).await?;
    let mut o = given(&w, Start::Migrated, policy).await?;
    rotate_checked(&w, &r, &mut o, policy, "first").await?;
    let s2 = w
        .create_secret(Some("{}"), &[("KeyName", &w.unique("other-owner"))])
        .await?;
    let token = w.open_rotation(&o.arn).await?;
    let k_name = format!("{}-{token}", o.key_name);
    let k = w.create_tied_key(&k_name, &s2).await?;
    w.set_key_enabled(&k, false).await?;
    let outside = Outside::take(&w, &o.arn, &plans(&o)).await?;
    let k_value = w
        .key(&k)
        .await?
        .and_then(|k| k.value().map(str::to_owned))
        .ok_or("no value for K")?;
    crate::support::world::remember(&k_value);
    let current_version = version_with(&w, &o.arn, AWSCURRENT)
        .await?
        .ok_or("no AWSCURRENT")?;
    let staged = json!({
        "api_key_id": k,
        "api_key_value": k_value,
        "key_name": k_name,
        "usage_plan_ids": [o.plans[0]],
        "owned_key_ids": [],
        "rotated_from": current_version,
    });
    w.sm.put_secret_value()
        .secret_id(&o.arn)
        .client_request_token(&token)
        .secret_string(staged.to_string())
        .version_stages(AWSPENDING)
        .send()
        .await?;
    let before = w.snapshot(&o.arn, &plans(&o)).await?;
    for step in &STEPS[1..] {
        let e = r
            .handle(&World::event(step, &o.arn, &token))
            .await
            .err()
            .ok_or_else(|| format!("{step} accepted a pending key it did not make"))?;
        ensure!(
            e.kind == ErrorKind::RotationState
                && e.cause.contains(&k)
                && e.cause.contains("did not make for it"),
            "{step}: {e:?}"
        );
        ensure!(
            before == w.snapshot(&o.arn, &plans(&o)).await?,
            "{step}: refusing changed something"
        );
    }
    let key = w.key(&k).await?.ok_or("K is gone")?;
    ensure!(!key.enabled(), "K was enabled");
    ensure!(plans_of(&w, &k).await?.is_empty(), "K was put on a plan");
    ensure!(
        version_with(&w, &o.arn, AWSCURRENT).await? == Some(current_version),
        "AWSCURRENT moved"
    );

    let run = cli(&w, &["--json", "check", &o.arn]).await?;
    let found = codes(&run.json["secrets"][0]);
    ensure!(
        found.get("pending-key-not-made-for-it").map(String::as_str) == Some("error")
            && run.code == 1,
        "check: exit {} {found:?}",
        run.code
    );
    ensure!(
        before == w.snapshot(&o.arn, &plans(&o)).await?,
        "check changed something"
    );
    no_key_values(&w, &[&run]).await?;

    // As the error says: cancel the rotation and rotate again. K is left as it was.
    move_stage(&w, &o.arn, AWSPENDING, None, Some(&token)).await?;
    rotate_checked(&w, &r, &mut o, policy, "after cancelling").await?;
    outside.unchanged(&w, "staged pending value").await
}

/// Item 4: createSecret attaches the token's key to plan P1, then PutSecretValue is refused;
/// the operator retags `UsagePlan=P2`, a plan covering the same API stage as P1, and moves the
/// current key from P1 to P2; the re-run completes. The new key is on exactly [P2] and
/// AWSCURRENT names it.
///
/// Guard: createSecret puts a key an earlier try made on exactly the plans the tags name now
/// (`place_on_plans(.., detach_others = !made.fresh)` in src/rotation/create_secret.rs and
/// src/rotation/plans.rs): it is taken off P1 before it is put on P2. With the detach removed,
/// the key is on [P1, P2] after createSecret (on AWS the attach to P2 is refused, as both plans
/// cover one stage, and the rotation can never complete). setSecret's exact placement and
/// testSecret's plan check stand behind it for the end state.
pub async fn adversary_a_plan_move_inside_a_failing_rotation(w: Arc<World>) -> R<()> {
    let policy = OldKeyAction::Delete;
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, config()).await?;
    let mut o = given(&w, Start::Migrated, policy).await?;
    rotate_checked(&w, &r, &mut o, policy, "first").await?;
    let p1 = o.plans[0].clone();
    let p2 = w.create_plan(Some(&o.api)).await?;
    let outside = Outside::take(&w, &o.arn, &[&p1, &o.plans[1], &p2]).await?;

    let token = w.open_rotation(&o.arn).await?;
    create_refused_at_put(&r, &proxy, &o.arn, &token).await?;
    let made = w
        .keys_with_prefix(&format!("{}-{token}", o.key_name))
        .await?;
    ensure!(made.len() == 1, "{} keys for the token", made.len());
    let made = made[0].id().unwrap_or_default().to_owned();
    ensure!(
        plans_of(&w, &made).await? == BTreeSet::from([p1.clone()]),
        "the refused try's key is not on P1"
    );

    set_tag(&w, &o.arn, "UsagePlan", &p2).await?;
    let current = key_id_with(&w, &o.arn, AWSCURRENT).await?;
    w.ag.delete_usage_plan_key()
        .usage_plan_id(&p1)
        .key_id(&current)
        .send()
        .await?;
    w.attach(&p2, &current).await?;

    // The re-run's createSecret takes the key off P1 before it puts it on P2: API Gateway
    // refuses a key on two plans that cover one stage (the local AWS does not, so this is
    // checked here, before setSecret would repair it).
    r.handle(&World::event("createSecret", &o.arn, &token))
        .await?;
    let on = plans_of(&w, &made).await?;
    ensure!(
        on == BTreeSet::from([p2.clone()]),
        "after the re-run's createSecret the token's key is on {on:?}, want exactly [{p2}]"
    );
    World::drive(&r, &o.arn, &token, 3, || {}).await?;
    let new = key_id_with(&w, &o.arn, AWSCURRENT).await?;
    let key = w.key(&new).await?.ok_or("the new key is gone")?;
    ensure!(
        key.name() == Some(format!("{}-{token}", o.key_name).as_str()),
        "AWSCURRENT names {:?}, not the token's key",
        key.name()
    );
    let on = plans_of(&w, &new).await?;
    ensure!(
        on == BTreeSet::from([p2.clone()]),
        "the new key is on {on:?}, want exactly [{p2}]"
    );
    ensure!(
        w.value(&o.arn, AWSCURRENT)
            .await?
            .and_then(|v| v.get("usage_plan_ids").cloned())
            == Some(json!([p2])),
        "AWSCURRENT does not name [P2]"
    );
    let value = str_field(&w.value(&o.arn, AWSCURRENT).await?, "api_key_value").unwrap_or_default();
    ensure!(
        w.call_stage(&o.api, &value).await? == 200,
        "the new key does not get through the gateway"
    );
    invariant(&w, &mut o, policy).await?;
    outside.unchanged(&w, "plan move").await
}

/// Item 5: a person writes a new AWSCURRENT naming the older key with `"usage_plan_ids":
/// "p1,p2"` (a string: a value the function cannot parse). `check` does not suggest deleting
/// that key; `cleanup --apply` refuses (error finding `current-value-invalid`) and deletes
/// nothing.
///
/// Guards: a value the steps cannot parse still holds every key id it mentions
/// (`Claim::read`'s `Unreadable` in src/ownership/claim.rs, `Survey::held`/`unneeded`): without
/// it the older key is an orphan and `check` names it in `orphan-keys`. And `cleanup` refuses a
/// secret with error findings (src/ops/cleanup.rs): without it `cleanup --apply` goes ahead.
pub async fn adversary_cleanup_never_deletes_a_key_an_unreadable_value_names(
    w: Arc<World>,
) -> R<()> {
    let policy = OldKeyAction::KeepPrevious;
    let r = rotator(&w).await?;
    let mut o = given(&w, Start::Migrated, policy).await?;
    rotate_checked(&w, &r, &mut o, policy, "first").await?;
    rotate_checked(&w, &r, &mut o, policy, "second").await?;
    let outside = Outside::take(&w, &o.arn, &plans(&o)).await?;
    let older = w
        .value(&o.arn, AWSPREVIOUS)
        .await?
        .ok_or("no AWSPREVIOUS value")?;
    let older_id = older["api_key_id"]
        .as_str()
        .ok_or("no older key")?
        .to_owned();
    let by_hand = json!({
        "api_key_id": older_id,
        "api_key_value": older["api_key_value"],
        "key_name": older["key_name"],
        "usage_plan_ids": format!("{},{}", o.plans[0], o.plans[1]),
    });
    w.sm.put_secret_value()
        .secret_id(&o.arn)
        .client_request_token(w.token())
        .secret_string(by_hand.to_string())
        .version_stages(AWSCURRENT)
        .send()
        .await?;
    let before = w.snapshot(&o.arn, &plans(&o)).await?;

    let check = cli(&w, &["--json", "check", &o.arn]).await?;
    let e = &check.json["secrets"][0];
    ensure!(
        codes(e).get("current-value-invalid").map(String::as_str) == Some("error")
            && check.code == 1,
        "check: exit {} {}",
        check.code,
        check.stdout
    );
    ensure!(
        findings_named(e, "orphan-keys")
            .iter()
            .all(|f| !f["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&older_id)),
        "check suggests deleting {older_id}, which AWSCURRENT names: {}",
        check.stdout
    );
    let status = cli(&w, &["--json", "status", &o.arn]).await?;
    ensure!(
        status.json["secrets"][0]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["id"] == older_id.as_str() && k["role"] == "current"),
        "status: {older_id} is not the current key: {}",
        status.stdout
    );
    let dry = cli(&w, &["--json", "cleanup", &o.arn]).await?;
    ensure!(
        dry.json["secrets"][0]["orphans"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|k| k["id"] != older_id.as_str()),
        "cleanup lists {older_id} as an orphan: {}",
        dry.stdout
    );
    let apply = cli(&w, &["--json", "cleanup", &o.arn, "--apply"]).await?;
    let e = &apply.json["secrets"][0];
    ensure!(
        apply.code == 1
            && e["refused"]
                .as_str()
                .is_some_and(|m| m.contains("current-value-invalid"))
            && e["retired"] == json!([]),
        "cleanup --apply: exit {} {}",
        apply.code,
        apply.stdout
    );
    ensure!(
        before == w.snapshot(&o.arn, &plans(&o)).await?,
        "check, status or cleanup changed something"
    );
    let key = w.key(&older_id).await?.ok_or("the older key was deleted")?;
    ensure!(key.enabled(), "the older key was disabled");
    no_key_values(&w, &[&check, &status, &dry, &apply]).await?;
    outside.unchanged(&w, "unreadable current value").await
}

/// Item 6: a secret rotated once is force-deleted and recreated under its name with its old
/// AWSCURRENT value and tags (a new ARN: LocalStack, like AWS, gives the recreated secret a new
/// suffix and no longer finds the old ARN; were it to reuse the ARN, the key is tied to a former
/// ARN of that name, as on AWS). Beside it: a secret restored under another name from a deleted
/// one's value, and a deleted secret nobody restored. `cleanup --all --prefix --apply` retires
/// the last one's key only.
///
/// Guards (src/ops/deleted.rs): the `held` set (keys a live secret read in the same run holds,
/// whatever their tie says) keeps the restored copy's key; `held_by_namesake` (a live secret of
/// the deleted secret's name) keeps the recreated secret's key even when no live secret was
/// read. The command line exercises both together; the ops layer is then driven in-process with
/// an empty `held` set: the recreated secret's key is still not an orphan (namesake), while the
/// restored copy's is (so `held` alone kept it in the command's run).
pub async fn adversary_cleanup_all_spares_the_keys_of_a_recreated_secret(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let prefix = w.unique("adv-recreated");
    let rotated = |which: &'static str| {
        let (w, r, plan, prefix) = (&w, &r, &plan, &prefix);
        async move {
            let name = format!("{prefix}-{which}");
            let key_name = w.unique(which);
            let tags = [("KeyName", key_name.as_str()), ("UsagePlan", plan.as_str())];
            let arn = w.create_secret_named(&name, Some("{}"), &tags).await?;
            let (_, errors) = w.rotate(r, &arn, 1).await?;
            ensure!(errors.is_empty(), "{which}: {errors:?}");
            let value =
                w.sm.get_secret_value()
                    .secret_id(&arn)
                    .send()
                    .await?
                    .secret_string()
                    .unwrap_or_default()
                    .to_owned();
            let key = key_id_with(w, &arn, AWSCURRENT).await?;
            R::Ok((name, key_name, arn, value, key))
        }
    };
    let force_delete = |arn: String| {
        let w = &w;
        async move {
            w.sm.delete_secret()
                .secret_id(&arn)
                .force_delete_without_recovery(true)
                .send()
                .await?;
            R::Ok(())
        }
    };

    // Recreated under its own name, with its value and tags.
    let (name, key_name, first_arn, value, k) = rotated("recreated").await?;
    force_delete(first_arn.clone()).await?;
    let recreated = w
        .create_secret_named(
            &name,
            Some(&value),
            &[("KeyName", &key_name), ("UsagePlan", &plan)],
        )
        .await?;
    let former = if recreated == first_arn {
        // The emulator reused the ARN: tie the key to a former ARN of the name, as on AWS.
        let suffix = if first_arn.ends_with("-AAAAAA") {
            "BBBBBB"
        } else {
            "AAAAAA"
        };
        let former = format!("{}-{suffix}", &first_arn[..first_arn.len() - 7]);
        w.ag.tag_resource()
            .resource_arn(format!("arn:aws:apigateway:{REGION}::/apikeys/{k}"))
            .tags(TIE_TAG, &former)
            .send()
            .await?;
        former
    } else {
        first_arn
    };
    ensure!(
        w.sm.describe_secret().secret_id(&former).send().await.is_err(),
        "the local AWS finds the former ARN {former} (the recreated secret is {recreated}): the deleted-secret path would not be taken, and this case would prove nothing"
    );

    // Restored under another name from a deleted secret's value.
    let (_, _, backed_up, value_b, kb) = rotated("backed-up").await?;
    let copy = w
        .create_secret_named(
            &format!("{prefix}-restored-copy"),
            Some(&value_b),
            &[("KeyName", &w.unique("copy")), ("UsagePlan", &plan)],
        )
        .await?;
    force_delete(backed_up.clone()).await?;

    // Deleted, and nobody restored it: its key is an orphan.
    let (_, _, gone, _, kd) = rotated("gone").await?;
    force_delete(gone.clone()).await?;

    let before = w.snapshot(&recreated, &[&plan]).await?;
    let run = cli(
        &w,
        &["--json", "cleanup", "--all", "--prefix", &prefix, "--apply"],
    )
    .await?;
    let deleted = run.json["deleted_secrets"]
        .as_array()
        .ok_or_else(|| format!("no deleted_secrets: {}", run.stdout))?;
    let mentioned: BTreeSet<String> = deleted
        .iter()
        .flat_map(|d| d["orphans"].as_array().into_iter().flatten())
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect();
    let retired: BTreeSet<String> = deleted
        .iter()
        .flat_map(|d| d["retired"].as_array().into_iter().flatten())
        .filter_map(|o| o.as_str().map(str::to_owned))
        .collect();
    ensure!(
        !mentioned.contains(&k) && !mentioned.contains(&kb),
        "cleanup --all took a key a live secret holds for a deleted secret's: {}",
        run.stdout
    );
    ensure!(
        retired == BTreeSet::from([kd.clone()]),
        "cleanup --all retired {retired:?}, want the unrestored secret's key {kd}: {}",
        run.stdout
    );
    for (id, what) in [(&k, "the recreated secret's"), (&kb, "the restored copy's")] {
        let key = w.key(id).await?.ok_or(format!("{what} key was deleted"))?;
        ensure!(key.enabled(), "{what} key was disabled");
        ensure!(
            w.plan_keys(&plan).await?.contains(id),
            "{what} key was detached"
        );
    }
    ensure!(w.key(&kd).await?.is_none(), "the orphan {kd} still exists");
    let after = w.snapshot(&recreated, &[&plan]).await?;
    let without = |s: &Snapshot| {
        (
            s.keys
                .iter()
                .filter(|(id, _)| **id != kd)
                .map(|(id, v)| (id.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            s.attachments
                .values()
                .flatten()
                .filter(|id| **id != kd)
                .cloned()
                .collect::<BTreeSet<_>>(),
        )
    };
    ensure!(
        without(&before) == without(&after),
        "cleanup --all changed something besides the orphan"
    );
    let read: BTreeSet<&str> = run.json["secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["secret"].as_str())
        .collect();
    ensure!(
        read.contains(recreated.as_str()) && read.contains(copy.as_str()),
        "cleanup --all did not read the live secrets that hold the keys: {read:?}"
    );
    no_key_values(&w, &[&run]).await?;

    // The ops layer, with no live secret read in the run: only the namesake guard stands.
    let sdk = sdk_config(&w.endpoint, &fast_sdk()).await;
    let op = Operator::new(
        rotator(&w).await?,
        AwsFunctionReader::new(&sdk),
        SettingsOverrides::default(),
        REGION.to_owned(),
    );
    let listing = op
        .rotator
        .keys
        .list_all_keys()
        .await
        .map_err(|e| e.to_string())?;
    let found = op
        .deleted_secret_keys(
            &Shared::new(listing, None),
            &BTreeSet::new(),
            &BTreeSet::new(),
            Some(&prefix),
        )
        .await;
    let orphans: BTreeSet<&str> = found
        .iter()
        .flat_map(|d| d.keys.iter().map(|k| k.id.as_str()))
        .collect();
    ensure!(
        !orphans.contains(k.as_str()),
        "with no live secret read, the recreated secret's key is taken for an orphan: the namesake guard did not hold"
    );
    ensure!(
        orphans.contains(kb.as_str()),
        "with no live secret read, the restored copy's key is not listed: {orphans:?} (then `held` was not what kept it)"
    );
    Ok(())
}

/// Item 7: a `rollback --apply --force` (an abandoned rotation is open) fails after moving
/// AWSCURRENT and before removing AWSPENDING (the second UpdateSecretVersionStage fails past the
/// SDK's retries). Run again, it finishes (AWSPENDING removed) instead of answering "rolled back
/// already"; then a rotation completes.
///
/// Guard: src/ops/rollback.rs, a roll-back already made (the previous version was rotated from
/// the current one) still plans what is left of it (`RemovePending`), and refuses only when
/// nothing is (`rolled_back && steps.is_empty()`). Refusing every rolled-back secret leaves
/// AWSPENDING behind for good.
pub async fn adversary_an_interrupted_rollback_can_be_finished(w: Arc<World>) -> R<()> {
    let policy = OldKeyAction::KeepPrevious;
    let r = rotator(&w).await?;
    let mut o = given(&w, Start::Migrated, policy).await?;
    rotate_checked(&w, &r, &mut o, policy, "first").await?;
    rotate_checked(&w, &r, &mut o, policy, "second").await?;
    let back_to = key_id_with(&w, &o.arn, AWSPREVIOUS).await?;
    let back_to_version = version_with(&w, &o.arn, AWSPREVIOUS)
        .await?
        .ok_or("no AWSPREVIOUS")?;
    // An abandoned rotation: its createSecret made a key, and nothing ran since.
    let abandoned = w.open_rotation(&o.arn).await?;
    r.handle(&World::event("createSecret", &o.arn, &abandoned))
        .await?;
    let outside = Outside::take(&w, &o.arn, &plans(&o)).await?;

    let proxy = Proxy::start(&w.endpoint).await?;
    proxy.inject_after(
        None,
        "UpdateSecretVersionStage",
        1,
        Fault::FailBefore,
        u32::MAX,
    );
    let args = ["--json", "rollback", o.arn.as_str(), "--apply", "--force"];
    let first = cli_with(&proxy.endpoint, &FAST_CLI, &args).await?;
    let e = &first.json["secrets"][0];
    ensure!(
        first.code == 1
            && e["failed"][0]["error"]
                .as_str()
                .is_some_and(|m| m.starts_with("remove-pending failed")),
        "the faulted roll-back: exit {} {}",
        first.code,
        first.stdout
    );
    ensure!(
        proxy.injected("UpdateSecretVersionStage") >= 1,
        "the fault was not injected"
    );
    let versions = w.versions(&o.arn).await?;
    ensure!(
        versions
            .get(&back_to_version)
            .is_some_and(|s| s.iter().any(|l| l == AWSCURRENT))
            && versions
                .get(&abandoned)
                .is_some_and(|s| s.iter().any(|l| l == AWSPENDING)),
        "not interrupted between the two label moves: {versions:?}"
    );

    let again = cli(&w, &args).await?;
    let e = &again.json["secrets"][0];
    let actions = step_actions(e);
    ensure!(
        again.code == 0
            && e["refused"].is_null()
            && actions == ["remove-pending"]
            && e["steps"][0]["done"] == true,
        "the second roll-back did not finish the first: exit {} {}",
        again.code,
        again.stdout
    );
    let versions = w.versions(&o.arn).await?;
    ensure!(
        !versions.values().any(|s| s.iter().any(|l| l == AWSPENDING)),
        "AWSPENDING left: {versions:?}"
    );
    ensure!(
        key_id_with(&w, &o.arn, AWSCURRENT).await? == back_to,
        "AWSCURRENT does not name the key rolled back to"
    );
    let value = str_field(&w.value(&o.arn, AWSCURRENT).await?, "api_key_value").unwrap_or_default();
    ensure!(
        w.call_stage(&o.api, &value).await? == 200,
        "the key rolled back to does not work"
    );
    // Nothing is left now: a third run says so.
    let third = cli(&w, &args).await?;
    ensure!(
        third.code == 1
            && third.json["secrets"][0]["refused"]
                .as_str()
                .is_some_and(|m| m.contains("rolled back already")),
        "a third roll-back: exit {} {}",
        third.code,
        third.stdout
    );
    no_key_values(&w, &[&first, &again, &third]).await?;
    rotate_checked(&w, &r, &mut o, policy, "after the finished roll-back").await?;
    ensure!(
        key_id_with(&w, &o.arn, AWSPREVIOUS).await? == back_to,
        "the key clients went back to is not the previous one"
    );
    outside.unchanged(&w, "interrupted roll-back").await
}

/// Item 8: `rollback --apply` refuses while a rotation is open, even one opened a moment ago,
/// and changes nothing; with `--force` it proceeds (cancelling the rotation) and verifies the
/// key clients read afterwards. The race: the key rolled back to is deleted while the roll-back
/// runs; the output says the verification failed, and the exit code is 1.
///
/// Guards (src/ops/rollback.rs): the refusal of an open rotation unless forced
/// (`seen.open_rotation().filter(|_| !force)`), and the verification after the steps (the key
/// AWSCURRENT names must exist and be enabled).
pub async fn adversary_rollback_refuses_an_open_rotation_unless_forced(w: Arc<World>) -> R<()> {
    let policy = OldKeyAction::Disable;
    let r = rotator(&w).await?;
    let mut o = given(&w, Start::Migrated, policy).await?;
    rotate_checked(&w, &r, &mut o, policy, "first").await?;
    rotate_checked(&w, &r, &mut o, policy, "second").await?;
    let back_to = key_id_with(&w, &o.arn, AWSPREVIOUS).await?;
    let outside = Outside::take(&w, &o.arn, &plans(&o)).await?;
    let open = w.open_rotation(&o.arn).await?;
    r.handle(&World::event("createSecret", &o.arn, &open))
        .await?;

    let before = w.snapshot(&o.arn, &plans(&o)).await?;
    let refused = cli(&w, &["--json", "rollback", &o.arn, "--apply"]).await?;
    ensure!(
        refused.code == 1
            && refused.json["secrets"][0]["refused"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("a rotation is open on version {open}"))),
        "rollback during a fresh rotation: exit {} {}",
        refused.code,
        refused.stdout
    );
    ensure!(
        before == w.snapshot(&o.arn, &plans(&o)).await?,
        "the refused roll-back changed something"
    );

    let forced = cli(&w, &["--json", "rollback", &o.arn, "--apply", "--force"]).await?;
    let e = &forced.json["secrets"][0];
    let actions = step_actions(e);
    ensure!(
        forced.code == 0
            && e["failed"] == json!([])
            && actions == ["enable-key", "move-current", "remove-pending"]
            && e["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|s| s["done"] == true),
        "rollback --force: exit {} {}",
        forced.code,
        forced.stdout
    );
    ensure!(
        key_id_with(&w, &o.arn, AWSCURRENT).await? == back_to,
        "AWSCURRENT does not name the key rolled back to"
    );
    ensure!(
        version_with(&w, &o.arn, AWSPENDING).await?.is_none(),
        "the open rotation was not cancelled"
    );
    let value = str_field(&w.value(&o.arn, AWSCURRENT).await?, "api_key_value").unwrap_or_default();
    ensure!(
        w.call_stage(&o.api, &value).await? == 200,
        "the key rolled back to does not work"
    );
    rotate_checked(&w, &r, &mut o, policy, "after the forced roll-back").await?;
    outside.unchanged(&w, "forced roll-back").await?;

    // The race: the key rolled back to is deleted while AWSCURRENT moves back to it.
    let doomed = key_id_with(&w, &o.arn, AWSPREVIOUS).await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    proxy.inject(
        "UpdateSecretVersionStage",
        Fault::Delay(Duration::from_millis(800)),
        u32::MAX,
    );
    let args = ["--json", "rollback", o.arn.as_str(), "--apply"];
    let delete_meanwhile = async {
        for _ in 0..1000 {
            if proxy.calls("UpdateSecretVersionStage") >= 1 {
                for p in plans_of(&w, &doomed).await? {
                    w.ag.delete_usage_plan_key()
                        .usage_plan_id(p)
                        .key_id(&doomed)
                        .send()
                        .await?;
                }
                w.ag.delete_api_key().api_key(&doomed).send().await?;
                return R::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the roll-back never moved a label".into())
    };
    let (raced, deleted) = tokio::join!(
        cli_with(&proxy.endpoint, &FAST_CLI, &args),
        delete_meanwhile
    );
    deleted?;
    let raced = raced?;
    let e = &raced.json["secrets"][0];
    ensure!(
        raced.code == 1
            && e["failed"][0]["error"]
                .as_str()
                .is_some_and(|m| m.starts_with("verify failed") && m.contains("gone")),
        "a key deleted during the roll-back: exit {} {}",
        raced.code,
        raced.stdout
    );
    no_key_values(&w, &[&refused, &forced, &raced]).await?;
    // As the output says: rotate now. The new key works.
    rotate_checked(&w, &r, &mut o, policy, "after the raced roll-back").await?;
    Ok(())
}

/// Item 9: under `delete` and `disable`, finishSecret moves AWSCURRENT and then its retirement
/// of the previous key fails (DeleteApiKey / UpdateApiKey past the SDK's retries). With no
/// re-run, `check` and `status` report `previous-key-not-retired` (error, exit 1) with the fix
/// `cleanup ... --apply`; `cleanup --apply` retires the key, and `check` is clean again.
///
/// Guards: `rules::previous_not_retired` and the `PreviousKeyNotRetired` finding
/// (src/ops/rules.rs), and cleanup's retirement of the previous key by policy
/// (`OrphanReason::PreviousKeyNotRetired` in src/ops/cleanup.rs). Without the rule the failed
/// retirement is invisible: `check` exits 0 and `cleanup` retires nothing.
pub async fn adversary_a_failed_retirement_is_visible_and_cleanup_finishes_it(
    w: Arc<World>,
) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, config()).await?;
    let mut runs: Vec<Run> = Vec::new();
    for (policy, op) in [
        (OldKeyAction::Delete, "DeleteApiKey"),
        (OldKeyAction::Disable, "UpdateApiKey"),
    ] {
        let mut o = given(&w, Start::Migrated, policy).await?;
        rotate_checked(&w, &r, &mut o, policy, "first").await?;
        let outside = Outside::take(&w, &o.arn, &plans(&o)).await?;
        let previous = key_id_with(&w, &o.arn, AWSCURRENT).await?;
        let token = w.open_rotation(&o.arn).await?;
        for step in &STEPS[..3] {
            r.handle(&World::event(step, &o.arn, &token)).await?;
        }
        proxy.reset_counts();
        proxy.inject_in(Some("finishSecret"), op, Fault::FailBefore, u32::MAX);
        proxy.set_phase(Some("finishSecret"));
        let finish = r
            .handle(&World::event("finishSecret", &o.arn, &token))
            .await;
        proxy.set_phase(None);
        proxy.clear();
        ensure!(
            finish.is_err() && proxy.injected(op) >= 1,
            "{policy}: finishSecret did not fail at {op}: {finish:?}"
        );
        ensure!(
            version_with(&w, &o.arn, AWSCURRENT).await? == Some(token.clone())
                && version_with(&w, &o.arn, AWSPENDING).await?.is_none(),
            "{policy}: AWSCURRENT did not move before the retirement"
        );
        ensure!(
            key_id_with(&w, &o.arn, AWSPREVIOUS).await? == previous,
            "{policy}: AWSPREVIOUS does not name the previous key"
        );
        ensure!(
            w.key(&previous).await?.is_some_and(|k| k.enabled()),
            "{policy}: the previous key was retired after all"
        );

        for command in ["check", "status"] {
            let run = cli(&w, &["--json", command, &o.arn]).await?;
            let e = &run.json["secrets"][0];
            let found = findings_named(e, "previous-key-not-retired");
            ensure!(
                run.code == 1
                    && found.len() == 1
                    && found[0]["severity"] == "error"
                    && found[0]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&previous))
                    && found[0]["fix"].as_str().is_some_and(|f| {
                        f.starts_with("api-key-rotator cleanup ") && f.contains(" --apply")
                    }),
                "{policy}: {command}: exit {} {}",
                run.code,
                run.stdout
            );
            runs.push(run);
        }
        let cleanup = cli(&w, &["--json", "cleanup", &o.arn, "--apply"]).await?;
        let e = &cleanup.json["secrets"][0];
        ensure!(
            cleanup.code == 0
                && e["retired"] == json!([previous])
                && e["orphans"].as_array().map(Vec::len) == Some(1)
                && e["orphans"][0]["id"] == previous.as_str()
                && e["orphans"][0]["reason"] == "previous-key-not-retired",
            "{policy}: cleanup --apply: exit {} {}",
            cleanup.code,
            cleanup.stdout
        );
        runs.push(cleanup);
        match policy {
            OldKeyAction::Delete => ensure!(
                w.key(&previous).await?.is_none(),
                "delete: cleanup left the previous key"
            ),
            _ => ensure!(
                w.key(&previous).await?.is_some_and(|k| !k.enabled()),
                "disable: cleanup did not disable the previous key"
            ),
        }
        let check = cli(&w, &["--json", "check", &o.arn]).await?;
        let found = codes(&check.json["secrets"][0]);
        ensure!(
            check.code == 0
                && !found.contains_key("previous-key-not-retired")
                && !found.contains_key("orphan-keys"),
            "{policy}: check after the cleanup: exit {} {found:?}",
            check.code
        );
        runs.push(check);
        invariant(&w, &mut o, policy).await?;
        outside
            .unchanged(&w, &format!("{policy}: failed retirement"))
            .await?;
    }
    no_key_values(&w, &runs.iter().collect::<Vec<_>>()).await
}

/// The previous key that another labelled version also holds (a backup copy of a value under a
/// custom label): finishSecret leaves it, and so must `check` and `cleanup` (a key the raw value
/// of a labelled version names is never touched). Guard: `rules::previous_not_retired`'s
/// shared-key test (an attacker review found cleanup retiring it).
pub async fn adversary_a_previous_key_another_version_holds_is_left_alone(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let policy = OldKeyAction::Delete;
    let mut o = given(&w, Start::Migrated, policy).await?;
    rotate_checked(&w, &r, &mut o, policy, "first").await?;
    let kept = key_id_with(&w, &o.arn, AWSCURRENT).await?;
    let raw =
        w.sm.get_secret_value()
            .secret_id(&o.arn)
            .version_stage(AWSCURRENT)
            .send()
            .await?;
    w.sm.put_secret_value()
        .secret_id(&o.arn)
        .secret_string(raw.secret_string().unwrap_or_default())
        .version_stages("BACKUP")
        .send()
        .await?;
    let token = w.open_rotation(&o.arn).await?;
    World::run_steps(&r, &o.arn, &token).await?;
    ensure!(
        w.key(&kept).await?.is_some_and(|k| k.enabled()),
        "finishSecret retired the previous key a BACKUP version holds"
    );
    let check = cli(&w, &["--json", "check", &o.arn]).await?;
    let found = codes(&check.json["secrets"][0]);
    ensure!(
        !found.contains_key("previous-key-not-retired"),
        "check reports the shared previous key as not retired: {found:?}"
    );
    let cleanup = cli(&w, &["--json", "cleanup", &o.arn, "--apply"]).await?;
    ensure!(
        w.key(&kept).await?.is_some_and(|k| k.enabled()),
        "cleanup --apply retired a key the BACKUP version holds: {}",
        cleanup.stdout
    );
    no_key_values(&w, &[&check, &cleanup]).await
}
