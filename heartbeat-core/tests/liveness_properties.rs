//! Property tests of the pure liveness tracker: driven step by step with time as an
//! input, over random observation schedules, failures and clock skews.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use heartbeat_core::liveness::{Discovery, Sighting};
use heartbeat_core::{
    Incarnation, InstanceHeartbeat, InstanceId, InstanceStatus, LeaveReason, LivenessConfig,
    LivenessTracker, MembershipEvent, Version,
};
use proptest::prelude::*;
use tokio::time::Instant;

const THRESHOLD: Duration = Duration::from_secs(10);

fn config() -> LivenessConfig {
    LivenessConfig {
        stale_threshold: THRESHOLD,
        suspect_after: THRESHOLD / 2,
        skew_tolerance: THRESHOLD / 4,
        missing_grace: THRESHOLD / 2,
        max_gap: Duration::from_secs(5),
        ended_retention: THRESHOLD * 10,
    }
}

fn id() -> InstanceId {
    InstanceId::new("writer").unwrap()
}

fn record(
    seq: u64,
    wall: DateTime<Utc>,
    incarnation: u64,
    status: InstanceStatus,
) -> InstanceHeartbeat {
    InstanceHeartbeat {
        instance_id: id(),
        last_seen_at: wall,
        grpc_host_port: None,
        incarnation: Some(Incarnation::from_u64(incarnation)),
        sequence: Some(seq),
        started_at: None,
        status,
    }
}

fn discovery(at: Instant, wall: DateTime<Utc>, sighting: Sighting) -> Discovery {
    Discovery {
        at,
        wall_now: wall,
        index: BTreeSet::from([id()]),
        sightings: BTreeMap::from([(id(), sighting)]),
    }
}

fn lefts(events: &[MembershipEvent]) -> Vec<LeaveReason> {
    events
        .iter()
        .filter_map(|e| match e {
            MembershipEvent::Left { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

proptest! {
    /// A writer that publishes at least every `beat` (≤ threshold / 3) is never judged
    /// dead, whatever the observer's schedule (gaps up to `beat`), failed discoveries,
    /// and however far its clock is skewed.
    #[test]
    fn a_live_writer_is_never_judged_dead(
        beat_ms in 100u64..3_000,
        steps in proptest::collection::vec((1u64..=100, any::<bool>()), 1..200),
        skew_s in -3_600i64..3_600,
    ) {
        let beat = Duration::from_millis(beat_ms);
        let mut tracker = LivenessTracker::new(config());
        let origin = Instant::now();
        let base_wall: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut now = Duration::ZERO;
        let mut observed = false;
        for (fraction, fail) in steps {
            now += beat * fraction as u32 / 100;
            let seq = (now.as_millis() / beat.as_millis()) as u64; // one publish per beat
            let at = origin + now;
            let wall = base_wall + chrono::Duration::from_std(now).unwrap();
            if fail {
                tracker.mark_interrupted();
                continue;
            }
            let writer_wall = wall + chrono::Duration::seconds(skew_s);
            let rec = record(seq, writer_wall - chrono::Duration::milliseconds((now.as_millis() % beat.as_millis()) as i64), 7, InstanceStatus::Alive);
            let out = tracker.observe(discovery(at, wall, Sighting::Present { record: rec, version: Version::new(seq.to_string()) }));
            prop_assert!(lefts(&out.events).is_empty(), "judged dead at {now:?}: {:?}", out.events);
            observed = true;
        }
        prop_assert_eq!(tracker.live_peers().contains_key(&id()), observed);
    }

    /// Once a writer stops, a healthy observer that polls every `poll` judges it dead no
    /// later than the threshold plus one poll after its last change was visible, and no
    /// sooner than the threshold minus the skew tolerance.
    #[test]
    fn a_dead_writer_is_judged_dead_in_bounded_time(
        poll_ms in 100u64..3_000,
        alive_polls in 1u32..20,
        skew_s in -3_600i64..3_600,
        ttl_expiry in any::<bool>(),
    ) {
        let poll = Duration::from_millis(poll_ms);
        let mut tracker = LivenessTracker::new(config());
        let origin = Instant::now();
        let wall0: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let skew = chrono::Duration::seconds(skew_s);
        let mut last_change_seen = origin;
        let mut now = Duration::ZERO;
        let mut last_record = None;
        for i in 0..alive_polls {
            now += poll;
            let wall = wall0 + chrono::Duration::from_std(now).unwrap();
            let rec = record(u64::from(i), wall + skew, 7, InstanceStatus::Alive);
            last_record = Some(rec.clone());
            tracker.observe(discovery(origin + now, wall, Sighting::Present { record: rec, version: Version::new(i.to_string()) }));
            last_change_seen = origin + now;
        }
        // The writer stops: its record stays as it was, or (TTL store) vanishes after a threshold.
        let frozen = last_record.unwrap();
        loop {
            now += poll;
            let at = origin + now;
            let wall = wall0 + chrono::Duration::from_std(now).unwrap();
            let gone = ttl_expiry && at.duration_since(last_change_seen) >= THRESHOLD;
            let sighting = if gone { Sighting::Missing } else { Sighting::Present { record: frozen.clone(), version: Version::new("frozen") } };
            let out = tracker.observe(discovery(at, wall, sighting));
            let left = lefts(&out.events);
            if !left.is_empty() {
                prop_assert_eq!(left, vec![LeaveReason::Expired]);
                let after = at.duration_since(last_change_seen);
                prop_assert!(after <= THRESHOLD + poll, "took {after:?}");
                prop_assert!(after + config().skew_tolerance >= THRESHOLD, "too early: {after:?}");
                break;
            }
            prop_assert!(at.duration_since(last_change_seen) <= THRESHOLD + poll, "never judged dead");
        }
    }
}

#[test]
fn new_incarnation_supersedes_and_leaving_is_graceful() {
    let mut tracker = LivenessTracker::new(config());
    let t0 = Instant::now();
    let wall: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    let present = |seq, inc, status| Sighting::Present {
        record: record(seq, wall, inc, status),
        version: Version::new(format!("{inc}-{seq}")),
    };
    tracker.observe(discovery(t0, wall, present(1, 1, InstanceStatus::Alive)));
    let out = tracker.observe(discovery(
        t0 + Duration::from_secs(1),
        wall,
        present(1, 2, InstanceStatus::Alive),
    ));
    assert_eq!(lefts(&out.events), vec![LeaveReason::Superseded]);
    assert!(out.events.iter().any(
        |e| matches!(e, MembershipEvent::Joined { incarnation: Some(i), .. } if i.as_u64() == 2)
    ));
    let out = tracker.observe(discovery(
        t0 + Duration::from_secs(2),
        wall,
        present(2, 2, InstanceStatus::Leaving),
    ));
    assert_eq!(lefts(&out.events), vec![LeaveReason::Graceful]);
    assert!(tracker.live_peers().is_empty());
    assert_eq!(tracker.ended_lives().len(), 2);
}

#[test]
fn unreadable_records_are_never_judged_dead_and_pruning_waits_a_threshold() {
    let mut tracker = LivenessTracker::new(config());
    let t0 = Instant::now();
    let wall: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    for s in 0..30 {
        let out = tracker.observe(discovery(
            t0 + Duration::from_secs(s),
            wall,
            Sighting::Unreadable {
                raw: b"{garbage".to_vec(),
                error: "bad".into(),
            },
        ));
        assert!(lefts(&out.events).is_empty());
        assert!(out.prune.is_empty());
    }
    // A missing entry nobody ever saw is pruned only after a full threshold.
    let ghost = InstanceId::new("ghost").unwrap();
    let mut tracker = LivenessTracker::new(config());
    let missing = |at: Instant| Discovery {
        at,
        wall_now: wall,
        index: BTreeSet::from([ghost.clone()]),
        sightings: BTreeMap::from([(ghost.clone(), Sighting::Missing)]),
    };
    // (Polled every second: a longer gap would restart the clock, see the next test.)
    for s in 0..10 {
        assert!(
            tracker
                .observe(missing(t0 + Duration::from_secs(s)))
                .prune
                .is_empty(),
            "pruned after {s} s"
        );
    }
    assert_eq!(
        tracker.observe(missing(t0 + THRESHOLD)).prune,
        vec![ghost.clone()]
    );

    // After a gap in observation (longer than max_gap), missing time starts again.
    let mut tracker = LivenessTracker::new(config());
    tracker.observe(missing(t0));
    assert!(
        tracker.observe(missing(t0 + THRESHOLD)).prune.is_empty(),
        "a gap is no evidence"
    );
    assert!(
        tracker
            .observe(missing(t0 + THRESHOLD + Duration::from_secs(4)))
            .prune
            .is_empty()
    );
}

#[test]
fn a_superseded_incarnation_that_publishes_again_makes_the_id_contested() {
    let mut tracker = LivenessTracker::new(config());
    let t0 = Instant::now();
    let wall: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    let present = |seq, inc| Sighting::Present {
        record: record(seq, wall, inc, InstanceStatus::Alive),
        version: Version::new(format!("{inc}-{seq}")),
    };
    tracker.observe(discovery(t0, wall, present(1, 1)));
    tracker.observe(discovery(t0 + Duration::from_secs(1), wall, present(1, 2)));
    assert!(
        tracker.contested().is_empty(),
        "one new incarnation is a restart"
    );
    tracker.observe(discovery(t0 + Duration::from_secs(2), wall, present(2, 1)));
    assert!(
        tracker.contested().contains(&id()),
        "the old life came back: two processes"
    );
}
