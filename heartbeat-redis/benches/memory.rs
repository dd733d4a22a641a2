//! Memory per tracked instance in an observer: the `LivenessTracker` entry and the
//! `MembershipView` entry of one live peer, measured as growth of the process's
//! resident set (`VmRSS` in `/proc/self/status`, Linux), printed as Markdown.
//!
//! ```text
//! cargo bench -p heartbeat-redis --bench memory
//! ```
//!
//! Method (no custom allocator: the workspace forbids `unsafe`, which a counting
//! `GlobalAlloc` needs): the tracker is fed discoveries of `BATCH` records at a time, so
//! the transient memory of one discovery is small and reused by the next; the figure
//! is the slope of the resident set between `FIRST` and `SECOND` tracked instances
//! (which cancels the fixed costs). The view's share is the growth when the view's peer
//! map is built from the full tracker. `size_of::<Peer>()` is printed as a floor for the
//! view entry (the entry also holds the id and the heap strings).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use heartbeat_core::liveness::{Discovery, Sighting};
use heartbeat_core::{
    Incarnation, InstanceHeartbeat, InstanceId, InstanceStatus, LivenessConfig, LivenessTracker,
    Peer, Version,
};
use tokio::time::Instant;

const BATCH: usize = 1_000;
const FIRST: usize = 50_000;
const SECOND: usize = 150_000;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS line")
}

fn config() -> LivenessConfig {
    let threshold = Duration::from_secs(60);
    LivenessConfig {
        stale_threshold: threshold,
        suspect_after: threshold / 2,
        skew_tolerance: threshold / 4,
        missing_grace: threshold / 2,
        max_gap: Duration::from_secs(3600),
        ended_retention: threshold * 10,
    }
}

/// A discovery of instances `from..to` (ids like real pod names).
fn discovery(from: usize, to: usize, at: Instant) -> Discovery {
    let mut index = BTreeSet::new();
    let mut sightings = BTreeMap::new();
    for i in from..to {
        let id = InstanceId::new(format!("wsm-7d9f8c6b5-{i:06}")).unwrap();
        let record = InstanceHeartbeat {
            instance_id: id.clone(),
            last_seen_at: Utc::now(),
            grpc_host_port: Some(format!("10.244.{}.{}:5002", i / 250 % 250, i % 250)),
            incarnation: Some(Incarnation::random()),
            sequence: Some(1),
            started_at: Some(Utc::now()),
            status: InstanceStatus::Alive,
        };
        index.insert(id.clone());
        sightings.insert(
            id,
            Sighting::Present {
                record,
                version: Version::new(format!("{:032x}", rand::random::<u128>())),
            },
        );
    }
    Discovery {
        at,
        wall_now: Utc::now(),
        index,
        sightings,
    }
}

fn grow(tracker: &mut LivenessTracker, from: usize, to: usize, at: Instant) {
    let mut i = from;
    while i < to {
        let end = (i + BATCH).min(to);
        // Outcome (events) dropped at once, like the service does after emitting.
        drop(tracker.observe(discovery(i, end, at)));
        i = end;
    }
}

fn main() {
    let at = Instant::now();
    let mut tracker = LivenessTracker::new(config());
    // Warm the allocator with one batch, then measure.
    grow(&mut tracker, 0, BATCH, at);
    let base = rss_bytes();
    grow(&mut tracker, BATCH, FIRST, at);
    let first = rss_bytes();
    grow(&mut tracker, FIRST, SECOND, at);
    let second = rss_bytes();
    let per_tracked = (second - first) as f64 / (SECOND - FIRST) as f64;
    let overall = (second - base) as f64 / (SECOND - BATCH) as f64;

    let before_view = rss_bytes();
    let peers = tracker.live_peers();
    let after_view = rss_bytes();
    assert_eq!(peers.len(), SECOND);
    let per_view = (after_view - before_view) as f64 / SECOND as f64;

    println!("### Memory per tracked instance (observer side)\n");
    println!("| what | bytes per instance |");
    println!("| --- | ---: |");
    println!(
        "| LivenessTracker entry (RSS slope {FIRST}..{SECOND} instances) | {per_tracked:.0} |"
    );
    println!("| LivenessTracker entry (RSS growth {BATCH}..{SECOND}, average) | {overall:.0} |");
    println!("| MembershipView peer entry (RSS growth, {SECOND} peers) | {per_view:.0} |");
    println!(
        "| `size_of::<Peer>()` + `size_of::<InstanceId>()` (inline part of a view entry) | {} |",
        std::mem::size_of::<Peer>() + std::mem::size_of::<InstanceId>()
    );
    println!(
        "\n{SECOND} tracked instances: tracker {:.1} MiB, view {:.1} MiB (resident growth).",
        (second - base) as f64 / (1 << 20) as f64,
        (after_view - before_view) as f64 / (1 << 20) as f64
    );
    drop(peers);
}
