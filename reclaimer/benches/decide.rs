//! Throughput of `decide`: 1,000,000 connection records over 1,000 owners, on one core.
//!
//! Scenarios (all 1,000,000 records, 1,000 owners, the observer one of them):
//! - `steady`: every owner live; every record kept.
//! - `one_percent_dead`: 10 owners ended (10,000 orphans); each orphan's designated
//!   claimer is computed over the 990 live instances.
//! - `dotnet_records`: records without `ownerIncarnation`, every owner live under an
//!   incarnation of ours: the previous-life rule is checked for every record.
//!
//! Run: `cargo bench -p reclaimer --bench decide -- --sample-size 10`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use heartbeat_core::{
    EndedLife, Incarnation, InstanceId, LeaveReason, Liveness, MembershipView, Peer, ViewHealth,
};
use reclaimer::{ConnectionId, ConnectionRecord, Now, ReclaimPolicy, decide};
use tokio::time::Instant;

const RECORDS: usize = 1_000_000;
const OWNERS: usize = 1_000;

fn wall() -> DateTime<Utc> {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

fn owner(i: usize) -> InstanceId {
    InstanceId::new(format!("wsm-7d9f8c6b5-{i:05}")).unwrap()
}

fn view(dead: usize, at: Instant) -> MembershipView {
    let mut v = MembershipView::starting(
        owner(0),
        Incarnation::from_u64(1),
        Duration::from_secs(60),
        Duration::from_secs(30),
        Duration::from_secs(65),
    );
    v.health = ViewHealth::Healthy;
    v.observed_at = Some(at);
    v.healthy_since = Some(at.checked_sub(Duration::from_secs(90)).unwrap_or(at));
    for i in 0..OWNERS {
        let incarnation = Some(Incarnation::from_u64(i as u64 + 1));
        if i >= OWNERS - dead {
            v.ended.push(EndedLife {
                id: owner(i),
                incarnation,
                reason: LeaveReason::Expired,
                at,
            });
        } else {
            v.peers.insert(
                owner(i),
                Peer {
                    id: owner(i),
                    incarnation,
                    grpc_host_port: None,
                    sequence: Some(1),
                    started_at: Some(wall() - TimeDelta::hours(1)),
                    last_seen_at: Some(wall()),
                    liveness: Liveness::Alive,
                    last_change: at,
                },
            );
        }
    }
    v
}

fn records(with_incarnation: bool) -> Vec<ConnectionRecord> {
    let owners: Vec<InstanceId> = (0..OWNERS).map(owner).collect();
    (0..RECORDS)
        .map(|k| {
            // Spread owners the way a hash-keyed store returns them: not grouped.
            let o = (k.wrapping_mul(7919)) % OWNERS;
            ConnectionRecord::new(
                ConnectionId::new(format!("{k:08x}-5a7d-4e9a-9b1c-2d4e6f8a0b1c")).unwrap(),
                "wss://feed.example.test/stream",
                owners[o].clone(),
                with_incarnation.then(|| Incarnation::from_u64(o as u64 + 1)),
                wall() - TimeDelta::minutes(10),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let at = Instant::now();
    let now = Now::new(at, wall());
    let policy = ReclaimPolicy::default().max_claims_per_sweep(usize::MAX);
    let stamped = records(true);
    let dotnet = records(false);
    let steady = view(0, at);
    let one_percent = view(10, at);

    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);
    g.bench_function("steady", |b| {
        b.iter(|| black_box(decide(black_box(&stamped), &steady, now, &policy)).summary)
    });
    g.bench_function("one_percent_dead", |b| {
        b.iter(|| black_box(decide(black_box(&stamped), &one_percent, now, &policy)).summary)
    });
    g.bench_function("dotnet_records", |b| {
        b.iter(|| black_box(decide(black_box(&dotnet), &steady, now, &policy)).summary)
    });
    g.finish();

    // The scenarios decide what they claim to.
    let d = decide(&stamped, &one_percent, now, &policy);
    assert_eq!(d.summary.orphans, 10_000);
    assert!(d.summary.reclaim > 0 && d.summary.reclaim < 100);
    assert_eq!(
        decide(&stamped, &steady, now, &policy).summary.kept,
        RECORDS
    );
    assert_eq!(decide(&dotnet, &steady, now, &policy).summary.kept, RECORDS);
}

criterion_group!(benches, bench);
criterion_main!(benches);
