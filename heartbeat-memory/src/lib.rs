//! The in-process heartbeat store: the embedded default backend.
//!
//! [`MemoryStore`] is a real implementation of [`Store`], not a mock: many services in
//! one process share it by cloning, and it keeps the full contract (unique versions,
//! compare-and-swap, TTLs). TTLs run on tokio's clock, so tests with
//! `tokio::time::pause()` can move time forward without sleeping.
//!
//! For simulations it can misbehave on demand: [`MemoryStore::set_fault`] makes every call
//! through one handle fail, stall or slow down, which is how tests model an outage or a
//! network partition between one instance and the store. [`MemoryStore::handle`] gives a
//! handle on the same data with its own fault switch.
//!
//! ```
//! use heartbeat_core::{PutMode, Store};
//! use heartbeat_memory::{Fault, MemoryStore};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), heartbeat_core::StoreError> {
//! let store = MemoryStore::new();
//! let v1 = store.put("k", b"one".to_vec(), PutMode::Create, None).await?;
//! assert!(store.put("k", b"two".to_vec(), PutMode::Create, None).await.unwrap_err().is_conflict());
//! store.put("k", b"two".to_vec(), PutMode::Update(v1), None).await?;
//!
//! let cut_off = store.handle();
//! cut_off.set_fault(Fault::Unavailable);
//! assert!(cut_off.get("k").await.is_err());
//! assert!(store.get("k").await?.is_some());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use heartbeat_core::{
    Capabilities, DeleteMode, PutMode, Store, StoreError, StoreResult, Version, Versioned,
};
use tokio::sync::watch;
use tokio::time::Instant;

const BACKEND: &str = "memory";

/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// How a handle misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behaves normally.
    #[default]
    None,
    /// Every call fails at once with [`StoreError::Unavailable`].
    Unavailable,
    /// Every call hangs until the fault is cleared (callers' timeouts fire).
    Stall,
    /// Every call is delayed by this much.
    Delay(Duration),
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    version: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Default)]
struct Shared {
    entries: Mutex<HashMap<String, Entry>>,
    next_version: AtomicU64,
    writes: AtomicU64,
}

/// An in-process store. Clones share data and fault switch; see [`MemoryStore::handle`].
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    fault: Arc<watch::Sender<Fault>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared::default()),
            fault: Arc::new(watch::channel(Fault::None).0),
        }
    }

    /// Another handle on the same data, with its own fault switch (one instance's link
    /// to the store).
    pub fn handle(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            fault: Arc::new(watch::channel(Fault::None).0),
        }
    }

    /// Makes every call through this handle (and its clones) misbehave.
    pub fn set_fault(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The current fault of this handle.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Number of live (unexpired) keys.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.entries().values().filter(|e| e.live(now)).count()
    }

    /// Whether no live key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every key, as a store restarted without persistence would.
    pub fn clear(&self) {
        self.entries().clear();
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.shared
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn next_version(&self) -> u64 {
        self.shared.next_version.fetch_add(1, Ordering::Relaxed) + 1
    }

    async fn gate(&self) -> StoreResult<()> {
        let mut rx = self.fault.subscribe();
        loop {
            let fault = *rx.borrow_and_update();
            match fault {
                Fault::None => return Ok(()),
                Fault::Unavailable => {
                    return Err(StoreError::unavailable(
                        BACKEND,
                        "injected fault: store unavailable",
                    ));
                }
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    return Ok(());
                }
                Fault::Stall => {
                    if rx.changed().await.is_err() {
                        return Err(StoreError::unavailable(BACKEND, "store handle dropped"));
                    }
                }
            }
        }
    }

    fn purge_expired_now_and_then(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        if self
            .shared
            .writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
        {
            entries.retain(|_, e| e.live(now));
        }
    }
}

fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "keys must not be empty".into(),
        });
    }
    Ok(())
}

fn version(v: u64) -> Version {
    Version::new(v.to_string())
}

fn current(entries: &HashMap<String, Entry>, key: &str, now: Instant) -> Option<u64> {
    entries.get(key).filter(|e| e.live(now)).map(|e| e.version)
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            native_sets: false,
            max_value_bytes: Some(MAX_VALUE_BYTES),
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        self.gate().await?;
        let now = Instant::now();
        Ok(self
            .entries()
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| Versioned {
                value: e.value.clone(),
                version: version(e.version),
            }))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        self.gate().await?;
        let now = Instant::now();
        let entries = self.entries();
        Ok(keys
            .iter()
            .map(|k| {
                entries.get(k).filter(|e| e.live(now)).map(|e| Versioned {
                    value: e.value.clone(),
                    version: version(e.version),
                })
            })
            .collect())
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::ValueTooLarge {
                key: key.to_owned(),
                len: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        self.gate().await?;
        let now = Instant::now();
        let mut entries = self.entries();
        let existing = current(&entries, key, now);
        let allowed = match &mode {
            PutMode::Overwrite => true,
            PutMode::Create => existing.is_none(),
            PutMode::Update(v) => existing.is_some_and(|e| e.to_string() == v.as_str()),
        };
        if !allowed {
            return Err(StoreError::Conflict {
                key: key.to_owned(),
            });
        }
        let v = self.next_version();
        let expires = ttl.map(|t| now + t);
        entries.insert(
            key.to_owned(),
            Entry {
                value,
                version: v,
                expires,
            },
        );
        self.purge_expired_now_and_then(&mut entries, now);
        Ok(version(v))
    }

    async fn delete(&self, key: &str, mode: DeleteMode) -> StoreResult<()> {
        self.gate().await?;
        let now = Instant::now();
        let mut entries = self.entries();
        let existing = current(&entries, key, now);
        match mode {
            DeleteMode::Unconditional => {}
            DeleteMode::IfVersion(v) => {
                if existing.is_none_or(|e| e.to_string() != v.as_str()) {
                    return Err(StoreError::Conflict {
                        key: key.to_owned(),
                    });
                }
            }
        }
        entries.remove(key);
        Ok(())
    }
}
