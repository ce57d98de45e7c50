//! The fault matrix: every AWS call each step makes (rows, from the function's own
//! `STEP_CALLS`) × every fault kind (columns), against the emulator through the fault proxy.
//! Each cell plays Secrets Manager: the whole rotation re-run with the same token, the fault
//! cleared after two failed tries, and then the invariants are checked. The retirement sweep's
//! calls (`SWEEP_CALLS`) have rows of their own (`sweep`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_key_rotator::aws::SdkSettings;
use api_key_rotator::event::Step;
use api_key_rotator::grace::{GracePeriod, Schedule};
use api_key_rotator::rotation::STEP_CALLS;
use api_key_rotator::AwsRotator;
use serde_json::json;

use crate::cases::{assert_rotated, config, tied_ids, Setup};
use crate::ensure;
use crate::support::proxy::{Fault, Proxy};
use crate::support::world::{fast_sdk, str_field, World, STEPS};
use crate::support::R;

mod sweep;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// 5xx on every attempt: the step fails past the SDK's retries, twice, then the fault clears.
    FailsPastRetries,
    /// The emulator commits, the answer is lost (5xx) once; the SDK retries.
    AnswerLostOnce,
    /// The emulator commits, the answer is lost on every attempt, twice; then the fault clears.
    AnswerLostPastRetries,
    /// The emulator commits, then the connection is reset with no answer, once.
    ConnectionResetOnce,
    /// Throttled twice: the SDK must absorb it, with no failed step.
    ThrottledAbsorbed,
    /// Held longer than the SDK's attempt timeout, then committed anyway, once.
    AttemptTimeoutOnce,
    /// API Gateway's rate limit as LimitExceededException with `Retry-After: 1`, once: waited
    /// out (at least the hint) with no failed step. `LIMIT_ROWS` only.
    RateLimitRetryAfter,
    /// A quota as LimitExceededException, on every call, twice: the step fails at once (one
    /// call, no retry) with an error saying so; then the fault clears. `LIMIT_ROWS` only.
    QuotaExceeded,
}

const COLUMNS: [Column; 6] = [
    Column::FailsPastRetries,
    Column::AnswerLostOnce,
    Column::AnswerLostPastRetries,
    Column::ConnectionResetOnce,
    Column::ThrottledAbsorbed,
    Column::AttemptTimeoutOnce,
];

/// The rows that also get the two LimitExceededException columns: the calls where API Gateway
/// answers it (a key quota on CreateApiKey, usage plans a key on CreateUsagePlanKey), not every
/// call, to keep the matrix's time.
const LIMIT_ROWS: [(Step, &str); 2] = [
    (Step::Create, "CreateApiKey"),
    (Step::Create, "CreateUsagePlanKey"),
];

const LIMIT_COLUMNS: [Column; 2] = [Column::RateLimitRetryAfter, Column::QuotaExceeded];

/// The rate-limit column's hint.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The grace period of the rows that need one: long enough never to end during the run.
const GRACE: &str = "2h";

const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);
const HELD: Duration = Duration::from_millis(1600);

/// The set-up a row needs so that its call is made at all.
#[derive(Debug, Clone, Copy, Default)]
struct Scenario {
    policy: &'static str,
    /// The rotation adopts an existing key (no earlier rotation).
    adopt: bool,
    /// A key migrated from another rotator, named exactly the KeyName, in a full value, and
    /// rotated once before: the faulted rotation is the second, which must retire it.
    migrated: bool,
    /// An earlier try made two keys for the token, attached both and crashed before storing
    /// either, so createSecret finds a duplicate to detach and delete.
    duplicates_before_create: bool,
    /// The pending key is disabled / detached before setSecret's first run.
    disable_before_set: bool,
    detach_before_set: bool,
    /// The secret's GracePeriod tag: finishSecret schedules the previous key's retirement on
    /// the secret's tags (`secretsmanager:TagResource`) instead of retiring it.
    grace: Option<&'static str>,
}

/// Rows that cannot run here, with the reason printed in the summary.
fn exempt(step: Step, op: &str) -> Option<&'static str> {
    match (step, op) {
        (Step::Test, "GetUsagePlan") => {
            Some("needs a TestUrl on an execute-api host, which would leave loopback")
        }
        (Step::Set | Step::Test, "GetTags") => Some(
            "read only when GetApiKey hides the pending key's tie; LocalStack (and the fakes) show tags given at creation, and the pending key always has its tie from creation: no test reaches this call",
        ),
        (Step::Set, "DeleteUsagePlanKey") => Some(
            "needs the pending key on a plan its value does not name before setSecret; the model's plan-move sequences cover it",
        ),
        (Step::Create, "DeleteUsagePlanKey") => Some(
            "detaches a reused key from a plan the tags have left; needs a plan move inside a failing rotation, which the model and tests/e2e/adversary.rs play",
        ),
        (Step::Create, "GetApiKey") => Some(
            "reads a reused key's value, which LocalStack's GetApiKeys already returns without includeValues (the model covers it)",
        ),
        (Step::Finish, "GetApiKey") => Some(
            "finishSecret looks up a named key only when the listing of every key does not show it (listings lag on AWS; LocalStack's never do)",
        ),
        (Step::Finish, "TagResource") => Some(
            "createSecret ties every untied key a labelled version holds, so finishSecret ties only a key untied between the two; the model covers it",
        ),
        _ => None,
    }
}

fn scenario(step: Step, op: &str) -> Scenario {
    let base = Scenario {
        policy: "delete",
        ..Scenario::default()
    };
    match (step, op) {
        // An adopted key is tied to the secret by TagResource on its first rotation.
        (Step::Create, "TagResource") => Scenario {
            adopt: true,
            ..base
        },
        // On the second rotation of a migrated key, the listing shows it without its tie (added
        // by TagResource, which the emulator's listings hide), so createSecret reads GetTags.
        (Step::Create, "GetTags") => Scenario {
            migrated: true,
            policy: "keep-previous",
            ..base
        },
        // Keys an earlier try made come from the listing without values: GetApiKey reads the
        // one kept.
        (Step::Create, "GetApiKey" | "GetUsagePlans" | "DeleteUsagePlanKey" | "DeleteApiKey") => {
            Scenario {
                duplicates_before_create: true,
                ..base
            }
        }
        (Step::Set, "UpdateApiKey") => Scenario {
            disable_before_set: true,
            ..base
        },
        (Step::Set, "CreateUsagePlanKey") => Scenario {
            detach_before_set: true,
            ..base
        },
        (Step::Finish, "UpdateApiKey") => Scenario {
            policy: "disable",
            ..base
        },
        // With a grace period, finishSecret writes the previous key's schedule tag before and
        // after it moves AWSCURRENT.
        (Step::Finish, "secretsmanager:TagResource") => Scenario {
            grace: Some(GRACE),
            ..base
        },
        // The adopted key's tie was added by TagResource: finishSecret reads it with GetTags.
        (Step::Finish, "GetTags") => Scenario {
            policy: "disable",
            adopt: true,
            ..base
        },
        _ => base,
    }
}

/// finishSecret's retirement calls, faulted again from a migrated key's second rotation under
/// the two policies that keep the previous key: the migrated key must still be deleted.
/// (GetApiKey is not among them: finishSecret makes it only when the listing of every key lags,
/// which LocalStack's never does; with per-cell fault counts, its 12 cells were found never to
/// reach the call.)
const MIGRATED_FINISH_ROWS: [&str; 7] = [
    "GetSecretValue",
    "GetApiKeys",
    "GetTags",
    "GetUsagePlans",
    "DeleteUsagePlanKey",
    "DeleteApiKey",
    "UpdateApiKey",
];

#[derive(Default)]
struct Tally {
    cells: u32,
    converged: u32,
    leaked: usize,
    invalid: u32,
    failures: Vec<String>,
}

pub async fn fault_matrix(w: Arc<World>) -> R<()> {
    let started = Instant::now();
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let mut exempted = Vec::new();
    let mut cells = Vec::new();
    for (step, calls) in STEP_CALLS {
        for op in calls {
            match exempt(step, op) {
                Some(why) => exempted.push(format!("{step}/{op}: {why}")),
                None => {
                    let limits: &[Column] = if LIMIT_ROWS.contains(&(step, *op)) {
                        &LIMIT_COLUMNS
                    } else {
                        &[]
                    };
                    cells.extend(
                        COLUMNS
                            .iter()
                            .chain(limits)
                            .map(|c| (step, *op, *c, scenario(step, op))),
                    )
                }
            }
        }
    }
    for op in MIGRATED_FINISH_ROWS {
        for policy in ["keep-previous", "disable"] {
            // UpdateApiKey is called under disable only.
            if op == "UpdateApiKey" && policy != "disable" {
                continue;
            }
            let sc = Scenario {
                policy,
                migrated: true,
                ..Scenario::default()
            };
            cells.extend(COLUMNS.iter().map(|c| (Step::Finish, op, *c, sc)));
        }
    }
    let mut sweep_cells = sweep::cells()?;
    // FAULT_MATRIX_ONLY=Op[,Op] runs the rows of those operations alone (the steps' and the
    // sweep's), and FAULT_MATRIX_COLUMNS=Column[,Column] (as the summary names them) those
    // columns alone (while working on one call or one fault). A filter that leaves no cell (a
    // typo, an operation nothing calls) fails the run rather than passing it with nothing checked.
    let ops: BTreeSet<&str> = cells
        .iter()
        .map(|(_, op, _, _)| *op)
        .chain(sweep_cells.iter().map(|(op, _, _)| *op))
        .collect();
    if let Ok(only) = std::env::var("FAULT_MATRIX_ONLY") {
        let wanted = |op: &str| only.split(',').any(|o| o.trim() == op);
        cells.retain(|(_, op, _, _)| wanted(op));
        sweep_cells.retain(|(op, _, _)| wanted(op));
        ensure!(
            !cells.is_empty() || !sweep_cells.is_empty(),
            "FAULT_MATRIX_ONLY={only:?} leaves no cell of the fault matrix; the operations with cells are: {}",
            ops.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
    if let Ok(only) = std::env::var("FAULT_MATRIX_COLUMNS") {
        let wanted = |column: &Column| only.split(',').any(|c| c.trim() == format!("{column:?}"));
        cells.retain(|(_, _, column, _)| wanted(column));
        sweep_cells.retain(|(_, column, _)| wanted(column));
        ensure!(
            !cells.is_empty() || !sweep_cells.is_empty(),
            "FAULT_MATRIX_COLUMNS={only:?} leaves no cell of the fault matrix (columns are named as the summary names them)"
        );
    }
    ensure!(
        !cells.is_empty() || !sweep_cells.is_empty(),
        "the fault matrix has no cell to run"
    );
    // One cell at a time: the emulator is the bottleneck, and three concurrent workers made the
    // matrix slower here (236 s against 188 s).
    let (tally, sweep_tally, sweep_took) = run_cells(w, api, plan, cells, sweep_cells).await?;
    eprintln!(
        "  fault matrix: {} cells run, {} converged, {} keys leaked, {} secrets left invalid, {} rows exempt; {:.1}s",
        tally.cells + sweep_tally.cells,
        tally.converged + sweep_tally.converged,
        tally.leaked + sweep_tally.leaked,
        tally.invalid + sweep_tally.invalid,
        exempted.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "    of which the sweep's rows: {} cells run, {} converged; {:.1}s",
        sweep_tally.cells,
        sweep_tally.converged,
        sweep_took.as_secs_f64()
    );
    for e in &exempted {
        eprintln!("    exempt {e}");
    }
    let failures: Vec<&String> = tally.failures.iter().chain(&sweep_tally.failures).collect();
    ensure!(
        failures.is_empty(),
        "{} failing cells:\n    {}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n    ")
    );
    ensure!(
        tally.leaked + sweep_tally.leaked == 0 && tally.invalid + sweep_tally.invalid == 0,
        "leaks or invalid secrets"
    );
    Ok(())
}

/// Runs the steps' cells, then the sweep's: (the steps' tally, the sweep's, the sweep's time).
async fn run_cells(
    w: Arc<World>,
    api: String,
    plan: String,
    cells: Vec<(Step, &'static str, Column, Scenario)>,
    sweep_cells: Vec<(&'static str, Column, sweep::SweepScenario)>,
) -> R<(Tally, Tally, Duration)> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, config()).await?;
    let slow = SdkSettings {
        attempt_timeout: ATTEMPT_TIMEOUT,
        ..fast_sdk()
    };
    let r_timeout = w.rotator_with(&proxy.endpoint, config(), &slow).await?;
    let clean = w.rotator(&w.endpoint, config()).await?;
    let mut tally = Tally::default();
    for (step, op, column, sc) in cells {
        let rot = if column == Column::AttemptTimeoutOnce {
            &r_timeout
        } else {
            &r
        };
        tally.cells += 1;
        let label = if sc.migrated {
            format!("{step}/{op}/{column:?} (migrated key, {})", sc.policy)
        } else {
            format!("{step}/{op}/{column:?}")
        };
        match cell(&w, &proxy, rot, &clean, &api, &plan, step, op, column, sc).await {
            Ok(leaked) => {
                tally.converged += 1;
                tally.leaked += leaked;
                if leaked > 0 {
                    tally
                        .failures
                        .push(format!("{label}: {leaked} keys leaked"));
                }
            }
            Err(e) => {
                tally.invalid += 1;
                tally.failures.push(format!("{label}: {e}"));
            }
        }
    }
    proxy.clear();
    let sweep_started = Instant::now();
    let mut sweep_tally = Tally::default();
    if !sweep_cells.is_empty() {
        sweep::run_cells(&w, &proxy, sweep_cells, &mut sweep_tally).await?;
    }
    Ok((tally, sweep_tally, sweep_started.elapsed()))
}

/// One cell. Returns the number of leaked keys, or why the invariants do not hold.
#[allow(clippy::too_many_arguments)]
async fn cell(
    w: &World,
    proxy: &Proxy,
    r: &AwsRotator,
    clean: &AwsRotator,
    api: &str,
    plan: &str,
    step: Step,
    op: &str,
    column: Column,
    sc: Scenario,
) -> R<usize> {
    // Each cell proves its own fault: rules and counts start empty (one proxy serves the run).
    proxy.clear();
    proxy.reset_counts();
    proxy.set_phase(None);
    let key_name = w.unique("matrix");
    let mut tags = vec![
        ("KeyName", key_name.as_str()),
        ("UsagePlan", plan),
        ("OldKeyAction", sc.policy),
    ];
    tags.extend(sc.grace.map(|g| ("GracePeriod", g)));
    let mut migrated = None;
    let (secret, old) = if sc.migrated {
        let (id, value) = w.create_key(&key_name).await?;
        w.attach(plan, &id).await?;
        let v = json!({"api_key_id": id, "api_key_value": value, "key_name": key_name, "usage_plan_ids": [plan]});
        let secret = w.create_secret(Some(&v.to_string()), &tags).await?;
        w.rotate(clean, &secret, 1).await?;
        migrated = Some(id);
        let old = str_field(&w.value(&secret, "AWSCURRENT").await?, "api_key_id")
            .ok_or("no first key")?;
        (secret, old)
    } else if sc.adopt {
        let (id, _) = w.create_key(&w.unique("adopted")).await?;
        w.attach(plan, &id).await?;
        let secret = w
            .create_secret(Some(&json!({"api_key_id": id}).to_string()), &tags)
            .await?;
        (secret, id)
    } else {
        let secret = w.create_secret(Some("{}"), &tags).await?;
        w.rotate(clean, &secret, 1).await?;
        let old = str_field(&w.value(&secret, "AWSCURRENT").await?, "api_key_id")
            .ok_or("no first key")?;
        (secret, old)
    };
    let s = Setup {
        api: api.to_owned(),
        plan: plan.to_owned(),
        secret: secret.clone(),
        key_name: key_name.clone(),
    };
    let phase = step.as_str();
    let forever = u32::MAX;
    match column {
        Column::FailsPastRetries => proxy.inject_in(Some(phase), op, Fault::FailBefore, forever),
        Column::AnswerLostOnce => proxy.inject_in(Some(phase), op, Fault::LoseAnswer, 1),
        Column::AnswerLostPastRetries => {
            proxy.inject_in(Some(phase), op, Fault::LoseAnswer, forever)
        }
        Column::ConnectionResetOnce => proxy.inject_in(Some(phase), op, Fault::ResetAfter, 1),
        Column::ThrottledAbsorbed => proxy.inject_in(Some(phase), op, Fault::Throttle, 2),
        Column::AttemptTimeoutOnce => proxy.inject_in(Some(phase), op, Fault::Delay(HELD), 1),
        Column::RateLimitRetryAfter => {
            let secs = u32::try_from(RETRY_AFTER.as_secs()).unwrap_or(u32::MAX);
            proxy.inject_in(Some(phase), op, Fault::RateLimitRetryAfter(secs), 1)
        }
        Column::QuotaExceeded => proxy.inject_in(Some(phase), op, Fault::QuotaExceeded, forever),
    }
    let token = w.open_rotation(&secret).await?;
    if sc.duplicates_before_create {
        for _ in 0..2 {
            let id = w
                .create_tied_key(&format!("{key_name}-{token}"), &secret)
                .await?;
            w.attach(plan, &id).await?;
        }
    }
    let mut failed_tries = 0;
    let mut converged = false;
    // The first try of the faulted step: how long it took, and how the first failure read.
    let mut faulted_step_took = None;
    let mut first_error = None;
    // With a grace period: when the finishSecret invocation that moved AWSCURRENT started
    // (seconds since the epoch), a lower bound of the move's time.
    let mut moved_by = None;
    for attempt in 0..6 {
        if attempt == 2 {
            proxy.clear();
        }
        let mut ok = true;
        for name in STEPS {
            if name == "setSecret"
                && attempt == 0
                && (sc.disable_before_set || sc.detach_before_set)
            {
                w.break_pending_key(&secret, &token, plan, sc.disable_before_set)
                    .await?;
            }
            proxy.set_phase(Some(name));
            let started = Instant::now();
            let started_at = epoch_secs();
            let result = r.handle(&World::event(name, &secret, &token)).await;
            proxy.set_phase(None);
            if sc.grace.is_some() && name == "finishSecret" && moved_by.is_none() {
                let versions = w.versions(&secret).await?;
                if versions
                    .get(&token)
                    .is_some_and(|v| v.iter().any(|l| l == "AWSCURRENT"))
                {
                    moved_by = Some(started_at);
                }
            }
            if attempt == 0 && name == phase {
                faulted_step_took = Some(started.elapsed());
            }
            if let Err(e) = result {
                first_error.get_or_insert_with(|| e.to_string());
                ok = false;
                break;
            }
        }
        if ok {
            converged = true;
            break;
        }
        failed_tries += 1;
    }
    proxy.set_phase(None);
    // A held request (AttemptTimeoutOnce) lands after its client gave up: wait it out, so that a
    // key it creates late is counted below.
    ensure!(
        proxy.idle(HELD * 2).await,
        "a request held by the proxy never landed"
    );
    ensure!(converged, "did not converge in 6 tries");
    ensure!(
        proxy.injected(op) > 0,
        "the call was never made in {step}, so the fault was never injected"
    );
    if column == Column::ThrottledAbsorbed {
        ensure!(
            failed_tries == 0,
            "throttling was not absorbed by the SDK ({failed_tries} failed tries)"
        );
    }
    if column == Column::RateLimitRetryAfter {
        ensure!(
            failed_tries == 0,
            "the rate limit was not waited out ({failed_tries} failed tries: {first_error:?})"
        );
        ensure!(
            faulted_step_took.is_some_and(|t| t >= RETRY_AFTER),
            "{phase} took {faulted_step_took:?}: the retry came before Retry-After"
        );
    }
    if column == Column::QuotaExceeded {
        // Failed at once: one call a try, no retry, no wait; the error says what and where.
        let calls = proxy.injected(op);
        ensure!(
            failed_tries == 2 && calls == 2,
            "a quota was retried: {failed_tries} failed tries, {calls} refused calls: {first_error:?}"
        );
        let message = first_error.unwrap_or_default();
        for needle in [
            phase,
            secret.as_str(),
            op,
            "LimitExceededException",
            "read as a quota",
        ] {
            ensure!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }
    let new = assert_rotated(w, &s, &token, &[plan]).await?;
    let old_now = w.key(&old).await?;
    if let Some(m) = &migrated {
        ensure!(
            w.key(m).await?.is_none(),
            "the migrated key survived its second rotation"
        );
    }
    let expected: BTreeSet<String> = match sc.policy {
        _ if sc.grace.is_some() => {
            ensure!(
                old_now.as_ref().is_some_and(|k| k.enabled()),
                "the previous key did not keep working through its grace period"
            );
            check_scheduled_once(w, &secret, &old, sc.grace, moved_by).await?;
            BTreeSet::from([new.clone(), old.clone()])
        }
        "disable" => {
            ensure!(
                old_now.as_ref().is_some_and(|k| !k.enabled()),
                "old key not disabled"
            );
            BTreeSet::from([new.clone(), old.clone()])
        }
        "keep-previous" => {
            ensure!(
                old_now.as_ref().is_some_and(|k| k.enabled()),
                "old key not kept valid"
            );
            BTreeSet::from([new.clone(), old.clone()])
        }
        _ => {
            ensure!(old_now.is_none(), "old key not deleted");
            BTreeSet::from([new.clone()])
        }
    };
    // Every key this secret's rotations made: by its tie (whatever its name), and by name (a key
    // whose tie a lost answer left unwritten, though CreateApiKey writes it with the key).
    let mut made: BTreeSet<String> = w
        .keys_with_prefix(&format!("{key_name}-"))
        .await?
        .iter()
        .filter_map(|k| k.id().map(str::to_owned))
        .collect();
    made.extend(tied_ids(w, &secret).await?);
    Ok(made.difference(&expected).count())
}

/// Seconds since the epoch, now, with their fraction.
fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The secret's schedule holds exactly one entry, the previous key's, due no sooner than the
/// grace period after AWSCURRENT moved (`moved_by`: when the invocation that moved it started).
async fn check_scheduled_once(
    w: &World,
    secret: &str,
    previous: &str,
    grace: Option<&str>,
    moved_by: Option<f64>,
) -> R<()> {
    let grace = grace
        .map(GracePeriod::parse)
        .transpose()?
        .flatten()
        .ok_or("no grace period")?;
    let moved_by = moved_by.ok_or("AWSCURRENT never moved to the token")?;
    let schedule = schedule_of(w, secret).await?;
    ensure!(
        schedule.unreadable.is_empty() && schedule.due.len() == 1,
        "expected one schedule entry, for the previous key {previous}: {schedule:?}"
    );
    let due = schedule.due.get(previous).ok_or_else(|| {
        format!("no schedule entry for the previous key {previous}: {schedule:?}")
    })?;
    let early = (*due as f64) < moved_by + grace.seconds() as f64;
    ensure!(
        !early,
        "the previous key is due at {due}, sooner than the grace ({grace}) after AWSCURRENT moved (by {moved_by:.0})"
    );
    Ok(())
}

/// The retirements scheduled on the secret's tags, as the function reads them.
pub(crate) async fn schedule_of(w: &World, secret: &str) -> R<Schedule> {
    let d = w.sm.describe_secret().secret_id(secret).send().await?;
    let tags: Vec<(String, String)> = d
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Ok(Schedule::from_tags(&tags))
}
