//! The connection repository on a real standalone server and a real Cluster: the
//! reclaimer's repository contract, the seed's record layout, and index upkeep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use heartbeat_conformance::support::{redis, require};
use heartbeat_core::{DeleteMode, Incarnation, InstanceId, PutMode};
use heartbeat_redis::{RedisConnections, RedisStore};
use reclaimer::{Claim, ClaimOutcome, ConnectionId, ConnectionRepository, conformance};

fn prefix() -> String {
    format!("repo-test/{:08x}/websocket-", rand::random::<u32>())
}

fn repo(store: RedisStore, prefix: &str) -> RedisConnections {
    RedisConnections::new(store)
        .record_prefix(prefix)
        .index_key(format!("{prefix}index"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_standalone() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    conformance::run_all(&repo(store, &prefix())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_cluster() {
    let Some(cluster) = require("redis cluster", redis::shared_cluster()) else {
        return;
    };
    let store = RedisStore::connect(&cluster.url()).await.unwrap();
    conformance::run_all(&repo(store, &prefix())).await;
}

#[tokio::test]
async fn dotnet_records_are_read_claimed_and_kept_whole() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let prefix = prefix();
    let repo = repo(store, &prefix);
    // The .NET vector (vendored by the reclaimer crate), written by "another tool"
    // (redis-cli), with an unknown field.
    let vector = include_str!("../../reclaimer/tests/vectors/connection-dotnet.json").trim();
    let mut json: serde_json::Value = serde_json::from_str(vector).unwrap();
    json["zone"] = "eu-west".into();
    let id = json["id"].as_str().unwrap().to_owned();
    let key = format!("{prefix}{id}");
    server.cli(&["SET", &key, &json.to_string()]).unwrap();
    server
        .cli(&["SADD", &format!("{prefix}index"), &id])
        .unwrap();

    let page = repo.scan(None, 10).await.unwrap();
    assert_eq!(page.records.len(), 1, "{page:?}");
    let current = page.records.into_iter().next().unwrap();
    assert_eq!(current.record.owner.as_str(), "wsm-7d9f8c6b5-x2x9q");
    let claim = Claim {
        owner: InstanceId::new("wsm-new").unwrap(),
        incarnation: Incarnation::from_u64(0xabc),
        at: Utc::now(),
    };
    let won = repo.claim(&current, &claim).await.unwrap();
    assert!(matches!(won, ClaimOutcome::Won(_)), "{won:?}");
    assert_eq!(
        repo.claim(&current, &claim).await.unwrap(),
        ClaimOutcome::Conflict
    );

    let stored: serde_json::Value =
        serde_json::from_str(server.cli(&["GET", &key]).unwrap().trim()).unwrap();
    assert_eq!(stored["instanceId"], "wsm-new");
    assert_eq!(stored["ownerIncarnation"], "0000000000000abc");
    assert_eq!(stored["zone"], "eu-west", "unknown fields survive a claim");
    assert_eq!(stored["tags"]["desk"], "fx");
    assert_eq!(stored["status"], 2);
}

#[tokio::test]
async fn expired_and_foreign_deletes_leave_the_index() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let prefix = prefix();
    let index = format!("{prefix}index");
    let repo = repo(store, &prefix).record_ttl(Some(Duration::from_millis(300)));
    let owner = InstanceId::new("pod-a").unwrap();
    for i in 0..3 {
        let id = ConnectionId::new(format!("c-{i}")).unwrap();
        let r =
            reclaimer::ConnectionRecord::new(id, "wss://x.test", owner.clone(), None, Utc::now());
        repo.create(&r).await.unwrap();
    }
    let ttl: i64 = server
        .cli(&["PTTL", &format!("{prefix}c-0")])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "the configured TTL applies: {ttl}");
    assert_eq!(server.cli(&["SCARD", &index]).unwrap().trim(), "3");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page = repo.scan(None, 100).await.unwrap();
    assert!(page.records.is_empty() && page.next.is_none(), "{page:?}");
    assert_eq!(
        server.cli(&["SCARD", &index]).unwrap().trim(),
        "0",
        "expired ids pruned"
    );

    // A conditional delete that loses keeps the record and its index entry.
    let repo = repo.record_ttl(None);
    let id = ConnectionId::new("kept").unwrap();
    let r = reclaimer::ConnectionRecord::new(id.clone(), "wss://x.test", owner, None, Utc::now());
    let v1 = repo.put(&r, PutMode::Create).await.unwrap();
    let _v2 = repo.put(&r, PutMode::Update(v1.clone())).await.unwrap();
    assert!(repo.delete(&id, DeleteMode::IfVersion(v1)).await.is_err());
    assert_eq!(
        server.cli(&["SISMEMBER", &index, "kept"]).unwrap().trim(),
        "1"
    );
    repo.delete(&id, DeleteMode::Unconditional).await.unwrap();
    assert_eq!(
        server.cli(&["SISMEMBER", &index, "kept"]).unwrap().trim(),
        "0"
    );
}

#[tokio::test]
async fn an_id_that_names_the_index_is_refused() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let repo = RedisConnections::new(store);
    let id = ConnectionId::new("index").unwrap();
    let r = reclaimer::ConnectionRecord::new(
        id.clone(),
        "wss://x.test",
        InstanceId::new("pod-a").unwrap(),
        None,
        Utc::now(),
    );
    assert!(matches!(
        repo.put(&r, PutMode::Overwrite).await,
        Err(reclaimer::RepositoryError::NotSupported { .. })
    ));
    assert!(!format!("{repo:?}").is_empty());
}
