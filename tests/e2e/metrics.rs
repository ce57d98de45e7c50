//! The rotation metrics (EMF lines) against what happened. The real binary runs under the
//! Lambda Runtime API, through the fault proxy, whose call counts are the ground truth: keys the
//! emulator created and deleted, steps that failed and with which error type. Every line is
//! checked against the EMF specification and against the dimension sets docs/metrics.md names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api_key_rotator::metrics::{Counts, Emf};
use api_key_rotator::AwsRotator;
use serde_json::{json, Value};

use crate::cases::{rotator, setup};
use crate::ensure;
use crate::support::proxy::{Fault, Proxy};
use crate::support::runtime::Function;
use crate::support::world::{str_field, World, STEPS};
use crate::support::R;

const NAMESPACE: &str = "E2ERotation";

/// The units CloudWatch accepts.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// The dimension sets each metric may carry, exactly (docs/metrics.md).
type Sets = &'static [&'static [&'static str]];

fn allowed_sets(metric: &str) -> &'static [Sets] {
    const STEP: Sets = &[&["Function"], &["Function", "Step"]];
    const FUNCTION: Sets = &[&["Function"]];
    const ERROR: Sets = &[&["Function", "Step", "ErrorType"]];
    const ACTION: Sets = &[&["Function", "Action"]];
    match metric {
        "StepDuration" | "StepSucceeded" => &[STEP],
        "StepFailed" => &[STEP, ERROR],
        "KeysRetired" => &[FUNCTION, ACTION],
        "KeysCreated" | "ThrottledCalls" | "RotationCompleted" => &[FUNCTION],
        _ => &[],
    }
}

/// Checks one EMF document: the `_aws` block with an integer Timestamp and CloudWatchMetrics
/// directives with Namespace, Dimensions and Metrics, every named dimension (a string) and
/// metric (a number) present in the document; then our own rules: only the dimension sets the
/// docs name, and the secret's name as a property.
pub fn check_emf(doc: &Value) -> Result<(), String> {
    let aws = doc.get("_aws").ok_or("no _aws block")?;
    let ts = aws.get("Timestamp").ok_or("no Timestamp")?;
    if !ts.is_u64() {
        return Err(format!("Timestamp {ts} is not an integer"));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or("CloudWatchMetrics is not a non-empty array")?;
    for d in directives {
        match d.get("Namespace").and_then(Value::as_str) {
            Some(ns) if ns == NAMESPACE => {}
            other => return Err(format!("Namespace {other:?}, expected {NAMESPACE}")),
        }
        let sets = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or("Dimensions is not an array")?;
        let mut names_sets: Vec<Vec<String>> = Vec::new();
        for set in sets {
            let set = set.as_array().ok_or("a dimension set is not an array")?;
            if set.is_empty() || set.len() > 30 {
                return Err("a dimension set must name 1 to 30 dimensions".into());
            }
            let mut names = Vec::new();
            for name in set {
                let name = name.as_str().ok_or("a dimension name is not a string")?;
                match doc.get(name) {
                    Some(Value::String(v)) if !v.is_empty() => {}
                    _ => return Err(format!("dimension {name} is not a string in the document")),
                }
                names.push(name.to_owned());
            }
            names_sets.push(names);
        }
        let metrics = d
            .get("Metrics")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty() && m.len() <= 100)
            .ok_or("Metrics is not an array of 1 to 100")?;
        for m in metrics {
            let name = m
                .get("Name")
                .and_then(Value::as_str)
                .ok_or("a metric has no Name")?;
            if !doc.get(name).is_some_and(Value::is_number) {
                return Err(format!(
                    "metric {name} has no numeric value in the document"
                ));
            }
            if let Some(unit) = m.get("Unit") {
                if !unit.as_str().is_some_and(|u| UNITS.contains(&u)) {
                    return Err(format!(
                        "metric {name}: unit {unit} is not a CloudWatch unit"
                    ));
                }
            }
            let allowed = allowed_sets(name);
            if !allowed.iter().any(|a| {
                a.len() == names_sets.len()
                    && a.iter().zip(&names_sets).all(|(x, y)| {
                        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| *p == q.as_str())
                    })
            }) {
                return Err(format!(
                    "metric {name} with dimension sets {names_sets:?}, not one the docs name"
                ));
            }
        }
    }
    if !doc.get("SecretName").is_some_and(Value::is_string) {
        return Err("no SecretName property".into());
    }
    Ok(())
}

/// The EMF documents in a log, each checked.
fn emf_docs(log: &str) -> R<Vec<Value>> {
    let mut docs = Vec::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v.get("_aws").is_some() {
            check_emf(&v).map_err(|e| format!("invalid EMF line: {e}: {line}"))?;
            ensure!(
                v.get("level").is_none(),
                "an EMF line carries a level: {line}"
            );
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Sums of what the documents say, by series.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    /// [Function] series.
    by_metric: BTreeMap<String, u64>,
    /// [Function, Action] KeysRetired.
    retired_by_action: BTreeMap<String, u64>,
    /// [Function, Step, ErrorType] StepFailed.
    failed_by: BTreeMap<(String, String), u64>,
    invocations: BTreeSet<String>,
}

fn totals(docs: &[Value]) -> Totals {
    let mut t = Totals::default();
    for d in docs {
        let n = |k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0);
        let s = |k: &str| {
            d.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if let Some(action) = d.get("Action") {
            *t.retired_by_action
                .entry(action.as_str().unwrap_or_default().to_owned())
                .or_default() += n("KeysRetired");
        } else if d.get("ErrorType").is_some() {
            *t.failed_by.entry((s("Step"), s("ErrorType"))).or_default() += n("StepFailed");
        } else {
            t.invocations.insert(s("RequestId"));
            for m in [
                "StepSucceeded",
                "StepFailed",
                "KeysCreated",
                "KeysRetired",
                "ThrottledCalls",
                "RotationCompleted",
            ] {
                *t.by_metric.entry(m.to_owned()).or_default() += n(m);
            }
        }
    }
    t
}

/// The documents written since the last call.
struct Reader<'a> {
    f: &'a Function,
    seen: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> R<Totals> {
        let docs = emf_docs(&self.f.logs())?;
        let new = docs.get(self.seen..).unwrap_or_default().to_vec();
        self.seen = docs.len();
        Ok(totals(&new))
    }
}

/// Runs the whole rotation as Secrets Manager would (re-running after a failure); returns the
/// failures as (step, errorType).
async fn drive(f: &Function, secret: &str, token: &str) -> R<Vec<(String, String)>> {
    let mut failures = Vec::new();
    for _ in 0..4 {
        let mut failed = false;
        for step in STEPS {
            if let Err(e) = f.invoke(&World::event(step, secret, token)).await? {
                let kind = e["errorType"].as_str().unwrap_or_default().to_owned();
                failures.push((step.to_owned(), kind));
                failed = true;
                break;
            }
        }
        if !failed {
            return Ok(failures);
        }
    }
    Err(format!("the rotation did not complete: {failures:?}").into())
}

fn metric(t: &Totals, name: &str) -> u64 {
    t.by_metric.get(name).copied().unwrap_or(0)
}

/// The binary's EMF lines agree with the proxy's count of what the emulator did: keys created
/// (a duplicate from a lost answer included) and deleted, the failed step with its error type,
/// throttled calls, AWSCURRENT moved; a replay of a finished rotation counts nothing but its
/// steps. The function logs at ERROR, and the lines still arrive.
pub async fn emf_metrics_agree_with_what_happened(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let f = Function::start(
        "metrics",
        &[
            ("AWS_ENDPOINT_URL", proxy.endpoint.clone()),
            ("ROTATOR_MAX_ATTEMPTS", "3".into()),
            ("ROTATOR_INITIAL_BACKOFF_MS", "2".into()),
            ("ROTATOR_MAX_BACKOFF_MS", "10".into()),
            ("METRICS_NAMESPACE", NAMESPACE.into()),
            ("AWS_LAMBDA_LOG_LEVEL", "ERROR".into()),
        ],
    )
    .await?;
    let mut reader = Reader { f: &f, seen: 0 };
    let s = setup(&w, Some("{}"), &[]).await?;

    // The first rotation: one key, nothing to retire.
    proxy.reset_counts();
    let token = w.open_rotation(&s.secret).await?;
    let failures = drive(&f, &s.secret, &token).await?;
    let t = reader.next()?;
    ensure!(failures.is_empty(), "{failures:?}");
    ensure!(
        t.invocations.len() == 4,
        "{} invocations in the metrics",
        t.invocations.len()
    );
    ensure!(
        metric(&t, "StepSucceeded") == 4 && metric(&t, "StepFailed") == 0,
        "{t:?}"
    );
    ensure!(
        metric(&t, "KeysCreated") == u64::from(proxy.calls("CreateApiKey")),
        "{t:?}"
    );
    ensure!(metric(&t, "KeysCreated") == 1, "{t:?}");
    ensure!(
        metric(&t, "KeysRetired") == 0 && t.retired_by_action.is_empty(),
        "{t:?}"
    );
    ensure!(metric(&t, "RotationCompleted") == 1, "{t:?}");

    // The second: CreateApiKey's answer lost once (the SDK's retry makes a second key), two
    // throttled GetUsagePlan answers, and PutSecretValue failing past the SDK's retries: the
    // rotation is re-run.
    proxy.reset_counts();
    let token = w.open_rotation(&s.secret).await?;
    proxy.inject("CreateApiKey", Fault::LoseAnswer, 1);
    proxy.inject("GetUsagePlan", Fault::Throttle, 2);
    proxy.inject("PutSecretValue", Fault::FailBefore, 3);
    let failures = drive(&f, &s.secret, &token).await?;
    let t = reader.next()?;
    ensure!(
        proxy.injected("CreateApiKey") == 1,
        "the lost answer was not injected"
    );
    ensure!(
        failures == vec![("createSecret".to_owned(), "AwsFailure".to_owned())],
        "{failures:?}"
    );
    let expected_failed = BTreeMap::from([(("createSecret".into(), "AwsFailure".into()), 1)]);
    ensure!(t.failed_by == expected_failed, "{:?}", t.failed_by);
    ensure!(metric(&t, "StepFailed") == 1, "{t:?}");
    ensure!(metric(&t, "StepSucceeded") == 4, "{t:?}");
    let created = u64::from(proxy.calls("CreateApiKey"));
    ensure!(
        created == 2,
        "the SDK did not retry the lost create ({created} calls)"
    );
    ensure!(
        metric(&t, "KeysCreated") == created,
        "KeysCreated {} but the emulator created {created}",
        metric(&t, "KeysCreated")
    );
    let deleted = u64::from(proxy.calls("DeleteApiKey"));
    ensure!(
        deleted == 2,
        "expected the duplicate and the previous key deleted, got {deleted}"
    );
    ensure!(metric(&t, "KeysRetired") == deleted, "{t:?}");
    ensure!(
        t.retired_by_action == BTreeMap::from([("deleted".into(), deleted)]),
        "{:?}",
        t.retired_by_action
    );
    // Both throttled answers went to createSecret's one GetUsagePlan call, which the call
    // policy waited out: one call retried for throttling.
    ensure!(
        proxy.injected("GetUsagePlan") == 2,
        "the throttling was not injected"
    );
    ensure!(
        metric(&t, "ThrottledCalls") == 1,
        "ThrottledCalls {} for one call throttled twice",
        metric(&t, "ThrottledCalls")
    );
    ensure!(metric(&t, "RotationCompleted") == 1, "{t:?}");

    // A replay of the finished rotation finds the work done and counts no effect.
    proxy.reset_counts();
    let failures = drive(&f, &s.secret, &token).await?;
    let t = reader.next()?;
    ensure!(failures.is_empty(), "{failures:?}");
    ensure!(metric(&t, "StepSucceeded") == 4, "{t:?}");
    for m in [
        "KeysCreated",
        "KeysRetired",
        "RotationCompleted",
        "StepFailed",
    ] {
        ensure!(metric(&t, m) == 0, "the replay counted {m}: {t:?}");
    }
    ensure!(t.retired_by_action.is_empty(), "{t:?}");

    // An event that is not a rotation: counted under Step "unknown", with its error type.
    let bad = f.invoke(&json!({"Step": "bogus", "SecretId": "x"})).await?;
    ensure!(bad.is_err(), "a bad event succeeded");
    let t = reader.next()?;
    ensure!(
        t.failed_by == BTreeMap::from([(("unknown".into(), "InvalidEvent".into()), 1)]),
        "{:?}",
        t.failed_by
    );

    // Beside the tracing filter, not through it: at ERROR no INFO line was written, and the
    // metrics arrived anyway. No line holds a key value.
    let logs = f.logs();
    ensure!(!logs.contains("created key"), "INFO lines at ERROR level");
    let value =
        str_field(&w.value(&s.secret, "AWSCURRENT").await?, "api_key_value").unwrap_or_default();
    ensure!(
        !value.is_empty() && !logs.contains(&value),
        "a key value reached the logs"
    );
    let names: BTreeSet<String> = emf_docs(&logs)?
        .iter()
        .filter_map(|d| d["SecretName"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        names.iter().any(|n| s.secret.contains(n.as_str())),
        "{names:?}"
    );
    Ok(())
}

/// One rotation through the in-process handler, its effects summed and its EMF lines checked.
async fn rotation_counts(w: &World, r: &AwsRotator, secret: &str) -> R<Counts> {
    let token = w.open_rotation(secret).await?;
    steps_counts(r, secret, &token).await
}

async fn steps_counts(r: &AwsRotator, secret: &str, token: &str) -> R<Counts> {
    let emf = Emf {
        namespace: NAMESPACE.into(),
        function: "api-key-rotator".into(),
    };
    let mut sum = Counts::default();
    for step in STEPS {
        let (result, inv) = r.handle_measured(&World::event(step, secret, token)).await;
        result?;
        for line in emf.lines(&inv, "in-process", 1) {
            check_emf(&serde_json::from_str(&line)?).map_err(|e| format!("{e}: {line}"))?;
        }
        let c = inv.counts;
        sum.keys_created += c.keys_created;
        sum.keys_deleted += c.keys_deleted;
        sum.keys_disabled += c.keys_disabled;
        sum.keys_kept += c.keys_kept;
        sum.rotations_completed += c.rotations_completed;
        sum.throttled_calls += c.throttled_calls;
    }
    Ok(sum)
}

/// Each policy's retirement counted under its action, once: the previous key deleted, disabled
/// or kept when AWSCURRENT moves, the key two rotations back deleted, and nothing on a replay.
pub async fn retirements_are_counted_once_per_policy(w: Arc<World>) -> R<()> {
    for policy in ["delete", "disable", "keep-previous"] {
        let s = setup(&w, Some("{}"), &[("OldKeyAction", policy)]).await?;
        let r = rotator(&w).await?;
        let first = rotation_counts(&w, &r, &s.secret).await?;
        ensure!(
            first
                == Counts {
                    keys_created: 1,
                    rotations_completed: 1,
                    ..Counts::default()
                },
            "{policy}, first rotation: {first:?}"
        );
        let token = w.open_rotation(&s.secret).await?;
        let second = steps_counts(&r, &s.secret, &token).await?;
        let mut expected = Counts {
            keys_created: 1,
            rotations_completed: 1,
            ..Counts::default()
        };
        match policy {
            "delete" => expected.keys_deleted = 1,
            "disable" => expected.keys_disabled = 1,
            _ => expected.keys_kept = 1,
        }
        ensure!(second == expected, "{policy}, second rotation: {second:?}");
        let replay = steps_counts(&r, &s.secret, &token).await?;
        ensure!(replay == Counts::default(), "{policy}, replay: {replay:?}");
        let third = rotation_counts(&w, &r, &s.secret).await?;
        // The key two rotations back is deleted under every policy that kept it.
        if policy != "delete" {
            expected.keys_deleted = 1;
        }
        ensure!(third == expected, "{policy}, third rotation: {third:?}");
    }
    Ok(())
}
