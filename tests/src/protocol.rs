//! The heartbeat protocol on top of a store: what [`HeartbeatService`] writes and reads.

use std::collections::BTreeSet;
use std::time::Duration;

use heartbeat_core::{
    HeartbeatOptions, HeartbeatService, Incarnation, InstanceHeartbeat, InstanceId, KeyLayout,
    LeaveReason, MembershipEvent, OwnerState, PutMode,
};

use crate::{DynStore, namespace};

/// Beat interval of the protocol tests.
pub const BEAT: Duration = Duration::from_millis(100);
/// Stale threshold of the protocol tests.
pub const THRESHOLD: Duration = Duration::from_secs(1);

/// Options for a test instance: fast intervals, keys under `ns`.
pub fn fast_options(id: &str, ns: &str) -> HeartbeatOptions {
    HeartbeatOptions::builder(InstanceId::new(id).expect("test ids are valid"))
        .grpc_host_port(format!("127.0.0.1:{}", 5000 + id.len()))
        .heartbeat_interval(BEAT)
        .discovery_interval(BEAT)
        .stale_threshold(THRESHOLD)
        .store_timeout(Duration::from_secs(3))
        .keys(KeyLayout::new(ns))
        .build()
        .expect("test options are valid")
}

async fn start(store: &DynStore, id: &str, ns: &str) -> HeartbeatService {
    HeartbeatService::start(store.clone(), fast_options(id, ns))
        .await
        .expect("join")
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s).expect("test ids are valid")
}

async fn index_of(store: &DynStore, ns: &str) -> BTreeSet<String> {
    store
        .index_members(KeyLayout::new(ns).index_key())
        .await
        .expect("index readable")
}

/// Polls `check` every beat until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(BEAT).await;
    }
}

/// After joining, an instance is in the index and in every peer's view, with its
/// advertised address.
pub async fn join_shows_in_index_and_in_peer_views(store: DynStore) {
    let ns = namespace("join");
    let a = start(&store, "a", &ns).await;
    let b = start(&store, "b", &ns).await;
    assert_eq!(
        index_of(&store, &ns).await,
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
    for svc in [&a, &b] {
        let view = svc.discover_now().await;
        assert!(
            view.is_actionable(tokio::time::Instant::now()).is_ok(),
            "{:?}",
            view.health
        );
        let ids: Vec<&str> = view.live_ids().map(InstanceId::as_str).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            view.peers[&id("b")].grpc_host_port.as_deref(),
            Some("127.0.0.1:5001")
        );
        assert_eq!(view.peers[&id("b")].incarnation, Some(b.incarnation()));
    }
    a.abort();
    b.abort();
}

/// Fifty instances joining at the same moment all land in the index (the seed's
/// read-modify-write lost some).
pub async fn concurrent_joins_all_land_in_the_index(store: DynStore) {
    let ns = namespace("concurrent");
    let ids: Vec<String> = (0..50).map(|i| format!("pod-{i:02}")).collect();
    let joins = ids
        .iter()
        .map(|i| HeartbeatService::start(store.clone(), fast_options(i, &ns)));
    let services: Vec<HeartbeatService> = futures::future::join_all(joins)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every join succeeds");
    let index = index_of(&store, &ns).await;
    assert_eq!(
        index,
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        "lost ids: concurrent joins must not overwrite each other"
    );
    for s in services {
        s.abort();
    }
}

/// Each beat writes a higher sequence under the same incarnation.
pub async fn beats_advance_sequence(store: DynStore) {
    let ns = namespace("beats");
    let a = start(&store, "a", &ns).await;
    let key = KeyLayout::new(&ns).heartbeat_key(&id("a"));
    let read = || async {
        let raw = store
            .get(&key)
            .await
            .expect("readable")
            .expect("record present");
        InstanceHeartbeat::from_json(&raw.value).expect("our record parses")
    };
    let first = read().await;
    tokio::time::sleep(BEAT * 4).await;
    let later = read().await;
    assert_eq!(first.incarnation, Some(a.incarnation()));
    assert_eq!(later.incarnation, first.incarnation);
    assert!(
        later.sequence > first.sequence,
        "{:?} then {:?}",
        first.sequence,
        later.sequence
    );
    assert!(later.last_seen_at >= first.last_seen_at);
    a.abort();
}

/// A graceful leave removes the instance from the index and from peers' views at their
/// next discovery, as a graceful departure.
pub async fn leave_removes_from_index_and_views(store: DynStore) {
    let ns = namespace("leave");
    let a = start(&store, "a", &ns).await;
    let b = start(&store, "b", &ns).await;
    let mut events = a.events();
    assert!(a.discover_now().await.peers.contains_key(&id("b")));
    let b_life = b.incarnation();
    b.leave().await.expect("leave");
    assert_eq!(
        index_of(&store, &ns).await,
        BTreeSet::from(["a".to_owned()])
    );
    let view = a.discover_now().await;
    assert!(
        !view.peers.contains_key(&id("b")),
        "b still live after leaving"
    );
    assert_eq!(
        view.owner_state(&id("b"), Some(b_life)),
        OwnerState::Ended(LeaveReason::Graceful)
    );
    let mut saw_left = false;
    while let Ok(e) = events.try_recv() {
        if let MembershipEvent::Left {
            id: who, reason, ..
        } = e
        {
            assert_eq!((who.as_str(), reason), ("b", LeaveReason::Graceful));
            saw_left = true;
        }
    }
    assert!(saw_left, "no Left event for b");
    a.abort();
}

/// Observers prune index entries whose record stays missing, and only those.
pub async fn prune_removes_only_dead_ids(store: DynStore) {
    let ns = namespace("prune-protocol");
    let index_key = KeyLayout::new(&ns).index_key().to_owned();
    store
        .index_add(&index_key, "ghost")
        .await
        .expect("index writable");
    let a = start(&store, "a", &ns).await;
    let b = start(&store, "b", &ns).await;
    let c = start(&store, "c", &ns).await;
    c.abort();
    let pruned = eventually(THRESHOLD * 8, || async {
        index_of(&store, &ns).await == BTreeSet::from(["a".to_owned(), "b".to_owned()])
    })
    .await;
    assert!(
        pruned,
        "index is {:?}; expected only the live a and b",
        index_of(&store, &ns).await
    );
    let view = a.current_view();
    assert!(view.peers.contains_key(&id("b")) && !view.peers.contains_key(&id("c")));
    a.abort();
    b.abort();
}

/// A process that restarts under the same id is a new life: the old one ends at once
/// (`Superseded`), the new one is live.
pub async fn restart_with_new_incarnation_supersedes(store: DynStore) {
    let ns = namespace("restart");
    let observer = start(&store, "observer", &ns).await;
    let first = HeartbeatService::builder(store.clone(), fast_options("pod", &ns))
        .incarnation(Incarnation::from_u64(1))
        .start()
        .await
        .expect("join");
    assert!(observer.discover_now().await.peers.contains_key(&id("pod")));
    let mut events = observer.events();
    first.abort();
    let second = HeartbeatService::builder(store.clone(), fast_options("pod", &ns))
        .incarnation(Incarnation::from_u64(2))
        .start()
        .await
        .expect("re-join");
    let view = observer.discover_now().await;
    assert_eq!(
        view.owner_state(&id("pod"), Some(Incarnation::from_u64(1))),
        OwnerState::Ended(LeaveReason::Superseded)
    );
    assert_eq!(
        view.owner_state(&id("pod"), Some(Incarnation::from_u64(2))),
        OwnerState::Live
    );
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        seen.iter().any(|e| matches!(e, MembershipEvent::Left { reason: LeaveReason::Superseded, incarnation: Some(i), .. } if *i == Incarnation::from_u64(1))),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(e, MembershipEvent::Joined { incarnation: Some(i), .. } if *i == Incarnation::from_u64(2))),
        "{seen:?}"
    );
    observer.abort();
    second.abort();
}

/// Our records carry the seed's three fields in camelCase, and a record written the way
/// the .NET system writes it is discovered as a live peer.
pub async fn records_are_seed_compatible(store: DynStore) {
    let ns = namespace("seed");
    let keys = KeyLayout::new(&ns);
    let a = start(&store, "a", &ns).await;
    let raw = store
        .get(&keys.heartbeat_key(&id("a")))
        .await
        .expect("readable")
        .expect("present");
    let json: serde_json::Value = serde_json::from_slice(&raw.value).expect("our record is JSON");
    assert_eq!(json["instanceId"], "a");
    assert!(
        json["lastSeenAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{json}"
    );
    assert_eq!(json["grpcHostPort"], "127.0.0.1:5001");

    let dotnet = format!(
        r#"{{"instanceId":"wsm-x2x9q","lastSeenAt":"{}","grpcHostPort":"10.244.1.17:5002"}}"#,
        chrono_now_7_digits()
    );
    store
        .put(
            &keys.heartbeat_key(&id("wsm-x2x9q")),
            dotnet.into_bytes(),
            PutMode::Overwrite,
            None,
        )
        .await
        .expect("writable");
    store
        .index_add(keys.index_key(), "wsm-x2x9q")
        .await
        .expect("index writable");
    let view = a.discover_now().await;
    let peer = view
        .peers
        .get(&id("wsm-x2x9q"))
        .expect(".NET-written peer discovered");
    assert_eq!(peer.grpc_host_port.as_deref(), Some("10.244.1.17:5002"));
    assert_eq!(peer.incarnation, None);
    a.abort();
}

fn chrono_now_7_digits() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f0Z")
        .to_string()
}
