//! What the role may touch (issue 21, items 2 and 3): with ALLOWED_USAGE_PLAN_IDS set, the
//! role's policy allows attaching and detaching keys only on the allow-listed plans, so the code
//! must never try another plan. LocalStack enforces no IAM, so each case counts the calls the
//! code makes, or checks what it refused before any change. Each names its guard: with it
//! removed, the case fails (LocalStack would allow the call IAM refuses).

use std::collections::BTreeSet;
use std::sync::Arc;

use api_key_rotator::config::FunctionConfig;
use api_key_rotator::ports::{AWSCURRENT, AWSPREVIOUS};
use api_key_rotator::ErrorKind;

use crate::adversary::create_refused_at_put;
use crate::cases::{config, setup};
use crate::ensure;
use crate::operator::cli;
use crate::ownership::{plans_of, set_tag};
use crate::support::proxy::Proxy;
use crate::support::world::{str_field, World};
use crate::support::R;

fn allowing(plans: &[&str]) -> FunctionConfig {
    FunctionConfig {
        allowed_usage_plan_ids: Some(plans.iter().map(|p| (*p).to_owned()).collect()),
        ..config()
    }
}

async fn key_at(w: &World, secret: &str, stage: &str) -> R<String> {
    str_field(&w.value(secret, stage).await?, "api_key_id")
        .ok_or_else(|| format!("the {stage} version names no key").into())
}

/// Item 2: the previous key also sits on a plan outside the allow-list (adopted with it, or an
/// allow-list narrowed after a `UsagePlan` move). Retiring it (`delete`) detaches it only from
/// the allow-listed plan, then deletes it (DeleteApiKey takes a key off every plan); the
/// rotation completes. Guard: `Rotator::may_touch_plan` in `delete_key`
/// (src/rotation/retire.rs): without it the code detaches from the other plan too, which the
/// role refuses on AWS, stranding finishSecret after AWSCURRENT moved.
pub async fn a_retired_key_is_detached_only_from_allow_listed_plans(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, allowing(&[&s.plan])).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let old = key_at(&w, &s.secret, AWSCURRENT).await?;
    let other_api = w.create_api().await?;
    let other = w.create_plan(Some(&other_api)).await?;
    w.attach(&other, &old).await?;

    proxy.reset_counts();
    w.rotate(&r, &s.secret, 1).await?;
    let detaches = proxy.calls("DeleteUsagePlanKey");
    ensure!(
        detaches == 1,
        "the retirement made {detaches} DeleteUsagePlanKey calls; want 1 (the allow-listed plan only)"
    );
    ensure!(
        !w.plan_keys(&s.plan).await?.contains(&old),
        "the retired key was not detached from the allow-listed plan"
    );
    ensure!(
        key_at(&w, &s.secret, AWSPREVIOUS).await? == old,
        "AWSPREVIOUS does not name the retired key"
    );
    ensure!(
        w.key(&old).await?.is_none(),
        "the previous key was not deleted"
    );
    let value =
        str_field(&w.value(&s.secret, AWSCURRENT).await?, "api_key_value").unwrap_or_default();
    ensure!(
        w.call_stage(&s.api, &value).await? == 200,
        "the new key does not get through the gateway"
    );
    Ok(())
}

/// Items 2 and 3: the key an earlier try made for the token was put, by a person, on a plan
/// outside the allow-list. The re-run's createSecret must put the key on exactly the tagged
/// plans, which would mean detaching it from a plan the role may not touch: it refuses
/// (RotationState) before any change, naming the plan, and the key stays where it is. Once a
/// person takes it off that plan, the same rotation completes. Guard: the `barred` check in
/// `place_on_plans` (src/rotation/plans.rs).
pub async fn a_reused_key_on_a_plan_outside_the_allow_list_is_refused(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, allowing(&[&s.plan])).await?;
    let token = w.open_rotation(&s.secret).await?;
    create_refused_at_put(&r, &proxy, &s.secret, &token).await?;
    let made = w
        .keys_with_prefix(&format!("{}-{token}", s.key_name))
        .await?;
    ensure!(made.len() == 1, "expected the one key of the refused try");
    let key = made[0].id().unwrap_or_default().to_owned();
    let other_api = w.create_api().await?;
    let other = w.create_plan(Some(&other_api)).await?;
    w.attach(&other, &key).await?;

    let refused = r
        .handle(&World::event("createSecret", &s.secret, &token))
        .await;
    match refused {
        Err(e) => ensure!(
            e.kind == ErrorKind::RotationState
                && e.to_string().contains(&other)
                && e.to_string().contains("ALLOWED_USAGE_PLAN_IDS"),
            "createSecret failed, but not with the refusal that names the plan: {e}"
        ),
        Ok(()) => return Err("createSecret took the key off a plan outside the allow-list".into()),
    }
    let on = plans_of(&w, &key).await?;
    ensure!(
        on == BTreeSet::from([s.plan.clone(), other.clone()]),
        "the refused createSecret moved the key: it is on {on:?}"
    );

    w.ag.delete_usage_plan_key()
        .usage_plan_id(&other)
        .key_id(&key)
        .send()
        .await?;
    World::drive(&r, &s.secret, &token, 1, || {}).await?;
    ensure!(
        key_at(&w, &s.secret, AWSCURRENT).await? == key,
        "the rotation did not complete with the key made for it"
    );
    Ok(())
}

/// Item 2, for the operators: the key a roll-back goes back to belongs on a plan the
/// allow-list no longer lists (the `UsagePlan` tag moved, then the allow-list was narrowed),
/// and a person took it off that plan. `rollback --apply` refuses before any change (the
/// operator policy may not attach it there), naming the plan. Guard: the `barred` check in
/// src/ops/rollback.rs.
pub async fn a_rollback_to_a_plan_outside_the_allow_list_is_refused(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[("OldKeyAction", "disable")]).await?;
    let r = w.rotator(&w.endpoint, config()).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let old = key_at(&w, &s.secret, AWSCURRENT).await?;
    let new_api = w.create_api().await?;
    let moved_to = w.create_plan(Some(&new_api)).await?;
    set_tag(&w, &s.secret, "UsagePlan", &moved_to).await?;
    w.rotate(&r, &s.secret, 1).await?;
    w.ag.delete_usage_plan_key()
        .usage_plan_id(&s.plan)
        .key_id(&old)
        .send()
        .await?;

    let before = w.snapshot(&s.secret, &[&s.plan, &moved_to]).await?;
    let run = cli(
        &w,
        &[
            "--json",
            "--allowed-usage-plan-ids",
            &moved_to,
            "rollback",
            &s.secret,
            "--apply",
        ],
    )
    .await?;
    ensure!(
        run.code == 1
            && run.json["secrets"][0]["refused"]
                .as_str()
                .is_some_and(|m| m.contains(&s.plan) && m.contains("ALLOWED_USAGE_PLAN_IDS")),
        "rollback to a plan outside the allow-list: exit {} {}",
        run.code,
        run.stdout
    );
    ensure!(
        before == w.snapshot(&s.secret, &[&s.plan, &moved_to]).await?,
        "the refused roll-back changed something"
    );

    // The allow-list unknown to the command (no flag, the function's configuration unreadable):
    // it cannot know whether the operator policy lets it attach there, so it refuses too,
    // before re-enabling anything. Guard: the `None` arm in src/ops/rollback.rs.
    let op = crate::guards::operator(&w).await?;
    let mut seen = op.inspect(&s.secret, None).await.map_err(|e| e.0)?;
    seen.function = None;
    let out = op
        .rollback(&seen, true, false)
        .await
        .map_err(|e| format!("rollback: {e:?}"))?;
    ensure!(
        out.done == 0
            && out
                .refused
                .as_deref()
                .is_some_and(|m| m.contains("is unknown") && m.contains(&s.plan)),
        "rollback with the allow-list unknown: {out:?}"
    );
    ensure!(
        before == w.snapshot(&s.secret, &[&s.plan, &moved_to]).await?,
        "the roll-back refused for an unknown allow-list changed something"
    );
    Ok(())
}

/// API Gateway takes at most 50 tags a key, and the function ties every untied key a version
/// holds before any other change: a key to adopt that carries 50 tags already cannot take the
/// tie, and on AWS createSecret would fail at TagResource on every try. It is refused before
/// any change (InvalidConfiguration, naming the key), and `check` reports `key-tags-full`.
/// Guard: `validate::untied_keys_full` in createSecret (LocalStack enforces no tag limit, so
/// without the guard the rotation goes through here).
pub async fn adopting_a_key_with_fifty_tags_is_refused_before_any_change(w: Arc<World>) -> R<()> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let tags: std::collections::HashMap<String, String> =
        (0..50).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let k =
        w.ag.create_api_key()
            .name(w.unique("full"))
            .enabled(true)
            .set_tags(Some(tags))
            .send()
            .await?;
    let id = k.id().unwrap_or_default().to_owned();
    w.attach(&plan, &id).await?;
    let key_name = w.unique("partner");
    let value = serde_json::json!({ "api_key_id": id }).to_string();
    let secret = w
        .create_secret(
            Some(&value),
            &[("KeyName", &key_name), ("UsagePlan", &plan)],
        )
        .await?;
    let r = w.rotator(&w.endpoint, config()).await?;
    let token = w.open_rotation(&secret).await?;
    let before = w.snapshot(&secret, &[&plan]).await?;
    match r
        .handle(&World::event("createSecret", &secret, &token))
        .await
    {
        Err(e) => ensure!(
            e.kind == ErrorKind::InvalidConfiguration
                && e.cause.contains(&id)
                && e.cause.contains("50 tags"),
            "createSecret failed, but not with the refusal of a full key: {e}"
        ),
        Ok(()) => return Err("createSecret went on with a key that cannot take the tie".into()),
    }
    ensure!(
        before == w.snapshot(&secret, &[&plan]).await?,
        "the refused createSecret changed something"
    );
    let arn = format!(
        "arn:aws:apigateway:{}::/apikeys/{id}",
        crate::support::world::REGION
    );
    // LocalStack's GetTags shows only tags added later, GetApiKey only those given at creation.
    let later = w.ag.get_tags().resource_arn(arn).send().await?;
    ensure!(
        later.tags().is_none_or(|t| t.is_empty()),
        "tags were added to the key: {:?}",
        later.tags()
    );
    let listed = w.key(&id).await?.ok_or("the key is gone")?;
    ensure!(
        listed.tags().is_some_and(|t| t.len() == 50),
        "the key's tags changed: {:?}",
        listed.tags()
    );
    let run = cli(&w, &["--json", "check", &secret]).await?;
    ensure!(
        crate::operator::codes(&run.json["secrets"][0]).get("key-tags-full")
            == Some(&"error".to_owned()),
        "check does not report key-tags-full: {}",
        run.stdout
    );
    Ok(())
}
