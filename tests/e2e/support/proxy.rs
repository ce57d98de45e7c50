//! A fault-injecting HTTP proxy owned by the tests, between the function and the local AWS. It
//! names each request by its AWS operation and can make an operation fail before it reaches the
//! emulator, or lose its answer after the emulator committed it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::R;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500 without forwarding: the call fails and nothing happened.
    FailBefore,
    /// Forward, let the emulator commit, then answer 500: the answer is lost.
    LoseAnswer,
    /// Forward, let the emulator commit, then drop the connection without an answer.
    ResetAfter,
    /// Answer 429 TooManyRequests / ThrottlingException without forwarding.
    Throttle,
    /// Answer API Gateway's 429 LimitExceededException without forwarding: its rate limit, with
    /// `Retry-After` (seconds) and a message that names nothing (so the hint is what tells).
    RateLimitRetryAfter(u32),
    /// Answer API Gateway's 429 LimitExceededException without forwarding: a quota, no
    /// `Retry-After`, a message that names the quota.
    QuotaExceeded,
    /// Hold the request this long, then forward it (the client may have given up by then, and
    /// the emulator still commits it).
    Delay(std::time::Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    operation: String,
    /// Only while the test says this phase (e.g. a step) is running.
    phase: Option<String>,
    fault: Fault,
    /// Matching calls let through untouched before the fault starts.
    skip: u32,
    remaining: u32,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    phase: Option<String>,
    calls: BTreeMap<String, u32>,
    injected: BTreeMap<String, u32>,
    limits: Option<Limits>,
    throttled: u32,
    /// Requests of each operation being handled now, and the most at once.
    in_flight: BTreeMap<String, u32>,
    peak: BTreeMap<String, u32>,
    /// Calls of an operation held until this many have arrived (or a timeout passed).
    gate: Option<(String, Arc<tokio::sync::Barrier>, std::time::Duration)>,
}

/// Counts a request in flight for as long as it is handled, however it ends.
struct InFlight {
    state: Arc<Mutex<State>>,
    op: String,
}

impl InFlight {
    fn start(state: &Arc<Mutex<State>>, op: &str) -> InFlight {
        let mut s = lock(state);
        let n = s.in_flight.entry(op.to_owned()).or_default();
        *n += 1;
        let now = *n;
        let peak = s.peak.entry(op.to_owned()).or_default();
        *peak = (*peak).max(now);
        InFlight {
            state: state.clone(),
            op: op.to_owned(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.state).in_flight.get_mut(&self.op) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    #[allow(dead_code)] // used by benches/bench.rs
    fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: std::time::Instant::now(),
        }
    }
    fn refill(&mut self) {
        let now = std::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }
}

/// API Gateway's account limits: CreateApiKey and DeleteApiKey 5 a second each, and every
/// control-plane call together 10 a second with a burst of 40. Beyond them: 429.
#[derive(Debug, Clone)]
struct Limits {
    create: Bucket,
    delete: Bucket,
    all: Bucket,
}

fn is_api_gateway(op: &str) -> bool {
    !matches!(
        op,
        "DescribeSecret"
            | "GetSecretValue"
            | "PutSecretValue"
            | "UpdateSecretVersionStage"
            | "RotateSecret"
    )
}

/// Every API key value that crossed any proxy, for the log scan.
pub static SEEN_VALUES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_values(body: &[u8]) {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("value" | "api_key_value", serde_json::Value::String(s))
                            if s.len() >= 20 =>
                        {
                            out.push(s.clone())
                        }
                        ("SecretString", serde_json::Value::String(s)) => {
                            if let Ok(inner) = serde_json::from_str::<serde_json::Value>(s) {
                                walk(&inner, out);
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let mut found = Vec::new();
        walk(&v, &mut found);
        if !found.is_empty() {
            SEEN_VALUES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(found);
        }
    }
}

#[derive(Clone)]
pub struct Proxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

/// The AWS operation of a request: Secrets Manager names it in `x-amz-target`; API Gateway's
/// REST paths name it by method and path.
pub fn operation_of(method: &str, path: &str, target: Option<&str>) -> String {
    if let Some(t) = target {
        let op = t.rsplit('.').next().unwrap_or(t);
        // Secrets Manager's tag calls are named with the service, as the code's call lists
        // name them: API Gateway has a TagResource of its own.
        return match op {
            "TagResource" | "UntagResource" => format!("secretsmanager:{op}"),
            _ => op.to_owned(),
        };
    }
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let op = match (method, segs.as_slice()) {
        ("POST", ["apikeys"]) => "CreateApiKey",
        ("GET", ["apikeys"]) => "GetApiKeys",
        ("GET", ["apikeys", _]) => "GetApiKey",
        ("PATCH", ["apikeys", _]) => "UpdateApiKey",
        ("DELETE", ["apikeys", _]) => "DeleteApiKey",
        ("GET", ["usageplans"]) => "GetUsagePlans",
        ("GET", ["usageplans", _]) => "GetUsagePlan",
        ("GET", ["usageplans", _, "keys"]) => "GetUsagePlanKeys",
        ("POST", ["usageplans", _, "keys"]) => "CreateUsagePlanKey",
        ("GET", ["usageplans", _, "keys", _]) => "GetUsagePlanKey",
        ("DELETE", ["usageplans", _, "keys", _]) => "DeleteUsagePlanKey",
        ("PUT", ["tags", ..]) => "TagResource",
        ("GET", ["tags", ..]) => "GetTags",
        _ => return format!("{method} {path}"),
    };
    op.to_owned()
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proxy {
    pub async fn start(upstream: &str) -> R<Proxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let client = reqwest::Client::builder().no_proxy().build()?;
        let upstream = upstream.trim_end_matches('/').to_owned();
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = st.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        handle(req, st.clone(), client.clone(), upstream.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Proxy { endpoint, state })
    }

    /// Injects `fault` into the next `times` calls of `operation`.
    pub fn inject(&self, operation: &str, fault: Fault, times: u32) {
        self.inject_in(None, operation, fault, times);
    }

    /// Injects `fault` into the next `times` calls of `operation` made while `phase` runs.
    pub fn inject_in(&self, phase: Option<&str>, operation: &str, fault: Fault, times: u32) {
        self.inject_after(phase, operation, 0, fault, times);
    }

    /// Lets the next `skip` calls of `operation` (made while `phase` runs) through, then injects
    /// `fault` into the `times` calls after them: the second of two calls fails, not the first.
    pub fn inject_after(
        &self,
        phase: Option<&str>,
        operation: &str,
        skip: u32,
        fault: Fault,
        times: u32,
    ) {
        lock(&self.state).rules.push(Rule {
            operation: operation.to_owned(),
            phase: phase.map(str::to_owned),
            fault,
            skip,
            remaining: times,
        });
    }

    /// Enforces API Gateway's account rate limits from now on.
    #[allow(dead_code)] // used by benches/bench.rs
    pub fn enforce_api_gateway_limits(&self) {
        lock(&self.state).limits = Some(Limits {
            create: Bucket::new(5.0, 5.0),
            delete: Bucket::new(5.0, 5.0),
            all: Bucket::new(10.0, 40.0),
        });
    }

    /// How many calls the rate limits refused.
    #[allow(dead_code)] // used by benches/bench.rs
    pub fn throttled(&self) -> u32 {
        lock(&self.state).throttled
    }

    /// Names what runs now (e.g. "createSecret"), for rules scoped to a phase.
    pub fn set_phase(&self, phase: Option<&str>) {
        lock(&self.state).phase = phase.map(str::to_owned);
    }

    pub fn clear(&self) {
        lock(&self.state).rules.clear();
    }

    pub fn calls(&self, operation: &str) -> u32 {
        lock(&self.state).calls.get(operation).copied().unwrap_or(0)
    }

    pub fn injected(&self, operation: &str) -> u32 {
        lock(&self.state)
            .injected
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    pub fn all_calls(&self) -> BTreeMap<String, u32> {
        lock(&self.state).calls.clone()
    }

    pub fn reset_counts(&self) {
        let mut s = lock(&self.state);
        s.calls.clear();
        s.injected.clear();
        s.peak.clear();
    }

    /// Holds every call of `operation` until `parties` of them are in the proxy at once (each
    /// waits at most `timeout`), so that they reach the emulator together.
    #[allow(dead_code)] // not every test binary that includes the proxy uses it
    pub fn gate(&self, operation: &str, parties: usize, timeout: std::time::Duration) {
        lock(&self.state).gate = Some((
            operation.to_owned(),
            Arc::new(tokio::sync::Barrier::new(parties)),
            timeout,
        ));
    }

    /// The most calls of `operation` that were in the proxy at the same time.
    #[allow(dead_code)] // not every test binary that includes the proxy uses it
    pub fn peak(&self, operation: &str) -> u32 {
        lock(&self.state).peak.get(operation).copied().unwrap_or(0)
    }

    /// Waits until no request is in the proxy (a held or delayed one has landed), at most
    /// `timeout`; false if one still is.
    #[allow(dead_code)] // not every test binary that includes the proxy uses it
    pub async fn idle(&self, timeout: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        loop {
            if lock(&self.state).in_flight.values().all(|n| *n == 0) {
                return true;
            }
            if std::time::Instant::now() > until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn throttle_response() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(
        br#"{"__type":"ThrottlingException","message":"Rate exceeded (injected by the test proxy)"}"#,
    )));
    *resp.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-amzn-errortype",
        hyper::header::HeaderValue::from_static("TooManyRequestsException"),
    );
    resp
}

/// API Gateway's LimitExceededException (restJson1: the type in `x-amzn-errortype`), with
/// `Retry-After` when `retry_after` is given.
fn limit_exceeded_response(message: &str, retry_after: Option<u32>) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-amzn-errortype",
        hyper::header::HeaderValue::from_static("LimitExceededException"),
    );
    if let Some(secs) = retry_after {
        h.insert("retry-after", hyper::header::HeaderValue::from(secs));
    }
    resp
}

fn error_response() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(
        br#"{"__type":"InternalFailure","message":"injected by the test proxy"}"#,
    )));
    *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().as_str().to_owned();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let op = operation_of(&method, &path_q, target.as_deref());
    let _in_flight = InFlight::start(&state, &op);
    let gate = lock(&state)
        .gate
        .clone()
        .filter(|(gated, _, _)| *gated == op);
    if let Some((_, barrier, timeout)) = gate {
        let _ = tokio::time::timeout(timeout, barrier.wait()).await;
    }
    let fault = {
        let mut s = lock(&state);
        *s.calls.entry(op.clone()).or_default() += 1;
        let phase = s.phase.clone();
        let fault = s
            .rules
            .iter_mut()
            .find(|r| {
                r.operation == op && r.remaining > 0 && (r.phase.is_none() || r.phase == phase)
            })
            .and_then(|r| {
                if r.skip > 0 {
                    r.skip -= 1;
                    return None;
                }
                r.remaining -= 1;
                Some(r.fault)
            });
        if fault.is_some() {
            *s.injected.entry(op.clone()).or_default() += 1;
        }
        let limited = match s.limits.as_mut() {
            Some(l) if is_api_gateway(&op) => {
                let own = match op.as_str() {
                    "CreateApiKey" => Some(&mut l.create),
                    "DeleteApiKey" => Some(&mut l.delete),
                    _ => None,
                };
                let own_ok = match own {
                    Some(b) => {
                        b.refill();
                        b.tokens >= 1.0
                    }
                    None => true,
                };
                l.all.refill();
                if own_ok && l.all.tokens >= 1.0 {
                    l.all.tokens -= 1.0;
                    match op.as_str() {
                        "CreateApiKey" => l.create.tokens -= 1.0,
                        "DeleteApiKey" => l.delete.tokens -= 1.0,
                        _ => {}
                    }
                    false
                } else {
                    true
                }
            }
            _ => false,
        };
        if limited {
            s.throttled += 1;
            return Ok(throttle_response());
        }
        fault
    };
    match fault {
        Some(Fault::FailBefore) => return Ok(error_response()),
        Some(Fault::Throttle) => return Ok(throttle_response()),
        Some(Fault::RateLimitRetryAfter(secs)) => {
            return Ok(limit_exceeded_response(
                "Limit Exceeded (injected by the test proxy)",
                Some(secs),
            ))
        }
        Some(Fault::QuotaExceeded) => {
            return Ok(limit_exceeded_response(
                "API key quota exceeded for this account (injected by the test proxy)",
                None,
            ))
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error_response()),
    };
    let mut fwd = client.request(parts.method.clone(), format!("{upstream}{path_q}"));
    for (name, value) in parts.headers.iter() {
        if name != "host" && name != "content-length" {
            fwd = fwd.header(name, value);
        }
    }
    let upstream_resp = match fwd.body(body).send().await {
        Ok(r) => r,
        Err(_) => return Ok(error_response()),
    };
    let status = upstream_resp.status();
    let headers = upstream_resp.headers().clone();
    let bytes = upstream_resp.bytes().await.unwrap_or_default();
    record_values(&bytes);
    match fault {
        Some(Fault::LoseAnswer) => return Ok(error_response()),
        // An error from the service makes hyper drop the connection with no answer.
        Some(Fault::ResetAfter) => return Err(std::io::Error::other("injected connection reset")),
        _ => {}
    }
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    for (name, value) in headers.iter() {
        if name != "transfer-encoding" && name != "content-length" && name != "connection" {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(resp)
}
