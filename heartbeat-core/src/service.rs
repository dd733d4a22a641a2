//! The heartbeat service: publishes this instance's heartbeat, discovers peers, keeps a
//! [`MembershipView`] and broadcasts [`MembershipEvent`]s.
//!
//! Two loops run on tokio: a beat loop (every heartbeat interval: write the record with
//! a TTL of the stale threshold) and a discovery loop (every discovery interval: read the
//! index and all records in one bulk read, feed the [`LivenessTracker`], prune). Every
//! store call has a timeout, so a stalled store becomes an unhealthy view and a
//! self-at-risk event, never a hang.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use heartbeat_core::{HeartbeatOptions, HeartbeatService, InstanceId, Store};
//! # async fn demo(store: Arc<dyn Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let options = HeartbeatOptions::builder(InstanceId::new("pod-1")?)
//!     .heartbeat_interval(Duration::from_secs(2))
//!     .stale_threshold(Duration::from_secs(10))
//!     .build()?;
//! let service = HeartbeatService::start(store, options).await?;
//! let view = service.current_view();
//! println!("{} live peers", view.peers.len());
//! service.leave().await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::clock::{SystemClock, WallClock};
use crate::event::MembershipEvent;
use crate::id::InstanceId;
use crate::liveness::{Discovery, LivenessConfig, LivenessTracker, Outcome, Sighting};
use crate::options::HeartbeatOptions;
use crate::record::{Incarnation, InstanceHeartbeat, InstanceStatus};
use crate::store::{DeleteMode, PutMode, Store, StoreError};
use crate::view::{MembershipView, ViewHealth};

/// How many events a slow subscriber may fall behind before it misses some.
pub const EVENT_CAPACITY: usize = 1024;

/// Errors of the service's own operations (start and leave).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The first publish (join) failed.
    #[error("could not join: publishing the heartbeat of {id} failed: {source}")]
    Join {
        /// This instance.
        id: InstanceId,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A heartbeat publish failed (the service keeps trying at every beat).
    #[error("publishing the heartbeat of {id} failed: {source}")]
    Publish {
        /// This instance.
        id: InstanceId,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Leaving failed part-way; peers will still see this instance expire.
    #[error(
        "could not leave cleanly: {source}; peers will judge this instance dead after the stale threshold"
    )]
    Leave {
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A record could not be serialized.
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
}

/// Builder for a [`HeartbeatService`] with non-default collaborators.
#[derive(Debug)]
pub struct HeartbeatServiceBuilder {
    store: Arc<dyn Store>,
    options: HeartbeatOptions,
    clock: Arc<dyn WallClock>,
    incarnation: Option<Incarnation>,
}

impl HeartbeatServiceBuilder {
    /// The wall clock used to stamp records (default: the system clock).
    pub fn wall_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// A chosen incarnation (default: random). Tests and simulations only: two
    /// processes must never share one.
    pub fn incarnation(mut self, incarnation: Incarnation) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// Joins (first publish and index entry, unless publishing is disabled) and starts
    /// the loops. Fails if the first publish fails: retry, or start later.
    pub async fn start(self) -> Result<HeartbeatService, ServiceError> {
        let incarnation = self.incarnation.unwrap_or_else(Incarnation::random);
        let o = &self.options;
        let mut view = MembershipView::starting(
            o.instance_id().clone(),
            incarnation,
            o.stale_threshold(),
            o.discovery_interval(),
            o.max_view_age(),
        );
        view.authoritative = o.publishing();
        let (view_tx, _) = watch::channel(Arc::new(view));
        let (events_tx, _) = broadcast::channel(EVENT_CAPACITY);
        let inner = Arc::new(Inner {
            started_at: self.clock.now(),
            tracker: Mutex::new(LivenessTracker::new(LivenessConfig::from(o))),
            state: Mutex::new(SelfState {
                sequence: 0,
                last_publish_ok: None,
                at_risk: false,
                view_unhealthy: false,
                failed_publishes: 0,
                invalid_index_entries: 0,
                id_conflict_until: None,
            }),
            store: self.store,
            options: self.options,
            clock: self.clock,
            incarnation,
            view_tx,
            events_tx,
        });
        if inner.options.publishing() {
            inner.join().await?;
        }
        let mut tasks = vec![tokio::spawn(discovery_loop(inner.clone()))];
        if inner.options.publishing() {
            tasks.push(tokio::spawn(beat_loop(inner.clone())));
        }
        tracing::info!(instance = %inner.options.instance_id(), incarnation = %incarnation, "joined");
        Ok(HeartbeatService { inner, tasks })
    }
}

/// A running heartbeat service. Dropping it stops the loops without leaving (as a crash
/// would); call [`HeartbeatService::leave`] to leave gracefully.
#[derive(Debug)]
pub struct HeartbeatService {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    options: HeartbeatOptions,
    clock: Arc<dyn WallClock>,
    incarnation: Incarnation,
    started_at: DateTime<Utc>,
    tracker: Mutex<LivenessTracker>,
    state: Mutex<SelfState>,
    view_tx: watch::Sender<Arc<MembershipView>>,
    events_tx: broadcast::Sender<MembershipEvent>,
}

#[derive(Debug)]
struct SelfState {
    sequence: u64,
    last_publish_ok: Option<Instant>,
    at_risk: bool,
    view_unhealthy: bool,
    failed_publishes: u64,
    invalid_index_entries: usize,
    id_conflict_until: Option<Instant>,
}

impl HeartbeatService {
    /// A builder, to inject a wall clock or an incarnation.
    pub fn builder(store: Arc<dyn Store>, options: HeartbeatOptions) -> HeartbeatServiceBuilder {
        HeartbeatServiceBuilder {
            store,
            options,
            clock: Arc::new(SystemClock),
            incarnation: None,
        }
    }

    /// Joins and starts with the system clock and a random incarnation.
    pub async fn start(
        store: Arc<dyn Store>,
        options: HeartbeatOptions,
    ) -> Result<Self, ServiceError> {
        Self::builder(store, options).start().await
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &InstanceId {
        self.inner.options.instance_id()
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.inner.incarnation
    }

    /// The options in use.
    pub fn options(&self) -> &HeartbeatOptions {
        &self.inner.options
    }

    /// The store in use.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// A watch of the view, updated after every discovery and self-health change.
    pub fn view(&self) -> watch::Receiver<Arc<MembershipView>> {
        self.inner.view_tx.subscribe()
    }

    /// The view as it is now.
    pub fn current_view(&self) -> Arc<MembershipView> {
        self.inner.view_tx.borrow().clone()
    }

    /// A receiver of membership events from now on.
    pub fn events(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.events_tx.subscribe()
    }

    /// Runs one discovery now (besides the loop's own), and returns the new view.
    pub async fn discover_now(&self) -> Arc<MembershipView> {
        self.inner.discover().await;
        self.current_view()
    }

    /// Leaves gracefully: stops the loops, writes status `leaving`, leaves the index.
    /// Peers see the departure at their next discovery.
    pub async fn leave(mut self) -> Result<(), ServiceError> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if !self.inner.options.publishing() {
            return Ok(());
        }
        self.inner.leave().await
    }

    /// Stops the loops without leaving, as a crash would (simulations, tests).
    pub fn abort(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for HeartbeatService {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn id(&self) -> &InstanceId {
        self.options.instance_id()
    }

    fn heartbeat_key(&self) -> String {
        self.options.keys().heartbeat_key(self.id())
    }

    async fn timed<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let after = self.options.store_timeout();
        match tokio::time::timeout(after, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout {
                key: what.to_owned(),
                after,
            }),
        }
    }

    fn emit(&self, event: MembershipEvent) {
        let kind = event.kind();
        metrics::counter!("heartbeat_membership_events_total", "kind" => kind).increment(1);
        tracing::info!(observer = %self.id(), event = ?event, "membership event");
        let _ = self.events_tx.send(event);
    }

    fn record(&self, status: InstanceStatus) -> InstanceHeartbeat {
        let sequence = {
            let mut s = lock(&self.state);
            s.sequence += 1;
            s.sequence
        };
        InstanceHeartbeat {
            instance_id: self.id().clone(),
            last_seen_at: self.clock.now(),
            grpc_host_port: self.options.grpc_host_port().map(str::to_owned),
            incarnation: Some(self.incarnation),
            sequence: Some(sequence),
            started_at: Some(self.started_at),
            status,
        }
    }

    async fn publish(&self, status: InstanceStatus) -> Result<(), ServiceError> {
        let bytes = self.record(status).to_json()?;
        let key = self.heartbeat_key();
        let ttl = Some(self.options.record_ttl());
        self.timed(&key, self.store.put(&key, bytes, PutMode::Overwrite, ttl))
            .await
            .map(|_| ())
            .map_err(|source| ServiceError::Publish {
                id: self.id().clone(),
                source,
            })
    }

    async fn join(&self) -> Result<(), ServiceError> {
        self.publish(InstanceStatus::Alive)
            .await
            .map_err(|e| match e {
                ServiceError::Publish { id, source } => ServiceError::Join { id, source },
                other => other,
            })?;
        let index = self.options.keys().index_key();
        self.timed(index, self.store.index_add(index, self.id().as_str()))
            .await
            .map_err(|source| ServiceError::Join {
                id: self.id().clone(),
                source,
            })?;
        self.publish_succeeded(Instant::now());
        Ok(())
    }

    async fn beat(&self) {
        let started = Instant::now();
        self.check_self_risk(started);
        match self.publish(InstanceStatus::Alive).await {
            Ok(()) => {
                metrics::counter!("heartbeat_publish_total", "result" => "ok").increment(1);
                self.publish_succeeded(Instant::now());
            }
            Err(e) => {
                metrics::counter!("heartbeat_publish_total", "result" => "error").increment(1);
                let first = {
                    let mut s = lock(&self.state);
                    s.failed_publishes += 1;
                    s.failed_publishes == 1
                };
                // One warning per run of failures (and the self-at-risk event); the
                // rest at debug, so an outage does not flood the logs.
                if first {
                    tracing::warn!(instance = %self.id(), error = %e, "heartbeat publish failed; retrying at every beat");
                } else {
                    tracing::debug!(instance = %self.id(), error = %e, "heartbeat publish failed again");
                }
                self.check_self_risk(Instant::now());
            }
        }
    }

    fn publish_succeeded(&self, at: Instant) {
        let (recovered, failures) = {
            let mut s = lock(&self.state);
            s.last_publish_ok = Some(at);
            let failures = std::mem::take(&mut s.failed_publishes);
            (std::mem::replace(&mut s.at_risk, false), failures)
        };
        if failures > 0 {
            tracing::info!(instance = %self.id(), failures, "heartbeat publishing works again");
        }
        if recovered {
            self.emit(MembershipEvent::SelfRecovered);
            self.refresh_self_at_risk(at);
        }
    }

    /// Emits `SelfAtRisk` when the last successful publish is older than allowed. Called
    /// before and after every publish, so a process that was paused learns it on waking.
    fn check_self_risk(&self, now: Instant) {
        let since = {
            let mut s = lock(&self.state);
            let Some(last) = s.last_publish_ok else {
                return;
            };
            let since = now.saturating_duration_since(last);
            if s.at_risk || since < self.options.self_at_risk_after() {
                return;
            }
            s.at_risk = true;
            since
        };
        tracing::error!(instance = %self.id(), ?since, "this instance may be judged dead by its peers");
        self.emit(MembershipEvent::SelfAtRisk {
            since_last_publish: since,
        });
        self.set_self_at_risk(true);
    }

    /// Re-derives the view's `self_at_risk` from publishing and id conflicts.
    fn refresh_self_at_risk(&self, now: Instant) {
        let at_risk = {
            let mut s = lock(&self.state);
            if s.id_conflict_until.is_some_and(|until| now >= until) {
                s.id_conflict_until = None;
            }
            s.at_risk || s.id_conflict_until.is_some()
        };
        if self.view_tx.borrow().self_at_risk != at_risk {
            self.set_self_at_risk(at_risk);
        }
    }

    fn set_self_at_risk(&self, at_risk: bool) {
        metrics::gauge!("heartbeat_self_at_risk").set(if at_risk { 1.0 } else { 0.0 });
        self.view_tx
            .send_modify(|v| Arc::make_mut(v).self_at_risk = at_risk);
    }

    async fn discover(&self) {
        let began = Instant::now();
        let result = self.read_cluster().await;
        metrics::histogram!("heartbeat_discovery_seconds").record(began.elapsed().as_secs_f64());
        match result {
            Ok(discovery) => {
                metrics::counter!("heartbeat_discovery_total", "result" => "ok").increment(1);
                self.apply_discovery(discovery).await;
            }
            Err(e) => {
                metrics::counter!("heartbeat_discovery_total", "result" => "error").increment(1);
                self.discovery_failed(e.to_string());
            }
        }
    }

    async fn read_cluster(&self) -> Result<Discovery, StoreError> {
        let keys = self.options.keys();
        let index_key = keys.index_key();
        let members = self
            .timed(index_key, self.store.index_members(index_key))
            .await?;
        let mut index = BTreeSet::new();
        let mut invalid = 0usize;
        let mut example = None;
        for m in members {
            match InstanceId::new(m.as_str()) {
                Ok(id) => {
                    index.insert(id);
                }
                Err(e) => {
                    invalid += 1;
                    example.get_or_insert_with(|| (m.escape_debug().to_string(), e.to_string()));
                }
            }
        }
        // Invalid entries cannot be instances of this protocol; they are left alone
        // (another writer may own them) and reported once per change, not per discovery.
        let before = std::mem::replace(&mut lock(&self.state).invalid_index_entries, invalid);
        if let Some((entry, error)) = example.filter(|_| invalid != before) {
            tracing::warn!(count = invalid, example = %entry, error = %error, "ignoring invalid ids in the index");
        }
        let mut ids: BTreeSet<InstanceId> = index.clone();
        ids.extend(lock(&self.tracker).followed().cloned());
        let ids: Vec<InstanceId> = ids.into_iter().collect();
        let key_list: Vec<String> = ids.iter().map(|id| keys.heartbeat_key(id)).collect();
        let values = self
            .timed("bulk read of heartbeats", self.store.get_many(&key_list))
            .await?;
        if values.len() != ids.len() {
            return Err(StoreError::Backend {
                backend: self.store.backend(),
                message: format!(
                    "bulk read returned {} values for {} keys",
                    values.len(),
                    ids.len()
                ),
                source: None,
            });
        }
        let mut sightings = BTreeMap::new();
        for (id, value) in ids.into_iter().zip(values) {
            let sighting = match value {
                None => Sighting::Missing,
                Some(v) => match InstanceHeartbeat::from_json(&v.value) {
                    Ok(record) => Sighting::Present {
                        record,
                        version: v.version,
                    },
                    Err(e) => Sighting::Unreadable {
                        raw: v.value,
                        error: e.to_string(),
                    },
                },
            };
            sightings.insert(id, sighting);
        }
        Ok(Discovery {
            at: Instant::now(),
            wall_now: self.clock.now(),
            index,
            sightings,
        })
    }

    async fn apply_discovery(&self, d: Discovery) {
        let at = d.at;
        let wall = d.wall_now;
        let self_in_index = d.index.contains(self.id());
        let conflict = match d.sightings.get(self.id()) {
            Some(Sighting::Present { record, .. })
                if record.incarnation != Some(self.incarnation) =>
            {
                Some(record.incarnation)
            }
            _ => None,
        };
        let (outcome, peers, ended, contested) = {
            let mut tracker = lock(&self.tracker);
            let outcome = tracker.observe(d);
            (
                outcome,
                tracker.live_peers(),
                tracker.ended_lives(),
                tracker.contested(),
            )
        };
        let was_unhealthy = std::mem::replace(&mut lock(&self.state).view_unhealthy, false);
        metrics::gauge!("heartbeat_view_healthy").set(1.0);
        metrics::gauge!("heartbeat_live_peers").set(peers.len() as f64);
        self.view_tx.send_modify(|v| {
            let v = Arc::make_mut(v);
            let late = v
                .observed_at
                .is_none_or(|prev| at.saturating_duration_since(prev) > v.max_age);
            if late || v.health != ViewHealth::Healthy {
                v.healthy_since = Some(at);
            }
            v.health = ViewHealth::Healthy;
            v.observed_at = Some(at);
            v.observed_wall = Some(wall);
            v.peers = peers;
            v.ended = ended;
            v.contested = contested;
        });
        if was_unhealthy {
            self.emit(MembershipEvent::ViewHealthy);
        }
        if let Some(other) = conflict {
            // Another process publishes under our id: until that stops, this instance
            // must not act as the owner of anything (nor take anything over).
            lock(&self.state).id_conflict_until = Some(at + self.options.stale_threshold() * 2);
            self.emit(MembershipEvent::IdConflict { other });
        }
        self.refresh_self_at_risk(at);
        let Outcome {
            events,
            prune,
            delete,
        } = outcome;
        for e in events {
            self.emit(e);
        }
        self.housekeeping(prune, delete, self_in_index).await;
    }

    /// Best effort: failures here are retried at the next discovery.
    async fn housekeeping(
        &self,
        prune: Vec<InstanceId>,
        delete: Vec<(InstanceId, crate::store::Version)>,
        self_in_index: bool,
    ) {
        let keys = self.options.keys();
        let index_key = keys.index_key();
        for (id, version) in delete {
            let key = keys.heartbeat_key(&id);
            match self
                .timed(
                    &key,
                    self.store.delete(&key, DeleteMode::IfVersion(version)),
                )
                .await
            {
                Ok(()) => {
                    tracing::info!(instance = %id, "deleted the record of an expired instance")
                }
                Err(e) if e.is_conflict() => {}
                Err(e) => {
                    tracing::debug!(instance = %id, error = %e, "could not delete an expired record")
                }
            }
        }
        for id in prune {
            let key = keys.heartbeat_key(&id);
            match self
                .timed(
                    index_key,
                    self.store.index_prune(index_key, id.as_str(), &key),
                )
                .await
            {
                Ok(true) => {
                    metrics::counter!("heartbeat_index_pruned_total").increment(1);
                    tracing::info!(instance = %id, "pruned from the index");
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(instance = %id, error = %e, "could not prune"),
            }
        }
        // Self-heal: the store may have lost the index (a restart without persistence)
        // or somebody pruned us while we were cut off.
        if self.options.publishing()
            && !self_in_index
            && let Err(e) = self
                .timed(
                    index_key,
                    self.store.index_add(index_key, self.id().as_str()),
                )
                .await
        {
            tracing::warn!(instance = %self.id(), error = %e, "could not re-add this instance to the index");
        }
    }

    fn discovery_failed(&self, reason: String) {
        lock(&self.tracker).mark_interrupted();
        let newly = !std::mem::replace(&mut lock(&self.state).view_unhealthy, true);
        if newly {
            tracing::warn!(observer = %self.id(), reason, "discovery failed; nobody will be judged dead until it works again");
        } else {
            tracing::debug!(observer = %self.id(), reason, "discovery failed again");
        }
        metrics::gauge!("heartbeat_view_healthy").set(0.0);
        let now = Instant::now();
        self.view_tx.send_modify(|v| {
            let v = Arc::make_mut(v);
            let since = match &v.health {
                ViewHealth::Unhealthy { since, .. } => *since,
                _ => now,
            };
            v.health = ViewHealth::Unhealthy {
                reason: reason.clone(),
                since,
            };
            v.healthy_since = None;
        });
        if newly {
            self.emit(MembershipEvent::ViewUnhealthy { reason });
        }
    }

    async fn leave(&self) -> Result<(), ServiceError> {
        let keys = self.options.keys();
        let key = self.heartbeat_key();
        // A `leaving` tombstone (with the usual TTL) rather than an immediate delete, so
        // that peers following us see a graceful departure at their next discovery.
        let tombstone = self.record(InstanceStatus::Leaving).to_json()?;
        let ttl = Some(self.options.record_ttl());
        let index_key = keys.index_key();
        let result = async {
            self.timed(
                &key,
                self.store.put(&key, tombstone, PutMode::Overwrite, ttl),
            )
            .await?;
            self.timed(
                index_key,
                self.store.index_remove(index_key, self.id().as_str()),
            )
            .await?;
            if !self.store.capabilities().ttl {
                self.timed(&key, self.store.delete(&key, DeleteMode::Unconditional))
                    .await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(instance = %self.id(), "left the cluster");
                Ok(())
            }
            Err(source) => Err(ServiceError::Leave { source }),
        }
    }
}

async fn beat_loop(inner: Arc<Inner>) {
    let period = inner.options.heartbeat_interval();
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        inner.beat().await;
    }
}

async fn discovery_loop(inner: Arc<Inner>) {
    let mut ticks = tokio::time::interval(inner.options.discovery_interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        inner.discover().await;
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send + Sync>() {}
    is_send::<HeartbeatService>();
    let _ = Duration::ZERO;
}
