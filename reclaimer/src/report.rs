//! What the driver reports: the outcome of a sweep and of an on-access reclaim, the
//! connections won, the events broadcast, and errors.

use heartbeat_core::{Incarnation, InstanceId, NotActionable};

use crate::brake::Brake;
use crate::connection::{ConnectionId, StoredConnection};
use crate::decision::{DecisionSummary, DeferReason, KeepReason, ReclaimReason};
use crate::repository::RepositoryError;

/// Errors of a sweep or an on-access reclaim.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    /// The repository failed (scan or read); nothing was decided. Sweeps are retried at
    /// the next interval.
    #[error("reclaim could not read connection records: {0}")]
    Repository(#[from] RepositoryError),
}

/// What started a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SweepTrigger {
    /// The periodic timer.
    Periodic,
    /// The view reported a departure (a live peer gone, or a new ended life).
    Departure,
    /// The view became actionable (first discovery, or recovery).
    ViewActionable,
    /// A caller asked ([`Reclaimer::sweep`](crate::Reclaimer::sweep), [`ReclaimerHandle::sweep_now`](crate::ReclaimerHandle::sweep_now)).
    Manual,
    /// [`Reclaimer::reclaim_on_access`](crate::Reclaimer::reclaim_on_access).
    Access,
}

impl SweepTrigger {
    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Periodic => "periodic",
            Self::Departure => "departure",
            Self::ViewActionable => "view_actionable",
            Self::Manual => "manual",
            Self::Access => "access",
        }
    }
}

/// A connection this instance won: re-establish it.
#[derive(Debug, Clone, PartialEq)]
pub struct WonConnection {
    /// The record as written by the claim, with its new version.
    pub record: StoredConnection,
    /// The owner it was taken from.
    pub from: InstanceId,
    /// The owner's life it was taken from (None: a .NET-written record).
    pub from_incarnation: Option<Incarnation>,
    /// Why it was an orphan.
    pub reason: ReclaimReason,
    /// What started the sweep that won it.
    pub trigger: SweepTrigger,
}

/// What one sweep saw and did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Records scanned (valid ones, duplicates removed).
    pub scanned: usize,
    /// Values that did not parse (logged with their keys, then skipped).
    pub invalid: usize,
    /// Counts of the decision.
    pub summary: DecisionSummary,
    /// Why the view could not be acted on, if so (nothing was claimed).
    pub not_actionable: Option<NotActionable>,
    /// Why the brake engaged, if it did (nothing was claimed).
    pub brake: Option<Brake>,
    /// Connections won, in claim order.
    pub won: Vec<WonConnection>,
    /// Claims lost to another writer (compare-and-swap conflicts).
    pub conflicts: usize,
    /// Claims not attempted because the latest view says the owner lives again.
    pub skipped: usize,
    /// The claim loop stopped early because the view stopped being actionable.
    pub stopped_by_view: Option<NotActionable>,
    /// The claim loop stopped early on this repository error (a claim's outcome may be
    /// unknown; it is re-checked at the next sweep).
    pub claim_error: Option<RepositoryError>,
}

/// What [`Reclaimer::reclaim_on_access`](crate::Reclaimer::reclaim_on_access) did.
// `Won` is the common, useful case: not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AccessOutcome {
    /// We took it over: re-establish it.
    Won(WonConnection),
    /// Nothing to do: it is ours, or its owner lives.
    Kept(KeepReason),
    /// Not now (the view cannot be trusted, the brake is engaged, the owner may be new).
    Deferred(DeferReason),
    /// Somebody else changed it first (another claimer won).
    Conflict,
    /// There is no such record.
    NotFound,
}

impl AccessOutcome {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Won(_) => "won",
            Self::Kept(_) => "kept",
            Self::Deferred(_) => "deferred",
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
        }
    }
}

/// Something the reclaimer did or refused to do, broadcast to subscribers
/// ([`Reclaimer::events`](crate::Reclaimer::events)).
#[derive(Debug, Clone, PartialEq)]
pub enum ReclaimEvent {
    /// A sweep ran to the end of its claims.
    SweepFinished {
        /// What started it.
        trigger: SweepTrigger,
        /// Counts of the decision.
        summary: DecisionSummary,
        /// Connections won.
        won: usize,
        /// Claims lost.
        conflicts: usize,
    },
    /// A sweep did nothing because the view cannot be trusted.
    SweepSkipped {
        /// What started it.
        trigger: SweepTrigger,
        /// Why.
        reason: NotActionable,
    },
    /// The brake engaged: nothing is reclaimed until it releases.
    Braked(Brake),
    /// The brake released (a sweep found no reason to brake any more).
    BrakeReleased,
    /// A connection was won.
    Claimed {
        /// The connection.
        id: ConnectionId,
        /// Taken from.
        from: InstanceId,
        /// Why it was an orphan.
        reason: ReclaimReason,
    },
    /// A claim lost: the record changed since it was read.
    Conflict {
        /// The connection.
        id: ConnectionId,
    },
}
