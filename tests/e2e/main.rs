//! End-to-end tests against the embedded local AWS (LocalStack, started here on a free loopback
//! port). The tests play Secrets Manager: RotateSecret opens the valueless AWSPENDING version,
//! then the four steps run through the real handler and the real AWS adapters, re-running the
//! whole rotation with the same token after a failure. No test skips: without the emulator the
//! run fails.

mod adversary;
mod cases;
mod deadline;
#[path = "../fakes/mod.rs"]
mod fakes;
mod grace;
mod guards;
mod matrix;
mod metrics;
mod moto;
mod operator;
mod ownership;
mod permissions;
mod revoke;
mod support;
mod trace_logs;
mod zero_downtime;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use support::localstack::LocalAws;
use support::world::World;
use support::R;

pub type TestFn = fn(Arc<World>) -> Pin<Box<dyn Future<Output = R<()>> + Send>>;

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
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
    let code = runtime.block_on(run(filters));
    std::process::exit(code);
}

async fn run(filters: Vec<String>) -> i32 {
    let started = Instant::now();
    // A filter that selects nothing (a typo) fails the run: "running 0 tests" and exit 0 would
    // pass having checked nothing. Each filter must match at least one case.
    let names: Vec<&str> = all_cases().iter().map(|(name, _)| *name).collect();
    let unmatched: Vec<&String> = filters
        .iter()
        .filter(|f| !names.iter().any(|n| n.contains(f.as_str())))
        .collect();
    if !unmatched.is_empty() {
        eprintln!(
            "error: no e2e case matches {} (a filter meant for another test target? name it: cargo test --lib NAME, --test NAME); the e2e cases are:\n    {}",
            unmatched
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            names.join("\n    ")
        );
        println!("test result: FAILED. 0 passed; 0 failed; 0 ignored; 0 measured; 0 selected");
        return 1;
    }
    // ROTATOR_BINARY swaps the bootstrap the Lambda Runtime API cases start: say which one runs,
    // and refuse a path that is not an executable file.
    match support::runtime::binary_under_test() {
        Ok((path, true)) => println!(
            "binary under test (ROTATOR_BINARY): {} (the cases under the Lambda Runtime API run it; the operator commands run the debug build)",
            path.display()
        ),
        Ok((_, false)) => {}
        Err(e) => {
            eprintln!("error: {e}");
            println!("test result: FAILED. 0 passed; 0 failed; 0 ignored; 0 measured");
            return 1;
        }
    }
    if let Err(e) = support::logs::capture_function_logs() {
        eprintln!("error: cannot capture the function's logs: {e}");
        return 1;
    }
    let local = match LocalAws::start("e2e") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            println!(
                "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            );
            return 1;
        }
    };
    eprintln!("local AWS at {} (pid {:?})", local.endpoint, local.pid());
    let outcome = tokio::select! {
        code = run_cases(&local, &filters, started) => code,
        _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); 130 }
    };
    drop(local);
    outcome
}

async fn run_cases(local: &LocalAws, filters: &[String], started: Instant) -> i32 {
    let world = match World::new(&local.endpoint).await {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("error: could not set up the test world: {e}");
            println!(
                "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            );
            return 1;
        }
    };
    let all = all_cases();
    let selected: Vec<_> = all
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let filtered = all.len() - selected.len();
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed) = (0, Vec::new());
    for (name, test) in selected {
        let t = Instant::now();
        // Each case runs in its own task, so a panic fails that case and not the run.
        let result = tokio::spawn(test(world.clone())).await;
        match result {
            Ok(Ok(())) => {
                passed += 1;
                println!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64());
            }
            Ok(Err(e)) => {
                println!(
                    "test {name} ... FAILED ({:.1}s)\n    {e}",
                    t.elapsed().as_secs_f64()
                );
                failed.push(*name);
            }
            Err(e) => {
                println!("test {name} ... FAILED (panicked: {e})");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for f in &failed {
            println!("    {f}");
        }
        println!("local AWS log: {}", local.log_path().display());
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered} filtered out; finished in {:.2}s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    i32::from(!failed.is_empty())
}

/// Every case, in the order they run: the deadline and revoke cases run before the last case,
/// which reads what every case did.
fn all_cases() -> Vec<(&'static str, TestFn)> {
    let mut all = cases::all();
    let last = all.pop();
    all.extend(deadline::all());
    all.extend(revoke::all());
    all.extend(last);
    all
}
