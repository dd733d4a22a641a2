//! Where connection records live: the [`ConnectionRepository`] trait, and
//! [`MemoryConnections`], its in-process implementation.
//!
//! The trait is deliberately narrow, like the heartbeat `Store`: a backend translates
//! four primitives to its service ([`scan`](ConnectionRepository::scan) in pages,
//! [`get`](ConnectionRepository::get), [`put`](ConnectionRepository::put) with a
//! [`PutMode`] (overwrite, create-if-absent, compare-and-swap on a [`Version`]) and
//! [`delete`](ConnectionRepository::delete) with a [`DeleteMode`]); the claim protocol
//! ([`claim`](ConnectionRepository::claim)) is written once, on top of the
//! compare-and-swap, as a provided method. A backend with a better native primitive may
//! override it, keeping its contract.
//!
//! # Contract for implementers
//! - **Versions**: every successful write returns a new version, unique per key for
//!   the key's whole history, also across delete and re-create. Versions are opaque
//!   (a counter, an ETag, a hash of nothing): compare them only for equality.
//! - **Conditional writes**: `put(record, PutMode::Update(v))` writes only if the key
//!   holds version `v`, else fails with [`RepositoryError::Conflict`] (also when the
//!   key is gone); `PutMode::Create` writes only if the key is absent, else
//!   [`RepositoryError::Conflict`]. `delete(id, DeleteMode::IfVersion(v))` likewise.
//!   The check and the write must be atomic: two claimers holding the same version must
//!   never both succeed. This is what makes a claim safe when two reclaimers see the
//!   cluster differently.
//! - **Records are written with [`ConnectionRecord::to_json`] and read with
//!   [`ConnectionRecord::from_json`]**, so unknown fields of the .NET system survive a
//!   claim. Backends whose records carry a store TTL (the seed's default is 300 s)
//!   apply their configured TTL on every write, claims included.
//! - **Scan**: [`ScanPage::next`] is `None` on the last page. A record present and
//!   unchanged for the whole scan is returned at least once (it may be returned twice,
//!   as Redis `SCAN` does; callers tolerate duplicates). A value that does not parse is
//!   reported in [`ScanPage::invalid`] with its key, never an error for the whole page
//!   and never a panic. `limit` is a hint (Redis `COUNT`); pages may be shorter or
//!   longer, and may be empty without being the last.
//! - **Errors** say what to do: [`RepositoryError::Conflict`] for a failed
//!   precondition, [`RepositoryError::Unavailable`] / [`RepositoryError::Timeout`] for
//!   transport trouble, [`RepositoryError::Corrupt`] for a value at `get` that does not
//!   parse.
//!
//! ```
//! use chrono::Utc;
//! use heartbeat_core::{Incarnation, InstanceId, PutMode};
//! use reclaimer::{Claim, ClaimOutcome, ConnectionId, ConnectionRecord, ConnectionRepository,
//!     MemoryConnections};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = MemoryConnections::new();
//! let dead: InstanceId = "pod-a".parse()?;
//! let me: InstanceId = "pod-b".parse()?;
//! let id: ConnectionId = "c-1".parse()?;
//! repo.create(&ConnectionRecord::new(id.clone(), "wss://x.test", dead, None, Utc::now())).await?;
//! let current = repo.get(&id).await?.ok_or("gone")?;
//! let claim = Claim { owner: me.clone(), incarnation: Incarnation::from_u64(7), at: Utc::now() };
//! assert!(matches!(repo.claim(&current, &claim).await?, ClaimOutcome::Won(_)));
//! // The same version again: somebody (we) already won.
//! assert_eq!(repo.claim(&current, &claim).await?, ClaimOutcome::Conflict);
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use heartbeat_core::{DeleteMode, Incarnation, InstanceId, PutMode, StoreError, Version};

use crate::connection::{ConnectionId, ConnectionRecord, ConnectionRecordError, StoredConnection};

/// Result of repository operations.
pub type RepositoryResult<T> = Result<T, RepositoryError>;

/// Errors of repository operations. Every variant names what it concerns and says what
/// to try.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// A conditional write or delete found another version (or no record): somebody
    /// changed the record since it was read. Re-read and decide again.
    #[error("conflict on connection {id}: the record changed since it was read; re-read and retry")]
    Conflict {
        /// The connection.
        id: ConnectionId,
    },
    /// The value stored for a connection does not parse.
    #[error("connection record at {key:?} is corrupt: {source}")]
    Corrupt {
        /// The store key.
        key: String,
        /// Why it does not parse.
        #[source]
        source: ConnectionRecordError,
    },
    /// A record could not be serialized.
    #[error(transparent)]
    Record(#[from] ConnectionRecordError),
    /// The repository could not be reached or refused to serve.
    #[error(
        "connection repository unavailable ({backend}): {message}; check that the store is running and reachable"
    )]
    Unavailable {
        /// The backend's name.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The operation did not complete in time.
    #[error(
        "connection repository operation {what} timed out after {after:?}; the store is slow or stalled"
    )]
    Timeout {
        /// What was being done (operation and key).
        what: String,
        /// The time allowed.
        after: Duration,
    },
    /// The backend does not support this operation.
    #[error("{backend} does not support {what}")]
    NotSupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation.
        what: &'static str,
    },
    /// An error of a heartbeat [`heartbeat_core::Store`] used underneath (for
    /// repositories built on one). Map `StoreError::Conflict` to
    /// [`RepositoryError::Conflict`] yourself: it carries the connection id.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Any other backend error.
    #[error("connection repository error ({backend}): {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl RepositoryError {
    /// Translates an error of the heartbeat [`heartbeat_core::Store`] a repository is
    /// built on, met while working on connection `id` (None: the index or a batch). A
    /// conflict on a record becomes [`RepositoryError::Conflict`] naming the connection;
    /// unavailability and timeouts keep their kind; anything else is wrapped.
    pub fn from_store(e: StoreError, id: Option<&ConnectionId>) -> Self {
        match (e, id) {
            (StoreError::Conflict { .. }, Some(id)) => Self::Conflict { id: id.clone() },
            (StoreError::Timeout { key, after }, _) => Self::Timeout { what: key, after },
            (
                StoreError::Unavailable {
                    backend,
                    message,
                    source,
                },
                _,
            ) => Self::Unavailable {
                backend,
                message,
                source,
            },
            (e, _) => Self::Store(e),
        }
    }
}

/// Where a scan continues: opaque to callers, meaningful only to the repository that
/// returned it (an offset, a Redis `SCAN` cursor, the last key seen).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScanCursor(String);

impl ScanCursor {
    /// Wraps a backend's cursor token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token as the backend gave it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A value found by a scan that is not a valid connection record.
#[derive(Debug)]
pub struct InvalidRecord {
    /// The store key it was found at.
    pub key: String,
    /// Why it does not parse (names the record's id when it could be read).
    pub error: ConnectionRecordError,
}

/// One page of a scan.
#[derive(Debug, Default)]
pub struct ScanPage {
    /// Valid records, each with its version.
    pub records: Vec<StoredConnection>,
    /// Values that did not parse.
    pub invalid: Vec<InvalidRecord>,
    /// Where to continue; `None` on the last page.
    pub next: Option<ScanCursor>,
}

/// Who takes a connection over: written into the record by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The new owner (`instanceId`).
    pub owner: InstanceId,
    /// The new owner's life (`ownerIncarnation`).
    pub incarnation: Incarnation,
    /// When (`updatedAt`, the claimer's wall clock).
    pub at: DateTime<Utc>,
}

/// What a claim achieved.
// `Won` is the common, useful case: not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The record now belongs to the claimer: the new record and its version.
    Won(StoredConnection),
    /// The record changed (or was deleted) since it was read: another claimer won, or
    /// its owner touched it. Not an error: do not take the connection over.
    Conflict,
}

/// Storage of connection records, as the reclaimer needs it and applications use it.
///
/// Object safe: use it as `Arc<dyn ConnectionRepository>`. See the module docs for the
/// contract an implementation must keep.
#[async_trait]
pub trait ConnectionRepository: Send + Sync + fmt::Debug {
    /// A short name of the backend, for logs and errors (`"memory"`, `"redis"`, `"dapr"`).
    fn backend(&self) -> &'static str;

    /// One page of records, starting at `cursor` (`None`: from the beginning), about
    /// `limit` records long.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> RepositoryResult<ScanPage>;

    /// The record of one connection with its version, `None` if there is none. A value
    /// that does not parse is [`RepositoryError::Corrupt`].
    async fn get(&self, id: &ConnectionId) -> RepositoryResult<Option<StoredConnection>>;

    /// Writes `record` (at the key of `record.id`) according to `mode`, returning the
    /// new version. A failed precondition is [`RepositoryError::Conflict`].
    async fn put(&self, record: &ConnectionRecord, mode: PutMode) -> RepositoryResult<Version>;

    /// Deletes the record of `id` according to `mode`. Deleting a missing record
    /// unconditionally succeeds; a failed precondition is [`RepositoryError::Conflict`].
    async fn delete(&self, id: &ConnectionId, mode: DeleteMode) -> RepositoryResult<()>;

    /// Creates a record that must not exist yet ([`RepositoryError::Conflict`] if it
    /// does), returning it with its version.
    async fn create(&self, record: &ConnectionRecord) -> RepositoryResult<StoredConnection> {
        let version = self.put(record, PutMode::Create).await?;
        Ok(StoredConnection {
            record: record.clone(),
            version,
        })
    }

    /// Takes the connection over, by compare-and-swap on the version `current` was read
    /// with: re-stamps `instanceId`, `ownerIncarnation` and `updatedAt` from `claim`
    /// and keeps every other field (unknown ones included). If the record changed or
    /// disappeared since it was read, nothing is written and the outcome is
    /// [`ClaimOutcome::Conflict`], so two claimers can never both win.
    async fn claim(
        &self,
        current: &StoredConnection,
        claim: &Claim,
    ) -> RepositoryResult<ClaimOutcome> {
        let next = current
            .record
            .restamped(&claim.owner, claim.incarnation, claim.at);
        match self
            .put(&next, PutMode::Update(current.version.clone()))
            .await
        {
            Ok(version) => Ok(ClaimOutcome::Won(StoredConnection {
                record: next,
                version,
            })),
            Err(RepositoryError::Conflict { .. }) => Ok(ClaimOutcome::Conflict),
            Err(e) => Err(e),
        }
    }
}

/// An in-process [`ConnectionRepository`]: a real implementation (atomic
/// compare-and-swap, unique versions, values stored as the JSON the other backends
/// store), for tests, simulations and single-process applications.
///
/// Clones share the same records. No TTL: records stay until deleted.
#[derive(Debug, Clone, Default)]
pub struct MemoryConnections {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    records: BTreeMap<String, (Vec<u8>, u64)>,
    next_version: u64,
}

/// The key prefix of the seed's layout (`websocket-<id>`), used by [`MemoryConnections`]
/// to name keys in [`InvalidRecord`]s and errors.
pub const SEED_KEY_PREFIX: &str = "websocket-";

impl MemoryConnections {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored values (valid or not).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().records.is_empty()
    }

    /// Stores raw bytes for `id`, unconditionally (tests: records written by another
    /// system, or corrupt ones). Returns the new version.
    pub fn put_raw(&self, id: &str, value: Vec<u8>) -> Version {
        let mut inner = self.lock();
        let v = inner.bump();
        inner.records.insert(id.to_owned(), (value, v));
        Version::new(v.to_string())
    }

    /// The raw bytes stored for `id`, if any.
    pub fn get_raw(&self, id: &str) -> Option<Vec<u8>> {
        self.lock().records.get(id).map(|(v, _)| v.clone())
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave the map half-written (every
        // change is one insert or remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryInner {
    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    fn matches(&self, id: &str, expected: &Version) -> bool {
        self.records
            .get(id)
            .is_some_and(|(_, v)| expected.as_str() == v.to_string())
    }
}

fn key_of(id: &str) -> String {
    format!("{SEED_KEY_PREFIX}{id}")
}

#[async_trait]
impl ConnectionRepository for MemoryConnections {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> RepositoryResult<ScanPage> {
        let limit = limit.max(1);
        let inner = self.lock();
        let start = match cursor {
            Some(c) => Bound::Excluded(c.as_str().to_owned()),
            None => Bound::Unbounded,
        };
        let mut page = ScanPage::default();
        let mut last = None;
        let mut more = false;
        for (taken, (id, (value, version))) in
            inner.records.range((start, Bound::Unbounded)).enumerate()
        {
            if taken == limit {
                more = true;
                break;
            }
            last = Some(id.clone());
            match ConnectionRecord::from_json_at(id, value) {
                Ok(record) => page.records.push(StoredConnection {
                    record,
                    version: Version::new(version.to_string()),
                }),
                Err(error) => page.invalid.push(InvalidRecord {
                    key: key_of(id),
                    error,
                }),
            }
        }
        if more {
            page.next = last.map(ScanCursor::new);
        }
        Ok(page)
    }

    async fn get(&self, id: &ConnectionId) -> RepositoryResult<Option<StoredConnection>> {
        let inner = self.lock();
        let Some((value, version)) = inner.records.get(id.as_str()) else {
            return Ok(None);
        };
        let record = ConnectionRecord::from_json_at(id.as_str(), value).map_err(|source| {
            RepositoryError::Corrupt {
                key: key_of(id.as_str()),
                source,
            }
        })?;
        Ok(Some(StoredConnection {
            record,
            version: Version::new(version.to_string()),
        }))
    }

    async fn put(&self, record: &ConnectionRecord, mode: PutMode) -> RepositoryResult<Version> {
        let value = record.to_json()?;
        let id = record.id.as_str();
        let mut inner = self.lock();
        let allowed = match &mode {
            PutMode::Overwrite => true,
            PutMode::Create => !inner.records.contains_key(id),
            PutMode::Update(expected) => inner.matches(id, expected),
        };
        if !allowed {
            return Err(RepositoryError::Conflict {
                id: record.id.clone(),
            });
        }
        let v = inner.bump();
        inner.records.insert(id.to_owned(), (value, v));
        Ok(Version::new(v.to_string()))
    }

    async fn delete(&self, id: &ConnectionId, mode: DeleteMode) -> RepositoryResult<()> {
        let mut inner = self.lock();
        if let DeleteMode::IfVersion(expected) = &mode
            && !inner.matches(id.as_str(), expected)
        {
            return Err(RepositoryError::Conflict { id: id.clone() });
        }
        inner.records.remove(id.as_str());
        Ok(())
    }
}
