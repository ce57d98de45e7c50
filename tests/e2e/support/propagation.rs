//! The data plane as AWS shows it: a newly attached key takes seconds to work. LocalStack
//! accepts a key the instant it is attached, so this proxy, in the tests' path to the gateway,
//! refuses (403, as API Gateway does for an unknown key) a key value for `delay` from the first
//! request the emulator accepted with it. The TestUrl probe goes through it too, so the probe's
//! retries are tested against the delay as on AWS.
//!
//! The delay comes from `E2E_PROPAGATION_MS` (default 2000).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::R;

#[derive(Default)]
struct State {
    /// Key value → when the emulator first accepted it.
    first_accepted: HashMap<String, Instant>,
    /// Requests refused because the key had not propagated yet.
    held_back: u32,
}

pub struct Propagation {
    /// Base URL standing in for the emulator's endpoint on the data plane.
    pub endpoint: String,
    pub delay: Duration,
    state: Arc<Mutex<State>>,
}

/// The delay `E2E_PROPAGATION_MS` asks for (default 2 s).
pub fn configured_delay() -> Duration {
    std::env::var("E2E_PROPAGATION_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_millis(2000))
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn refused() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"message":"Forbidden (the key has not propagated yet)"}"#,
    )));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

impl Propagation {
    pub async fn start(upstream: &str, delay: Duration) -> R<Propagation> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let client = reqwest::Client::builder().no_proxy().build()?;
        let upstream = upstream.trim_end_matches('/').to_owned();
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (st, client, upstream) = (st.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        forward(req, st.clone(), client.clone(), upstream.clone(), delay)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Propagation {
            endpoint,
            delay,
            state,
        })
    }

    /// The stage URL of `api` through this proxy.
    pub fn stage_url(&self, api: &str) -> String {
        format!("{}/_aws/execute-api/{api}/prod/", self.endpoint)
    }

    /// How many requests were refused because their key had not propagated.
    pub fn held_back(&self) -> u32 {
        lock(&self.state).held_back
    }
}

async fn forward(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let answer = client
        .request(method, format!("{upstream}{path_q}"))
        .header("x-api-key", &key)
        .body(body)
        .send()
        .await;
    let Ok(answer) = answer else {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return Ok(r);
    };
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    if status.is_success() && !key.is_empty() {
        let mut s = lock(&state);
        let first = *s.first_accepted.entry(key).or_insert_with(Instant::now);
        if first.elapsed() < delay {
            s.held_back += 1;
            return Ok(refused());
        }
    }
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    Ok(r)
}
