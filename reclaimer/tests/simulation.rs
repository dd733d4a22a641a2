//! Deterministic simulations on the heartbeat memory store with paused tokio time:
//! several `HeartbeatService`s and reclaimers, crashes, restarts and mass deaths.
//! `tokio::time::sleep` advances the paused clock; nothing waits for real time.
//!
//! The central property: reclaimers with divergent views (different discovery phases,
//! lagging views, a peer joining mid-race, repository calls interleaving at random)
//! claim every orphan exactly once, and never move a live owner's record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Jittery, cid, iid};
use heartbeat_core::{
    HeartbeatOptions, HeartbeatService, Incarnation, LeaveReason, MembershipView, Store,
    TokioClock, WallClock,
};
use heartbeat_memory::{Fault, MemoryStore};
use reclaimer::{
    Brake, ConnectionRecord, ConnectionRepository, MemoryConnections, ReclaimEvent, ReclaimPolicy,
    ReclaimReason, Reclaimer, ReclaimerHandle, StoredConnection, WonConnection, WonConnections,
};
use tokio::sync::watch;

const BEAT: Duration = Duration::from_millis(100);
const THRESHOLD: Duration = Duration::from_secs(1);

fn options(name: &str, discovery: Duration) -> HeartbeatOptions {
    HeartbeatOptions::builder(iid(name))
        .heartbeat_interval(BEAT)
        .discovery_interval(discovery)
        .stale_threshold(THRESHOLD)
        .build()
        .unwrap()
}

struct Sim {
    store: MemoryStore,
    clock: Arc<TokioClock>,
    repo: MemoryConnections,
}

impl Sim {
    fn new() -> Self {
        Self {
            store: MemoryStore::new(),
            clock: Arc::new(TokioClock::new()),
            repo: MemoryConnections::new(),
        }
    }

    async fn start(&self, name: &str, discovery: Duration, incarnation: u64) -> HeartbeatService {
        HeartbeatService::builder(
            Arc::new(self.store.handle()) as Arc<dyn Store>,
            options(name, discovery),
        )
        .wall_clock(self.clock.clone())
        .incarnation(Incarnation::from_u64(incarnation))
        .start()
        .await
        .unwrap()
    }

    async fn create(
        &self,
        conn: &str,
        owner: &str,
        incarnation: Option<Incarnation>,
    ) -> StoredConnection {
        let r = ConnectionRecord::new(
            cid(conn),
            format!("wss://feed.example.test/{conn}"),
            iid(owner),
            incarnation,
            self.clock.now(),
        );
        self.repo.create(&r).await.unwrap()
    }

    fn reclaimer(
        &self,
        view: watch::Receiver<Arc<MembershipView>>,
        policy: ReclaimPolicy,
        jitter_seed: u64,
    ) -> Reclaimer {
        let repo: Arc<dyn ConnectionRepository> =
            Arc::new(Jittery::new(self.repo.clone(), 8, jitter_seed));
        Reclaimer::builder(repo, view)
            .policy(policy)
            .wall_clock(self.clock.clone())
            .build()
    }
}

/// A view that reaches the reclaimer `lag` late (a slow observer).
fn lagged(
    mut rx: watch::Receiver<Arc<MembershipView>>,
    lag: Duration,
) -> watch::Receiver<Arc<MembershipView>> {
    if lag.is_zero() {
        return rx;
    }
    let (tx, out) = watch::channel(rx.borrow_and_update().clone());
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let v = rx.borrow_and_update().clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(lag).await;
                tx.send_replace(v);
            });
        }
    });
    out
}

/// Counts conflicts and brakes seen by one reclaimer.
#[derive(Default)]
struct Tally {
    conflicts: AtomicUsize,
    brakes: AtomicUsize,
}

fn tally(r: &Reclaimer) -> Arc<Tally> {
    let t = Arc::new(Tally::default());
    let mut events = r.events();
    let out = t.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ReclaimEvent::Conflict { .. }) => {
                    out.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Ok(ReclaimEvent::Braked(_)) => {
                    out.brakes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    t
}

struct Running {
    name: String,
    handle: ReclaimerHandle,
    won: WonConnections,
    tally: Arc<Tally>,
}

fn drain(running: &mut [Running], into: &mut Vec<(String, WonConnection)>) {
    for r in running.iter_mut() {
        while let Ok(w) = r.won.try_recv() {
            into.push((r.name.clone(), w));
        }
    }
}

struct RaceOutcome {
    conflicts: usize,
}

/// `n` reclaimers (`n - 2` established survivors, 2 joining mid-race) and a few
/// doomed owners; 1,000 orphans. The views diverge: discovery intervals differ (pod-0
/// polls only every two thresholds, and phases differ), some views reach their
/// reclaimer late, and joiners appear mid-race: a joiner that saw the doomed die
/// claims as designated before the slow poller has discovered it, so for a while two
/// reclaimers may each believe they are an orphan's designated claimer. A small
/// per-sweep cap keeps orphans around long enough for that to happen. Repository calls
/// interleave at random. Checks exactly-once and that no live owner's record moves.
async fn race(n: usize, designation: bool, seed: u64) -> RaceOutcome {
    assert!(n >= 3);
    let sim = Sim::new();
    let doomed_count = if n >= 6 { 3 } else { 2 };
    let mut survivors = Vec::new();
    for i in 0..n - 2 {
        // pod-0 polls slowly (every two thresholds): it learns of a joiner long after
        // the joiner has seen the doomed die, so both claim as designated meanwhile.
        let discovery = if i == 0 {
            THRESHOLD * 2
        } else {
            BEAT + Duration::from_millis(23 * (i as u64 % 5))
        };
        survivors.push(
            sim.start(&format!("pod-{i}"), discovery, 100 + i as u64)
                .await,
        );
    }
    let mut doomed = Vec::new();
    for j in 0..doomed_count {
        doomed.push(sim.start(&format!("dead-{j}"), BEAT, 900 + j as u64).await);
    }
    tokio::time::sleep(BEAT * 10).await;

    // Connections: 1,000 owned by the doomed, 20 by each established survivor.
    let mut orphans = BTreeSet::new();
    for k in 0..1000 {
        let owner = &doomed[k % doomed_count];
        let id = format!("orphan-{k:04}");
        sim.create(&id, owner.instance_id().as_str(), Some(owner.incarnation()))
            .await;
        orphans.insert(id);
    }
    let mut live_records = Vec::new();
    for s in &survivors {
        for k in 0..20 {
            let id = format!("{}-conn-{k}", s.instance_id());
            live_records.push(
                sim.create(&id, s.instance_id().as_str(), Some(s.incarnation()))
                    .await,
            );
        }
    }

    let policy = |i: usize| {
        ReclaimPolicy::default()
            .sweep_interval(Duration::from_millis(150 + 30 * i as u64))
            .max_claims_per_sweep(5)
            .page_size(50)
            .require_designation(designation)
    };
    let mut running = Vec::new();
    for (i, s) in survivors.iter().enumerate() {
        let view = lagged(s.view(), Duration::from_millis(40 * (i as u64 % 3)));
        let r = sim.reclaimer(view, policy(i), seed + i as u64);
        let tally = tally(&r);
        let (handle, won) = r.spawn();
        running.push(Running {
            name: s.instance_id().to_string(),
            handle,
            won,
            tally,
        });
    }
    let mut all_survivors: BTreeSet<String> = survivors
        .iter()
        .map(|s| s.instance_id().to_string())
        .collect();

    for d in doomed.drain(..) {
        d.abort();
    }
    let crash = tokio::time::Instant::now();
    // The joiners arrive right after a discovery of the slow poller pod-0 (the first
    // once pod-0 has seen the doomed die, the second once it has seen the first
    // joiner). To a joiner the doomed are owners never seen, so it first watches for a
    // threshold plus a discovery interval, then claims as designated, while pod-0 only
    // discovers it at its next poll, two thresholds after its last: for that while both
    // believe they are the designated claimer of some orphans.
    let slow = survivors[0].view();
    let mut joiners = Vec::new();
    let mut won = Vec::new();
    let deadline = crash + Duration::from_secs(120);
    let mut last_poll = slow.borrow().observed_at;
    loop {
        tokio::time::sleep(BEAT / 4).await;
        let view = slow.borrow().clone();
        let polled = view.observed_at != last_poll;
        last_poll = view.observed_at;
        let ready = match joiners.len() {
            0 => !view.peers.keys().any(|p| p.as_str().starts_with("dead-")),
            1 => view.peers.keys().any(|p| p.as_str() == "pod-join-0"),
            _ => false,
        };
        if polled && ready {
            let name = format!("pod-join-{}", joiners.len());
            let j = sim.start(&name, BEAT, 500 + joiners.len() as u64).await;
            let r = sim.reclaimer(
                j.view(),
                policy(n + joiners.len()),
                seed + 1000 + joiners.len() as u64,
            );
            let tally = tally(&r);
            let (handle, w) = r.spawn();
            running.push(Running {
                name: name.clone(),
                handle,
                won: w,
                tally,
            });
            all_survivors.insert(name);
            joiners.push(j);
        }
        drain(&mut running, &mut won);
        if (won.len() >= orphans.len() && joiners.len() == 2)
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
    }
    // A while longer, to catch any late double claim.
    tokio::time::sleep(THRESHOLD * 3).await;
    drain(&mut running, &mut won);
    let conflicts: usize = running
        .iter()
        .map(|r| r.tally.conflicts.load(Ordering::Relaxed))
        .sum();
    let brakes: usize = running
        .iter()
        .map(|r| r.tally.brakes.load(Ordering::Relaxed))
        .sum();
    for r in running {
        r.handle.stop().await;
    }

    // Each orphan won exactly once, by a survivor, and stored as the winner's.
    let mut winners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (who, w) in &won {
        assert!(all_survivors.contains(&w.record.record.owner.to_string()));
        assert_eq!(&w.record.record.owner.to_string(), who);
        assert!(
            w.from.as_str().starts_with("dead-"),
            "taken from a live owner: {w:?}"
        );
        winners
            .entry(w.record.record.id.to_string())
            .or_default()
            .push(who.clone());
    }
    assert_eq!(brakes, 0, "the brake should not engage");
    let keys: BTreeSet<String> = winners.keys().cloned().collect();
    assert_eq!(keys, orphans, "every orphan is won (n = {n})");
    for (id, w) in &winners {
        assert_eq!(w.len(), 1, "{id} won by {w:?}");
        let stored = sim.repo.get(&cid(id)).await.unwrap().unwrap();
        assert_eq!(stored.record.owner.as_str(), w[0]);
    }
    for before in &live_records {
        let now = sim.repo.get(&before.record.id).await.unwrap().unwrap();
        assert_eq!(&now, before, "a live owner's record moved");
    }
    let by_joiners = won
        .iter()
        .filter(|(who, _)| who.starts_with("pod-join"))
        .count();
    eprintln!(
        "n = {n}, designation = {designation}: {} won ({by_joiners} by joiners), {conflicts} conflicts",
        won.len()
    );
    drop(joiners);
    drop(survivors);
    RaceOutcome { conflicts }
}

#[tokio::test(start_paused = true)]
async fn three_reclaimers_with_divergent_views_claim_each_orphan_once() {
    diverged(race(3, true, 11).await);
}

#[tokio::test(start_paused = true)]
async fn five_reclaimers_with_divergent_views_claim_each_orphan_once() {
    // With more survivors, the claimers that disagree about a designation mostly
    // meet in the store one sweep apart: the later one re-reads the record, sees it
    // taken and defers, before any compare-and-swap is attempted. The race is still
    // divergent; the compare-and-swap arbitration itself is exercised by the
    // three-reclaimer race and by `racing_for_every_orphan_still_claims_each_once`.
    race(5, true, 23).await;
}

#[tokio::test(start_paused = true)]
async fn ten_reclaimers_with_divergent_views_claim_each_orphan_once() {
    // See `five_reclaimers_with_divergent_views_claim_each_orphan_once`.
    race(10, true, 37).await;
}

/// The scenario is built so that views disagree about who is designated (a joiner
/// sweeps before the others have discovered it): some claims must have lost. If this
/// fails, the timing changed and the race no longer exercises divergent designations.
fn diverged(outcome: RaceOutcome) {
    assert!(
        outcome.conflicts > 0,
        "no two reclaimers went for the same orphan: the views did not diverge"
    );
}

/// Without rendezvous designation every reclaimer goes for every orphan: only the
/// compare-and-swap keeps the claims exactly once.
#[tokio::test(start_paused = true)]
async fn racing_for_every_orphan_still_claims_each_once() {
    let outcome = race(6, false, 51).await;
    assert!(
        outcome.conflicts > 0,
        "the race should have produced conflicts"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_under_the_same_id_releases_the_previous_lifes_connections() {
    let sim = Sim::new();
    let a = sim.start("pod-a", BEAT, 1).await;
    let b = sim.start("pod-b", BEAT, 2).await;
    let first = sim.start("pod-r", BEAT, 3).await;
    tokio::time::sleep(BEAT * 10).await;
    // The first life's connections: 40 stamped with its incarnation, 20 written the
    // .NET way (no incarnation).
    let mut old = BTreeSet::new();
    for k in 0..40 {
        sim.create(&format!("old-{k}"), "pod-r", Some(first.incarnation()))
            .await;
        old.insert(format!("old-{k}"));
    }
    for k in 0..20 {
        sim.create(&format!("old-dotnet-{k}"), "pod-r", None).await;
        old.insert(format!("old-dotnet-{k}"));
    }
    // Crash, and restart under the same name before the threshold: peers learn of
    // the restart from the new incarnation (Superseded), not from silence.
    tokio::time::sleep(BEAT * 5).await;
    first.abort();
    tokio::time::sleep(BEAT * 3).await;
    let second = sim.start("pod-r", BEAT, 4).await;
    tokio::time::sleep(BEAT * 3).await;
    let mut new_records = Vec::new();
    for k in 0..10 {
        new_records.push(
            sim.create(&format!("new-{k}"), "pod-r", Some(second.incarnation()))
                .await,
        );
        new_records.push(sim.create(&format!("new-dotnet-{k}"), "pod-r", None).await);
    }

    let mut running = Vec::new();
    for (i, s) in [&a, &b, &second].into_iter().enumerate() {
        let r = sim.reclaimer(
            s.view(),
            ReclaimPolicy::default().sweep_interval(BEAT * 5),
            7 + i as u64,
        );
        let tally = tally(&r);
        let (handle, won) = r.spawn();
        running.push(Running {
            name: s.instance_id().to_string(),
            handle,
            won,
            tally,
        });
    }
    let mut won = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(BEAT).await;
        drain(&mut running, &mut won);
        if won.len() >= old.len() {
            break;
        }
    }
    tokio::time::sleep(THRESHOLD * 2).await;
    drain(&mut running, &mut won);
    for r in running {
        r.handle.stop().await;
    }

    let mut got = BTreeMap::new();
    for (who, w) in &won {
        let id = w.record.record.id.to_string();
        let expected = if id.starts_with("old-dotnet") {
            ReclaimReason::PreviousLife
        } else {
            ReclaimReason::Ended(LeaveReason::Superseded)
        };
        assert_eq!(w.reason, expected, "{id}");
        assert_eq!(w.from.as_str(), "pod-r");
        assert!(
            got.insert(id.clone(), who.clone()).is_none(),
            "{id} won twice"
        );
    }
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), old);
    // The restarted life may win back some of its own previous connections, but it
    // keeps its new ones untouched.
    assert!(
        got.values().any(|w| w != "pod-r"),
        "survivors share the work"
    );
    for before in &new_records {
        let now = sim.repo.get(&before.record.id).await.unwrap().unwrap();
        assert_eq!(&now, before, "a record of the new life moved");
    }
}

#[tokio::test(start_paused = true)]
async fn a_mass_death_engages_the_brake_and_nothing_moves() {
    let sim = Sim::new();
    let a = sim.start("pod-a", BEAT, 1).await;
    let b = sim.start("pod-b", BEAT, 2).await;
    let mut doomed = Vec::new();
    for j in 0..4 {
        doomed.push(sim.start(&format!("dead-{j}"), BEAT, 10 + j).await);
    }
    tokio::time::sleep(BEAT * 10).await;
    let mut before = Vec::new();
    for (j, d) in doomed.iter().enumerate() {
        for k in 0..25 {
            before.push(
                sim.create(
                    &format!("c-{j}-{k}"),
                    d.instance_id().as_str(),
                    Some(d.incarnation()),
                )
                .await,
            );
        }
    }
    let mut running = Vec::new();
    for (i, s) in [&a, &b].into_iter().enumerate() {
        let r = sim.reclaimer(
            s.view(),
            ReclaimPolicy::default().sweep_interval(BEAT * 5),
            i as u64,
        );
        let tally = tally(&r);
        let (handle, won) = r.spawn();
        running.push(Running {
            name: s.instance_id().to_string(),
            handle,
            won,
            tally,
        });
    }
    // Four of six owners die at once: more than half, at least three.
    for d in doomed {
        d.abort();
    }
    tokio::time::sleep(THRESHOLD * 10).await;
    let mut won = Vec::new();
    drain(&mut running, &mut won);
    assert!(won.is_empty(), "{won:?}");
    for r in &running {
        assert!(
            r.tally.brakes.load(Ordering::Relaxed) > 0,
            "{} did not brake",
            r.name
        );
        assert!(matches!(
            r.handle.reclaimer().brake(),
            Some(Brake::TooManyDead {
                dead_owners: 4,
                owners_seen: 6,
                ..
            })
        ));
    }
    for s in &before {
        assert_eq!(
            &sim.repo.get(&s.record.id).await.unwrap().unwrap(),
            s,
            "nothing moves under the brake"
        );
    }
    for r in running {
        r.handle.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_cut_off_from_the_store_takes_nothing() {
    let sim = Sim::new();
    let cut_store = sim.store.handle();
    let a = HeartbeatService::builder(
        Arc::new(cut_store.clone()) as Arc<dyn Store>,
        options("pod-a", BEAT),
    )
    .wall_clock(sim.clock.clone())
    .incarnation(Incarnation::from_u64(1))
    .start()
    .await
    .unwrap();
    let dead = sim.start("dead-0", BEAT, 2).await;
    tokio::time::sleep(BEAT * 10).await;
    let before = sim.create("c-1", "dead-0", Some(dead.incarnation())).await;
    let r = sim.reclaimer(
        a.view(),
        ReclaimPolicy::default().sweep_interval(BEAT * 3),
        5,
    );
    let mut events = r.events();
    let (handle, mut won) = r.spawn();
    // pod-a loses the store, then dead-0 dies.
    cut_store.set_fault(Fault::Unavailable);
    dead.abort();
    tokio::time::sleep(THRESHOLD * 5).await;
    assert!(won.try_recv().is_err());
    assert_eq!(
        sim.repo.get(&before.record.id).await.unwrap().unwrap(),
        before
    );
    let mut saw_self_at_risk = false;
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, ReclaimEvent::Claimed { .. }));
        saw_self_at_risk |= e == ReclaimEvent::Braked(Brake::SelfAtRisk);
    }
    assert!(
        saw_self_at_risk,
        "the self-at-risk brake should have been reported"
    );
    // Back online: pod-a takes the orphan.
    cut_store.set_fault(Fault::None);
    let w = tokio::time::timeout(THRESHOLD * 10, won.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.record.record.id.as_str(), "c-1");
    handle.stop().await;
}
