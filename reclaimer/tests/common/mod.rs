//! Builders shared by the integration tests: views, peers, records.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use heartbeat_core::{
    EndedLife, Incarnation, InstanceId, LeaveReason, Liveness, MembershipView, Peer, ViewHealth,
};
use reclaimer::{ConnectionId, ConnectionRecord, Now};
use tokio::time::Instant;

pub const THRESHOLD: Duration = Duration::from_secs(60);
pub const DISCOVERY: Duration = Duration::from_secs(30);
pub const MAX_AGE: Duration = Duration::from_secs(65);

pub fn iid(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

pub fn cid(s: &str) -> ConnectionId {
    ConnectionId::new(s).unwrap()
}

pub fn inc(v: u64) -> Incarnation {
    Incarnation::from_u64(v)
}

/// A fixed wall-clock "now" for pure tests.
pub fn wall() -> DateTime<Utc> {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

pub fn ago(secs: i64) -> DateTime<Utc> {
    wall() - TimeDelta::seconds(secs)
}

/// A decision time: monotonic now, wall-clock [`wall`].
pub fn now(at: Instant) -> Now {
    Now::new(at, wall())
}

/// A healthy, fresh view observed by `me` (incarnation `my_inc`), with `me` as a live
/// peer started an hour ago.
pub fn healthy_view(me: &str, my_inc: u64, at: Instant) -> MembershipView {
    let mut v = MembershipView::starting(iid(me), inc(my_inc), THRESHOLD, DISCOVERY, MAX_AGE);
    v.health = ViewHealth::Healthy;
    v.observed_at = Some(at);
    v.observed_wall = Some(wall());
    // Watching, healthy, for long enough to know every live owner.
    v.healthy_since = Some(at.checked_sub(THRESHOLD + DISCOVERY).unwrap_or(at));
    add_peer(&mut v, me, Some(my_inc), Some(ago(3600)), at);
    v
}

pub fn add_peer(
    v: &mut MembershipView,
    id: &str,
    incarnation: Option<u64>,
    started_at: Option<DateTime<Utc>>,
    at: Instant,
) {
    v.peers.insert(
        iid(id),
        Peer {
            id: iid(id),
            incarnation: incarnation.map(inc),
            grpc_host_port: None,
            sequence: Some(1),
            started_at,
            last_seen_at: Some(wall()),
            liveness: Liveness::Alive,
            last_change: at,
        },
    );
}

pub fn add_ended(
    v: &mut MembershipView,
    id: &str,
    incarnation: Option<u64>,
    reason: LeaveReason,
    at: Instant,
) {
    v.ended.push(EndedLife {
        id: iid(id),
        incarnation: incarnation.map(inc),
        reason,
        at,
    });
}

pub fn record(
    conn: &str,
    owner: &str,
    incarnation: Option<u64>,
    created_at: DateTime<Utc>,
) -> ConnectionRecord {
    ConnectionRecord::new(
        cid(conn),
        format!("wss://feed.example.test/{conn}"),
        iid(owner),
        incarnation.map(inc),
        created_at,
    )
}

/// A wall clock stuck at [`wall`].
#[derive(Debug, Clone, Copy)]
pub struct FixedClock;

impl heartbeat_core::WallClock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        wall()
    }
}

/// A watch channel carrying `view`.
pub fn view_channel(
    view: MembershipView,
) -> (
    tokio::sync::watch::Sender<std::sync::Arc<MembershipView>>,
    tokio::sync::watch::Receiver<std::sync::Arc<MembershipView>>,
) {
    tokio::sync::watch::channel(std::sync::Arc::new(view))
}

/// A repository that pauses (tokio time) a pseudo-random 0..=`max_ms` milliseconds
/// before each operation, and yields at least once, so concurrent reclaimers interleave
/// between their reads and their writes. Deterministic for a given seed.
#[derive(Debug)]
pub struct Jittery {
    pub inner: reclaimer::MemoryConnections,
    pub max_ms: u64,
    state: std::sync::atomic::AtomicU64,
}

impl Jittery {
    pub fn new(inner: reclaimer::MemoryConnections, max_ms: u64, seed: u64) -> Self {
        Self {
            inner,
            max_ms,
            state: std::sync::atomic::AtomicU64::new(seed | 1),
        }
    }

    async fn pause(&self) {
        tokio::task::yield_now().await;
        if self.max_ms == 0 {
            return;
        }
        let mut x = self.state.load(std::sync::atomic::Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(x % (self.max_ms + 1))).await;
    }
}

#[async_trait::async_trait]
impl reclaimer::ConnectionRepository for Jittery {
    fn backend(&self) -> &'static str {
        "jittery-memory"
    }
    async fn scan(
        &self,
        cursor: Option<&reclaimer::ScanCursor>,
        limit: usize,
    ) -> reclaimer::RepositoryResult<reclaimer::ScanPage> {
        self.pause().await;
        self.inner.scan(cursor, limit).await
    }
    async fn get(
        &self,
        id: &ConnectionId,
    ) -> reclaimer::RepositoryResult<Option<reclaimer::StoredConnection>> {
        self.pause().await;
        self.inner.get(id).await
    }
    async fn put(
        &self,
        record: &ConnectionRecord,
        mode: heartbeat_core::PutMode,
    ) -> reclaimer::RepositoryResult<heartbeat_core::Version> {
        self.pause().await;
        self.inner.put(record, mode).await
    }
    async fn delete(
        &self,
        id: &ConnectionId,
        mode: heartbeat_core::DeleteMode,
    ) -> reclaimer::RepositoryResult<()> {
        self.pause().await;
        self.inner.delete(id, mode).await
    }
}
