//! `make bench`: the release binary under a Lambda Runtime API stand-in (the protocol Lambda
//! uses), against the embedded local AWS.
//!
//! - cold init (spawn to the first `GET /runtime/invocation/next`), at least 5 fresh processes;
//! - peak RSS (VmHWM) over a full rotation;
//! - each step's wall time, warm;
//! - AWS calls per step and per rotation, counted at a proxy, by operation;
//! - the release zip's size (from `make build`);
//! - with `--fleet N`: N secrets rotated at once, one function process each, through a proxy
//!   that enforces API Gateway's account rate limits; completed and unfinished rotations,
//!   re-runs, leaks, refused calls, invocations ended at their deadline, and time against the
//!   floor those limits impose. `--model strict` (the default) plays a Secrets Manager that
//!   re-runs a failed rotation at most 5 times, 2 s apart; `--model lenient` one that tries 20
//!   times with pauses growing to 30 s.
//!
//! - with `--operator N`: `api-key-rotator status --all` (the operator command, the same binary
//!   without the Runtime API) over N secrets: its time and its AWS calls, per secret and in all.
//! - with `--sweep N` (default 300, 0 skips it): the retirement sweep
//!   (`{"Action": "retire-expired-keys"}`) over N secrets that each hold a key in grace, first
//!   with nothing due, then with every one due: its wall time, its AWS calls by operation, and
//!   the invocations it takes (one whose deadline comes first leaves secrets to the next).
//!
//! Each invocation gets the template's `Timeout` as its deadline (`--timeout S` overrides it), and
//! one that runs past it is ended and its process replaced, as Lambda does.
//!
//! Figures are printed, not asserted, except that the fleet must leak no key.

#[allow(dead_code)]
#[path = "../tests/e2e/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_key_rotator::aws::SdkSettings;
use api_key_rotator::config::{FunctionConfig, TIE_TAG};
use api_key_rotator::grace::{due_prefixes, now_secs, schedule_tag};
use support::localstack::LocalAws;
use support::proxy::Proxy;
use support::runtime::{template_timeout, Function};
use support::world::{str_field, World, STEPS};
use support::R;

/// API Gateway calls a rotation with one plan needs at the least (the floor's unit).
const NEEDED_API_GATEWAY_CALLS: f64 = 11.0;
/// The Secrets Manager operations, as the proxy names them.
const SECRETS_MANAGER_CALLS: [&str; 4] = [
    "ListSecrets",
    "DescribeSecret",
    "ListSecretVersionIds",
    "GetSecretValue",
];
/// The API Gateway reads `status --all` makes once per run (per page, per plan), not per secret.
const API_GATEWAY_SHARED_READS: [&str; 3] = ["GetApiKeys", "GetUsagePlans", "GetUsagePlanKeys"];
/// API Gateway's account-wide control-plane rate, requests a second.
const CONTROL_PLANE_RATE: f64 = 10.0;

/// How the bench plays Secrets Manager after a failed rotation.
#[derive(Debug, Clone, Copy)]
struct SmModel {
    name: &'static str,
    /// Tries in all: the first run and its re-runs.
    tries: u32,
    /// The pause before re-run `n` (1-based).
    pause: fn(u32) -> Duration,
}

/// AWS documents only that a failed rotation is retried "multiple times": the strict model
/// assumes few re-runs, close together.
const STRICT: SmModel = SmModel {
    name: "strict: at most 5 re-runs, 2 s apart",
    tries: 6,
    pause: |_| Duration::from_secs(2),
};

const LENIENT: SmModel = SmModel {
    name: "lenient: at most 19 re-runs, 5 s apart growing to 30 s",
    tries: 20,
    pause: |n| Duration::from_secs(u64::from(n.min(6)) * 5),
};

/// The fleet's settings from the command line.
struct FleetArgs {
    n: usize,
    model: SmModel,
    timeout: Duration,
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = match arg(&args, "--model") {
        None | Some("strict") => STRICT,
        Some("lenient") => LENIENT,
        Some(other) => {
            eprintln!("--model must be strict or lenient, not {other}");
            std::process::exit(2);
        }
    };
    let timeout = arg(&args, "--timeout")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_else(template_timeout);
    let operator = arg(&args, "--operator")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0);
    // The sweep runs by default: `--sweep 0` skips it.
    let sweep = match arg(&args, "--sweep").map(str::parse::<usize>) {
        None => Some(300),
        Some(Ok(n)) => Some(n).filter(|n| *n > 0),
        Some(Err(_)) => {
            eprintln!("--sweep must be a number of secrets (0 skips the sweep)");
            std::process::exit(2);
        }
    };
    let fleet = arg(&args, "--fleet")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map(|n| FleetArgs { n, model, timeout });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = runtime.block_on(run(fleet, operator, sweep.map(|n| (n, timeout)))) {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("bench failed: {text}");
        std::process::exit(1);
    }
}

async fn run(
    fleet: Option<FleetArgs>,
    operator: Option<usize>,
    sweep: Option<(usize, Duration)>,
) -> R<()> {
    let local = LocalAws::start("bench")?;
    let world = Arc::new(World::new(&local.endpoint).await?);
    println!("machine: {} cores, {}", num_cpus(), std::env::consts::ARCH);
    if std::env::var_os("BENCH_SKIP_SINGLE").is_none() {
        single(&world).await?;
    }
    if let Some(n) = operator {
        operator_mode(&world, n).await?;
    }
    if let Some((n, timeout)) = sweep {
        sweep_mode(&world, n, timeout).await?;
    }
    if let Some(f) = fleet {
        fleet_mode(&world, &f).await?;
    }
    drop(local);
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The function's environment: the proxy as its AWS endpoint, and any `ROTATOR_*` setting the
/// bench was started with (to try other SDK retry settings without a rebuild).
fn env_for(proxy: &Proxy) -> Vec<(&'static str, String)> {
    let mut env = vec![("AWS_ENDPOINT_URL", proxy.endpoint.clone())];
    for name in ROTATOR_SETTINGS {
        if let Ok(v) = std::env::var(name) {
            env.push((name, v));
        }
    }
    env
}

const ROTATOR_SETTINGS: [&str; 8] = [
    "ROTATOR_DEADLINE_MARGIN_MS",
    "ROTATOR_RETRY_MODE",
    "ROTATOR_MAX_ATTEMPTS",
    "ROTATOR_INITIAL_BACKOFF_MS",
    "ROTATOR_MAX_BACKOFF_MS",
    "ROTATOR_CONNECT_TIMEOUT_MS",
    "ROTATOR_ATTEMPT_TIMEOUT_MS",
    "ROTATOR_OPERATION_TIMEOUT_MS",
];

/// Spawn to the first `GET /runtime/invocation/next`, for 15 fresh processes, sorted.
async fn cold_inits(env: &[(&'static str, String)]) -> R<Vec<Duration>> {
    let mut inits = Vec::new();
    for _ in 0..15 {
        let f = Function::start("bench-cold", env).await?;
        let d = f
            .cold_init()
            .await
            .ok_or("the function never asked for an invocation")?;
        inits.push(d);
    }
    inits.sort();
    Ok(inits)
}

async fn single(w: &Arc<World>) -> R<()> {
    // Cold init of fresh processes.
    let proxy = Proxy::start(&w.endpoint).await?;
    let binary = std::env::var("ROTATOR_BINARY").unwrap_or_else(|_| "the debug build".to_owned());
    let bytes = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    println!("binary measured: {binary} ({:.2} MB)", bytes as f64 / 1e6);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let row = |what: &str, inits: &[Duration]| {
        format!(
            "| {what}, {} processes | median {:.1} ms (min {:.1}, max {:.1}) | <= 10 ms |",
            inits.len(),
            ms(inits[inits.len() / 2]),
            ms(inits[0]),
            ms(inits[inits.len() - 1])
        )
    };
    let inits = cold_inits(&env_for(&proxy)).await?;
    // The TLS client reads the system's root certificates at init: the bundle file, then every
    // file of the certificate directory (hundreds on Debian). Lambda's provided.al2023 keeps its
    // roots in a bundle; the same roots read from the bundle alone give that layout's figure.
    let bundle = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    let bundle_only = match bundle {
        Some(file) => {
            let empty =
                std::env::temp_dir().join(format!("bench-no-cert-dir-{}", std::process::id()));
            std::fs::create_dir_all(&empty)?;
            let mut env = env_for(&proxy);
            env.push(("SSL_CERT_FILE", file.to_owned()));
            env.push(("SSL_CERT_DIR", empty.display().to_string()));
            let inits = cold_inits(&env).await?;
            let _ = std::fs::remove_dir(&empty);
            Some((file, inits))
        }
        None => None,
    };
    println!("\n| figure | value | target |");
    println!("|---|---|---|");
    println!("{}", row("cold init (spawn to first next)", &inits));
    if let Some((file, inits)) = &bundle_only {
        println!(
            "{}",
            row(
                &format!("cold init, roots from {file} alone (no certificate directory)"),
                inits
            )
        );
    }

    // One rotation (the second of its secret, so the old key is retired) on a warm process.
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let key_name = w.unique("bench");
    let secret = w
        .create_secret(Some("{}"), &[("KeyName", &key_name), ("UsagePlan", &plan)])
        .await?;
    let clean = w.rotator(&w.endpoint, FunctionConfig::default()).await?;
    w.rotate(&clean, &secret, 1).await?;
    let f = Function::start("bench-warm", &env_for(&proxy)).await?;
    let _ = f.invoke(&serde_json::json!({"Step": "warm-up"})).await?;
    let token = w.open_rotation(&secret).await?;
    let mut per_step = Vec::new();
    let mut total = 0;
    for step in STEPS {
        proxy.reset_counts();
        let t = Instant::now();
        let answer = f.invoke(&World::event(step, &secret, &token)).await?;
        let took = t.elapsed();
        if let Err(e) = answer {
            return Err(format!("{step} failed: {e}").into());
        }
        let calls = proxy.all_calls();
        total += calls.values().sum::<u32>();
        per_step.push((step, took, calls));
    }
    let rss = f.peak_rss_kib().unwrap_or(0);
    println!(
        "| peak RSS over a rotation (VmHWM) | {:.1} MB | <= 12 MB |",
        rss as f64 / 1024.0
    );
    for (step, took, _) in &per_step {
        println!("| {step} wall time, warm | {:.1} ms | |", ms(*took));
    }
    println!("| AWS calls, one rotation, one plan | {total} | <= 22 |");
    match zip_size() {
        Some((bytes, arch)) => println!(
            "| release zip ({arch}) | {:.2} MB ({bytes} bytes) | <= 4 MB |",
            bytes as f64 / 1_048_576.0
        ),
        None => println!("| release zip | not built: run `make build` first | <= 4 MB |"),
    }
    println!("\nAWS calls by step and operation:");
    for (step, _, calls) in &per_step {
        let list: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!(
            "  {step:<13} {:>2}: {}",
            calls.values().sum::<u32>(),
            list.join(", ")
        );
    }
    Ok(())
}

fn zip_size() -> Option<(u64, String)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lambda/api-key-rotator");
    let bytes = std::fs::metadata(dir.join("bootstrap.zip")).ok()?.len();
    let arch = std::fs::read_to_string(dir.join("ARCH"))
        .map(|a| a.trim().to_owned())
        .unwrap_or_else(|_| "architecture unknown".to_owned());
    Some((bytes, arch))
}

/// `status --all` over `n` secrets, each holding a key the function made (tied, named after
/// its version) on one plan: the command's wall time and its AWS calls, counted at a proxy.
async fn operator_mode(w: &Arc<World>, n: usize) -> R<()> {
    let binary = std::env::var("ROTATOR_BINARY").map_err(|_| "ROTATOR_BINARY is not set")?;
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let prefix = w.unique("bench-ops");
    let made = Instant::now();
    for i in 0..n {
        let key_name = format!("{prefix}-partner-{i}");
        let arn = w
            .create_secret_named(
                &format!("{prefix}-{i}"),
                None,
                &[("KeyName", &key_name), ("UsagePlan", &plan)],
            )
            .await?;
        let version = w.token();
        let key = w
            .create_tied_key(&format!("{key_name}-{version}"), &arn)
            .await?;
        w.attach(&plan, &key).await?;
        let value = serde_json::json!({"api_key_id": key, "api_key_value": format!("v{version}"),
            "key_name": format!("{key_name}-{version}"), "usage_plan_ids": [plan],
            "owned_key_ids": [], "rotated_from": null});
        w.sm.put_secret_value()
            .secret_id(&arn)
            .client_request_token(&version)
            .secret_string(value.to_string())
            .version_stages("AWSCURRENT")
            .send()
            .await?;
    }
    let keys_in_account = w.all_keys().await?.len();
    let plans_in_account =
        w.ag.get_usage_plans()
            .limit(500)
            .send()
            .await?
            .items()
            .len();
    println!(
        "\noperator: status --all over {n} secrets ({keys_in_account} keys and {plans_in_account} usage plans in the account; made in {:.0} s)",
        made.elapsed().as_secs_f64()
    );
    let proxy = Proxy::start(&w.endpoint).await?;
    let started = Instant::now();
    let out = tokio::process::Command::new(&binary)
        .args(["--json", "status", "--all", "--prefix", &prefix])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .output()
        .await?;
    let took = started.elapsed();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("status --all did not print one JSON document: {e}"))?;
    let listed = doc["secrets"].as_array().map_or(0, Vec::len);
    let calls = proxy.all_calls();
    let total: u32 = calls.values().sum();
    let shared: u32 = ["ListSecrets", "GetApiKeys"]
        .iter()
        .map(|op| calls.get(*op).copied().unwrap_or(0))
        .sum();
    println!(
        "  exit code {}, {listed} secrets reported, {:.2} s ({:.1} ms a secret)",
        out.status.code().unwrap_or(-1),
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "  AWS calls: {total} in all; listings (ListSecrets, GetApiKeys pages) {shared}; {:.2} a secret besides",
        f64::from(total - shared) / n as f64
    );
    let sum = |ops: &[&str]| -> u32 {
        ops.iter()
            .map(|op| calls.get(*op).copied().unwrap_or(0))
            .sum()
    };
    let secrets_manager = sum(&SECRETS_MANAGER_CALLS);
    let api_gateway: u32 = calls
        .iter()
        .filter(|(op, _)| {
            !SECRETS_MANAGER_CALLS.contains(&op.as_str()) && !op.contains("/functions/")
        })
        .map(|(_, n)| n)
        .sum();
    let api_gateway_shared = sum(&API_GATEWAY_SHARED_READS);
    println!(
        "  Secrets Manager: {secrets_manager} calls, {:.2} a secret (ListSecrets included); API Gateway: {api_gateway} calls, {:.2} a secret: {api_gateway_shared} shared reads (GetApiKeys, GetUsagePlans pages, GetUsagePlanKeys per plan), {} per secret",
        f64::from(secrets_manager) / n as f64,
        f64::from(api_gateway) / n as f64,
        api_gateway - api_gateway_shared
    );
    for (op, count) in &calls {
        println!("    {op:<28} {count}");
    }
    Ok(())
}

/// The sweep's event, as the EventBridge rule sends it.
fn sweep_event() -> serde_json::Value {
    serde_json::json!({"Action": "retire-expired-keys"})
}

/// One secret as the function leaves it after a rotation with `GracePeriod=7d` and
/// `OldKeyAction=delete`: two versions (AWSCURRENT, AWSPREVIOUS) whose values the function wrote,
/// each holding a key named `<KeyName>-<version>`, tied to the secret and on `plan`; and the
/// previous key's schedule tag, due at `due`. Returns the secret's ARN and the previous key's id.
async fn seed_in_grace(w: &World, plan: &str, name: &str, due: i64) -> R<(String, String)> {
    let key_name = format!("{name}-partner");
    let arn = w
        .create_secret_named(
            name,
            None,
            &[
                ("KeyName", &key_name),
                ("UsagePlan", plan),
                ("OldKeyAction", "delete"),
                ("GracePeriod", "7d"),
            ],
        )
        .await?;
    let mut previous: Option<(String, String)> = None; // (version, key id)
    for _ in 0..2 {
        let version = w.token();
        let made =
            w.ag.create_api_key()
                .name(format!("{key_name}-{version}"))
                .enabled(true)
                .description(format!("Rotated by api-key-rotator for secret {name}"))
                .tags(TIE_TAG, &arn)
                .send()
                .await?;
        let key = made.id().ok_or("CreateApiKey answered no id")?.to_owned();
        w.attach(plan, &key).await?;
        let value = serde_json::json!({
            "api_key_id": key,
            "api_key_value": made.value().ok_or("CreateApiKey answered no value")?,
            "key_name": format!("{key_name}-{version}"),
            "usage_plan_ids": [plan],
            "owned_key_ids": [],
            "rotated_from": previous.as_ref().map(|(v, _)| v.clone()),
        });
        // AWSCURRENT on the new version: Secrets Manager moves AWSPREVIOUS to the one it leaves.
        w.sm.put_secret_value()
            .secret_id(&arn)
            .client_request_token(&version)
            .secret_string(value.to_string())
            .version_stages("AWSCURRENT")
            .send()
            .await?;
        previous = Some((version, key));
    }
    let (_, new_key) = previous.ok_or("no key made")?;
    // The second loop's key is AWSCURRENT's; the first one's, AWSPREVIOUS's, is in grace.
    let versions = w.versions(&arn).await?;
    let previous_key = versions
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == "AWSPREVIOUS"))
        .map(|(v, _)| v.clone())
        .ok_or_else(|| format!("{name}: no AWSPREVIOUS version after two PutSecretValue calls"))?;
    let previous_value =
        w.sm.get_secret_value()
            .secret_id(&arn)
            .version_id(&previous_key)
            .send()
            .await?;
    let value: serde_json::Value =
        serde_json::from_str(previous_value.secret_string().unwrap_or("{}"))?;
    let old_key = value["api_key_id"]
        .as_str()
        .filter(|k| *k != new_key)
        .ok_or_else(|| format!("{name}: AWSPREVIOUS does not hold the first key"))?
        .to_owned();
    schedule(w, &arn, &old_key, due).await?;
    Ok((arn, old_key))
}

/// Writes (or moves) `key`'s schedule tag on the secret, as finishSecret writes it.
async fn schedule(w: &World, arn: &str, key: &str, due: i64) -> R<()> {
    let (tag, value) = schedule_tag(key, due);
    w.sm.tag_resource()
        .secret_id(arn)
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(tag)
                .value(value)
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// What one run of sweeps did: the invocations until one found nothing due.
struct SweepRun {
    /// Invocations that found secrets due, each with its time and answer.
    working: Vec<(Duration, serde_json::Value)>,
    /// The invocation that found nothing due (the run's last).
    idle: (Duration, serde_json::Value),
    calls: BTreeMap<String, u32>,
}

/// Delivers the sweep event to `f` until an invocation finds nothing due, as the recurring rule
/// would: the calls are counted from the first invocation to the last.
async fn sweep_until_idle(f: &Function, proxy: &Proxy, most: usize) -> R<SweepRun> {
    proxy.reset_counts();
    let mut working = Vec::new();
    for _ in 0..most {
        let t = Instant::now();
        let answer = f
            .invoke(&sweep_event())
            .await?
            .map_err(|e| format!("the sweep failed: {e}"))?;
        let took = t.elapsed();
        let due = answer["due_secrets"]
            .as_u64()
            .ok_or_else(|| format!("the sweep answered no due_secrets: {answer}"))?;
        if due == 0 {
            return Ok(SweepRun {
                working,
                idle: (took, answer),
                calls: proxy.all_calls(),
            });
        }
        working.push((took, answer));
    }
    Err(format!("the sweep still found secrets due after {most} invocations").into())
}

fn by_operation(calls: &BTreeMap<String, u32>) -> String {
    let list: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    list.join(", ")
}

/// The retirement sweep over `n` secrets, each holding one key in grace (seeded as finishSecret
/// leaves them, with the SDK): first with nothing due (the sweep's cost on most runs), then with
/// every grace ended (what a sweep after a fleet-wide rotation retires). One function process
/// under the Runtime API, each invocation with `timeout` as its deadline; calls counted at a
/// proxy.
async fn sweep_mode(w: &Arc<World>, n: usize, timeout: Duration) -> R<()> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let prefix = w.unique("bench-sweep");
    let made = Instant::now();
    let week = 7 * 86_400;
    let mut seeded = Vec::new();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for chunk in names.chunks(8) {
        let mut tasks = Vec::new();
        for name in chunk {
            let (w, plan, name) = (w.clone(), plan.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                seed_in_grace(&w, &plan, &name, now_secs() + week).await
            }));
        }
        for t in tasks {
            seeded.push(t.await??);
        }
    }
    let keys_in_account = w.all_keys().await?.len();
    println!(
        "\nsweep: {{\"Action\": \"retire-expired-keys\"}} over {n} secrets, each holding one key in grace (GracePeriod=7d, OldKeyAction=delete); {keys_in_account} keys in the account; invocation timeout {} s; seeded in {:.0} s",
        timeout.as_secs(),
        made.elapsed().as_secs_f64()
    );
    let proxy = Proxy::start(&w.endpoint).await?;
    // As the template deploys it: the sweep lists only the secrets under the stack's prefix.
    let mut env = env_for(&proxy);
    env.push(("SECRET_NAME_PREFIX", format!("{prefix}-")));
    let f = Function::start_with_timeout("bench-sweep", &env, timeout).await?;
    f.cold_init()
        .await
        .ok_or("the sweep's function did not start")?;

    // Nothing due: every retirement is a week away. The first invocation of the process opens
    // its connections; the second is warm.
    let first = sweep_until_idle(&f, &proxy, 1).await?;
    let before = now_secs();
    let idle = sweep_until_idle(&f, &proxy, 1).await?;
    // The prefixes change with every second (one per 1 digit of the time): those of any second
    // the invocation may have read.
    let prefixes: Vec<usize> = (before..=now_secs())
        .map(|s| due_prefixes(s).len())
        .collect();
    let most_prefixes = prefixes.iter().copied().max().unwrap_or(35);
    let bound = most_prefixes.div_ceil(10);
    let idle_calls: u32 = idle.calls.values().sum();
    let list_secrets = idle.calls.get("ListSecrets").copied().unwrap_or(0);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    // Every grace ended a minute ago.
    let past = now_secs() - 60;
    for chunk in seeded.chunks(8) {
        let mut tasks = Vec::new();
        for (arn, key) in chunk {
            let (w, arn, key) = (w.clone(), arn.clone(), key.clone());
            tasks.push(tokio::spawn(
                async move { schedule(&w, &arn, &key, past).await },
            ));
        }
        for t in tasks {
            t.await??;
        }
    }
    let due = sweep_until_idle(&f, &proxy, n + 2).await?;
    let working: Duration = due.working.iter().map(|(d, _)| *d).sum();
    let field = |name: &str| -> u64 {
        due.working
            .iter()
            .map(|(_, a)| a[name].as_u64().unwrap_or(0))
            .sum()
    };
    let retired = field("retired");
    let released = field("released");
    let due_calls: u32 = due.calls.values().sum();
    let shared: u32 = ["ListSecrets", "GetApiKeys"]
        .iter()
        .map(|op| due.calls.get(*op).copied().unwrap_or(0))
        .sum();
    let answers: Vec<String> = due
        .working
        .iter()
        .map(|(d, a)| {
            format!(
                "due {} retired {} left {} in {:.1} s",
                a["due_secrets"],
                a["retired"],
                a["left"],
                d.as_secs_f64()
            )
        })
        .collect();

    println!("| sweep figure | value |");
    println!("|---|---|");
    println!(
        "| nothing due ({n} secrets scheduled a week ahead): wall time | {:.1} ms warm, 1 invocation ({:.1} ms the first of a fresh process) |",
        ms(idle.idle.0),
        ms(first.idle.0)
    );
    println!(
        "| nothing due: AWS calls | {idle_calls}: ListSecrets {list_secrets} (one per 10 due-time prefixes; {} prefixes at the time, so at most {bound}; never more than 4, whatever the secret count) |",
        prefixes.iter().map(usize::to_string).collect::<Vec<_>>().join(" or ")
    );
    println!(
        "| {n} due (one key each, grace ended): wall time | {:.2} s in {} invocation(s) ({:.1} ms a secret), then {:.1} ms for the one that found nothing due |",
        working.as_secs_f64(),
        due.working.len(),
        working.as_secs_f64() * 1000.0 / n as f64,
        ms(due.idle.0)
    );
    println!(
        "| {n} due: invocations until one finds nothing due | {} ({}) |",
        due.working.len() + 1,
        answers.join("; ")
    );
    println!("| {n} due: keys retired / released | {retired} / {released} |");
    println!(
        "| {n} due: AWS calls, all invocations | {due_calls}: {:.2} a secret, {shared} listings (ListSecrets, GetApiKeys pages) |",
        f64::from(due_calls - shared) / n as f64
    );
    println!(
        "  calls by operation, nothing due: {}",
        by_operation(&idle.calls)
    );
    println!(
        "  calls by operation, {n} due: {}",
        by_operation(&due.calls)
    );
    // Guarantees the figures rest on: the idle sweep is ListSecrets alone, within its bound; the
    // due sweep retired every key in grace, and only those.
    if idle_calls != list_secrets || list_secrets as usize > bound {
        return Err(format!(
            "sweep: with nothing due the sweep made {idle_calls} calls, {list_secrets} of them ListSecrets (at most {bound} expected, and nothing else)"
        )
        .into());
    }
    // Every key the secrets made is named after its secret, so after `{prefix}-`.
    let left: std::collections::BTreeSet<String> = w
        .keys_with_prefix(&format!("{prefix}-"))
        .await?
        .iter()
        .filter_map(|k| k.id().map(str::to_owned))
        .collect();
    let survived = seeded.iter().filter(|(_, old)| left.contains(old)).count();
    if retired != n as u64 || survived > 0 || left.len() != n {
        return Err(format!(
            "sweep: {retired} of {n} due keys retired, {survived} of them still in the account, {} of the secrets' keys left (expected {n}, AWSCURRENT's)",
            left.len()
        )
        .into());
    }
    Ok(())
}

async fn fleet_mode(w: &Arc<World>, args: &FleetArgs) -> R<()> {
    let n = args.n;
    println!("\nfleet: {n} secrets rotated at once, one function process each, API Gateway limits enforced");
    let settings = SdkSettings::from_lookup(&|name| std::env::var(name).ok())
        .map_err(|e| format!("bad ROTATOR_* setting: {e}"))?;
    let margin = api_key_rotator::deadline::margin_from_lookup(&|name| std::env::var(name).ok())
        .map_err(|e| format!("bad ROTATOR_DEADLINE_MARGIN_MS: {e}"))?;
    println!(
        "  Secrets Manager model: {}; invocation timeout {} s (deadline margin {} ms)",
        args.model.name,
        args.timeout.as_secs(),
        margin.as_millis()
    );
    println!(
        "  function settings: SDK {} mode, {} attempts for errors other than throttling; throttling waited out until the deadline, backoff {:?} to {:?}; attempt timeout {:?}",
        if settings.adaptive { "adaptive" } else { "standard" },
        settings.max_attempts,
        settings.initial_backoff,
        settings.max_backoff,
        settings.attempt_timeout,
    );
    let proxy = Proxy::start(&w.endpoint).await?;
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let clean = Arc::new(w.rotator(&w.endpoint, FunctionConfig::default()).await?);
    // Set-up (not timed, not limited): N secrets that each hold a key from a first rotation.
    let setup_started = Instant::now();
    let mut secrets = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let mut tasks = Vec::new();
        for _ in chunk {
            let (w, clean, plan) = (w.clone(), clean.clone(), plan.clone());
            tasks.push(tokio::spawn(async move {
                let key_name = w.unique("fleet");
                let secret = w
                    .create_secret(Some("{}"), &[("KeyName", &key_name), ("UsagePlan", &plan)])
                    .await?;
                w.rotate(&clean, &secret, 2).await?;
                R::Ok((key_name, secret))
            }));
        }
        for t in tasks {
            secrets.push(t.await??);
        }
    }
    eprintln!(
        "  set-up of {n} secrets: {:.1}s",
        setup_started.elapsed().as_secs_f64()
    );
    let mut functions = Vec::new();
    for _ in 0..n {
        functions.push(Arc::new(
            Function::start_with_timeout("bench-fleet", &env_for(&proxy), args.timeout).await?,
        ));
    }
    for f in &functions {
        f.cold_init()
            .await
            .ok_or("a fleet function did not start")?;
    }
    // RotateSecret is Secrets Manager's own call, not the function's: open every rotation first.
    let mut opened = Vec::new();
    for (key_name, secret) in secrets {
        let token = w.open_rotation(&secret).await?;
        opened.push((key_name, secret, token));
    }
    proxy.reset_counts();
    proxy.enforce_api_gateway_limits();
    let started = Instant::now();
    let model = args.model;
    let mut tasks = Vec::new();
    for ((key_name, secret, token), f) in opened.into_iter().zip(functions.iter().cloned()) {
        tasks.push(tokio::spawn(async move {
            let mut reruns = 0u32;
            let mut done = false;
            let mut finished_at = None;
            for attempt in 0..model.tries {
                if attempt > 0 {
                    tokio::time::sleep((model.pause)(attempt)).await;
                }
                let mut ok = true;
                for step in STEPS {
                    if f.invoke(&World::event(step, &secret, &token))
                        .await?
                        .is_err()
                    {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    done = true;
                    finished_at = Some(started.elapsed());
                    break;
                }
                if attempt + 1 < model.tries {
                    reruns += 1;
                }
            }
            R::Ok((key_name, secret, done, reruns, finished_at))
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = proxy.all_calls();
    let throttled = proxy.throttled();
    let timed_out: u32 = functions.iter().map(|f| f.timed_out()).sum();
    let (mut completed, mut unfinished, mut reruns, mut leaked) = (0, 0, 0, 0);
    let mut last_done = Duration::ZERO;
    for (key_name, secret, done, r, finished_at) in &results {
        reruns += r;
        if *done {
            completed += 1;
        }
        if let Some(t) = finished_at {
            last_done = last_done.max(*t);
        }
        // Unfinished: AWSPENDING left on a version other than AWSCURRENT, which blocks the
        // next rotation and leaves the partner on the old key.
        let versions = w.versions(secret).await?;
        let pending_open = versions.values().any(|stages| {
            stages.iter().any(|s| s == "AWSPENDING") && !stages.iter().any(|s| s == "AWSCURRENT")
        });
        if pending_open {
            unfinished += 1;
        }
        // Leaked: a key of this secret (every one is named `<KeyName>-<token>`) that is neither
        // AWSCURRENT's nor, in an unfinished rotation, the pending one (the next run of the
        // rotation picks that up). The old key counts when it is still there after its
        // rotation moved AWSCURRENT.
        let mut expected = vec![
            str_field(&w.value(secret, "AWSCURRENT").await?, "api_key_id").unwrap_or_default(),
        ];
        if pending_open {
            if let Some(id) = str_field(&w.value(secret, "AWSPENDING").await?, "api_key_id") {
                expected.push(id);
            }
        }
        leaked += w
            .keys_with_prefix(&format!("{key_name}-"))
            .await?
            .iter()
            .filter_map(|k| k.id())
            .filter(|id| !expected.iter().any(|e| e == id))
            .count();
    }
    let api_gateway_calls: u32 = calls
        .iter()
        .filter(|(op, _)| {
            !matches!(
                op.as_str(),
                "DescribeSecret" | "GetSecretValue" | "PutSecretValue" | "UpdateSecretVersionStage"
            )
        })
        .map(|(_, n)| *n)
        .sum();
    let floor = n as f64 * NEEDED_API_GATEWAY_CALLS / CONTROL_PLANE_RATE;
    let by_op: BTreeMap<_, _> = calls.iter().collect();
    println!("| fleet figure | value |");
    println!("|---|---|");
    println!("| rotations completed | {completed} of {n} |");
    println!("| rotations left unfinished (AWSPENDING off AWSCURRENT) | {unfinished} |");
    println!("| Secrets Manager re-runs | {reruns} |");
    println!("| invocations ended at their deadline (process replaced) | {timed_out} |");
    println!("| keys leaked | {leaked} |");
    println!(
        "| API Gateway calls answered / refused with 429 | {} / {throttled} |",
        api_gateway_calls.saturating_sub(throttled)
    );
    println!(
        "| total time | {elapsed:.1} s (last rotation done at {:.1} s) against a floor of {floor:.1} s ({n} x {NEEDED_API_GATEWAY_CALLS} calls at {CONTROL_PLANE_RATE}/s): {:.2}x |",
        last_done.as_secs_f64(),
        elapsed / floor
    );
    println!("  calls by operation (answered, refused ones included): {by_op:?}");
    if leaked > 0 {
        return Err(format!("fleet: {leaked} keys leaked").into());
    }
    if completed < n {
        eprintln!("fleet: {completed} of {n} completed, {unfinished} unfinished");
    }
    Ok(())
}
