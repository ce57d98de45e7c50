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
use api_key_rotator::config::FunctionConfig;
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
    if let Err(e) = runtime.block_on(run(fleet, operator)) {
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

async fn run(fleet: Option<FleetArgs>, operator: Option<usize>) -> R<()> {
    let local = LocalAws::start("bench")?;
    let world = Arc::new(World::new(&local.endpoint).await?);
    println!("machine: {} cores, {}", num_cpus(), std::env::consts::ARCH);
    if std::env::var_os("BENCH_SKIP_SINGLE").is_none() {
        single(&world).await?;
    }
    if let Some(n) = operator {
        operator_mode(&world, n).await?;
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
