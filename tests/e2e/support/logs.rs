//! The function's log output during the run: the in-process handler's tracing goes to a file,
//! through the production subscriber (`telemetry::subscriber`: JSON, its dependency ceiling and
//! scrubber) at TRACE, and each real binary's output and each operator command's to their own;
//! the log scan reads all.

use std::path::PathBuf;
use std::sync::Mutex;

use api_key_rotator::telemetry::{self, Format, LogSettings};
use tracing_subscriber::util::SubscriberInitExt;

use super::R;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn register(path: PathBuf) {
    let mut paths = PATHS.lock().unwrap_or_else(|p| p.into_inner());
    if !paths.contains(&path) {
        paths.push(path);
    }
}

pub fn all() -> Vec<PathBuf> {
    PATHS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Sends the in-process function's tracing to `target/e2e-function-<pid>.log`, at TRACE.
pub fn capture_function_logs() -> R<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("e2e-function-{}.log", std::process::id()));
    let file = std::fs::File::create(&path)?;
    let settings = LogSettings {
        directives: "trace".to_owned(),
        fallback: "info",
        format: Format::Json,
    };
    telemetry::subscriber(&settings, Mutex::new(file))
        .try_init()
        .map_err(|e| e.to_string())?;
    register(path);
    Ok(())
}
