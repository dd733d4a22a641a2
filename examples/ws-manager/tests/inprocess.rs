#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Three managers in one process on the memory store, a real upstream on loopback: a
//! crash and a clean leave move the subscriptions to the survivors, one socket each.
//! (The end-to-end suite, `e2e.rs`, does the same with real processes on real Redis.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use heartbeat_core::InstanceId;
use serde_json::Value;
use tokio::time::Instant;
use ws_manager::backend::Backend;
use ws_manager::client::request;
use ws_manager::manager::{AtRiskPolicy, Manager, ManagerConfig, Shared};
use ws_manager::upstream::Upstream;

const LIMIT: Duration = Duration::from_secs(20);

async fn start_manager(backend: &Backend, id: &str, upstream: &str) -> (Manager, SocketAddr) {
    let config = ManagerConfig {
        instance: InstanceId::new(id).unwrap(),
        heartbeat_interval: Duration::from_millis(100),
        discovery_interval: Duration::from_millis(100),
        stale_threshold: Duration::from_millis(600),
        upstream: Some(upstream.to_owned()),
        advertise: None,
        at_risk: AtRiskPolicy::Release,
    };
    let manager = Manager::start(backend.clone(), config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = ws_manager::api::router(manager.shared());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (manager, addr)
}

/// Owner per subscription key (topic), from the records.
async fn owners(shared: &Arc<Shared>) -> BTreeMap<String, String> {
    shared
        .scan_all()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.record.topic.clone().unwrap(), s.record.owner.to_string()))
        .collect()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every subscription open exactly once at the upstream, held by its record's owner.
fn consistent(upstream: &Upstream, owners: &BTreeMap<String, String>) -> bool {
    owners.iter().all(|(key, owner)| {
        upstream.report(key).is_some_and(|r| {
            r.open == 1 && r.sockets[0].instance.as_deref() == Some(owner.as_str())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_leave_move_subscriptions_once() {
    let upstream = Upstream::default();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (ws, _http, serve) = upstream
        .clone()
        .bind(any, any, Duration::from_millis(100))
        .await
        .unwrap();
    tokio::spawn(serve);
    let base = format!("ws://{ws}/ws");
    let backend = Backend::memory();
    let mut managers = Vec::new();
    for id in ["m1", "m2", "m3"] {
        managers.push(start_manager(&backend, id, &base).await);
    }
    let shared = managers[0].0.shared();
    for n in 0..30 {
        let (_, addr) = &managers[n % 3];
        let body = format!(r#"{{"topic":"sub-{n:02}"}}"#);
        let (status, text) = request(*addr, "POST", "/subscriptions", Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 201, "{text}");
    }
    let (status, text) = request(managers[0].1, "GET", "/subscriptions", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let listed: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(listed.len(), 30);
    let before = owners(&shared).await;
    wait_for("all 30 sockets open", async || {
        consistent(&upstream, &before)
    })
    .await;

    // Crash m2: its 10 subscriptions move to m1 and m3; nothing else moves.
    let (m2, _) = managers.remove(1);
    m2.crash();
    wait_for("m2's subscriptions to be taken over", async || {
        let now = owners(&shared).await;
        now.values().all(|o| o != "m2") && consistent(&upstream, &now)
    })
    .await;
    let after = owners(&shared).await;
    for (key, owner) in &before {
        if owner != "m2" {
            assert_eq!(&after[key], owner, "{key} moved away from a live manager");
            assert_eq!(
                upstream.report(key).unwrap().connects,
                1,
                "{key} reconnected"
            );
        }
    }

    // m3 leaves cleanly: everything ends up on m1.
    let (m3, _) = managers.remove(1);
    m3.shutdown().await.unwrap();
    wait_for("everything on m1", async || {
        let now = owners(&shared).await;
        now.values().all(|o| o == "m1") && consistent(&upstream, &now)
    })
    .await;
    for r in upstream.reports() {
        assert_eq!(r.max_open, 1, "{} had two sockets at once: {r:?}", r.key);
    }

    // Delete through the API: the socket closes and the record is gone.
    let (status, _) = request(
        managers[0].1,
        "DELETE",
        &format!("/subscriptions/{}", listed[0]["id"].as_str().unwrap()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    let topic = listed[0]["topic"].as_str().unwrap().to_owned();
    wait_for("the deleted subscription's socket to close", async || {
        upstream.report(&topic).is_some_and(|r| r.open == 0)
    })
    .await;
    assert_eq!(owners(&shared).await.len(), 29);
}
