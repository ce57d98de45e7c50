//! Zero downtime, proven with the client users run: AWS's caching client
//! (`aws_secretsmanager_caching`, the one the Secrets Manager Agent uses) reads the secret through
//! the local AWS with a TTL, as a user configures it, and calls the gateway with the cached key
//! throughout several rotations and after them. The data plane delays newly attached keys
//! (`support::propagation`), as AWS does, and the TestUrl probe goes through the same delay.
//!
//! Refused requests are counted for each policy and printed; docs/zero-downtime.md holds the
//! figures.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_key_rotator::aws::SdkSettings;
use aws_secretsmanager_caching::SecretsManagerCachingClient;
use serde_json::Value;

use crate::cases::{assert_rotated, rotator, Setup};
use crate::ensure;
use crate::support::propagation::{configured_delay, Propagation};
use crate::support::world::{sdk_config_as, World};
use crate::support::R;

/// How the client behaves on a 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRefusal {
    /// Keeps using the cached value until the TTL expires.
    Wait,
    /// Refreshes the cache once (`refresh_now`) and retries the request once.
    RefreshOnce,
}

/// What the client saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub requests: usize,
    pub refused: usize,
    /// From the first to the last refused request of each run of refusals.
    windows: Vec<Duration>,
    /// GetSecretValue/DescribeSecret calls the cache could not answer.
    cache_errors: usize,
    /// The distinct keys the client called with: one per rotation, plus the first, when it
    /// read the secret at all (a client that never reads it sees one key, or none).
    keys: std::collections::BTreeSet<String>,
    /// Refreshes forced by a 403 (`OnRefusal::RefreshOnce`).
    refreshes: usize,
}

impl Seen {
    /// What every row demands before its own claim means anything: the client called the
    /// gateway throughout, every cache read succeeded, and it picked up every key.
    pub(crate) fn check_client(&self, policy: &str, rotations: usize) -> R<()> {
        ensure!(
            self.requests >= 100,
            "{policy}: too few requests ({})",
            self.requests
        );
        ensure!(
            self.cache_errors == 0,
            "{policy}: the cache failed {} times",
            self.cache_errors
        );
        ensure!(
            self.keys.len() == rotations + 1,
            "{policy}: the client called with {} distinct keys over {rotations} rotations; it must have read each new one",
            self.keys.len()
        );
        Ok(())
    }
}

/// A user's application: the caching client with `ttl`, signing as `access_key` (the world's
/// account), calling the gateway every 20 ms with the cached key until `stop`. It runs on its
/// own thread and runtime, as another process would.
fn start_client(
    endpoint: String,
    access_key: String,
    secret: String,
    url: String,
    ttl: Duration,
    on_refusal: OnRefusal,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<Seen, String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let sdk = sdk_config_as(&endpoint, &SdkSettings::default(), &access_key).await;
            let size = NonZeroUsize::new(10).ok_or_else(|| "cache size".to_owned())?;
            let cache = SecretsManagerCachingClient::from_builder(
                aws_sdk_secretsmanager::config::Builder::from(&sdk),
                size,
                ttl,
                false,
            )
            .await
            .map_err(|e| e.to_string())?;
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            let key_of = |refresh: bool| {
                let cache = &cache;
                let secret = &secret;
                async move {
                    match cache.get_secret_value(secret, None, None, refresh).await {
                        Ok(out) => out
                            .secret_string
                            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                            .and_then(|v| v["api_key_value"].as_str().map(str::to_owned))
                            .ok_or_else(|| "no api_key_value".to_owned()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            let call = |key: String| {
                let http = &http;
                let url = &url;
                async move {
                    match http.get(url).header("x-api-key", key).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    }
                }
            };
            let mut seen = Seen::default();
            let mut run: Option<(Instant, Instant)> = None;
            while !stop.load(Ordering::SeqCst) {
                let key = match key_of(false).await {
                    Ok(k) => k,
                    Err(_) => {
                        seen.cache_errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                crate::support::world::remember(&key);
                seen.keys.insert(key.clone());
                let mut status = call(key).await;
                if status == 403 && on_refusal == OnRefusal::RefreshOnce {
                    seen.refreshes += 1;
                    match key_of(true).await {
                        Ok(fresh) => {
                            seen.keys.insert(fresh.clone());
                            status = call(fresh).await
                        }
                        Err(_) => seen.cache_errors += 1,
                    }
                }
                seen.requests += 1;
                let now = Instant::now();
                if status == 200 {
                    if let Some((first, last)) = run.take() {
                        seen.windows.push(last - first);
                    }
                } else {
                    seen.refused += 1;
                    run = Some((run.map_or(now, |(first, _)| first), now));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some((first, last)) = run {
                seen.windows.push(last - first);
            }
            Ok(seen)
        })
    })
}

/// A probed secret whose TestUrl goes through the propagation delay, with the scenario's
/// policy and grace period.
pub(crate) async fn setup_delayed(w: &World, data: &Propagation, sc: &Scenario) -> R<Setup> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let key_name = w.unique("partner");
    let url = data.stage_url(&api);
    let mut tags = vec![
        ("KeyName", key_name.as_str()),
        ("UsagePlan", plan.as_str()),
        ("TestUrl", url.as_str()),
        ("OldKeyAction", sc.policy),
    ];
    if let Some(grace) = sc.grace {
        tags.push(("GracePeriod", grace));
    }
    let secret = w.create_secret(Some("{}"), &tags).await?;
    Ok(Setup {
        api,
        plan,
        secret,
        key_name,
    })
}

pub(crate) struct Scenario {
    pub policy: &'static str,
    /// The secret's GracePeriod tag, if any.
    pub grace: Option<&'static str>,
    pub ttl: Duration,
    /// Pause after each rotation; with the rotation's own time, the rotation interval.
    pub pause: Duration,
    pub rotations: usize,
    pub on_refusal: OnRefusal,
}

/// Rotates `rotations` times while the client runs, then lets it run one TTL more.
async fn play(w: &Arc<World>, data: &Propagation, sc: &Scenario) -> R<(Seen, Duration)> {
    let s = setup_delayed(w, data, sc).await?;
    play_on(w, data, sc, &s).await
}

/// `play` on a secret set up already (`setup_delayed`).
pub(crate) async fn play_on(
    w: &Arc<World>,
    data: &Propagation,
    sc: &Scenario,
    s: &Setup,
) -> R<(Seen, Duration)> {
    let r = rotator(w).await?;
    // The first key, so that the client has something to cache.
    let (t, errors) = w.rotate(&r, &s.secret, 1).await?;
    ensure!(
        errors.is_empty(),
        "{}: first rotation: {errors:?}",
        sc.policy
    );
    assert_rotated(w, s, &t, &[&s.plan]).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let client = start_client(
        w.endpoint.clone(),
        w.access_key.clone(),
        s.secret.clone(),
        data.stage_url(&s.api),
        sc.ttl,
        sc.on_refusal,
        stop.clone(),
    );
    // Past the first key's propagation, with the cache filled.
    tokio::time::sleep(data.delay + Duration::from_millis(300)).await;
    let started = Instant::now();
    for _ in 0..sc.rotations {
        let (t, errors) = w.rotate(&r, &s.secret, 1).await?;
        ensure!(errors.is_empty(), "{}: {errors:?}", sc.policy);
        assert_rotated(w, s, &t, &[&s.plan]).await?;
        tokio::time::sleep(sc.pause).await;
    }
    let interval = started.elapsed() / sc.rotations as u32;
    // Every cache has refreshed by now.
    tokio::time::sleep(sc.ttl + Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = tokio::task::spawn_blocking(move || client.join())
        .await?
        .map_err(|_| "the client thread panicked")??;
    Ok((seen, interval))
}

pub(crate) fn report(label: &str, sc: &Scenario, seen: &Seen, interval: Duration) {
    let longest = seen.windows.iter().max().copied().unwrap_or_default();
    eprintln!(
        "  {label}: {} of {} requests refused over {} rotations (TTL {} ms, rotation every {} ms, {:?}); {} keys used, {} refreshes forced; longest refusal window {} ms; windows {:?} ms",
        seen.refused,
        seen.requests,
        sc.rotations,
        sc.ttl.as_millis(),
        interval.as_millis(),
        sc.on_refusal,
        seen.keys.len(),
        seen.refreshes,
        longest.as_millis(),
        seen.windows.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
}

/// keep-previous with a TTL shorter than the rotation interval refuses nothing; delete and
/// disable refuse the cached key from finishSecret until the cache refreshes, a window of at
/// most one TTL per rotation; refreshing once on a 403 shrinks it to one refused request per
/// rotation at most. Every case runs against a data plane that delays new keys.
pub async fn cached_clients_with_the_aws_caching_client(w: Arc<World>) -> R<()> {
    let data = Propagation::start(&w.endpoint, configured_delay()).await?;
    let ttl = Duration::from_millis(1500);
    let pause = Duration::from_millis(600);
    let scenario = |policy, on_refusal| Scenario {
        policy,
        grace: None,
        ttl,
        pause,
        rotations: 3,
        on_refusal,
    };

    let kp = scenario("keep-previous", OnRefusal::Wait);
    let (seen, interval) = play(&w, &data, &kp).await?;
    report("keep-previous", &kp, &seen, interval);
    ensure!(
        interval > kp.ttl,
        "the rotation interval ({interval:?}) must exceed the TTL for this case"
    );
    seen.check_client("keep-previous", kp.rotations)?;
    ensure!(
        seen.refused == 0,
        "keep-previous: {} requests refused",
        seen.refused
    );
    ensure!(
        data.held_back() > 0,
        "the propagation delay never held a new key back: the probe did not wait for it"
    );

    for policy in ["delete", "disable"] {
        let sc = scenario(policy, OnRefusal::Wait);
        let (seen, interval) = play(&w, &data, &sc).await?;
        report(policy, &sc, &seen, interval);
        seen.check_client(policy, sc.rotations)?;
        ensure!(seen.refused > 0, "{policy}: the old key was never refused");
        // One window per rotation at most, none longer than a TTL plus a request's time.
        ensure!(
            seen.windows.len() <= sc.rotations,
            "{policy}: {} refusal windows for {} rotations",
            seen.windows.len(),
            sc.rotations
        );
        let slack = Duration::from_millis(250);
        ensure!(
            seen.windows.iter().all(|w| *w <= sc.ttl + slack),
            "{policy}: a refusal window outlived the TTL: {:?}",
            seen.windows
        );

        let sc = scenario(policy, OnRefusal::RefreshOnce);
        let (seen, interval) = play(&w, &data, &sc).await?;
        report(
            &format!("{policy}, refresh once on 403"),
            &sc,
            &seen,
            interval,
        );
        seen.check_client(policy, sc.rotations)?;
        // The refresh must have happened: each rotation's first 403 forces one.
        ensure!(
            seen.refreshes >= 1,
            "{policy}, refresh once: no 403 ever forced a refresh, so the row proves nothing"
        );
        ensure!(
            seen.refused <= sc.rotations,
            "{policy}: refreshing on a 403 still refused {} requests",
            seen.refused
        );
    }

    // Two rotations within one TTL break keep-previous: the key two rotations back is deleted
    // while the cache still holds it.
    let twice = Scenario {
        policy: "keep-previous",
        grace: None,
        ttl: Duration::from_secs(12),
        pause: Duration::ZERO,
        rotations: 2,
        on_refusal: OnRefusal::Wait,
    };
    let (seen, interval) = play(&w, &data, &twice).await?;
    report(
        "keep-previous, two rotations in one TTL",
        &twice,
        &seen,
        interval,
    );
    ensure!(
        seen.requests >= 100 && seen.cache_errors == 0,
        "two rotations in one TTL: {} requests, {} cache errors",
        seen.requests,
        seen.cache_errors
    );
    ensure!(
        interval * 2 < twice.ttl,
        "the two rotations ({interval:?} each) did not fit in one TTL"
    );
    ensure!(
        seen.refused > 0,
        "two rotations within one TTL refused nothing: the cached key two rotations back survived"
    );
    Ok(())
}
