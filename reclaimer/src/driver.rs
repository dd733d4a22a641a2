//! The runtime shell around [`decide`]: sweeps, lazy reclaim on access, and the stream
//! of connections this instance won.
//!
//! A [`Reclaimer`] reads the current [`MembershipView`] from a `watch` channel (the
//! [`HeartbeatService::view`] one, or any other, so it can be tested without a service),
//! scans the [`ConnectionRepository`], decides, and claims each orphan designated to it
//! by compare-and-swap. It can be used three ways:
//!
//! - [`Reclaimer::sweep`]: one sweep now, returning a [`SweepReport`] with the
//!   connections won (the caller re-establishes them).
//! - [`Reclaimer::spawn`]: a background task sweeping every
//!   [`ReclaimPolicy::sweep_interval`], at once when the view reports a departure (a
//!   live peer gone, a new ended life) or becomes actionable, and when asked
//!   ([`ReclaimerHandle::sweep_now`]); each connection won is sent to the returned
//!   [`WonConnections`] receiver.
//! - [`Reclaimer::reclaim_on_access`]: lazy reclaim of one record, when a request
//!   touches it. The accessing instance claims it whether or not rendezvous hashing
//!   designates it (it has the request in hand); the compare-and-swap still allows one
//!   winner only.
//!
//! Every repository call is bounded by [`ReclaimPolicy::operation_timeout`]. A claim
//! whose outcome is unknown (timeout, transport error) is re-checked at the next sweep:
//! if the write did land, the connection is delivered then, so a won connection is
//! never silently lost.
//!
//! Observability: `tracing` events for sweeps, claims, conflicts and brakes; `metrics`
//! counters `reclaim_sweeps_total{trigger}`, `reclaim_sweeps_skipped_total{reason}`,
//! `reclaim_claims_total{result}` (won, conflict, error, skipped),
//! `reclaim_conflicts_total`, `reclaim_brakes_total{reason}`,
//! `reclaim_invalid_records_total`, `reclaim_on_access_total{outcome}`, gauges
//! `reclaim_orphans` and `reclaim_brake_engaged`; and a broadcast of [`ReclaimEvent`]s.
//!
//! ```
//! use std::sync::Arc;
//! use heartbeat_core::{HeartbeatService};
//! use reclaimer::{MemoryConnections, ReclaimPolicy, Reclaimer};
//! # async fn demo(service: &HeartbeatService) {
//! let repo = Arc::new(MemoryConnections::new());
//! let reclaimer = Reclaimer::for_service(repo, service, ReclaimPolicy::default());
//! let (handle, mut won) = reclaimer.spawn();
//! while let Some(connection) = won.recv().await {
//!     // Re-establish the upstream socket of `connection.record.record.url`.
//!     println!("took over {} from {}", connection.record.record.id, connection.from);
//! }
//! handle.stop().await;
//! # }
//! ```
//!
//! [`HeartbeatService::view`]: heartbeat_core::HeartbeatService::view

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use heartbeat_core::{
    HeartbeatService, Incarnation, InstanceId, MembershipView, NotActionable, OwnerState,
    SystemClock, WallClock,
};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::brake::Brake;
use crate::connection::{ConnectionId, StoredConnection, to_ticks};
use crate::decision::{Decision, DeferReason, Now, ReclaimReason, decide};
use crate::policy::ReclaimPolicy;
use crate::report::{
    AccessOutcome, ReclaimError, ReclaimEvent, SweepReport, SweepTrigger, WonConnection,
};
use crate::repository::{
    Claim, ClaimOutcome, ConnectionRepository, RepositoryError, RepositoryResult, ScanCursor,
};

/// How many [`ReclaimEvent`]s a slow subscriber may fall behind before it misses some.
pub const EVENT_CAPACITY: usize = 1024;

/// The receiving end of the connections a spawned reclaimer won. Unbounded: a won
/// connection is never dropped for lack of room (it is already ours in the store).
pub type WonConnections = mpsc::UnboundedReceiver<WonConnection>;

/// Builder of a [`Reclaimer`] with non-default collaborators.
#[derive(Debug)]
pub struct ReclaimerBuilder {
    repo: Arc<dyn ConnectionRepository>,
    view: watch::Receiver<Arc<MembershipView>>,
    policy: ReclaimPolicy,
    clock: Arc<dyn WallClock>,
}

impl ReclaimerBuilder {
    /// The policy (default: [`ReclaimPolicy::default`]).
    pub fn policy(mut self, policy: ReclaimPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The wall clock that stamps `updatedAt` and judges record ages (default: the
    /// system clock; simulations use [`heartbeat_core::TokioClock`]).
    pub fn wall_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the reclaimer.
    pub fn build(self) -> Reclaimer {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Reclaimer {
            inner: Arc::new(Inner {
                repo: self.repo,
                view: self.view,
                policy: self.policy,
                clock: self.clock,
                events,
                state: Mutex::new(State::default()),
                sweeping: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

/// Decides and claims orphaned connections for one instance. Cheap to clone (shared).
///
/// The instance's identity (id and incarnation) is the view's observer: a reclaimer
/// acts only on what its own instance observes, and stamps claims with that identity.
#[derive(Debug, Clone)]
pub struct Reclaimer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    repo: Arc<dyn ConnectionRepository>,
    view: watch::Receiver<Arc<MembershipView>>,
    policy: ReclaimPolicy,
    clock: Arc<dyn WallClock>,
    events: broadcast::Sender<ReclaimEvent>,
    state: Mutex<State>,
    /// One sweep at a time per reclaimer.
    sweeping: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// The brake of the last sweep, if engaged (on-access honours it).
    brake: Option<Brake>,
    /// Claims whose outcome is unknown, re-checked at the next sweep.
    uncertain: Vec<Uncertain>,
}

#[derive(Debug, Clone)]
struct Uncertain {
    id: ConnectionId,
    at: DateTime<Utc>,
    incarnation: Incarnation,
    from: InstanceId,
    from_incarnation: Option<Incarnation>,
    reason: ReclaimReason,
}

impl Reclaimer {
    /// A reclaimer on `repo`, acting on the views of `view` (the observer of the view is
    /// this instance), with the system wall clock.
    pub fn new(
        repo: Arc<dyn ConnectionRepository>,
        view: watch::Receiver<Arc<MembershipView>>,
        policy: ReclaimPolicy,
    ) -> Self {
        Self::builder(repo, view).policy(policy).build()
    }

    /// A reclaimer acting on the views of a running [`HeartbeatService`].
    pub fn for_service(
        repo: Arc<dyn ConnectionRepository>,
        service: &HeartbeatService,
        policy: ReclaimPolicy,
    ) -> Self {
        Self::new(repo, service.view(), policy)
    }

    /// A builder, to inject a wall clock.
    pub fn builder(
        repo: Arc<dyn ConnectionRepository>,
        view: watch::Receiver<Arc<MembershipView>>,
    ) -> ReclaimerBuilder {
        ReclaimerBuilder {
            repo,
            view,
            policy: ReclaimPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The policy in use.
    pub fn policy(&self) -> &ReclaimPolicy {
        &self.inner.policy
    }

    /// The view the reclaimer would act on now.
    pub fn current_view(&self) -> Arc<MembershipView> {
        self.inner.view.borrow().clone()
    }

    /// A receiver of [`ReclaimEvent`]s from now on.
    pub fn events(&self) -> broadcast::Receiver<ReclaimEvent> {
        self.inner.events.subscribe()
    }

    /// Whether the last sweep engaged the brake, and why.
    pub fn brake(&self) -> Option<Brake> {
        self.inner.lock().brake.clone()
    }

    /// One sweep now: scan, decide, claim. The connections won are in the report; the
    /// caller re-establishes them.
    pub async fn sweep(&self) -> Result<SweepReport, ReclaimError> {
        self.inner.sweep(SweepTrigger::Manual).await
    }

    /// Lazy reclaim of one record, when a request touches it: reclaimed if it is an
    /// orphan and the view and the brake allow, whether or not rendezvous hashing
    /// designates this instance. The claim is a compare-and-swap as always.
    pub async fn reclaim_on_access(
        &self,
        id: &ConnectionId,
    ) -> Result<AccessOutcome, ReclaimError> {
        let outcome = self.inner.on_access(id).await;
        let label = match &outcome {
            Ok(o) => o.label(),
            Err(_) => "error",
        };
        metrics::counter!("reclaim_on_access_total", "outcome" => label).increment(1);
        outcome
    }

    /// Starts the background task (see the module docs). Returns its handle and the
    /// receiver of the connections it wins. The task stops when the handle is stopped
    /// or dropped.
    pub fn spawn(self) -> (ReclaimerHandle, WonConnections) {
        let (won_tx, won_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(self.inner.clone(), won_tx, stop_rx, wake.clone()));
        (
            ReclaimerHandle {
                reclaimer: self,
                wake,
                stop: Some(stop_tx),
                task: Some(task),
            },
            won_rx,
        )
    }
}

/// A running background reclaimer ([`Reclaimer::spawn`]). Dropping it stops the task.
#[derive(Debug)]
pub struct ReclaimerHandle {
    reclaimer: Reclaimer,
    wake: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ReclaimerHandle {
    /// The reclaimer (for [`Reclaimer::reclaim_on_access`] and [`Reclaimer::events`]).
    pub fn reclaimer(&self) -> &Reclaimer {
        &self.reclaimer
    }

    /// Asks the task for a sweep now (coalesced with one already asked for).
    pub fn sweep_now(&self) {
        self.wake.notify_one();
    }

    /// Stops the task after the sweep in progress, if any.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ReclaimerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    inner: Arc<Inner>,
    won: mpsc::UnboundedSender<WonConnection>,
    mut stop: oneshot::Receiver<()>,
    wake: Arc<Notify>,
) {
    let period = inner.policy.sweep_interval.max(Duration::from_millis(1));
    let mut timer = tokio::time::interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut view_rx = inner.view.clone();
    let mut previous = view_rx.borrow_and_update().clone();
    let mut view_open = true;
    // A view that is already actionable at start is a transition we will not see.
    let mut first = actionable_shape(&previous).then_some(SweepTrigger::ViewActionable);
    loop {
        let trigger = if let Some(t) = first.take() {
            t
        } else {
            tokio::select! {
                _ = &mut stop => break,
                _ = timer.tick() => SweepTrigger::Periodic,
                () = wake.notified() => SweepTrigger::Manual,
                changed = view_rx.changed(), if view_open => {
                    if changed.is_err() {
                        // The heartbeat service is gone; keep the periodic sweeps (they
                        // will find the view stale and do nothing).
                        view_open = false;
                        continue;
                    }
                    let current = view_rx.borrow_and_update().clone();
                    let trigger = view_trigger(&previous, &current);
                    previous = current;
                    match trigger {
                        Some(t) => t,
                        None => continue,
                    }
                }
            }
        };
        match inner.sweep(trigger).await {
            Ok(report) => {
                for w in report.won {
                    // The receiver may be gone (application shutting down): the
                    // records stay ours in the store either way.
                    let _ = won.send(w);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, trigger = trigger.label(), "reclaim sweep failed; retrying at the next interval")
            }
        }
    }
}

/// Whether a view change calls for an immediate sweep.
fn view_trigger(previous: &MembershipView, current: &MembershipView) -> Option<SweepTrigger> {
    let departed = previous.peers.iter().any(|(id, p)| {
        current
            .peers
            .get(id)
            .is_none_or(|c| c.incarnation != p.incarnation)
    }) || current.ended.iter().any(|e| {
        !previous
            .ended
            .iter()
            .any(|p| p.id == e.id && p.incarnation == e.incarnation)
    });
    if departed {
        return Some(SweepTrigger::Departure);
    }
    (!actionable_shape(previous) && actionable_shape(current))
        .then_some(SweepTrigger::ViewActionable)
}

/// Healthy, authoritative, not at risk (the age check is left to the sweep).
fn actionable_shape(v: &MembershipView) -> bool {
    v.health == heartbeat_core::ViewHealth::Healthy && v.authoritative && !v.self_at_risk
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a single assignment or push: a panic elsewhere
        // cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, event: ReclaimEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    async fn timed<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl std::future::Future<Output = RepositoryResult<T>>,
    ) -> RepositoryResult<T> {
        let after = self.policy.operation_timeout;
        match tokio::time::timeout(after, fut).await {
            Ok(r) => r,
            Err(_) => Err(RepositoryError::Timeout {
                what: what(),
                after,
            }),
        }
    }

    fn set_brake(&self, brake: Option<Brake>) {
        let previous = std::mem::replace(&mut self.lock().brake, brake.clone());
        metrics::gauge!("reclaim_brake_engaged").set(if brake.is_some() { 1.0 } else { 0.0 });
        match (previous, brake) {
            (_, Some(b)) => {
                metrics::counter!("reclaim_brakes_total", "reason" => b.label()).increment(1);
                tracing::warn!(reason = b.label(), "reclaim brake engaged: {b}");
                self.emit(ReclaimEvent::Braked(b));
            }
            (Some(_), None) => {
                tracing::info!("reclaim brake released");
                self.emit(ReclaimEvent::BrakeReleased);
            }
            (None, None) => {}
        }
    }

    fn skipped(&self, trigger: SweepTrigger, reason: NotActionable) -> SweepReport {
        let label = crate::decision::ViewProblem::from(&reason).label();
        metrics::counter!("reclaim_sweeps_skipped_total", "reason" => label).increment(1);
        tracing::debug!(trigger = trigger.label(), reason = %reason, "reclaim sweep skipped");
        self.emit(ReclaimEvent::SweepSkipped {
            trigger,
            reason: reason.clone(),
        });
        SweepReport {
            not_actionable: Some(reason),
            ..SweepReport::default()
        }
    }

    async fn sweep(&self, trigger: SweepTrigger) -> Result<SweepReport, ReclaimError> {
        let _one_at_a_time = self.sweeping.lock().await;
        metrics::counter!("reclaim_sweeps_total", "trigger" => trigger.label()).increment(1);

        // Before any I/O: a view that cannot be trusted means no sweep at all.
        let view = self.view.borrow().clone();
        if view.self_at_risk {
            self.set_brake(Some(Brake::SelfAtRisk));
            let mut report = self.skipped(trigger, NotActionable::SelfAtRisk);
            report.brake = Some(Brake::SelfAtRisk);
            return Ok(report);
        }
        if let Err(reason) = view.is_actionable(Instant::now()) {
            return Ok(self.skipped(trigger, reason));
        }

        let mut report = SweepReport::default();
        self.resolve_uncertain(&view, trigger, &mut report).await;

        let (records, invalid) = self.scan_all().await?;
        report.scanned = records.len();
        report.invalid = invalid;

        // Decide on the latest view: the scan may have taken a while.
        let view = self.view.borrow().clone();
        let decisions = decide(&records, &view, Now::from_clock(&*self.clock), &self.policy);
        report.summary = decisions.summary;
        report.not_actionable = decisions.not_actionable.clone();
        report.brake = decisions.brake.clone();
        metrics::gauge!("reclaim_orphans").set(decisions.summary.orphans as f64);
        if let Some(reason) = decisions.not_actionable.clone() {
            if reason == NotActionable::SelfAtRisk {
                self.set_brake(Some(Brake::SelfAtRisk));
            }
            let mut skipped = self.skipped(trigger, reason);
            skipped.scanned = report.scanned;
            skipped.invalid = report.invalid;
            skipped.summary = report.summary;
            skipped.brake = report.brake;
            return Ok(skipped);
        }
        self.set_brake(decisions.brake.clone());

        let me = view.observer.clone();
        let incarnation = view.observer_incarnation;
        for (i, orphan) in decisions.reclaims() {
            let Some(current) = records.get(i) else {
                continue;
            };
            // The view may have changed during the claims: stop if it cannot be
            // trusted any more, skip owners that live again.
            let latest = self.view.borrow().clone();
            let still = if latest.self_at_risk {
                Err(NotActionable::SelfAtRisk)
            } else {
                latest.is_actionable(Instant::now())
            };
            if let Err(reason) = still {
                tracing::warn!(reason = %reason, "reclaim sweep stopped: the view is no longer actionable");
                report.stopped_by_view = Some(reason);
                break;
            }
            if orphan.reason != ReclaimReason::PreviousLife
                && latest.owner_state(orphan.from, current.record.owner_incarnation)
                    == OwnerState::Live
            {
                metrics::counter!("reclaim_claims_total", "result" => "skipped").increment(1);
                report.skipped += 1;
                continue;
            }
            let claim = Claim {
                owner: me.clone(),
                incarnation,
                at: to_ticks(self.clock.now()),
            };
            let id = &current.record.id;
            let outcome = self
                .timed(
                    || format!("claim of connection {id}"),
                    self.repo.claim(current, &claim),
                )
                .await;
            match outcome {
                Ok(ClaimOutcome::Won(record)) => {
                    let won = self.won(
                        record,
                        orphan.from.clone(),
                        current.record.owner_incarnation,
                        orphan.reason,
                        trigger,
                    );
                    report.won.push(won);
                }
                Ok(ClaimOutcome::Conflict) => {
                    self.conflict(id);
                    report.conflicts += 1;
                }
                Err(e) => {
                    metrics::counter!("reclaim_claims_total", "result" => "error").increment(1);
                    tracing::warn!(connection = %id, error = %e, "claim failed; its outcome is re-checked at the next sweep, the sweep stops");
                    self.lock().uncertain.push(Uncertain {
                        id: id.clone(),
                        at: claim.at,
                        incarnation,
                        from: orphan.from.clone(),
                        from_incarnation: current.record.owner_incarnation,
                        reason: orphan.reason,
                    });
                    report.claim_error = Some(e);
                    break;
                }
            }
        }

        let s = &report.summary;
        let busy = s.orphans > 0 || !report.won.is_empty() || report.conflicts > 0;
        if busy {
            tracing::info!(
                trigger = trigger.label(),
                scanned = report.scanned,
                orphans = s.orphans,
                won = report.won.len(),
                conflicts = report.conflicts,
                deferred = s.deferred,
                braked = report.brake.is_some(),
                "reclaim sweep finished"
            );
        } else {
            tracing::debug!(
                trigger = trigger.label(),
                scanned = report.scanned,
                "reclaim sweep finished: no orphans"
            );
        }
        self.emit(ReclaimEvent::SweepFinished {
            trigger,
            summary: report.summary,
            won: report.won.len(),
            conflicts: report.conflicts,
        });
        Ok(report)
    }

    fn won(
        &self,
        record: StoredConnection,
        from: InstanceId,
        from_incarnation: Option<Incarnation>,
        reason: ReclaimReason,
        trigger: SweepTrigger,
    ) -> WonConnection {
        metrics::counter!("reclaim_claims_total", "result" => "won").increment(1);
        tracing::info!(connection = %record.record.id, from = %from, reason = reason.label(), trigger = trigger.label(), "connection reclaimed");
        self.emit(ReclaimEvent::Claimed {
            id: record.record.id.clone(),
            from: from.clone(),
            reason,
        });
        WonConnection {
            record,
            from,
            from_incarnation,
            reason,
            trigger,
        }
    }

    fn conflict(&self, id: &ConnectionId) {
        metrics::counter!("reclaim_claims_total", "result" => "conflict").increment(1);
        metrics::counter!("reclaim_conflicts_total").increment(1);
        tracing::debug!(connection = %id, "claim lost: the record changed since it was read");
        self.emit(ReclaimEvent::Conflict { id: id.clone() });
    }

    /// Scans every page; returns the valid records (the last copy of each id) and the
    /// number of invalid values.
    async fn scan_all(&self) -> Result<(Vec<StoredConnection>, usize), ReclaimError> {
        let mut records: Vec<StoredConnection> = Vec::new();
        let mut seen: HashMap<ConnectionId, usize> = HashMap::new();
        let mut invalid = 0usize;
        let mut cursor: Option<ScanCursor> = None;
        loop {
            let page = self
                .timed(
                    || {
                        format!(
                            "scan page after {:?}",
                            cursor.as_ref().map(ScanCursor::as_str)
                        )
                    },
                    self.repo.scan(cursor.as_ref(), self.policy.page_size),
                )
                .await?;
            for bad in page.invalid {
                invalid += 1;
                metrics::counter!("reclaim_invalid_records_total").increment(1);
                tracing::warn!(key = ?bad.key, error = %bad.error, "connection record skipped: it does not parse");
            }
            for r in page.records {
                match seen.get(&r.record.id) {
                    Some(&i) => records[i] = r,
                    None => {
                        seen.insert(r.record.id.clone(), records.len());
                        records.push(r);
                    }
                }
            }
            match page.next {
                None => break,
                Some(next) if Some(&next) == cursor.as_ref() => {
                    return Err(ReclaimError::Repository(RepositoryError::Backend {
                        backend: self.repo.backend(),
                        message: format!(
                            "scan returned the cursor it was given ({:?}); the scan would never end",
                            next.as_str()
                        ),
                        source: None,
                    }));
                }
                Some(next) => cursor = Some(next),
            }
        }
        Ok((records, invalid))
    }

    /// Re-checks claims whose outcome was unknown: delivers those that landed.
    async fn resolve_uncertain(
        &self,
        view: &MembershipView,
        trigger: SweepTrigger,
        report: &mut SweepReport,
    ) {
        let pending = std::mem::take(&mut self.lock().uncertain);
        let mut still = Vec::new();
        for u in pending {
            let got = self
                .timed(
                    || format!("get of connection {}", u.id),
                    self.repo.get(&u.id),
                )
                .await;
            match got {
                Ok(Some(stored)) => {
                    let r = &stored.record;
                    if r.owner == view.observer
                        && r.owner_incarnation == Some(u.incarnation)
                        && r.updated_at == Some(u.at)
                    {
                        let won = self.won(stored, u.from, u.from_incarnation, u.reason, trigger);
                        report.won.push(won);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(connection = %u.id, error = %e, "uncertain claim not resolved yet");
                    still.push(u);
                }
            }
        }
        if !still.is_empty() {
            self.lock().uncertain.extend(still);
        }
    }

    async fn on_access(&self, id: &ConnectionId) -> Result<AccessOutcome, ReclaimError> {
        let Some(current) = self
            .timed(|| format!("get of connection {id}"), self.repo.get(id))
            .await?
        else {
            return Ok(AccessOutcome::NotFound);
        };
        let view = self.view.borrow().clone();
        let policy = self
            .policy
            .clone()
            .require_designation(false)
            .max_claims_per_sweep(1);
        let records = std::slice::from_ref(&current);
        let decisions = decide(records, &view, Now::from_clock(&*self.clock), &policy);
        let orphan = match decisions.decisions.first() {
            Some(Decision::Reclaim(o)) => *o,
            Some(Decision::Keep(k)) => return Ok(AccessOutcome::Kept(*k)),
            Some(Decision::Defer(d)) => return Ok(AccessOutcome::Deferred(*d)),
            None => return Ok(AccessOutcome::NotFound),
        };
        // A mass death seen by the last sweep holds for single records too.
        if self.lock().brake.is_some() {
            return Ok(AccessOutcome::Deferred(DeferReason::Brake));
        }
        let claim = Claim {
            owner: view.observer.clone(),
            incarnation: view.observer_incarnation,
            at: to_ticks(self.clock.now()),
        };
        let outcome = self
            .timed(
                || format!("claim of connection {id}"),
                self.repo.claim(&current, &claim),
            )
            .await;
        match outcome {
            Ok(ClaimOutcome::Won(record)) => Ok(AccessOutcome::Won(self.won(
                record,
                orphan.from.clone(),
                current.record.owner_incarnation,
                orphan.reason,
                SweepTrigger::Access,
            ))),
            Ok(ClaimOutcome::Conflict) => {
                self.conflict(id);
                Ok(AccessOutcome::Conflict)
            }
            Err(e) => {
                metrics::counter!("reclaim_claims_total", "result" => "error").increment(1);
                self.lock().uncertain.push(Uncertain {
                    id: id.clone(),
                    at: claim.at,
                    incarnation: claim.incarnation,
                    from: orphan.from.clone(),
                    from_incarnation: current.record.owner_incarnation,
                    reason: orphan.reason,
                });
                Err(ReclaimError::Repository(e))
            }
        }
    }
}
