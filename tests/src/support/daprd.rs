//! A real Dapr sidecar (`daprd`) for tests, with two state store components: the
//! in-memory one ([`MEMORY_STORE`]) and the Redis one ([`REDIS_STORE`], on its own
//! `redis-server`).
//!
//! The binary is built from the Dapr Go modules by `tests/daprd/build.sh` (see
//! `tests/daprd/README.md`; its measured HTTP behaviour is in `tests/daprd/WIRE.md`).
//! [`binary`] takes it from `HEARTBEAT_DAPRD`, else runs the build script (about two
//! and a half minutes cold, cached afterwards).
//!
//! daprd listens on free loopback ports (HTTP, gRPC, internal gRPC, metrics) and reads
//! its components from a temporary resources folder. Like the Redis servers, every
//! daprd gets a watchdog that kills it and removes its folder once the test process is
//! gone (statics are never dropped), and a [`Daprd`] owned by a test dies when dropped.
//!
//! ```no_run
//! use heartbeat_conformance::support::{daprd, require};
//! let Some(sidecar) = require("daprd", daprd::shared()) else { return };
//! println!("{} / {}", sidecar.endpoint(), daprd::REDIS_STORE);
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::redis::RedisServer;
use super::{ChildGuard, free_port};

/// The in-memory state store component's name.
pub const MEMORY_STORE: &str = "memstore";
/// The Redis state store component's name.
pub const REDIS_STORE: &str = "redisstore";
/// daprd's app id (keys are stored as `<app id>||<key>`).
pub const APP_ID: &str = "heartbeat-test";
/// How long daprd may take to answer `/v1.0/healthz`.
pub const START_LIMIT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The daprd binary: `HEARTBEAT_DAPRD` if set, else the output of
/// `tests/daprd/build.sh` (which builds it once and caches it).
pub fn binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("HEARTBEAT_DAPRD").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "HEARTBEAT_DAPRD={} is not a file; unset it or run tests/daprd/build.sh",
                path.display()
            ))
        };
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("daprd/build.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}); it needs `go` and the Go module proxy",
                    script.display(),
                    out.status
                ));
            }
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{} printed {:?}, which is not a file",
                    script.display(),
                    path.display()
                ))
            }
        })
        .clone()
}

fn temp_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "heartbeat-daprd-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(dir.join("resources"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Kills the daprd whose pid is in `pid_file` and removes `dir` once this test process
/// has exited, however it ended.
fn watchdog(pid_file: &Path, dir: &Path) -> Result<(), String> {
    let script = format!(
        "while kill -0 {test} 2>/dev/null; do sleep 1; done; \
         p=$(cat '{pid_file}' 2>/dev/null); \
         if [ -n \"$p\" ] && grep -q daprd /proc/$p/comm 2>/dev/null; then kill -9 $p; fi; \
         rm -rf '{dir}'",
        test = std::process::id(),
        pid_file = pid_file.display(),
        dir = dir.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the cleanup watchdog: {e}"))
}

/// One daprd with its Redis server, on fixed loopback ports: a test may kill it and
/// start it again (same ports; the in-memory store is then empty), or kill and restart
/// its Redis.
#[derive(Debug)]
pub struct Daprd {
    binary: PathBuf,
    dir: PathBuf,
    http_port: u16,
    grpc_port: u16,
    internal_port: u16,
    metrics_port: u16,
    api_token: Option<String>,
    redis: RedisServer,
    child: Mutex<Option<ChildGuard>>,
}

impl Daprd {
    /// Starts a daprd (and its redis-server) without an API token.
    pub fn start() -> Result<Self, String> {
        Self::launch(None)
    }

    /// Starts a daprd that requires `token` in the `dapr-api-token` header.
    pub fn start_with_token(token: &str) -> Result<Self, String> {
        Self::launch(Some(token.to_owned()))
    }

    fn launch(api_token: Option<String>) -> Result<Self, String> {
        let binary = binary()?;
        let redis = RedisServer::start()?;
        let dir = temp_dir()?;
        let daprd = Self {
            binary,
            http_port: free_port()?,
            grpc_port: free_port()?,
            internal_port: free_port()?,
            metrics_port: free_port()?,
            api_token,
            redis,
            child: Mutex::new(None),
            dir,
        };
        watchdog(&daprd.pid_file(), &daprd.dir)?;
        daprd.write_resources()?;
        daprd.spawn()?;
        Ok(daprd)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("daprd.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("daprd.log")
    }

    fn write_resources(&self) -> Result<(), String> {
        let yaml = format!(
            "apiVersion: dapr.io/v1alpha1\n\
             kind: Component\n\
             metadata: {{name: {MEMORY_STORE}}}\n\
             spec: {{type: state.in-memory, version: v1, metadata: []}}\n\
             ---\n\
             apiVersion: dapr.io/v1alpha1\n\
             kind: Component\n\
             metadata: {{name: {REDIS_STORE}}}\n\
             spec:\n  type: state.redis\n  version: v1\n  metadata:\n  \
             - {{name: redisHost, value: \"127.0.0.1:{port}\"}}\n  \
             - {{name: redisPassword, value: \"\"}}\n",
            port = self.redis.port()
        );
        let file = self.dir.join("resources/stores.yaml");
        std::fs::write(&file, yaml).map_err(|e| format!("cannot write {}: {e}", file.display()))
    }

    fn spawn(&self) -> Result<(), String> {
        let log = std::fs::File::create(self.log_file())
            .map_err(|e| format!("cannot create the daprd log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot share the daprd log: {e}"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.env("DAPR_HOST_IP", "127.0.0.1")
            .env_remove("DAPR_API_TOKEN")
            .env_remove("APP_API_TOKEN")
            .args([
                "--app-id",
                APP_ID,
                "--mode",
                "standalone",
                "--resources-path",
            ])
            .arg(self.dir.join("resources"))
            .arg("--dapr-http-port")
            .arg(self.http_port.to_string())
            .arg("--dapr-grpc-port")
            .arg(self.grpc_port.to_string())
            .arg("--dapr-internal-grpc-port")
            .arg(self.internal_port.to_string())
            .args(["--dapr-listen-addresses", "127.0.0.1"])
            .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
            .arg("--metrics-port")
            .arg(self.metrics_port.to_string())
            .args(["--metrics-listen-address", "127.0.0.1"])
            .args(["--enable-mtls=false", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        if let Some(token) = &self.api_token {
            cmd.env("DAPR_API_TOKEN", token);
        }
        let guard = ChildGuard::spawn(&format!("daprd :{}", self.http_port), &mut cmd)?;
        if let Some(pid) = guard.pid() {
            std::fs::write(self.pid_file(), pid.to_string())
                .map_err(|e| format!("cannot write the pid file: {e}"))?;
        }
        *lock(&self.child) = Some(guard);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if healthz(self.http_port) {
                return Ok(());
            }
            if !self.running() {
                return Err(format!("daprd exited at start; {}", self.log_tail()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "daprd did not become healthy within {START_LIMIT:?}; {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&self) -> bool {
        let Some(pid) = lock(&self.child).as_ref().and_then(ChildGuard::pid) else {
            return false;
        };
        // A zombie (exited, not reaped) is not running.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    /// The last lines of daprd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("daprd log: {}", tail.join(" | "))
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The API token daprd requires, if any.
    pub fn api_token(&self) -> Option<&str> {
        self.api_token.as_deref()
    }

    /// The Redis server behind [`REDIS_STORE`].
    pub fn redis(&self) -> &RedisServer {
        &self.redis
    }

    /// daprd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().and_then(ChildGuard::pid)
    }

    /// Kills daprd (`SIGKILL`) and waits until it is gone.
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            child.kill();
        }
    }

    /// Starts daprd again on the same ports and waits until it is healthy. Its Redis
    /// must be running (daprd exits when a component fails to initialise).
    pub fn restart(&self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `GET /v1.0/healthz` on 127.0.0.1:`port` answers 2xx.
pub fn healthz(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /v1.0/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2")
}

/// The daprd shared by the tests of this test binary, started on first use.
pub fn shared() -> Result<&'static Daprd, String> {
    static DAPRD: OnceLock<Result<Daprd, String>> = OnceLock::new();
    DAPRD
        .get_or_init(Daprd::start)
        .as_ref()
        .map_err(Clone::clone)
}
