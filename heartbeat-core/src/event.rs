//! Membership events, broadcast to subscribers as they are observed.

use std::time::Duration;

use crate::id::InstanceId;
use crate::record::Incarnation;
use crate::view::LeaveReason;

/// Something an observer noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A life was seen for the first time (or a dead one changed again).
    Joined {
        /// The instance.
        id: InstanceId,
        /// Its incarnation.
        incarnation: Option<Incarnation>,
        /// Where it can be reached.
        grpc_host_port: Option<String>,
    },
    /// A life ended.
    Left {
        /// The instance.
        id: InstanceId,
        /// The incarnation that ended.
        incarnation: Option<Incarnation>,
        /// Why.
        reason: LeaveReason,
    },
    /// A peer's record has not changed for a while.
    Suspected {
        /// The instance.
        id: InstanceId,
        /// For how long it was unchanged (or missing).
        unchanged_for: Duration,
    },
    /// A suspected peer's record changed again.
    Recovered {
        /// The instance.
        id: InstanceId,
    },
    /// This instance has not published for long enough that peers may judge it dead:
    /// stop serving what only a live owner may serve.
    SelfAtRisk {
        /// Time since the last successful publish.
        since_last_publish: Duration,
    },
    /// This instance published again after being at risk.
    SelfRecovered,
    /// Another process publishes under this instance's id with another incarnation.
    IdConflict {
        /// The other incarnation.
        other: Option<Incarnation>,
    },
    /// Discovery failed or is late: nobody will be judged dead until it recovers.
    ViewUnhealthy {
        /// Why.
        reason: String,
    },
    /// Discovery works again.
    ViewHealthy,
}

impl MembershipEvent {
    /// A short, stable name of the event's kind, for metrics labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Joined { .. } => "joined",
            Self::Left { .. } => "left",
            Self::Suspected { .. } => "suspected",
            Self::Recovered { .. } => "recovered",
            Self::SelfAtRisk { .. } => "self_at_risk",
            Self::SelfRecovered => "self_recovered",
            Self::IdConflict { .. } => "id_conflict",
            Self::ViewUnhealthy { .. } => "view_unhealthy",
            Self::ViewHealthy => "view_healthy",
        }
    }
}
