//! Real Redis servers for tests: a standalone `redis-server`, a three-master Redis
//! Cluster, and a small TCP proxy that can delay or cut the traffic to either.
//!
//! Servers listen on free loopback ports, keep nothing on disk (`--save ""
//! --appendonly no`, a temporary directory) and die with the test binary: a test binary
//! that exits does not run the destructors of statics, so every server gets a watchdog
//! (`sh` polling the test's pid once a second) that kills it and removes its directory
//! when the test process is gone, however it ended.
//!
//! [`shared`] and [`shared_cluster`] start one server (or cluster) per test binary,
//! lazily; tests isolate themselves with random key prefixes. [`RedisServer::start`]
//! gives a test its own server, which it may kill, restart on the same port, or stall
//! (`SIGSTOP`).
//!
//! ```no_run
//! use heartbeat_conformance::support::{redis, require};
//! let Some(server) = require("redis-server", redis::shared()) else { return };
//! println!("{}", server.url());
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{ChildGuard, free_port, wait_for_port, which};

/// How long a server may take to accept connections.
pub const START_LIMIT: Duration = Duration::from_secs(10);

/// How long a cluster may take to report `cluster_state:ok`.
pub const CLUSTER_LIMIT: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh temporary directory for one server or cluster.
fn temp_dir(what: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "heartbeat-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Starts a watchdog that, once this test process has exited, kills the process whose
/// pid is in `pid_file` (if it is still a redis-server) and removes `dir`.
fn watchdog(pid_file: &Path, dir: &Path) -> Result<(), String> {
    let script = format!(
        "while kill -0 {test} 2>/dev/null; do sleep 1; done; \
         p=$(cat '{pid_file}' 2>/dev/null); \
         if [ -n \"$p\" ] && grep -q redis-server /proc/$p/comm 2>/dev/null; then kill -9 $p; fi; \
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

/// Whether `redis-server` and `redis-cli` are installed.
pub fn available() -> Result<(), String> {
    for tool in ["redis-server", "redis-cli"] {
        if which(tool).is_none() {
            return Err(format!(
                "{tool} not found on PATH (install it: apt-get install redis-server)"
            ));
        }
    }
    Ok(())
}

/// One `redis-server` process on a fixed loopback port, which the test may kill,
/// restart (same port, empty data), stall and resume.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    tls: bool,
    child: Mutex<Option<ChildGuard>>,
}

impl RedisServer {
    /// Starts a standalone server on a free port.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[])
    }

    /// Starts a server on a free port with extra `redis-server` arguments.
    pub fn start_with(extra_args: &[&str]) -> Result<Self, String> {
        Self::launch(extra_args, false)
    }

    /// Starts a server that accepts only TLS connections, with a certificate for
    /// `127.0.0.1` and `localhost` signed by a fresh test CA (made with the `openssl`
    /// command). [`RedisServer::url`] is then `rediss://...`; the CA is
    /// [`RedisServer::tls_ca_pem`].
    pub fn start_tls() -> Result<Self, String> {
        if which("openssl").is_none() {
            return Err("openssl not found on PATH (install it: apt-get install openssl)".into());
        }
        Self::launch(&[], true)
    }

    fn launch(extra_args: &[&str], tls: bool) -> Result<Self, String> {
        available()?;
        let dir = temp_dir("redis")?;
        let server = Self {
            port: free_port()?,
            dir,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            tls,
            child: Mutex::new(None),
        };
        watchdog(&server.pid_file(), &server.dir)?;
        if tls {
            make_test_certificates(&server.dir)?;
        }
        server.spawn()?;
        Ok(server)
    }

    /// The test CA's certificate (PEM) of a TLS server.
    pub fn tls_ca_pem(&self) -> Result<Vec<u8>, String> {
        std::fs::read(self.dir.join("ca.crt")).map_err(|e| format!("no test CA: {e}"))
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("redis-{}.pid", self.port))
    }

    fn spawn(&self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        if self.tls {
            let file = |name: &str| self.dir.join(name);
            cmd.args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(file("server.crt"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join(format!("redis-{}.log", self.port)))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = ChildGuard::spawn(&format!("redis-server :{}", self.port), &mut cmd)?;
        if let Some(pid) = guard.pid() {
            std::fs::write(self.pid_file(), pid.to_string())
                .map_err(|e| format!("cannot write the pid file: {e}"))?;
        }
        *lock(&self.child) = Some(guard);
        wait_for_port(self.port, START_LIMIT).map_err(|e| format!("{e}; {}", self.log_tail()))?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match self.cli(&["PING"]) {
                Ok(out) if out.trim() == "PONG" => return Ok(()),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => {
                    return Err(format!(
                        "redis-server on port {} does not answer PING: {other:?}; {}",
                        self.port,
                        self.log_tail()
                    ));
                }
            }
        }
    }

    /// The last lines of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("redis-{}.log", self.port)))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("redis-server log: {}", tail.join(" | "))
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().and_then(ChildGuard::pid)
    }

    /// Kills the server (`SIGKILL`) and waits until it is gone; its data is lost.
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            child.kill();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// Stalls the server (`SIGSTOP`): connections stay open, nothing is answered.
    pub fn stall(&self) -> Result<(), String> {
        self.signal("STOP")
    }

    /// Resumes a stalled server (`SIGCONT`).
    pub fn resume(&self) -> Result<(), String> {
        self.signal("CONT")
    }

    fn signal(&self, sig: &str) -> Result<(), String> {
        lock(&self.child)
            .as_ref()
            .ok_or_else(|| "the server is not running".to_owned())?
            .signal(sig)
    }

    /// Runs the real `redis-cli` against this server and returns its output (raw
    /// format), e.g. `server.cli(&["GET", "key"])`.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut all: Vec<String> = Vec::new();
        if self.tls {
            all.push("--tls".into());
            all.push("--cacert".into());
            all.push(self.dir.join("ca.crt").display().to_string());
        }
        if let Some(i) = self.extra_args.iter().position(|a| a == "--requirepass") {
            // Passed by environment, not on the command line.
            if let Some(pw) = self.extra_args.get(i + 1) {
                return run_cli_auth(self.port, &all, args, pw);
            }
        }
        let mut refs: Vec<&str> = all.iter().map(String::as_str).collect();
        refs.extend_from_slice(args);
        run_cli(self.port, false, &refs)
    }
}

fn run_cli_auth(
    port: u16,
    opts: &[String],
    args: &[&str],
    password: &str,
) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .env("REDISCLI_AUTH", password)
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(opts)
        .arg("--raw")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!("redis-cli {args:?} failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `ca.crt`, `ca.key`, `server.crt` and `server.key` into `dir`: a throw-away CA
/// and a server certificate for `IP:127.0.0.1` and `DNS:localhost`.
fn make_test_certificates(dir: &Path) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=heartbeat-test-ca",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| format!("cannot write ext.cnf: {e}"))?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_cli(port: u16, cluster: bool, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p"]).arg(port.to_string());
    if cluster {
        cmd.arg("-c");
    }
    let out = cmd
        .arg("--raw")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The standalone server shared by the tests of this test binary, started on first use.
pub fn shared() -> Result<&'static RedisServer, String> {
    static SERVER: OnceLock<Result<RedisServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(RedisServer::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// A local Redis Cluster of three masters (no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers on free ports, joins them with
    /// `redis-cli --cluster create` and waits until every node says `cluster_state:ok`.
    pub fn start() -> Result<Self, String> {
        available()?;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let bus = free_port()?.to_string();
            // The nodes file lives in the server's own temporary directory (--dir), so
            // a relative name is enough.
            let nodes_file = format!("nodes-{bus}.conf");
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &nodes_file,
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "5000",
            ])?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = Self { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + CLUSTER_LIMIT;
        loop {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| n.cli(&["CLUSTER", "INFO"]).unwrap_or_default())
                .collect();
            if states.iter().all(|s| s.contains("cluster_state:ok")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the cluster did not reach cluster_state:ok within {CLUSTER_LIMIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// One `redis://` URL per node (seed list).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Runs `redis-cli -c` (follows redirections) against the first node.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let port = self.nodes.first().ok_or("no nodes")?.port();
        run_cli(port, true, args)
    }
}

/// The cluster shared by the tests of this test binary, started on first use.
pub fn shared_cluster() -> Result<&'static RedisCluster, String> {
    static CLUSTER: OnceLock<Result<RedisCluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(RedisCluster::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// What a [`TcpProxy`] does with the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward at once.
    Pass,
    /// Forward every chunk after this extra delay, in each direction.
    Delay(Duration),
    /// Close every open connection and refuse new ones (they are accepted and closed
    /// at once), as a broken network would.
    Cut,
}

/// A TCP proxy on a loopback port in front of `127.0.0.1:<target>`, with a switch for
/// added latency and for cutting connections. Runs on the current tokio runtime; stops
/// when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    mode: Arc<watch::Sender<ProxyMode>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `127.0.0.1:target_port` on a free loopback port.
    pub async fn start(target_port: u16) -> Result<Self, String> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("proxy cannot bind: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("proxy has no address: {e}"))?
            .port();
        let (tx, _) = watch::channel(ProxyMode::Pass);
        let mode = Arc::new(tx);
        let task = tokio::spawn(accept_loop(listener, target_port, mode.clone()));
        Ok(Self { port, mode, task })
    }

    /// The proxy's port (connect here instead of the target).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Switches the mode; `Cut` closes the open connections at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Closes the open connections too: their pumps watch the mode channel.
        self.mode.send_replace(ProxyMode::Cut);
    }
}

async fn accept_loop(listener: TcpListener, target: u16, mode: Arc<watch::Sender<ProxyMode>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *mode.borrow() == ProxyMode::Cut {
            drop(client);
            continue;
        }
        let rx = mode.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pump(cr, sw, rx.clone()));
            let down = tokio::spawn(pump(sr, cw, rx));
            // When either direction ends, end both (dropping the halves closes them).
            let (a, b) = (up.abort_handle(), down.abort_handle());
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
            a.abort();
            b.abort();
        });
    }
}

/// Copies `from` to `to`, each chunk held back by the current delay (a delay line: the
/// delay adds latency without limiting throughput). Ends on EOF, error, or `Cut`; on
/// `Cut` the queued chunks are dropped.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let mut writer_mode = mode.clone();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if *writer_mode.borrow_and_update() == ProxyMode::Cut {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if *mode.borrow_and_update() == ProxyMode::Cut {
                return;
            }
            tokio::select! {
                read = from.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let delay = match *mode.borrow() {
                        ProxyMode::Delay(d) => d,
                        _ => Duration::ZERO,
                    };
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                changed = mode.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // The writer drains what the reader queued, and ends when the reader has ended
    // (the channel closes) or on `Cut`.
    tokio::join!(writer, reader);
}
