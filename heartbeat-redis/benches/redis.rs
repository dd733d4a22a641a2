//! Throughput and discovery cost of the Redis store against a real `redis-server` it
//! starts itself (no persistence, loopback), printed as Markdown for BENCHMARKS.md.
//!
//! ```text
//! cargo bench -p heartbeat-redis --bench redis               # everything
//! cargo bench -p heartbeat-redis --bench redis -- publish    # or: discovery, cluster
//! ```
//!
//! 1. Heartbeat publishes per second: `PUBLISHERS` concurrent publishers, each on its
//!    own connection with one request in flight (as many instances would), each
//!    writing its record with `Store::put(key, record, Overwrite, Some(ttl))`, against
//!    `redis-benchmark -t set -c PUBLISHERS -P 1 -d <record size>` on the same server
//!    in the same run. Also one shared (multiplexed) connection, as one process with
//!    many concurrent writers would use it.
//! 2. Discovery time for 10 to 10,000 instances: what `HeartbeatService` does
//!    (`index_members` + one `get_many`) against the naive way (read the index, then
//!    one `GET` per instance), with the number of commands the server processed per
//!    discovery (from `INFO stats`), on a standalone server and on a three-master
//!    Cluster (seed layout: keys spread over the slots; and a hash-tagged prefix that
//!    puts them all in one slot).
//!
//! Figures depend on the machine (the client and the server share its cores); ratios
//! measured in the same run are what to compare.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use heartbeat_conformance::support::redis::{RedisCluster, RedisServer};
use heartbeat_core::{
    Incarnation, InstanceHeartbeat, InstanceId, InstanceStatus, KeyLayout, PutMode, Store,
};
use heartbeat_redis::RedisStore;

const PUBLISHERS: usize = 50;
const PUBLISH_FOR: Duration = Duration::from_secs(5);
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn record(id: &str, sequence: u64) -> Vec<u8> {
    InstanceHeartbeat {
        instance_id: InstanceId::new(id).unwrap(),
        last_seen_at: Utc::now(),
        grpc_host_port: Some("10.244.1.17:5002".into()),
        incarnation: Some(Incarnation::random()),
        sequence: Some(sequence),
        started_at: Some(Utc::now()),
        status: InstanceStatus::Alive,
    }
    .to_json()
    .unwrap()
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |section: &str| filter.is_empty() || filter.iter().any(|f| f == section);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = match RedisServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: redis-server unavailable: {e}");
            return;
        }
    };
    println!("redis-server {} on 127.0.0.1:{}", version(), server.port());
    if wanted("publish") {
        runtime.block_on(publishes(&server));
    }
    if wanted("discovery") {
        runtime.block_on(discoveries(&server, None, ""));
    }
    if wanted("cluster") {
        match RedisCluster::start() {
            Ok(cluster) => {
                runtime.block_on(discoveries(&server, Some(&cluster), ""));
                runtime.block_on(discoveries(&server, Some(&cluster), "{hb}/"));
            }
            Err(e) => eprintln!("cluster discovery skipped: {e}"),
        }
    }
}

fn version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

async fn publishes(server: &RedisServer) {
    let size = record("pod-00", 1).len();
    println!(
        "\n### Heartbeat publishes per second ({PUBLISHERS} publishers, record of {size} bytes)\n"
    );
    println!(
        "| round | heartbeat put, {PUBLISHERS} connections | heartbeat put, 1 shared connection | redis-benchmark SET -c {PUBLISHERS} -P 1 -d {size} | ratio (own connections) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut own = Vec::new();
    for _ in 0..PUBLISHERS {
        own.push(Arc::new(RedisStore::connect(&server.url()).await.unwrap()));
    }
    let shared = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    for round in 1..=3 {
        let ours = publish_rate(&own).await;
        let ours_shared = publish_rate(&vec![shared.clone(); PUBLISHERS]).await;
        let theirs = redis_benchmark_set(server.port(), PUBLISHERS, size);
        println!(
            "| {round} | {ours:.0}/s | {ours_shared:.0}/s | {theirs:.0}/s | {:.2} |",
            ours / theirs
        );
    }
}

/// Publishes per second with one task per store (stores may repeat: shared connection).
async fn publish_rate(stores: &[Arc<RedisStore>]) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ns = format!("bench-publish/{:08x}/", rand::random::<u32>());
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (store, count, counting, stop) =
                (store.clone(), count.clone(), counting.clone(), stop.clone());
            let id = format!("pod-{i:02}");
            let key = KeyLayout::new(&ns).heartbeat_key(&InstanceId::new(&id).unwrap());
            tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let value = record(&id, seq);
                    store
                        .put(
                            &key,
                            value,
                            PutMode::Overwrite,
                            Some(Duration::from_secs(60)),
                        )
                        .await
                        .unwrap();
                    if counting.load(Ordering::Relaxed) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await; // warm up
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(PUBLISH_FOR).await;
    let n = count.load(Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    join_all(tasks).await;
    n as f64 / elapsed.as_secs_f64()
}

fn redis_benchmark_set(port: u16, clients: usize, size: usize) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-t", "set", "-P", "1", "-q", "-n", "200000", "-c"])
        .arg(clients.to_string())
        .arg("-d")
        .arg(size.to_string())
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 81234.56 requests per second, p50=0.311 msec"
    text.split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix("SET: "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"))
}

/// Discovery timings; `tag` prefixes the keys (`{hb}/`: one hash slot for all).
async fn discoveries(server: &RedisServer, cluster: Option<&RedisCluster>, tag: &str) {
    let (url, label) = match (cluster, tag) {
        (Some(c), "") => (c.url(), "three-master Cluster, seed layout".to_owned()),
        (Some(c), tag) => (
            c.url(),
            format!("three-master Cluster, hash-tagged prefix `{tag}...`"),
        ),
        (None, _) => (server.url(), "standalone".to_owned()),
    };
    let store = Arc::new(RedisStore::connect(&url).await.unwrap());
    println!("\n### Discovery time, {label} (median)\n");
    println!(
        "| instances | index + one bulk read | commands | naive: index + N GETs | commands | speed-up |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in SIZES {
        let ns = format!("{tag}bench-discovery/{:08x}/", rand::random::<u32>());
        let keys = KeyLayout::new(&ns);
        let ids: Vec<InstanceId> = (0..n)
            .map(|i| InstanceId::new(format!("pod-{i:05}")).unwrap())
            .collect();
        for chunk in ids.chunks(200) {
            join_all(chunk.iter().map(|id| {
                let store = store.clone();
                let (key, index) = (keys.heartbeat_key(id), keys.index_key().to_owned());
                let value = record(id.as_str(), 1);
                async move {
                    store
                        .put(
                            &key,
                            value,
                            PutMode::Overwrite,
                            Some(Duration::from_secs(600)),
                        )
                        .await
                        .unwrap();
                    store.index_add(&index, id.as_str()).await.unwrap();
                }
            }))
            .await;
        }
        let rounds = if n >= 10_000 { 5 } else { 21 };
        let (fast, fast_cmds) = measure(rounds, cluster, server, || {
            discover_bulk(store.clone(), keys.clone())
        })
        .await;
        let naive_rounds = if n >= 10_000 { 3 } else { rounds };
        let (slow, slow_cmds) = measure(naive_rounds, cluster, server, || {
            discover_naive(store.clone(), keys.clone())
        })
        .await;
        println!(
            "| {n} | {} | {fast_cmds} | {} | {slow_cmds} | {:.1}x |",
            fmt(fast),
            fmt(slow),
            slow.as_secs_f64() / fast.as_secs_f64()
        );
    }
}

fn fmt(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    }
}

async fn discover_bulk(store: Arc<RedisStore>, keys: KeyLayout) -> usize {
    let members = store.index_members(keys.index_key()).await.unwrap();
    let list: Vec<String> = members
        .iter()
        .map(|m| keys.heartbeat_key(&InstanceId::new(m.as_str()).unwrap()))
        .collect();
    let values = store.get_many(&list).await.unwrap();
    values.iter().filter(|v| v.is_some()).count()
}

async fn discover_naive(store: Arc<RedisStore>, keys: KeyLayout) -> usize {
    let members = store.index_members(keys.index_key()).await.unwrap();
    let mut found = 0;
    for m in members {
        let key = keys.heartbeat_key(&InstanceId::new(m.as_str()).unwrap());
        if store.get(&key).await.unwrap().is_some() {
            found += 1;
        }
    }
    found
}

/// Median duration of `rounds` runs of `f`, and the commands the server(s) processed
/// during one run.
async fn measure<F, Fut>(
    rounds: usize,
    cluster: Option<&RedisCluster>,
    server: &RedisServer,
    mut f: F,
) -> (Duration, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let before = commands(cluster, server);
    let overhead = commands(cluster, server) - before; // the INFO calls themselves
    let start = commands(cluster, server);
    f().await;
    let cmds = commands(cluster, server) - start - overhead;
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        f().await;
        times.push(t0.elapsed());
    }
    times.sort();
    (times[times.len() / 2], cmds)
}

/// Commands processed so far by the server, or by all cluster nodes.
fn commands(cluster: Option<&RedisCluster>, server: &RedisServer) -> u64 {
    let read = |s: &RedisServer| -> u64 {
        s.cli(&["INFO", "stats"])
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    match cluster {
        Some(c) => c.nodes().iter().map(read).sum(),
        None => read(server),
    }
}
