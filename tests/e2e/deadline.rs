//! The invocation's deadline, end to end: the release or debug binary under the Lambda Runtime
//! API stand-in, which hands each invocation a deadline and ends one that runs past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cases::{assert_rotated, setup};
use crate::ensure;
use crate::support::proxy::{Fault, Proxy};
use crate::support::runtime::Function;
use crate::support::world::{World, STEPS};
use crate::support::R;
use crate::TestFn;

pub fn all() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "throttling_is_waited_out_until_the_deadline_then_the_step_fails_cleanly",
            |w| Box::pin(throttling_is_waited_out_until_the_deadline(w)),
        ),
        (
            "an_invocation_past_its_deadline_is_ended_and_a_fresh_process_serves_the_next",
            |w| Box::pin(an_invocation_past_its_deadline_is_ended(w)),
        ),
    ]
}

/// The whole rotation, once: `Ok` when every step succeeded, else the first error.
async fn run_rotation(f: &Function, secret: &str, token: &str) -> R<Result<(), String>> {
    for step in STEPS {
        if let Err(e) = f.invoke(&World::event(step, secret, token)).await? {
            return Ok(Err(format!("{step}: {e}")));
        }
    }
    Ok(Ok(()))
}

/// Every CreateApiKey is throttled: createSecret keeps retrying well past the SDK's attempts,
/// then fails with a clean AwsFailure before Lambda's deadline (the process is not ended). When
/// throttling stops, Secrets Manager's re-run completes the rotation with one key.
async fn throttling_is_waited_out_until_the_deadline(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let timeout = Duration::from_secs(6);
    let margin = Duration::from_millis(1500);
    let f = Function::start_with_timeout(
        "deadline-throttled",
        &[
            ("AWS_ENDPOINT_URL", proxy.endpoint.clone()),
            ("ROTATOR_MAX_ATTEMPTS", "3".into()),
            ("ROTATOR_INITIAL_BACKOFF_MS", "20".into()),
            ("ROTATOR_MAX_BACKOFF_MS", "100".into()),
            ("ROTATOR_DEADLINE_MARGIN_MS", margin.as_millis().to_string()),
        ],
        timeout,
    )
    .await?;
    let s = setup(&w, Some("{}"), &[]).await?;
    let token = w.open_rotation(&s.secret).await?;
    proxy.inject("CreateApiKey", Fault::Throttle, u32::MAX);
    let started = Instant::now();
    let answer = f
        .invoke(&World::event("createSecret", &s.secret, &token))
        .await?;
    let took = started.elapsed();
    let err = match answer {
        Ok(_) => {
            return Err("createSecret succeeded while every CreateApiKey was throttled".into())
        }
        Err(e) => e,
    };
    ensure!(
        f.timed_out() == 0,
        "the invocation ran past its deadline: {err}"
    );
    ensure!(err["errorType"] == "AwsFailure", "error type: {err}");
    let message = err["errorMessage"].as_str().unwrap_or_default();
    for needle in [
        "createSecret",
        s.secret.as_str(),
        "CreateApiKey",
        "TooManyRequestsException",
    ] {
        ensure!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    ensure!(
        took >= timeout - margin - Duration::from_millis(500) && took < timeout,
        "createSecret gave up after {took:?}, expected close to {:?}",
        timeout - margin
    );
    let tries = proxy.injected("CreateApiKey");
    ensure!(
        tries > 10,
        "CreateApiKey was tried {tries} times: throttling was not waited out"
    );
    proxy.clear();
    let rerun = run_rotation(&f, &s.secret, &token).await?;
    ensure!(rerun.is_ok(), "the re-run failed: {rerun:?}");
    assert_rotated(&w, &s, &token, &[&s.plan]).await?;
    Ok(())
}

/// A function that believes it has longer than it has runs past Lambda's deadline: the
/// stand-in ends the invocation (Sandbox.Timedout) and starts a fresh process, which serves
/// the re-run; the rotation completes with one key, as after any crash.
async fn an_invocation_past_its_deadline_is_ended(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let timeout = Duration::from_secs(3);
    let f = Function::start_with_timeout(
        "deadline-overrun",
        &[
            ("AWS_ENDPOINT_URL", proxy.endpoint.clone()),
            ("ROTATOR_MAX_ATTEMPTS", "3".into()),
            ("ROTATOR_INITIAL_BACKOFF_MS", "2".into()),
            ("ROTATOR_MAX_BACKOFF_MS", "10".into()),
        ],
        timeout,
    )
    .await?;
    let s = setup(&w, Some("{}"), &[]).await?;
    let token = w.open_rotation(&s.secret).await?;
    f.overstate_deadline(Duration::from_secs(60));
    // CreateApiKey held past the deadline and committed anyway: the key exists, and the
    // function that made it is gone before it could store it.
    proxy.inject("CreateApiKey", Fault::Delay(Duration::from_secs(5)), 1);
    let answer = f
        .invoke(&World::event("createSecret", &s.secret, &token))
        .await?;
    let err = answer
        .err()
        .ok_or("createSecret succeeded although it ran past the deadline")?;
    ensure!(err["errorType"] == "Sandbox.Timedout", "error: {err}");
    ensure!(f.timed_out() == 1, "timed out {} times", f.timed_out());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rerun = run_rotation(&f, &s.secret, &token).await?;
    ensure!(
        rerun.is_ok(),
        "the fresh process's re-run failed: {rerun:?}"
    );
    assert_rotated(&w, &s, &token, &[&s.plan]).await?;
    Ok(())
}
