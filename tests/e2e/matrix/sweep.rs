//! The fault matrix's sweep rows: every call the retirement sweep makes (`SWEEP_CALLS`), in a
//! scenario that makes the sweep reach it, × a failure past the SDK's retries and, separately,
//! an answer lost on every attempt. The sweep runs as Lambda runs it: the real binary under the
//! Lambda Runtime API, invoked with `{"Action": "retire-expired-keys"}`, its AWS calls through the
//! fault proxy. The faulted run must answer an error; the next run, without faults, must retire
//! the due key by the part it plays, remove its schedule entry, and change nothing else.

use std::collections::BTreeSet;

use api_key_rotator::grace::{now_secs, schedule_tag, schedule_tag_key};
use api_key_rotator::rotation::{SWEEP_ACTION, SWEEP_CALLS};
use api_key_rotator::AwsRotator;
use aws_sdk_secretsmanager::types::Tag;
use serde_json::{json, Value};

use super::{schedule_of, Column, Tally, GRACE};
use crate::cases::{config, tied_ids};
use crate::ensure;
use crate::support::proxy::{Fault, Proxy};
use crate::support::runtime::Function;
use crate::support::world::{str_field, World};
use crate::support::R;

/// The proxy's phase while a faulted sweep runs.
const PHASE: &str = "sweep";

/// A failure, and a lost answer: each on every attempt of the run, so that the run fails.
pub(super) const SWEEP_COLUMNS: [Column; 2] =
    [Column::FailsPastRetries, Column::AnswerLostPastRetries];

/// The set-up that makes the sweep reach a call: a secret whose previous key's grace period
/// has ended (its schedule entry, written by finishSecret, moved to the past).
#[derive(Debug, Clone, Copy)]
pub(super) struct SweepScenario {
    policy: &'static str,
    /// The due key was adopted: its tie was added by TagResource, which LocalStack's listings
    /// hide, so the sweep reads it with GetTags.
    adopt: bool,
    /// A person deleted the due key during its grace period: the listing does not show it, so
    /// the sweep looks it up with GetApiKey (and finds it gone).
    deleted_by_hand: bool,
    /// Calls of the operation let through before the fault: 1 for DescribeSecret's re-read
    /// just before acting.
    skip: u32,
}

const BASE: SweepScenario = SweepScenario {
    policy: "delete",
    adopt: false,
    deleted_by_hand: false,
    skip: 0,
};

/// The scenarios that make a sweep reach `op`; an error for a call no scenario here covers
/// (a call added to `SWEEP_CALLS` needs its row).
fn scenarios(op: &str) -> R<Vec<SweepScenario>> {
    Ok(match op {
        "ListSecrets" | "GetApiKeys" | "GetSecretValue" | "GetUsagePlans"
        | "DeleteUsagePlanKey" | "DeleteApiKey" | "secretsmanager:UntagResource" => vec![BASE],
        // The first read, and the re-read before acting.
        "DescribeSecret" => vec![BASE, SweepScenario { skip: 1, ..BASE }],
        "GetApiKey" => vec![SweepScenario {
            deleted_by_hand: true,
            ..BASE
        }],
        "GetTags" => vec![SweepScenario {
            adopt: true,
            ..BASE
        }],
        "UpdateApiKey" => vec![SweepScenario {
            policy: "disable",
            ..BASE
        }],
        other => {
            return Err(format!(
                "SWEEP_CALLS lists {other}, which no sweep row of the fault matrix reaches: add a scenario for it"
            )
            .into())
        }
    })
}

/// Every sweep cell: each call of `SWEEP_CALLS` × each scenario that reaches it × each column.
pub(super) fn cells() -> R<Vec<(&'static str, Column, SweepScenario)>> {
    let mut cells = Vec::new();
    for op in SWEEP_CALLS {
        for sc in scenarios(op)? {
            cells.extend(SWEEP_COLUMNS.iter().map(|c| (*op, *c, sc)));
        }
    }
    Ok(cells)
}

fn label(op: &str, column: Column, sc: &SweepScenario) -> String {
    let mut label = format!("sweep/{op}/{column:?}");
    let notes: Vec<&str> = [
        (sc.skip > 0, "the re-read before acting"),
        (sc.adopt, "adopted key"),
        (sc.deleted_by_hand, "key deleted by hand"),
        (sc.policy != "delete", sc.policy),
    ]
    .into_iter()
    .filter_map(|(on, note)| on.then_some(note))
    .collect();
    if !notes.is_empty() {
        label.push_str(&format!(" ({})", notes.join(", ")));
    }
    label
}

/// Runs the sweep cells, one at a time, through one function process on the proxy, in an
/// account of their own (a sweep acts on every due secret of its account): each faulted run is
/// about its cell's secret, beside the bystander.
pub(super) async fn run_cells(
    w: &World,
    proxy: &Proxy,
    cells: Vec<(&'static str, Column, SweepScenario)>,
    tally: &mut Tally,
) -> R<()> {
    let w = &w.in_own_account().await?;
    let api = &w.create_api().await?;
    let plan = &w.create_plan(Some(api)).await?;
    let clean = &w.rotator(&w.endpoint, config()).await?;
    let f = Function::start(
        "matrix-sweep",
        &[
            ("AWS_ENDPOINT_URL", proxy.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", w.access_key.clone()),
            ("ROTATOR_MAX_ATTEMPTS", "3".into()),
            ("ROTATOR_INITIAL_BACKOFF_MS", "2".into()),
            ("ROTATOR_MAX_BACKOFF_MS", "10".into()),
        ],
    )
    .await?;
    proxy.clear();
    proxy.set_phase(None);
    let bystander = Bystander::new(w, clean, plan).await?;
    for (op, column, sc) in cells {
        tally.cells += 1;
        let label = label(op, column, &sc);
        match cell(w, proxy, &f, clean, api, plan, op, column, sc).await {
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
        if let Err(e) = bystander.unchanged(w).await {
            tally.failures.push(format!("{label}: {e}"));
        }
    }
    proxy.clear();
    proxy.set_phase(None);
    Ok(())
}

/// Another secret with a key in its grace period (due in hours) and its current key: no sweep
/// may change either, nor its schedule.
struct Bystander {
    secret: String,
    keys: [String; 2],
    schedule: api_key_rotator::grace::Schedule,
}

impl Bystander {
    async fn new(w: &World, clean: &AwsRotator, plan: &str) -> R<Bystander> {
        let key_name = w.unique("sweep-bystander");
        let secret = w
            .create_secret(
                Some("{}"),
                &[
                    ("KeyName", key_name.as_str()),
                    ("UsagePlan", plan),
                    ("OldKeyAction", "delete"),
                    ("GracePeriod", GRACE),
                ],
            )
            .await?;
        w.rotate(clean, &secret, 1).await?;
        let previous = current_key(w, &secret).await?;
        w.rotate(clean, &secret, 1).await?;
        let current = current_key(w, &secret).await?;
        let schedule = schedule_of(w, &secret).await?;
        ensure!(
            schedule.due.contains_key(&previous),
            "the bystander's previous key is not scheduled: {schedule:?}"
        );
        Ok(Bystander {
            secret,
            keys: [previous, current],
            schedule,
        })
    }

    async fn unchanged(&self, w: &World) -> R<()> {
        for id in &self.keys {
            ensure!(
                w.key(id).await?.is_some_and(|k| k.enabled()),
                "another secret's key {id} (in its grace period, or current) was retired"
            );
        }
        ensure!(
            schedule_of(w, &self.secret).await? == self.schedule,
            "another secret's schedule changed"
        );
        Ok(())
    }
}

async fn current_key(w: &World, secret: &str) -> R<String> {
    Ok(str_field(&w.value(secret, "AWSCURRENT").await?, "api_key_id").ok_or("no current key")?)
}

/// One sweep cell. Returns the number of leaked keys, or why the invariants do not hold.
#[allow(clippy::too_many_arguments)]
async fn cell(
    w: &World,
    proxy: &Proxy,
    f: &Function,
    clean: &AwsRotator,
    api: &str,
    plan: &str,
    op: &str,
    column: Column,
    sc: SweepScenario,
) -> R<usize> {
    proxy.clear();
    proxy.reset_counts();
    proxy.set_phase(None);
    // A secret whose previous key is in its grace period, as finishSecret left it.
    let key_name = w.unique("matrix-sweep");
    let tags = [
        ("KeyName", key_name.as_str()),
        ("UsagePlan", plan),
        ("OldKeyAction", sc.policy),
        ("GracePeriod", GRACE),
    ];
    let (secret, due_key) = if sc.adopt {
        let (id, _) = w.create_key(&w.unique("adopted")).await?;
        w.attach(plan, &id).await?;
        let secret = w
            .create_secret(Some(&json!({"api_key_id": id}).to_string()), &tags)
            .await?;
        (secret, id)
    } else {
        let secret = w.create_secret(Some("{}"), &tags).await?;
        w.rotate(clean, &secret, 1).await?;
        let first = current_key(w, &secret).await?;
        (secret, first)
    };
    w.rotate(clean, &secret, 1).await?;
    let current = current_key(w, &secret).await?;
    let scheduled = schedule_of(w, &secret).await?;
    ensure!(
        scheduled.due.get(&due_key).is_some_and(|d| *d > now_secs()),
        "finishSecret did not schedule the previous key {due_key} in the future: {scheduled:?}"
    );
    // Its grace period ends: the entry is moved to the past, as time passing would.
    let (k, v) = schedule_tag(&due_key, now_secs() - 1);
    w.sm.tag_resource()
        .secret_id(&secret)
        .tags(Tag::builder().key(k).value(v).build())
        .send()
        .await?;
    if sc.deleted_by_hand {
        w.ag.delete_api_key().api_key(&due_key).send().await?;
    }

    let fault = match column {
        Column::FailsPastRetries => Fault::FailBefore,
        Column::AnswerLostPastRetries => Fault::LoseAnswer,
        other => return Err(format!("{other:?} is not a sweep column").into()),
    };
    proxy.inject_after(Some(PHASE), op, sc.skip, fault, u32::MAX);
    proxy.set_phase(Some(PHASE));
    let faulted = f.invoke(&json!({"Action": SWEEP_ACTION})).await;
    proxy.set_phase(None);
    proxy.clear();
    let faulted = faulted?;
    ensure!(
        proxy.injected(op) > 0,
        "the sweep never made {op}, so the fault was never injected"
    );
    let message = match &faulted {
        Ok(v) => return Err(format!("the faulted sweep answered {v}, not an error").into()),
        Err(e) => e
            .get("errorMessage")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    let called = op.trim_start_matches("secretsmanager:");
    ensure!(
        message.contains(called),
        "the faulted sweep's error does not name {called}: {message:?}"
    );

    // The next run, without faults, converges.
    let summary = f
        .invoke(&json!({"Action": SWEEP_ACTION}))
        .await?
        .map_err(|e| format!("the sweep after the fault failed: {e}"))?;
    let retired = w.key(&due_key).await?;
    match (sc.policy, sc.deleted_by_hand) {
        ("disable", false) => ensure!(
            retired.as_ref().is_some_and(|k| !k.enabled()),
            "the due key was not disabled: {summary}"
        ),
        _ => ensure!(retired.is_none(), "the due key was not deleted: {summary}"),
    }
    let schedule = schedule_of(w, &secret).await?;
    ensure!(
        schedule.is_empty(),
        "the schedule entry was not removed ({}): {schedule:?}",
        schedule_tag_key(&due_key)
    );
    ensure!(
        current_key(w, &secret).await? == current,
        "AWSCURRENT moved"
    );
    let key = w.key(&current).await?.ok_or("the current key is gone")?;
    ensure!(key.enabled(), "the current key was disabled");
    ensure!(
        w.plan_keys(plan).await?.contains(&current),
        "the current key left its usage plan"
    );
    let value = key.value().ok_or("no value for the current key")?;
    ensure!(
        w.call_stage(api, value).await? == 200,
        "the current key no longer gets in"
    );
    // Every key this secret's rotations made or tied, against those that may remain.
    let mut expected = BTreeSet::from([current]);
    if sc.policy == "disable" && !sc.deleted_by_hand {
        expected.insert(due_key);
    }
    let mut made: BTreeSet<String> = w
        .keys_with_prefix(&format!("{key_name}-"))
        .await?
        .iter()
        .filter_map(|k| k.id().map(str::to_owned))
        .collect();
    made.extend(tied_ids(w, &secret).await?);
    Ok(made.difference(&expected).count())
}
