//! The instance index on a Dapr state store: a JSON array at one key, changed by
//! compare-and-swap on its ETag (one read and one write per attempt, no read-back), and
//! **group commit**: concurrent changes made through one [`DaprStore`] are queued, and
//! the first caller to get the key's lock writes all of them in one compare-and-swap.
//! A burst of joins in one process (the conformance suite starts fifty at once) then
//! costs a few writes instead of rounds of conflicts through the sidecar. Separate
//! processes still meet only at the compare-and-swap, which keeps every id.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use heartbeat_core::index;
use heartbeat_core::{StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::client::BACKEND;
use crate::store::{DaprStore, EtagSemantics, invalid_key};
use crate::value;

/// A change to an index waiting to be written.
#[derive(Debug, Clone)]
pub(crate) enum IndexOp {
    Add(String),
    Remove(String),
}

type IndexWaiter = (IndexOp, oneshot::Sender<StoreResult<()>>);

/// Group commit of index changes made concurrently through one store: the first
/// caller to get a key's lock writes every change queued so far in one
/// compare-and-swap, so fifty instances of one process joining at once cost a few
/// writes instead of fifty rounds of conflicts.
#[derive(Debug, Default)]
pub(crate) struct IndexBatches {
    pending: std::sync::Mutex<HashMap<String, Vec<IndexWaiter>>>,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl IndexBatches {
    fn push(&self, key: &str, waiter: IndexWaiter) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.entry(key.to_owned()).or_default().push(waiter);
    }

    fn take(&self, key: &str) -> Vec<IndexWaiter> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(key).unwrap_or_default()
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_owned()).or_default().clone()
    }
}

/// A copy of an error for the other callers of a batch (errors are not `Clone`).
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict { key } => StoreError::Conflict { key: key.clone() },
        StoreError::Timeout { key, after } => StoreError::Timeout {
            key: key.clone(),
            after: *after,
        },
        StoreError::Unavailable {
            backend, message, ..
        } => StoreError::unavailable(backend, message.clone()),
        StoreError::InvalidKey { key, reason } => StoreError::InvalidKey {
            key: key.clone(),
            reason: reason.clone(),
        },
        StoreError::Corrupt { key, reason } => StoreError::Corrupt {
            key: key.clone(),
            reason: reason.clone(),
        },
        other => StoreError::Backend {
            backend: BACKEND,
            message: other.to_string(),
            source: None,
        },
    }
}

impl DaprStore {
    /// Reads the index: its members and the ETag it had (`None` when absent).
    pub(crate) async fn read_index(
        &self,
        index_key: &str,
    ) -> StoreResult<(BTreeSet<String>, Option<String>)> {
        match self.client.get(index_key).await? {
            None => Ok((BTreeSet::new(), None)),
            Some(raw) => {
                let etag = raw.etag.clone();
                let value = self.decode(index_key, raw)?.value;
                Ok((index::decode(index_key, &value)?, Some(etag)))
            }
        }
    }

    /// Writes the index by compare-and-swap on the ETag read (create-if-absent when
    /// there was none): one read and one write per attempt, no read-back.
    pub(crate) async fn write_index(
        &self,
        index_key: &str,
        set: &BTreeSet<String>,
        etag: Option<&str>,
    ) -> StoreResult<()> {
        let json = value::encode(&index::encode(index_key, set)?);
        let ttl = self.ttl_seconds(None);
        match (self.semantics, etag) {
            (EtagSemantics::Strict, None) => self.save(index_key, &json, None, true, ttl).await,
            (EtagSemantics::Strict, Some(e)) => {
                self.save(index_key, &json, Some(e), true, ttl).await
            }
            (EtagSemantics::Redis, None) => {
                self.save(index_key, &json, Some("-1"), false, ttl).await
            }
            (EtagSemantics::Redis, Some(e)) => {
                self.save(index_key, &json, Some(e), false, ttl).await
            }
        }
    }

    /// Applies `change` to the index until a compare-and-swap sticks; returns whether
    /// a write happened.
    async fn update_index<F>(&self, index_key: &str, mut change: F) -> StoreResult<bool>
    where
        F: FnMut(&mut BTreeSet<String>) -> bool + Send,
    {
        invalid_key(index_key)?;
        for attempt in 0..index::MAX_ATTEMPTS {
            let (mut set, etag) = self.read_index(index_key).await?;
            if !change(&mut set) {
                return Ok(false);
            }
            match self.write_index(index_key, &set, etag.as_deref()).await {
                Ok(()) => return Ok(true),
                Err(e) if e.is_conflict() => index_backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(index_exhausted(index_key))
    }
}

impl DaprStore {
    /// Queues `op` and writes it with whatever else is queued for `index_key` (see
    /// [`IndexBatches`]).
    pub(crate) async fn batched(&self, index_key: &str, op: IndexOp) -> StoreResult<()> {
        invalid_key(index_key)?;
        loop {
            let (tx, rx) = oneshot::channel();
            self.batches.push(index_key, (op.clone(), tx));
            let lock = self.batches.lock_for(index_key);
            {
                let _guard = lock.lock().await;
                let batch = self.batches.take(index_key);
                if !batch.is_empty() {
                    let ops: Vec<IndexOp> = batch.iter().map(|(op, _)| op.clone()).collect();
                    let result = self
                        .update_index(index_key, |set| {
                            let mut changed = false;
                            for op in &ops {
                                match op {
                                    // Always rewrite on add (see `Store::index_add`).
                                    IndexOp::Add(m) => {
                                        set.insert(m.clone());
                                        changed = true;
                                    }
                                    IndexOp::Remove(m) => changed |= set.remove(m),
                                }
                            }
                            changed
                        })
                        .await
                        .map(|_| ());
                    for (_, waiter) in batch {
                        let copy = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(copy_error(e)),
                        };
                        let _ = waiter.send(copy);
                    }
                }
            }
            match rx.await {
                Ok(result) => return result,
                // The caller that took our change was cancelled: queue it again.
                Err(_) => continue,
            }
        }
    }
}

pub(crate) async fn index_backoff(attempt: u32) {
    // Up to 2 ms at first, growing to at most 64 ms: spreads a burst of joiners.
    let ceiling_us = 2_000u64 << attempt.min(5);
    let wait = rand::random::<u64>() % ceiling_us;
    tokio::time::sleep(Duration::from_micros(wait)).await;
}

pub(crate) fn index_exhausted(index_key: &str) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: format!(
            "index {index_key:?} kept changing: {} compare-and-swap attempts conflicted; too many concurrent writers, retry later",
            index::MAX_ATTEMPTS
        ),
        source: None,
    }
}

impl DaprStore {
    /// [`heartbeat_core::Store::index_prune`] on the index (not batched: it must see
    /// its own compare-and-swap fail when a joiner raced it).
    pub(crate) async fn prune_index(
        &self,
        index_key: &str,
        member: &str,
        member_key: &str,
    ) -> StoreResult<bool> {
        invalid_key(index_key)?;
        invalid_key(member_key)?;
        for attempt in 0..index::MAX_ATTEMPTS {
            let (mut set, etag) = self.read_index(index_key).await?;
            if !set.contains(member) {
                return Ok(false);
            }
            // Read after the index: a joiner writes its record before the index, so if
            // it raced us, our compare-and-swap fails and this check runs again.
            if self.client.get(member_key).await?.is_some() {
                return Ok(false);
            }
            set.remove(member);
            match self.write_index(index_key, &set, etag.as_deref()).await {
                Ok(()) => return Ok(true),
                Err(e) if e.is_conflict() => index_backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(index_exhausted(index_key))
    }
}
