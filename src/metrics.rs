//! What a rotation did, as CloudWatch metrics in the Embedded Metric Format (EMF): JSON log
//! lines that CloudWatch Logs turns into metrics, with no PutMetricData call, no permission and
//! no latency.
//!
//! Two halves:
//! - the **effect recorder**: one per invocation, scoped over the invocation's future. The
//!   steps call [`record`] where an effect actually happens (a key created, a key retired,
//!   AWSCURRENT moved, a call throttled), so a re-run that finds the work done counts nothing.
//!   Outside a scope (unit tests calling a step directly) [`record`] does nothing.
//! - the **EMF writer**: turns one [`Invocation`] into a few EMF documents. Only the Lambda
//!   entry point writes them, to stdout beside (not through) the tracing filter.
//!
//! Dimension sets, exactly: `[Function]` on every metric (the aggregate series alarms use),
//! `[Function, Step]` on the step metrics, `[Function, Step, ErrorType]` on `StepFailed`, and
//! `[Function, Action]` on `KeysRetired`. The secret's name is a property, never a dimension;
//! no line carries a key value or the RotationToken.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::error::ErrorKind;
use crate::event::Step;

/// The namespace when `METRICS_NAMESPACE` is unset (the template's default too).
pub const DEFAULT_NAMESPACE: &str = "ApiKeyRotator";

/// What happened to a retired key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    Deleted,
    Disabled,
    /// The previous key left valid (OldKeyAction=keep-previous). Counted only in the invocation
    /// that moved AWSCURRENT, so a re-run of finishSecret does not count it again.
    Kept,
}

impl Retired {
    pub const ALL: [Retired; 3] = [Retired::Deleted, Retired::Disabled, Retired::Kept];

    /// The `Action` dimension's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Retired::Deleted => "deleted",
            Retired::Disabled => "disabled",
            Retired::Kept => "kept",
        }
    }
}

/// An effect a step had, recorded where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// CreateApiKey answered (a duplicate made by a lost answer is counted when it is found and
    /// deleted, as `KeyRetired(Deleted)`; see `KeysCreated` in docs/metrics.md).
    KeyCreated,
    KeyRetired(Retired),
    /// AWSCURRENT moved to the token's version in this invocation.
    RotationCompleted,
    /// An AWS answer refused for throttling (429 TooManyRequests, ThrottlingException); the SDK
    /// retries it while attempts remain.
    ThrottledCall,
}

/// An invocation's effects so far. Atomic, so the recorder can be shared by the futures a step
/// joins.
#[derive(Debug, Default)]
struct Recorder {
    created: AtomicU64,
    deleted: AtomicU64,
    disabled: AtomicU64,
    kept: AtomicU64,
    completed: AtomicU64,
    throttled: AtomicU64,
    secret_name: Mutex<Option<String>>,
}

impl Recorder {
    fn add(&self, effect: Effect) {
        let counter = match effect {
            Effect::KeyCreated => &self.created,
            Effect::KeyRetired(Retired::Deleted) => &self.deleted,
            Effect::KeyRetired(Retired::Disabled) => &self.disabled,
            Effect::KeyRetired(Retired::Kept) => {
                if self.completed.load(Ordering::Relaxed) == 0 {
                    return;
                }
                &self.kept
            }
            Effect::RotationCompleted => &self.completed,
            Effect::ThrottledCall => &self.throttled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            keys_created: get(&self.created),
            keys_deleted: get(&self.deleted),
            keys_disabled: get(&self.disabled),
            keys_kept: get(&self.kept),
            rotations_completed: get(&self.completed),
            throttled_calls: get(&self.throttled),
        }
    }
}

tokio::task_local! {
    static RECORDER: Arc<Recorder>;
}

/// Records an effect of the current invocation; nothing outside one.
pub fn record(effect: Effect) {
    let _ = RECORDER.try_with(|r| r.add(effect));
}

/// Records the secret's name (from DescribeSecret) for the `SecretName` property.
pub fn record_secret_name(name: &str) {
    let _ = RECORDER.try_with(|r| {
        if let Ok(mut slot) = r.secret_name.lock() {
            *slot = Some(name.to_owned());
        }
    });
}

/// Runs `fut` with a fresh recorder and returns what it recorded.
pub async fn measured<F: Future>(fut: F) -> (F::Output, Counts, Option<String>) {
    let recorder = Arc::new(Recorder::default());
    let out = RECORDER.scope(recorder.clone(), fut).await;
    let name = recorder.secret_name.lock().ok().and_then(|n| n.clone());
    (out, recorder.counts(), name)
}

/// What one invocation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub keys_created: u64,
    pub keys_deleted: u64,
    pub keys_disabled: u64,
    pub keys_kept: u64,
    pub rotations_completed: u64,
    pub throttled_calls: u64,
}

impl Counts {
    pub fn keys_retired(&self) -> u64 {
        self.keys_deleted + self.keys_disabled + self.keys_kept
    }
    pub fn retired(&self, action: Retired) -> u64 {
        match action {
            Retired::Deleted => self.keys_deleted,
            Retired::Disabled => self.keys_disabled,
            Retired::Kept => self.keys_kept,
        }
    }
}

/// One invocation, as the metrics describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `None` when the event named no known step.
    pub step: Option<Step>,
    /// The secret's name when DescribeSecret answered, else the SecretId the event gave.
    pub secret: String,
    pub duration: Duration,
    /// `None` when the step succeeded.
    pub error: Option<ErrorKind>,
    pub counts: Counts,
}

/// One retirement sweep, as the metrics describe it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SweepRun {
    pub duration: Duration,
    pub due_secrets: u64,
    pub retired_at_expiry: u64,
    pub past_grace: u64,
    /// The sweep failed, or a secret's retirements did.
    pub failed: bool,
    pub counts: Counts,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// One metric directive: its dimension sets, and its metrics as (name, unit).
type Directive<'a> = (&'a [&'a [&'a str]], &'a [(&'a str, &'a str)]);

/// Where and under what names the lines go: the Lambda entry point builds it from the
/// environment Lambda sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emf {
    pub namespace: String,
    /// The `Function` dimension's value.
    pub function: String,
}

impl Emf {
    /// `METRICS_NAMESPACE` (default `ApiKeyRotator`) and `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Emf {
        let pick = |name: &str, default: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty() && v.len() <= 255)
                .unwrap_or_else(|| default.to_owned())
        };
        Emf {
            namespace: pick("METRICS_NAMESPACE", DEFAULT_NAMESPACE),
            function: pick("AWS_LAMBDA_FUNCTION_NAME", "api-key-rotator"),
        }
    }

    /// The EMF documents for one invocation, one JSON object a line: the step and effect
    /// metrics, then one line per error type and per retirement action that occurred (a
    /// document carries one value per dimension, so each extra series needs its own).
    pub fn lines(&self, inv: &Invocation, request_id: &str, timestamp_ms: u64) -> Vec<String> {
        let step = inv.step.map(Step::as_str).unwrap_or("unknown");
        let c = &inv.counts;
        let failed = u64::from(inv.error.is_some());
        let mut docs = vec![self.document(
            timestamp_ms,
            &[
                (
                    &[&["Function"], &["Function", "Step"]],
                    &[
                        ("StepDuration", "Milliseconds"),
                        ("StepSucceeded", "Count"),
                        ("StepFailed", "Count"),
                    ],
                ),
                (
                    &[&["Function"]],
                    &[
                        ("KeysCreated", "Count"),
                        ("KeysRetired", "Count"),
                        ("ThrottledCalls", "Count"),
                        ("RotationCompleted", "Count"),
                    ],
                ),
            ],
            [
                ("Step", json!(step)),
                (
                    "StepDuration",
                    json!((inv.duration.as_secs_f64() * 1e6).round() / 1e3),
                ),
                ("StepSucceeded", json!(1 - failed)),
                ("StepFailed", json!(failed)),
                ("KeysCreated", json!(c.keys_created)),
                ("KeysRetired", json!(c.keys_retired())),
                ("ThrottledCalls", json!(c.throttled_calls)),
                ("RotationCompleted", json!(c.rotations_completed)),
            ],
            &inv.secret,
            request_id,
        )];
        if let Some(kind) = inv.error {
            docs.push(self.document(
                timestamp_ms,
                &[(
                    &[&["Function", "Step", "ErrorType"]],
                    &[("StepFailed", "Count")],
                )],
                [
                    ("Step", json!(step)),
                    ("ErrorType", json!(kind.as_str())),
                    ("StepFailed", json!(1)),
                ],
                &inv.secret,
                request_id,
            ));
        }
        for action in Retired::ALL {
            let n = c.retired(action);
            if n > 0 {
                docs.push(self.document(
                    timestamp_ms,
                    &[(&[&["Function", "Action"]], &[("KeysRetired", "Count")])],
                    [
                        ("Action", json!(action.as_str())),
                        ("KeysRetired", json!(n)),
                    ],
                    &inv.secret,
                    request_id,
                ));
            }
        }
        docs.into_iter().map(|d| d.to_string()).collect()
    }

    /// One EMF document: the `_aws` metadata (integer Timestamp, one directive per group of
    /// metrics sharing dimension sets), the `Function` dimension, the members, and the
    /// non-dimension properties.
    fn document<const N: usize>(
        &self,
        timestamp_ms: u64,
        directives: &[Directive<'_>],
        members: [(&str, Value); N],
        secret: &str,
        request_id: &str,
    ) -> Value {
        let directives: Vec<Value> = directives
            .iter()
            .map(|(dimensions, metrics)| {
                json!({
                    "Namespace": self.namespace,
                    "Dimensions": dimensions,
                    "Metrics": metrics
                        .iter()
                        .map(|(name, unit)| json!({"Name": name, "Unit": unit}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut doc = Map::new();
        doc.insert(
            "_aws".to_owned(),
            json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
        );
        doc.insert("Function".to_owned(), json!(self.function));
        for (name, value) in members {
            doc.insert(name.to_owned(), value);
        }
        if !secret.is_empty() {
            doc.insert("SecretName".to_owned(), json!(secret));
        }
        if !request_id.is_empty() {
            doc.insert("RequestId".to_owned(), json!(request_id));
        }
        Value::Object(doc)
    }

    /// The EMF documents for one retirement sweep: `KeysRetiredAtExpiry` (keys retired at the
    /// end of their grace), `KeysPastGrace` (due keys this run left alive: the alarm's metric),
    /// `SweepDuration`, `SweepFailed`, and `KeysRetired` by action as the steps report it.
    pub fn sweep_lines(&self, run: &SweepRun, request_id: &str, timestamp_ms: u64) -> Vec<String> {
        let mut docs = vec![self.document(
            timestamp_ms,
            &[(
                &[&["Function"]],
                &[
                    ("KeysRetiredAtExpiry", "Count"),
                    ("KeysPastGrace", "Count"),
                    ("SweepDuration", "Milliseconds"),
                    ("SweepFailed", "Count"),
                    ("ThrottledCalls", "Count"),
                ],
            )],
            [
                ("Step", json!(crate::event::SWEEP_ACTION)),
                ("KeysRetiredAtExpiry", json!(run.retired_at_expiry)),
                ("KeysPastGrace", json!(run.past_grace)),
                (
                    "SweepDuration",
                    json!((run.duration.as_secs_f64() * 1e6).round() / 1e3),
                ),
                ("SweepFailed", json!(u64::from(run.failed))),
                ("ThrottledCalls", json!(run.counts.throttled_calls)),
                ("DueSecrets", json!(run.due_secrets)),
            ],
            "",
            request_id,
        )];
        for action in [Retired::Deleted, Retired::Disabled] {
            let n = run.counts.retired(action);
            if n > 0 {
                docs.push(self.document(
                    timestamp_ms,
                    &[(&[&["Function", "Action"]], &[("KeysRetired", "Count")])],
                    [
                        ("Action", json!(action.as_str())),
                        ("KeysRetired", json!(n)),
                    ],
                    "",
                    request_id,
                ));
            }
        }
        docs.into_iter().map(|d| d.to_string()).collect()
    }

    /// Writes a sweep's lines, as `write` does an invocation's.
    pub fn write_sweep(&self, run: &SweepRun, request_id: &str) {
        self.write_lines(self.sweep_lines(run, request_id, now_ms()));
    }

    /// Writes the invocation's lines to stdout in one locked write, beside the tracing output
    /// (not through its level filter). A failed write loses metrics, never the invocation.
    pub fn write(&self, inv: &Invocation, request_id: &str) {
        self.write_lines(self.lines(inv, request_id, now_ms()));
    }

    fn write_lines(&self, lines: Vec<String>) {
        use std::io::Write;
        let mut text = String::new();
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emf() -> Emf {
        Emf {
            namespace: "Test".into(),
            function: "rotator".into(),
        }
    }

    fn docs(inv: &Invocation) -> Vec<Value> {
        emf()
            .lines(inv, "req-1", 1_700_000_000_123)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect()
    }

    fn invocation(error: Option<ErrorKind>, counts: Counts) -> Invocation {
        Invocation {
            step: Some(Step::Finish),
            secret: "api-keys/partner".into(),
            duration: Duration::from_micros(12_345),
            error,
            counts,
        }
    }

    #[test]
    fn a_success_is_one_line_with_every_metric_and_zeros() {
        let d = docs(&invocation(None, Counts::default()));
        assert_eq!(d.len(), 1);
        let doc = &d[0];
        assert_eq!(doc["_aws"]["Timestamp"], json!(1_700_000_000_123u64));
        assert_eq!(doc["Function"], "rotator");
        assert_eq!(doc["Step"], "finishSecret");
        assert_eq!(doc["SecretName"], "api-keys/partner");
        assert_eq!(doc["StepDuration"], json!(12.345));
        assert_eq!(doc["StepSucceeded"], json!(1));
        assert_eq!(doc["StepFailed"], json!(0));
        assert_eq!(doc["KeysCreated"], json!(0));
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"], ["Function", "Step"]])
        );
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][1]["Dimensions"],
            json!([["Function"]])
        );
    }

    #[test]
    fn a_failure_adds_the_error_type_series_and_retirements_their_action_series() {
        let counts = Counts {
            keys_deleted: 2,
            keys_disabled: 1,
            ..Counts::default()
        };
        let d = docs(&invocation(Some(ErrorKind::AwsFailure), counts));
        assert_eq!(d.len(), 4);
        assert_eq!(d[0]["StepFailed"], json!(1));
        assert_eq!(d[0]["StepSucceeded"], json!(0));
        assert_eq!(d[0]["KeysRetired"], json!(3));
        assert_eq!(d[1]["ErrorType"], "AwsFailure");
        assert_eq!(
            d[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Step", "ErrorType"]])
        );
        assert_eq!(
            (d[2]["Action"].clone(), d[2]["KeysRetired"].clone()),
            (json!("deleted"), json!(2))
        );
        assert_eq!(
            (d[3]["Action"].clone(), d[3]["KeysRetired"].clone()),
            (json!("disabled"), json!(1))
        );
    }

    #[tokio::test]
    async fn effects_count_inside_their_scope_only() {
        record(Effect::KeyCreated);
        let ((), counts, name) = measured(async {
            record_secret_name("s");
            record(Effect::KeyCreated);
            // Kept before AWSCURRENT moved is not a retirement (a re-run of finishSecret).
            record(Effect::KeyRetired(Retired::Kept));
            record(Effect::RotationCompleted);
            record(Effect::KeyRetired(Retired::Kept));
            record(Effect::ThrottledCall);
        })
        .await;
        assert_eq!(name.as_deref(), Some("s"));
        assert_eq!(
            counts,
            Counts {
                keys_created: 1,
                keys_kept: 1,
                rotations_completed: 1,
                throttled_calls: 1,
                ..Counts::default()
            }
        );
    }
}
