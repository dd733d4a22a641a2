//! The store trait: the narrow key-value contract every backend implements.
//!
//! The protocol (join, beat, discover, leave, prune) is written once, in this crate,
//! against [`Store`]. A backend only translates five primitives to its service: versioned
//! get, bulk get, put (unconditional, create-if-absent or compare-and-swap on a version,
//! each with an optional TTL) and delete (unconditional or on a version). The index
//! operations have default implementations on top of compare-and-swap (see
//! [`crate::index`]); a backend with native sets (Redis) overrides them with atomic ones.
//!
//! Like `object_store`, a failed precondition is its own error variant
//! ([`StoreError::Conflict`]) because callers act on it: they re-read and retry, or they
//! learn that somebody else won.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

/// An opaque version token (a counter, an ETag, a hash). Compare only for equality.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// Wraps a backend's version token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token as the backend gave it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored value and the version it had when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The raw bytes.
    pub value: Vec<u8>,
    /// The version at read time; pass it to [`PutMode::Update`] or [`DeleteMode::IfVersion`].
    pub version: Version,
}

/// How a put treats an existing value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Write whatever is there.
    Overwrite,
    /// Write only if the key is absent; otherwise [`StoreError::Conflict`].
    Create,
    /// Write only if the key holds this version; otherwise [`StoreError::Conflict`]
    /// (including when the key is gone).
    Update(Version),
}

/// How a delete treats the existing value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteMode {
    /// Delete whatever is there; deleting a missing key succeeds.
    Unconditional,
    /// Delete only if the key holds this version; otherwise [`StoreError::Conflict`]
    /// (including when the key is gone).
    IfVersion(Version),
}

/// What a backend can do natively. The protocol adapts to it instead of assuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Values expire by themselves when put with a TTL. Without it, liveness still
    /// works (it is judged by change), but records of dead instances stay until pruned.
    pub ttl: bool,
    /// The backend overrides the index operations with native atomic set operations.
    pub native_sets: bool,
    /// Largest value the backend accepts, if it has a limit.
    pub max_value_bytes: Option<usize>,
}

/// Errors of store operations. Every variant names the key and says what to try.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write or delete found another version (or no value) at the key.
    #[error("conflict on key {key:?}: it changed since it was read; re-read and retry")]
    Conflict {
        /// The key.
        key: String,
    },
    /// The store could not be reached or refused to serve.
    #[error(
        "store unavailable ({backend}): {message}; check that the store is running and reachable"
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
    #[error("store operation on {key:?} timed out after {after:?}; the store is slow or stalled")]
    Timeout {
        /// The key (or a description of the batch).
        key: String,
        /// The time allowed.
        after: Duration,
    },
    /// The value exceeds what the backend accepts.
    #[error("value for key {key:?} is {len} bytes; the backend accepts at most {max}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        len: usize,
        /// The backend's limit.
        max: usize,
    },
    /// The key cannot be used with this backend.
    #[error("key {key:?} is not valid for this store: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A stored value (for example the index) is not what the protocol wrote.
    #[error("value at key {key:?} is corrupt: {reason}; inspect or delete it")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend cannot do this operation.
    #[error("operation not supported by {backend}: {what}")]
    NotSupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation.
        what: String,
    },
    /// Any other backend failure.
    #[error("{backend} error: {message}")]
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

impl StoreError {
    /// Whether this is a [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// A [`StoreError::Unavailable`] without a source.
    pub fn unavailable(backend: &'static str, message: impl Into<String>) -> Self {
        Self::Unavailable {
            backend,
            message: message.into(),
            source: None,
        }
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The key-value contract a heartbeat backend implements.
///
/// Contract (checked for every backend by the `heartbeat-conformance` crate):
/// - every successful write produces a version different from all earlier versions of
///   that key, even after a delete and re-create;
/// - conditional writes and deletes fail with [`StoreError::Conflict`] when the version
///   does not match or the key is absent, and change nothing;
/// - [`Store::get_many`] returns one entry per requested key, in request order;
/// - a value put with a TTL is gone (reads as missing) once the TTL has passed.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short backend name for logs and errors (`memory`, `redis`, ...).
    fn backend(&self) -> &'static str;

    /// What the backend can do natively.
    fn capabilities(&self) -> Capabilities;

    /// Reads one key.
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>>;

    /// Reads many keys in one round trip where the backend allows; the result has one
    /// entry per key, in order, `None` for missing keys.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>>;

    /// Writes `value` at `key` according to `mode`, expiring it after `ttl` if given and
    /// supported. Returns the new version.
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version>;

    /// Deletes `key` according to `mode`.
    async fn delete(&self, key: &str, mode: DeleteMode) -> StoreResult<()>;

    /// The members of the set stored at `index_key` (empty if absent).
    async fn index_members(&self, index_key: &str) -> StoreResult<BTreeSet<String>> {
        crate::index::members(self, index_key).await
    }

    /// Adds `member` to the set at `index_key`. The default implementation always
    /// rewrites the index (even when `member` is present) so that a concurrent
    /// [`Store::index_prune`] that read the index before this call fails its
    /// compare-and-swap and re-checks.
    async fn index_add(&self, index_key: &str, member: &str) -> StoreResult<()> {
        crate::index::add(self, index_key, member).await
    }

    /// Removes `member` from the set at `index_key`.
    async fn index_remove(&self, index_key: &str, member: &str) -> StoreResult<()> {
        crate::index::remove(self, index_key, member).await
    }

    /// Removes `member` from the set at `index_key` only while `member_key` is missing,
    /// so an instance that re-joined in the meantime is never pruned. Returns whether
    /// the member was removed.
    async fn index_prune(
        &self,
        index_key: &str,
        member: &str,
        member_key: &str,
    ) -> StoreResult<bool> {
        crate::index::prune(self, index_key, member, member_key).await
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        (**self).get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        (**self).get_many(keys).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version> {
        (**self).put(key, value, mode, ttl).await
    }
    async fn delete(&self, key: &str, mode: DeleteMode) -> StoreResult<()> {
        (**self).delete(key, mode).await
    }
    async fn index_members(&self, index_key: &str) -> StoreResult<BTreeSet<String>> {
        (**self).index_members(index_key).await
    }
    async fn index_add(&self, index_key: &str, member: &str) -> StoreResult<()> {
        (**self).index_add(index_key, member).await
    }
    async fn index_remove(&self, index_key: &str, member: &str) -> StoreResult<()> {
        (**self).index_remove(index_key, member).await
    }
    async fn index_prune(
        &self,
        index_key: &str,
        member: &str,
        member_key: &str,
    ) -> StoreResult<bool> {
        (**self).index_prune(index_key, member, member_key).await
    }
}
