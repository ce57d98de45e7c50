//! The real binary under the Lambda Runtime API. The test owns a small implementation of the
//! Runtime API's invocation endpoints (next, response, error), starts `api-key-rotator` as
//! Lambda starts a `bootstrap` (with AWS_LAMBDA_RUNTIME_API pointing at it), and delivers each
//! event as one invocation.
//!
//! As Lambda does, each invocation gets a deadline (`lambda-runtime-deadline-ms`), by default
//! the template's `Timeout`; an invocation still running at its deadline is ended: the process
//! is killed, the invocation reports `Sandbox.Timedout`, and a fresh process (a cold start)
//! takes the next one.
//!
//! `cargo lambda watch` serves the same API for hand-driven runs (`make watch`), but it is not
//! used here: when it stops it signals far more than its own children.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// How long each invocation may run.
    timeout: Duration,
    /// Added to the deadline the function is told (tests of a function that over-runs).
    overstated_ms: AtomicU64,
    pending: Pending,
    /// When the function first asked for an invocation: the end of its cold init.
    first_next: Arc<Mutex<Option<std::time::Instant>>>,
}

/// The function's `Timeout` in template.yaml, in seconds (300 if it cannot be read).
pub fn template_timeout() -> Duration {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml");
    let secs = std::fs::read_to_string(path).ok().and_then(|t| {
        t.lines()
            .filter_map(|l| l.trim().strip_prefix("Timeout:"))
            .find_map(|v| v.trim().parse::<u64>().ok())
    });
    Duration::from_secs(secs.unwrap_or(300))
}

pub struct Function {
    /// The process now serving invocations; replaced when one runs past its deadline.
    child: Mutex<Child>,
    /// How to start a fresh process.
    command: Mutex<Command>,
    timeout: Duration,
    /// Invocations ended at their deadline (each one cost a fresh process).
    timed_out: AtomicU32,
    #[allow(dead_code)] // read by benches/bench.rs
    spawned: std::time::Instant,
    #[allow(dead_code)] // read by benches/bench.rs
    first_next: Arc<Mutex<Option<std::time::Instant>>>,
    sender: mpsc::Sender<(String, Value)>,
    pending: Pending,
    api: Arc<Api>,
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
                .map(|d| {
                    (d + api.timeout).as_millis()
                        + u128::from(api.overstated_ms.load(Ordering::SeqCst))
                })
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
    /// Starts the binary with `env` (plus dummy credentials and no metadata calls), each
    /// invocation limited to the template's timeout.
    pub async fn start(name: &str, env: &[(&str, String)]) -> R<Function> {
        Self::start_with_timeout(name, env, template_timeout()).await
    }

    /// The same, with each invocation limited to `timeout`.
    pub async fn start_with_timeout(
        name: &str,
        env: &[(&str, String)],
        timeout: Duration,
    ) -> R<Function> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (sender, rx) = mpsc::channel(16);
        let pending: Pending = Arc::default();
        let first_next: Arc<Mutex<Option<std::time::Instant>>> = Arc::default();
        let api = Arc::new(Api {
            queue: tokio::sync::Mutex::new(rx),
            timeout,
            overstated_ms: AtomicU64::new(0),
            pending: pending.clone(),
            first_next: first_next.clone(),
        });
        let served = api.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = served.clone();
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
        // Every byte the binary writes is in the final log scan.
        super::logs::register(log.clone());
        let (binary, _) = binary_under_test()?;
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
        let child = cmd.spawn()?;
        Ok(Function {
            child: Mutex::new(child),
            command: Mutex::new(cmd),
            timeout,
            timed_out: AtomicU32::new(0),
            spawned,
            first_next,
            sender,
            pending,
            api,
            counter: AtomicU64::new(0),
            log,
        })
    }

    /// One invocation: `Ok(response)` or `Err(error object)` as the function reported it. One
    /// still running at its deadline is ended as Lambda ends it: the process is killed, a fresh
    /// one started, and the invocation answers `Sandbox.Timedout`.
    pub async fn invoke(&self, event: &Value) -> R<Result<Value, Value>> {
        let id = format!("req-{:08}", self.counter.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        self.sender.send((id.clone(), event.clone())).await?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(answer) => Ok(answer?),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                self.restart()?;
                self.timed_out.fetch_add(1, Ordering::SeqCst);
                Ok(Err(serde_json::json!({
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": format!(
                        "Task timed out after {:.2} seconds",
                        self.timeout.as_secs_f64()
                    ),
                })))
            }
        }
    }

    /// Kills the process and starts a fresh one on the same Runtime API.
    fn restart(&self) -> R<()> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        let fresh = self
            .command
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn()?;
        *child = fresh;
        Ok(())
    }

    /// From now on, tells the function its deadline is `by` later than it is, so that it runs
    /// past the real one (to test how an over-running invocation is ended).
    #[allow(dead_code)] // used by the deadline cases
    pub fn overstate_deadline(&self, by: Duration) {
        self.api
            .overstated_ms
            .store(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Invocations ended at their deadline so far.
    #[allow(dead_code)] // used by benches/bench.rs and the deadline case
    pub fn timed_out(&self) -> u32 {
        self.timed_out.load(Ordering::SeqCst)
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
        let pid = self.child.lock().unwrap_or_else(|p| p.into_inner()).id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The bootstrap the cases start under the Lambda Runtime API, and whether `ROTATOR_BINARY`
/// chose it: the debug build by default, or another build of the function (the release binary,
/// the bootstrap inside the shipped zip). An override that is not an executable file is refused,
/// so that a typo never falls back to the debug build.
pub fn binary_under_test() -> R<(PathBuf, bool)> {
    let Some(path) = std::env::var_os("ROTATOR_BINARY") else {
        return Ok((PathBuf::from(env!("CARGO_BIN_EXE_api-key-rotator")), false));
    };
    let path = PathBuf::from(path);
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("ROTATOR_BINARY={}: {e}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(
                format!("ROTATOR_BINARY={}: not an executable file", path.display()).into(),
            );
        }
    }
    Ok((path, true))
}
