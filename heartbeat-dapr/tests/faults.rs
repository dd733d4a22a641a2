//! Failures of the sidecar and of the store behind it, on a real daprd with the Redis
//! component: views turn unhealthy, nobody is declared dead, no owner ends (so nothing
//! can be reclaimed), and everything recovers.
//!
//! Fast settings: 200 ms beats and discoveries, a 1 s stale threshold, and a 500 ms
//! store timeout (daprd needs about 3 s to fail a read while Redis is down). Every
//! outage lasts a bounded 3 s, three thresholds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use heartbeat_conformance::namespace;
use heartbeat_conformance::protocol::eventually;
use heartbeat_conformance::support::{daprd, require};
use heartbeat_core::{
    HeartbeatOptions, HeartbeatService, InstanceId, KeyLayout, MembershipEvent, OwnerState,
    ViewHealth,
};
use heartbeat_dapr::{DaprConfig, DaprStore};
use tokio::sync::broadcast;

const OUTAGE: Duration = Duration::from_secs(3);

fn options(id: &str, ns: &str) -> HeartbeatOptions {
    HeartbeatOptions::builder(id.parse().unwrap())
        .grpc_host_port(format!("127.0.0.1:{}", 6000 + id.len()))
        .heartbeat_interval(Duration::from_millis(200))
        .discovery_interval(Duration::from_millis(200))
        .stale_threshold(Duration::from_secs(1))
        .store_timeout(Duration::from_millis(500))
        .keys(KeyLayout::new(ns))
        .build()
        .unwrap()
}

struct Pair {
    a: HeartbeatService,
    b: HeartbeatService,
    events: Vec<broadcast::Receiver<MembershipEvent>>,
}

async fn pair(sidecar: &daprd::Daprd) -> Pair {
    let config = DaprConfig::new(&sidecar.endpoint(), daprd::REDIS_STORE)
        .unwrap()
        .with_request_timeout(Duration::from_secs(1));
    let store = Arc::new(DaprStore::connect(config).await.unwrap());
    let ns = namespace("faults");
    let a = HeartbeatService::start(store.clone(), options("a", &ns))
        .await
        .unwrap();
    let b = HeartbeatService::start(store.clone(), options("b", &ns))
        .await
        .unwrap();
    let events = vec![a.events(), b.events()];
    let pair = Pair { a, b, events };
    assert!(
        eventually(Duration::from_secs(5), || async {
            pair.all_live_and_healthy()
        })
        .await,
        "the pair never saw each other"
    );
    pair
}

impl Pair {
    fn services(&self) -> [&HeartbeatService; 2] {
        [&self.a, &self.b]
    }

    fn all_live_and_healthy(&self) -> bool {
        self.services().iter().all(|observer| {
            let view = observer.current_view();
            view.health == ViewHealth::Healthy
                && self.services().iter().all(|peer| {
                    view.owner_state(peer.instance_id(), Some(peer.incarnation()))
                        == OwnerState::Live
                })
        })
    }

    /// Watches both views for `span`: no life may end; returns whether both views
    /// turned unhealthy (and then refused to be acted on).
    async fn observe_outage(&self, span: Duration) -> [bool; 2] {
        let mut unhealthy = [false, false];
        let deadline = tokio::time::Instant::now() + span;
        while tokio::time::Instant::now() < deadline {
            for (i, observer) in self.services().iter().enumerate() {
                let view = observer.current_view();
                for peer in self.services() {
                    let state = view.owner_state(peer.instance_id(), Some(peer.incarnation()));
                    assert!(
                        !matches!(state, OwnerState::Ended(_)),
                        "{} declared {} ended during the outage: {view:?}",
                        observer.instance_id(),
                        peer.instance_id()
                    );
                }
                if matches!(view.health, ViewHealth::Unhealthy { .. }) {
                    unhealthy[i] = true;
                    assert!(
                        view.is_actionable(tokio::time::Instant::now()).is_err(),
                        "an unhealthy view must not be actionable"
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        unhealthy
    }

    fn assert_nobody_left(&mut self) {
        for rx in &mut self.events {
            while let Ok(e) = rx.try_recv() {
                if let MembershipEvent::Left { id, reason, .. } = &e {
                    panic!("{id} was declared gone ({reason}) by a store outage");
                }
            }
        }
    }

    fn ids(&self) -> [InstanceId; 2] {
        [self.a.instance_id().clone(), self.b.instance_id().clone()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daprd_killed_and_restarted_declares_nobody_dead() {
    let Some(sidecar) = require("daprd", daprd::Daprd::start()) else {
        return;
    };
    let mut pair = pair(&sidecar).await;
    sidecar.kill();
    let unhealthy = pair.observe_outage(OUTAGE).await;
    assert_eq!(
        unhealthy,
        [true, true],
        "views stayed healthy without daprd"
    );
    sidecar.restart().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            pair.all_live_and_healthy()
        })
        .await,
        "no recovery after daprd came back: {:?}",
        pair.a.current_view()
    );
    pair.assert_nobody_left();
    let [a, b] = pair.ids();
    assert!(pair.a.current_view().peers.contains_key(&b));
    assert!(pair.b.current_view().peers.contains_key(&a));
    pair.a.abort();
    pair.b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_behind_daprd_declares_nobody_dead() {
    let Some(sidecar) = require("daprd", daprd::Daprd::start()) else {
        return;
    };
    let mut pair = pair(&sidecar).await;
    sidecar.redis().stall().unwrap();
    let unhealthy = pair.observe_outage(OUTAGE).await;
    sidecar.redis().resume().unwrap();
    assert_eq!(
        unhealthy,
        [true, true],
        "views stayed healthy without Redis"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            pair.all_live_and_healthy()
        })
        .await,
        "no recovery after Redis came back: {:?}",
        pair.a.current_view()
    );
    pair.assert_nobody_left();
    pair.a.abort();
    pair.b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_behind_a_running_daprd_declares_nobody_dead() {
    let Some(sidecar) = require("daprd", daprd::Daprd::start()) else {
        return;
    };
    let mut pair = pair(&sidecar).await;
    sidecar.redis().kill();
    let unhealthy = pair.observe_outage(OUTAGE).await;
    assert_eq!(
        unhealthy,
        [true, true],
        "views stayed healthy without Redis"
    );
    pair.assert_nobody_left();
    // Redis comes back empty (nothing is persisted in tests); daprd reconnects by
    // itself and the views become healthy again.
    sidecar.redis().restart().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            pair.services()
                .iter()
                .all(|s| s.current_view().health == ViewHealth::Healthy)
        })
        .await,
        "no recovery after Redis came back: {:?}",
        pair.a.current_view()
    );
    pair.a.abort();
    pair.b.abort();
}
