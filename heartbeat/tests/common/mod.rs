//! Helpers of the `heartbeat` binary's tests: running it, following its output, polling
//! its HTTP endpoints until a deadline.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Short timings for tests: beats every 200 ms, discovery every 250 ms, dead after 1 s,
/// store calls allowed 500 ms (a loaded test machine is slow).
pub const FAST: [&str; 8] = [
    "--heartbeat-interval",
    "200ms",
    "--discovery-interval",
    "250ms",
    "--stale-threshold",
    "1s",
    "--store-timeout",
    "500ms",
];

/// The binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_heartbeat"));
    // Tests must not inherit the seed's variables from the environment.
    for var in [
        "HOSTNAME",
        "INSTANCE_HEARTBEAT_INTERVAL_SECONDS",
        "INSTANCE_DISCOVERY_INTERVAL_SECONDS",
        "INSTANCE_STALE_THRESHOLD_SECONDS",
        "WSM_GRPC_HOST",
        "WSM_GRPC_PORT",
        "HEARTBEAT_STORE",
        "HEARTBEAT_KEY_PREFIX",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c
}

/// A key prefix no other test uses.
pub fn prefix() -> String {
    format!("test-{:08x}-{}/instances/", rand_u32(), std::process::id())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `heartbeat` process whose stdout and stderr lines are collected; killed
/// (SIGKILL) when dropped.
pub struct Running {
    child: Option<Child>,
    /// What it is, for messages.
    pub name: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => into.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
}

impl Running {
    /// Starts `heartbeat <args>`.
    pub fn start(name: &str, args: &[&str]) -> Self {
        Self::start_env(name, args, &[])
    }

    /// Starts `heartbeat <args>` with extra environment variables.
    pub fn start_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = bin()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start heartbeat");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Self {
            child: Some(child),
            name: name.to_owned(),
            stdout,
            stderr,
        }
    }

    /// Starts an agent on `store` with the fast timings, listening on `port`.
    pub fn agent(id: &str, store: &str, prefix: &str, port: u16, extra: &[&str]) -> Self {
        Self::agent_env(id, store, prefix, port, extra, &[])
    }

    /// [`Running::agent`] with extra environment variables.
    pub fn agent_env(
        id: &str,
        store: &str,
        prefix: &str,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "agent", "--store", store, "--prefix", prefix, "--id", id, "--listen", &listen,
        ];
        args.extend(FAST);
        args.extend(extra);
        Self::start_env(id, &args, env)
    }

    /// The stdout lines so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything printed so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.stdout().join("\n"),
            self.name,
            self.stderr().join("\n")
        )
    }

    /// Waits until a stdout line satisfies `pred`; panics with the output after `limit`.
    pub fn wait_stdout(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stdout().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {limit:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a stderr line satisfies `pred`; panics with the output after `limit`.
    pub fn wait_stderr(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stderr().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {limit:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {pid}");
    }

    /// Waits for the process to exit; panics with the output after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "{} did not exit within {limit:?}\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
        self.kill9();
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1: (status, body), or an error text.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `GET path` until `pred(status, body)` holds; panics after `limit` with the
/// last answer.
pub fn wait_http(
    port: u16,
    path: &str,
    limit: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + limit;
    let mut last = Err("no request made".to_owned());
    while Instant::now() < deadline {
        last = http_get(port, path);
        if let Ok((status, body)) = &last
            && pred(*status, body)
        {
            return (*status, body.clone());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("GET {path} on port {port}: condition not met within {limit:?}; last answer {last:?}");
}

/// Polls `f` until it returns `Some`; panics with `what` after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
