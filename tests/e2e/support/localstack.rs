//! Starts the local AWS through `scripts/localstack.sh`, the project's one way to run it, and
//! stops it by pid when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::R;

/// The strace record of the running local AWS's connect/sendto calls.
pub static TRACE: OnceLock<PathBuf> = OnceLock::new();

pub struct LocalAws {
    dir: PathBuf,
    pub endpoint: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/localstack.sh")
}

impl LocalAws {
    pub fn start(name: &str) -> R<LocalAws> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("{name}-localstack-{}", std::process::id()));
        let trace = dir.with_extension("trace");
        let _ = std::fs::remove_file(&trace);
        let out = Command::new(script())
            .arg("start")
            .arg(&dir)
            .env("LOCALSTACK_TRACE", &trace)
            .output()?;
        let _ = TRACE.set(trace);
        if !out.status.success() {
            return Err(format!(
                "the local AWS did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let endpoint = String::from_utf8(out.stdout)?
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !endpoint.starts_with("http://127.0.0.1:") {
            return Err(format!("unexpected endpoint {endpoint:?}").into());
        }
        Ok(LocalAws { dir, endpoint })
    }

    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("localstack.log")
    }
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}
