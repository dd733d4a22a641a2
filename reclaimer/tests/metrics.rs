//! The reclaimer's counters, recorded through the `metrics` facade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use heartbeat_core::LeaveReason;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use reclaimer::{ConnectionRepository, MemoryConnections, ReclaimPolicy, Reclaimer};
use tokio::time::Instant;

fn counters(recorder: &DebuggingRecorder) -> BTreeMap<String, u64> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => {
                let k = key.key();
                let labels: Vec<String> = k
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                Some((format!("{}{{{}}}", k.name(), labels.join(",")), n))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn sweeps_claims_conflicts_and_brakes_are_counted() {
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let t = Instant::now();
            let repo = MemoryConnections::new();
            for i in 0..5 {
                repo.create(&record(&format!("o-{i}"), "dead", Some(3), ago(100)))
                    .await
                    .unwrap();
            }
            repo.put_raw("bad", b"{}".to_vec());
            let mut v = healthy_view("me", 1, t);
            add_ended(&mut v, "dead", Some(3), LeaveReason::Expired, t);
            let (tx, rx) = view_channel(v.clone());
            let r = Reclaimer::builder(Arc::new(repo.clone()), rx)
                .wall_clock(Arc::new(FixedClock))
                .policy(ReclaimPolicy::default())
                .build();
            assert_eq!(r.sweep().await.unwrap().won.len(), 5);
            // A lost claim: two reclaimers read the same version of one orphan.
            repo.create(&record("o-9", "dead", Some(3), ago(100)))
                .await
                .unwrap();
            let mut other = v.clone();
            add_peer(&mut other, "other", Some(8), Some(ago(100)), t);
            other.observer = iid("other");
            other.observer_incarnation = inc(8);
            let (_t2, rx2) = view_channel(other);
            let jittery: Arc<dyn ConnectionRepository> = Arc::new(Jittery::new(repo.clone(), 0, 1));
            let a = Reclaimer::builder(jittery.clone(), tx.subscribe())
                .wall_clock(Arc::new(FixedClock))
                .build();
            let b = Reclaimer::builder(jittery, rx2)
                .wall_clock(Arc::new(FixedClock))
                .build();
            let id = cid("o-9");
            let (x, y) = tokio::join!(a.reclaim_on_access(&id), b.reclaim_on_access(&id));
            let outcomes = [x.unwrap(), y.unwrap()];
            assert!(
                outcomes.contains(&reclaimer::AccessOutcome::Conflict),
                "{outcomes:?}"
            );
            // Self at risk: a brake.
            v.self_at_risk = true;
            tx.send_replace(Arc::new(v));
            r.sweep().await.unwrap();
        });
    });
    let c = counters(&recorder);
    assert_eq!(
        c.get("reclaim_sweeps_total{trigger=manual}"),
        Some(&2),
        "{c:#?}"
    );
    // Five by the sweep, one on access.
    assert_eq!(
        c.get("reclaim_claims_total{result=won}"),
        Some(&6),
        "{c:#?}"
    );
    assert_eq!(c.get("reclaim_invalid_records_total{}"), Some(&1), "{c:#?}");
    assert_eq!(
        c.get("reclaim_brakes_total{reason=self_at_risk}"),
        Some(&1),
        "{c:#?}"
    );
    assert_eq!(
        c.get("reclaim_sweeps_skipped_total{reason=self_at_risk}"),
        Some(&1),
        "{c:#?}"
    );
}
