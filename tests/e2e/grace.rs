//! The grace period end to end (issue 19): finishSecret schedules the previous key's retirement
//! on the secret's tags, and the sweep, delivered through the Lambda Runtime API every second as
//! the EventBridge rule delivers it, retires each key once its due time has passed, by the part it
//! plays then. Grace periods are compressed to seconds.
//!
//! The sweep acts on every due secret of the account, so each case runs in an account of its own
//! (`World::in_own_account`): no other case's secrets are swept, or counted, with it.
//!
//! While rotations and sweeps run, an observer reads the due times from the secret's schedule
//! tags (`api-key-rotator:retire:<id>`), sends the sweep's event, and right after each sweep looks
//! at every scheduled key on API Gateway (exists, enabled) and, when the case has a stage, on
//! the data plane. The checks read that history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_key_rotator::grace::{schedule_tag, Schedule, RETIRE_TAG_PREFIX};
use api_key_rotator::rotation::{SWEEP_ACTION, SWEEP_CALLS};
use api_key_rotator::ErrorKind;
use serde_json::{json, Value};

use crate::cases::{ensure_listed, refused, rotator, setup};
use crate::ensure;
use crate::operator::{cli, step_actions, with_stage};
use crate::support::propagation::{configured_delay, Propagation};
use crate::support::proxy::Proxy;
use crate::support::runtime::Function;
use crate::support::world::{str_field, World};
use crate::support::R;
use crate::zero_downtime::{play_on, report, setup_delayed, OnRefusal, Scenario};

/// How often the observer sends the sweep's event (after each sweep and look).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long the observer waits, once told to finish, for every key to be settled.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);

/// Seconds since the epoch, with a fraction: due times are whole seconds on the same clock.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn sweep_event() -> Value {
    json!({ "Action": SWEEP_ACTION })
}

/// The real binary under the Lambda Runtime API, in the world's account, talking to
/// `endpoint` (the local AWS, or the fault proxy in front of it).
async fn sweeper(w: &World, name: &str, endpoint: &str) -> R<Function> {
    Function::start(
        name,
        &[
            ("AWS_ENDPOINT_URL", endpoint.to_owned()),
            ("AWS_ACCESS_KEY_ID", w.access_key.clone()),
            ("ROTATOR_MAX_ATTEMPTS", "3".into()),
            ("ROTATOR_INITIAL_BACKOFF_MS", "2".into()),
            ("ROTATOR_MAX_BACKOFF_MS", "10".into()),
            ("ALLOWED_TEST_URL_HOSTS", "127.0.0.1".into()),
        ],
    )
    .await
}

/// The secret's tags.
async fn tags_of(w: &World, secret: &str) -> R<Vec<(String, String)>> {
    let d = w.sm.describe_secret().secret_id(secret).send().await?;
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

/// The secret's retirement schedule, from its tags.
async fn schedule_of(w: &World, secret: &str) -> R<Schedule> {
    Ok(Schedule::from_tags(&tags_of(w, secret).await?))
}

/// The key AWSCURRENT's value names.
async fn current_key(w: &World, secret: &str) -> R<String> {
    str_field(&w.value(secret, "AWSCURRENT").await?, "api_key_id")
        .ok_or_else(|| format!("{secret}: no api_key_id in AWSCURRENT").into())
}

/// One sweep as the observer sent it, and what the function answered.
#[derive(Debug, Clone)]
struct SweepRun {
    started: f64,
    ended: f64,
    answer: Result<Value, Value>,
}

impl SweepRun {
    /// It answered OK and left no secret to the next run (each case has its account to
    /// itself: every due secret was its own).
    fn complete(&self) -> bool {
        self.answer.is_ok() && self.count("left") == 0
    }
    fn count(&self, field: &str) -> u64 {
        self.answer
            .as_ref()
            .ok()
            .and_then(|a| a[field].as_u64())
            .unwrap_or(0)
    }
}

/// What one look at a scheduled key found.
#[derive(Debug, Clone)]
struct Look {
    started: f64,
    ended: f64,
    exists: bool,
    enabled: bool,
    /// The data plane's answer to a request with the key, when the case has a stage.
    status: Option<u16>,
}

impl Look {
    /// The key exists, is enabled, and (when probed) the gateway answers 200.
    fn working(&self) -> bool {
        self.exists && self.enabled && self.status.is_none_or(|s| s == 200)
    }
}

/// A key a secret's schedule named, with every look at it.
#[derive(Debug, Clone)]
struct Watched {
    secret: String,
    id: String,
    /// The due time its schedule tag holds (the last one read: finishSecret writes it twice).
    due: i64,
    value: Option<String>,
    api: Option<String>,
    looks: Vec<Look>,
}

/// The history the observer kept.
#[derive(Debug, Default)]
struct Observed {
    keys: Vec<Watched>,
    sweeps: Vec<SweepRun>,
}

impl Observed {
    /// The keys of `secret`'s schedule, earliest due first.
    fn of(&self, secret: &str) -> Vec<&Watched> {
        let mut keys: Vec<&Watched> = self.keys.iter().filter(|k| k.secret == secret).collect();
        keys.sort_by_key(|k| k.due);
        keys
    }

    /// Watches `id` of `t`'s secret from now on, due at `due` (the last due time read wins:
    /// finishSecret writes it twice).
    async fn watch(&mut self, w: &World, t: &Target, id: &str, due: i64) -> R<()> {
        if let Some(k) = self.keys.iter_mut().find(|k| k.id == id) {
            k.due = due;
            return Ok(());
        }
        let value = match &t.api {
            Some(_) => w.key(id).await?.and_then(|k| k.value().map(str::to_owned)),
            None => None,
        };
        self.keys.push(Watched {
            secret: t.secret.clone(),
            id: id.to_owned(),
            due,
            value,
            api: t.api.clone(),
            looks: Vec::new(),
        });
        Ok(())
    }

    /// The sweeps that started at or after `due`.
    fn after(&self, due: i64) -> impl Iterator<Item = &SweepRun> {
        self.sweeps.iter().filter(move |s| s.started >= due as f64)
    }

    /// Every key has `settle` complete sweeps that started at or after its due time.
    fn settled(&self, settle: usize) -> bool {
        self.keys
            .iter()
            .all(|k| self.after(k.due).filter(|s| s.complete()).count() >= settle)
    }

    /// The sweeps that failed or left a secret to the next run.
    fn incomplete_sweeps(&self) -> usize {
        self.sweeps.iter().filter(|s| !s.complete()).count()
    }
}

/// A secret the observer watches: the API of its stage, for looks on the data plane, and keys
/// to watch whatever its schedule says (one a roll-back took off it), with their due times.
struct Target {
    secret: String,
    api: Option<String>,
    keys: Vec<(String, i64)>,
}

impl Target {
    fn new(secret: &str, api: Option<&str>) -> Self {
        Target {
            secret: secret.to_owned(),
            api: api.map(str::to_owned),
            keys: Vec::new(),
        }
    }
}

/// The observer running in the background.
struct Observer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<R<Observed>>,
}

impl Observer {
    /// Watches `targets` and their schedules, sending the sweep's event through `function`
    /// every `SWEEP_EVERY`; once told to finish, goes on until every key has `settle` complete
    /// sweeps after its due time.
    fn start(w: Arc<World>, function: Arc<Function>, targets: Vec<Target>, settle: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Observed::default();
            let mut told: Option<Instant> = None;
            for t in &targets {
                for (id, due) in &t.keys {
                    seen.watch(&w, t, id, *due).await?;
                }
            }
            loop {
                for t in &targets {
                    for (id, due) in schedule_of(&w, &t.secret).await?.due {
                        seen.watch(&w, t, &id, due).await?;
                    }
                }
                let started = now();
                let answer = function.invoke(&sweep_event()).await?;
                seen.sweeps.push(SweepRun {
                    started,
                    ended: now(),
                    answer,
                });
                for k in &mut seen.keys {
                    let look = look(&w, k).await?;
                    k.looks.push(look);
                }
                if stopping.load(Ordering::SeqCst) {
                    let since = *told.get_or_insert_with(Instant::now);
                    if seen.settled(settle) || since.elapsed() > SETTLE_TIMEOUT {
                        return Ok(seen);
                    }
                }
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        });
        Observer { stop, task }
    }

    /// Lets the observer run until every key is settled (or `SETTLE_TIMEOUT`), and returns what
    /// it saw.
    async fn finish(self) -> R<Observed> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?
    }
}

async fn look(w: &World, k: &Watched) -> R<Look> {
    let started = now();
    let key = w.key(&k.id).await?;
    let status = match (&k.api, &k.value) {
        (Some(api), Some(value)) => Some(w.call_stage(api, value).await?),
        _ => None,
    };
    Ok(Look {
        started,
        ended: now(),
        exists: key.is_some(),
        enabled: key.as_ref().is_some_and(|k| k.enabled()),
        status,
    })
}

/// How a key's retirement went, for the printed figures.
struct Timing {
    /// The last look that found it working, in seconds before its due time.
    last_working: f64,
    /// The first look that found it retired, in seconds after its due time.
    first_retired: f64,
    /// Sweeps started at or after the due time, up to the one that retired it.
    sweeps: usize,
}

/// The key worked at every look that ended before its due time (and at least one such look was
/// made); from the end of the first complete sweep (`SweepRun::complete`) that started at or
/// after its due time on, every look finds it `retired`, and that sweep is at most the
/// `within`-th to start at or after its due time (a secret a sweep fails or leaves, e.g. because
/// a rotation moved its labels meanwhile, is the next run's).
fn retired_at_expiry(
    o: &Observed,
    k: &Watched,
    what: &str,
    within: usize,
    retired: impl Fn(&Look) -> bool,
) -> R<Timing> {
    let due = k.due as f64;
    let before: Vec<&Look> = k.looks.iter().filter(|l| l.ended < due).collect();
    ensure!(
        !before.is_empty(),
        "{what}: no look at key {} before its due time: nothing proves it was not retired early",
        k.id
    );
    if let Some(l) = before.iter().find(|l| !l.working()) {
        return Err(format!(
            "{what}: key {} was retired {:.1}s before its due time: {l:?}",
            k.id,
            due - l.ended
        )
        .into());
    }
    let after: Vec<&SweepRun> = o.after(k.due).collect();
    let Some(n) = after.iter().position(|s| s.complete()) else {
        return Err(format!(
            "{what}: no complete sweep after key {}'s due time; sweeps after it: {:?}",
            k.id,
            after.iter().map(|s| &s.answer).collect::<Vec<_>>()
        )
        .into());
    };
    ensure!(
        n < within,
        "{what}: key {}: {} sweeps after its due time failed or left it before one was complete: {:?}",
        k.id,
        n,
        after.iter().take(n).map(|s| &s.answer).collect::<Vec<_>>()
    );
    let sweep = after[n];
    let from: Vec<&Look> = k
        .looks
        .iter()
        .filter(|l| l.started >= sweep.ended)
        .collect();
    ensure!(
        !from.is_empty(),
        "{what}: no look at key {} after the sweep that was to retire it",
        k.id
    );
    if let Some(l) = from.iter().find(|l| !retired(l)) {
        return Err(format!(
            "{what}: key {} not retired {:.1}s after its due time, after {} sweeps: {l:?}",
            k.id,
            l.started - due,
            n + 1
        )
        .into());
    }
    let last_working = before.last().map_or(f64::NAN, |l| due - l.ended);
    Ok(Timing {
        last_working,
        first_retired: from[0].ended - due,
        sweeps: n + 1,
    })
}

fn gone(l: &Look) -> bool {
    !l.exists && l.status.is_none_or(|s| s == 403)
}

fn disabled(l: &Look) -> bool {
    l.exists && !l.enabled && l.status.is_none_or(|s| s == 403)
}

fn print_timing(label: &str, k: &Watched, t: &Timing) {
    eprintln!(
        "    {label} key {}: worked until {:.1}s before its due time, retired from {:.1}s after it (sweep {} after the due time)",
        k.id, t.last_working, t.first_retired, t.sweeps
    );
}

/// AWS's caching client (TTL 3 s) calls the gateway through the propagation delay while the
/// secret rotates three times under OldKeyAction=delete with GracePeriod=6s, longer than the
/// TTL, and the sweep runs every second: no request is refused, and each old key, which worked
/// until its due time, is refused by the data plane from the end of the first sweep after it that
/// was complete (at most one other sweep in between).
pub async fn grace_zero_downtime(w: Arc<World>) -> R<()> {
    let w = Arc::new(w.in_own_account().await?);
    let data = Propagation::start(&w.endpoint, configured_delay()).await?;
    let sc = Scenario {
        policy: "delete",
        grace: Some("6s"),
        ttl: Duration::from_secs(3),
        pause: Duration::from_millis(600),
        rotations: 3,
        on_refusal: OnRefusal::Wait,
    };
    let s = setup_delayed(&w, &data, &sc).await?;
    let f = Arc::new(sweeper(&w, "grace-zero-downtime", &w.endpoint).await?);
    let observer = Observer::start(
        w.clone(),
        f.clone(),
        vec![Target::new(&s.secret, Some(&s.api))],
        1,
    );
    let played = play_on(&w, &data, &sc, &s).await;
    let observed = observer.finish().await?;
    let (seen, interval) = played?;
    report("delete, GracePeriod=6s", &sc, &seen, interval);
    seen.check_client("delete, GracePeriod=6s", sc.rotations)?;
    ensure!(
        seen.refused == 0,
        "delete, GracePeriod=6s: {} requests refused while the clients refreshed",
        seen.refused
    );
    ensure!(
        data.held_back() > 0,
        "the propagation delay never held a new key back: the probe did not wait for it"
    );
    let keys = observed.of(&s.secret);
    ensure!(
        keys.len() == sc.rotations,
        "{} keys were scheduled over {} rotations",
        keys.len(),
        sc.rotations
    );
    let mut timings = Vec::new();
    for k in &keys {
        // A sweep that overlaps the last rotation may find the labels moving and leave the
        // secret to the next run, which retires the key.
        timings.push(retired_at_expiry(
            &observed,
            k,
            "grace_zero_downtime",
            2,
            gone,
        )?);
    }
    eprintln!(
        "  delete, GracePeriod=6s: {} of {} requests refused; {} sweeps ({} failed or incomplete), each old key retired at its due time:",
        seen.refused,
        seen.requests,
        observed.sweeps.len(),
        observed.incomplete_sweeps()
    );
    for (k, t) in keys.iter().zip(&timings) {
        print_timing("old", k, t);
    }
    Ok(())
}

/// Three rotations within one grace (8 s), under delete and under disable, with the sweep every
/// second: every old key stays until its own due time (read from the schedule tags) and is
/// retired within two sweeps of it: under delete all are deleted; under disable the key
/// AWSPREVIOUS holds is disabled and the older ones, held by no version, deleted.
pub async fn grace_rotations_within_one_grace(w: Arc<World>) -> R<()> {
    let w = Arc::new(w.in_own_account().await?);
    let f = Arc::new(sweeper(&w, "grace-within-one-grace", &w.endpoint).await?);
    let r = rotator(&w).await?;
    let policies = ["delete", "disable"];
    let mut setups = Vec::new();
    for policy in policies {
        let s = setup(
            &w,
            Some("{}"),
            &[("OldKeyAction", policy), ("GracePeriod", "8s")],
        )
        .await?;
        w.rotate(&r, &s.secret, 1).await?;
        setups.push(s);
    }
    let observer = Observer::start(
        w.clone(),
        f.clone(),
        setups
            .iter()
            .map(|s| Target::new(&s.secret, None))
            .collect(),
        2,
    );
    let mut made: Vec<Vec<String>> = Vec::new();
    for s in &setups {
        made.push(vec![current_key(&w, &s.secret).await?]);
    }
    // When the last rotation ended, in whole seconds rounded up.
    let mut rotated = 0;
    for round in 0..3 {
        // Due times are whole seconds: a second between rounds gives each key its own.
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (s, keys) in setups.iter().zip(&mut made) {
            let (_, errors) = w.rotate(&r, &s.secret, 1).await?;
            ensure!(errors.is_empty(), "{errors:?}");
            keys.push(current_key(&w, &s.secret).await?);
        }
        rotated = now().ceil() as i64;
    }
    let observed = observer.finish().await?;
    eprintln!(
        "  three rotations within one grace (8s): {} sweeps ({} failed or incomplete)",
        observed.sweeps.len(),
        observed.incomplete_sweeps()
    );
    for ((policy, s), keys) in policies.iter().zip(&setups).zip(&made) {
        let watched = observed.of(&s.secret);
        let old = &keys[..3];
        let ids: Vec<&str> = watched.iter().map(|k| k.id.as_str()).collect();
        ensure!(
            ids == old.iter().map(String::as_str).collect::<Vec<_>>(),
            "{policy}: the schedule named {ids:?}, want the three old keys {old:?} in order"
        );
        ensure!(
            watched.windows(2).all(|p| p[0].due < p[1].due),
            "{policy}: the due times are not each key's own: {:?}",
            watched.iter().map(|k| k.due).collect::<Vec<_>>()
        );
        ensure!(
            rotated <= watched[0].due,
            "{policy}: the three rotations did not fit within the first key's grace"
        );
        for (i, k) in watched.iter().enumerate() {
            // Under disable, the last old key is AWSPREVIOUS's: disabled. Every other old key
            // is held by no version at its due time: deleted.
            let previous = *policy == "disable" && i == 2;
            let t = if previous {
                retired_at_expiry(&observed, k, policy, 2, disabled)?
            } else {
                retired_at_expiry(&observed, k, policy, 2, gone)?
            };
            print_timing(
                &format!(
                    "{policy}, {}",
                    if previous { "AWSPREVIOUS" } else { "older" }
                ),
                k,
                &t,
            );
        }
        let current = w
            .key(&keys[3])
            .await?
            .ok_or_else(|| format!("{policy}: the current key is gone"))?;
        ensure!(current.enabled(), "{policy}: the current key is disabled");
        ensure!(
            schedule_of(&w, &s.secret).await?.is_empty(),
            "{policy}: schedule entries left after the sweeps"
        );
    }
    Ok(())
}

/// A rotation, then a roll-back during the grace, two ways: with the operator command
/// (`rollback --apply`, the real binary), which takes the key it puts back off the schedule and
/// gives the key it rolls back from a grace of its own; and by hand (UpdateSecretVersionStage, as
/// a person would with the AWS CLI), which leaves the schedule entry for the sweep to find. Either
/// way the key rolled back to answers 200 at every look, through sweeps past its due time, and is
/// never deleted or disabled; the sweep releases the entry the hand roll-back left, and retires
/// the key the command rolled back from at its own due time.
pub async fn grace_rollback_survives(w: Arc<World>) -> R<()> {
    let w = Arc::new(w.in_own_account().await?);
    let f = Arc::new(sweeper(&w, "grace-rollback", &w.endpoint).await?);
    let r = rotator(&w).await?;
    struct Rolled {
        how: &'static str,
        secret: String,
        api: String,
        /// The key rolled back to, and the due time it had.
        back_to: (String, i64),
        /// The key rolled back from.
        from: String,
    }
    let mut rolled = Vec::new();
    for how in ["rollback --apply", "by hand"] {
        let s = setup(&w, Some("{}"), &[("GracePeriod", "5s")]).await?;
        w.rotate(&r, &s.secret, 1).await?;
        let first = current_key(&w, &s.secret).await?;
        w.rotate(&r, &s.secret, 1).await?;
        let second = current_key(&w, &s.secret).await?;
        let due = schedule_of(&w, &s.secret)
            .await?
            .due
            .get(&first)
            .copied()
            .ok_or_else(|| format!("{how}: the previous key was not scheduled"))?;
        if how == "by hand" {
            let versions = w.versions(&s.secret).await?;
            let stage = |label| {
                with_stage(&versions, label).ok_or_else(|| format!("no {label}: {versions:?}"))
            };
            w.sm.update_secret_version_stage()
                .secret_id(&s.secret)
                .version_stage("AWSCURRENT")
                .move_to_version_id(stage("AWSPREVIOUS")?)
                .remove_from_version_id(stage("AWSCURRENT")?)
                .send()
                .await?;
        } else {
            let run = cli(&w, &["--json", "rollback", &s.secret, "--apply"]).await?;
            let actions = step_actions(&run.json["secrets"][0]);
            ensure!(
                run.code == 0
                    && actions.contains(&"unschedule-retirement")
                    && actions.contains(&"move-current"),
                "{how}: {}{}",
                run.stdout,
                run.stderr
            );
            let schedule = schedule_of(&w, &s.secret).await?;
            ensure!(
                !schedule.due.contains_key(&first) && schedule.due.contains_key(&second),
                "{how}: the schedule holds {:?}; want the key rolled back from, not the one rolled back to",
                schedule.due
            );
        }
        ensure!(
            current_key(&w, &s.secret).await? == first,
            "{how}: AWSCURRENT does not hold the key rolled back to"
        );
        rolled.push(Rolled {
            how,
            secret: s.secret.clone(),
            api: s.api.clone(),
            back_to: (first, due),
            from: second,
        });
    }
    let targets = rolled
        .iter()
        .map(|x| Target {
            keys: vec![x.back_to.clone()],
            ..Target::new(&x.secret, Some(&x.api))
        })
        .collect();
    let observed = Observer::start(w.clone(), f.clone(), targets, 2)
        .finish()
        .await?;
    for x in &rolled {
        let (how, (first, due)) = (x.how, &x.back_to);
        let watched = observed.of(&x.secret);
        let k = watched
            .iter()
            .find(|k| k.id == *first)
            .ok_or_else(|| format!("{how}: the key rolled back to was not watched"))?;
        let past_due = k.looks.iter().filter(|l| l.started >= *due as f64).count();
        ensure!(
            observed.after(*due).filter(|s| s.complete()).count() >= 2 && past_due >= 2,
            "{how}: too few sweeps and looks past the due time: {:?}",
            observed.sweeps
        );
        if let Some(l) = k.looks.iter().find(|l| !l.working()) {
            return Err(format!(
                "{how}: the key rolled back to stopped working {:.1}s after its due time: {l:?}",
                l.started - *due as f64
            )
            .into());
        }
        ensure!(
            !schedule_of(&w, &x.secret).await?.due.contains_key(first),
            "{how}: the schedule entry of the key rolled back to is still there after the sweeps"
        );
        let from: Vec<&&Watched> = watched.iter().filter(|k| k.id == x.from).collect();
        if how == "by hand" {
            ensure!(
                watched.len() == 1,
                "{how}: the schedule named {:?}",
                watched.iter().map(|k| &k.id).collect::<Vec<_>>()
            );
        } else {
            let k = from
                .first()
                .ok_or_else(|| format!("{how}: the key rolled back from was not scheduled"))?;
            let t = retired_at_expiry(&observed, k, how, 2, gone)?;
            print_timing(&format!("{how}, rolled back from:"), k, &t);
        }
        eprintln!(
            "    {how}: the key rolled back to answered 200 at all {} looks ({past_due} past its due time)",
            k.looks.len()
        );
    }
    let retired: u64 = observed.sweeps.iter().map(|s| s.count("retired")).sum();
    let released: u64 = observed.sweeps.iter().map(|s| s.count("released")).sum();
    eprintln!(
        "  rolled back during the grace: {} sweeps, {retired} key retired (the one the command rolled back from), {released} entry released (the hand roll-back's)",
        observed.sweeps.len()
    );
    ensure!(
        retired == 1 && released == 1,
        "the sweeps retired {retired} keys and released {released} entries; want 1 and 1"
    );
    Ok(())
}

/// A secret whose previous key's grace (1 s) is over: rotated twice, then waited out. Returns
/// the previous key.
async fn due_secret(
    w: &World,
    r: &api_key_rotator::AwsRotator,
    plan: &str,
    policy: &str,
) -> R<(String, String)> {
    let key_name = w.unique("swept");
    let secret = w
        .create_secret(
            Some("{}"),
            &[
                ("KeyName", key_name.as_str()),
                ("UsagePlan", plan),
                ("OldKeyAction", policy),
                ("GracePeriod", "1s"),
            ],
        )
        .await?;
    w.rotate(r, &secret, 1).await?;
    let previous = current_key(w, &secret).await?;
    w.rotate(r, &secret, 1).await?;
    Ok((secret, previous))
}

/// Waits until every scheduled retirement of `secrets` is due.
async fn until_due(w: &World, secrets: &[(String, String)]) -> R<()> {
    let mut latest = 0;
    for (secret, _) in secrets {
        let due = schedule_of(w, secret).await?.due.values().copied().max();
        latest = latest.max(due.ok_or_else(|| format!("{secret}: nothing scheduled"))?);
    }
    let wait = latest as f64 + 0.1 - now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    Ok(())
}

/// One sweep through the proxy: its answer and the calls it made.
async fn counted_sweep(
    f: &Function,
    proxy: &Proxy,
) -> R<(Value, std::collections::BTreeMap<String, u32>)> {
    proxy.reset_counts();
    let answer = f
        .invoke(&sweep_event())
        .await?
        .map_err(|e| format!("the sweep failed: {e}"))?;
    let calls = proxy.all_calls();
    ensure_listed("the sweep", &calls, SWEEP_CALLS, "SWEEP_CALLS")?;
    Ok((answer, calls))
}

/// With 30 secrets holding a retirement not yet due and a few unrelated ones, a sweep makes
/// ListSecrets calls only (at most four); with k due secrets, it makes at most 12 calls per due
/// secret more, and retires each due key.
pub async fn grace_sweep_is_cheap_when_idle(w: Arc<World>) -> R<()> {
    const SCHEDULED: usize = 30;
    let w = w.in_own_account().await?;
    let proxy = Proxy::start(&w.endpoint).await?;
    let f = sweeper(&w, "grace-cheap-sweep", &proxy.endpoint).await?;
    let r = rotator(&w).await?;
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let tomorrow = api_key_rotator::grace::now_secs() + 86_400;
    for i in 0..SCHEDULED {
        let key_name = w.unique("scheduled");
        let (tag, value) = schedule_tag(&format!("notdue{i:04}"), tomorrow);
        w.create_secret(
            Some("{}"),
            &[
                ("KeyName", key_name.as_str()),
                ("UsagePlan", plan.as_str()),
                (tag.as_str(), value.as_str()),
            ],
        )
        .await?;
    }
    // Unrelated: no tags; a tag whose value looks due, under another key; the function's own
    // tag prefix without the schedule's colon.
    let retire_like = RETIRE_TAG_PREFIX.trim_end_matches(':');
    for tags in [
        vec![],
        vec![("Note", "due:0000")],
        vec![(retire_like, "due:0000")],
    ] {
        w.create_secret(Some("{}"), &tags).await?;
    }
    let (answer, idle) = counted_sweep(&f, &proxy).await?;
    let listed = idle.get("ListSecrets").copied().unwrap_or(0);
    eprintln!("  sweep with {SCHEDULED} retirements not yet due and 3 unrelated secrets: {idle:?}");
    ensure!(
        answer["due_secrets"] == 0,
        "the idle sweep found due secrets: {answer}"
    );
    ensure!(
        idle.len() == 1 && (1..=4).contains(&listed),
        "the idle sweep made {idle:?}; want ListSecrets alone, at most 4"
    );
    let idle_total: u32 = idle.values().sum();

    let mut by_k = Vec::new();
    for policies in [&["delete"][..], &["delete", "disable", "delete"][..]] {
        let mut due = Vec::new();
        for policy in policies {
            due.push(due_secret(&w, &r, &plan, policy).await?);
        }
        until_due(&w, &due).await?;
        let (answer, calls) = counted_sweep(&f, &proxy).await?;
        let k = due.len();
        let total: u32 = calls.values().sum();
        eprintln!("  sweep with {k} due secret(s): {total} calls: {calls:?}");
        ensure!(
            answer["due_secrets"] == k && answer["retired"] == k,
            "{k} due: the sweep answered {answer}"
        );
        for ((secret, previous), policy) in due.iter().zip(policies.iter()) {
            let key = w.key(previous).await?;
            let retired = match *policy {
                "disable" => key.is_some_and(|k| !k.enabled()),
                _ => key.is_none(),
            };
            ensure!(
                retired,
                "{k} due: {policy}: the previous key was not retired"
            );
            ensure!(
                schedule_of(&w, secret).await?.is_empty(),
                "{k} due: the schedule entry is left"
            );
        }
        let per_secret = 12 * k as u32;
        ensure!(
            total <= idle_total + 2 + per_secret,
            "{k} due: {total} calls, more than the idle sweep's {idle_total} + 2 + 12 per due secret"
        );
        by_k.push(total);
    }
    ensure!(
        by_k[1] > by_k[0],
        "the calls did not grow with the due secrets: {by_k:?}"
    );
    eprintln!(
        "  sweep calls: idle {idle_total}, 1 due {}, 3 due {} ({:.1} a due secret beyond the first)",
        by_k[0],
        by_k[1],
        f64::from(by_k[1] - by_k[0]) / 2.0
    );
    Ok(())
}

/// Events that are not the sweep's, delivered through the Runtime API while a retirement is
/// due: an unknown Action, and the sweep's Action with a step's fields. Each is refused as
/// InvalidEvent and nothing changes; the sweep's own event then retires the due key.
pub async fn grace_sweep_event_validation(w: Arc<World>) -> R<()> {
    let w = w.in_own_account().await?;
    let f = sweeper(&w, "grace-sweep-events", &w.endpoint).await?;
    let r = rotator(&w).await?;
    let s = setup(&w, Some("{}"), &[("GracePeriod", "1s")]).await?;
    w.rotate(&r, &s.secret, 1).await?;
    let previous = current_key(&w, &s.secret).await?;
    let (token, _) = w.rotate(&r, &s.secret, 1).await?;
    until_due(&w, &[(s.secret.clone(), previous.clone())]).await?;
    let before = (
        w.snapshot(&s.secret, &[&s.plan]).await?,
        tags_of(&w, &s.secret).await?,
    );
    let events = [
        json!({"Action": "retire-all-keys"}),
        json!({"Action": "RETIRE-EXPIRED-KEYS"}),
        json!({"Action": 7}),
        json!({"Action": null}),
        json!({"Action": SWEEP_ACTION, "Step": "finishSecret"}),
        json!({"Action": SWEEP_ACTION, "SecretId": s.secret}),
        json!({"Action": SWEEP_ACTION, "Step": "finishSecret", "SecretId": s.secret, "ClientRequestToken": token}),
    ];
    for event in &events {
        let answer = f.invoke(event).await?;
        ensure!(
            answer.as_ref().err().map(|e| &e["errorType"]) == Some(&json!("InvalidEvent")),
            "{event}: answered {answer:?}, want InvalidEvent"
        );
        let after = (
            w.snapshot(&s.secret, &[&s.plan]).await?,
            tags_of(&w, &s.secret).await?,
        );
        ensure!(
            before == after,
            "{event} changed something:\n{before:?}\n{after:?}"
        );
    }
    let answer = f
        .invoke(&sweep_event())
        .await?
        .map_err(|e| format!("the sweep failed: {e}"))?;
    ensure!(
        answer["retired"] == 1 && w.key(&previous).await?.is_none(),
        "the sweep's own event did not retire the due key: {answer}"
    );
    eprintln!(
        "  {} events refused as InvalidEvent with nothing changed; the sweep's event then retired the due key",
        events.len()
    );
    Ok(())
}

/// GracePeriod with OldKeyAction=keep-previous, and a GracePeriod beyond 7d: createSecret fails
/// with InvalidConfiguration naming the finding, and nothing is made. GracePeriod=7d with
/// disable passes the same path and schedules the previous key a week ahead.
pub async fn grace_config_refused(w: Arc<World>) -> R<()> {
    let w = w.in_own_account().await?;
    let r = rotator(&w).await?;
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    for (what, tags, code) in [
        (
            "GracePeriod=2h with keep-previous",
            [("OldKeyAction", "keep-previous"), ("GracePeriod", "2h")],
            "grace-period-with-keep-previous",
        ),
        (
            "GracePeriod=8d",
            [("OldKeyAction", "delete"), ("GracePeriod", "8d")],
            "grace-period-invalid",
        ),
    ] {
        let key_name = w.unique("refused");
        let mut all = vec![("KeyName", key_name.as_str()), ("UsagePlan", plan.as_str())];
        all.extend(tags);
        let secret = w.create_secret(Some("{}"), &all).await?;
        let message = refused(
            &w,
            &r,
            &secret,
            &[&plan],
            ErrorKind::InvalidConfiguration,
            what,
        )
        .await?;
        ensure!(
            message.contains(code),
            "{what}: the error does not name {code}: {message}"
        );
        ensure!(
            w.keys_with_prefix(&key_name).await?.is_empty(),
            "{what}: a key was made"
        );
    }
    // The longest grace passes, and the previous key is scheduled a week ahead.
    let s = setup(
        &w,
        Some("{}"),
        &[("OldKeyAction", "disable"), ("GracePeriod", "7d")],
    )
    .await?;
    w.rotate(&r, &s.secret, 1).await?;
    let previous = current_key(&w, &s.secret).await?;
    let started = api_key_rotator::grace::now_secs();
    w.rotate(&r, &s.secret, 1).await?;
    let due = schedule_of(&w, &s.secret)
        .await?
        .due
        .get(&previous)
        .copied();
    let week = 7 * 86_400;
    ensure!(
        due.is_some_and(
            |d| d > started + week && d <= api_key_rotator::grace::now_secs() + week + 1
        ),
        "GracePeriod=7d: the previous key is due at {due:?}, want a week after the rotation"
    );
    ensure!(
        w.key(&previous).await?.is_some_and(|k| k.enabled()),
        "GracePeriod=7d: the previous key was retired at once"
    );
    Ok(())
}
