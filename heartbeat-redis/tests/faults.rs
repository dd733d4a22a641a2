//! Failures of a real `redis-server` under three running heartbeat services: the
//! server killed and restarted (its data lost), stalled with `SIGSTOP`, slowed down or
//! cut off by a TCP proxy. In every case the views turn unhealthy (or stay healthy when
//! beats still get through in time), nobody alive is declared dead, and the services
//! recover by themselves.
//!
//! Each instance also runs a reclaimer (sweeping every 200 ms) over connection records
//! in the same Redis ([`RedisConnections`]), five owned by each instance: none may ever
//! be claimed while its owner lives. As a control, one test finally crashes an
//! instance and checks that its connections are taken over, each exactly once.
//!
//! Real time (a real server): 200 ms beats and discoveries, a 1 s stale threshold, and
//! every wait bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heartbeat_conformance::support::redis::{ProxyMode, RedisServer, TcpProxy};
use heartbeat_conformance::support::require;
use heartbeat_core::{
    HeartbeatOptions, HeartbeatService, InstanceId, KeyLayout, LeaveReason, MembershipEvent,
    ViewHealth,
};
use heartbeat_redis::{RedisConfig, RedisConnections, RedisStore};
use reclaimer::{
    ConnectionId, ConnectionRecord, ConnectionRepository, ReclaimPolicy, Reclaimer,
    ReclaimerHandle, WonConnection,
};
use tokio::time::Instant;

const BEAT: Duration = Duration::from_millis(200);
const THRESHOLD: Duration = Duration::from_secs(1);
const STORE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest any expected state may take to appear.
const LIMIT: Duration = Duration::from_secs(15);
const IDS: [&str; 3] = ["a", "b", "c"];
/// Connection records owned by each instance.
const CONNECTIONS_EACH: usize = 5;

struct Member {
    service: HeartbeatService,
    events: Arc<Mutex<Vec<MembershipEvent>>>,
    reclaimer: ReclaimerHandle,
    won: Arc<Mutex<Vec<WonConnection>>>,
}

struct Cluster {
    members: Vec<Member>,
    ns: String,
}

fn options(id: &str, ns: &str) -> HeartbeatOptions {
    HeartbeatOptions::builder(InstanceId::new(id).unwrap())
        .grpc_host_port(format!("10.0.0.{}:5002", id.len()))
        .heartbeat_interval(BEAT)
        .discovery_interval(BEAT)
        .stale_threshold(THRESHOLD)
        .store_timeout(STORE_TIMEOUT)
        .keys(KeyLayout::new(ns))
        .build()
        .unwrap()
}

async fn store(url: &str) -> Arc<RedisStore> {
    let config = RedisConfig::from_url(url)
        .unwrap()
        .call_timeout(STORE_TIMEOUT)
        .connect_timeout(Duration::from_millis(300))
        .reconnect_max_delay(Duration::from_millis(100));
    Arc::new(RedisStore::connect_with(config).await.unwrap())
}

fn connections(store: RedisStore, ns: &str) -> Arc<RedisConnections> {
    Arc::new(
        RedisConnections::new(store)
            .record_prefix(format!("{ns}websocket-"))
            .index_key(format!("{ns}websocket-index")),
    )
}

/// Writes the connection records owned by `service`.
async fn create_connections(repo: &dyn ConnectionRepository, service: &HeartbeatService) {
    let id = service.instance_id();
    for i in 0..CONNECTIONS_EACH {
        let record = ConnectionRecord::new(
            ConnectionId::new(format!("{id}-conn-{i}")).unwrap(),
            format!("wss://feed.example.test/{id}/{i}"),
            id.clone(),
            Some(service.incarnation()),
            chrono::Utc::now(),
        );
        repo.put(&record, heartbeat_core::PutMode::Overwrite)
            .await
            .unwrap();
    }
}

impl Cluster {
    /// Writes every member's connection records again.
    async fn create_connections(&self, url: &str) {
        let repo = connections((*store(url).await).clone(), &self.ns);
        for m in &self.members {
            create_connections(repo.as_ref(), &m.service).await;
        }
    }

    /// Starts one service per id, each with its own connection to its URL, its
    /// connection records, and a reclaimer.
    async fn start(urls: &[String]) -> Self {
        let ns = format!("faults/{:08x}/", rand::random::<u32>());
        let mut members = Vec::new();
        for (id, url) in IDS.iter().zip(urls) {
            let store = store(url).await;
            let service = HeartbeatService::start(store.clone(), options(id, &ns))
                .await
                .unwrap();
            let repo = connections((*store).clone(), &ns);
            create_connections(repo.as_ref(), &service).await;
            let policy = ReclaimPolicy::default()
                .sweep_interval(BEAT)
                .operation_timeout(STORE_TIMEOUT);
            let (reclaimer, mut won_rx) = Reclaimer::for_service(repo, &service, policy).spawn();
            let won = Arc::new(Mutex::new(Vec::new()));
            let won_sink = won.clone();
            tokio::spawn(async move {
                while let Some(w) = won_rx.recv().await {
                    won_sink.lock().unwrap().push(w);
                }
            });
            let events = Arc::new(Mutex::new(Vec::new()));
            let mut rx = service.events();
            let sink = events.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(e) => sink.lock().unwrap().push(e),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    }
                }
            });
            members.push(Member {
                service,
                events,
                reclaimer,
                won,
            });
        }
        let cluster = Self { members, ns };
        cluster.wait_all_healthy_with_everyone("start").await;
        cluster
    }

    fn all_ids() -> BTreeSet<InstanceId> {
        IDS.iter().map(|i| InstanceId::new(*i).unwrap()).collect()
    }

    /// Whether every view is healthy with all three instances live.
    fn all_healthy_with_everyone(&self) -> bool {
        self.members.iter().all(|m| {
            let v = m.service.current_view();
            v.health == ViewHealth::Healthy
                && v.peers.keys().cloned().collect::<BTreeSet<_>>() == Self::all_ids()
        })
    }

    async fn wait_all_healthy_with_everyone(&self, when: &str) {
        let ok = wait_until(LIMIT, || self.all_healthy_with_everyone()).await;
        assert!(
            ok,
            "{when}: views did not become healthy with a, b and c live: {}",
            self.describe()
        );
    }

    async fn wait_all_unhealthy(&self, when: &str) {
        let ok = wait_until(LIMIT, || {
            self.members.iter().all(|m| {
                matches!(
                    m.service.current_view().health,
                    ViewHealth::Unhealthy { .. }
                )
            })
        })
        .await;
        assert!(
            ok,
            "{when}: views did not turn unhealthy: {}",
            self.describe()
        );
    }

    fn describe(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let v = m.service.current_view();
                format!(
                    "{}: {:?} peers {:?}",
                    m.service.instance_id(),
                    v.health,
                    v.peers.keys().map(InstanceId::as_str).collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Panics if any observer declared a live instance dead (`Left` with `Expired`), or
    /// reported any departure at all: all three stay alive in these tests.
    fn assert_nobody_declared_dead(&self, when: &str) {
        for m in &self.members {
            let events = m.events.lock().unwrap();
            let lefts: Vec<_> = events
                .iter()
                .filter(|e| matches!(e, MembershipEvent::Left { .. }))
                .collect();
            assert!(
                lefts.is_empty(),
                "{when}: {} saw live instances leave: {lefts:?}",
                m.service.instance_id()
            );
            assert!(
                !events.iter().any(|e| matches!(
                    e,
                    MembershipEvent::Left {
                        reason: LeaveReason::Expired,
                        ..
                    }
                )),
                "{when}: expired"
            );
        }
    }

    /// Panics if any reclaimer took over a connection (all owners are alive).
    fn assert_nothing_reclaimed(&self, when: &str) {
        for m in &self.members {
            let won = m.won.lock().unwrap();
            assert!(
                won.is_empty(),
                "{when}: {} reclaimed connections of live owners: {won:?}",
                m.service.instance_id()
            );
        }
    }

    /// Checks in the store that every connection is still owned by its creator.
    async fn assert_owners_unchanged(&self, url: &str) {
        let repo = connections((*store(url).await).clone(), &self.ns);
        let records = reclaimer::conformance::scan_all(repo.as_ref(), 100).await;
        assert_eq!(records.len(), IDS.len() * CONNECTIONS_EACH);
        for r in records {
            assert!(
                r.record
                    .id
                    .as_str()
                    .starts_with(&format!("{}-", r.record.owner)),
                "{} is now owned by {}",
                r.record.id,
                r.record.owner
            );
        }
    }

    /// Waits until the remaining members together have won every connection of `dead`,
    /// then checks that each was won exactly once and nothing else was taken.
    async fn wait_reclaimed_once(&self, dead: &str) {
        let all_won = || -> Vec<String> {
            self.members
                .iter()
                .flat_map(|m| {
                    m.won
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|w| w.record.record.id.to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let ok = wait_until(LIMIT, || all_won().len() >= CONNECTIONS_EACH).await;
        assert!(
            ok,
            "the connections of {dead} were not reclaimed: {:?}",
            all_won()
        );
        // A little longer, to catch a second claimer.
        tokio::time::sleep(BEAT * 5).await;
        let mut won = all_won();
        won.sort();
        let expected: Vec<String> = (0..CONNECTIONS_EACH)
            .map(|i| format!("{dead}-conn-{i}"))
            .collect();
        assert_eq!(
            won, expected,
            "each orphan of {dead} is claimed exactly once"
        );
    }

    fn count_events(&self, f: impl Fn(&MembershipEvent) -> bool) -> usize {
        self.members
            .iter()
            .map(|m| m.events.lock().unwrap().iter().filter(|e| f(e)).count())
            .sum()
    }

    fn index_key(&self) -> String {
        KeyLayout::new(&self.ns).index_key().to_owned()
    }

    async fn stop(self) {
        for m in self.members {
            m.reclaimer.stop().await;
            m.service.abort();
        }
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server's index holds the three ids again (read with `redis-cli`).
async fn wait_index_complete(server: &RedisServer, index_key: &str) {
    let ok = wait_until(LIMIT, || {
        let members: BTreeSet<String> = server
            .cli(&["SMEMBERS", index_key])
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        IDS.iter().all(|i| members.contains(*i))
    })
    .await;
    assert!(ok, "the index did not get a, b and c back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_server_loses_nobody() {
    let Some(server) = require("redis-server", RedisServer::start()) else {
        return;
    };
    let url = server.url();
    let cluster = Cluster::start(&[url.clone(), url.clone(), url]).await;

    server.kill();
    cluster.wait_all_unhealthy("server killed").await;
    // Down for twice the stale threshold: long enough for a naive observer to judge
    // everybody dead.
    tokio::time::sleep(THRESHOLD * 2).await;
    assert!(
        cluster.members.iter().all(|m| m
            .service
            .current_view()
            .is_actionable(Instant::now())
            .is_err()),
        "a view is actionable while the store is down"
    );
    server.restart().unwrap();

    cluster
        .wait_all_healthy_with_everyone("after restart")
        .await;
    // The restarted server lost everything; the services put themselves back.
    wait_index_complete(&server, &cluster.index_key()).await;
    // And stay healthy for a while (no late expiry).
    tokio::time::sleep(THRESHOLD * 2).await;
    assert!(
        cluster.all_healthy_with_everyone(),
        "{}",
        cluster.describe()
    );
    cluster.assert_nobody_declared_dead("kill and restart");
    cluster.assert_nothing_reclaimed("kill and restart");
    // The restart lost the connection records too (no persistence): the application
    // registers them again.
    cluster.create_connections(&server.url()).await;
    assert!(
        cluster.count_events(|e| matches!(e, MembershipEvent::ViewUnhealthy { .. })) >= 3,
        "every observer reported its unhealthy view"
    );
    assert!(cluster.count_events(|e| matches!(e, MembershipEvent::ViewHealthy)) >= 3);

    // Control: a real crash is noticed and its connections are taken over, each once.
    let mut cluster = cluster;
    let b = cluster.members.remove(1);
    b.reclaimer.stop().await;
    b.service.abort();
    cluster.wait_reclaimed_once("b").await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_server_loses_nobody() {
    let Some(server) = require("redis-server", RedisServer::start()) else {
        return;
    };
    let url = server.url();
    let cluster = Cluster::start(&[url.clone(), url.clone(), url]).await;

    server.stall().unwrap();
    cluster.wait_all_unhealthy("server stalled").await;
    tokio::time::sleep(THRESHOLD * 2).await;
    server.resume().unwrap();

    cluster
        .wait_all_healthy_with_everyone("after SIGCONT")
        .await;
    wait_index_complete(&server, &cluster.index_key()).await;
    tokio::time::sleep(THRESHOLD * 2).await;
    assert!(
        cluster.all_healthy_with_everyone(),
        "{}",
        cluster.describe()
    );
    cluster.assert_nobody_declared_dead("SIGSTOP and SIGCONT");
    cluster.assert_nothing_reclaimed("SIGSTOP and SIGCONT");
    cluster.assert_owners_unchanged(&server.url()).await;
    assert!(
        cluster.count_events(|e| matches!(e, MembershipEvent::SelfAtRisk { .. })) >= 1,
        "a stall of twice the threshold puts the publishers at risk"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_within_the_threshold_kills_nobody() {
    let Some(server) = require("redis-server", RedisServer::start()) else {
        return;
    };
    let mut proxies = Vec::new();
    for _ in IDS {
        proxies.push(TcpProxy::start(server.port()).await.unwrap());
    }
    let urls: Vec<String> = proxies.iter().map(TcpProxy::url).collect();
    let cluster = Cluster::start(&urls).await;

    // 150 ms each way: a 300 ms round trip, within the store timeout, and beats still
    // land well within the threshold. Views must stay healthy and complete throughout.
    for p in &proxies {
        p.set_mode(ProxyMode::Delay(Duration::from_millis(150)));
    }
    let until = Instant::now() + THRESHOLD * 3;
    let mut samples = 0;
    let mut unhealthy = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples += 1;
        if !cluster.all_healthy_with_everyone() {
            unhealthy += 1;
        }
    }
    eprintln!("latency: views unhealthy in {unhealthy} of {samples} samples");
    // A slow discovery may briefly exceed the view's age limit; it must never lose a peer.
    assert!(
        unhealthy * 4 <= samples,
        "views unhealthy in {unhealthy} of {samples} samples: {}",
        cluster.describe()
    );
    cluster.assert_nobody_declared_dead("latency");

    // Back to normal.
    for p in &proxies {
        p.set_mode(ProxyMode::Pass);
    }
    cluster
        .wait_all_healthy_with_everyone("latency removed")
        .await;
    cluster.assert_nobody_declared_dead("latency removed");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_heal_without_losing_anybody() {
    let Some(server) = require("redis-server", RedisServer::start()) else {
        return;
    };
    let mut proxies = Vec::new();
    for _ in IDS {
        proxies.push(TcpProxy::start(server.port()).await.unwrap());
    }
    let urls: Vec<String> = proxies.iter().map(TcpProxy::url).collect();
    let cluster = Cluster::start(&urls).await;

    // Everybody cut off from the store for twice the threshold.
    for p in &proxies {
        p.set_mode(ProxyMode::Cut);
    }
    cluster.wait_all_unhealthy("all cut").await;
    tokio::time::sleep(THRESHOLD * 2).await;
    for p in &proxies {
        p.set_mode(ProxyMode::Pass);
    }
    cluster.wait_all_healthy_with_everyone("reconnected").await;
    tokio::time::sleep(THRESHOLD * 2).await;
    assert!(
        cluster.all_healthy_with_everyone(),
        "{}",
        cluster.describe()
    );
    cluster.assert_nobody_declared_dead("all cut, then healed");
    cluster.assert_nothing_reclaimed("all cut, then healed");
    cluster.assert_owners_unchanged(&server.url()).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_instance_knows_it_and_judges_nobody() {
    let Some(server) = require("redis-server", RedisServer::start()) else {
        return;
    };
    let mut proxies = Vec::new();
    for _ in IDS {
        proxies.push(TcpProxy::start(server.port()).await.unwrap());
    }
    let urls: Vec<String> = proxies.iter().map(TcpProxy::url).collect();
    let cluster = Cluster::start(&urls).await;
    let c = &cluster.members[2];

    // Only c is cut off: its beats stop reaching the store, so a and b rightly judge
    // it dead after the threshold; c itself must learn it is at risk and, its view
    // being unhealthy, judge nobody.
    proxies[2].set_mode(ProxyMode::Cut);
    let ok = wait_until(LIMIT, || {
        c.service.current_view().self_at_risk
            && cluster.members[..2].iter().all(|m| {
                !m.service
                    .current_view()
                    .peers
                    .contains_key(c.service.instance_id())
            })
    })
    .await;
    assert!(ok, "c cut off: {}", cluster.describe());
    let c_events = c.events.lock().unwrap().clone();
    assert!(
        c_events
            .iter()
            .any(|e| matches!(e, MembershipEvent::SelfAtRisk { .. })),
        "{c_events:?}"
    );
    assert!(
        !c_events
            .iter()
            .any(|e| matches!(e, MembershipEvent::Left { .. })),
        "the isolated instance judged others: {c_events:?}"
    );
    for m in &cluster.members[..2] {
        let events = m.events.lock().unwrap();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, MembershipEvent::Left { id, .. } if id.as_str() != "c")),
            "a connected instance was declared dead: {events:?}"
        );
    }

    // c's beats stopped landing, so its connections are orphans for a and b: they take
    // them over, each exactly once; c, cut off and at risk, takes nothing.
    let ok = wait_until(LIMIT, || {
        cluster.members[..2]
            .iter()
            .map(|m| m.won.lock().unwrap().len())
            .sum::<usize>()
            >= CONNECTIONS_EACH
    })
    .await;
    assert!(ok, "a and b did not take over the connections of c");
    tokio::time::sleep(BEAT * 5).await;
    let mut won: Vec<String> = cluster.members[..2]
        .iter()
        .flat_map(|m| {
            m.won
                .lock()
                .unwrap()
                .iter()
                .map(|w| w.record.record.id.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    won.sort();
    let expected: Vec<String> = (0..CONNECTIONS_EACH)
        .map(|i| format!("c-conn-{i}"))
        .collect();
    assert_eq!(won, expected, "each orphan of c is claimed exactly once");
    assert!(
        c.won.lock().unwrap().is_empty(),
        "the isolated instance reclaimed connections"
    );

    // Reconnected, c comes back (the same life, seen again) and recovers.
    proxies[2].set_mode(ProxyMode::Pass);
    cluster
        .wait_all_healthy_with_everyone("c reconnected")
        .await;
    let ok = wait_until(LIMIT, || !c.service.current_view().self_at_risk).await;
    assert!(ok, "c still at risk");
    cluster.stop().await;
}
