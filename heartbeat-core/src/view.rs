//! What one observer knows about the cluster: the [`MembershipView`].
//!
//! The view carries its own health. A view built from a failed or old discovery says so
//! ([`ViewHealth::Unhealthy`]), and nothing may treat an instance as dead because of such
//! a view: a replica cut off from the store must not take over the connections of
//! replicas that are alive (the seed's weakness 5).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::id::InstanceId;
use crate::record::Incarnation;

/// Whether the view can be trusted right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewHealth {
    /// No discovery has completed yet.
    Starting,
    /// The last discovery succeeded and is recent.
    Healthy,
    /// The last discovery failed, or succeeded too long ago.
    Unhealthy {
        /// Why, for logs and `/healthz`.
        reason: String,
        /// Since when (observer's monotonic clock).
        since: Instant,
    },
}

/// How an observer judges a live (not ended) peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Its record changed recently.
    Alive,
    /// Unchanged (or missing) for a while, not yet for the stale threshold.
    Suspected,
    /// Its record exists but does not parse; we cannot judge it, so it is never dead.
    Unreadable,
}

/// Why a life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// It said so (status `leaving`) or removed itself from the index.
    Graceful,
    /// Its record stopped changing for the stale threshold, or stayed missing.
    Expired,
    /// A new incarnation appeared under the same id: the process restarted.
    Superseded,
}

impl std::fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Graceful => "graceful",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
        })
    }
}

/// A peer whose life has not ended, as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub id: InstanceId,
    /// Its current incarnation (None for the .NET writer).
    pub incarnation: Option<Incarnation>,
    /// Where it can be reached.
    pub grpc_host_port: Option<String>,
    /// Its publish counter.
    pub sequence: Option<u64>,
    /// When it started, by its own clock.
    pub started_at: Option<DateTime<Utc>>,
    /// Its last `lastSeenAt`, by its own clock (a hint only).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Our judgement.
    pub liveness: Liveness,
    /// When (our monotonic clock) we last saw its record change.
    pub last_change: Instant,
}

/// A life that ended, kept for a while so that reclaimers can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedLife {
    /// The id.
    pub id: InstanceId,
    /// The incarnation that ended (None for the .NET writer).
    pub incarnation: Option<Incarnation>,
    /// Why.
    pub reason: LeaveReason,
    /// When we decided (our monotonic clock).
    pub at: Instant,
}

/// What the view says about the owner of some resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// That life is going on: never take its resources.
    Live,
    /// That life ended: its resources are orphans.
    Ended(LeaveReason),
    /// The observer has never seen this owner (it may be new, or long gone).
    Unknown,
}

/// One observer's picture of the cluster, published through a `watch` channel after
/// every discovery.
#[derive(Debug, Clone)]
pub struct MembershipView {
    /// Who observed.
    pub observer: InstanceId,
    /// The observer's incarnation.
    pub observer_incarnation: Incarnation,
    /// Whether the view can be trusted.
    pub health: ViewHealth,
    /// False when the observer does not publish heartbeats itself (interval 0): its
    /// peers cannot see it, so it must not act on what it sees.
    pub authoritative: bool,
    /// Whether the observer itself is at risk of being judged dead by its peers.
    pub self_at_risk: bool,
    /// When the last successful discovery completed (monotonic), if any.
    pub observed_at: Option<Instant>,
    /// Start of the current unbroken run of successful, timely discoveries (None while
    /// unhealthy). An observer that has watched for less than a stale threshold plus a
    /// discovery interval may not yet know every live owner: the reclaimer does not
    /// treat never-seen owners as gone before then.
    pub healthy_since: Option<Instant>,
    /// When the last successful discovery completed (wall clock), if any.
    pub observed_wall: Option<DateTime<Utc>>,
    /// Peers whose life has not ended (the observer included, once its record is seen).
    pub peers: BTreeMap<InstanceId, Peer>,
    /// Lives that ended recently, newest last.
    pub ended: Vec<EndedLife>,
    /// Ids under which two live processes seem to publish (an incarnation we saw
    /// superseded came back). No life of such an id counts as ended while it lasts.
    pub contested: BTreeSet<InstanceId>,
    /// The stale threshold the view was judged with.
    pub stale_threshold: Duration,
    /// The discovery interval of the observer.
    pub discovery_interval: Duration,
    /// How old the last discovery may be before the view is unhealthy.
    pub max_age: Duration,
}

impl MembershipView {
    /// An empty view in the [`ViewHealth::Starting`] state.
    pub fn starting(
        observer: InstanceId,
        observer_incarnation: Incarnation,
        stale_threshold: Duration,
        discovery_interval: Duration,
        max_age: Duration,
    ) -> Self {
        Self {
            observer,
            observer_incarnation,
            health: ViewHealth::Starting,
            authoritative: true,
            self_at_risk: false,
            observed_at: None,
            healthy_since: None,
            observed_wall: None,
            peers: BTreeMap::new(),
            ended: Vec::new(),
            contested: BTreeSet::new(),
            stale_threshold,
            discovery_interval,
            max_age,
        }
    }

    /// Whether decisions that take things away from others may be made on this view at
    /// `now`: healthy, authoritative, recent, and the observer not at risk.
    pub fn is_actionable(&self, now: Instant) -> Result<(), NotActionable> {
        match &self.health {
            ViewHealth::Starting => return Err(NotActionable::Starting),
            ViewHealth::Unhealthy { reason, .. } => {
                return Err(NotActionable::Unhealthy(reason.clone()));
            }
            ViewHealth::Healthy => {}
        }
        if !self.authoritative {
            return Err(NotActionable::NotAuthoritative);
        }
        if self.self_at_risk {
            return Err(NotActionable::SelfAtRisk);
        }
        match self.observed_at {
            Some(at) if now.saturating_duration_since(at) <= self.max_age => Ok(()),
            Some(at) => Err(NotActionable::Stale(now.saturating_duration_since(at))),
            None => Err(NotActionable::Starting),
        }
    }

    /// Ids of peers whose life goes on, in order.
    pub fn live_ids(&self) -> impl Iterator<Item = &InstanceId> {
        self.peers.keys()
    }

    /// Ids of live peers that can take over connections: every live peer except those
    /// whose record does not parse (never judged dead, but no known claimer either).
    pub fn claimer_ids(&self) -> impl Iterator<Item = &InstanceId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.liveness != Liveness::Unreadable)
            .map(|(id, _)| id)
    }

    /// What the view says about the life `incarnation` of `id` (None: any life of `id`,
    /// as for records written by the .NET system).
    pub fn owner_state(&self, id: &InstanceId, incarnation: Option<Incarnation>) -> OwnerState {
        if self.contested.contains(id) {
            return OwnerState::Live;
        }
        if let Some(peer) = self.peers.get(id) {
            return match (incarnation, peer.incarnation) {
                (Some(asked), Some(current)) if asked != current => {
                    // A different life than the current one: it ended, whether or not
                    // we saw it go.
                    OwnerState::Ended(
                        self.ended_reason(id, Some(asked))
                            .unwrap_or(LeaveReason::Superseded),
                    )
                }
                _ => OwnerState::Live,
            };
        }
        match self.ended_reason(id, incarnation) {
            Some(reason) => OwnerState::Ended(reason),
            None => OwnerState::Unknown,
        }
    }

    fn ended_reason(
        &self,
        id: &InstanceId,
        incarnation: Option<Incarnation>,
    ) -> Option<LeaveReason> {
        self.ended
            .iter()
            .rev()
            .find(|e| {
                &e.id == id
                    && (incarnation.is_none()
                        || e.incarnation.is_none()
                        || e.incarnation == incarnation)
            })
            .map(|e| e.reason)
    }
}

/// Why a view may not be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotActionable {
    /// No discovery has completed yet.
    #[error("no discovery has completed yet")]
    Starting,
    /// The last discovery failed.
    #[error("the view is unhealthy: {0}")]
    Unhealthy(String),
    /// The last successful discovery is too old.
    #[error("the view is {0:?} old, older than allowed")]
    Stale(Duration),
    /// The observer does not publish heartbeats.
    #[error(
        "this instance does not publish heartbeats (interval 0), so its view is not authoritative"
    )]
    NotAuthoritative,
    /// The observer may be judged dead by its peers.
    #[error("this instance is at risk: it could not publish its heartbeat recently")]
    SelfAtRisk,
}
