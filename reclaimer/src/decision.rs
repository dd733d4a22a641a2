//! The pure decision: given connection records and one observer's [`MembershipView`],
//! which records to keep, which to reclaim (and from whom), which to defer (and why).
//!
//! [`decide`] does no I/O, needs no async runtime, and takes time as an input, so it can
//! be driven step by step in tests and simulations and embedded alone. The driver
//! ([`crate::Reclaimer`]) is a thin shell around it.
//!
//! # The rules, in order
//! 1. **Self at risk**: if the view says this instance may be judged dead by its peers,
//!    the [`Brake::SelfAtRisk`] engages: own records are kept, everything else waits.
//! 2. **View not actionable** ([`MembershipView::is_actionable`]: no discovery yet, the
//!    last one failed or is too old, or this instance does not publish): own records
//!    are kept, everything else waits ([`DeferReason::View`]). A replica cut off from the
//!    store never takes the connections of replicas that are alive.
//! 3. **Own records** (owner = the observer, `ownerIncarnation` absent or the
//!    observer's own) are kept. A record stamped with the observer's id and *another*
//!    incarnation belongs to a previous life of this id: it is an orphan
//!    ([`ReclaimReason::Ended`] with [`LeaveReason::Superseded`]).
//! 4. **Live owner** ([`OwnerState::Live`]): kept. Suspected and unreadable peers are
//!    live: liveness is the heartbeat service's judgement, never second-guessed here.
//! 5. **Records written by the .NET system** (no `ownerIncarnation`) **whose owner id is
//!    live under an incarnation of ours**: the id may have restarted since the record
//!    was stamped, and the record cannot say which life it belongs to. Rule: if the
//!    record's latest stamp (`updatedAt`, else `createdAt`) is earlier than the live
//!    incarnation's `startedAt` minus the skew margin
//!    ([`ReclaimPolicy::skew_margin`]), it was stamped before the current life began and
//!    belongs to a previous one: orphan ([`ReclaimReason::PreviousLife`]). Otherwise it
//!    is kept. Both times are wall clocks of the same host in the common case (a pod
//!    restarting under its name), and the margin covers skew when they are not.
//! 6. **Ended life** ([`OwnerState::Ended`]): orphan, whatever the reason (graceful
//!    leave, expiry, or a restart under the same id).
//! 7. **Owner never seen** ([`OwnerState::Unknown`]): the owner may be new (not yet
//!    discovered) or long gone (ended before this observer started, or longer ago than
//!    the view keeps ended lives). If the record's latest stamp is younger than the
//!    stale threshold plus one discovery interval plus the skew margin, it waits
//!    ([`DeferReason::OwnerUnknownRecent`]); older, it is an orphan
//!    ([`ReclaimReason::OwnerLongGone`]): a live owner would have been discovered by then
//!    — provided this observer has been watching, with an unbroken run of healthy
//!    discoveries ([`MembershipView::healthy_since`](heartbeat_core::MembershipView)),
//!    for at least the stale threshold plus one discovery interval. Before that (just
//!    started, or just back from a store outage that may have cost the store its data)
//!    every never-seen owner waits ([`DeferReason::ObserverNotSettled`]): a record's age
//!    includes time during which this observer could not have seen its owner.
//! 8. **Brake** ([`crate::brake`]): if too many owners look dead at once, every orphan
//!    waits ([`DeferReason::Brake`]) and [`Decisions::brake`] says why.
//! 9. **One claimer per orphan** ([`crate::rendezvous`]): an orphan is reclaimed only by
//!    the instance that rendezvous hashing of its connection id over the live set
//!    (peers whose heartbeat record is unreadable excluded: they are never judged dead,
//!    but a garbage value is no claimer)
//!    designates; the others defer ([`DeferReason::NotDesignated`]).
//! 10. **Cap**: at most [`ReclaimPolicy::max_claims_per_sweep`] reclaims, in record
//!     order; the rest wait ([`DeferReason::ClaimCap`]).
//!
//! # Cost
//! One pass over the records with one hash-map lookup each (the owner's state is
//! computed once per distinct owner and incarnation), then, for orphans only, one
//! weight per live instance. No allocation per record: the result is one vector whose
//! entries borrow from the records.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use chrono::Utc;
//! use heartbeat_core::{Incarnation, InstanceId, MembershipView, ViewHealth};
//! use reclaimer::{decide, ConnectionRecord, Decision, Now, ReclaimPolicy, ReclaimReason};
//! use heartbeat_core::LeaveReason;
//!
//! let me: InstanceId = "pod-b".parse()?;
//! let mut view = MembershipView::starting(me.clone(), Incarnation::from_u64(2),
//!     Duration::from_secs(60), Duration::from_secs(30), Duration::from_secs(65));
//! view.health = ViewHealth::Healthy;
//! view.observed_at = Some(tokio::time::Instant::now());
//! view.peers.insert(me.clone(), heartbeat_core::Peer {
//!     id: me.clone(), incarnation: Some(Incarnation::from_u64(2)), grpc_host_port: None,
//!     sequence: Some(1), started_at: None, last_seen_at: None,
//!     liveness: heartbeat_core::Liveness::Alive, last_change: tokio::time::Instant::now() });
//! view.ended.push(heartbeat_core::EndedLife { id: "pod-a".parse()?, incarnation: Some(Incarnation::from_u64(1)),
//!     reason: LeaveReason::Expired, at: tokio::time::Instant::now() });
//!
//! let orphan = ConnectionRecord::new("c-1".parse()?, "wss://x.test", "pod-a".parse()?,
//!     Some(Incarnation::from_u64(1)), Utc::now());
//! let records = [orphan];
//! let decisions = decide(&records, &view, Now::new(tokio::time::Instant::now(), Utc::now()),
//!     &ReclaimPolicy::default());
//! match decisions.decisions[0] {
//!     Decision::Reclaim(o) => {
//!         assert_eq!(o.from.as_str(), "pod-a");
//!         assert_eq!(o.reason, ReclaimReason::Ended(LeaveReason::Expired));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, TimeDelta, Utc};
use heartbeat_core::{
    Incarnation, InstanceId, LeaveReason, MembershipView, NotActionable, OwnerState, WallClock,
};
use tokio::time::Instant;

use crate::brake::Brake;
use crate::connection::ConnectionRecord;
use crate::policy::ReclaimPolicy;
use crate::rendezvous::{Rendezvous, fmix64, key_hash};

/// The time of a decision, on both clocks: the observer's monotonic clock (to judge the
/// view's age) and its wall clock (to judge record timestamps, written by wall clocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time (tokio's, so paused time works in tests).
    pub instant: Instant,
    /// Wall-clock time.
    pub wall: DateTime<Utc>,
}

impl Now {
    /// A decision time from both readings.
    pub fn new(instant: Instant, wall: DateTime<Utc>) -> Self {
        Self { instant, wall }
    }

    /// Now, by tokio's clock and `clock`.
    pub fn from_clock(clock: &dyn WallClock) -> Self {
        Self {
            instant: Instant::now(),
            wall: clock.now(),
        }
    }
}

/// What to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Nothing: the record's owner is alive (or is us).
    Keep(KeepReason),
    /// Take it over: it is an orphan and this instance is its designated claimer.
    Reclaim(Orphan<'a>),
    /// Not now: look again at a later sweep.
    Defer(DeferReason),
}

/// Whom an orphan is taken from, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan<'a> {
    /// The owner named by the record (its life, if named, is the record's
    /// `owner_incarnation`).
    pub from: &'a InstanceId,
    /// Why it is an orphan.
    pub reason: ReclaimReason,
}

/// Why a record is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepReason {
    /// It is ours (this life's).
    Own,
    /// Its owner's life goes on.
    OwnerLive,
}

/// Why a record is an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReclaimReason {
    /// The owner's life ended (left, expired, or restarted with a new incarnation).
    Ended(LeaveReason),
    /// A .NET-written record (no `ownerIncarnation`) stamped before the owner's current
    /// life started: it belongs to a previous life (rule 5 of the module docs).
    PreviousLife,
    /// The owner was never seen and the record is older than a new owner could stay
    /// undiscovered: the owner is long gone.
    OwnerLongGone,
}

impl ReclaimReason {
    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ended(LeaveReason::Graceful) => "ended_graceful",
            Self::Ended(LeaveReason::Expired) => "ended_expired",
            Self::Ended(LeaveReason::Superseded) => "ended_superseded",
            Self::PreviousLife => "previous_life",
            Self::OwnerLongGone => "owner_long_gone",
        }
    }
}

/// Why a record waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeferReason {
    /// The view may not be acted on (see [`Decisions::not_actionable`] for details).
    View(ViewProblem),
    /// The owner was never seen and the record is recent: the owner may be a new
    /// instance that has not been discovered yet.
    OwnerUnknownRecent,
    /// The owner was never seen, and this observer has not yet watched (healthy and
    /// without a break) for a stale threshold plus a discovery interval: a live owner
    /// may simply not have been discovered yet.
    ObserverNotSettled,
    /// An orphan, but another survivor is its designated claimer (or this instance
    /// is not yet in its own view's live set, just after it started).
    NotDesignated,
    /// An orphan, but the brake is engaged (see [`Decisions::brake`]).
    Brake,
    /// An orphan designated to us, beyond the per-sweep cap.
    ClaimCap,
}

impl DeferReason {
    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::View(p) => p.label(),
            Self::OwnerUnknownRecent => "owner_unknown_recent",
            Self::ObserverNotSettled => "observer_not_settled",
            Self::NotDesignated => "not_designated",
            Self::Brake => "brake",
            Self::ClaimCap => "claim_cap",
        }
    }
}

/// Why the view may not be acted on, without the details (see [`NotActionable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewProblem {
    /// No discovery has completed yet.
    Starting,
    /// The last discovery failed.
    Unhealthy,
    /// The last successful discovery is too old.
    Stale,
    /// This instance does not publish heartbeats.
    NotAuthoritative,
    /// This instance may be judged dead by its peers.
    SelfAtRisk,
}

impl ViewProblem {
    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Starting => "view_starting",
            Self::Unhealthy => "view_unhealthy",
            Self::Stale => "view_stale",
            Self::NotAuthoritative => "view_not_authoritative",
            Self::SelfAtRisk => "self_at_risk",
        }
    }
}

impl From<&NotActionable> for ViewProblem {
    fn from(n: &NotActionable) -> Self {
        match n {
            NotActionable::Starting => Self::Starting,
            NotActionable::Unhealthy(_) => Self::Unhealthy,
            NotActionable::Stale(_) => Self::Stale,
            NotActionable::NotAuthoritative => Self::NotAuthoritative,
            NotActionable::SelfAtRisk => Self::SelfAtRisk,
        }
    }
}

/// Counts of one [`decide`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionSummary {
    /// Records decided.
    pub records: usize,
    /// Records kept.
    pub kept: usize,
    /// Records to reclaim now.
    pub reclaim: usize,
    /// Records deferred.
    pub deferred: usize,
    /// Orphans found (before the brake, designation and cap).
    pub orphans: usize,
    /// Owners that look dead (see [`crate::brake`]).
    pub dead_owners: usize,
    /// Owners seen: live instances plus other owners named by records.
    pub owners_seen: usize,
}

/// The result of [`decide`]: one [`Decision`] per record, in the records' order, plus
/// what applies to all of them.
#[derive(Debug, Clone)]
pub struct Decisions<'a> {
    /// `decisions[i]` is the decision for `records[i]`.
    pub decisions: Vec<Decision<'a>>,
    /// Why the view may not be acted on, if so (nothing was reclaimed).
    pub not_actionable: Option<NotActionable>,
    /// Why the brake engaged, if it did (nothing was reclaimed).
    pub brake: Option<Brake>,
    /// Counts.
    pub summary: DecisionSummary,
}

impl<'a> Decisions<'a> {
    /// The records to reclaim: (index into the records, the orphan).
    pub fn reclaims(&self) -> impl Iterator<Item = (usize, Orphan<'a>)> + '_ {
        self.decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d {
                Decision::Reclaim(o) => Some((i, *o)),
                _ => None,
            })
    }
}

/// Decides, for each record, keep, reclaim or defer (see the module docs for the
/// rules). Pure: no I/O, no runtime, time passed in.
pub fn decide<'a, R: AsRef<ConnectionRecord>>(
    records: &'a [R],
    view: &'a MembershipView,
    now: Now,
    policy: &ReclaimPolicy,
) -> Decisions<'a> {
    let me = &view.observer;
    let my_incarnation = view.observer_incarnation;
    let mut decisions = Vec::with_capacity(records.len());

    // Rules 1 and 2: nothing is taken on a view that cannot be trusted.
    let problem = if view.self_at_risk {
        Some(NotActionable::SelfAtRisk)
    } else {
        view.is_actionable(now.instant).err()
    };
    if let Some(not_actionable) = problem {
        let brake = (not_actionable == NotActionable::SelfAtRisk).then_some(Brake::SelfAtRisk);
        let wait = if brake.is_some() {
            DeferReason::Brake
        } else {
            DeferReason::View(ViewProblem::from(&not_actionable))
        };
        let mut kept = 0usize;
        for r in records {
            let r = r.as_ref();
            let own = &r.owner == me && r.owner_incarnation.is_none_or(|i| i == my_incarnation);
            decisions.push(if own {
                kept += 1;
                Decision::Keep(KeepReason::Own)
            } else {
                Decision::Defer(wait)
            });
        }
        let summary = DecisionSummary {
            records: records.len(),
            kept,
            deferred: records.len() - kept,
            ..DecisionSummary::default()
        };
        return Decisions {
            decisions,
            not_actionable: Some(not_actionable),
            brake,
            summary,
        };
    }

    // Rules 3 to 7, one pass, owner states computed once per (owner, incarnation).
    let skew = policy.skew_margin_for(view.stale_threshold);
    let skew = TimeDelta::from_std(skew).unwrap_or(TimeDelta::MAX);
    let window = TimeDelta::from_std(view.stale_threshold + view.discovery_interval)
        .unwrap_or(TimeDelta::MAX)
        .checked_add(&skew)
        .unwrap_or(TimeDelta::MAX);
    let young_after = now
        .wall
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let settled = view.healthy_since.is_some_and(|since| {
        now.instant.saturating_duration_since(since)
            >= view.stale_threshold + view.discovery_interval
    });
    let mut owners = OwnerTable::new(view, skew);
    let mut orphans = 0usize;
    let mut kept = 0usize;
    for r in records {
        let r: &'a ConnectionRecord = r.as_ref();
        let entry = owners.entry(&r.owner, r.owner_incarnation);
        let orphan = |reason| {
            Decision::Reclaim(Orphan {
                from: &r.owner,
                reason,
            })
        };
        let d = match entry.kind {
            Kind::Own => Decision::Keep(KeepReason::Own),
            Kind::Live => Decision::Keep(KeepReason::OwnerLive),
            Kind::OwnUnlessBefore(t) | Kind::LiveUnlessBefore(t) if r.stamped_at() < t => {
                orphan(ReclaimReason::PreviousLife)
            }
            Kind::OwnUnlessBefore(_) => Decision::Keep(KeepReason::Own),
            Kind::LiveUnlessBefore(_) => Decision::Keep(KeepReason::OwnerLive),
            Kind::Ended { reason, silent } => {
                if silent {
                    owners.mark_dead(entry.slot);
                }
                orphan(ReclaimReason::Ended(reason))
            }
            Kind::Unknown if !settled => Decision::Defer(DeferReason::ObserverNotSettled),
            Kind::Unknown if r.stamped_at() > young_after => {
                Decision::Defer(DeferReason::OwnerUnknownRecent)
            }
            Kind::Unknown => {
                owners.mark_dead(entry.slot);
                orphan(ReclaimReason::OwnerLongGone)
            }
        };
        match d {
            Decision::Keep(_) => kept += 1,
            Decision::Reclaim(_) => orphans += 1,
            Decision::Defer(_) => {}
        }
        decisions.push(d);
    }

    // Rule 8: the brake.
    let dead_owners = owners.dead_count;
    // Peers whose record does not parse are never judged dead (we cannot tell), but
    // they are not known to be claimers either: a garbage value under an indexed id
    // must not become a member that is designated orphans it will never claim, nor
    // dilute the brake.
    let owners_seen = view.claimer_ids().count() + owners.extra_owners;
    let brake = policy
        .brake
        .engages(dead_owners, owners_seen)
        .then(|| Brake::TooManyDead {
            dead_owners,
            owners_seen,
            max_dead_fraction: policy.brake.max_dead_fraction(),
        });

    // Rules 9 and 10: designation and cap.
    let mut claims = 0usize;
    if orphans > 0 {
        if brake.is_some() {
            for d in decisions.iter_mut() {
                if matches!(d, Decision::Reclaim(_)) {
                    *d = Decision::Defer(DeferReason::Brake);
                }
            }
        } else {
            let live = Rendezvous::new(view.claimer_ids());
            let mine = live.index_of(me);
            for (d, r) in decisions.iter_mut().zip(records) {
                if !matches!(d, Decision::Reclaim(_)) {
                    continue;
                }
                if policy.require_designation {
                    let designated = mine
                        .is_some_and(|me| live.is_designated(key_hash(r.as_ref().id.as_str()), me));
                    if !designated {
                        *d = Decision::Defer(DeferReason::NotDesignated);
                        continue;
                    }
                }
                if claims >= policy.max_claims_per_sweep {
                    *d = Decision::Defer(DeferReason::ClaimCap);
                    continue;
                }
                claims += 1;
            }
        }
    }

    let summary = DecisionSummary {
        records: records.len(),
        kept,
        reclaim: claims,
        deferred: records.len() - kept - claims,
        orphans,
        dead_owners,
        owners_seen,
    };
    Decisions {
        decisions,
        not_actionable: None,
        brake,
        summary,
    }
}

/// What the view says about one (owner, incarnation) named by records.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Ours, this life.
    Own,
    /// Ours, .NET-written: a previous life if stamped before this time.
    OwnUnlessBefore(DateTime<Utc>),
    /// A live owner.
    Live,
    /// A live owner of ours, .NET-written record: a previous life if stamped before.
    LiveUnlessBefore(DateTime<Utc>),
    /// An ended life; `silent`: inferred from silence and no life of the id is live.
    Ended { reason: LeaveReason, silent: bool },
    /// Never seen.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    /// Index of the owner id, for counting dead owners once.
    slot: u32,
}

/// Per-call cache of owner states, keyed by (owner id, incarnation).
struct OwnerTable<'a> {
    view: &'a MembershipView,
    skew: TimeDelta,
    entries: HashMap<(&'a str, Option<u64>), Entry, FastBuild>,
    slots: HashMap<&'a str, u32, FastBuild>,
    dead: Vec<bool>,
    dead_count: usize,
    /// Owners named by records that are not live peers.
    extra_owners: usize,
}

impl<'a> OwnerTable<'a> {
    fn new(view: &'a MembershipView, skew: TimeDelta) -> Self {
        Self {
            view,
            skew,
            entries: HashMap::default(),
            slots: HashMap::default(),
            dead: Vec::new(),
            dead_count: 0,
            extra_owners: 0,
        }
    }

    #[inline]
    fn entry(&mut self, owner: &'a InstanceId, incarnation: Option<Incarnation>) -> Entry {
        let key = (owner.as_str(), incarnation.map(Incarnation::as_u64));
        if let Some(e) = self.entries.get(&key) {
            return *e;
        }
        let e = Entry {
            kind: self.kind(owner, incarnation),
            slot: self.slot(owner),
        };
        self.entries.insert(key, e);
        e
    }

    fn slot(&mut self, owner: &'a InstanceId) -> u32 {
        if let Some(&s) = self.slots.get(owner.as_str()) {
            return s;
        }
        if !self.view.peers.contains_key(owner) {
            self.extra_owners += 1;
        }
        let s = u32::try_from(self.dead.len()).unwrap_or(u32::MAX);
        self.dead.push(false);
        self.slots.insert(owner.as_str(), s);
        s
    }

    fn mark_dead(&mut self, slot: u32) {
        if let Some(d) = self.dead.get_mut(slot as usize)
            && !*d
        {
            *d = true;
            self.dead_count += 1;
        }
    }

    fn before(&self, started_at: DateTime<Utc>) -> DateTime<Utc> {
        started_at
            .checked_sub_signed(self.skew)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn kind(&self, owner: &InstanceId, incarnation: Option<Incarnation>) -> Kind {
        let view = self.view;
        if owner == &view.observer {
            return match incarnation {
                Some(i) if i == view.observer_incarnation => Kind::Own,
                // Our id, another life: a previous life of ours, seen for certain.
                Some(_) => Kind::Ended {
                    reason: LeaveReason::Superseded,
                    silent: false,
                },
                None => match view.peers.get(owner).and_then(|p| p.started_at) {
                    Some(started) => Kind::OwnUnlessBefore(self.before(started)),
                    None => Kind::Own,
                },
            };
        }
        match view.owner_state(owner, incarnation) {
            OwnerState::Live => match (incarnation, view.peers.get(owner)) {
                (None, Some(peer)) if peer.incarnation.is_some() => match peer.started_at {
                    Some(started) => Kind::LiveUnlessBefore(self.before(started)),
                    None => Kind::Live,
                },
                _ => Kind::Live,
            },
            OwnerState::Ended(reason) => Kind::Ended {
                reason,
                silent: reason == LeaveReason::Expired && !view.peers.contains_key(owner),
            },
            OwnerState::Unknown => Kind::Unknown,
        }
    }
}

/// A fast, unkeyed hasher for the per-call owner table (never leaves the process, so
/// it need not be stable; the keys come from our own store, so flooding is not a
/// concern beyond what one sweep costs).
#[derive(Default)]
struct FastHasher(u64);

type FastBuild = BuildHasherDefault<FastHasher>;

impl FastHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn write_isize(&mut self, i: isize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_stays_small() {
        // One per record: 16 bytes keeps a million of them at 16 MB.
        assert!(
            size_of::<Decision<'static>>() <= 16,
            "{}",
            size_of::<Decision<'static>>()
        );
    }
}
