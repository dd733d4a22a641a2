//! A heartbeat store on Amazon DynamoDB, for deployments whose shared store is DynamoDB.
//!
//! [`DynamoStore`] implements [`heartbeat_core::Store`] on one table with a String
//! partition key `pk` (layout in [`item`]): compare-and-swap by conditional writes on a
//! random 64-bit version attribute, expiry by a precise millisecond attribute checked on
//! every read and condition (DynamoDB's own TTL only cleans up later), bulk reads by
//! `BatchGetItem`, and the instance index as a native string set with an atomic,
//! transactional prune. [`DynamoConnections`] keeps the reclaimer's connection records
//! on the same table and claims them by conditional write.
//!
//! ```no_run
//! use std::sync::Arc;
//! use heartbeat_dynamodb::{DynamoConfig, DynamoStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = DynamoConfig::from_url("dynamodb://heartbeat?region=eu-west-1")?;
//! heartbeat_dynamodb::init_store(&config).await?; // once: creates the table, enables TTL
//! let store = Arc::new(DynamoStore::connect(config).await?);
//! # let _ = store; Ok(()) }
//! ```
//!
//! Credentials come from the standard AWS chain (see [`DynamoConfig`]). Throttling,
//! 5xx answers and connection errors are retried by the SDK in its standard retry mode
//! (exponential backoff with jitter, bounded by [`DynamoConfig::max_attempts`]); writes
//! that collide with a DynamoDB transaction, and unprocessed keys of bulk reads, are
//! retried here, also bounded.
#![forbid(unsafe_code)]

pub mod config;
pub mod connections;
pub mod error;
pub mod item;
pub mod store;
pub mod table;

pub use config::{DynamoConfig, StaticCredentials};
pub use connections::DynamoConnections;
pub use error::DynamoError;
pub use store::DynamoStore;
pub use table::{TableSetup, create_table, init_store};

/// The SDK crate, re-exported so callers can name its types (e.g. to build a client).
pub use aws_sdk_dynamodb;
