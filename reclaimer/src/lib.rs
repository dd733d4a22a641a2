//! Orphan reclamation for the heartbeat protocol: decides which connection records a
//! dead instance left behind, and takes each one over exactly once. Embedded by the
//! replicas of a service (the WebSocket connection manager, the `heartbeat` binary's
//! demo) next to a `heartbeat_core::HeartbeatService`; it depends on nothing heavier
//! than `heartbeat-core`'s plain types, so any backend can sit behind it.
//!
//! # How it fits together
//! - [`ConnectionRecord`] ([`connection`]): the seed system's connection record
//!   (`websocket-<id>`), read leniently, rewritten without losing fields we do not know.
//! - [`decide`] ([`decision`]): the pure decision, keep / reclaim (from whom) / defer
//!   (why), on one observer's [`MembershipView`](heartbeat_core::MembershipView). No I/O,
//!   no runtime, time as an input.
//! - [`rendezvous`]: one designated claimer per orphan, by a hash fixed forever.
//! - [`brake`]: stop and report when too many owners look dead at once, or when this
//!   instance is itself at risk.
//! - [`ConnectionRepository`] ([`repository`]): where records live; claims are a
//!   compare-and-swap on the record's version, so two claimers can never both win.
//!   [`MemoryConnections`] is the in-process implementation; [`conformance`] holds the
//!   contract checks every implementation runs.
//! - [`Reclaimer`] ([`driver`]): periodic sweeps, an immediate sweep on a departure,
//!   lazy [`Reclaimer::reclaim_on_access`], and a stream of the connections won;
//!   [`report`] holds what it reports ([`SweepReport`], [`WonConnection`],
//!   [`ReclaimEvent`], ...).
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use heartbeat_core::{HeartbeatOptions, HeartbeatService, InstanceId, Store};
//! use heartbeat_memory::MemoryStore;
//! use reclaimer::{ConnectionRecord, ConnectionRepository, MemoryConnections, ReclaimPolicy, Reclaimer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let repo = Arc::new(MemoryConnections::new());
//! let options = |id: &str| {
//!     HeartbeatOptions::builder(InstanceId::new(id).unwrap())
//!         .heartbeat_interval(Duration::from_millis(100))
//!         .discovery_interval(Duration::from_millis(100))
//!         .stale_threshold(Duration::from_secs(1))
//!         .build()
//! };
//! let doomed = HeartbeatService::start(store.clone(), options("pod-a")?).await?;
//! let me = HeartbeatService::start(store.clone(), options("pod-b")?).await?;
//!
//! // pod-a owns a connection, then leaves.
//! let record = ConnectionRecord::new("c-1".parse()?, "wss://feed.example.test",
//!     doomed.instance_id().clone(), Some(doomed.incarnation()), chrono::Utc::now());
//! repo.create(&record).await?;
//! me.discover_now().await; // pod-b sees pod-a alive,
//! doomed.leave().await?;
//! me.discover_now().await; // then gone.
//!
//! // pod-b, the only survivor, takes it over.
//! let reclaimer = Reclaimer::for_service(repo.clone(), &me, ReclaimPolicy::default());
//! let report = reclaimer.sweep().await?;
//! assert_eq!(report.won.len(), 1);
//! assert_eq!(report.won[0].record.record.owner.as_str(), "pod-b");
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
//! #     .block_on(demo()).unwrap();
//! ```
#![forbid(unsafe_code)]

pub mod brake;
pub mod conformance;
pub mod connection;
pub mod decision;
pub mod driver;
pub mod policy;
pub mod rendezvous;
pub mod report;
pub mod repository;

pub use brake::{Brake, BrakePolicy, BrakePolicyError};
pub use connection::{
    ConnectionId, ConnectionIdError, ConnectionRecord, ConnectionRecordError, ConnectionStatus,
    StoredConnection,
};
pub use decision::{
    Decision, DecisionSummary, Decisions, DeferReason, KeepReason, Now, Orphan, ReclaimReason,
    ViewProblem, decide,
};
pub use driver::{Reclaimer, ReclaimerBuilder, ReclaimerHandle, WonConnections};
pub use policy::ReclaimPolicy;
pub use report::{
    AccessOutcome, ReclaimError, ReclaimEvent, SweepReport, SweepTrigger, WonConnection,
};
pub use repository::{
    Claim, ClaimOutcome, ConnectionRepository, InvalidRecord, MemoryConnections, RepositoryError,
    RepositoryResult, ScanCursor, ScanPage,
};
