//! The real binary under the Lambda Runtime API. The test owns a small implementation of the
//! Runtime API's invocation endpoints (next, response, error), starts `api-key-rotator` as
//! Lambda starts a `bootstrap` (with AWS_LAMBDA_RUNTIME_API pointing at it), and delivers each
//! event as one invocation.
//!
//! `cargo lambda watch` serves the same API for hand-driven runs (`make watch`), but it is not
//! used here: when it stops it signals far more than its own children.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::R;

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, Value>>>>>;

struct Api {
    queue: tokio::sync::Mutex<mpsc::Receiver<(String, Value)>>,
    pending: Pending,
    /// When the function first asked for an invocation: the end of its cold init.
    first_next: Arc<Mutex<Option<std::time::Instant>>>,
}

pub struct Function {
    child: Child,
    #[allow(dead_code)] // read by benches/bench.rs
    spawned: std::time::Instant,
    #[allow(dead_code)] // read by benches/bench.rs
    first_next: Arc<Mutex<Option<std::time::Instant>>>,
    sender: mpsc::Sender<(String, Value)>,
    pending: Pending,
    counter: AtomicU64,
    pub log: PathBuf,
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

async fn serve(
    req: Request<hyper::body::Incoming>,
    api: Arc<Api>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => {
            api.first_next
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(std::time::Instant::now);
            let next = api.queue.lock().await.recv().await;
            let Some((id, event)) = next else {
                return Ok(reply(StatusCode::GONE, Bytes::new()));
            };
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() + 300_000)
                .unwrap_or_default();
            let mut r = reply(StatusCode::OK, Bytes::from(event.to_string()));
            let h = r.headers_mut();
            let arn = "arn:aws:lambda:us-east-1:000000000000:function:api-key-rotator";
            for (k, v) in [
                ("lambda-runtime-aws-request-id", id.clone()),
                ("lambda-runtime-deadline-ms", deadline.to_string()),
                ("lambda-runtime-invoked-function-arn", arn.to_owned()),
                ("lambda-runtime-trace-id", format!("Root=1-00000000-{id}")),
                ("content-type", "application/json".to_owned()),
            ] {
                if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
                    h.insert(k, v);
                }
            }
            Ok(r)
        }
        ("POST", ["2018-06-01", "runtime", "invocation", id, kind @ ("response" | "error")]) => {
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let sender = api
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(*id);
            if let Some(tx) = sender {
                let _ = tx.send(if *kind == "response" {
                    Ok(value)
                } else {
                    Err(value)
                });
            }
            Ok(reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}")))
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
            eprintln!("function init error: {}", String::from_utf8_lossy(&body));
            Ok(reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}")))
        }
        _ => Ok(reply(StatusCode::NOT_FOUND, Bytes::new())),
    }
}

impl Function {
    /// Starts the binary with `env` (plus dummy credentials and no metadata calls).
    pub async fn start(name: &str, env: &[(&str, String)]) -> R<Function> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (sender, rx) = mpsc::channel(16);
        let pending: Pending = Arc::default();
        let first_next: Arc<Mutex<Option<std::time::Instant>>> = Arc::default();
        let api = Arc::new(Api {
            queue: tokio::sync::Mutex::new(rx),
            pending: pending.clone(),
            first_next: first_next.clone(),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(req, api.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let log = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("{name}-{}.log", std::process::id()));
        let out = std::fs::File::create(&log)?;
        // ROTATOR_BINARY runs another build of the function (e.g. the release binary).
        let binary = std::env::var_os("ROTATOR_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_api-key-rotator")));
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "api-key-rotator")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let spawned = std::time::Instant::now();
        Ok(Function {
            child: cmd.spawn()?,
            spawned,
            first_next,
            sender,
            pending,
            counter: AtomicU64::new(0),
            log,
        })
    }

    /// One invocation: `Ok(response)` or `Err(error object)` as the function reported it.
    pub async fn invoke(&self, event: &Value) -> R<Result<Value, Value>> {
        let id = format!("req-{:08}", self.counter.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        self.sender.send((id, event.clone())).await?;
        Ok(tokio::time::timeout(Duration::from_secs(300), rx).await??)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// From spawn to the first `GET /runtime/invocation/next`, once it has happened.
    #[allow(dead_code)] // used by benches/bench.rs
    pub async fn cold_init(&self) -> Option<Duration> {
        for _ in 0..500 {
            if let Some(t) = *self.first_next.lock().unwrap_or_else(|p| p.into_inner()) {
                return Some(t.duration_since(self.spawned));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    #[allow(dead_code)] // used by benches/bench.rs
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
