//! The heartbeat store on Redis, standalone or Redis Cluster, through the `redis` crate
//! on tokio.
//!
//! Applications that keep their heartbeats (and their connection records) in Redis use
//! [`RedisStore`] as the `heartbeat_core::Store` of a `HeartbeatService`. It is wire
//! compatible with the seed system's layout: a heartbeat is a plain string holding the
//! camelCase JSON record at `websocketmanager/instances/<id>`, and the index is a
//! native Redis set at `websocketmanager/instances/_index`.
//!
//! - Connection from a URL: `redis://`, `rediss://` (TLS), user and password from the
//!   URL, `redis+cluster://host1:port1,host2:port2` or a list of seed nodes for Cluster
//!   ([`RedisConfig`]). Passwords never appear in logs, errors or `Debug` output.
//! - Automatic reconnection (the `ConnectionManager` for a standalone server, the
//!   async Cluster client for a Cluster) and a timeout on every call.
//! - One round trip per heartbeat, two per discovery whatever the number of
//!   instances, compare-and-swap by Lua scripts on a version token kept beside each
//!   value ([`layout`]), Cluster-safe: no command or script spans two hash slots.
//! - [`RedisConnections`]: the reclaimer's connection repository on the same
//!   connection (records at `websocket-<id>`, claims by compare-and-swap).
//!
//! ```no_run
//! use std::sync::Arc;
//! use heartbeat_core::{HeartbeatOptions, HeartbeatService};
//! use heartbeat_redis::RedisStore;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://:password@redis.internal:6379").await?;
//! let service = HeartbeatService::start(Arc::new(store), HeartbeatOptions::from_env()?).await?;
//! # service.leave().await?; Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod layout;
pub mod repository;
mod scripts;
pub mod slots;
pub mod store;

pub use client::{BACKEND, ConnectError};
pub use config::{ConfigError, RedisConfig};
pub use repository::RedisConnections;
pub use store::RedisStore;
