//! Support for tests against real servers: free loopback ports, child processes that
//! die with the test, and the rule for a missing server (fail in CI, skip loudly
//! elsewhere).
//!
//! Backend-specific launchers (Redis, Redis Cluster, daprd, moto) live in submodules.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub mod daprd;
pub mod moto;
pub mod redis;

/// Whether we run in CI (`CI=true`), where a missing server is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Unwraps a server handle, or explains why there is none: panics in CI, prints a
/// loud skip message and returns `None` elsewhere.
pub fn require<T>(what: &str, server: Result<T, String>) -> Option<T> {
    match server {
        Ok(s) => Some(s),
        Err(why) if in_ci() => panic!("{what} is required in CI but unavailable: {why}"),
        Err(why) => {
            eprintln!(
                "SKIPPED: {what} unavailable ({why}); run the README's test command to install it"
            );
            None
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: good enough for tests).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "nothing listened on 127.0.0.1:{port} within {limit:?}"
    ))
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    /// What it is, for messages.
    pub name: String,
}

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not start {name}: {e}"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal (`kill -<sig> <pid>`), e.g. `STOP`, `CONT`, `KILL`, `TERM`.
    pub fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("process already reaped")?;
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} {pid} failed: {status}"))
        }
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
