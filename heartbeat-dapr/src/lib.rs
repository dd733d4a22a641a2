//! The heartbeat store and the connection repository on the Dapr state API v1.0, over
//! HTTP through the sidecar: the backend for deployments where the seed (.NET) system
//! already talks to its store through Dapr, interoperating with what it writes.
//!
//! - [`DaprConfig`]: where the sidecar is (`DAPR_HTTP_ENDPOINT`, else `DAPR_HTTP_PORT`
//!   on 127.0.0.1, default 3500), which state store (default `statestore`), the
//!   `DAPR_API_TOKEN` (sent as `dapr-api-token`, never logged or printed), or all of it
//!   from a `dapr://host:port/<store>` URL.
//! - [`DaprStore::connect`]: waits for `/v1.0/healthz`, reads `/v1.0/metadata`, refuses a
//!   component without ETag support (the index needs compare-and-swap), and without
//!   TTL support falls back to liveness-only expiry (`capabilities().ttl == false`).
//! - [`DaprStore`] implements [`heartbeat_core::Store`]; see [`store`] for how versions,
//!   creates, updates and conflicts map to the component's ETags (strict components and
//!   the Redis component differ), and [`value`] for how bytes are stored
//!   (JSON as JSON, other bytes as marked text).
//! - [`DaprConnections`] implements [`reclaimer::ConnectionRepository`] on the seed's
//!   layout (`websocket-<id>` records, the `websocket-index` set).
//! - [`DaprClient`]: the wire calls (get, bulk get, save, delete, transaction).
//!
//! # Residual limitations
//! - Reads return JSON values re-serialized compactly with object keys sorted: daprd
//!   itself re-serializes every value (key order, number format, escaping), so bytes
//!   come back identical only for values whose keys were sorted or that are stored as
//!   marked text (see [`value`]).
//! - On the Redis component (`state.redis`): ETags are per-key counters that restart
//!   after a delete, so a key deleted and re-created with the **same value** after the
//!   same number of writes has the same version as before (ABA, only on identical
//!   content: versions carry a fingerprint of the value); an `Update` that races with a
//!   delete of the same key within the millisecond between our check and our save
//!   re-creates the key until we notice and delete it again (the update then reports a
//!   conflict); a conditional delete that races with another delete succeeds. The
//!   reclaimer's `versions_are_unique_across_recreate` check (byte-identical re-creates)
//!   therefore does not hold on Redis and is left out of its run there.
//! - Every write is followed by a read to learn the new ETag (daprd does not return
//!   it): two round trips per write, three or four for a compare-and-swap on Redis.
//!   Index changes skip the read-back, and concurrent index changes made through one
//!   [`DaprStore`] are written together in one compare-and-swap (group commit), so a
//!   burst of joins in one process does not turn into rounds of conflicts.
//! - The index is never deleted by the protocol; on Redis a compare-and-swap of an index
//!   deleted by someone else in the meantime re-creates it.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod connections;
pub mod error;
mod index;
pub mod store;
pub mod value;

pub use client::{Component, DaprClient, DaprError, Metadata, RawState, SaveItem, TxOperation};
pub use config::{ApiToken, ConfigError, DEFAULT_STORE, DaprConfig};
pub use connections::DaprConnections;
pub use store::{ConnectError, DaprStore, EtagSemantics};
