//! [`RedisConnections`]: the reclaimer's [`ConnectionRepository`] on Redis, standalone
//! or Cluster, sharing the connection of a [`RedisStore`].
//!
//! Layout (defaults; both configurable):
//!
//! ```text
//! websocket-<id>                          the record: camelCase JSON, as the seed writes it
//! heartbeat-version:{<tag>}websocket-<id> its version token (see crate::layout)
//! websocket-index                         a Redis set of the connection ids
//! ```
//!
//! Every write of a record is the store's `PUT` script (compare-and-swap on the version
//! token for a claim, create-if-absent for a create, with the configured TTL), followed
//! by `SADD` of the id to the index. A delete removes the record (conditionally on a
//! version if asked), then prunes the id from the index *only while the record is
//! missing*, so a concurrent re-create is never hidden. Writers add the id after the
//! record exists, and pruners re-check the record after removing the id (see
//! [`RedisStore::index_prune`](heartbeat_core::Store::index_prune)), so an existing
//! record never stays out of the index. Index entries whose record expired (TTL) or
//! was deleted around this crate are pruned by scans.
//!
//! A scan page is two round trips: `SSCAN` of the index (`COUNT` = the page size) and
//! one `MGET` of the page's records and versions. The index is one key, so it works the
//! same in a Cluster (where the `MGET` is split by slot).
//!
//! A connection id that would make its record key equal the index key (`index` with the
//! default layout) is rejected with [`RepositoryError::NotSupported`].

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use heartbeat_core::{DeleteMode, PutMode, Store, Version};
use reclaimer::{
    ConnectionId, ConnectionRecord, ConnectionRepository, InvalidRecord, RepositoryError,
    RepositoryResult, ScanCursor, ScanPage, StoredConnection,
};

use crate::client::BACKEND;
use crate::store::RedisStore;

/// Default prefix of connection record keys (the seed's: `websocket-<id>`).
pub const DEFAULT_RECORD_PREFIX: &str = "websocket-";
/// Default key of the set of connection ids.
pub const DEFAULT_INDEX_KEY: &str = "websocket-index";

/// Connection records in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisConnections {
    store: RedisStore,
    record_prefix: String,
    index_key: String,
    ttl: Option<Duration>,
}

impl fmt::Debug for RedisConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnections")
            .field("store", &self.store)
            .field("record_prefix", &self.record_prefix)
            .field("index_key", &self.index_key)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RedisConnections {
    /// Connection records on `store`'s connection, with the default layout and no TTL.
    pub fn new(store: RedisStore) -> Self {
        Self {
            store,
            record_prefix: DEFAULT_RECORD_PREFIX.to_owned(),
            index_key: DEFAULT_INDEX_KEY.to_owned(),
            ttl: None,
        }
    }

    /// Record keys are `<prefix><id>` (default `websocket-`).
    pub fn record_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.record_prefix = prefix.into();
        self
    }

    /// The key of the id set (default `websocket-index`).
    pub fn index_key(mut self, key: impl Into<String>) -> Self {
        self.index_key = key.into();
        self
    }

    /// A TTL applied on every write, claims included (the seed uses 300 s and refreshes
    /// it on traffic). Default: none, records stay until deleted.
    pub fn record_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// The store key of a connection's record.
    pub fn record_key(&self, id: &ConnectionId) -> String {
        format!("{}{}", self.record_prefix, id.as_str())
    }

    fn checked_key(&self, id: &ConnectionId) -> RepositoryResult<String> {
        let key = self.record_key(id);
        if key == self.index_key {
            return Err(RepositoryError::NotSupported {
                backend: BACKEND,
                what: "a connection id whose record key is the index key; use another id or another index key",
            });
        }
        Ok(key)
    }

    /// Removes `id` from the index while its record is missing (best effort).
    async fn prune(&self, id: &str, key: &str) -> RepositoryResult<()> {
        self.store
            .index_prune(&self.index_key, id, key)
            .await
            .map(|_| ())
            .map_err(|e| RepositoryError::from_store(e, None))
    }
}

#[async_trait]
impl ConnectionRepository for RedisConnections {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> RepositoryResult<ScanPage> {
        let start = cursor.map_or("0", ScanCursor::as_str);
        let (next, members) = self
            .store
            .sscan(&self.index_key, start, limit.max(1))
            .await
            .map_err(|e| RepositoryError::from_store(e, None))?;
        let mut ids = Vec::with_capacity(members.len());
        for m in members {
            match String::from_utf8(m) {
                Ok(s) => ids.push(s),
                Err(e) => {
                    tracing::warn!(index = %self.index_key, member = ?e.as_bytes(), "ignoring a non-UTF-8 connection id")
                }
            }
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}{id}", self.record_prefix))
            .collect();
        let values = self
            .store
            .get_many(&keys)
            .await
            .map_err(|e| RepositoryError::from_store(e, None))?;
        let mut page = ScanPage {
            records: Vec::with_capacity(keys.len()),
            invalid: Vec::new(),
            next: (next != "0").then(|| ScanCursor::new(next)),
        };
        for ((id, key), value) in ids.iter().zip(keys).zip(values) {
            let Some(value) = value else {
                // Expired or deleted around us: drop the index entry (while it stays
                // missing). Best effort; a failure is retried by the next scan.
                if let Err(e) = self.prune(id, &key).await {
                    tracing::debug!(id = %id.escape_debug(), error = %e, "could not prune a connection id");
                }
                continue;
            };
            match ConnectionRecord::from_json_at(id, &value.value) {
                Ok(record) => page.records.push(StoredConnection {
                    record,
                    version: value.version,
                }),
                Err(error) => page.invalid.push(InvalidRecord { key, error }),
            }
        }
        Ok(page)
    }

    async fn get(&self, id: &ConnectionId) -> RepositoryResult<Option<StoredConnection>> {
        let key = self.checked_key(id)?;
        let Some(value) = self
            .store
            .get(&key)
            .await
            .map_err(|e| RepositoryError::from_store(e, Some(id)))?
        else {
            return Ok(None);
        };
        let record = ConnectionRecord::from_json_at(id.as_str(), &value.value)
            .map_err(|source| RepositoryError::Corrupt { key, source })?;
        Ok(Some(StoredConnection {
            record,
            version: value.version,
        }))
    }

    async fn put(&self, record: &ConnectionRecord, mode: PutMode) -> RepositoryResult<Version> {
        let key = self.checked_key(&record.id)?;
        let value = record.to_json()?;
        let version = self
            .store
            .put_raw(&key, &value, &mode, self.ttl)
            .await
            .map_err(|e| RepositoryError::from_store(e, Some(&record.id)))?
            .ok_or_else(|| RepositoryError::Conflict {
                id: record.id.clone(),
            })?;
        // After the record exists (see the module docs for why this order).
        self.store
            .index_add(&self.index_key, record.id.as_str())
            .await
            .map_err(|e| RepositoryError::from_store(e, Some(&record.id)))?;
        Ok(version)
    }

    async fn delete(&self, id: &ConnectionId, mode: DeleteMode) -> RepositoryResult<()> {
        let key = self.checked_key(id)?;
        self.store
            .delete(&key, mode)
            .await
            .map_err(|e| RepositoryError::from_store(e, Some(id)))?;
        self.prune(id.as_str(), &key).await
    }
}
