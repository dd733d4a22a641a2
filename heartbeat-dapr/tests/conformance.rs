//! The conformance suite against a real daprd, on its in-memory and its Redis state
//! store components.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use heartbeat_conformance::support::{daprd, require};
use heartbeat_conformance::{DynStore, store_conformance};
use heartbeat_dapr::{DaprConfig, DaprStore};

async fn store_on(component: &str) -> Option<DynStore> {
    let sidecar = require("daprd", daprd::shared())?;
    let config = DaprConfig::new(&sidecar.endpoint(), component).expect("valid config");
    let store = DaprStore::connect(config).await.expect("connect to daprd");
    Some(Arc::new(store))
}

mod memory_component {
    use super::*;

    async fn memory_store() -> Option<DynStore> {
        store_on(daprd::MEMORY_STORE).await
    }

    store_conformance!(memory_store, #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);
}

mod redis_component {
    use super::*;

    async fn redis_store() -> Option<DynStore> {
        store_on(daprd::REDIS_STORE).await
    }

    store_conformance!(redis_store, #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);
}
