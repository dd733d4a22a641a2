//! The key layout, checked with the real `redis-cli` against a real server: what the
//! seed system's tools see after a join.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use heartbeat_conformance::support::{redis, require};
use heartbeat_core::{HeartbeatOptions, HeartbeatService, InstanceId, KeyLayout, PutMode, Store};
use heartbeat_redis::RedisStore;

#[tokio::test]
async fn a_join_writes_the_seed_layout() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let id = InstanceId::new(format!("wsm-layout-{:08x}", rand_u32())).unwrap();
    let options = HeartbeatOptions::builder(id.clone())
        .grpc_host_port("10.244.1.17:5002")
        .heartbeat_interval(Duration::from_secs(1))
        .stale_threshold(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(options.keys(), &KeyLayout::default());
    let service = HeartbeatService::start(store.clone(), options)
        .await
        .unwrap();

    let key = format!("websocketmanager/instances/{id}");
    let raw = server.cli(&["GET", &key]).unwrap();
    let json: serde_json::Value = serde_json::from_str(raw.trim()).expect("GET returns JSON");
    assert_eq!(json["instanceId"], id.as_str());
    assert_eq!(json["grpcHostPort"], "10.244.1.17:5002");
    let seen = json["lastSeenAt"].as_str().expect("lastSeenAt is a string");
    assert!(seen.ends_with('Z'), "{seen}");
    assert!(
        json.get("InstanceId").is_none(),
        "camelCase, not PascalCase: {json}"
    );

    let pttl: i64 = server.cli(&["PTTL", &key]).unwrap().trim().parse().unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "PTTL {pttl}");
    let index = "websocketmanager/instances/_index";
    assert_eq!(server.cli(&["TYPE", index]).unwrap().trim(), "set");
    assert_eq!(
        server
            .cli(&["SISMEMBER", index, id.as_str()])
            .unwrap()
            .trim(),
        "1"
    );

    // The version lives beside the value, expiring with it.
    let vkey = store.version_key(&key);
    assert!(vkey.starts_with("heartbeat-version:{"), "{vkey}");
    assert_eq!(server.cli(&["TYPE", &vkey]).unwrap().trim(), "string");
    let vttl: i64 = server
        .cli(&["PTTL", &vkey])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(vttl > 0 && vttl <= 30_000, "version PTTL {vttl}");
    let version = store.get(&key).await.unwrap().unwrap().version;
    assert_eq!(
        server.cli(&["GET", &vkey]).unwrap().trim(),
        version.as_str()
    );

    service.leave().await.unwrap();
    assert_eq!(
        server
            .cli(&["SISMEMBER", index, id.as_str()])
            .unwrap()
            .trim(),
        "0"
    );
}

#[tokio::test]
async fn a_value_written_by_another_tool_reads_as_untracked_and_can_be_taken_over() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let key = format!("layout-test/{:08x}/dotnet", rand_u32());
    server
        .cli(&[
            "SET",
            &key,
            r#"{"instanceId":"x","lastSeenAt":"2026-11-30T09:41:07.1234567Z"}"#,
        ])
        .unwrap();
    let read = store.get(&key).await.unwrap().unwrap();
    assert_eq!(read.version.as_str(), heartbeat_redis::layout::UNTRACKED);
    let v = store
        .put(&key, b"ours".to_vec(), PutMode::Update(read.version), None)
        .await
        .unwrap();
    assert_ne!(v.as_str(), heartbeat_redis::layout::UNTRACKED);
    assert_eq!(server.cli(&["GET", &key]).unwrap().trim(), "ours");
}

fn rand_u32() -> u32 {
    // Enough to keep concurrent runs apart; no need for a crate.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_tagged_prefix_keeps_a_cluster_in_one_slot() {
    let Some(cluster) = require("redis cluster", redis::shared_cluster()) else {
        return;
    };
    let store: Arc<RedisStore> = Arc::new(RedisStore::connect(&cluster.url()).await.unwrap());
    let keys = KeyLayout::new(format!("{{hb-{:08x}}}/instances/", rand_u32()));
    let mut services = Vec::new();
    for id in ["a", "b", "c"] {
        let options = HeartbeatOptions::builder(InstanceId::new(id).unwrap())
            .heartbeat_interval(Duration::from_millis(200))
            .discovery_interval(Duration::from_millis(200))
            .stale_threshold(Duration::from_secs(2))
            .keys(keys.clone())
            .build()
            .unwrap();
        services.push(
            HeartbeatService::start(store.clone(), options)
                .await
                .unwrap(),
        );
    }
    let view = services[0].discover_now().await;
    let live: Vec<&str> = view.live_ids().map(InstanceId::as_str).collect();
    assert_eq!(live, ["a", "b", "c"]);
    // Every key of this layout, version keys included, is in the index's slot.
    let slot = heartbeat_redis::slots::slot(keys.index_key().as_bytes());
    for id in ["a", "b", "c"] {
        let key = keys.heartbeat_key(&InstanceId::new(id).unwrap());
        assert_eq!(heartbeat_redis::slots::slot(key.as_bytes()), slot);
        assert_eq!(
            heartbeat_redis::slots::slot(store.version_key(&key).as_bytes()),
            slot
        );
    }
    // Prune takes the atomic path: an id without a record goes, live ones stay.
    store.index_add(keys.index_key(), "ghost").await.unwrap();
    let ghost = keys.heartbeat_key(&InstanceId::new("ghost").unwrap());
    assert!(
        store
            .index_prune(keys.index_key(), "ghost", &ghost)
            .await
            .unwrap()
    );
    let a = keys.heartbeat_key(&InstanceId::new("a").unwrap());
    assert!(!store.index_prune(keys.index_key(), "a", &a).await.unwrap());
    for s in services {
        s.leave().await.unwrap();
    }
    assert!(
        store
            .index_members(keys.index_key())
            .await
            .unwrap()
            .is_empty()
    );
}
