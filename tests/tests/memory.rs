//! The conformance suite on the in-memory store, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use heartbeat_conformance::{DynStore, store_conformance};
use heartbeat_memory::MemoryStore;

async fn memory_store() -> Option<DynStore> {
    Some(Arc::new(MemoryStore::new()))
}

store_conformance!(memory_store, #[tokio::test(start_paused = true)]);
