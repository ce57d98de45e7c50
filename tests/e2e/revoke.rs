//! `revoke SECRET [--apply] [--wait SECONDS]`, end to end: the real binary, run as an operator
//! runs it, against the local AWS, behind the test's proxy (which counts its calls).
//!
//! Nothing runs the rotation function here when the command calls RotateSecret (the local
//! function is a stub, so the new `revoke-…` version is left AWSPENDING without a value). The
//! test plays Secrets Manager: once the command is waiting, it delivers the four steps for the
//! command's token to the real binary under the Lambda Runtime API, and the command sees the
//! rotation complete and retires every other key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_key_rotator::config::OldKeyAction;
use api_key_rotator::grace::RETIRE_TAG_PREFIX;
use api_key_rotator::ops::REVOKE_TOKEN_PREFIX;
use api_key_rotator::AwsRotator;
use serde_json::{json, Value};

use crate::cases::rotator;
use crate::ensure;
use crate::operator::{cli_with, move_stage, no_key_values, Run};
use crate::ownership::set_tag;
use crate::support::proxy::{Fault, Proxy};
use crate::support::runtime::Function;
use crate::support::world::{str_field, Snapshot, World, STEPS};
use crate::support::R;
use crate::TestFn;

const AWSCURRENT: &str = "AWSCURRENT";
const AWSPENDING: &str = "AWSPENDING";
const AWSPREVIOUS: &str = "AWSPREVIOUS";
/// How long a test lets the command wait for the rotation it delivers.
const WAIT: &str = "60";

pub fn all() -> Vec<(&'static str, TestFn)> {
    vec![
        ("revoke_retires_every_other_key_at_once", |w| {
            Box::pin(revoke_retires_every_other_key_at_once(w))
        }),
        ("revoke_interrupted_then_run_again", |w| {
            Box::pin(revoke_interrupted_then_run_again(w))
        }),
        ("revoke_refuses_while_another_rotation_is_open", |w| {
            Box::pin(revoke_refuses_while_another_rotation_is_open(w))
        }),
        ("revoke_refuses_invalid_settings", |w| {
            Box::pin(revoke_refuses_invalid_settings(w))
        }),
        (
            "revoke_keeps_a_labelled_key_and_the_next_revoke_rotates",
            |w| Box::pin(revoke_keeps_a_labelled_key_and_the_next_revoke_rotates(w)),
        ),
    ]
}

/// A secret rotated twice from a hand-made key: under a grace period its two earlier keys are
/// still working and scheduled (the first held by no labelled version, the second by
/// AWSPREVIOUS), beside the current key.
struct Revokable {
    arn: String,
    api: String,
    plan: String,
    /// Every key the secret owns, oldest first: the hand-made key, the first rotation's, the
    /// current one.
    keys: Vec<String>,
    /// Their values, for the data plane (never printed).
    values: BTreeMap<String, String>,
}

/// A `Revokable` under `policy` with this GracePeriod tag, on `on`'s API and plan when given
/// (else its own).
async fn revokable(
    w: &World,
    r: &AwsRotator,
    policy: OldKeyAction,
    grace: Option<&str>,
    on: Option<(&str, &str)>,
) -> R<Revokable> {
    let (api, plan) = match on {
        Some((api, plan)) => (api.to_owned(), plan.to_owned()),
        None => {
            let api = w.create_api().await?;
            let plan = w.create_plan(Some(&api)).await?;
            (api, plan)
        }
    };
    let key_name = w.unique("revoked");
    let (first, first_value) = w.create_key(&key_name).await?;
    w.attach(&plan, &first).await?;
    let value = json!({"api_key_id": first, "api_key_value": first_value,
        "key_name": key_name, "usage_plan_ids": [plan]});
    let mut tags = vec![
        ("KeyName", key_name.as_str()),
        ("UsagePlan", plan.as_str()),
        ("OldKeyAction", policy.as_str()),
    ];
    if let Some(g) = grace {
        tags.push(("GracePeriod", g));
    }
    let arn = w.create_secret(Some(&value.to_string()), &tags).await?;
    let mut keys = vec![first.clone()];
    let mut values = BTreeMap::from([(first, first_value)]);
    for _ in 0..2 {
        let (_, errors) = w.rotate(r, &arn, 1).await?;
        ensure!(errors.is_empty(), "a set-up rotation failed: {errors:?}");
        let current = w.value(&arn, AWSCURRENT).await?;
        let (Some(id), Some(value)) = (
            str_field(&current, "api_key_id"),
            str_field(&current, "api_key_value"),
        ) else {
            return Err("a set-up rotation left no key in AWSCURRENT".into());
        };
        keys.push(id.clone());
        values.insert(id, value);
    }
    Ok(Revokable {
        arn,
        api,
        plan,
        keys,
        values,
    })
}

/// The secret's tags.
async fn tags(w: &World, arn: &str) -> R<BTreeMap<String, String>> {
    let d = w.sm.describe_secret().secret_id(arn).send().await?;
    Ok(d.tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// The key ids of the secret's retirement schedule.
async fn scheduled(w: &World, arn: &str) -> R<BTreeSet<String>> {
    Ok(tags(w, arn)
        .await?
        .keys()
        .filter_map(|k| k.strip_prefix(RETIRE_TAG_PREFIX).map(str::to_owned))
        .collect())
}

/// The secret's `revoke-…` versions.
async fn revoke_versions(w: &World, arn: &str) -> R<Vec<String>> {
    Ok(w.versions(arn)
        .await?
        .into_keys()
        .filter(|v| v.starts_with(REVOKE_TOKEN_PREFIX))
        .collect())
}

/// Everything a run could change on a secret: the snapshot (every key in the account, the
/// plan's keys, the versions, the current value) and the tags.
#[derive(Debug, PartialEq, Eq)]
struct Frozen {
    snapshot: Snapshot,
    tags: BTreeMap<String, String>,
}

async fn frozen(w: &World, arn: &str, plan: &str) -> R<Frozen> {
    Ok(Frozen {
        snapshot: w.snapshot(arn, &[plan]).await?,
        tags: tags(w, arn).await?,
    })
}

/// What another secret holds: its tags and versions, and each of its keys' state (exists,
/// enabled, on its plan).
async fn holdings(w: &World, s: &Revokable) -> R<impl PartialEq> {
    let on_plan = w.plan_keys(&s.plan).await?;
    let mut keys = BTreeMap::new();
    for id in &s.keys {
        let enabled = w.key(id).await?.map(|k| k.enabled());
        keys.insert(id.clone(), (enabled, on_plan.contains(id)));
    }
    Ok((tags(w, &s.arn).await?, w.versions(&s.arn).await?, keys))
}

/// The one entry of a `--json` run.
fn entry(run: &Run) -> &Value {
    &run.json["secrets"][0]
}

/// What a `--json` revoke says it did (or plans) to each key.
fn outcomes(run: &Run) -> BTreeMap<String, String> {
    entry(run)["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            (
                k["id"].as_str().unwrap_or_default().to_owned(),
                k["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn rotation_state(run: &Run) -> (&str, Option<&str>, bool) {
    let r = &entry(run)["rotation"];
    (
        r["state"].as_str().unwrap_or_default(),
        r["version"].as_str(),
        r["completed"] == true,
    )
}

/// The real binary under the Lambda Runtime API, on the local AWS directly (its calls are not
/// the command's).
async fn function(w: &World, name: &str) -> R<Function> {
    Function::start(
        name,
        &[
            ("AWS_ENDPOINT_URL", w.endpoint.clone()),
            ("ROTATOR_MAX_ATTEMPTS", "3".into()),
            ("ROTATOR_INITIAL_BACKOFF_MS", "2".into()),
            ("ROTATOR_MAX_BACKOFF_MS", "10".into()),
        ],
    )
    .await
}

/// `api-key-rotator ARGS` through the proxy, its calls counted from zero.
async fn run(proxy: &Proxy, args: &[&str]) -> R<Run> {
    proxy.reset_counts();
    cli_with(&proxy.endpoint, &[], args).await
}

/// The four steps for `token`, delivered to the function as Secrets Manager delivers them, the
/// whole rotation again after a failed step (three tries).
async fn deliver_steps(f: &Function, secret: &str, token: &str) -> R<()> {
    let mut errors = Vec::new();
    for _ in 0..3 {
        let mut failed = None;
        for step in STEPS {
            if let Err(e) = f.invoke(&World::event(step, secret, token)).await? {
                failed = Some(format!("{step}: {e}"));
                break;
            }
        }
        match failed {
            None => return Ok(()),
            Some(e) => errors.push(e),
        }
    }
    Err(format!("the revoke's rotation did not complete in 3 tries: {errors:?}").into())
}

/// Secrets Manager's side of the command's rotation: once the command is waiting (it has read
/// the secret more often than its inspection does, `inspection` times) and a `revoke-…`
/// version carries AWSPENDING, the steps for that token. The token.
async fn deliver(
    w: &World,
    f: &Function,
    proxy: &Proxy,
    secret: &str,
    inspection: u32,
) -> R<String> {
    let until = Instant::now() + Duration::from_secs(30);
    let token = loop {
        if proxy.calls("DescribeSecret") > inspection {
            let open = w.versions(secret).await?.into_iter().find(|(v, s)| {
                v.starts_with(REVOKE_TOKEN_PREFIX)
                    && s.iter().any(|l| l == AWSPENDING)
                    && !s.iter().any(|l| l == AWSCURRENT)
            });
            if let Some((token, _)) = open {
                break token;
            }
        }
        ensure!(
            Instant::now() < until,
            "no revoke- version carried AWSPENDING while the command waited (DescribeSecret calls: {})",
            proxy.calls("DescribeSecret")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    deliver_steps(f, secret, &token).await?;
    Ok(token)
}

/// `revoke SECRET --apply --wait 60` (and `extra`), with the test delivering the rotation the
/// command waits for. The run and the token delivered.
async fn revoke_delivered(
    w: &World,
    f: &Function,
    proxy: &Proxy,
    secret: &str,
    inspection: u32,
) -> R<(Run, String)> {
    proxy.reset_counts();
    let args = ["--json", "revoke", secret, "--apply", "--wait", WAIT];
    let cli = cli_with(&proxy.endpoint, &[], &args);
    let delivery = deliver(w, f, proxy, secret, inspection);
    tokio::pin!(cli, delivery);
    tokio::select! {
        run = &mut cli => {
            let run = run?;
            Err(format!(
                "revoke ended (exit {}) before the test delivered its rotation: {}",
                run.code, run.stdout
            )
            .into())
        }
        token = &mut delivery => {
            let token = token?;
            Ok((cli.await?, token))
        }
    }
}

/// The DescribeSecret calls of the command's inspection of the secret as it stands, from a
/// dry run (which must change nothing): the dry run and the count.
async fn dry_run(w: &World, proxy: &Proxy, s: &Revokable) -> R<(Run, u32)> {
    let before = frozen(w, &s.arn, &s.plan).await?;
    let dry = run(proxy, &["--json", "revoke", &s.arn]).await?;
    let inspection = proxy.calls("DescribeSecret");
    ensure!(
        proxy.calls("RotateSecret") == 0 && before == frozen(w, &s.arn, &s.plan).await?,
        "the dry run changed something: {}",
        dry.stdout
    );
    ensure!(
        dry.code == 0 && entry(&dry)["dry_run"] == true && entry(&dry)["refused"].is_null(),
        "the dry run: {}",
        dry.stdout
    );
    Ok((dry, inspection))
}

/// After a completed revoke: AWSCURRENT is on `token` and names `new_key`, which works; every
/// other key the secret had is refused by the data plane, deleted or (`disabled`) disabled;
/// no schedule entry is left; the secret has exactly one `revoke-…` version.
async fn assert_revoked(
    w: &World,
    s: &Revokable,
    token: &str,
    new_key: Option<&str>,
    disabled: &[&str],
) -> R<()> {
    let current = w.value(&s.arn, AWSCURRENT).await?;
    let current_key = str_field(&current, "api_key_id").ok_or("no key in AWSCURRENT")?;
    ensure!(
        new_key == Some(current_key.as_str()),
        "new_key_id {new_key:?} is not AWSCURRENT's key {current_key}"
    );
    ensure!(
        !s.keys.contains(&current_key),
        "AWSCURRENT still holds one of the keys revoked"
    );
    let versions = w.versions(&s.arn).await?;
    ensure!(
        versions
            .get(token)
            .is_some_and(|l| l.iter().any(|x| x == AWSCURRENT)),
        "AWSCURRENT is not on the revoke's version {token}: {versions:?}"
    );
    ensure!(
        !versions.values().any(|l| l.iter().any(|x| x == AWSPENDING)),
        "AWSPENDING left: {versions:?}"
    );
    ensure!(
        revoke_versions(w, &s.arn).await? == vec![token.to_owned()],
        "more than one revoke- version: {versions:?}"
    );
    let new_value = str_field(&current, "api_key_value").unwrap_or_default();
    ensure!(
        w.call_stage(&s.api, &new_value).await? == 200,
        "the new key is refused"
    );
    for id in &s.keys {
        let value = s.values.get(id).ok_or("no value kept")?;
        ensure!(
            w.call_stage(&s.api, value).await? == 403,
            "the old key {id} still works after the revoke"
        );
        let key = w.key(id).await?;
        if disabled.contains(&id.as_str()) {
            ensure!(
                key.is_some_and(|k| !k.enabled()),
                "the old key {id} is not present and disabled"
            );
        } else {
            ensure!(key.is_none(), "the old key {id} still exists");
        }
    }
    ensure!(
        scheduled(w, &s.arn).await?.is_empty(),
        "schedule entries left: {:?}",
        scheduled(w, &s.arn).await?
    );
    Ok(())
}

/// Case 1. A dry run prints the plan and changes nothing; `--apply` rotates, waits for the
/// rotation, then retires every other key at once, whatever its grace: under `delete` all are
/// deleted; under `disable` and `keep-previous` the previous key is disabled and the keys no
/// version holds are deleted. Another secret on the same plan is untouched.
async fn revoke_retires_every_other_key_at_once(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let f = function(&w, "revoke-all").await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let first = revokable(&w, &r, OldKeyAction::Delete, Some("1h"), None).await?;
    let other = revokable(
        &w,
        &r,
        OldKeyAction::Delete,
        Some("1h"),
        Some((&first.api, &first.plan)),
    )
    .await?;
    let other_before = holdings(&w, &other).await?;
    let mut runs = Vec::new();
    let cases = [
        (OldKeyAction::Delete, Some("1h")),
        (OldKeyAction::Disable, Some("1h")),
        (OldKeyAction::KeepPrevious, None),
    ];
    let mut given = Some(first);
    for (policy, grace) in cases {
        let s = match given.take() {
            Some(s) => s,
            None => revokable(&w, &r, policy, grace, None).await?,
        };
        ensure!(
            s.keys.iter().collect::<BTreeSet<_>>().len() == 3 && s.values.len() == 3,
            "{policy}: set-up keys {:?}",
            s.keys
        );
        // Before: with a grace the two earlier keys are scheduled and still work;
        // keep-previous deleted the first at the second rotation and keeps the previous one.
        let alive: Vec<&String> = match grace {
            Some(_) => s.keys.iter().collect(),
            None => s.keys[1..].iter().collect(),
        };
        for id in &alive {
            ensure!(
                w.call_stage(&s.api, &s.values[*id]).await? == 200,
                "{policy}: the key {id} does not work before the revoke"
            );
        }
        let want_scheduled: BTreeSet<String> = match grace {
            Some(_) => s.keys[..2].iter().cloned().collect(),
            None => BTreeSet::new(),
        };
        ensure!(
            scheduled(&w, &s.arn).await? == want_scheduled,
            "{policy}: schedule before the revoke {:?}",
            scheduled(&w, &s.arn).await?
        );
        let owned: BTreeSet<String> = alive.iter().map(|id| (*id).clone()).collect();

        let (dry, inspection) = dry_run(&w, &proxy, &s).await?;
        let planned: BTreeMap<String, String> = owned
            .iter()
            .map(|id| (id.clone(), "planned".to_owned()))
            .collect();
        ensure!(
            rotation_state(&dry) == ("would-start", None, false) && outcomes(&dry) == planned,
            "{policy}: the plan {}",
            dry.stdout
        );
        let text = run(&proxy, &["revoke", &s.arn]).await?;
        ensure!(
            text.code == 0
                && text
                    .stdout
                    .contains("plan (dry run; --apply to carry it out)")
                && owned.iter().all(|id| text.stdout.contains(id.as_str())),
            "{policy}: the plan as text: {}",
            text.stdout
        );

        let (apply, token) = revoke_delivered(&w, &f, &proxy, &s.arn, inspection).await?;
        ensure!(
            apply.code == 0 && rotation_state(&apply) == ("started", Some(token.as_str()), true),
            "{policy}: --apply: {}",
            apply.stdout
        );
        // With a grace, the two keys the set-up rotations scheduled: the revoke's own
        // finishSecret retires the key it moves AWSCURRENT from at once, unscheduled.
        let untags = if grace.is_some() { 2 } else { 0 };
        ensure!(
            proxy.calls("RotateSecret") == 1
                && proxy.calls("secretsmanager:UntagResource") == untags,
            "{policy}: RotateSecret {} and UntagResource {} calls, want 1 and {untags}",
            proxy.calls("RotateSecret"),
            proxy.calls("secretsmanager:UntagResource"),
        );
        // The key that was current is AWSPREVIOUS's now: disabled unless the policy deletes.
        let previous = s.keys[2].as_str();
        let disabled: Vec<&str> = match policy {
            OldKeyAction::Delete => vec![],
            _ => vec![previous],
        };
        // Under keep-previous (no grace) the revoke's own finishSecret deleted the key that
        // was previous (no version holds it once AWSPREVIOUS moves): the command retires the
        // rest. With a grace, the revoke's finishSecret retired the key that was current at
        // once, by the policy (a revoke's rotation gives no grace): deleted, or disabled
        // already when the command comes to it.
        let by_finish = grace.is_some();
        let want: BTreeMap<String, String> = owned
            .iter()
            .filter(|id| grace.is_some() || *id == previous)
            .filter(|id| !(by_finish && policy == OldKeyAction::Delete && *id == previous))
            .map(|id| {
                let outcome = if disabled.contains(&id.as_str()) {
                    if by_finish {
                        "disabled already"
                    } else {
                        "disabled"
                    }
                } else {
                    "deleted"
                };
                (id.clone(), outcome.to_owned())
            })
            .collect();
        ensure!(
            outcomes(&apply) == want,
            "{policy}: outcomes {:?}, want {want:?}",
            outcomes(&apply)
        );
        ensure!(
            str_field(&w.value(&s.arn, AWSPREVIOUS).await?, "api_key_id").as_deref()
                == Some(previous),
            "{policy}: AWSPREVIOUS does not hold the key that was current"
        );
        assert_revoked(
            &w,
            &s,
            &token,
            entry(&apply)["new_key_id"].as_str(),
            &disabled,
        )
        .await?;
        ensure!(
            tags(&w, &s.arn).await?.contains_key("OldKeyAction"),
            "{policy}: the secret's own tags went"
        );
        ensure!(
            holdings(&w, &other).await? == other_before,
            "{policy}: the other secret's keys, versions or tags changed"
        );
        for (id, v) in &other.values {
            ensure!(
                w.call_stage(&other.api, v).await? == 200,
                "{policy}: the other secret's key {id} stopped working"
            );
        }
        runs.extend([dry, text, apply]);
    }
    no_key_values(&w, &runs.iter().collect::<Vec<_>>()).await
}

/// Case 2. A revoke whose rotation does not complete within `--wait` exits 1 and retires
/// nothing; run again, it waits for its own rotation (no second RotateSecret) and finishes. A
/// revoke interrupted after its rotation completed (here: the first run timed out, then the
/// rotation completed) is finished by the next run without rotating again, also after a run
/// whose retirements failed half-way.
async fn revoke_interrupted_then_run_again(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let f = function(&w, "revoke-again").await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let mut runs = Vec::new();

    // Timed out, then resumed.
    let s = revokable(&w, &r, OldKeyAction::Delete, Some("1h"), None).await?;
    let before_keys = w.snapshot(&s.arn, &[&s.plan]).await?.keys;
    let timed_out = run(
        &proxy,
        &["--json", "revoke", &s.arn, "--apply", "--wait", "5"],
    )
    .await?;
    let (state, version, completed) = rotation_state(&timed_out);
    let token = version.unwrap_or_default().to_owned();
    ensure!(
        timed_out.code == 1
            && state == "started"
            && !completed
            && token.starts_with(REVOKE_TOKEN_PREFIX)
            && entry(&timed_out)["failed"].as_str().is_some_and(|m| {
                m.contains("has not completed within 5 s") && m.contains("Run revoke again")
            })
            && outcomes(&timed_out).is_empty(),
        "a revoke whose rotation does not complete: {}",
        timed_out.stdout
    );
    ensure!(
        w.snapshot(&s.arn, &[&s.plan]).await?.keys == before_keys
            && scheduled(&w, &s.arn).await?.len() == 2,
        "the timed-out revoke retired something"
    );
    ensure!(
        w.versions(&s.arn)
            .await?
            .get(&token)
            .is_some_and(|l| l == &vec![AWSPENDING.to_owned()]),
        "the timed-out revoke's rotation is not left open"
    );
    // createSecret ran for it: the plan retires every old key, and not the one it made.
    if let Err(e) = f
        .invoke(&World::event("createSecret", &s.arn, &token))
        .await?
    {
        return Err(format!("createSecret for the revoke's token: {e}").into());
    }
    let (dry, inspection) = dry_run(&w, &proxy, &s).await?;
    ensure!(
        rotation_state(&dry) == ("resumed", Some(token.as_str()), false)
            && outcomes(&dry).keys().cloned().collect::<BTreeSet<_>>()
                == s.keys.iter().cloned().collect(),
        "the plan after a timed-out revoke: {}",
        dry.stdout
    );
    let (again, delivered) = revoke_delivered(&w, &f, &proxy, &s.arn, inspection).await?;
    ensure!(
        delivered == token,
        "the test delivered {delivered}, not the first run's {token}"
    );
    ensure!(
        again.code == 0
            && rotation_state(&again) == ("resumed", Some(token.as_str()), true)
            && proxy.calls("RotateSecret") == 0,
        "run again, revoke must wait for its own rotation, not start one (RotateSecret calls {}): {}",
        proxy.calls("RotateSecret"),
        again.stdout
    );
    assert_revoked(&w, &s, &token, entry(&again)["new_key_id"].as_str(), &[]).await?;
    runs.extend([timed_out, dry, again]);

    // The rotation completed, the retirements did not: finished without rotating again.
    let s = revokable(&w, &r, OldKeyAction::Delete, Some("1h"), None).await?;
    let first = run(
        &proxy,
        &["--json", "revoke", &s.arn, "--apply", "--wait", "1"],
    )
    .await?;
    let token = rotation_state(&first).1.unwrap_or_default().to_owned();
    ensure!(
        first.code == 1 && token.starts_with(REVOKE_TOKEN_PREFIX),
        "revoke --wait 1: {}",
        first.stdout
    );
    deliver_steps(&f, &s.arn, &token).await?;
    // The revoke's finishSecret retired the key it moved AWSCURRENT from at once (a revoke's
    // rotation gives no grace: the leaked key dies with the rotation even if the command does
    // not come back); the older keys are still in their grace, scheduled.
    let (older, leaked) = s.keys.split_at(s.keys.len() - 1);
    let older: BTreeSet<String> = older.iter().cloned().collect();
    ensure!(
        scheduled(&w, &s.arn).await? == older && w.key(&leaked[0]).await?.is_none(),
        "after the revoke's rotation: the key current before it deleted, the older ones scheduled"
    );
    let versions = w.versions(&s.arn).await?;
    let (dry, _) = dry_run(&w, &proxy, &s).await?;
    ensure!(
        rotation_state(&dry) == ("finished-earlier", Some(token.as_str()), false)
            && outcomes(&dry).keys().cloned().collect::<BTreeSet<_>>() == older,
        "the plan after the revoke's rotation completed: {}",
        dry.stdout
    );
    // A run whose second retirement fails: the first key is deleted, then it stops.
    proxy.inject_after(None, "DeleteApiKey", 1, Fault::FailBefore, u32::MAX);
    let half = run(
        &proxy,
        &["--json", "revoke", &s.arn, "--apply", "--wait", "5"],
    )
    .await?;
    proxy.clear();
    let deleted: Vec<&String> = outcomes(&half)
        .into_iter()
        .filter(|(_, o)| o == "deleted")
        .map(|(id, _)| s.keys.iter().find(|k| **k == id))
        .collect::<Option<Vec<_>>>()
        .ok_or("an outcome for a key the secret did not have")?;
    ensure!(
        half.code == 1
            && rotation_state(&half) == ("finished-earlier", Some(token.as_str()), true)
            && deleted.len() == 1
            && entry(&half)["failed"]
                .as_str()
                .is_some_and(|m| m.contains("retiring the key")),
        "a revoke whose second retirement fails: {}",
        half.stdout
    );
    let finish = run(
        &proxy,
        &["--json", "revoke", &s.arn, "--apply", "--wait", "5"],
    )
    .await?;
    ensure!(
        finish.code == 0
            && rotation_state(&finish) == ("finished-earlier", Some(token.as_str()), true)
            && proxy.calls("RotateSecret") == 0
            && outcomes(&finish).len() == 1
            && outcomes(&finish).values().all(|o| o == "deleted"),
        "run again after the rotation completed, revoke must finish the retirements without rotating (RotateSecret calls {}): {}",
        proxy.calls("RotateSecret"),
        finish.stdout
    );
    ensure!(
        w.versions(&s.arn).await? == versions,
        "the re-run moved a label or made a version"
    );
    assert_revoked(&w, &s, &token, entry(&finish)["new_key_id"].as_str(), &[]).await?;
    runs.extend([first, dry, half, finish]);
    no_key_values(&w, &runs.iter().collect::<Vec<_>>()).await
}

/// Case 3. While a rotation of another token is open, revoke refuses (dry run and --apply) and
/// changes nothing: it does not race a rotation it did not start.
async fn revoke_refuses_while_another_rotation_is_open(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let s = revokable(&w, &r, OldKeyAction::Delete, Some("1h"), None).await?;
    let open = w.open_rotation(&s.arn).await?;
    let before = frozen(&w, &s.arn, &s.plan).await?;
    let mut runs = Vec::new();
    for args in [
        vec!["--json", "revoke", &s.arn],
        vec!["--json", "revoke", &s.arn, "--apply", "--wait", "5"],
    ] {
        let refused = run(&proxy, &args).await?;
        ensure!(
            refused.code == 1
                && entry(&refused)["refused"].as_str().is_some_and(|m| {
                    m.contains("another rotation is open")
                        && m.contains(&format!("--remove-from-version-id {open}"))
                })
                && proxy.calls("RotateSecret") == 0,
            "{args:?} with a rotation open: {}",
            refused.stdout
        );
        ensure!(
            before == frozen(&w, &s.arn, &s.plan).await?,
            "{args:?} with a rotation open changed something"
        );
        runs.push(refused);
    }
    no_key_values(&w, &runs.iter().collect::<Vec<_>>()).await
}

/// Case 4. Settings a rotation would fail on are refused before any change, with no RotateSecret
/// call: a GracePeriod over 7 days, and a GracePeriod with keep-previous.
async fn revoke_refuses_invalid_settings(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let s = revokable(&w, &r, OldKeyAction::Delete, None, None).await?;
    let mut runs = Vec::new();
    for (policy, grace, code) in [
        ("delete", "8d", "grace-period-invalid"),
        ("keep-previous", "1h", "grace-period-with-keep-previous"),
    ] {
        set_tag(&w, &s.arn, "OldKeyAction", policy).await?;
        set_tag(&w, &s.arn, "GracePeriod", grace).await?;
        let before = frozen(&w, &s.arn, &s.plan).await?;
        let refused = run(
            &proxy,
            &["--json", "revoke", &s.arn, "--apply", "--wait", "5"],
        )
        .await?;
        ensure!(
            refused.code == 1
                && entry(&refused)["refused"]
                    .as_str()
                    .is_some_and(|m| m.contains("settings are not valid") && m.contains(code)),
            "GracePeriod={grace} under {policy}: {}",
            refused.stdout
        );
        ensure!(
            proxy.calls("RotateSecret") == 0 && before == frozen(&w, &s.arn, &s.plan).await?,
            "GracePeriod={grace} under {policy}: refused after a change (RotateSecret calls {})",
            proxy.calls("RotateSecret")
        );
        runs.push(refused);
    }
    no_key_values(&w, &runs.iter().collect::<Vec<_>>()).await
}

/// A key a version with a custom label holds is kept by a revoke (and reported), and does not
/// make the next revoke take itself for the unfinished one: the next revoke rotates again and
/// retires the key the first one made.
async fn revoke_keeps_a_labelled_key_and_the_next_revoke_rotates(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let f = function(&w, "revoke-labelled").await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let s = revokable(&w, &r, OldKeyAction::Delete, Some("1h"), None).await?;
    let held = s.keys[1].clone();
    let versions = w.versions(&s.arn).await?;
    let labelled = versions
        .iter()
        .find(|(_, l)| l.iter().any(|x| x == AWSPREVIOUS))
        .map(|(v, _)| v.clone())
        .ok_or("no AWSPREVIOUS version")?;
    move_stage(&w, &s.arn, "RESCUE", Some(&labelled), None).await?;
    let mut runs = Vec::new();
    let mut tokens = Vec::new();
    let mut revoked = s.keys.clone();
    for round in ["first", "second"] {
        let (dry, inspection) = dry_run(&w, &proxy, &s).await?;
        ensure!(
            rotation_state(&dry) == ("would-start", None, false),
            "{round} revoke: the plan must be a new rotation: {}",
            dry.stdout
        );
        let (apply, token) = revoke_delivered(&w, &f, &proxy, &s.arn, inspection).await?;
        ensure!(
            apply.code == 0
                && rotation_state(&apply) == ("started", Some(token.as_str()), true)
                && proxy.calls("RotateSecret") == 1,
            "{round} revoke: {}",
            apply.stdout
        );
        let kept = entry(&apply)["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["id"] == held.as_str())
            .ok_or("the labelled key is not reported")?;
        ensure!(
            kept["outcome"] == "kept" && kept["kept_because"].is_string(),
            "{round} revoke: the labelled key: {kept}"
        );
        ensure!(
            w.key(&held).await?.is_some_and(|k| k.enabled()),
            "{round} revoke: the key the custom label holds was retired"
        );
        let new_key = entry(&apply)["new_key_id"]
            .as_str()
            .ok_or("no new_key_id")?
            .to_owned();
        for id in revoked.iter().filter(|id| **id != held) {
            ensure!(
                w.key(id).await?.is_none(),
                "{round} revoke: the key {id} still exists"
            );
        }
        let current = w.value(&s.arn, AWSCURRENT).await?;
        ensure!(
            str_field(&current, "api_key_id").as_deref() == Some(new_key.as_str()),
            "{round} revoke: AWSCURRENT does not hold new_key_id"
        );
        revoked.push(new_key);
        tokens.push(token);
        runs.extend([dry, apply]);
    }
    ensure!(
        revoke_versions(&w, &s.arn)
            .await?
            .into_iter()
            .collect::<BTreeSet<_>>()
            == tokens.iter().cloned().collect(),
        "the revoke- versions are not the two revokes' rotations"
    );
    no_key_values(&w, &runs.iter().collect::<Vec<_>>()).await
}
