//! One manager instance: the heartbeat service, the reclaimer, the subscriptions it
//! owns, and the ownership round that runs after every discovery.
//!
//! - The **reclaimer** ([`reclaimer::Reclaimer`], spawned on the heartbeat service's
//!   view) sweeps every discovery interval and at once when a peer departs; it decides
//!   with [`reclaimer::decide`] (only orphans of ended lives, one designated claimer per
//!   orphan by rendezvous hashing, the brake, nothing on a view that cannot be trusted)
//!   and claims by compare-and-swap, so one survivor wins each orphan. Every
//!   subscription it wins gets its socket at once.
//! - The **ownership round** reads every subscription record after each discovery,
//!   opens a socket for every record stamped with this instance's id *and* incarnation,
//!   and closes every socket whose record is gone or belongs to someone else. A record
//!   of this id's previous life is not ours: the reclaimer takes it like any orphan.
//!
//! A store outage changes nothing: a failed read leaves every socket as it is, and an
//! unhealthy view claims nothing. An instance that cannot publish its heartbeat for half
//! the stale threshold (self at risk) closes its sockets until it can again (policy
//! [`AtRiskPolicy::Release`], the default), because its peers may soon judge it dead and
//! take its subscriptions over: the upstream never sees two sockets for one
//! subscription, even when this instance alone is cut off.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use heartbeat_core::{
    HeartbeatOptions, HeartbeatService, Incarnation, InstanceId, MembershipView, OptionsError,
    PutMode, ServiceError,
};
use reclaimer::{
    ConnectionId, ConnectionRecord, ConnectionRepository, ReclaimPolicy, Reclaimer,
    ReclaimerHandle, RepositoryError, RepositoryResult, ScanCursor, StoredConnection,
    WonConnections,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::socket::{CLOSE_TIMEOUT, Sockets, StatusChange};

/// Records read per scan page.
pub const SCAN_PAGE: usize = 500;

/// What an instance does with its sockets while it cannot publish its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AtRiskPolicy {
    /// Close them until publishing works again (no double sockets, even when this
    /// instance alone is cut off from the store).
    #[default]
    Release,
    /// Keep them (no gap during a store outage that hits everyone; a partition that
    /// cuts off only this instance may double its subscriptions for a while).
    Keep,
}

/// Configuration of one manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The instance id (the seed uses `HOSTNAME`).
    pub instance: InstanceId,
    /// How often the heartbeat is published.
    pub heartbeat_interval: Duration,
    /// How often peers are discovered (and the ownership round runs).
    pub discovery_interval: Duration,
    /// Unchanged for this long means dead.
    pub stale_threshold: Duration,
    /// Base WebSocket URL for subscriptions created without a URL
    /// (`<upstream>/<topic>`).
    pub upstream: Option<String>,
    /// The address peers and operators reach this instance at (advertised as
    /// `grpcHostPort`).
    pub advertise: Option<String>,
    /// What to do with the sockets while self at risk.
    pub at_risk: AtRiskPolicy,
}

/// Errors starting or stopping a manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The heartbeat options are invalid.
    #[error("invalid heartbeat settings: {0}")]
    Options(#[from] OptionsError),
    /// The heartbeat service failed (join or leave).
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What the HTTP API and the ownership round share.
#[derive(Debug)]
pub struct Shared {
    /// This instance.
    pub instance: InstanceId,
    /// This life.
    pub incarnation: Incarnation,
    /// Where the subscription records live.
    pub connections: Arc<dyn ConnectionRepository>,
    /// The sockets held.
    pub sockets: Sockets,
    /// The membership view.
    pub view: watch::Receiver<Arc<MembershipView>>,
    /// The configuration.
    pub config: ManagerConfig,
}

impl Shared {
    /// Whether `record` belongs to this life of this instance.
    pub fn owns(&self, record: &ConnectionRecord) -> bool {
        record.owner == self.instance && record.owner_incarnation == Some(self.incarnation)
    }

    /// Every record in the repository.
    pub async fn scan_all(&self) -> RepositoryResult<Vec<StoredConnection>> {
        let mut all = Vec::new();
        let mut cursor: Option<ScanCursor> = None;
        loop {
            let page = self.connections.scan(cursor.as_ref(), SCAN_PAGE).await?;
            for bad in &page.invalid {
                tracing::warn!(key = %bad.key, error = %bad.error, "skipping an invalid subscription record");
            }
            all.extend(page.records);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Whether this instance must hold no sockets now: it is at risk of being judged
    /// dead and the policy is [`AtRiskPolicy::Release`].
    fn must_release(&self, view: &MembershipView) -> bool {
        view.self_at_risk && self.config.at_risk == AtRiskPolicy::Release
    }

    /// Whether sockets must stay closed now (see [`AtRiskPolicy::Release`]).
    pub fn releasing(&self) -> bool {
        self.must_release(&self.view.borrow())
    }

    /// Closes every socket if [`Shared::must_release`] says so; returns whether it did.
    async fn release_if_at_risk(&self, view: &MembershipView) -> bool {
        if !self.must_release(view) {
            return false;
        }
        if !self.sockets.ids().is_empty() {
            tracing::warn!(
                "self at risk: closing every socket until the heartbeat is published again"
            );
            self.sockets.stop_all(CLOSE_TIMEOUT).await;
        }
        true
    }

    /// One ownership round on `view` (see the module docs). The read of the records
    /// is bounded by half the stale threshold, so that a stalled store never holds
    /// the round back for long.
    pub async fn round(&self, view: &MembershipView) {
        if self.release_if_at_risk(view).await {
            return;
        }
        let started = Instant::now();
        let limit = self.config.stale_threshold / 2;
        let records = match tokio::time::timeout(limit, self.scan_all()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read the subscriptions; keeping every socket as it is");
                return;
            }
            Err(_) => {
                tracing::warn!(after = ?limit, "reading the subscriptions timed out; keeping every socket as it is");
                return;
            }
        };
        // The view may have changed while we read: never open sockets at risk.
        if self.releasing() {
            return;
        }
        let mine: BTreeSet<ConnectionId> = records
            .iter()
            .filter(|r| self.owns(&r.record))
            .map(|r| r.record.id.clone())
            .collect();
        for r in records.iter().filter(|r| self.owns(&r.record)) {
            self.sockets.ensure(&r.record);
        }
        self.sockets
            .retain_started_before(started, |id| mine.contains(id));
    }
}

/// A running manager.
#[derive(Debug)]
pub struct Manager {
    shared: Arc<Shared>,
    service: Option<HeartbeatService>,
    reclaimer: Option<ReclaimerHandle>,
    round_task: JoinHandle<()>,
    won_task: JoinHandle<()>,
    status_task: JoinHandle<()>,
    release_task: JoinHandle<()>,
}

impl Manager {
    /// Joins the cluster on `backend` and starts the ownership round.
    pub async fn start(backend: Backend, config: ManagerConfig) -> Result<Self, ManagerError> {
        let mut options = HeartbeatOptions::builder(config.instance.clone())
            .heartbeat_interval(config.heartbeat_interval)
            .discovery_interval(config.discovery_interval)
            .stale_threshold(config.stale_threshold);
        if let Some(a) = &config.advertise {
            options = options.grpc_host_port(a.clone());
        }
        let service = HeartbeatService::start(backend.store.clone(), options.build()?).await?;
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            instance: config.instance.clone(),
            incarnation: service.incarnation(),
            connections: backend.connections,
            sockets: Sockets::reporting(config.instance.as_str(), changes_tx),
            view: service.view(),
            config,
        });
        let policy = ReclaimPolicy::default().sweep_interval(shared.config.discovery_interval);
        let (reclaimer, won) =
            Reclaimer::for_service(shared.connections.clone(), &service, policy).spawn();
        let won_task = tokio::spawn(reestablish(shared.clone(), won));
        let status_task = tokio::spawn(record_status(shared.clone(), changes));
        let round_task = tokio::spawn(round_loop(shared.clone(), service.view()));
        let release_task = tokio::spawn(release_when_at_risk(shared.clone(), service.view()));
        tracing::info!(instance = %shared.instance, incarnation = %shared.incarnation, "manager started");
        Ok(Self {
            shared,
            service: Some(service),
            reclaimer: Some(reclaimer),
            round_task,
            won_task,
            status_task,
            release_task,
        })
    }

    /// What the HTTP API needs.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Leaves cleanly: stops the ownership round, closes every socket, then leaves the
    /// cluster, so that peers take the subscriptions over at their next discovery and
    /// never open a second socket next to one of ours.
    pub async fn shutdown(mut self) -> Result<(), ManagerError> {
        if let Some(reclaimer) = self.reclaimer.take() {
            reclaimer.stop().await;
        }
        self.won_task.abort();
        self.round_task.abort();
        self.status_task.abort();
        self.release_task.abort();
        self.shared.sockets.stop_all(CLOSE_TIMEOUT * 2).await;
        if let Some(service) = self.service.take() {
            service.leave().await?;
        }
        tracing::info!(instance = %self.shared.instance, "left cleanly");
        Ok(())
    }

    /// Stops everything without closing or leaving, as a crash would (in-process tests).
    pub fn crash(mut self) {
        drop(self.reclaimer.take());
        self.won_task.abort();
        self.round_task.abort();
        self.status_task.abort();
        self.release_task.abort();
        self.shared.sockets.abort_all();
        if let Some(service) = self.service.take() {
            service.abort();
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.round_task.abort();
        self.won_task.abort();
        self.status_task.abort();
        self.release_task.abort();
    }
}

/// Closes every socket as soon as the view says this instance is at risk, whatever
/// the ownership round is busy with.
async fn release_when_at_risk(shared: Arc<Shared>, mut view: watch::Receiver<Arc<MembershipView>>) {
    while view.changed().await.is_ok() {
        let current = view.borrow_and_update().clone();
        shared.release_if_at_risk(&current).await;
    }
}

/// Writes each socket's state into its record (`status`), by compare-and-swap on the
/// version read, as long as the record is still ours. A record that is gone or was
/// stamped by someone else is not ours any more: its socket is closed at once (a
/// fence against holding a subscription that another instance took over).
async fn record_status(shared: Arc<Shared>, mut changes: mpsc::UnboundedReceiver<StatusChange>) {
    while let Some((id, status)) = changes.recv().await {
        for _ in 0..3 {
            if !shared.sockets.holds(&id) {
                break;
            }
            let current = match shared.connections.get(&id).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    tracing::info!(subscription = %id, "record deleted: closing its socket");
                    shared.sockets.stop(&id);
                    break;
                }
                Err(e) => {
                    tracing::debug!(subscription = %id, error = %e, "could not record the socket status");
                    break;
                }
            };
            if !shared.owns(&current.record) {
                tracing::warn!(subscription = %id, owner = %current.record.owner, "the record belongs to another instance: closing our socket");
                shared.sockets.stop(&id);
                break;
            }
            if current.record.status == status {
                break;
            }
            let mut next = current.record.clone();
            next.status = status;
            match shared
                .connections
                .put(&next, PutMode::Update(current.version.clone()))
                .await
            {
                Ok(_) => break,
                Err(RepositoryError::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::debug!(subscription = %id, error = %e, "could not record the socket status");
                    break;
                }
            }
        }
    }
}

/// Opens the socket of every subscription the reclaimer wins.
async fn reestablish(shared: Arc<Shared>, mut won: WonConnections) {
    while let Some(w) = won.recv().await {
        tracing::info!(
            subscription = %w.record.record.id,
            from = %w.from,
            reason = w.reason.label(),
            trigger = w.trigger.label(),
            "subscription taken over"
        );
        // At risk, the socket waits for the round after recovery (the record is ours).
        if shared.owns(&w.record.record) && !shared.releasing() {
            shared.sockets.ensure(&w.record.record);
        }
    }
}

async fn round_loop(shared: Arc<Shared>, mut view: watch::Receiver<Arc<MembershipView>>) {
    // The view changes after every discovery; the tick is a fallback if it did not.
    let mut tick = tokio::time::interval(shared.config.discovery_interval * 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let current = view.borrow_and_update().clone();
        shared.round(&current).await;
    }
}

/// A new subscription id (random, GUID-shaped like the seed's).
pub fn new_subscription_id() -> Result<ConnectionId, reclaimer::ConnectionIdError> {
    let hex = format!("{:032x}", rand::random::<u128>());
    ConnectionId::new(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}
