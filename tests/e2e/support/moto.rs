//! Starts moto, the Python AWS mock, as a server on a free loopback port from the pinned venv
//! `make moto` installs (.local/moto-venv), and stops it by pid when dropped. Its environment is
//! emptied but for PATH, a private HOME and TMPDIR, and dummy credentials: it has nothing to
//! reach beyond loopback.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::R;

pub struct Moto {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> R<Moto> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".local/moto-venv/bin/python");
        if !python.exists() {
            return Err(format!(
                "moto is not installed at {}: run `make moto` (make e2e does)",
                python.display()
            )
            .into());
        }
        let dir = root
            .join("target")
            .join(format!("e2e-moto-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("home"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        // A free port: bound, read, released; moto binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.join("moto.log"))?;
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.join("home"))
            .env("TMPDIR", dir.join("tmp"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut moto = Moto {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = moto.child.try_wait()? {
                return Err(format!(
                    "moto exited during start ({status}); log: {}",
                    moto.log_path().display()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto did not listen on {addr} in time; log: {}",
                    moto.log_path().display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("moto.log")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
