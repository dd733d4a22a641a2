//! The driver on hand-built views (no heartbeat service): sweeps, on-access reclaim,
//! the brake and its release, uncertain claims, departures, events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use heartbeat_core::{DeleteMode, LeaveReason, PutMode, Version};
use reclaimer::{
    AccessOutcome, Brake, ClaimOutcome, ConnectionId, ConnectionRecord, ConnectionRepository,
    DeferReason, KeepReason, MemoryConnections, ReclaimEvent, ReclaimPolicy, ReclaimReason,
    Reclaimer, RepositoryError, RepositoryResult, ScanCursor, ScanPage, StoredConnection,
    SweepTrigger,
};
use tokio::time::Instant;

fn reclaimer_on(
    repo: Arc<dyn ConnectionRepository>,
    rx: tokio::sync::watch::Receiver<Arc<heartbeat_core::MembershipView>>,
    policy: ReclaimPolicy,
) -> Reclaimer {
    Reclaimer::builder(repo, rx)
        .policy(policy)
        .wall_clock(Arc::new(FixedClock))
        .build()
}

async fn seed(repo: &MemoryConnections, records: &[ConnectionRecord]) -> Vec<StoredConnection> {
    let mut out = Vec::new();
    for r in records {
        out.push(repo.create(r).await.unwrap());
    }
    out
}

fn single_survivor_view(t: Instant) -> heartbeat_core::MembershipView {
    let mut v = healthy_view("me", 1, t);
    add_ended(&mut v, "dead", Some(3), LeaveReason::Expired, t);
    add_peer(&mut v, "alive", Some(4), Some(ago(5000)), t);
    v
}

#[tokio::test(start_paused = true)]
async fn a_sweep_claims_designated_orphans_and_leaves_the_rest() {
    let t = Instant::now();
    let repo = MemoryConnections::new();
    let mut records: Vec<ConnectionRecord> = (0..60)
        .map(|i| record(&format!("o-{i}"), "dead", Some(3), ago(100)))
        .collect();
    records.push(record("live-1", "alive", Some(4), ago(100)));
    records.push(record("mine-1", "me", Some(1), ago(100)));
    let before = seed(&repo, &records).await;
    let (_tx, rx) = view_channel(single_survivor_view(t));
    let r = reclaimer_on(Arc::new(repo.clone()), rx, ReclaimPolicy::default());
    let mut events = r.events();

    let report = r.sweep().await.unwrap();
    assert_eq!(report.scanned, 62);
    assert_eq!(report.summary.orphans, 60);
    // Two live instances (me, alive) share the orphans by rendezvous hashing.
    let won = report.won.len();
    assert!(won > 10 && won < 50, "{won}");
    assert_eq!(report.summary.deferred, 60 - won);
    for w in &report.won {
        assert_eq!(w.from.as_str(), "dead");
        assert_eq!(w.reason, ReclaimReason::Ended(LeaveReason::Expired));
        assert_eq!(w.trigger, SweepTrigger::Manual);
        let stored = repo.get(&w.record.record.id).await.unwrap().unwrap();
        assert_eq!(stored, w.record);
        assert_eq!(stored.record.owner.as_str(), "me");
        assert_eq!(stored.record.owner_incarnation, Some(inc(1)));
        assert_eq!(stored.record.updated_at, Some(wall()));
    }
    // Records of the live owner and ours did not move.
    for b in &before[60..] {
        assert_eq!(repo.get(&b.record.id).await.unwrap().unwrap(), *b);
    }
    let mut claimed = 0;
    let mut finished = false;
    while let Ok(e) = events.try_recv() {
        match e {
            ReclaimEvent::Claimed { .. } => claimed += 1,
            ReclaimEvent::SweepFinished { won: w, .. } => finished = w == won,
            _ => {}
        }
    }
    assert_eq!(claimed, won);
    assert!(finished);

    // A second sweep finds nothing more for us.
    let again = r.sweep().await.unwrap();
    assert!(again.won.is_empty());
    assert_eq!(again.summary.orphans, 60 - won);
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_view_skips_the_sweep_without_reading_the_store() {
    #[derive(Debug)]
    struct Untouchable;
    #[async_trait]
    impl ConnectionRepository for Untouchable {
        fn backend(&self) -> &'static str {
            "untouchable"
        }
        async fn scan(&self, _: Option<&ScanCursor>, _: usize) -> RepositoryResult<ScanPage> {
            panic!("scanned on an unhealthy view")
        }
        async fn get(&self, _: &ConnectionId) -> RepositoryResult<Option<StoredConnection>> {
            panic!("read on an unhealthy view")
        }
        async fn put(&self, _: &ConnectionRecord, _: PutMode) -> RepositoryResult<Version> {
            panic!("wrote on an unhealthy view")
        }
        async fn delete(&self, _: &ConnectionId, _: DeleteMode) -> RepositoryResult<()> {
            panic!("deleted on an unhealthy view")
        }
    }
    let t = Instant::now();
    let mut v = single_survivor_view(t);
    v.health = heartbeat_core::ViewHealth::Unhealthy {
        reason: "store down".into(),
        since: t,
    };
    let (tx, rx) = view_channel(v);
    let r = reclaimer_on(Arc::new(Untouchable), rx, ReclaimPolicy::default());
    let mut events = r.events();
    let report = r.sweep().await.unwrap();
    assert!(matches!(
        report.not_actionable,
        Some(heartbeat_core::NotActionable::Unhealthy(_))
    ));
    assert!(matches!(
        events.try_recv(),
        Ok(ReclaimEvent::SweepSkipped { .. })
    ));

    // Self at risk: the brake, as an event.
    let mut v = single_survivor_view(t);
    v.self_at_risk = true;
    tx.send_replace(Arc::new(v));
    let report = r.sweep().await.unwrap();
    assert_eq!(report.brake, Some(Brake::SelfAtRisk));
    assert_eq!(r.brake(), Some(Brake::SelfAtRisk));
    let got: Vec<ReclaimEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        got.contains(&ReclaimEvent::Braked(Brake::SelfAtRisk)),
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_brake_stops_a_mass_takeover_and_releases_when_the_cause_is_gone() {
    let t = Instant::now();
    let mut v = healthy_view("me", 1, t);
    for d in ["d1", "d2", "d3", "d4"] {
        add_ended(&mut v, d, Some(9), LeaveReason::Expired, t);
    }
    add_peer(&mut v, "pod-b", Some(2), Some(ago(5000)), t);
    let repo = MemoryConnections::new();
    let records: Vec<ConnectionRecord> = ["d1", "d2", "d3", "d4"]
        .iter()
        .flat_map(|d| (0..10).map(move |i| record(&format!("{d}-{i}"), d, Some(9), ago(100))))
        .collect();
    let before = seed(&repo, &records).await;
    let (_tx, rx) = view_channel(v);
    let r = reclaimer_on(Arc::new(repo.clone()), rx, ReclaimPolicy::default());
    let mut events = r.events();

    let report = r.sweep().await.unwrap();
    assert!(report.won.is_empty());
    assert_eq!(
        report.brake,
        Some(Brake::TooManyDead {
            dead_owners: 4,
            owners_seen: 6,
            max_dead_fraction: 0.5
        })
    );
    for b in &before {
        assert_eq!(
            repo.get(&b.record.id).await.unwrap().unwrap(),
            *b,
            "nothing moves under the brake"
        );
    }
    // On-access honours the brake too.
    assert_eq!(
        r.reclaim_on_access(&cid("d1-0")).await.unwrap(),
        AccessOutcome::Deferred(DeferReason::Brake)
    );

    // The application deletes the connections of two of the dead owners: 2 dead of 4
    // owners seen is below the minimum count, the brake releases and the rest is taken.
    for b in &before[20..] {
        repo.delete(&b.record.id, DeleteMode::Unconditional)
            .await
            .unwrap();
    }
    let report = r.sweep().await.unwrap();
    assert_eq!(report.brake, None);
    assert_eq!(r.brake(), None);
    assert!(!report.won.is_empty());
    let got: Vec<ReclaimEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        got.iter()
            .any(|e| matches!(e, ReclaimEvent::Braked(Brake::TooManyDead { .. })))
    );
    assert!(got.contains(&ReclaimEvent::BrakeReleased));
}

#[tokio::test(start_paused = true)]
async fn on_access_reclaims_one_orphan_whoever_is_designated() {
    let t = Instant::now();
    let repo = MemoryConnections::new();
    let records: Vec<ConnectionRecord> = (0..20)
        .map(|i| record(&format!("o-{i}"), "dead", Some(3), ago(100)))
        .collect();
    seed(&repo, &records).await;
    repo.create(&record("live-1", "alive", Some(4), ago(100)))
        .await
        .unwrap();
    repo.create(&record("ghost-new", "ghost", Some(4), ago(1)))
        .await
        .unwrap();
    let (_tx, rx) = view_channel(single_survivor_view(t));
    let r = reclaimer_on(Arc::new(repo.clone()), rx, ReclaimPolicy::default());
    // Every orphan, designated to us or not.
    for rec in &records {
        match r.reclaim_on_access(&rec.id).await.unwrap() {
            AccessOutcome::Won(w) => {
                assert_eq!(w.trigger, SweepTrigger::Access);
                assert_eq!(w.record.record.owner.as_str(), "me");
            }
            other => panic!("{other:?}"),
        }
        // Now it is ours.
        assert_eq!(
            r.reclaim_on_access(&rec.id).await.unwrap(),
            AccessOutcome::Kept(KeepReason::Own)
        );
    }
    assert_eq!(
        r.reclaim_on_access(&cid("live-1")).await.unwrap(),
        AccessOutcome::Kept(KeepReason::OwnerLive)
    );
    assert_eq!(
        r.reclaim_on_access(&cid("ghost-new")).await.unwrap(),
        AccessOutcome::Deferred(DeferReason::OwnerUnknownRecent)
    );
    assert_eq!(
        r.reclaim_on_access(&cid("nope")).await.unwrap(),
        AccessOutcome::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn two_reclaimers_accessing_one_orphan_cannot_both_win() {
    let t = Instant::now();
    let repo = MemoryConnections::new();
    repo.create(&record("o-1", "dead", Some(3), ago(100)))
        .await
        .unwrap();
    let mut a_view = single_survivor_view(t);
    add_peer(&mut a_view, "other", Some(8), Some(ago(100)), t);
    let mut b_view = a_view.clone();
    b_view.observer = iid("other");
    b_view.observer_incarnation = inc(8);
    let (_ta, ra) = view_channel(a_view);
    let (_tb, rb) = view_channel(b_view);
    // A repository that yields before each operation: both read the same version
    // before either writes.
    let jittery: Arc<dyn ConnectionRepository> = Arc::new(Jittery::new(repo.clone(), 0, 1));
    let a = reclaimer_on(jittery.clone(), ra, ReclaimPolicy::default());
    let b = reclaimer_on(jittery, rb, ReclaimPolicy::default());
    let current = repo.get(&cid("o-1")).await.unwrap().unwrap();
    let id = cid("o-1");
    let (x, y) = tokio::join!(a.reclaim_on_access(&id), b.reclaim_on_access(&id));
    let outcomes = [x.unwrap(), y.unwrap()];
    let wins = outcomes
        .iter()
        .filter(|o| matches!(o, AccessOutcome::Won(_)))
        .count();
    assert_eq!(wins, 1, "{outcomes:?}");
    assert!(outcomes.contains(&AccessOutcome::Conflict), "{outcomes:?}");
    let claim = reclaimer::Claim {
        owner: iid("third"),
        incarnation: inc(1),
        at: wall(),
    };
    assert_eq!(
        repo.claim(&current, &claim).await.unwrap(),
        ClaimOutcome::Conflict
    );
}

/// A repository whose conditional writes land but report a failure, once.
#[derive(Debug)]
struct LandsButFails {
    inner: MemoryConnections,
    fail_next: AtomicBool,
}

#[async_trait]
impl ConnectionRepository for LandsButFails {
    fn backend(&self) -> &'static str {
        "lands-but-fails"
    }
    async fn scan(&self, c: Option<&ScanCursor>, l: usize) -> RepositoryResult<ScanPage> {
        self.inner.scan(c, l).await
    }
    async fn get(&self, id: &ConnectionId) -> RepositoryResult<Option<StoredConnection>> {
        self.inner.get(id).await
    }
    async fn put(&self, r: &ConnectionRecord, mode: PutMode) -> RepositoryResult<Version> {
        let v = self.inner.put(r, mode).await?;
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(RepositoryError::Unavailable {
                backend: "lands-but-fails",
                message: "connection reset after the write".into(),
                source: None,
            });
        }
        Ok(v)
    }
    async fn delete(&self, id: &ConnectionId, mode: DeleteMode) -> RepositoryResult<()> {
        self.inner.delete(id, mode).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_claim_that_landed_but_reported_failure_is_delivered_at_the_next_sweep() {
    let t = Instant::now();
    let inner = MemoryConnections::new();
    inner
        .create(&record("o-1", "dead", Some(3), ago(100)))
        .await
        .unwrap();
    let repo = Arc::new(LandsButFails {
        inner: inner.clone(),
        fail_next: AtomicBool::new(true),
    });
    let mut v = healthy_view("me", 1, t);
    add_ended(&mut v, "dead", Some(3), LeaveReason::Expired, t);
    let (_tx, rx) = view_channel(v);
    let r = reclaimer_on(repo, rx, ReclaimPolicy::default());
    let first = r.sweep().await.unwrap();
    assert!(first.won.is_empty());
    assert!(matches!(
        first.claim_error,
        Some(RepositoryError::Unavailable { .. })
    ));
    // The record is ours in the store, but nobody was told yet.
    assert_eq!(
        inner
            .get(&cid("o-1"))
            .await
            .unwrap()
            .unwrap()
            .record
            .owner
            .as_str(),
        "me"
    );
    let second = r.sweep().await.unwrap();
    assert_eq!(second.won.len(), 1);
    assert_eq!(second.won[0].record.record.id.as_str(), "o-1");
    assert_eq!(
        second.won[0].reason,
        ReclaimReason::Ended(LeaveReason::Expired)
    );
    // Delivered once only.
    assert!(r.sweep().await.unwrap().won.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_departure_in_the_view_triggers_a_sweep_at_once() {
    let t = Instant::now();
    let repo = MemoryConnections::new();
    repo.create(&record("o-1", "pod-x", Some(3), ago(100)))
        .await
        .unwrap();
    let mut v = healthy_view("me", 1, t);
    add_peer(&mut v, "pod-x", Some(3), Some(ago(5000)), t);
    let (tx, rx) = view_channel(v.clone());
    let policy = ReclaimPolicy::default().sweep_interval(Duration::from_secs(3600));
    let (handle, mut won) = reclaimer_on(Arc::new(repo.clone()), rx, policy).spawn();
    tokio::task::yield_now().await;
    // pod-x's life ends.
    v.peers.remove(&iid("pod-x"));
    add_ended(
        &mut v,
        "pod-x",
        Some(3),
        LeaveReason::Expired,
        Instant::now(),
    );
    v.observed_at = Some(Instant::now());
    tx.send_replace(Arc::new(v));
    let w = tokio::time::timeout(Duration::from_secs(60), won.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.trigger, SweepTrigger::Departure);
    assert_eq!(w.record.record.id.as_str(), "o-1");
    handle.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_cap_leaves_the_rest_for_the_next_sweep() {
    let t = Instant::now();
    let repo = MemoryConnections::new();
    let records: Vec<ConnectionRecord> = (0..25)
        .map(|i| record(&format!("o-{i}"), "dead", Some(3), ago(100)))
        .collect();
    seed(&repo, &records).await;
    let mut v = healthy_view("me", 1, t);
    add_ended(&mut v, "dead", Some(3), LeaveReason::Expired, t);
    let (_tx, rx) = view_channel(v);
    let r = reclaimer_on(
        Arc::new(repo),
        rx,
        ReclaimPolicy::default()
            .max_claims_per_sweep(10)
            .page_size(4),
    );
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(r.sweep().await.unwrap().won.len());
    }
    assert_eq!(got, vec![10, 10, 5, 0]);
}
