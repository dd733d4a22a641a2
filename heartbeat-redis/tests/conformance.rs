//! The conformance suite on a real standalone `redis-server` and on a real three-master
//! Redis Cluster, both started by the test support on loopback ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use heartbeat_conformance::support::{redis, require};
use heartbeat_conformance::{DynStore, store_conformance};
use heartbeat_redis::{RedisConfig, RedisStore};

async fn connect(what: &str, config: Result<RedisConfig, String>) -> Option<DynStore> {
    let config = require(what, config)?;
    let store = RedisStore::connect_with(config.call_timeout(Duration::from_secs(5)))
        .await
        .expect("connect to the test server");
    Some(Arc::new(store))
}

mod standalone {
    use super::*;

    async fn store() -> Option<DynStore> {
        let config = redis::shared()
            .and_then(|s| RedisConfig::from_url(&s.url()).map_err(|e| e.to_string()));
        connect("redis-server", config).await
    }

    store_conformance!(store, #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);
}

mod cluster {
    use super::*;

    async fn store() -> Option<DynStore> {
        let config = redis::shared_cluster()
            .and_then(|c| RedisConfig::from_url(&c.url()).map_err(|e| e.to_string()));
        connect("redis cluster (redis-server --cluster-enabled)", config).await
    }

    store_conformance!(store, #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);
}
