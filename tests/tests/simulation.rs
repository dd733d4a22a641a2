//! Deterministic simulations on the memory store with paused tokio time: crashes,
//! graceful leaves, skewed clocks, outages, stalls, partitions and data loss.
//! No sleeps wait for real time: `tokio::time::sleep` advances the paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use heartbeat_conformance::protocol::{BEAT, THRESHOLD, fast_options};
use heartbeat_core::{
    HeartbeatService, InstanceId, LeaveReason, MembershipEvent, OwnerState, Store, TokioClock,
    ViewHealth,
};
use heartbeat_memory::{Fault, MemoryStore};
use tokio::sync::broadcast;
use tokio::time::Instant;

const NS: &str = "sim/";

fn id(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

async fn start_on(store: &MemoryStore, name: &str) -> HeartbeatService {
    HeartbeatService::builder(
        Arc::new(store.clone()) as Arc<dyn Store>,
        fast_options(name, NS),
    )
    .wall_clock(Arc::new(TokioClock::new()))
    .start()
    .await
    .unwrap()
}

/// Starts an instance on its own handle of the store (its own link, with its own faults).
async fn start_linked(store: &MemoryStore, name: &str) -> (MemoryStore, HeartbeatService) {
    let link = store.handle();
    let service = HeartbeatService::start(
        Arc::new(link.clone()) as Arc<dyn Store>,
        fast_options(name, NS),
    )
    .await
    .unwrap();
    (link, service)
}

fn drain(rx: &mut broadcast::Receiver<MembershipEvent>) -> Vec<MembershipEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn left(events: &[MembershipEvent]) -> Vec<(String, LeaveReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            MembershipEvent::Left { id, reason, .. } => Some((id.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

/// Waits (paused time) until `svc` reports `who` left, returning when.
async fn wait_for_left(
    rx: &mut broadcast::Receiver<MembershipEvent>,
    who: &str,
    limit: Duration,
) -> Option<(Instant, LeaveReason)> {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(MembershipEvent::Left { id, reason, .. })) if id.as_str() == who => {
                return Some((Instant::now(), reason));
            }
            Ok(Ok(_)) => {}
            _ => return None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn crash_is_detected_within_threshold_plus_one_discovery() {
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    let b = start_on(&store, "b").await;
    let c = start_on(&store, "c").await;
    tokio::time::sleep(BEAT * 5).await;
    let mut a_events = a.events();
    let mut b_events = b.events();
    let crashed_at = Instant::now();
    c.abort();
    let bound = THRESHOLD + BEAT; // discovery interval == BEAT in fast_options
    for rx in [&mut a_events, &mut b_events] {
        let (at, reason) = wait_for_left(rx, "c", bound * 3)
            .await
            .expect("crash detected");
        assert_eq!(reason, LeaveReason::Expired);
        let latency = at - crashed_at;
        assert!(
            latency <= bound,
            "detected after {latency:?}, bound {bound:?}"
        );
        // ... and not before it could be: a live instance is never judged dead early.
        assert!(
            latency >= THRESHOLD - BEAT * 2,
            "detected implausibly early: {latency:?}"
        );
    }
    assert!(!a.current_view().peers.contains_key(&id("c")));
}

#[tokio::test(start_paused = true)]
async fn graceful_leave_is_seen_at_the_next_discovery() {
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    let b = start_on(&store, "b").await;
    tokio::time::sleep(BEAT * 3).await;
    let mut events = a.events();
    let life = b.incarnation();
    let left_at = Instant::now();
    b.leave().await.unwrap();
    let (at, reason) = wait_for_left(&mut events, "b", THRESHOLD)
        .await
        .expect("leave seen");
    assert_eq!(reason, LeaveReason::Graceful);
    assert!(
        at - left_at <= BEAT,
        "seen after {:?}; a discovery interval is {BEAT:?}",
        at - left_at
    );
    assert_eq!(
        a.current_view().owner_state(&id("b"), Some(life)),
        OwnerState::Ended(LeaveReason::Graceful)
    );
}

async fn skewed_writer_is_judged_by_change(offset_minutes: i64) {
    let store = MemoryStore::new();
    let observer = start_on(&store, "observer").await;
    let skewed = HeartbeatService::builder(
        Arc::new(store.clone()) as Arc<dyn Store>,
        fast_options("skewed", NS),
    )
    .wall_clock(Arc::new(TokioClock::with_offset(
        chrono::Duration::minutes(offset_minutes),
    )))
    .start()
    .await
    .unwrap();
    let mut events = observer.events();
    // Alive for ten thresholds: never judged dead, whatever its clock says.
    tokio::time::sleep(THRESHOLD * 10).await;
    let seen = drain(&mut events);
    assert!(
        left(&seen).is_empty(),
        "a live writer with a skewed clock was judged dead: {seen:?}"
    );
    assert!(observer.current_view().peers.contains_key(&id("skewed")));
    // Dead: detected like anybody else, not kept alive by a clock ahead.
    let crashed_at = Instant::now();
    skewed.abort();
    let (at, reason) = wait_for_left(&mut events, "skewed", THRESHOLD * 3)
        .await
        .expect("death detected");
    assert_eq!(reason, LeaveReason::Expired);
    assert!(
        at - crashed_at <= THRESHOLD + BEAT,
        "took {:?}",
        at - crashed_at
    );
}

#[tokio::test(start_paused = true)]
async fn writer_ten_minutes_ahead_is_neither_killed_nor_kept_alive() {
    skewed_writer_is_judged_by_change(10).await;
}

#[tokio::test(start_paused = true)]
async fn writer_ten_minutes_behind_is_neither_killed_nor_kept_alive() {
    skewed_writer_is_judged_by_change(-10).await;
}

#[tokio::test(start_paused = true)]
async fn observer_that_starts_late_judges_a_behind_clock_writer_alive() {
    // First sighting of a record whose timestamp looks 10 minutes old: the hint may age it
    // by at most the skew tolerance, so a live writer survives.
    let store = MemoryStore::new();
    let _writer = HeartbeatService::builder(
        Arc::new(store.clone()) as Arc<dyn Store>,
        fast_options("behind", NS),
    )
    .wall_clock(Arc::new(TokioClock::with_offset(
        chrono::Duration::minutes(-10),
    )))
    .start()
    .await
    .unwrap();
    tokio::time::sleep(THRESHOLD * 2).await;
    let observer = start_on(&store, "late").await;
    let mut events = observer.events();
    tokio::time::sleep(THRESHOLD * 5).await;
    assert!(left(&drain(&mut events)).is_empty());
    assert!(observer.current_view().peers.contains_key(&id("behind")));
}

#[tokio::test(start_paused = true)]
async fn store_outage_longer_than_threshold_declares_nobody_dead() {
    let store = MemoryStore::new();
    let services = [
        start_on(&store, "a").await,
        start_on(&store, "b").await,
        start_on(&store, "c").await,
    ];
    tokio::time::sleep(BEAT * 5).await;
    let mut events: Vec<_> = services.iter().map(HeartbeatService::events).collect();
    store.set_fault(Fault::Unavailable);
    tokio::time::sleep(THRESHOLD * 3).await;
    for svc in &services {
        let view = svc.current_view();
        assert!(
            matches!(view.health, ViewHealth::Unhealthy { .. }),
            "{:?}",
            view.health
        );
        assert!(
            view.is_actionable(Instant::now()).is_err(),
            "an unhealthy view must not be actionable"
        );
    }
    store.set_fault(Fault::None);
    tokio::time::sleep(THRESHOLD * 3).await;
    for (svc, rx) in services.iter().zip(events.iter_mut()) {
        let seen = drain(rx);
        assert!(
            left(&seen).is_empty(),
            "{} declared somebody dead: {seen:?}",
            svc.instance_id()
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, MembershipEvent::ViewUnhealthy { .. }))
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, MembershipEvent::ViewHealthy))
        );
        let view = svc.current_view();
        assert_eq!(view.health, ViewHealth::Healthy);
        assert_eq!(view.peers.len(), 3);
        assert!(view.is_actionable(Instant::now()).is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn stalled_store_turns_views_unhealthy_instead_of_hanging() {
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    let b = start_on(&store, "b").await;
    tokio::time::sleep(BEAT * 5).await;
    let mut events = a.events();
    store.set_fault(Fault::Stall);
    tokio::time::sleep(THRESHOLD * 2 + Duration::from_secs(4)).await;
    assert!(matches!(
        a.current_view().health,
        ViewHealth::Unhealthy { .. }
    ));
    store.set_fault(Fault::None);
    tokio::time::sleep(THRESHOLD * 2).await;
    let seen = drain(&mut events);
    assert!(left(&seen).is_empty(), "{seen:?}");
    assert!(a.current_view().peers.contains_key(&id("b")));
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn pause_shorter_than_threshold_kills_nobody() {
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    let (link, paused) = start_linked(&store, "paused").await;
    tokio::time::sleep(BEAT * 5).await;
    let mut events = a.events();
    // The paused instance's writes hang for less than the threshold minus one beat and
    // one discovery (the most an observer can be behind).
    link.set_fault(Fault::Stall);
    tokio::time::sleep(THRESHOLD - BEAT * 3).await;
    link.set_fault(Fault::None);
    tokio::time::sleep(THRESHOLD * 3).await;
    let seen = drain(&mut events);
    assert!(left(&seen).is_empty(), "{seen:?}");
    assert!(a.current_view().peers.contains_key(&id("paused")));
    drop(paused);
}

#[tokio::test(start_paused = true)]
async fn partitioned_instance_learns_it_is_at_risk_and_rejoins_after() {
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    let (link, cut) = start_linked(&store, "cut").await;
    tokio::time::sleep(BEAT * 5).await;
    let mut a_events = a.events();
    let mut cut_events = cut.events();
    link.set_fault(Fault::Unavailable);
    tokio::time::sleep(THRESHOLD * 2).await;
    let seen_by_cut = drain(&mut cut_events);
    assert!(
        seen_by_cut
            .iter()
            .any(|e| matches!(e, MembershipEvent::SelfAtRisk { .. })),
        "{seen_by_cut:?}"
    );
    let view = cut.current_view();
    assert!(view.self_at_risk);
    assert!(
        view.is_actionable(Instant::now()).is_err(),
        "a cut-off instance must not act on its view"
    );
    assert!(
        left(&seen_by_cut).is_empty(),
        "the cut-off instance must not judge others dead: {seen_by_cut:?}"
    );
    // The others, who can see the store, correctly see it expire.
    assert_eq!(
        left(&drain(&mut a_events)),
        vec![("cut".to_owned(), LeaveReason::Expired)]
    );
    link.set_fault(Fault::None);
    tokio::time::sleep(THRESHOLD).await;
    assert!(
        drain(&mut cut_events)
            .iter()
            .any(|e| matches!(e, MembershipEvent::SelfRecovered))
    );
    assert!(
        a.current_view().peers.contains_key(&id("cut")),
        "healed instance is live again"
    );
    assert!(
        store
            .index_members(&format!("{NS}_index"))
            .await
            .unwrap()
            .contains("cut")
    );
}

#[tokio::test(start_paused = true)]
async fn store_data_loss_declares_nobody_dead_and_heals_the_index() {
    let store = MemoryStore::new();
    let services = [
        start_on(&store, "a").await,
        start_on(&store, "b").await,
        start_on(&store, "c").await,
    ];
    tokio::time::sleep(BEAT * 5).await;
    let mut events: Vec<_> = services.iter().map(HeartbeatService::events).collect();
    store.clear(); // a store restarted without persistence
    tokio::time::sleep(THRESHOLD * 3).await;
    for rx in &mut events {
        let seen = drain(rx);
        assert!(left(&seen).is_empty(), "{seen:?}");
    }
    let index = store.index_members(&format!("{NS}_index")).await.unwrap();
    assert_eq!(
        index.len(),
        3,
        "every live instance re-added itself: {index:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn dead_index_entries_are_pruned_and_rejoiners_are_not() {
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    let b = start_on(&store, "b").await;
    tokio::time::sleep(BEAT * 3).await;
    b.abort();
    tokio::time::sleep(THRESHOLD * 4).await;
    let index_key = format!("{NS}_index");
    assert!(!store.index_members(&index_key).await.unwrap().contains("b"));
    // b comes back (new process): it is in the index and stays there.
    let _b2 = start_on(&store, "b").await;
    tokio::time::sleep(THRESHOLD * 4).await;
    assert!(store.index_members(&index_key).await.unwrap().contains("b"));
    assert!(a.current_view().peers.contains_key(&id("b")));
}

#[tokio::test(start_paused = true)]
async fn observer_only_instance_is_not_authoritative() {
    let store = MemoryStore::new();
    let _a = start_on(&store, "a").await;
    let options = heartbeat_core::HeartbeatOptions::builder(id("watcher"))
        .heartbeat_interval(Duration::ZERO)
        .discovery_interval(BEAT)
        .stale_threshold(THRESHOLD)
        .keys(heartbeat_core::KeyLayout::new(NS))
        .build()
        .unwrap();
    let watcher = HeartbeatService::start(Arc::new(store.clone()) as Arc<dyn Store>, options)
        .await
        .unwrap();
    tokio::time::sleep(BEAT * 3).await;
    let view = watcher.current_view();
    assert!(!view.authoritative);
    assert!(view.peers.contains_key(&id("a")) && !view.peers.contains_key(&id("watcher")));
    assert_eq!(
        view.is_actionable(Instant::now()),
        Err(heartbeat_core::NotActionable::NotAuthoritative)
    );
    assert!(
        !store
            .index_members(&format!("{NS}_index"))
            .await
            .unwrap()
            .contains("watcher")
    );
}

#[tokio::test(start_paused = true)]
async fn peer_reconnecting_slowly_after_a_store_restart_is_not_judged_dead() {
    // The store goes down and comes back empty (no persistence); one peer's client takes
    // longer than the missing grace (half the threshold) to reconnect.
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    let (link, slow) = start_linked(&store, "slow").await;
    tokio::time::sleep(BEAT * 5).await;
    let mut events = a.events();
    store.set_fault(Fault::Unavailable);
    link.set_fault(Fault::Unavailable);
    tokio::time::sleep(THRESHOLD * 2).await;
    store.clear();
    store.set_fault(Fault::None);
    tokio::time::sleep(THRESHOLD * 7 / 10).await;
    link.set_fault(Fault::None);
    tokio::time::sleep(THRESHOLD * 3).await;
    let seen = drain(&mut events);
    assert!(left(&seen).is_empty(), "{seen:?}");
    assert!(a.current_view().peers.contains_key(&id("slow")));
    drop(slow);
}

#[tokio::test(start_paused = true)]
async fn view_reports_how_long_it_has_been_healthy() {
    let store = MemoryStore::new();
    let a = start_on(&store, "a").await;
    tokio::time::sleep(BEAT * 3).await;
    let first = a.current_view().healthy_since.expect("healthy");
    tokio::time::sleep(BEAT * 3).await;
    assert_eq!(
        a.current_view().healthy_since,
        Some(first),
        "unbroken run keeps its start"
    );
    store.set_fault(Fault::Unavailable);
    tokio::time::sleep(BEAT * 3).await;
    assert_eq!(a.current_view().healthy_since, None);
    store.set_fault(Fault::None);
    tokio::time::sleep(BEAT * 3).await;
    assert!(a.current_view().healthy_since.expect("healthy again") > first);
}
