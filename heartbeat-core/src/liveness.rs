//! Who is alive: the pure decision logic, with time as an input.
//!
//! An observer remembers, on its **own monotonic clock**, when it last saw each peer's
//! record change (its `(incarnation, sequence, lastSeenAt)` fingerprint). A record that has
//! not changed for the stale threshold belongs to a dead writer; the writer's timestamp
//! is only a hint, used once, at the first sighting, and bounded by the skew tolerance.
//! So a host whose clock is minutes ahead or behind is judged exactly like any other
//! (the seed's weakness 2), and a restart under the same host name is a new life that
//! ends the old one at once (weakness 4).
//!
//! The tracker does no I/O: the service feeds it one [`Discovery`] at a time and acts on
//! the returned [`Outcome`]. Simulations can drive it step by step.
//!
//! Rules, in the order they are applied:
//! 1. After a gap in observation (failed or late discovery) every live peer gets a fresh
//!    threshold: time we could not see is no evidence of death. A record missing after
//!    the gap does not end its life before that fresh threshold either (the writer may
//!    still be reconnecting to a store that just came back).
//! 2. A new incarnation under a known id ends the previous life (`Superseded`).
//! 3. Status `leaving` ends the life (`Graceful`).
//! 4. A changed fingerprint means alive (and revives a life judged dead).
//! 5. A missing record ends the life once it has stayed missing for the missing grace
//!    (the stale threshold: a live writer re-publishes well within it after the store
//!    lost its data, even at the smallest threshold of two beats and with a slow store;
//!    a crashed writer is caught by rule 6 at the same time anyway, since its record's
//!    TTL is the threshold). It ends as `Graceful` if the id also left the index, else
//!    `Expired`.
//! 6. Unchanged for the stale threshold ends the life (`Expired`); for half of it, the
//!    peer is `Suspected`. Unreadable records are never judged dead.
//! 7. Index entries whose record stayed missing for the threshold are pruned; records of
//!    lives that expired and stayed unchanged for another threshold are deleted (on a
//!    version), for stores without TTL.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::event::MembershipEvent;
use crate::id::InstanceId;
use crate::options::HeartbeatOptions;
use crate::record::{Fingerprint, InstanceHeartbeat, InstanceStatus};
use crate::store::Version;
use crate::view::{EndedLife, LeaveReason, Liveness, Peer};

/// Most ended lives remembered at once; the oldest are forgotten first.
pub const MAX_ENDED_LIVES: usize = 100_000;

/// The thresholds the tracker judges with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Unchanged for this long means dead.
    pub stale_threshold: Duration,
    /// Unchanged for this long means suspected.
    pub suspect_after: Duration,
    /// Upper bound on the age a writer's own timestamp may give a first sighting.
    pub skew_tolerance: Duration,
    /// Missing for this long means the life ended.
    pub missing_grace: Duration,
    /// An observation later than this after the previous one is a gap (rule 1).
    pub max_gap: Duration,
    /// How long ended lives are remembered.
    pub ended_retention: Duration,
}

impl From<&HeartbeatOptions> for LivenessConfig {
    fn from(o: &HeartbeatOptions) -> Self {
        Self {
            stale_threshold: o.stale_threshold(),
            suspect_after: o.suspect_after(),
            skew_tolerance: o.skew_tolerance(),
            missing_grace: o.stale_threshold(),
            max_gap: o.max_view_age(),
            ended_retention: o.ended_retention(),
        }
    }
}

/// What one read of one key showed.
#[derive(Debug, Clone)]
pub enum Sighting {
    /// A record that parsed.
    Present {
        /// The record.
        record: InstanceHeartbeat,
        /// Its version.
        version: Version,
    },
    /// No record at the key.
    Missing,
    /// A value that is not a valid record.
    Unreadable {
        /// The raw bytes (compared to see whether they change).
        raw: Vec<u8>,
        /// Why it does not parse.
        error: String,
    },
}

/// One successful discovery: the index and a sighting per id (the index's ids and every
/// id the tracker still follows, see [`LivenessTracker::followed`]).
#[derive(Debug, Clone)]
pub struct Discovery {
    /// When it completed (observer's monotonic clock).
    pub at: Instant,
    /// The observer's wall clock at that time (for the first-sighting hint).
    pub wall_now: DateTime<Utc>,
    /// The ids in the index.
    pub index: BTreeSet<InstanceId>,
    /// What each key showed.
    pub sightings: BTreeMap<InstanceId, Sighting>,
}

/// What the service should do after a discovery.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events to broadcast, in order.
    pub events: Vec<MembershipEvent>,
    /// Index entries to prune (conditionally: only while their record is missing).
    pub prune: Vec<InstanceId>,
    /// Records of expired lives to delete, on the version seen.
    pub delete: Vec<(InstanceId, Version)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    Record(Fingerprint),
    Raw(u64),
}

#[derive(Debug, Clone)]
enum State {
    Live { suspected: bool },
    Ended { at: Instant, reason: LeaveReason },
}

#[derive(Debug, Clone)]
struct Tracked {
    peer: Peer,
    mark: Mark,
    state: State,
    missing_since: Option<Instant>,
    /// After a gap in observation, a missing record may not end the life before this:
    /// the writer gets a full threshold to reconnect and re-publish.
    protected_until: Option<Instant>,
    version: Option<Version>,
}

/// The liveness state machine of one observer.
#[derive(Debug)]
pub struct LivenessTracker {
    cfg: LivenessConfig,
    tracked: BTreeMap<InstanceId, Tracked>,
    /// Index entries without a record that we never saw alive: id -> missing since.
    unknown_missing: BTreeMap<InstanceId, Instant>,
    ended: VecDeque<EndedLife>,
    /// Ids under which two live processes publish (id -> contested until).
    contested: BTreeMap<InstanceId, Instant>,
    last_observation: Option<Instant>,
    interrupted: bool,
}

impl LivenessTracker {
    /// A tracker that has seen nothing yet.
    pub fn new(cfg: LivenessConfig) -> Self {
        Self {
            cfg,
            tracked: BTreeMap::new(),
            unknown_missing: BTreeMap::new(),
            ended: VecDeque::new(),
            contested: BTreeMap::new(),
            last_observation: None,
            interrupted: false,
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> &LivenessConfig {
        &self.cfg
    }

    /// Records that a discovery failed: the next successful one starts fresh clocks.
    pub fn mark_interrupted(&mut self) {
        self.interrupted = true;
    }

    /// Ids the next discovery must read besides the index: every id still tracked, so
    /// that a peer that vanished from the index (store data loss, graceful leave) is
    /// still seen.
    pub fn followed(&self) -> impl Iterator<Item = &InstanceId> {
        self.tracked.keys()
    }

    /// Peers whose life goes on.
    pub fn live_peers(&self) -> BTreeMap<InstanceId, Peer> {
        self.tracked
            .iter()
            .filter(|(_, t)| matches!(t.state, State::Live { .. }))
            .map(|(id, t)| (id.clone(), t.peer.clone()))
            .collect()
    }

    /// Ids under which two live processes seem to publish (a superseded incarnation
    /// came back), as of the last observation.
    pub fn contested(&self) -> BTreeSet<InstanceId> {
        self.contested.keys().cloned().collect()
    }

    /// Lives that ended recently, oldest first.
    pub fn ended_lives(&self) -> Vec<EndedLife> {
        self.ended.iter().cloned().collect()
    }

    /// Applies one discovery.
    pub fn observe(&mut self, d: Discovery) -> Outcome {
        let mut out = Outcome::default();
        self.rebaseline_after_gap(d.at);
        for (id, sighting) in &d.sightings {
            self.apply(id, sighting, &d, &mut out);
        }
        let unseen: Vec<InstanceId> = self
            .tracked
            .keys()
            .filter(|id| !d.sightings.contains_key(*id))
            .cloned()
            .collect();
        for id in unseen {
            self.apply(&id, &Sighting::Missing, &d, &mut out);
        }
        self.judge(&d, &mut out);
        self.collect_prunes(&d, &mut out);
        self.forget_old(&d);
        self.last_observation = Some(d.at);
        out
    }

    fn rebaseline_after_gap(&mut self, at: Instant) {
        let gap = self
            .last_observation
            .is_some_and(|last| at.saturating_duration_since(last) > self.cfg.max_gap);
        if !(gap || self.interrupted) {
            return;
        }
        self.interrupted = false;
        for t in self.tracked.values_mut() {
            if matches!(t.state, State::Live { .. }) {
                t.peer.last_change = at;
                t.protected_until = Some(at + self.cfg.stale_threshold);
                if t.missing_since.is_some() {
                    t.missing_since = Some(at);
                }
            }
        }
        for since in self.unknown_missing.values_mut() {
            *since = at;
        }
    }

    fn apply(&mut self, id: &InstanceId, sighting: &Sighting, d: &Discovery, out: &mut Outcome) {
        match sighting {
            Sighting::Missing => {
                if let Some(t) = self.tracked.get_mut(id) {
                    t.missing_since.get_or_insert(d.at);
                    t.version = None;
                } else if d.index.contains(id) {
                    self.unknown_missing.entry(id.clone()).or_insert(d.at);
                }
            }
            Sighting::Present { record, version } if record.instance_id != *id => {
                let error = format!("record names instance {:?}", record.instance_id.as_str());
                let raw = format!("{record:?}").into_bytes();
                let _ = version;
                self.apply_unreadable(id, &raw, &error, d, out);
            }
            Sighting::Present { record, version } => self.apply_record(id, record, version, d, out),
            Sighting::Unreadable { raw, error } => self.apply_unreadable(id, raw, error, d, out),
        }
    }

    fn apply_record(
        &mut self,
        id: &InstanceId,
        record: &InstanceHeartbeat,
        version: &Version,
        d: &Discovery,
        out: &mut Outcome,
    ) {
        self.unknown_missing.remove(id);
        let mark = Mark::Record(record.fingerprint());
        let leaving = record.status == InstanceStatus::Leaving;
        let Some(t) = self.tracked.get_mut(id) else {
            self.first_sighting(id, record, version, d, out);
            return;
        };
        t.missing_since = None;
        t.version = Some(version.clone());
        let new_life =
            matches!((record.incarnation, t.peer.incarnation), (Some(a), Some(b)) if a != b);
        if new_life
            && self.ended.iter().any(|e| {
                &e.id == id
                    && e.incarnation == record.incarnation
                    && e.reason == LeaveReason::Superseded
            })
        {
            // A life we saw superseded is publishing again: two live processes share
            // this id. Until that stops, no life of the id counts as ended.
            tracing::warn!(instance = %id, "two processes publish under this id (a superseded incarnation came back); none of its lives will be treated as ended while this lasts");
            self.contested
                .insert(id.clone(), d.at + self.cfg.stale_threshold * 2);
        }
        if new_life {
            if matches!(t.state, State::Live { .. }) {
                let old = t.peer.incarnation;
                Self::end(
                    &mut self.ended,
                    t,
                    id,
                    old,
                    LeaveReason::Superseded,
                    d.at,
                    out,
                );
            }
            self.tracked.remove(id);
            self.first_sighting(id, record, version, d, out);
            return;
        }
        let changed = t.mark != mark;
        t.mark = mark;
        fill_peer(&mut t.peer, record);
        if leaving {
            if matches!(t.state, State::Live { .. }) {
                let inc = t.peer.incarnation;
                Self::end(
                    &mut self.ended,
                    t,
                    id,
                    inc,
                    LeaveReason::Graceful,
                    d.at,
                    out,
                );
            }
            return;
        }
        if changed {
            t.peer.last_change = d.at;
            t.peer.liveness = Liveness::Alive;
            match t.state {
                State::Ended { .. } => {
                    t.state = State::Live { suspected: false };
                    out.events.push(joined(&t.peer));
                }
                State::Live { suspected: true } => {
                    t.state = State::Live { suspected: false };
                    out.events
                        .push(MembershipEvent::Recovered { id: id.clone() });
                }
                State::Live { suspected: false } => {}
            }
        }
    }

    fn first_sighting(
        &mut self,
        id: &InstanceId,
        record: &InstanceHeartbeat,
        version: &Version,
        d: &Discovery,
        out: &mut Outcome,
    ) {
        // The writer's own timestamp may age a first sighting, but never by more than the
        // skew tolerance: a skewed clock cannot make a live writer look dead.
        let claimed_age = (d.wall_now - record.last_seen_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let age = claimed_age.min(self.cfg.skew_tolerance);
        let last_change = d.at.checked_sub(age).unwrap_or(d.at);
        let mut peer = Peer {
            id: id.clone(),
            incarnation: None,
            grpc_host_port: None,
            sequence: None,
            started_at: None,
            last_seen_at: None,
            liveness: Liveness::Alive,
            last_change,
        };
        fill_peer(&mut peer, record);
        let mut t = Tracked {
            peer,
            mark: Mark::Record(record.fingerprint()),
            state: State::Live { suspected: false },
            missing_since: None,
            protected_until: None,
            version: Some(version.clone()),
        };
        if record.status == InstanceStatus::Leaving {
            // Already leaving when first seen: remember the ended life, announce nothing.
            t.state = State::Ended {
                at: d.at,
                reason: LeaveReason::Graceful,
            };
            push_ended(
                &mut self.ended,
                id,
                t.peer.incarnation,
                LeaveReason::Graceful,
                d.at,
            );
        } else {
            out.events.push(joined(&t.peer));
        }
        self.tracked.insert(id.clone(), t);
    }

    fn apply_unreadable(
        &mut self,
        id: &InstanceId,
        raw: &[u8],
        error: &str,
        d: &Discovery,
        out: &mut Outcome,
    ) {
        self.unknown_missing.remove(id);
        let mut h = DefaultHasher::new();
        raw.hash(&mut h);
        let mark = Mark::Raw(h.finish());
        let known = self.tracked.get(id).is_some_and(|t| t.mark == mark);
        if known {
            tracing::debug!(instance = %id, error, "heartbeat record is still unreadable");
        } else {
            tracing::warn!(instance = %id, error, "heartbeat record is unreadable; this instance will not be judged dead");
        }
        match self.tracked.get_mut(id) {
            Some(t) => {
                t.missing_since = None;
                if t.mark != mark {
                    t.mark = mark;
                    t.peer.last_change = d.at;
                }
                t.peer.liveness = Liveness::Unreadable;
                if matches!(t.state, State::Ended { .. }) {
                    t.state = State::Live { suspected: false };
                    out.events.push(joined(&t.peer));
                }
            }
            None => {
                let peer = Peer {
                    id: id.clone(),
                    incarnation: None,
                    grpc_host_port: None,
                    sequence: None,
                    started_at: None,
                    last_seen_at: None,
                    liveness: Liveness::Unreadable,
                    last_change: d.at,
                };
                out.events.push(joined(&peer));
                self.tracked.insert(
                    id.clone(),
                    Tracked {
                        peer,
                        mark,
                        state: State::Live { suspected: false },
                        missing_since: None,
                        protected_until: None,
                        version: None,
                    },
                );
            }
        }
    }

    fn judge(&mut self, d: &Discovery, out: &mut Outcome) {
        let cfg = self.cfg;
        for (id, t) in self.tracked.iter_mut() {
            let State::Live { suspected } = t.state else {
                continue;
            };
            let unchanged = d.at.saturating_duration_since(t.peer.last_change);
            if let Some(since) = t.missing_since {
                let missing_for = d.at.saturating_duration_since(since);
                let protected = t.protected_until.is_some_and(|until| d.at < until);
                if (missing_for >= cfg.missing_grace && !protected)
                    || unchanged >= cfg.stale_threshold
                {
                    let reason = if d.index.contains(id) {
                        LeaveReason::Expired
                    } else {
                        LeaveReason::Graceful
                    };
                    let inc = t.peer.incarnation;
                    Self::end(&mut self.ended, t, id, inc, reason, d.at, out);
                    continue;
                }
            } else if t.peer.liveness != Liveness::Unreadable && unchanged >= cfg.stale_threshold {
                let inc = t.peer.incarnation;
                Self::end(&mut self.ended, t, id, inc, LeaveReason::Expired, d.at, out);
                continue;
            }
            let suspicious = t.missing_since.is_some()
                || (t.peer.liveness != Liveness::Unreadable && unchanged >= cfg.suspect_after);
            if suspicious && !suspected {
                t.state = State::Live { suspected: true };
                if t.peer.liveness == Liveness::Alive {
                    t.peer.liveness = Liveness::Suspected;
                }
                out.events.push(MembershipEvent::Suspected {
                    id: id.clone(),
                    unchanged_for: unchanged,
                });
            }
        }
    }

    fn collect_prunes(&mut self, d: &Discovery, out: &mut Outcome) {
        let threshold = self.cfg.stale_threshold;
        for id in &d.index {
            let missing_since = match self.tracked.get(id) {
                Some(t) => t.missing_since,
                None => self.unknown_missing.get(id).copied(),
            };
            if missing_since.is_some_and(|s| d.at.saturating_duration_since(s) >= threshold) {
                out.prune.push(id.clone());
            }
        }
        for (id, t) in &self.tracked {
            if let (
                State::Ended {
                    at,
                    reason: LeaveReason::Expired,
                },
                Some(v),
            ) = (&t.state, &t.version)
                && d.at.saturating_duration_since(*at) >= threshold
            {
                out.delete.push((id.clone(), v.clone()));
            }
        }
    }

    fn forget_old(&mut self, d: &Discovery) {
        let keep = self.cfg.ended_retention;
        while self.ended.front().is_some_and(|e| {
            d.at.saturating_duration_since(e.at) > keep || self.ended.len() > MAX_ENDED_LIVES
        }) {
            self.ended.pop_front();
        }
        self.tracked.retain(|id, t| match t.state {
            State::Ended { at, .. } => {
                d.at.saturating_duration_since(at) <= keep || d.index.contains(id)
            }
            State::Live { .. } => true,
        });
        self.unknown_missing.retain(|id, _| d.index.contains(id));
        self.contested.retain(|_, until| d.at < *until);
    }

    fn end(
        ended: &mut VecDeque<EndedLife>,
        t: &mut Tracked,
        id: &InstanceId,
        incarnation: Option<crate::record::Incarnation>,
        reason: LeaveReason,
        at: Instant,
        out: &mut Outcome,
    ) {
        t.state = State::Ended { at, reason };
        push_ended(ended, id, incarnation, reason, at);
        out.events.push(MembershipEvent::Left {
            id: id.clone(),
            incarnation,
            reason,
        });
    }
}

fn push_ended(
    ended: &mut VecDeque<EndedLife>,
    id: &InstanceId,
    incarnation: Option<crate::record::Incarnation>,
    reason: LeaveReason,
    at: Instant,
) {
    ended.push_back(EndedLife {
        id: id.clone(),
        incarnation,
        reason,
        at,
    });
}

fn fill_peer(peer: &mut Peer, record: &InstanceHeartbeat) {
    peer.incarnation = record.incarnation;
    peer.grpc_host_port.clone_from(&record.grpc_host_port);
    peer.sequence = record.sequence;
    peer.started_at = record.started_at;
    peer.last_seen_at = Some(record.last_seen_at);
}

fn joined(peer: &Peer) -> MembershipEvent {
    MembershipEvent::Joined {
        id: peer.id.clone(),
        incarnation: peer.incarnation,
        grpc_host_port: peer.grpc_host_port.clone(),
    }
}
