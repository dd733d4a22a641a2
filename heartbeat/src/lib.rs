//! The `heartbeat` facade: one dependency for applications, with backends chosen by
//! cargo feature (`memory`, the default; `redis`, `dapr` and `dynamodb` as they land),
//! and the `heartbeat` binary (demo, agent, operator commands).
//!
//! Everything of the protocol is re-exported from `heartbeat-core`:
//!
//! ```
//! use heartbeat::{HeartbeatOptions, InstanceId};
//! let options = HeartbeatOptions::builder(InstanceId::new("pod-1")?).build()?;
//! assert!(options.publishing());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub use heartbeat_core::*;

/// The in-process store (feature `memory`).
#[cfg(feature = "memory")]
pub use heartbeat_memory as memory;

pub mod demo;
