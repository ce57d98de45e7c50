//! Turning logging up never turns a secret on: the real binary rotates at TRACE (by
//! `AWS_LAMBDA_LOG_LEVEL`, and by `RUST_LOG` directives naming the dependencies, in JSON and in
//! text) and at DEBUG, and the operator commands run with `RUST_LOG=trace`; no byte of their
//! output holds a key value, a RotationToken, or a field of the user's own in the secret value.
//! Every output is also in the final log scan.

use std::sync::Arc;

use serde_json::json;

use crate::cases::{assert_rotated, setup_probed_with};
use crate::ensure;
use crate::operator::cli_with_env;
use crate::support::runtime::Function;
use crate::support::world::{remember, str_field, World, STEPS};
use crate::support::R;

/// Every dependency that logs what crosses it, asked for at TRACE.
const DEPENDENCIES_AT_TRACE: &str = "trace,lambda_runtime=trace,lambda_runtime_api_client=trace,\
    aws_smithy_runtime=trace,aws_smithy_runtime_api=trace,aws_smithy_http_client=trace,\
    aws_sdk_secretsmanager=trace,aws_sdk_apigateway=trace,aws_config=trace,aws_runtime=trace,\
    aws_sigv4=trace,hyper=trace,hyper_util=trace,h2=trace,rustls=trace,reqwest=trace,tower=trace";

/// A marker no run could make up: letters and digits, long enough for the final scan (20+).
fn marker(prefix: &str) -> String {
    let tail: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(32)
        .collect();
    format!("{prefix}{tail}")
}

/// What each output is searched for, by kind (a failure names the kind, never the value).
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, kind: &'static str, value: String) {
        remember(&value);
        self.0.push((kind, value));
    }

    /// Each secret string found in `output`: its kind, how many lines hold it, and the first
    /// such line with every secret string masked (so that a failure says which crate leaked).
    fn leaks(&self, label: &str, output: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (kind, value) in &self.0 {
            let lines: Vec<&str> = output
                .lines()
                .filter(|l| l.contains(value.as_str()))
                .collect();
            if let Some(first) = lines.first() {
                let mut shown = (*first).to_owned();
                for (_, v) in &self.0 {
                    shown = shown.replace(v.as_str(), "<SECRET>");
                }
                let shown: String = shown.chars().take(240).collect();
                found.push(format!(
                    "{label}: a {kind} in {} lines, first: {shown}",
                    lines.len()
                ));
            }
        }
        found
    }
}

pub(crate) async fn no_secret_reaches_any_output_at_trace_or_debug(w: Arc<World>) -> R<()> {
    let mut secrets = Secrets(Vec::new());
    let client_secret = marker("clientsecret");
    secrets.add("user field of the secret value", client_secret.clone());
    let value = json!({"client_secret": client_secret, "owner": "team-trace"}).to_string();
    let s = setup_probed_with(&w, &value).await?;
    let runs: [(&str, &[(&str, &str)]); 3] = [
        (
            "trace-json",
            &[
                ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
                ("RUST_LOG", DEPENDENCIES_AT_TRACE),
            ],
        ),
        (
            "trace-directives-text",
            &[
                ("AWS_LAMBDA_LOG_LEVEL", ""),
                ("RUST_LOG", DEPENDENCIES_AT_TRACE),
                ("AWS_LAMBDA_LOG_FORMAT", "Text"),
            ],
        ),
        ("debug-json", &[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]),
    ];
    let mut outputs = Vec::new();
    for (label, levels) in runs {
        let mut env = vec![
            ("AWS_ENDPOINT_URL", w.endpoint.clone()),
            ("ALLOWED_TEST_URL_HOSTS", "127.0.0.1".to_owned()),
            ("TEST_URL_BUDGET_MS", "5000".to_owned()),
            ("TEST_URL_INTERVAL_MS", "250".to_owned()),
        ];
        env.extend(levels.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let function = Function::start(&format!("e2e-{label}"), &env).await?;
        let rotation_token = marker("rotationtoken");
        secrets.add("RotationToken", rotation_token.clone());
        let token = w.open_rotation(&s.secret).await?;
        for step in STEPS {
            let mut ev = World::event(step, &s.secret, &token);
            ev["RotationToken"] = json!(rotation_token);
            if let Err(e) = function.invoke(&ev).await? {
                return Err(format!(
                    "{label}: {step} failed ({}); see {}",
                    e["errorType"],
                    function.log.display()
                )
                .into());
            }
        }
        assert_rotated(&w, &s, &token, &[&s.plan]).await?;
        let current = w.value(&s.secret, "AWSCURRENT").await?;
        let key_value = str_field(&current, "api_key_value").ok_or("no key value")?;
        ensure!(
            w.call_stage(&s.api, &key_value).await? == 200,
            "{label}: the new key is refused"
        );
        secrets.add("key value", key_value);
        ensure!(
            str_field(&current, "client_secret").as_deref() == Some(client_secret.as_str()),
            "{label}: the user's field was not carried over"
        );
        let path = function.log.clone();
        drop(function);
        let logs = std::fs::read_to_string(&path)?;
        // The level took effect: this crate's DEBUG lines and the invocation's span are there.
        ensure!(
            logs.contains("AWS call succeeded") && logs.contains("PutSecretValue"),
            "{label}: no DEBUG line of this crate's"
        );
        ensure!(
            logs.contains("Lambda runtime invoke") && logs.contains("stored the new key"),
            "{label}: no invocation span or INFO line"
        );
        outputs.push((label.to_owned(), logs));
    }
    for rust_log in ["trace", DEPENDENCIES_AT_TRACE] {
        for args in [
            vec!["status", s.secret.as_str()],
            vec!["--json", "status", s.secret.as_str()],
            vec!["check", s.secret.as_str()],
            vec!["--json", "check", s.secret.as_str()],
        ] {
            let run = cli_with_env(&w, &args, &[("RUST_LOG", rust_log)]).await?;
            let label = format!("RUST_LOG={rust_log} api-key-rotator {}", args.join(" "));
            ensure!(
                run.code != 2 && !run.stdout.is_empty(),
                "{label}: exit {}: {}",
                run.code,
                run.stderr
            );
            ensure!(
                run.stderr.contains("AWS call succeeded"),
                "{label}: no DEBUG line of this crate's"
            );
            outputs.push((label, format!("{}{}", run.stdout, run.stderr)));
        }
    }
    // Old and new key values, each RotationToken, the user's field: in no output.
    let leaks: Vec<String> = outputs
        .iter()
        .flat_map(|(label, output)| secrets.leaks(label, output))
        .collect();
    ensure!(
        leaks.is_empty(),
        "secrets reached the output:\n      {}",
        leaks.join("\n      ")
    );
    eprintln!(
        "  {} outputs ({} bytes) searched for {} secret strings",
        outputs.len(),
        outputs.iter().map(|(_, o)| o.len()).sum::<usize>(),
        secrets.0.len()
    );
    Ok(())
}
