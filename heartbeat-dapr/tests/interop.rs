//! Interoperation with the seed (.NET) system through a real daprd: what it writes
//! through its Dapr client we discover, and what we write it can read; plus the wire
//! details it depends on (key encoding, no sticky first-write, API token).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use heartbeat_conformance::namespace;
use heartbeat_conformance::protocol::fast_options;
use heartbeat_conformance::support::{daprd, require};
use heartbeat_core::{HeartbeatService, InstanceId, KeyLayout, PutMode, Store};
use heartbeat_dapr::{ConnectError, DaprConfig, DaprStore};
use serde_json::Value;

const COMPONENTS: [&str; 2] = [daprd::MEMORY_STORE, daprd::REDIS_STORE];

async fn store(sidecar: &daprd::Daprd, component: &str) -> Arc<DaprStore> {
    let config = DaprConfig::new(&sidecar.endpoint(), component).unwrap();
    Arc::new(DaprStore::connect(config).await.expect("connect"))
}

/// Raw HTTP, as the .NET Dapr client does it.
struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    fn new(sidecar: &daprd::Daprd, component: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/v1.0/state/{component}", sidecar.endpoint()),
        }
    }

    /// A plain save (no ETag, no concurrency option), as the seed writes.
    async fn save(&self, key: &str, value: Value) -> u16 {
        self.http
            .post(&self.base)
            .json(&serde_json::json!([{ "key": key, "value": value }]))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// GET with the key already encoded for the path.
    async fn get_encoded(&self, encoded: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}/{encoded}", self.base))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            204 => None,
            200 => Some(resp.json().await.unwrap()),
            other => panic!("GET {encoded}: {other}"),
        }
    }

    async fn get(&self, key: &str) -> Option<Value> {
        self.get_encoded(&heartbeat_dapr::client::encode_key(key))
            .await
    }
}

fn dotnet_heartbeat(id: &str) -> Value {
    let raw = include_str!("../../heartbeat-core/tests/vectors/heartbeat-dotnet.json");
    let mut record: Value = serde_json::from_str(raw).unwrap();
    record["instanceId"] = Value::from(id);
    record["lastSeenAt"] = Value::from(
        chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6f0Z")
            .to_string(),
    );
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_written_by_the_dotnet_client_is_discovered() {
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    for component in COMPONENTS {
        let ns = namespace("dotnet-writes");
        let keys = KeyLayout::new(&ns);
        let raw = Raw::new(sidecar, component);
        let dotnet_id = "wsm-7d9f8c6b5-x2x9q";
        let id: InstanceId = dotnet_id.parse().unwrap();
        assert_eq!(
            raw.save(&keys.heartbeat_key(&id), dotnet_heartbeat(dotnet_id))
                .await,
            204
        );
        assert_eq!(
            raw.save(keys.index_key(), serde_json::json!([dotnet_id]))
                .await,
            204
        );
        let store = store(sidecar, component).await;
        let ours = HeartbeatService::start(store.clone(), fast_options("ours", &ns))
            .await
            .expect("join next to the .NET instance");
        let view = ours.discover_now().await;
        let peer = view
            .peers
            .get(&id)
            .unwrap_or_else(|| panic!("{component}: .NET peer not discovered: {view:?}"));
        assert_eq!(peer.grpc_host_port.as_deref(), Some("10.244.1.17:5002"));
        assert_eq!(peer.incarnation, None);
        // Our join kept the .NET instance in the index (compare-and-swap, no loss).
        let index: BTreeSet<String> = store.index_members(keys.index_key()).await.unwrap();
        assert_eq!(
            index,
            BTreeSet::from([dotnet_id.to_owned(), "ours".to_owned()])
        );
        ours.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_records_read_as_camel_case_json_through_raw_http() {
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    for component in COMPONENTS {
        let ns = namespace("we-write");
        let keys = KeyLayout::new(&ns);
        let store = store(sidecar, component).await;
        let ours = HeartbeatService::start(store.clone(), fast_options("pod-a", &ns))
            .await
            .unwrap();
        let raw = Raw::new(sidecar, component);
        let record = raw
            .get(&keys.heartbeat_key(&"pod-a".parse().unwrap()))
            .await
            .expect("record present");
        assert!(record.is_object(), "{component}: stored as {record}");
        assert_eq!(record["instanceId"], "pod-a");
        assert!(
            record["lastSeenAt"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z') && s.contains('T')),
            "{record}"
        );
        assert_eq!(record["grpcHostPort"], "127.0.0.1:5005");
        // The index is a JSON array of ids, as a HashSet<string> deserializes it.
        let index = raw.get(keys.index_key()).await.expect("index present");
        assert_eq!(index, serde_json::json!(["pod-a"]));
        // The seed's plain save of the index still works after our compare-and-swap
        // writes (no sticky first-write field on Redis), and we read what it wrote.
        assert_eq!(
            raw.save(keys.index_key(), serde_json::json!(["pod-a", "wsm-1"]))
                .await,
            204,
            "{component}"
        );
        assert_eq!(
            store.index_members(keys.index_key()).await.unwrap(),
            BTreeSet::from(["pod-a".to_owned(), "wsm-1".to_owned()])
        );
        ours.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_slash_plus_and_percent_reach_the_exact_key() {
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    for component in COMPONENTS {
        let ns = namespace("keys");
        let store = store(sidecar, component).await;
        let key = format!("{ns}a+b%2Fc:d");
        store
            .put(&key, br#"{"x":1}"#.to_vec(), PutMode::Overwrite, None)
            .await
            .unwrap();
        let raw = Raw::new(sidecar, component);
        // Encoded by hand exactly as WIRE.md measured it.
        let encoded = format!("{}a%2Bb%252Fc%3Ad", ns.replace('/', "%2F"));
        assert_eq!(
            raw.get_encoded(&encoded).await,
            Some(serde_json::json!({"x": 1})),
            "{component}"
        );
        // The wrong encodings name other (missing) keys.
        assert_eq!(
            raw.get_encoded(&format!("{}a+b%2Fc:d", ns.replace('/', "%2F")))
                .await,
            None
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_values_are_marked_strings_and_json_values_are_json() {
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    for component in COMPONENTS {
        let ns = namespace("values");
        let store = store(sidecar, component).await;
        let raw = Raw::new(sidecar, component);
        let text = format!("{ns}text");
        store
            .put(&text, b"value-3".to_vec(), PutMode::Overwrite, None)
            .await
            .unwrap();
        let stored = raw.get(&text).await.unwrap();
        assert_eq!(stored, Value::from("\u{0}heartbeat:text:value-3"));
        let number = format!("{ns}number");
        store
            .put(&number, b"42".to_vec(), PutMode::Overwrite, None)
            .await
            .unwrap();
        assert_eq!(raw.get(&number).await.unwrap(), Value::from(42));
        // A value the seed wrote as a plain JSON string reads as that JSON.
        let seed = format!("{ns}seed-string");
        assert_eq!(raw.save(&seed, Value::from("hello")).await, 204);
        assert_eq!(
            store.get(&seed).await.unwrap().unwrap().value,
            br#""hello""#
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_checks_the_component_and_the_token() {
    let Some(sidecar) = require("daprd", daprd::Daprd::start_with_token("s3cret-test-token"))
    else {
        return;
    };
    let base = DaprConfig::new(&sidecar.endpoint(), daprd::REDIS_STORE)
        .unwrap()
        .with_startup_timeout(Duration::from_secs(5));
    // Without the token, metadata is refused with a hint.
    let err = DaprStore::connect(base.clone()).await.unwrap_err();
    assert!(matches!(err, ConnectError::Metadata(_)), "{err:?}");
    assert!(err.to_string().contains("DAPR_API_TOKEN"), "{err}");
    // With it, everything works, and the token is not in any Debug output.
    let config = base.with_api_token("s3cret-test-token");
    let store = DaprStore::connect(config.clone()).await.unwrap();
    assert!(store.capabilities().ttl);
    store
        .put("token-check", b"1".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();
    let shown = format!("{config:?} {store:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    // An unknown component is named, with what is loaded.
    let err = DaprStore::connect(
        DaprConfig::new(&sidecar.endpoint(), "nope")
            .unwrap()
            .with_api_token("s3cret-test-token"),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains(daprd::MEMORY_STORE),
        "{msg}"
    );
    // Nothing listening: a bounded, explained failure.
    let port = heartbeat_conformance::support::free_port().unwrap();
    let err = DaprStore::connect(
        DaprConfig::new(&format!("http://127.0.0.1:{port}"), "x")
            .unwrap()
            .with_startup_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::NotHealthy { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_map_stale_etags_to_conflicts() {
    use heartbeat_dapr::{SaveItem, TxOperation};
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    for component in COMPONENTS {
        let ns = namespace("tx");
        let store = store(sidecar, component).await;
        let client = store.client();
        let (x, y) = (format!("{ns}x"), format!("{ns}y"));
        client
            .transaction(&[
                TxOperation::Upsert(SaveItem {
                    key: &x,
                    json: "1",
                    etag: None,
                    first_write: false,
                    ttl_seconds: None,
                }),
                TxOperation::Upsert(SaveItem {
                    key: &y,
                    json: r#"{"a":1}"#,
                    etag: None,
                    first_write: false,
                    ttl_seconds: Some(60),
                }),
            ])
            .await
            .unwrap();
        assert_eq!(store.get(&x).await.unwrap().unwrap().value, b"1");
        assert_eq!(store.get(&y).await.unwrap().unwrap().value, br#"{"a":1}"#);
        let stale = client
            .transaction(&[TxOperation::Delete {
                key: &x,
                etag: Some("12345"),
            }])
            .await;
        assert!(
            matches!(&stale, Err(e) if e.is_conflict()),
            "{component}: {stale:?}"
        );
        assert!(store.get(&x).await.unwrap().is_some(), "{component}");
    }
}

/// Joins through separate clients (as separate processes would) do not share the
/// in-process batching of index changes: only compare-and-swap keeps every id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_through_separate_clients_all_land_in_the_index() {
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    for component in COMPONENTS {
        let ns = namespace("separate-joins");
        let ids: Vec<String> = (0..12).map(|i| format!("proc-{i:02}")).collect();
        let mut stores = Vec::new();
        for _ in &ids {
            stores.push(store(sidecar, component).await);
        }
        let joins = ids.iter().zip(&stores).map(|(id, store)| {
            let options = heartbeat_core::HeartbeatOptions::builder(id.parse().unwrap())
                .heartbeat_interval(Duration::from_millis(200))
                .discovery_interval(Duration::from_millis(200))
                .stale_threshold(Duration::from_secs(2))
                .store_timeout(Duration::from_secs(20))
                .keys(KeyLayout::new(&ns))
                .build()
                .unwrap();
            HeartbeatService::start(store.clone(), options)
        });
        let services: Vec<HeartbeatService> = futures::future::join_all(joins)
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("every join succeeds");
        let index = stores[0]
            .index_members(KeyLayout::new(&ns).index_key())
            .await
            .unwrap();
        assert_eq!(
            index,
            ids.iter().cloned().collect::<BTreeSet<_>>(),
            "{component}: lost ids"
        );
        for s in services {
            s.abort();
        }
    }
}

/// A key another Dapr client wrote with `first-write` carries a sticky field on the
/// Redis component that makes plain saves fail; our overwrite still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_succeeds_on_keys_written_with_first_write() {
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    for component in COMPONENTS {
        let key = format!("{}sticky", namespace("sticky"));
        let raw = Raw::new(sidecar, component);
        let status = raw
            .http
            .post(&raw.base)
            .json(&serde_json::json!([
                {"key": key, "value": {"by": "other"}, "options": {"concurrency": "first-write"}}
            ]))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 204);
        let store = store(sidecar, component).await;
        let v = store
            .put(&key, br#"{"by":"us"}"#.to_vec(), PutMode::Overwrite, None)
            .await
            .unwrap();
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.value, br#"{"by":"us"}"#, "{component}");
        assert_eq!(got.version, v, "{component}");
    }
}
