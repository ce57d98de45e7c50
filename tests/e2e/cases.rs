//! The end-to-end cases.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api_key_rotator::config::{FunctionConfig, OldKeyAction, ProbeConfig, TIE_TAG};
use api_key_rotator::{AwsRotator, ErrorKind};
use serde_json::json;

use crate::adversary::{
    adversary_a_failed_retirement_is_visible_and_cleanup_finishes_it,
    adversary_a_plan_move_inside_a_failing_rotation,
    adversary_a_previous_key_another_version_holds_is_left_alone,
    adversary_a_staged_pending_value_naming_another_secrets_key,
    adversary_an_interrupted_rollback_can_be_finished,
    adversary_cleanup_all_spares_the_keys_of_a_recreated_secret,
    adversary_cleanup_never_deletes_a_key_an_unreadable_value_names,
    adversary_keyname_flip_flop_under_keep_previous,
    adversary_rollback_refuses_an_open_rotation_unless_forced,
};
use crate::ensure;
use crate::grace::{
    grace_config_refused, grace_rollback_survives, grace_rotations_within_one_grace,
    grace_sweep_event_validation, grace_sweep_is_cheap_when_idle, grace_zero_downtime,
};
use crate::guards::{
    guard_a_late_finish_spares_the_key_an_open_rotation_is_making,
    guard_a_secret_arn_too_long_for_the_tie_tag_is_refused_before_any_change,
    guard_a_version_with_only_a_custom_label_is_no_rotation,
    guard_cleanup_all_leaves_the_keys_of_a_secret_that_exists_again,
    guard_cleanup_all_never_takes_a_key_of_another_regions_secret,
    guard_cleanup_all_spares_a_key_a_namesake_recreated_during_the_run_holds,
    guard_cleanup_reads_the_secret_again_before_each_delete,
    guard_create_refuses_a_current_key_of_another_secret_as_foreign,
    guard_every_step_refuses_a_stale_pending_version,
    guard_rollback_refuses_a_key_tied_to_another_secret,
};
use crate::matrix::fault_matrix;
use crate::metrics::{
    emf_metrics_agree_with_what_happened, retirements_are_counted_once_per_policy,
};
use crate::moto::the_model_fakes_in_aws_mode_behave_as_moto;
use crate::operator::{
    a_rotation_during_status_all_is_not_reported_gone,
    check_reports_each_finding_and_changes_nothing, cleanup_retires_orphans_and_nothing_else,
    deleted_section_reports_per_key_and_goes_on, rollback_under_each_policy_then_a_rotation,
    status_all_reads_api_gateway_once_per_plan_not_per_secret,
    status_shows_each_key_with_its_role_under_each_policy,
};
use crate::ownership::{
    a_key_made_before_a_keyname_change_is_retired, a_late_finish_leaves_the_open_rotation_alone,
    a_roll_back_then_a_rotation_keeps_the_key_clients_went_back_to,
    every_key_the_secret_held_is_retired_by_its_policy, the_model_fakes_behave_as_the_local_aws,
};
use crate::permissions::{
    a_retired_key_is_detached_only_from_allow_listed_plans,
    a_reused_key_on_a_plan_outside_the_allow_list_is_refused,
    a_rollback_to_a_plan_outside_the_allow_list_is_refused,
    adopting_a_key_with_fifty_tags_is_refused_before_any_change,
};
use crate::support::proxy::{Fault, Proxy};
use crate::support::runtime::Function;
use crate::support::world::{str_field, World, STEPS};
use crate::support::R;
use crate::trace_logs::no_secret_reaches_any_output_at_trace_or_debug;
use crate::zero_downtime::cached_clients_with_the_aws_caching_client;
use crate::TestFn;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|w| Box::pin($name(w))) as TestFn)),*]
    };
}

pub fn all() -> Vec<(&'static str, TestFn)> {
    cases![
        happy_path_first_then_second_rotation,
        first_rotation_of_a_secret_without_a_value,
        every_step_delivered_twice,
        replaying_a_finished_rotation_changes_nothing,
        disable_policy_keeps_one_disabled_key,
        keep_previous_keeps_exactly_two_valid_keys,
        policy_from_function_environment,
        two_usage_plans,
        adoption_of_an_existing_key,
        rotation_token_is_accepted,
        bad_tags_and_values_change_nothing,
        bad_events_change_nothing,
        step_checks_refuse_wrong_versions,
        test_url_probe_through_the_gateway,
        lost_create_answer_leaves_exactly_one_key,
        the_model_fakes_behave_as_the_local_aws,
        the_model_fakes_in_aws_mode_behave_as_moto,
        every_key_the_secret_held_is_retired_by_its_policy,
        a_key_made_before_a_keyname_change_is_retired,
        a_late_finish_leaves_the_open_rotation_alone,
        a_roll_back_then_a_rotation_keeps_the_key_clients_went_back_to,
        fault_matrix,
        aws_calls_per_step_on_the_happy_path,
        the_binary_rotates_under_the_lambda_runtime_api,
        cached_clients_with_the_aws_caching_client,
        emf_metrics_agree_with_what_happened,
        retirements_are_counted_once_per_policy,
        a_failed_probe_promotes_nothing_and_the_next_rotation_retires_its_key,
        the_same_rotation_delivered_twice_at_once,
        check_reports_each_finding_and_changes_nothing,
        status_shows_each_key_with_its_role_under_each_policy,
        cleanup_retires_orphans_and_nothing_else,
        status_all_reads_api_gateway_once_per_plan_not_per_secret,
        deleted_section_reports_per_key_and_goes_on,
        a_rotation_during_status_all_is_not_reported_gone,
        rollback_under_each_policy_then_a_rotation,
        no_secret_reaches_any_output_at_trace_or_debug,
        // What the role may touch (issue 21, items 2 and 3).
        a_retired_key_is_detached_only_from_allow_listed_plans,
        a_reused_key_on_a_plan_outside_the_allow_list_is_refused,
        a_rollback_to_a_plan_outside_the_allow_list_is_refused,
        adopting_a_key_with_fifty_tags_is_refused_before_any_change,
        // The adversary's sequences (issue 18, items 2 to 9).
        adversary_keyname_flip_flop_under_keep_previous,
        adversary_a_staged_pending_value_naming_another_secrets_key,
        adversary_a_plan_move_inside_a_failing_rotation,
        adversary_cleanup_never_deletes_a_key_an_unreadable_value_names,
        adversary_cleanup_all_spares_the_keys_of_a_recreated_secret,
        adversary_an_interrupted_rollback_can_be_finished,
        adversary_rollback_refuses_an_open_rotation_unless_forced,
        adversary_a_failed_retirement_is_visible_and_cleanup_finishes_it,
        adversary_a_previous_key_another_version_holds_is_left_alone,
        // Guards a test must notice when deleted (issue 20).
        guard_every_step_refuses_a_stale_pending_version,
        guard_a_version_with_only_a_custom_label_is_no_rotation,
        guard_create_refuses_a_current_key_of_another_secret_as_foreign,
        guard_cleanup_reads_the_secret_again_before_each_delete,
        guard_cleanup_all_leaves_the_keys_of_a_secret_that_exists_again,
        guard_cleanup_all_spares_a_key_a_namesake_recreated_during_the_run_holds,
        guard_cleanup_all_never_takes_a_key_of_another_regions_secret,
        guard_rollback_refuses_a_key_tied_to_another_secret,
        guard_a_secret_arn_too_long_for_the_tie_tag_is_refused_before_any_change,
        guard_a_late_finish_spares_the_key_an_open_rotation_is_making,
        // The grace period end to end (issue 19), each case in an account of its own.
        grace_zero_downtime,
        grace_rotations_within_one_grace,
        grace_rollback_survives,
        grace_sweep_is_cheap_when_idle,
        grace_sweep_event_validation,
        grace_config_refused,
        function_logs_hold_no_key_value_and_no_rotation_token,
        // Last: it reads what the local AWS did during every case above.
        the_local_aws_made_no_connection_outside_loopback,
    ]
}

pub(crate) fn config() -> FunctionConfig {
    FunctionConfig {
        allowed_test_url_hosts: BTreeSet::from(["127.0.0.1".to_owned()]),
        probe: ProbeConfig {
            budget: Duration::from_secs(4),
            attempt_timeout: Duration::from_secs(2),
            interval: Duration::from_millis(250),
        },
        ..FunctionConfig::default()
    }
}

pub(crate) async fn rotator(w: &World) -> R<AwsRotator> {
    w.rotator(&w.endpoint, config()).await
}

/// A deployed API, a plan covering it, and a tagged secret.
pub(crate) struct Setup {
    pub api: String,
    pub plan: String,
    pub secret: String,
    pub key_name: String,
}

pub(crate) async fn setup(w: &World, value: Option<&str>, extra_tags: &[(&str, &str)]) -> R<Setup> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let key_name = w.unique("partner");
    let mut tags = vec![("KeyName", key_name.as_str()), ("UsagePlan", plan.as_str())];
    tags.extend_from_slice(extra_tags);
    let secret = w.create_secret(value, &tags).await?;
    Ok(Setup {
        api,
        plan,
        secret,
        key_name,
    })
}

/// Like `setup`, with a TestUrl tag naming the API's stage (path-style, on loopback).
async fn setup_probed(w: &World) -> R<Setup> {
    setup_probed_with(w, "{}").await
}

/// The same, with this AWSCURRENT value.
pub(crate) async fn setup_probed_with(w: &World, value: &str) -> R<Setup> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let key_name = w.unique("partner");
    let url = w.stage_url(&api);
    let tags = [
        ("KeyName", key_name.as_str()),
        ("UsagePlan", plan.as_str()),
        ("TestUrl", url.as_str()),
    ];
    let secret = w.create_secret(Some(value), &tags).await?;
    Ok(Setup {
        api,
        plan,
        secret,
        key_name,
    })
}

/// The state every completed rotation must leave: exactly the keys the policy keeps are tied to
/// the secret, the current key is enabled, attached to every plan and held by AWSCURRENT, and
/// no AWSPENDING label is left anywhere (finishSecret removes it from the new AWSCURRENT version,
/// so a later roll-back cannot leave it on a version that was current once).
pub(crate) async fn assert_rotated(w: &World, s: &Setup, token: &str, plans: &[&str]) -> R<String> {
    let current = w.value(&s.secret, "AWSCURRENT").await?;
    let key_id = str_field(&current, "api_key_id").ok_or("no api_key_id in AWSCURRENT")?;
    let key = w
        .key(&key_id)
        .await?
        .ok_or("the current key does not exist")?;
    ensure!(key.enabled(), "current key disabled");
    ensure!(
        key.name() == Some(format!("{}-{token}", s.key_name).as_str()),
        "key name {:?}",
        key.name()
    );
    ensure!(
        str_field(&current, "api_key_value").as_deref() == key.value(),
        "value mismatch"
    );
    ensure!(
        str_field(&current, "key_name").as_deref() == key.name(),
        "key_name mismatch"
    );
    ensure!(
        current.as_ref().and_then(|v| v.get("usage_plan_ids")) == Some(&json!(plans)),
        "usage_plan_ids {:?}",
        current.as_ref().and_then(|v| v.get("usage_plan_ids"))
    );
    ensure!(
        key.tags().and_then(|t| t.get(TIE_TAG)) == Some(&s.secret),
        "key not tied to the secret"
    );
    for p in plans {
        ensure!(
            w.plan_keys(p).await?.contains(&key_id),
            "key not attached to {p}"
        );
    }
    let versions = w.versions(&s.secret).await?;
    ensure!(
        versions
            .get(token)
            .is_some_and(|v| v.iter().any(|l| l == "AWSCURRENT")),
        "token not AWSCURRENT: {versions:?}"
    );
    ensure!(
        !versions
            .values()
            .any(|v| v.iter().any(|l| l == "AWSPENDING")),
        "AWSPENDING left behind: {versions:?}"
    );
    let same_token = w
        .keys_with_prefix(&format!("{}-{token}", s.key_name))
        .await?;
    ensure!(
        same_token.len() == 1,
        "{} keys for the token",
        same_token.len()
    );
    Ok(key_id)
}

pub(crate) async fn tied_ids(w: &World, secret: &str) -> R<BTreeSet<String>> {
    Ok(w.tied_keys(secret)
        .await?
        .iter()
        .filter_map(|k| k.id().map(str::to_owned))
        .collect())
}

async fn happy_path_first_then_second_rotation(w: Arc<World>) -> R<()> {
    let s = setup(
        &w,
        Some("{}"),
        &[("Project", "billing"), ("CostCategory", "cc-42")],
    )
    .await?;
    let r = rotator(&w).await?;
    let (t1, errors) = w.rotate(&r, &s.secret, 1).await?;
    ensure!(errors.is_empty(), "{errors:?}");
    let k1 = assert_rotated(&w, &s, &t1, &[&s.plan]).await?;
    let key = w.key(&k1).await?.ok_or("no key")?;
    let tags = key.tags().cloned().unwrap_or_default();
    ensure!(
        tags.get("Project").map(String::as_str) == Some("billing"),
        "{tags:?}"
    );
    ensure!(
        tags.get("CostCategory").map(String::as_str) == Some("cc-42"),
        "{tags:?}"
    );
    ensure!(
        !tags.contains_key("KeyName") && !tags.contains_key("UsagePlan"),
        "{tags:?}"
    );
    let v1 = key.value().unwrap_or_default().to_owned();
    ensure!(
        w.call_stage(&s.api, &v1).await? == 200,
        "first key refused by the gateway"
    );

    let (t2, errors) = w.rotate(&r, &s.secret, 1).await?;
    ensure!(errors.is_empty(), "{errors:?}");
    let k2 = assert_rotated(&w, &s, &t2, &[&s.plan]).await?;
    ensure!(k1 != k2, "same key after rotation");
    ensure!(
        w.key(&k1).await?.is_none(),
        "old key not deleted under delete"
    );
    ensure!(
        tied_ids(&w, &s.secret).await? == BTreeSet::from([k2.clone()]),
        "extra tied keys"
    );
    let v2 =
        str_field(&w.value(&s.secret, "AWSCURRENT").await?, "api_key_value").unwrap_or_default();
    ensure!(w.call_stage(&s.api, &v2).await? == 200, "new key refused");
    ensure!(
        w.call_stage(&s.api, &v1).await? == 403,
        "old key still let in"
    );
    let prev = w.value(&s.secret, "AWSPREVIOUS").await?;
    ensure!(
        str_field(&prev, "api_key_id") == Some(k1),
        "AWSPREVIOUS does not hold the old key"
    );
    Ok(())
}

/// A secret created without any value has no AWSCURRENT version. createSecret makes the first
/// key and nothing is retired. finishSecret is not run here: moving AWSCURRENT onto a secret that
/// has no AWSCURRENT version crashes the emulator's UpdateSecretVersionStage ("list index out of
/// range" in moto's backend), although AWS accepts it.
async fn first_rotation_of_a_secret_without_a_value(w: Arc<World>) -> R<()> {
    let s = setup(&w, None, &[]).await?;
    let r = rotator(&w).await?;
    let token = w.open_rotation(&s.secret).await?;
    for step in ["createSecret", "setSecret", "testSecret"] {
        r.handle(&World::event(step, &s.secret, &token)).await?;
    }
    let pending =
        w.sm.get_secret_value()
            .secret_id(&s.secret)
            .version_id(&token)
            .send()
            .await?;
    let pv: serde_json::Value = serde_json::from_str(pending.secret_string().unwrap_or("{}"))?;
    let id = pv["api_key_id"].as_str().unwrap_or_default().to_owned();
    ensure!(
        tied_ids(&w, &s.secret).await? == BTreeSet::from([id.clone()]),
        "one key for the secret"
    );
    ensure!(w.plan_keys(&s.plan).await?.contains(&id), "not attached");
    let v = pv["api_key_value"].as_str().unwrap_or_default().to_owned();
    ensure!(w.call_stage(&s.api, &v).await? == 200, "first key refused");
    Ok(())
}

async fn every_step_delivered_twice(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some(r#"{"note": "carried over"}"#), &[]).await?;
    let r = rotator(&w).await?;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let token = w.open_rotation(&s.secret).await?;
        for step in STEPS {
            for _ in 0..2 {
                r.handle(&World::event(step, &s.secret, &token)).await?;
            }
        }
        keys.push(assert_rotated(&w, &s, &token, &[&s.plan]).await?);
    }
    ensure!(w.key(&keys[0]).await?.is_none(), "old key survived");
    ensure!(
        tied_ids(&w, &s.secret).await?.len() == 1,
        "more than one tied key"
    );
    let current = w.value(&s.secret, "AWSCURRENT").await?;
    ensure!(
        str_field(&current, "note").as_deref() == Some("carried over"),
        "unowned field lost"
    );
    Ok(())
}

async fn replaying_a_finished_rotation_changes_nothing(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let r = rotator(&w).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let (t2, _) = w.rotate(&r, &s.secret, 1).await?;
    let before = w.snapshot(&s.secret, &[&s.plan]).await?;
    World::run_steps(&r, &s.secret, &t2).await?;
    World::run_steps(&r, &s.secret, &t2).await?;
    let after = w.snapshot(&s.secret, &[&s.plan]).await?;
    ensure!(
        before == after,
        "replay changed state:\n{before:?}\n{after:?}"
    );
    Ok(())
}

async fn disable_policy_keeps_one_disabled_key(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[("OldKeyAction", "disable")]).await?;
    let r = rotator(&w).await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (t, _) = w.rotate(&r, &s.secret, 1).await?;
        ids.push(assert_rotated(&w, &s, &t, &[&s.plan]).await?);
    }
    ensure!(
        w.key(&ids[0]).await?.is_none(),
        "the key disabled a rotation ago was not deleted"
    );
    let old = w
        .key(&ids[1])
        .await?
        .ok_or("previous key deleted under disable")?;
    ensure!(!old.enabled(), "previous key still enabled under disable");
    ensure!(
        w.plan_keys(&s.plan).await?.contains(&ids[1]),
        "disabled key should stay attached for roll-back"
    );
    ensure!(
        tied_ids(&w, &s.secret).await? == BTreeSet::from([ids[1].clone(), ids[2].clone()]),
        "tied keys"
    );
    let v = old.value().unwrap_or_default().to_owned();
    ensure!(
        w.call_stage(&s.api, &v).await? == 403,
        "disabled key let in"
    );
    Ok(())
}

async fn valid_keys(w: &World, s: &Setup) -> R<BTreeSet<String>> {
    let attached = w.plan_keys(&s.plan).await?;
    Ok(w.tied_keys(&s.secret)
        .await?
        .iter()
        .filter(|k| k.enabled() && k.id().is_some_and(|id| attached.contains(id)))
        .filter_map(|k| k.id().map(str::to_owned))
        .collect())
}

async fn keep_previous_keeps_exactly_two_valid_keys(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[("OldKeyAction", "keep-previous")]).await?;
    let r = rotator(&w).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (t, _) = w.rotate(&r, &s.secret, 1).await?;
        ids.push(assert_rotated(&w, &s, &t, &[&s.plan]).await?);
        let valid = valid_keys(&w, &s).await?;
        ensure!(
            valid.len() == (i + 1).min(2),
            "after rotation {i}: {} valid keys",
            valid.len()
        );
    }
    ensure!(
        w.key(&ids[0]).await?.is_none(),
        "key from two rotations back survived"
    );
    let prev = w.key(&ids[1]).await?.ok_or("previous key gone")?;
    ensure!(prev.enabled(), "previous key disabled");
    let v = prev.value().unwrap_or_default().to_owned();
    ensure!(
        w.call_stage(&s.api, &v).await? == 200,
        "previous key refused under keep-previous"
    );
    Ok(())
}

async fn policy_from_function_environment(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let cfg = FunctionConfig {
        default_old_key_action: OldKeyAction::KeepPrevious,
        ..config()
    };
    let r = w.rotator(&w.endpoint, cfg).await?;
    let (_, _) = w.rotate(&r, &s.secret, 1).await?;
    let k1 = str_field(&w.value(&s.secret, "AWSCURRENT").await?, "api_key_id").unwrap_or_default();
    w.rotate(&r, &s.secret, 1).await?;
    let k1_now = w
        .key(&k1)
        .await?
        .ok_or("OLD_KEY_ACTION=keep-previous deleted the old key")?;
    ensure!(k1_now.enabled(), "old key disabled");
    Ok(())
}

async fn two_usage_plans(w: Arc<World>) -> R<()> {
    let api2 = w.create_api().await?;
    let plan2 = w.create_plan(Some(&api2)).await?;
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let key_name = w.unique("partner");
    let plans = format!("{plan},{plan2}");
    let secret = w
        .create_secret(Some("{}"), &[("KeyName", &key_name), ("UsagePlan", &plans)])
        .await?;
    let s = Setup {
        api: api.clone(),
        plan: plan.clone(),
        secret,
        key_name,
    };
    let r = rotator(&w).await?;
    for _ in 0..2 {
        let (t, _) = w.rotate(&r, &s.secret, 1).await?;
        assert_rotated(&w, &s, &t, &[&plan, &plan2]).await?;
    }
    let v =
        str_field(&w.value(&s.secret, "AWSCURRENT").await?, "api_key_value").unwrap_or_default();
    ensure!(w.call_stage(&api, &v).await? == 200, "refused on API 1");
    ensure!(w.call_stage(&api2, &v).await? == 200, "refused on API 2");
    Ok(())
}

async fn adoption_of_an_existing_key(w: Arc<World>) -> R<()> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let (old_id, old_value) = w.create_key(&w.unique("legacy")).await?;
    w.attach(&plan, &old_id).await?;
    let key_name = w.unique("partner");
    let value = json!({"api_key_id": old_id}).to_string();
    let secret = w
        .create_secret(
            Some(&value),
            &[("KeyName", &key_name), ("UsagePlan", &plan)],
        )
        .await?;
    let s = Setup {
        api: api.clone(),
        plan: plan.clone(),
        secret,
        key_name,
    };
    ensure!(
        w.call_stage(&api, &old_value).await? == 200,
        "adopted key not valid before"
    );
    let r = rotator(&w).await?;
    let (t, errors) = w.rotate(&r, &s.secret, 1).await?;
    ensure!(errors.is_empty(), "{errors:?}");
    let new_id = assert_rotated(&w, &s, &t, &[&plan]).await?;
    let new_key = w.key(&new_id).await?.ok_or("no new key")?;
    ensure!(
        new_key.description() == Some("the partner's first key"),
        "description not carried"
    );
    ensure!(
        new_key.customer_id() == Some("marketplace-customer-1"),
        "customerId not carried"
    );
    ensure!(w.key(&old_id).await?.is_none(), "adopted key not retired");
    ensure!(
        w.call_stage(&api, &old_value).await? == 403,
        "adopted key still valid"
    );
    // The next rotation finds the current key in its `<KeyName>-` listing, not by id: the
    // description and customerId still carry over.
    let (t2, errors) = w.rotate(&r, &s.secret, 1).await?;
    ensure!(errors.is_empty(), "{errors:?}");
    let next_id = assert_rotated(&w, &s, &t2, &[&plan]).await?;
    let next_key = w.key(&next_id).await?.ok_or("no next key")?;
    ensure!(
        next_key.description() == Some("the partner's first key")
            && next_key.customer_id() == Some("marketplace-customer-1"),
        "description or customerId not carried into the second rotation"
    );
    ensure!(
        w.key(&new_id).await?.is_none(),
        "first rotated key not retired"
    );
    Ok(())
}

async fn rotation_token_is_accepted(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let r = rotator(&w).await?;
    let token = w.open_rotation(&s.secret).await?;
    for step in STEPS {
        let mut ev = World::event(step, &s.secret, &token);
        let rotation_token = "9b2e1c6a-rotation-token-0000000000000000";
        crate::support::world::remember(rotation_token);
        ev["RotationToken"] = json!(rotation_token);
        r.handle(&ev).await?;
    }
    assert_rotated(&w, &s, &token, &[&s.plan]).await?;
    Ok(())
}

/// Opens a rotation, runs createSecret, and checks it fails with `kind` and changed nothing.
/// Returns the error's message.
pub(crate) async fn refused(
    w: &World,
    r: &AwsRotator,
    secret: &str,
    plans: &[&str],
    kind: ErrorKind,
    what: &str,
) -> R<String> {
    let token = w.open_rotation(secret).await?;
    let before = w.snapshot(secret, plans).await?;
    let result = r
        .handle(&World::event("createSecret", secret, &token))
        .await;
    let after = w.snapshot(secret, plans).await?;
    let message = match result {
        Err(e) => {
            ensure!(e.kind == kind, "{what}: got {:?}: {e}", e.kind);
            ensure!(
                e.to_string().contains(secret) && e.to_string().contains("createSecret"),
                "{what}: message lacks secret or step: {e}"
            );
            e.to_string()
        }
        Ok(()) => return Err(format!("{what}: createSecret succeeded").into()),
    };
    ensure!(
        before == after,
        "{what}: state changed:\n{before:?}\n{after:?}"
    );
    Ok(message)
}

/// Every call the proxy counted is on the function's own list of the calls `what` makes
/// (`STEP_CALLS`, `SWEEP_CALLS`): a new call cannot escape the fault matrix unnoticed.
pub(crate) fn ensure_listed(
    what: &str,
    got: &std::collections::BTreeMap<String, u32>,
    listed: &[&str],
    list: &str,
) -> R<()> {
    for op in got.keys() {
        ensure!(
            listed.contains(&op.as_str()),
            "{what} made {op}, which {list} does not list"
        );
    }
    Ok(())
}

async fn bad_tags_and_values_change_nothing(w: Arc<World>) -> R<()> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let overlapping = w.create_plan(Some(&api)).await?;
    let other_api = w.create_api().await?;
    let other_plan = w.create_plan(Some(&other_api)).await?;
    let r = rotator(&w).await?;
    let (stray_id, _) = w.create_key(&w.unique("stray")).await?;
    // Tagged at creation: the emulator's GetApiKey does not show tags added by TagResource.
    let foreign_arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:someone-else";
    let foreign =
        w.ag.create_api_key()
            .name(w.unique("foreign"))
            .enabled(true)
            .tags(TIE_TAG, foreign_arn)
            .send()
            .await?;
    let foreign_id = foreign.id().unwrap_or_default().to_owned();
    let both = format!("{plan},{overlapping}");
    let cfg_allow = FunctionConfig {
        allowed_usage_plan_ids: Some(BTreeSet::from([plan.clone()])),
        ..config()
    };
    let r_allow = w.rotator(&w.endpoint, cfg_allow).await?;
    let exec_other = format!("https://{other_api}.execute-api.us-east-1.amazonaws.com/prod/");
    let adopt_missing = json!({"api_key_id": "doesnotexist"}).to_string();
    let adopt_stray = json!({"api_key_id": stray_id}).to_string();
    let adopt_foreign = json!({"api_key_id": foreign_id}).to_string();
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Vec<(&'a str, &'a str)>,
        &'a AwsRotator,
    );
    let cases: Vec<Case> = vec![
        ("no KeyName", Some("{}"), vec![("UsagePlan", &plan)], &r),
        ("no UsagePlan", Some("{}"), vec![("KeyName", "k")], &r),
        (
            "malformed UsagePlan",
            Some("{}"),
            vec![("KeyName", "k"), ("UsagePlan", "a;b")],
            &r,
        ),
        (
            "missing plan",
            Some("{}"),
            vec![("KeyName", "k"), ("UsagePlan", "nosuchplan1")],
            &r,
        ),
        (
            "plan outside allow-list",
            Some("{}"),
            vec![("KeyName", "k"), ("UsagePlan", &other_plan)],
            &r_allow,
        ),
        (
            "overlapping plans",
            Some("{}"),
            vec![("KeyName", "k"), ("UsagePlan", &both)],
            &r,
        ),
        (
            "empty KeyName",
            Some("{}"),
            vec![("KeyName", " "), ("UsagePlan", &plan)],
            &r,
        ),
        (
            "TestUrl not a URL",
            Some("{}"),
            vec![
                ("KeyName", "k"),
                ("UsagePlan", &plan),
                ("TestUrl", "not a url"),
            ],
            &r,
        ),
        (
            "bad OldKeyAction",
            Some("{}"),
            vec![
                ("KeyName", "k"),
                ("UsagePlan", &plan),
                ("OldKeyAction", "shred"),
            ],
            &r,
        ),
        (
            "TestUrl plain http",
            Some("{}"),
            vec![
                ("KeyName", "k"),
                ("UsagePlan", &plan),
                ("TestUrl", "http://collector.example/x"),
            ],
            &r,
        ),
        (
            "TestUrl foreign host",
            Some("{}"),
            vec![
                ("KeyName", "k"),
                ("UsagePlan", &plan),
                ("TestUrl", "https://collector.example/x"),
            ],
            &r,
        ),
        (
            "TestUrl API outside the plans",
            Some("{}"),
            vec![
                ("KeyName", "k"),
                ("UsagePlan", &plan),
                ("TestUrl", &exec_other),
            ],
            &r,
        ),
        (
            "value not JSON",
            Some("not json"),
            vec![("KeyName", "k"), ("UsagePlan", &plan)],
            &r,
        ),
        (
            "value wrong type",
            Some(r#"{"api_key_id": 7}"#),
            vec![("KeyName", "k"), ("UsagePlan", &plan)],
            &r,
        ),
        (
            "value a list",
            Some("[]"),
            vec![("KeyName", "k"), ("UsagePlan", &plan)],
            &r,
        ),
        (
            "adopting a missing key",
            Some(&adopt_missing),
            vec![("KeyName", "k"), ("UsagePlan", &plan)],
            &r,
        ),
        (
            "adopting another secret's key",
            Some(&adopt_foreign),
            vec![("KeyName", "k"), ("UsagePlan", &plan)],
            &r,
        ),
    ];
    eprintln!(
        "  bad-input matrix: {} tag/value cases, each refused with nothing changed",
        cases.len()
    );
    for (what, value, tags, rot) in cases {
        let secret = w.create_secret(value, &tags).await?;
        refused(
            &w,
            rot,
            &secret,
            &[&plan, &overlapping, &other_plan],
            ErrorKind::InvalidConfiguration,
            what,
        )
        .await?;
    }
    // A valid adoption passes the same path, so the refusals above are not an artefact.
    let secret = w
        .create_secret(
            Some(&adopt_stray),
            &[("KeyName", "k"), ("UsagePlan", &plan)],
        )
        .await?;
    w.rotate(&r, &secret, 1).await?;
    ensure!(w.key(&stray_id).await?.is_none(), "adopted key not retired");
    Ok(())
}

async fn bad_events_change_nothing(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let r = rotator(&w).await?;
    let token = w.open_rotation(&s.secret).await?;
    let before = w.snapshot(&s.secret, &[&s.plan]).await?;
    let events = [
        json!({"Step": "rotateEverything", "SecretId": s.secret, "ClientRequestToken": token}),
        json!({"SecretId": s.secret, "ClientRequestToken": token}),
        json!({"Step": "createSecret", "ClientRequestToken": token}),
        json!({"Step": "createSecret", "SecretId": s.secret}),
        json!({"Step": "createSecret", "SecretId": s.secret, "ClientRequestToken": "too-short"}),
        json!({"Step": "createSecret", "SecretId": s.secret, "ClientRequestToken": 42}),
        json!("createSecret"),
    ];
    // A well-formed event for a secret that does not exist.
    let e = r
        .handle(&World::event(
            "createSecret",
            "no-such-secret-anywhere",
            &token,
        ))
        .await
        .err();
    ensure!(
        e.as_ref().is_some_and(
            |e| e.kind == ErrorKind::RotationState && e.cause.contains("does not exist")
        ),
        "unknown secret: {e:?}"
    );
    for ev in events {
        let result = r.handle(&ev).await;
        ensure!(
            result.as_ref().err().map(|e| e.kind) == Some(ErrorKind::InvalidEvent),
            "{ev}: {result:?}"
        );
    }
    ensure!(
        before == w.snapshot(&s.secret, &[&s.plan]).await?,
        "a bad event changed state"
    );
    // The same rotation still completes afterwards.
    World::run_steps(&r, &s.secret, &token).await?;
    assert_rotated(&w, &s, &token, &[&s.plan]).await?;
    Ok(())
}

async fn step_checks_refuse_wrong_versions(w: Arc<World>) -> R<()> {
    let s = setup(&w, Some("{}"), &[]).await?;
    let r = rotator(&w).await?;
    // Rotation not enabled: no RotateSecret yet.
    let stray = w.token();
    let e = r
        .handle(&World::event("createSecret", &s.secret, &stray))
        .await
        .err();
    ensure!(
        e.as_ref().map(|e| e.kind) == Some(ErrorKind::RotationState),
        "{e:?}"
    );
    ensure!(
        e.is_some_and(|e| e.cause.contains("not enabled")),
        "rotation-enabled check"
    );
    let (t1, _) = w.rotate(&r, &s.secret, 1).await?;
    // A token that is no version of the secret.
    let e = r
        .handle(&World::event("setSecret", &s.secret, &stray))
        .await
        .err();
    ensure!(
        e.as_ref()
            .is_some_and(|e| e.kind == ErrorKind::RotationState),
        "{e:?}"
    );
    // After another rotation, the first token is AWSPREVIOUS: neither pending nor current.
    w.rotate(&r, &s.secret, 1).await?;
    let before = w.snapshot(&s.secret, &[&s.plan]).await?;
    for step in STEPS {
        let e = r.handle(&World::event(step, &s.secret, &t1)).await.err();
        ensure!(
            e.as_ref()
                .is_some_and(|e| e.kind == ErrorKind::RotationState),
            "{step}: {e:?}"
        );
    }
    ensure!(
        before == w.snapshot(&s.secret, &[&s.plan]).await?,
        "state changed"
    );
    // setSecret and testSecret before createSecret: the pending version has no value.
    let t3 = w.open_rotation(&s.secret).await?;
    for step in ["setSecret", "testSecret", "finishSecret"] {
        let e = r.handle(&World::event(step, &s.secret, &t3)).await.err();
        ensure!(
            e.as_ref().is_some_and(|e| e.kind == ErrorKind::RotationState && e.cause.contains("no value")),
            "{step}: {e:?}"
        );
    }
    World::run_steps(&r, &s.secret, &t3).await?;
    Ok(())
}

async fn test_url_probe_through_the_gateway(w: Arc<World>) -> R<()> {
    let s = setup_probed(&w).await?;
    let (plan, secret, url) = (s.plan.clone(), s.secret.clone(), w.stage_url(&s.api));
    let r = rotator(&w).await?;
    // An attached key passes the probe.
    let (t, errors) = w.rotate(&r, &secret, 1).await?;
    ensure!(errors.is_empty(), "{errors:?}");
    assert_rotated(&w, &s, &t, &[&plan]).await?;

    // A detached key, then a disabled key: testSecret fails and nothing is promoted.
    for breakage in ["detach", "disable"] {
        let current_before = w.value(&secret, "AWSCURRENT").await?;
        let token = w.open_until_test(&r, &secret).await?;
        w.break_pending_key(&secret, &token, &plan, breakage == "disable")
            .await?;
        let e = r
            .handle(&World::event("testSecret", &secret, &token))
            .await
            .err();
        ensure!(
            e.as_ref().map(|e| e.kind) == Some(ErrorKind::TestFailed),
            "{breakage}: {e:?}"
        );
        ensure!(
            w.value(&secret, "AWSCURRENT").await? == current_before,
            "{breakage}: promoted"
        );
        // setSecret repairs it, and the rotation completes.
        World::run_steps(&r, &secret, &token).await?;
        assert_rotated(&w, &s, &token, &[&plan]).await?;
    }

    // The probe itself: a key attached only to a plan for another API is refused by the stage
    // the TestUrl names, so the probe gets 403 and fails.
    let other_api = w.create_api().await?;
    let other_plan = w.create_plan(Some(&other_api)).await?;
    let key_name = w.unique("partner");
    let secret = w
        .create_secret(
            Some("{}"),
            &[
                ("KeyName", &key_name),
                ("UsagePlan", &other_plan),
                ("TestUrl", &url),
            ],
        )
        .await?;
    let token = w.open_until_test(&r, &secret).await?;
    let e = r
        .handle(&World::event("testSecret", &secret, &token))
        .await
        .err();
    ensure!(
        e.as_ref()
            .is_some_and(|e| e.kind == ErrorKind::TestFailed && e.cause.contains("HTTP 403")),
        "{e:?}"
    );
    Ok(())
}

async fn lost_create_answer_leaves_exactly_one_key(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, config()).await?;
    let s = setup(&w, Some("{}"), &[]).await?;
    // The emulator creates the key, the answer is lost, and the SDK retries the create.
    proxy.inject("CreateApiKey", Fault::LoseAnswer, 1);
    let (t, errors) = w.rotate(&r, &s.secret, 3).await?;
    ensure!(proxy.injected("CreateApiKey") == 1, "fault not injected");
    ensure!(
        proxy.calls("CreateApiKey") >= 2,
        "the SDK did not retry the create"
    );
    ensure!(errors.is_empty(), "{errors:?}");
    assert_rotated(&w, &s, &t, &[&s.plan]).await?;
    ensure!(
        tied_ids(&w, &s.secret).await?.len() == 1,
        "a duplicate key was orphaned"
    );
    Ok(())
}

/// The AWS calls each step makes in a second rotation (delete policy, one plan, no TestUrl),
/// counted by the proxy. A new call shows up here first.
async fn aws_calls_per_step_on_the_happy_path(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, config()).await?;
    let s = setup(&w, Some("{}"), &[]).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let token = w.open_rotation(&s.secret).await?;
    let expected: [(&str, &[(&str, u32)]); 4] = [
        (
            "createSecret",
            &[
                ("CreateApiKey", 1),
                ("CreateUsagePlanKey", 1),
                // The survey reads the labels again after the listing, and every labelled
                // version's value (AWSCURRENT and AWSPREVIOUS here).
                ("DescribeSecret", 2),
                ("GetApiKeys", 1),
                ("GetSecretValue", 3),
                ("GetUsagePlan", 1),
                ("PutSecretValue", 1),
            ],
        ),
        (
            "setSecret",
            &[
                ("DescribeSecret", 1),
                ("GetApiKey", 1),
                ("GetSecretValue", 1),
                ("GetUsagePlans", 1),
            ],
        ),
        (
            "testSecret",
            &[
                ("DescribeSecret", 1),
                ("GetApiKey", 1),
                ("GetSecretValue", 1),
                ("GetUsagePlans", 1),
            ],
        ),
        (
            "finishSecret",
            &[
                ("DeleteApiKey", 1),
                ("DeleteUsagePlanKey", 1),
                ("DescribeSecret", 2),
                ("GetApiKeys", 1),
                ("GetSecretValue", 3),
                ("GetUsagePlans", 1),
                // AWSCURRENT moves to the token, then AWSPENDING leaves it.
                ("UpdateSecretVersionStage", 2),
            ],
        ),
    ];
    let total: u32 = expected
        .iter()
        .flat_map(|(_, calls)| calls.iter().map(|(_, n)| n))
        .sum();
    eprintln!("  {total} AWS calls in the rotation");
    ensure!(
        total <= 29,
        "{total} calls, more than the 29 the docs state"
    );
    for (step, want) in expected {
        proxy.reset_counts();
        r.handle(&World::event(step, &s.secret, &token)).await?;
        let got = proxy.all_calls();
        let want: std::collections::BTreeMap<String, u32> =
            want.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        eprintln!("  {step}: {got:?}");
        ensure!(got == want, "{step} made {got:?}, expected {want:?}");
        let listed = api_key_rotator::rotation::step_calls(
            api_key_rotator::event::Step::parse(step).ok_or("step")?,
        );
        ensure_listed(step, &got, listed, "STEP_CALLS")?;
    }
    assert_rotated(&w, &s, &token, &[&s.plan]).await?;
    Ok(())
}

/// The real binary, started under the Lambda Runtime API as Lambda starts a bootstrap, with
/// AWS_ENDPOINT_URL at a fault-injecting proxy in front of the emulator: two rotations, the
/// second with a lost CreateApiKey answer and a PutSecretValue that fails past the SDK's
/// retries, re-run as Secrets Manager would. Its logs are JSON and hold no key value and no
/// RotationToken.
async fn the_binary_rotates_under_the_lambda_runtime_api(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let watch = Function::start(
        "binary",
        &[
            ("AWS_ENDPOINT_URL", proxy.endpoint.clone()),
            ("ROTATOR_MAX_ATTEMPTS", "3".into()),
            ("ROTATOR_INITIAL_BACKOFF_MS", "2".into()),
            ("ROTATOR_MAX_BACKOFF_MS", "10".into()),
            ("ALLOWED_TEST_URL_HOSTS", "127.0.0.1".into()),
            ("TEST_URL_BUDGET_MS", "5000".into()),
            ("TEST_URL_INTERVAL_MS", "250".into()),
        ],
    )
    .await?;
    let s = setup_probed(&w).await?;
    let (api, plan, secret) = (s.api.clone(), s.plan.clone(), s.secret.clone());
    let rotation_token = "5f1d0c1e-7a43-4b8e-9d3c-rotation-token-not-to-be-logged";
    crate::support::world::remember(rotation_token);
    let mut values = Vec::new();
    let mut failures = 0;
    for round in 0..2 {
        let token = w.open_rotation(&secret).await?;
        if round == 1 {
            proxy.inject("CreateApiKey", Fault::LoseAnswer, 1);
            proxy.inject("PutSecretValue", Fault::FailBefore, 3);
        }
        let mut done = false;
        for _ in 0..4 {
            let mut failed = false;
            for step in STEPS {
                let mut ev = World::event(step, &secret, &token);
                ev["RotationToken"] = json!(rotation_token);
                if watch.invoke(&ev).await?.is_err() {
                    failures += 1;
                    failed = true;
                    break;
                }
            }
            if !failed {
                done = true;
                break;
            }
        }
        ensure!(
            done,
            "rotation {round} did not complete; see {}",
            watch.log.display()
        );
        assert_rotated(&w, &s, &token, &[&plan]).await?;
        let v =
            str_field(&w.value(&secret, "AWSCURRENT").await?, "api_key_value").unwrap_or_default();
        ensure!(w.call_stage(&api, &v).await? == 200, "new key refused");
        values.push(v);
    }
    ensure!(failures >= 1, "the injected failure did not fail a step");
    ensure!(
        w.call_stage(&api, &values[0]).await? == 403,
        "old key still valid"
    );
    let logs = watch.logs();
    for v in &values {
        ensure!(
            !v.is_empty() && !logs.contains(v.as_str()),
            "a key value reached the logs"
        );
    }
    ensure!(
        !logs.contains(rotation_token),
        "the RotationToken reached the logs"
    );
    let json_lines = logs.lines().filter(|l| l.starts_with('{')).count();
    ensure!(
        json_lines >= 10,
        "expected JSON log lines, got {json_lines}"
    );
    for needle in [
        "created key",
        "attached key to usage plan",
        "stored the new key as AWSPENDING",
        "moved AWSCURRENT",
        "deleted key",
    ] {
        ensure!(logs.contains(needle), "no log line for {needle:?}");
    }
    Ok(())
}

/// Every connect/sendto the local AWS made while all the cases above ran (strace, through
/// LOCALSTACK_TRACE) went to loopback.
async fn the_local_aws_made_no_connection_outside_loopback(_w: Arc<World>) -> R<()> {
    let path = crate::support::localstack::TRACE
        .get()
        .ok_or("no trace path")?;
    let trace = std::fs::read_to_string(path)?;
    let mut addresses = BTreeSet::new();
    for line in trace.lines() {
        for (start, end) in [("inet_addr(\"", "\")"), ("inet_pton(AF_INET6, \"", "\"")] {
            let mut rest = line;
            while let Some(i) = rest.find(start) {
                rest = &rest[i + start.len()..];
                if let Some(j) = rest.find(end) {
                    addresses.insert(rest[..j].to_owned());
                    rest = &rest[j..];
                }
            }
        }
    }
    ensure!(
        trace.contains("connect("),
        "the trace recorded no connect at all: {}",
        path.display()
    );
    ensure!(!addresses.is_empty(), "no IP destination recorded");
    let outside: Vec<_> = addresses
        .iter()
        .filter(|a| !(a.starts_with("127.") || *a == "::1" || a.starts_with("::ffff:127.")))
        .collect();
    eprintln!("  destinations: {addresses:?}");
    ensure!(
        outside.is_empty(),
        "the local AWS reached outside loopback: {outside:?}"
    );
    Ok(())
}

/// A TestUrl that is well-formed but unreachable is a failed test, not a bad input: testSecret
/// errors and nothing is promoted. Once the operator fixes the tag and clears the stuck
/// AWSPENDING label, the next rotation succeeds and retires the abandoned pending key.
async fn a_failed_probe_promotes_nothing_and_the_next_rotation_retires_its_key(
    w: Arc<World>,
) -> R<()> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let key_name = w.unique("partner");
    // Port 9 on loopback: nothing listens there.
    let tags = [
        ("KeyName", key_name.as_str()),
        ("UsagePlan", plan.as_str()),
        ("TestUrl", "http://127.0.0.1:9/health"),
    ];
    let secret = w.create_secret(Some("{}"), &tags).await?;
    let s = Setup {
        api,
        plan: plan.clone(),
        secret: secret.clone(),
        key_name,
    };
    let r = rotator(&w).await?;
    let token = w.open_until_test(&r, &secret).await?;
    let e = r
        .handle(&World::event("testSecret", &secret, &token))
        .await
        .err();
    ensure!(
        e.as_ref().is_some_and(|e| e.kind == ErrorKind::TestFailed),
        "{e:?}"
    );
    ensure!(
        w.value(&secret, "AWSCURRENT").await? == Some(json!({})),
        "something was promoted"
    );
    let abandoned = tied_ids(&w, &secret).await?;
    ensure!(abandoned.len() == 1, "one pending key expected");
    // The operator fixes the tag and clears the stuck rotation.
    w.sm.untag_resource()
        .secret_id(&secret)
        .tag_keys("TestUrl")
        .send()
        .await?;
    w.sm.update_secret_version_stage()
        .secret_id(&secret)
        .version_stage("AWSPENDING")
        .remove_from_version_id(&token)
        .send()
        .await?;
    let (t2, errors) = w.rotate(&r, &secret, 1).await?;
    ensure!(errors.is_empty(), "{errors:?}");
    let new = assert_rotated(&w, &s, &t2, &[&plan]).await?;
    ensure!(
        tied_ids(&w, &secret).await? == BTreeSet::from([new]),
        "the abandoned key was not retired"
    );
    Ok(())
}

/// A manual invoke racing a scheduled rotation: every step delivered twice at the same time,
/// then the rotation re-run until it completes. Exactly one key remains for the token.
///
/// The race is real, not hoped for: the proxy holds each CreateApiKey until both deliveries'
/// calls are in it, so the two createSecret runs each create a key for the token at once (the
/// case checks that two were in flight together), and both go on to store a pending value.
async fn the_same_rotation_delivered_twice_at_once(w: Arc<World>) -> R<()> {
    for _ in 0..3 {
        let s = setup(&w, Some("{}"), &[]).await?;
        let r = rotator(&w).await?;
        w.rotate(&r, &s.secret, 1).await?;
        let old =
            str_field(&w.value(&s.secret, "AWSCURRENT").await?, "api_key_id").unwrap_or_default();
        let proxy = Proxy::start(&w.endpoint).await?;
        let raced = w.rotator(&proxy.endpoint, config()).await?;
        proxy.gate("CreateApiKey", 2, Duration::from_secs(5));
        let token = w.open_rotation(&s.secret).await?;
        let (a, b) = tokio::join!(
            World::run_steps(&raced, &s.secret, &token),
            World::run_steps(&raced, &s.secret, &token)
        );
        ensure!(
            proxy.peak("CreateApiKey") >= 2,
            "the two deliveries' CreateApiKey calls never overlapped (at most {} at once)",
            proxy.peak("CreateApiKey")
        );
        if a.is_err() || b.is_err() {
            World::drive(&r, &s.secret, &token, 3, || {}).await?;
        }
        let new = assert_rotated(&w, &s, &token, &[&s.plan]).await?;
        ensure!(w.key(&old).await?.is_none(), "old key survived");
        ensure!(
            tied_ids(&w, &s.secret).await? == BTreeSet::from([new]),
            "extra keys after a race"
        );
    }
    Ok(())
}

/// Everything the function logged in this run (in-process and the real binary) is searched for
/// every key value the emulator holds or that crossed a proxy or the test world, and for every
/// RotationToken the tests sent.
async fn function_logs_hold_no_key_value_and_no_rotation_token(w: Arc<World>) -> R<()> {
    let mut secrets: BTreeSet<String> = w
        .all_keys()
        .await?
        .iter()
        .filter_map(|k| k.value().map(str::to_owned))
        .collect();
    secrets.extend(
        crate::support::proxy::SEEN_VALUES
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    );
    secrets.extend(
        crate::support::world::SEEN
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    );
    secrets.retain(|v| v.len() >= 20);
    let mut logs = String::new();
    for path in crate::support::logs::all() {
        logs.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    ensure!(
        logs.lines().count() > 100,
        "too little log output to scan ({} lines)",
        logs.lines().count()
    );
    ensure!(
        logs.contains("stored the new key as AWSPENDING"),
        "the scan did not see the function's logs"
    );
    let hits: Vec<&String> = secrets
        .iter()
        .filter(|v| logs.contains(v.as_str()))
        .collect();
    eprintln!(
        "  log scan: {} lines, {} secret strings searched, {} hits",
        logs.lines().count(),
        secrets.len(),
        hits.len()
    );
    ensure!(
        hits.is_empty(),
        "{} secret strings found in the logs",
        hits.len()
    );
    Ok(())
}
