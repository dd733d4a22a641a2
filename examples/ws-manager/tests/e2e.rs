#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End to end: real `ws-manager` processes on a real `redis-server`, subscribed to a
//! real `upstream` process, 3 managers and 60 subscriptions. A manager is killed,
//! stopped, restarted; Redis is stopped and started; after each, every subscription is
//! open exactly once, held by its record's owner, and nothing of a live manager moved.
//!
//! Short intervals keep the suite fast: 200 ms beats and discovery, 1 s stale
//! threshold. Every wait polls with a deadline; nothing asserts on elapsed time (the
//! takeover gap is measured by `cargo test -p ws-manager --test e2e -- --ignored`,
//! see BENCHMARKS.md). Without `redis-server` the tests fail in CI and skip elsewhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use heartbeat_conformance::support::redis::{ProxyMode, RedisServer, TcpProxy, available};
use heartbeat_conformance::support::{ChildGuard, free_port, require, wait_for_port};
use serde_json::Value;
use tokio::time::Instant;
use ws_manager::client::request;
use ws_manager::upstream::SubscriptionReport;

const BEAT: &str = "200ms";
const DISCOVERY: &str = "200ms";
const THRESHOLD: Duration = Duration::from_secs(1);
const SUBSCRIPTIONS: usize = 60;
const LIMIT: Duration = Duration::from_secs(30);

/// One test at a time: each runs five processes with sub-second timing.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ws-manager-e2e-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn log_file(name: &str) -> Stdio {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir().join(format!("{name}.log")))
    {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    }
}

struct UpstreamProc {
    _child: ChildGuard,
    ws: SocketAddr,
    http: SocketAddr,
}

impl UpstreamProc {
    fn start() -> Self {
        let ws: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let child = ChildGuard::spawn(
            "upstream",
            Command::new(env!("CARGO_BIN_EXE_upstream"))
                .args([
                    "--ws",
                    &ws.to_string(),
                    "--http",
                    &http.to_string(),
                    "--interval",
                    "100ms",
                ])
                .stdout(Stdio::null())
                .stderr(log_file("upstream")),
        )
        .unwrap();
        wait_for_port(ws.port(), Duration::from_secs(10)).unwrap();
        wait_for_port(http.port(), Duration::from_secs(10)).unwrap();
        Self {
            _child: child,
            ws,
            http,
        }
    }

    fn base(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    async fn reports(&self) -> BTreeMap<String, SubscriptionReport> {
        let (status, body) = request(self.http, "GET", "/subscriptions", None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let all: Vec<SubscriptionReport> = serde_json::from_str(&body).unwrap();
        all.into_iter().map(|r| (r.key.clone(), r)).collect()
    }
}

struct ManagerProc {
    child: ChildGuard,
    id: String,
    addr: SocketAddr,
}

impl ManagerProc {
    fn start(id: &str, store: &str, upstream: &str) -> Self {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let child = ChildGuard::spawn(
            id,
            Command::new(env!("CARGO_BIN_EXE_ws-manager"))
                .env("HOSTNAME", id)
                .env("RUST_LOG", "info")
                .args([
                    "--store",
                    store,
                    "--listen",
                    &addr.to_string(),
                    "--upstream",
                    upstream,
                    "--heartbeat-interval",
                    BEAT,
                    "--discovery-interval",
                    DISCOVERY,
                    "--stale-threshold",
                    &format!("{}ms", THRESHOLD.as_millis()),
                ])
                .stdout(Stdio::null())
                .stderr(log_file(id)),
        )
        .unwrap();
        wait_for_port(addr.port(), Duration::from_secs(10)).unwrap();
        Self {
            child,
            id: id.to_owned(),
            addr,
        }
    }

    async fn incarnation(&self) -> String {
        let (_, body) = request(self.addr, "GET", "/healthz", None).await.unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["incarnation"].as_str().unwrap().to_owned()
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let pid = self.child.pid().unwrap();
        let deadline = std::time::Instant::now() + limit;
        // `kill -0` fails once the process is gone (it is our child: reap it via kill()).
        while std::time::Instant::now() < deadline {
            let alive = Command::new("kill")
                .args(["-0", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true);
            if !alive || zombie {
                self.child.kill();
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// A subscription's owner, as the records say: (instance id, incarnation).
type Owners = BTreeMap<String, (String, String)>;

/// The owners, or `None` while the manager cannot read the store (it just restarted,
/// or the store is coming back).
async fn owners(via: &ManagerProc) -> Option<Owners> {
    let (status, body) = request(via.addr, "GET", "/subscriptions", None)
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    Some(
        all.iter()
            .map(|r| {
                (
                    r["topic"].as_str().unwrap().to_owned(),
                    (
                        r["instanceId"].as_str().unwrap().to_owned(),
                        r["ownerIncarnation"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                )
            })
            .collect(),
    )
}

/// Whether `via` sees exactly `ids` alive, on a healthy view.
async fn sees(via: &ManagerProc, ids: &[&str]) -> bool {
    let Ok((200, body)) = request(via.addr, "GET", "/healthz", None).await else {
        return false;
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    let peers: Vec<&str> = v["peers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_str()).collect())
        .unwrap_or_default();
    v["view"] == "healthy" && peers == ids
}

/// Every subscription open exactly once at the upstream, by its record's owner.
fn consistent(owners: &Owners, reports: &BTreeMap<String, SubscriptionReport>) -> bool {
    owners.len() == SUBSCRIPTIONS
        && owners.iter().all(|(topic, (owner, _))| {
            reports.get(topic).is_some_and(|r| {
                r.open == 1 && r.sockets[0].instance.as_deref() == Some(owner.as_str())
            })
        })
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} (logs in {})",
            log_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Cluster {
    redis: RedisServer,
    upstream: UpstreamProc,
    managers: Vec<ManagerProc>,
}

impl Cluster {
    /// Redis, the upstream, 3 managers with 20 subscriptions each, all open.
    async fn start(redis: RedisServer) -> Self {
        let url = redis.url();
        Self::start_with(redis, [url.clone(), url.clone(), url]).await
    }

    /// Like [`Cluster::start`], each manager reaching the store at its own URL.
    async fn start_with(redis: RedisServer, urls: [String; 3]) -> Self {
        let upstream = UpstreamProc::start();
        let managers: Vec<ManagerProc> = ["wsm-a", "wsm-b", "wsm-c"]
            .iter()
            .zip(&urls)
            .map(|(id, url)| ManagerProc::start(id, url, &upstream.base()))
            .collect();
        for n in 0..SUBSCRIPTIONS {
            let m = &managers[n % managers.len()];
            let body = format!(r#"{{"topic":"sub-{n:02}","tags":{{"test":"e2e"}}}}"#);
            let (status, text) = request(m.addr, "POST", "/subscriptions", Some(&body))
                .await
                .unwrap();
            assert_eq!(status, 201, "{text}");
        }
        let cluster = Self {
            redis,
            upstream,
            managers,
        };
        cluster.settled("all subscriptions open").await;
        let ids = ["wsm-a", "wsm-b", "wsm-c"];
        wait_for("every manager to see the three", async || {
            for m in &cluster.managers {
                if !sees(m, &ids).await {
                    return None;
                }
            }
            Some(())
        })
        .await;
        cluster
    }

    fn url(&self) -> String {
        self.redis.url()
    }

    /// Waits until the records and the upstream agree; returns the owners.
    async fn settled(&self, what: &str) -> Owners {
        wait_for(what, async || {
            let o = owners(&self.managers[0]).await?;
            consistent(&o, &self.upstream.reports().await).then_some(o)
        })
        .await
    }

    /// Waits until nothing is owned by `gone` any more and all is consistent.
    async fn moved_off(&self, gone: &str) -> Owners {
        wait_for(
            &format!("the subscriptions of {gone} to move"),
            async || {
                let o = owners(&self.managers[0]).await?;
                (o.values().all(|(owner, _)| owner != gone)
                    && consistent(&o, &self.upstream.reports().await))
                .then_some(o)
            },
        )
        .await
    }

    /// No subscription ever had two sockets at once.
    async fn never_doubled(&self) {
        for r in self.upstream.reports().await.values() {
            assert!(
                r.max_open <= 1,
                "{} had {} sockets at once: {r:?}",
                r.key,
                r.max_open
            );
        }
    }
}

fn redis(extra: &[&str]) -> Option<RedisServer> {
    require(
        "redis-server",
        available().and_then(|()| RedisServer::start_with(extra)),
    )
}

/// Checks after a manager went away: its subscriptions are on survivors, one socket
/// each (reconnected once), and the survivors' own subscriptions did not move or
/// reconnect.
async fn check_takeover(
    cluster: &Cluster,
    gone: &str,
    before: &Owners,
    connects_before: &BTreeMap<String, u64>,
) {
    let after = cluster.moved_off(gone).await;
    let reports = cluster.upstream.reports().await;
    let mut moved = 0;
    for (topic, (owner, inc)) in before {
        let r = &reports[topic];
        if owner == gone {
            moved += 1;
            assert_eq!(
                r.connects,
                connects_before[topic] + 1,
                "{topic}: one new socket, not more: {r:?}"
            );
            assert_eq!(r.gaps_ms.len(), 1, "{topic}: {r:?}");
        } else {
            assert_eq!(
                &after[topic],
                &(owner.clone(), inc.clone()),
                "{topic} moved away from a live manager"
            );
            assert_eq!(
                r.connects, connects_before[topic],
                "{topic} of a live manager reconnected"
            );
        }
    }
    assert_eq!(moved, SUBSCRIPTIONS / 3);
    cluster.never_doubled().await;
    let gaps: Vec<f64> = reports
        .values()
        .flat_map(|r| r.gaps_ms.iter().copied())
        .collect();
    let max = gaps.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "{gone}: {} subscriptions moved, longest gap {max:.0} ms",
        gaps.len()
    );
}

fn connects(reports: &BTreeMap<String, SubscriptionReport>) -> BTreeMap<String, u64> {
    reports
        .iter()
        .map(|(k, r)| (k.clone(), r.connects))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_manager_subscriptions_move_to_survivors_once() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = redis(&[]) else { return };
    let mut cluster = Cluster::start(redis).await;
    let before = cluster.settled("all open").await;
    let connects_before = connects(&cluster.upstream.reports().await);
    cluster.managers[1].child.kill(); // SIGKILL
    check_takeover(&cluster, "wsm-b", &before, &connects_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_manager_leaves_cleanly_and_survivors_take_over() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = redis(&[]) else { return };
    let mut cluster = Cluster::start(redis).await;
    let before = cluster.settled("all open").await;
    let connects_before = connects(&cluster.upstream.reports().await);
    cluster.managers[2].child.signal("TERM").unwrap();
    assert!(
        cluster.managers[2].wait_exit(Duration::from_secs(10)),
        "wsm-c did not exit after SIGTERM"
    );
    check_takeover(&cluster, "wsm-c", &before, &connects_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_manager_previous_life_is_reclaimed_once() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = redis(&[]) else { return };
    let mut cluster = Cluster::start(redis).await;
    let before = cluster.settled("all open").await;
    let old = cluster.managers[1].incarnation().await;
    cluster.managers[1].child.kill();
    // Back at once, under the same HOSTNAME, before anyone judged the old life dead.
    let url = cluster.url();
    cluster.managers[1] = ManagerProc::start("wsm-b", &url, &cluster.upstream.base());
    let new = cluster.managers[1].incarnation().await;
    assert_ne!(old, new);
    let mut lives: BTreeMap<String, String> = BTreeMap::new();
    for m in &cluster.managers {
        lives.insert(m.id.clone(), m.incarnation().await);
    }
    let after = wait_for(
        "the previous life's subscriptions to be reclaimed",
        async || {
            let o = owners(&cluster.managers[0]).await?;
            let current = o.values().all(|(owner, inc)| lives.get(owner) == Some(inc));
            (current && consistent(&o, &cluster.upstream.reports().await)).then_some(o)
        },
    )
    .await;
    let reports = cluster.upstream.reports().await;
    for (topic, (owner, inc)) in &before {
        if owner == "wsm-b" {
            assert_eq!(reports[topic].connects, 2, "{topic}: {:?}", reports[topic]);
        } else {
            assert_eq!(
                &after[topic],
                &(owner.clone(), inc.clone()),
                "{topic} moved away from a live manager"
            );
            assert_eq!(
                reports[topic].connects, 1,
                "{topic} of a live manager reconnected"
            );
        }
    }
    cluster.never_doubled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_manager_releases_before_survivors_take_over() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = redis(&[]) else { return };
    // wsm-b reaches Redis through a proxy that the test can cut.
    let proxy = TcpProxy::start(redis.port()).await.unwrap();
    let url = redis.url();
    let cluster = Cluster::start_with(redis, [url.clone(), proxy.url(), url]).await;
    let before = cluster.settled("all open").await;
    let connects_before = connects(&cluster.upstream.reports().await);
    proxy.set_mode(ProxyMode::Cut);
    // wsm-b cannot publish: at half the threshold it closes its sockets (self at risk),
    // at the threshold its peers judge it dead and take its subscriptions over.
    check_takeover(&cluster, "wsm-b", &before, &connects_before).await;
    // The network heals: wsm-b is alive again, holds nothing, and takes new work.
    proxy.set_mode(ProxyMode::Pass);
    wait_for("wsm-b to be seen alive again", async || {
        sees(&cluster.managers[0], &["wsm-a", "wsm-b", "wsm-c"])
            .await
            .then_some(())
    })
    .await;
    let (status, body) = request(cluster.managers[1].addr, "GET", "/local", None)
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "[]"),
        "wsm-b still holds sockets"
    );
    let after = cluster.settled("all open after the partition").await;
    assert!(after.values().all(|(owner, _)| owner != "wsm-b"));
    cluster.never_doubled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_manager_releases_before_survivors_take_over() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = redis(&[]) else { return };
    // wsm-b's link to Redis turns into a black hole: its calls hang until they time out.
    let proxy = TcpProxy::start(redis.port()).await.unwrap();
    let url = redis.url();
    let cluster = Cluster::start_with(redis, [url.clone(), proxy.url(), url]).await;
    let before = cluster.settled("all open").await;
    let connects_before = connects(&cluster.upstream.reports().await);
    proxy.set_mode(ProxyMode::Delay(Duration::from_secs(60)));
    check_takeover(&cluster, "wsm-b", &before, &connects_before).await;
    let (status, body) = request(cluster.managers[1].addr, "GET", "/local", None)
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "[]"),
        "wsm-b still holds sockets"
    );
}

/// How Redis goes away and comes back.
#[derive(Clone, Copy)]
enum Outage {
    /// Killed after a snapshot, started again from it.
    Stop,
    /// Frozen (`SIGSTOP`): connections stay open, nothing is answered.
    Stall,
}

/// Redis goes away for twice the stale threshold: no socket opens for anyone but the
/// subscription's owner meanwhile, and afterwards every subscription is open again
/// with the owner it had.
async fn outage_moves_nothing(outage: Outage) {
    let _serial = SERIAL.lock().await;
    let Some(redis) = redis(&[]) else { return };
    let cluster = Cluster::start(redis).await;
    let before = cluster.settled("all open").await;
    match outage {
        Outage::Stop => {
            // Redis persists its data (an RDB snapshot in its directory), then goes
            // away; the heartbeats' TTLs run out while it is down.
            cluster.redis.cli(&["SAVE"]).unwrap();
            cluster.redis.kill();
        }
        Outage::Stall => cluster.redis.stall().unwrap(),
    }
    let outage_end = Instant::now() + THRESHOLD * 2;
    while Instant::now() < outage_end {
        for (topic, r) in cluster.upstream.reports().await {
            for s in &r.sockets {
                assert_eq!(
                    s.instance.as_deref(),
                    Some(before[&topic].0.as_str()),
                    "{topic} moved during the outage"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match outage {
        Outage::Stop => cluster.redis.restart().unwrap(),
        Outage::Stall => cluster.redis.resume().unwrap(),
    }
    let after = cluster.settled("all open again after the outage").await;
    assert_eq!(after, before, "a subscription moved because of the outage");
    cluster.never_doubled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_moves_nothing() {
    outage_moves_nothing(Outage::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stall_moves_nothing() {
    outage_moves_nothing(Outage::Stall).await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The takeover gap (upstream socket closed by the old owner to socket opened by the
/// new one), per subscription, for a crash (SIGKILL) and a graceful stop (SIGTERM),
/// over `WSM_BENCH_RUNS` runs (default 5) of 3 managers and 60 subscriptions.
///
/// `cargo test -p ws-manager --release --test e2e -- --ignored --nocapture takeover_gap`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn takeover_gap() {
    let _serial = SERIAL.lock().await;
    if redis(&[]).is_none() {
        return;
    }
    let runs: usize = std::env::var("WSM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for (kind, signal) in [("crash (SIGKILL)", "KILL"), ("graceful (SIGTERM)", "TERM")] {
        let mut gaps = Vec::new();
        for _ in 0..runs {
            let Some(redis) = redis(&[]) else { return };
            let mut cluster = Cluster::start(redis).await;
            let before = cluster.settled("all open").await;
            let victim = &mut cluster.managers[1];
            if signal == "KILL" {
                victim.child.kill();
            } else {
                victim.child.signal("TERM").unwrap();
                assert!(victim.wait_exit(Duration::from_secs(10)));
            }
            cluster.moved_off("wsm-b").await;
            let reports = cluster.upstream.reports().await;
            for (topic, (owner, _)) in &before {
                if owner == "wsm-b" {
                    gaps.extend(reports[topic].gaps_ms.iter().copied());
                }
            }
            cluster.never_doubled().await;
        }
        gaps.sort_by(f64::total_cmp);
        println!(
            "ws-manager takeover gap, {kind}: {} subscriptions over {runs} runs: median {:.0} ms, p90 {:.0} ms, max {:.0} ms \
             (beats {BEAT}, discovery {DISCOVERY}, threshold {} ms)",
            gaps.len(),
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.9),
            gaps.last().copied().unwrap_or(f64::NAN),
            THRESHOLD.as_millis()
        );
    }
}
