//! The instance index on a plain key-value store: a JSON array of ids changed only by
//! compare-and-swap.
//!
//! The seed system read the index, changed it and wrote it back without any condition,
//! so two instances joining at once could each write a set without the other: one id
//! was lost. Here every change is a conditional put on the version that was read; a
//! conflict means somebody else changed the set first, so we re-read and try again. Each
//! round some writer wins, so with N concurrent writers nobody needs more than N rounds;
//! [`MAX_ATTEMPTS`] bounds the loop and a short random backoff spreads the retries.
//!
//! These functions are the default implementations of the index methods of
//! [`Store`]; a backend with native sets overrides them.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::store::{PutMode, Store, StoreError, StoreResult, Version};

/// How many compare-and-swap rounds an index change may take before giving up.
pub const MAX_ATTEMPTS: u32 = 200;

/// Reads the index: the set and the version it had (None when absent).
pub async fn read<S: Store + ?Sized>(
    store: &S,
    index_key: &str,
) -> StoreResult<(BTreeSet<String>, Option<Version>)> {
    match store.get(index_key).await? {
        None => Ok((BTreeSet::new(), None)),
        Some(v) => Ok((decode(index_key, &v.value)?, Some(v.version))),
    }
}

/// Parses an index value (a JSON array of strings, as System.Text.Json writes a
/// `HashSet<string>`).
pub fn decode(index_key: &str, bytes: &[u8]) -> StoreResult<BTreeSet<String>> {
    serde_json::from_slice::<Vec<String>>(bytes)
        .map(|v| v.into_iter().collect())
        .map_err(|e| StoreError::Corrupt {
            key: index_key.to_owned(),
            reason: format!("the index is not a JSON array of strings ({e})"),
        })
}

/// Serializes an index value.
pub fn encode(index_key: &str, members: &BTreeSet<String>) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(members).map_err(|e| StoreError::Corrupt {
        key: index_key.to_owned(),
        reason: format!("the index could not be serialized ({e})"),
    })
}

/// Default [`Store::index_members`].
pub async fn members<S: Store + ?Sized>(
    store: &S,
    index_key: &str,
) -> StoreResult<BTreeSet<String>> {
    Ok(read(store, index_key).await?.0)
}

/// Default [`Store::index_add`]: always rewrites, even when present (see the trait docs).
pub async fn add<S: Store + ?Sized>(store: &S, index_key: &str, member: &str) -> StoreResult<()> {
    update(store, index_key, |set| {
        set.insert(member.to_owned());
        true
    })
    .await
    .map(|_| ())
}

/// Default [`Store::index_remove`].
pub async fn remove<S: Store + ?Sized>(
    store: &S,
    index_key: &str,
    member: &str,
) -> StoreResult<()> {
    update(store, index_key, |set| set.remove(member))
        .await
        .map(|_| ())
}

/// Default [`Store::index_prune`]: removes `member` only if, after reading the index,
/// `member_key` is missing. A joiner writes its heartbeat before it (re)writes the
/// index, so if it raced us, our compare-and-swap fails and the re-check sees the key.
pub async fn prune<S: Store + ?Sized>(
    store: &S,
    index_key: &str,
    member: &str,
    member_key: &str,
) -> StoreResult<bool> {
    for attempt in 0..MAX_ATTEMPTS {
        let (mut set, version) = read(store, index_key).await?;
        if !set.contains(member) {
            return Ok(false);
        }
        if store.get(member_key).await?.is_some() {
            return Ok(false);
        }
        set.remove(member);
        match write(store, index_key, &set, version).await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_conflict() => backoff(attempt).await,
            Err(e) => return Err(e),
        }
    }
    Err(exhausted(index_key))
}

/// Applies `change` to the set by compare-and-swap until it sticks. `change` returns
/// whether it changed anything worth writing. Returns whether a write happened.
pub async fn update<S, F>(store: &S, index_key: &str, mut change: F) -> StoreResult<bool>
where
    S: Store + ?Sized,
    F: FnMut(&mut BTreeSet<String>) -> bool + Send,
{
    for attempt in 0..MAX_ATTEMPTS {
        let (mut set, version) = read(store, index_key).await?;
        if !change(&mut set) {
            return Ok(false);
        }
        match write(store, index_key, &set, version).await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_conflict() => backoff(attempt).await,
            Err(e) => return Err(e),
        }
    }
    Err(exhausted(index_key))
}

async fn write<S: Store + ?Sized>(
    store: &S,
    index_key: &str,
    set: &BTreeSet<String>,
    version: Option<Version>,
) -> StoreResult<()> {
    let mode = match version {
        Some(v) => PutMode::Update(v),
        None => PutMode::Create,
    };
    store
        .put(index_key, encode(index_key, set)?, mode, None)
        .await
        .map(|_| ())
}

async fn backoff(attempt: u32) {
    // Up to 1 ms in the first rounds, growing to at most 32 ms: enough to let a burst
    // of joiners through one by one without slowing a lone writer.
    let ceiling_us = 1_000u64 << attempt.min(5);
    let wait = rand::random::<u64>() % ceiling_us;
    tokio::time::sleep(Duration::from_micros(wait)).await;
}

fn exhausted(index_key: &str) -> StoreError {
    StoreError::Backend {
        backend: "index",
        message: format!(
            "index {index_key:?} kept changing: {MAX_ATTEMPTS} compare-and-swap attempts conflicted; \
             too many concurrent writers, retry later"
        ),
        source: None,
    }
}
