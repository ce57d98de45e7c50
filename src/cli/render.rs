//! The commands' output: one JSON document (`--json`, `schema_version` 1, documented in
//! `docs/operator-commands.md` and only ever added to), one JSON object a line as each entry is
//! ready (`--json-lines`), or a readable table, also printed entry by entry. All are built from
//! the same entries. Nothing here holds a key value or any of the user's own fields.

use aws_smithy_types::date_time::{DateTime, Format};
use serde_json::{json, Value};

use super::{EXIT_FINDINGS, EXIT_OK, EXIT_UNREADABLE};
use crate::finding::Finding;
use crate::ops::KeyError;
use crate::ops::{
    CleanupOutcome, DeletedSecretKeys, Inspection, KeyView, RevokeOutcome, RevokeRotation,
    RollbackOutcome, RollbackStep, Unreadable, VersionView,
};

pub const SCHEMA_VERSION: u32 = 1;

/// One secret's part of the report: its JSON, its lines of text, and its exit code.
pub struct Entry {
    json: Value,
    text: Vec<String>,
    exit: u8,
    arn: Option<String>,
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Text, each entry as it is ready.
    Text,
    /// One JSON document at the end.
    Json,
    /// One JSON object a line, each entry as it is ready, and a last line with the exit code.
    JsonLines,
}

/// The report: entries are printed as they are pushed (text and JSON lines) or kept for the one
/// document printed by `finish` (JSON).
pub struct Report {
    command: &'static str,
    output: Output,
    entries: Vec<Value>,
    arns: Vec<String>,
    extra: Vec<(&'static str, Value)>,
    deleted: Vec<Value>,
    /// Text blocks printed so far.
    printed: usize,
    listed_all: bool,
    exit: u8,
}

fn date(secs: Option<i64>) -> Value {
    secs.and_then(|s| DateTime::from_secs(s).fmt(Format::DateTime).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn date_text(secs: Option<i64>) -> String {
    match date(secs) {
        Value::String(s) => s,
        _ => "-".to_owned(),
    }
}

fn findings_json(findings: &[Finding]) -> Value {
    Value::Array(
        findings
            .iter()
            .map(|f| {
                json!({
                    "code": f.code.as_str(),
                    "severity": f.severity.as_str(),
                    "message": f.message,
                    "fix": f.fix,
                })
            })
            .collect(),
    )
}

fn findings_text(findings: &[Finding], out: &mut Vec<String>) {
    if findings.is_empty() {
        out.push("  findings: none".to_owned());
        return;
    }
    out.push("  findings:".to_owned());
    for f in findings {
        out.push(format!(
            "    {:<7}  {}  {}",
            f.severity.as_str(),
            f.code,
            f.message
        ));
        out.push(format!("             fix: {}", f.fix));
    }
}

fn key_json(k: &KeyView) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "enabled": k.enabled,
        "usage_plan_ids": k.usage_plan_ids,
        "created": date(k.created),
        "tie": k.tie,
        "role": k.role.as_str(),
        "retire_at": date(k.retire_at),
    })
}

fn version_json(v: &VersionView) -> Value {
    json!({
        "id": v.id,
        "stages": v.stages,
        "created": date(v.created),
        "key_id": v.key_id,
    })
}

/// Rows as aligned columns, indented.
fn table(indent: &str, header: &[&str], rows: &[Vec<String>], out: &mut Vec<String>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = indent.to_owned();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            s.push_str(&format!("{cell:<w$}  "));
        }
        s.trim_end().to_owned()
    };
    out.push(line(header.to_vec()));
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
}

fn keys_text(keys: &[KeyView], out: &mut Vec<String>) {
    if keys.is_empty() {
        out.push("  keys: none".to_owned());
        return;
    }
    out.push("  keys:".to_owned());
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.role.as_str().to_owned(),
                if k.enabled { "yes" } else { "no" }.to_owned(),
                if k.usage_plan_ids.is_empty() {
                    "-".to_owned()
                } else {
                    k.usage_plan_ids.join(",")
                },
                date_text(k.created),
                k.tie.clone().unwrap_or_else(|| "-".to_owned()),
                date_text(k.retire_at),
            ]
        })
        .collect();
    table(
        "    ",
        &[
            "ID", "NAME", "ROLE", "ENABLED", "PLANS", "CREATED", "TIE", "RETIRES",
        ],
        &rows,
        out,
    );
}

fn header(input: &str, seen: &Inspection) -> String {
    if input == seen.meta.name || input == seen.meta.arn {
        format!("{} ({})", seen.meta.name, seen.meta.arn)
    } else {
        format!("{input}: {} ({})", seen.meta.name, seen.meta.arn)
    }
}

impl Entry {
    fn base(input: &str, seen: &Inspection) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("input".into(), Value::String(input.to_owned()));
        m.insert("secret".into(), Value::String(seen.meta.arn.clone()));
        m
    }

    fn findings_exit(seen: &Inspection) -> u8 {
        if seen.has_errors() {
            EXIT_FINDINGS
        } else {
            EXIT_OK
        }
    }

    pub fn unreadable(input: String, e: Unreadable) -> Entry {
        Entry {
            text: vec![format!("{input}: cannot be read: {}", e.0)],
            json: json!({"input": input, "secret": null, "error": e.0}),
            exit: EXIT_UNREADABLE,
            arn: None,
        }
    }

    pub fn check(input: String, seen: Inspection) -> Entry {
        let mut m = Self::base(&input, &seen);
        m.insert("ok".into(), Value::Bool(!seen.has_errors()));
        m.insert("findings".into(), findings_json(&seen.findings));
        let mut text = vec![format!(
            "{}: {}",
            header(&input, &seen),
            if seen.has_errors() { "NOT OK" } else { "ok" }
        )];
        findings_text(&seen.findings, &mut text);
        Entry {
            json: Value::Object(m),
            text,
            exit: Self::findings_exit(&seen),
            arn: Some(seen.meta.arn.clone()),
        }
    }

    pub fn status(input: String, seen: Inspection) -> Entry {
        let r = &seen.meta.rotation;
        let mut m = Self::base(&input, &seen);
        m.insert("name".into(), Value::String(seen.meta.name.clone()));
        m.insert(
            "rotation_enabled".into(),
            Value::Bool(seen.meta.rotation_enabled),
        );
        m.insert("rotation_lambda_arn".into(), json!(r.lambda_arn));
        m.insert("rotation_schedule".into(), json!(r.schedule));
        m.insert("last_rotated".into(), date(r.last_rotated));
        m.insert("next_rotation".into(), date(r.next_rotation));
        m.insert(
            "versions".into(),
            Value::Array(seen.versions.iter().map(version_json).collect()),
        );
        m.insert(
            "keys".into(),
            Value::Array(seen.keys.iter().map(key_json).collect()),
        );
        m.insert("findings".into(), findings_json(&seen.findings));
        let mut text = vec![header(&input, &seen)];
        text.push(format!(
            "  rotation: {}; function {}; schedule {}; last rotated {}; next {}",
            if seen.meta.rotation_enabled {
                "enabled"
            } else {
                "not enabled"
            },
            r.lambda_arn.as_deref().unwrap_or("-"),
            r.schedule.as_deref().unwrap_or("-"),
            date_text(r.last_rotated),
            date_text(r.next_rotation),
        ));
        text.push("  versions:".to_owned());
        let rows: Vec<Vec<String>> = seen
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.id.clone(),
                    v.stages.join(","),
                    date_text(v.created),
                    v.key_id.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        table(
            "    ",
            &["VERSION", "STAGES", "CREATED", "KEY"],
            &rows,
            &mut text,
        );
        keys_text(&seen.keys, &mut text);
        findings_text(&seen.findings, &mut text);
        Entry {
            json: Value::Object(m),
            text,
            exit: Self::findings_exit(&seen),
            arn: Some(seen.meta.arn.clone()),
        }
    }

    pub fn cleanup(input: String, seen: &Inspection, out: CleanupOutcome, apply: bool) -> Entry {
        let mut m = Self::base(&input, seen);
        let mut text = vec![header(&input, seen)];
        let exit = cleanup_into(&mut m, &mut text, &out, apply);
        Entry {
            json: Value::Object(m),
            text,
            exit,
            arn: Some(seen.meta.arn.clone()),
        }
    }

    /// A command's entry that may have been refused or have failed (rollback, revoke): the
    /// failure's line, and exit 1 for either.
    fn refusable(
        m: serde_json::Map<String, Value>,
        mut text: Vec<String>,
        seen: &Inspection,
        refused: Option<&str>,
        failed: Option<&str>,
    ) -> Entry {
        if let Some(e) = failed {
            text.push(format!("  failed: {e}"));
        }
        let exit = if refused.is_some() || failed.is_some() {
            EXIT_FINDINGS
        } else {
            EXIT_OK
        };
        Entry {
            json: Value::Object(m),
            text,
            exit,
            arn: Some(seen.meta.arn.clone()),
        }
    }

    pub fn rollback(input: String, seen: &Inspection, out: RollbackOutcome, apply: bool) -> Entry {
        let mut m = Self::base(&input, seen);
        m.insert("dry_run".into(), Value::Bool(!apply));
        let mut text = vec![header(&input, seen)];
        let steps: Vec<Value> = out
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut s = match step {
                    RollbackStep::Unschedule { key_id } | RollbackStep::EnableKey { key_id } => {
                        json!({"key_id": key_id})
                    }
                    RollbackStep::AttachKey {
                        key_id,
                        usage_plan_id,
                    } => json!({"key_id": key_id, "usage_plan_id": usage_plan_id}),
                    RollbackStep::MoveCurrent { from, to } => {
                        json!({"from_version": from, "to_version": to})
                    }
                    RollbackStep::ScheduleRetirement { key_id, grace } => {
                        json!({"key_id": key_id, "grace_period": grace.to_string()})
                    }
                    RollbackStep::RemovePending { version } => json!({"version": version}),
                };
                if let Value::Object(o) = &mut s {
                    o.insert("action".into(), Value::String(step.action().to_owned()));
                    o.insert("done".into(), Value::Bool(i < out.done));
                }
                s
            })
            .collect();
        m.insert("steps".into(), Value::Array(steps));
        m.insert("refused".into(), json!(out.refused));
        m.insert(
            "failed".into(),
            Value::Array(out.failed.iter().map(|e| json!({"error": e})).collect()),
        );
        if let Some(why) = &out.refused {
            text.push(format!("  refused: {why}"));
        } else {
            text.push(format!(
                "  {}:",
                if apply {
                    "roll-back"
                } else {
                    "plan (dry run; --apply to carry it out)"
                }
            ));
            for (i, step) in out.steps.iter().enumerate() {
                let what = match step {
                    RollbackStep::Unschedule { key_id } => {
                        format!("remove key {key_id}'s scheduled retirement (its grace period)")
                    }
                    RollbackStep::EnableKey { key_id } => format!("re-enable key {key_id}"),
                    RollbackStep::AttachKey {
                        key_id,
                        usage_plan_id,
                    } => format!("attach key {key_id} to usage plan {usage_plan_id}"),
                    RollbackStep::MoveCurrent { from, to } => {
                        format!("move AWSCURRENT from version {from} back to {to}")
                    }
                    RollbackStep::ScheduleRetirement { key_id, grace } => format!(
                        "schedule key {key_id}'s retirement after its grace period ({grace}): it just left AWSCURRENT"
                    ),
                    RollbackStep::RemovePending { version } => {
                        format!("remove AWSPENDING from version {version}")
                    }
                };
                let mark = if !apply {
                    "planned"
                } else if i < out.done {
                    "done"
                } else {
                    "not done"
                };
                text.push(format!("    {}. {what}  [{mark}]", i + 1));
            }
        }
        Self::refusable(m, text, seen, out.refused.as_deref(), out.failed.as_deref())
    }
}

impl Entry {
    pub fn revoke(input: String, seen: &Inspection, out: RevokeOutcome, apply: bool) -> Entry {
        let mut m = Self::base(&input, seen);
        m.insert("dry_run".into(), Value::Bool(!apply));
        let (state, version) = match &out.rotation {
            None => ("none", None),
            Some(RevokeRotation::WouldStart) => ("would-start", None),
            Some(RevokeRotation::Started(v)) => ("started", Some(v.clone())),
            Some(RevokeRotation::Resumed(v)) => ("resumed", Some(v.clone())),
            Some(RevokeRotation::Finished(v)) => ("finished-earlier", Some(v.clone())),
        };
        m.insert(
            "rotation".into(),
            json!({"state": state, "version": version, "completed": out.completed}),
        );
        m.insert("new_key_id".into(), json!(out.new_key));
        m.insert(
            "keys".into(),
            Value::Array(
                out.keys
                    .iter()
                    .map(|k| json!({"id": k.id, "name": k.name, "outcome": k.outcome, "kept_because": k.kept_because}))
                    .collect(),
            ),
        );
        m.insert("refused".into(), json!(out.refused));
        m.insert("failed".into(), json!(out.failed));
        let mut text = vec![header(&input, seen)];
        if let Some(why) = &out.refused {
            text.push(format!("  refused: {why}"));
        } else {
            text.push(match (&out.rotation, apply) {
                (Some(RevokeRotation::WouldStart), false) => "  plan (dry run; --apply to carry it out): rotate now (RotateSecret), wait until the rotation completes, then retire every key below at once, whatever its grace period".to_owned(),
                (Some(RevokeRotation::Resumed(v)), false) => format!("  plan (dry run; --apply to carry it out): wait for the revoke's rotation {v} to complete, then retire every key below at once"),
                (Some(RevokeRotation::Finished(v)), false) => format!("  plan (dry run; --apply to carry it out): the revoke's rotation {v} completed; retire every key below at once"),
                (Some(RevokeRotation::Started(v)), _) => format!("  rotation {v}: started, {}", if out.completed { "completed" } else { "NOT completed" }),
                (Some(RevokeRotation::Resumed(v)), _) => format!("  rotation {v} (an earlier revoke's): {}", if out.completed { "completed" } else { "NOT completed" }),
                (Some(RevokeRotation::Finished(v)), _) => format!("  rotation {v} (an earlier revoke's): completed; finishing its retirements"),
                _ => "  no rotation".to_owned(),
            });
            if let Some(k) = &out.new_key {
                text.push(format!("  new key: {k}"));
            }
            if out.keys.is_empty() {
                // Before the rotation completed nothing was looked at: `failed` says so.
                if !apply || out.completed {
                    text.push("  keys to retire: none".to_owned());
                }
            } else {
                text.push("  keys:".to_owned());
                for k in &out.keys {
                    let why = k
                        .kept_because
                        .as_ref()
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default();
                    text.push(format!("    {}  {}  {}{why}", k.id, k.name, k.outcome));
                }
            }
        }
        Self::refusable(m, text, seen, out.refused.as_deref(), out.failed.as_deref())
    }
}

/// A cleanup outcome into an entry's JSON and text; its exit code.
fn cleanup_into(
    m: &mut serde_json::Map<String, Value>,
    text: &mut Vec<String>,
    out: &CleanupOutcome,
    apply: bool,
) -> u8 {
    m.insert("dry_run".into(), Value::Bool(!apply));
    m.insert(
        "orphans".into(),
        Value::Array(
            out.orphans
                .iter()
                .map(|o| json!({"id": o.id, "name": o.name, "reason": o.reason.as_str()}))
                .collect(),
        ),
    );
    m.insert("retired".into(), json!(out.retired));
    m.insert(
        "failed".into(),
        Value::Array(
            out.failed
                .iter()
                .map(|(id, e)| json!({"id": id, "error": e}))
                .collect(),
        ),
    );
    m.insert("refused".into(), json!(out.refused));
    if out.orphans.is_empty() {
        text.push("  orphans: none".to_owned());
    } else {
        text.push("  orphans:".to_owned());
        for o in &out.orphans {
            let state = if out.retired.contains(&o.id) {
                "retired"
            } else if out.failed.iter().any(|(id, _)| id == &o.id) {
                "FAILED"
            } else if apply {
                "left"
            } else {
                "would retire (--apply)"
            };
            text.push(format!(
                "    {}  {}  {}  {state}",
                o.id,
                o.name,
                o.reason.as_str()
            ));
        }
    }
    if let Some(why) = &out.refused {
        text.push(format!("  refused: {why}"));
    }
    for (id, e) in &out.failed {
        text.push(format!("  failed: {id}: {e}"));
    }
    if out.refused.is_some() || !out.failed.is_empty() {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

fn errors_json(errors: &[KeyError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|k| json!({"id": k.id, "name": k.name, "error": k.error}))
            .collect(),
    )
}

fn errors_text(errors: &[KeyError], out: &mut Vec<String>) {
    if errors.is_empty() {
        return;
    }
    out.push("  could not be read (left alone):".to_owned());
    for k in errors {
        out.push(format!("    {}  {}  {}", k.id, k.name, k.error));
    }
}

fn deleted_header(d: &DeletedSecretKeys) -> String {
    format!(
        "keys of the {} secret {}:",
        if d.scheduled_for_deletion {
            "scheduled-for-deletion"
        } else {
            "deleted"
        },
        d.secret
    )
}

impl Report {
    pub fn new(command: &'static str, output: Output) -> Report {
        Report {
            command,
            output,
            entries: Vec::new(),
            arns: Vec::new(),
            extra: Vec::new(),
            deleted: Vec::new(),
            printed: 0,
            listed_all: false,
            exit: EXIT_OK,
        }
    }

    /// Prints a block of text (blank-line separated from the one before) or a JSON line.
    fn emit(&mut self, kind: &str, json: &Value, text: &[String]) {
        match self.output {
            Output::Json => return,
            Output::Text => {
                if self.printed > 0 {
                    println!();
                }
                for line in text {
                    println!("{line}");
                }
            }
            Output::JsonLines => {
                let mut line = serde_json::Map::new();
                line.insert("schema_version".into(), json!(SCHEMA_VERSION));
                line.insert("command".into(), json!(self.command));
                line.insert("kind".into(), json!(kind));
                if let Value::Object(m) = json {
                    line.extend(m.clone());
                }
                println!("{}", Value::Object(line));
            }
        }
        self.printed += 1;
    }

    pub fn push(&mut self, entry: Entry) {
        self.exit = self.exit.max(entry.exit);
        self.emit("secret", &entry.json, &entry.text);
        self.arns.extend(entry.arn);
        if self.output == Output::Json {
            self.entries.push(entry.json);
        }
    }

    /// The report covers every secret (`--all`): it lists the keys of deleted secrets, if none.
    pub fn listed_all(&mut self) {
        self.listed_all = true;
    }

    pub fn secret_arns(&self) -> Vec<String> {
        self.arns.clone()
    }

    /// The account (ListSecrets, the key listing) could not be read.
    pub fn account_unreadable(&mut self, e: Unreadable) {
        let text = vec![format!("the account could not be read: {}", e.0)];
        self.emit("error", &json!({"error": e.0}), &text);
        self.extra.push(("error", Value::String(e.0)));
        self.exit = self.exit.max(EXIT_UNREADABLE);
    }

    fn push_deleted(&mut self, json: Value, text: Vec<String>, exit: u8) {
        self.exit = self.exit.max(exit);
        self.emit("deleted_secret", &json, &text);
        if self.output == Output::Json {
            self.deleted.push(json);
        }
    }

    pub fn deleted_secrets_status(&mut self, deleted: Vec<DeletedSecretKeys>) {
        for d in &deleted {
            let mut text = vec![deleted_header(d)];
            keys_text(&d.keys, &mut text);
            errors_text(&d.errors, &mut text);
            let json = json!({
                "secret": d.secret,
                "scheduled_for_deletion": d.scheduled_for_deletion,
                "keys": d.keys.iter().map(key_json).collect::<Vec<_>>(),
                "errors": errors_json(&d.errors),
            });
            let exit = if d.errors.is_empty() {
                EXIT_OK
            } else {
                EXIT_UNREADABLE
            };
            self.push_deleted(json, text, exit);
        }
    }

    pub fn deleted_secret_cleanup(
        &mut self,
        d: &DeletedSecretKeys,
        out: CleanupOutcome,
        apply: bool,
    ) {
        let mut m = serde_json::Map::new();
        m.insert("secret".into(), Value::String(d.secret.clone()));
        m.insert(
            "scheduled_for_deletion".into(),
            Value::Bool(d.scheduled_for_deletion),
        );
        let mut text = vec![deleted_header(d)];
        let mut exit = cleanup_into(&mut m, &mut text, &out, apply);
        m.insert("errors".into(), errors_json(&d.errors));
        errors_text(&d.errors, &mut text);
        if !d.errors.is_empty() {
            exit = exit.max(EXIT_UNREADABLE);
        }
        self.push_deleted(Value::Object(m), text, exit);
    }

    pub fn exit_code(&self) -> u8 {
        self.exit
    }

    /// Prints what is left: the JSON document, the JSON lines' last line, or for text "no
    /// secrets" when nothing was printed.
    pub fn finish(&self) {
        match self.output {
            Output::Json => {
                let mut doc = serde_json::Map::new();
                doc.insert("schema_version".into(), json!(SCHEMA_VERSION));
                doc.insert("command".into(), json!(self.command));
                doc.insert("secrets".into(), Value::Array(self.entries.clone()));
                if self.listed_all {
                    doc.insert("deleted_secrets".into(), Value::Array(self.deleted.clone()));
                }
                for (k, v) in &self.extra {
                    doc.insert((*k).to_owned(), v.clone());
                }
                println!("{}", Value::Object(doc));
            }
            Output::JsonLines => println!(
                "{}",
                json!({
                    "schema_version": SCHEMA_VERSION,
                    "command": self.command,
                    "kind": "end",
                    "exit_code": self.exit,
                })
            ),
            Output::Text => {
                if self.printed == 0 {
                    println!("no secrets");
                }
            }
        }
    }
}
