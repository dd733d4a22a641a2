//! The `heartbeat` facade: one dependency for applications, with backends chosen by
//! cargo feature (`memory`, the default; `redis`, `dapr` and `dynamodb`), store URLs
//! ([`connect()`]), orphan reclamation ([`reclaimer`]), and the `heartbeat` binary
//! (agent, operator commands, demo).
//!
//! Everything of the protocol is re-exported from `heartbeat-core`:
//!
//! ```
//! use heartbeat::{HeartbeatOptions, InstanceId};
//! let options = HeartbeatOptions::builder(InstanceId::new("pod-1")?).build()?;
//! assert!(options.publishing());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A store from a URL, and a service on it:
//!
//! ```
//! use std::time::Duration;
//! use heartbeat::{HeartbeatOptions, HeartbeatService, InstanceId};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let connection = heartbeat::connect("memory://").await?;
//! let options = HeartbeatOptions::builder(InstanceId::new("pod-1")?)
//!     .heartbeat_interval(Duration::from_secs(1))
//!     .stale_threshold(Duration::from_secs(5))
//!     .build()?;
//! let service = HeartbeatService::start(connection.store.clone(), options).await?;
//! service.leave().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub use heartbeat_core::*;

/// Orphan reclamation: decisions, the claim protocol, the driver (crate `reclaimer`).
pub use reclaimer;

/// The in-process store (feature `memory`).
#[cfg(feature = "memory")]
pub use heartbeat_memory as memory;

/// The Redis store, standalone and Cluster (feature `redis`).
#[cfg(feature = "redis")]
pub use heartbeat_redis as redis;

/// The Dapr sidecar state store (feature `dapr`).
#[cfg(feature = "dapr")]
pub use heartbeat_dapr as dapr;

/// The DynamoDB store (feature `dynamodb`).
#[cfg(feature = "dynamodb")]
pub use heartbeat_dynamodb as dynamodb;

pub mod connect;
#[cfg(feature = "memory")]
pub mod demo;
pub mod store_url;

pub use connect::{ConnectError, ConnectOptions, Connection, connect, connect_url, connect_with};
pub use store_url::{Backend, StoreUrl, StoreUrlError};
