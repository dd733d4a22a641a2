//! `moto_server`, the AWS emulator the DynamoDB backend is tested against.
//!
//! Install it with `tests/moto/setup.sh` (a pinned `moto[server]` in `<workspace>/.venv`).
//! The binary is found at `$HEARTBEAT_MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`,
//! else on `PATH`.
//!
//! [`shared`] starts one server per test binary on a free loopback port; tests keep apart
//! by table or key prefix. A test binary does not run destructors of statics, so the
//! server runs under a small shell watchdog that stops it within a second of the test
//! process exiting; [`MotoServer`]s started by [`start`] stop when dropped.
//!
//! Known emulator difference: moto runs `TransactWriteItems` on a deep copy of each table
//! it touches and, when the transaction is cancelled, puts the copy back, losing writes
//! that concurrent requests made to that table meanwhile. Tests that cancel transactions
//! (a prune of a live member does) while other tests write should use their own table.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, which};

/// Environment variable naming the `moto_server` binary.
pub const BINARY_ENV: &str = "HEARTBEAT_MOTO_SERVER";
/// How long to wait for a server to accept connections.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(60);
/// Region the tests use (moto accepts any).
pub const REGION: &str = "us-east-1";
/// Dummy access key id for tests (moto accepts any).
pub const ACCESS_KEY_ID: &str = "test";
/// Dummy secret for tests.
pub const SECRET_ACCESS_KEY: &str = "test";

// Runs the server in the background and stops it when the test process (`$1`) is gone,
// or when this shell is told to stop. `sleep & wait` keeps signals handled at once.
const WATCHDOG: &str = r#"parent=$1; shift
"$@" &
child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT HUP
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do
  sleep 1 & wait $!
done
kill $child 2>/dev/null
wait $child 2>/dev/null
"#;

/// A running `moto_server`; stopped (with its watchdog) when dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    endpoint: String,
}

impl MotoServer {
    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server and its watchdog.
    pub fn stop(&mut self) {
        // The watchdog leads its own process group: signal the whole group.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(format!("-{}", self.child.id()))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The workspace root (the parent of this crate's folder).
fn workspace() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().map(PathBuf::from).unwrap_or(crate_dir)
}

/// Finds the `moto_server` binary: `$HEARTBEAT_MOTO_SERVER`, `<workspace>/.venv/bin/moto_server`,
/// then `PATH`.
pub fn find_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{BINARY_ENV}={} is not a file", path.display()))
        };
    }
    let venv = workspace().join(".venv/bin/moto_server");
    if venv.is_file() {
        return Ok(venv);
    }
    which("moto_server").ok_or_else(|| {
        format!(
            "moto_server not found ({BINARY_ENV} unset, no {}, not on PATH); run tests/moto/setup.sh",
            venv.display()
        )
    })
}

/// Starts a new `moto_server` on a free loopback port and waits until it answers.
pub fn start() -> Result<MotoServer, String> {
    use std::os::unix::process::CommandExt;

    let binary = find_binary()?;
    let mut last_error = String::new();
    // A port can be taken between choosing and binding it: try a few.
    for _ in 0..3 {
        let port = free_port()?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("moto-watchdog")
            .arg(std::process::id().to_string())
            .arg(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
        let mut server = MotoServer {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        match wait_ready(&mut server) {
            Ok(()) => return Ok(server),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn wait_ready(server: &mut MotoServer) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_LIMIT;
    while Instant::now() < deadline {
        if answers_http(server.port) {
            return Ok(());
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "moto_server exited before listening on port {} ({status})",
                server.port
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "moto_server did not listen on 127.0.0.1:{} within {STARTUP_LIMIT:?}",
        server.port
    ))
}

/// Whether something on the port answers an HTTP request: a bound port alone is not
/// enough (the server may not serve yet, or another process may hold the port).
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// The server shared by all tests of this test binary, started on first use.
pub fn shared() -> Result<&'static MotoServer, String> {
    static SERVER: OnceLock<Result<MotoServer, String>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// The shared server's endpoint, or `None` (after [`super::require`]: a failure in CI, a
/// loud skip elsewhere) when `moto_server` is not installed.
pub fn endpoint() -> Option<String> {
    super::require("moto_server", shared().map(|s| s.endpoint().to_owned()))
}
