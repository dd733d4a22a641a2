//! The heartbeat protocol, written once: instance ids, heartbeat records, the key
//! layout, the [`Store`] trait every backend implements, the liveness rules and the
//! [`HeartbeatService`] that runs them.
//!
//! Used by every backend crate (which implement [`Store`]), by the `reclaimer` crate
//! (which reads [`MembershipView`]s) and by applications through the `heartbeat` facade.
//! It re-implements the heartbeat protocol of the .NET Virtufin.WebSocketManager, wire
//! compatible, without its weaknesses: the index changes only by compare-and-swap,
//! liveness is judged by change on the observer's own clock, restarts are new lives,
//! and a view that cannot be trusted says so.
#![forbid(unsafe_code)]

pub mod clock;
pub mod event;
pub mod id;
pub mod index;
pub mod keys;
pub mod liveness;
pub mod options;
pub mod record;
pub mod service;
pub mod store;
pub mod view;

pub use clock::{SystemClock, TokioClock, WallClock};
pub use event::MembershipEvent;
pub use id::{InstanceId, InstanceIdError};
pub use keys::KeyLayout;
pub use liveness::{LivenessConfig, LivenessTracker};
pub use options::{HeartbeatOptions, HeartbeatOptionsBuilder, OptionsError};
pub use record::{Incarnation, InstanceHeartbeat, InstanceStatus, RecordError};
pub use service::{HeartbeatService, HeartbeatServiceBuilder, ServiceError};
pub use store::{
    Capabilities, DeleteMode, PutMode, Store, StoreError, StoreResult, Version, Versioned,
};
pub use view::{
    EndedLife, LeaveReason, Liveness, MembershipView, NotActionable, OwnerState, Peer, ViewHealth,
};
