//! The key-value contract of [`heartbeat_core::Store`].

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use heartbeat_core::{DeleteMode, PutMode, StoreError};

use crate::{DynStore, namespace};

fn expect_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{what}: expected a Conflict, got {other:?}"),
    }
}

/// Reading a key that was never written gives `None`, alone and in bulk.
pub async fn missing_keys_read_as_none(store: DynStore) {
    let ns = namespace("missing");
    assert_eq!(store.get(&format!("{ns}nothing")).await.unwrap(), None);
    let many = store
        .get_many(&[format!("{ns}a"), format!("{ns}b")])
        .await
        .unwrap();
    assert_eq!(many, vec![None, None]);
    assert_eq!(store.get_many(&[]).await.unwrap(), vec![]);
}

/// What is put is what is read, byte for byte, with the version the put returned.
pub async fn round_trip_keeps_bytes(store: DynStore) {
    let key = format!("{}k", namespace("roundtrip"));
    let value = br#"{"instanceId":"a","note":"\u00e9\u4e2d\ud83d\ude00"}"#.to_vec();
    let v = store
        .put(&key, value.clone(), PutMode::Overwrite, None)
        .await
        .unwrap();
    let got = store.get(&key).await.unwrap().expect("value just written");
    assert_eq!(got.value, value);
    assert_eq!(got.version, v);
    store.delete(&key, DeleteMode::Unconditional).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    // Deleting a missing key unconditionally is not an error.
    store.delete(&key, DeleteMode::Unconditional).await.unwrap();
}

/// Every write gives a new version, also across delete and re-create.
pub async fn versions_change_on_every_write(store: DynStore) {
    let key = format!("{}k", namespace("versions"));
    let mut seen = HashSet::new();
    for i in 0..5 {
        let v = store
            .put(&key, format!("v{i}").into_bytes(), PutMode::Overwrite, None)
            .await
            .unwrap();
        assert!(
            seen.insert(v.clone()),
            "version {v:?} repeated at write {i}"
        );
    }
    let same = store
        .put(&key, b"v4".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();
    assert!(
        seen.insert(same),
        "rewriting the same bytes must still change the version"
    );
    let old = store.get(&key).await.unwrap().unwrap().version;
    store.delete(&key, DeleteMode::Unconditional).await.unwrap();
    let recreated = store
        .put(&key, b"v4".to_vec(), PutMode::Create, None)
        .await
        .unwrap();
    assert_ne!(
        recreated, old,
        "a re-created key must not reuse the deleted version"
    );
    // The old version is now stale even though the bytes are the same.
    expect_conflict(
        store
            .put(&key, b"x".to_vec(), PutMode::Update(old), None)
            .await,
        "update on pre-delete version",
    );
}

/// A compare-and-swap on a stale version fails with `Conflict` and changes nothing.
pub async fn stale_version_is_a_conflict(store: DynStore) {
    let key = format!("{}k", namespace("stale"));
    let v1 = store
        .put(&key, b"1".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();
    let v2 = store
        .put(&key, b"2".to_vec(), PutMode::Update(v1.clone()), None)
        .await
        .unwrap();
    expect_conflict(
        store
            .put(&key, b"3".to_vec(), PutMode::Update(v1), None)
            .await,
        "update on stale version",
    );
    let now = store.get(&key).await.unwrap().unwrap();
    assert_eq!(now.value, b"2");
    assert_eq!(now.version, v2);
    // Updating a missing key is a conflict too.
    let absent = format!("{key}-absent");
    expect_conflict(
        store
            .put(&absent, b"x".to_vec(), PutMode::Update(v2), None)
            .await,
        "update on missing key",
    );
    assert_eq!(store.get(&absent).await.unwrap(), None);
}

/// `Create` writes only when the key is absent.
pub async fn create_only_if_absent(store: DynStore) {
    let key = format!("{}k", namespace("create"));
    store
        .put(&key, b"first".to_vec(), PutMode::Create, None)
        .await
        .unwrap();
    expect_conflict(
        store
            .put(&key, b"second".to_vec(), PutMode::Create, None)
            .await,
        "create on existing key",
    );
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"first");
}

/// A conditional delete removes only the version it names.
pub async fn conditional_delete_checks_the_version(store: DynStore) {
    let key = format!("{}k", namespace("delete"));
    let v1 = store
        .put(&key, b"1".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();
    let v2 = store
        .put(&key, b"2".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();
    expect_conflict(
        store.delete(&key, DeleteMode::IfVersion(v1)).await,
        "delete on stale version",
    );
    assert!(store.get(&key).await.unwrap().is_some());
    store
        .delete(&key, DeleteMode::IfVersion(v2.clone()))
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
    expect_conflict(
        store.delete(&key, DeleteMode::IfVersion(v2)).await,
        "delete on missing key",
    );
}

/// A value put with a TTL reads as missing once the TTL has passed; without a TTL it
/// stays. Stores without TTL support must say so in their capabilities.
pub async fn ttl_expires_values(store: DynStore) {
    let ns = namespace("ttl");
    let (short, long, forever) = (
        format!("{ns}short"),
        format!("{ns}long"),
        format!("{ns}forever"),
    );
    if !store.capabilities().ttl {
        eprintln!(
            "{}: no TTL support declared; liveness-only expiry applies",
            store.backend()
        );
        return;
    }
    store
        .put(
            &short,
            b"s".to_vec(),
            PutMode::Overwrite,
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    store
        .put(
            &long,
            b"l".to_vec(),
            PutMode::Overwrite,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    store
        .put(&forever, b"f".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();
    assert!(
        store.get(&short).await.unwrap().is_some(),
        "expired too early"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        store.get(&short).await.unwrap(),
        None,
        "a value past its TTL must read as missing"
    );
    let bulk = store
        .get_many(&[short.clone(), long.clone(), forever.clone()])
        .await
        .unwrap();
    assert!(
        bulk[0].is_none(),
        "bulk read must not return expired values"
    );
    assert!(bulk[1].is_some() && bulk[2].is_some());
    // An expired key can be created again.
    store
        .put(&short, b"again".to_vec(), PutMode::Create, None)
        .await
        .unwrap();
}

/// A bulk read returns one entry per key, in request order, `None` for missing ones,
/// with the same versions single reads give. Duplicated keys are answered twice.
pub async fn bulk_get_keeps_order_and_reports_missing(store: DynStore) {
    let ns = namespace("bulk");
    let mut keys = Vec::new();
    for i in (0..150).rev() {
        let key = format!("{ns}k{i:03}");
        if i % 3 != 0 {
            store
                .put(
                    &key,
                    format!("value-{i}").into_bytes(),
                    PutMode::Overwrite,
                    None,
                )
                .await
                .unwrap();
        }
        keys.push(key);
    }
    keys.push(keys[1].clone());
    let got = store.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), keys.len());
    for (key, value) in keys.iter().zip(&got) {
        let i: usize = key[key.len() - 3..].parse().unwrap();
        match value {
            None => assert_eq!(i % 3, 0, "{key} was written but reads as missing"),
            Some(v) => {
                assert_ne!(i % 3, 0, "{key} was never written");
                assert_eq!(v.value, format!("value-{i}").into_bytes());
                assert_eq!(
                    Some(v.version.clone()),
                    store.get(key).await.unwrap().map(|s| s.version)
                );
            }
        }
    }
}

/// Keys with the characters our layout and host names use round-trip exactly and stay
/// distinct.
pub async fn odd_keys_round_trip(store: DynStore) {
    let ns = namespace("odd");
    let suffixes = [
        "websocketmanager/instances/pod-1",
        "a:b.c-d",
        "with space",
        "plus+sign",
        "percent%2Fencoded",
        "question?mark#hash",
        "ümlaut",
        "trailing/",
        "a//b",
    ];
    for (i, s) in suffixes.iter().enumerate() {
        let key = format!("{ns}{s}");
        store
            .put(&key, i.to_string().into_bytes(), PutMode::Overwrite, None)
            .await
            .unwrap();
    }
    for (i, s) in suffixes.iter().enumerate() {
        let key = format!("{ns}{s}");
        let got = store
            .get(&key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key:?} lost"));
        assert_eq!(
            got.value,
            i.to_string().into_bytes(),
            "{key:?} read another key's value"
        );
    }
    let keys: Vec<String> = suffixes.iter().map(|s| format!("{ns}{s}")).collect();
    let bulk = store.get_many(&keys).await.unwrap();
    for (i, v) in bulk.iter().enumerate() {
        assert_eq!(
            v.as_ref().map(|v| v.value.clone()),
            Some(i.to_string().into_bytes()),
            "{:?}",
            keys[i]
        );
    }
}

/// A 64 KiB value round-trips; a value over the backend's declared limit is rejected
/// with `ValueTooLarge`, not truncated.
pub async fn large_value_round_trips(store: DynStore) {
    let key = format!("{}big", namespace("large"));
    let value: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    store
        .put(&key, value.clone(), PutMode::Overwrite, None)
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, value);
    if let Some(max) = store.capabilities().max_value_bytes {
        match store
            .put(&key, vec![b'x'; max + 1], PutMode::Overwrite, None)
            .await
        {
            Err(StoreError::ValueTooLarge { .. }) => {}
            other => panic!("a value over the declared limit must be ValueTooLarge, got {other:?}"),
        }
        assert_eq!(
            store.get(&key).await.unwrap().unwrap().value,
            value,
            "a rejected put must change nothing"
        );
    }
}

/// Index add, remove and members behave as a set.
pub async fn index_operations_are_set_semantics(store: DynStore) {
    let index = format!("{}_index", namespace("index"));
    assert!(store.index_members(&index).await.unwrap().is_empty());
    store.index_add(&index, "a").await.unwrap();
    store.index_add(&index, "b").await.unwrap();
    store.index_add(&index, "a").await.unwrap();
    assert_eq!(
        store.index_members(&index).await.unwrap(),
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
    store.index_remove(&index, "a").await.unwrap();
    store.index_remove(&index, "missing").await.unwrap();
    assert_eq!(
        store.index_members(&index).await.unwrap(),
        BTreeSet::from(["b".to_owned()])
    );
}

/// `index_prune` removes a member only while its record is missing.
pub async fn index_prune_spares_present_members(store: DynStore) {
    let ns = namespace("prune");
    let index = format!("{ns}_index");
    let (live, dead) = (format!("{ns}live"), format!("{ns}dead"));
    store
        .put(&live, b"x".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();
    store.index_add(&index, "live").await.unwrap();
    store.index_add(&index, "dead").await.unwrap();
    assert!(
        !store.index_prune(&index, "live", &live).await.unwrap(),
        "pruned a member whose record exists"
    );
    assert!(store.index_prune(&index, "dead", &dead).await.unwrap());
    assert!(
        !store.index_prune(&index, "dead", &dead).await.unwrap(),
        "pruning twice must report nothing removed"
    );
    assert_eq!(
        store.index_members(&index).await.unwrap(),
        BTreeSet::from(["live".to_owned()])
    );
}
