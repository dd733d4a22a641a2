//! An example WebSocket connection manager built on `heartbeat` and `reclaimer`, the way
//! the seed system (Virtufin.WebSocketManager) uses them: replicas own outbound
//! WebSocket subscriptions (records in the shared store, the seed's connection shape),
//! and when one dies the survivors take its subscriptions over, each exactly once.
//!
//! - [`manager`]: one instance (heartbeat service, reclaimer, ownership round, clean
//!   leave);
//! - [`socket`]: the outbound sockets;
//! - [`api`]: the HTTP API (add, list, remove subscriptions);
//! - [`upstream`]: the upstream feed used by the tests and the walkthrough, which
//!   counts sockets and gaps per subscription;
//! - [`backend`]: opening the store from a URL;
//! - [`client`]: a tiny HTTP client for tests and the bench;
//! - [`duration`]: durations on the command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod client;
pub mod duration;
pub mod manager;
pub mod socket;
pub mod startup;
pub mod upstream;
