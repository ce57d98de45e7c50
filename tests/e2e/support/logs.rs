//! The function's log output during the run: the in-process handler's tracing (JSON, as in
//! production) goes to a file, and each real binary's output to its own; the log scan reads all.

use std::path::PathBuf;
use std::sync::Mutex;

use super::R;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn register(path: PathBuf) {
    PATHS.lock().unwrap_or_else(|p| p.into_inner()).push(path);
}

pub fn all() -> Vec<PathBuf> {
    PATHS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Sends the in-process function's tracing to `target/e2e-function-<pid>.log`.
pub fn capture_function_logs() -> R<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("e2e-function-{}.log", std::process::id()));
    let file = std::fs::File::create(&path)?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .without_time()
        .with_ansi(false)
        .with_env_filter("info")
        .with_writer(Mutex::new(file))
        .try_init()
        .map_err(|e| e.to_string())?;
    register(path);
    Ok(())
}
