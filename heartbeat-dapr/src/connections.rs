//! [`DaprConnections`]: the reclaimer's [`ConnectionRepository`] on a Dapr state store,
//! on the seed's layout, so the .NET system and we share the same records.
//!
//! ```text
//! websocket-<id>    the record: camelCase JSON, as the seed writes it (a JSON object)
//! websocket-index   the set of connection ids: a JSON array, changed by compare-and-swap
//! ```
//!
//! - Records are always stored as JSON values (never as marked text), so the .NET
//!   system reads what a claim wrote; fields we do not know are kept by
//!   [`ConnectionRecord`].
//! - A claim is a compare-and-swap on the record's ETag (see [`crate::store`] for how
//!   versions map to ETags on each component): two claimers holding the same version
//!   can never both win.
//! - A create (or overwrite) first adds the id to the index, then writes the record:
//!   an index entry without a record is skipped by scans, a record without an entry
//!   would be invisible to them. A delete removes the record, then prunes the id from
//!   the index only while the record is missing, so a concurrent re-create is never
//!   hidden. Scans prune entries whose record is gone (deleted around us, or expired).
//! - A scan page reads the index once and the page's records with one bulk read.
//!   Pages are in id order; the cursor is the last id of the page.
//! - An optional TTL (the seed uses 300 s, refreshed on traffic) is applied on every
//!   write, claims included.

use std::time::Duration;

use async_trait::async_trait;
use heartbeat_core::{DeleteMode, PutMode, Store, StoreError, Version};
use reclaimer::{
    ConnectionId, ConnectionRecord, ConnectionRepository, InvalidRecord, RepositoryError,
    RepositoryResult, ScanCursor, ScanPage, StoredConnection,
};

use crate::client::BACKEND;
use crate::store::DaprStore;

/// Default prefix of record keys (the seed's: `websocket-<id>`).
pub const DEFAULT_RECORD_PREFIX: &str = "websocket-";
/// Default key of the id set (the seed's).
pub const DEFAULT_INDEX_KEY: &str = "websocket-index";

/// Connection records through a Dapr sidecar. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DaprConnections {
    store: DaprStore,
    record_prefix: String,
    index_key: String,
    ttl: Option<Duration>,
}

impl DaprConnections {
    /// Records on `store`'s component, with the seed's layout and no TTL.
    pub fn new(store: DaprStore) -> Self {
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

    /// A TTL applied on every write, claims included. Default: none.
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
}

/// Maps a store error; a conflict names the connection.
fn from_store(e: StoreError, id: Option<&ConnectionId>) -> RepositoryError {
    match (e, id) {
        // The index's compare-and-swap gave up: say so, rather than a bare conflict.
        (StoreError::Conflict { key }, None) => RepositoryError::Backend {
            backend: BACKEND,
            message: format!("the index {key:?} kept changing; retry later"),
            source: None,
        },
        (e, id) => RepositoryError::from_store(e, id),
    }
}

#[async_trait]
impl ConnectionRepository for DaprConnections {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> RepositoryResult<ScanPage> {
        let limit = limit.max(1);
        let members = self
            .store
            .index_members(&self.index_key)
            .await
            .map_err(|e| from_store(e, None))?;
        let mut ids = members
            .into_iter()
            .filter(|m| cursor.is_none_or(|c| m.as_str() > c.as_str()));
        let page_ids: Vec<String> = ids.by_ref().take(limit).collect();
        let more = ids.next().is_some();
        let keys: Vec<String> = page_ids
            .iter()
            .map(|id| format!("{}{id}", self.record_prefix))
            .collect();
        let values = self
            .store
            .get_many(&keys)
            .await
            .map_err(|e| from_store(e, None))?;
        let mut page = ScanPage::default();
        for ((id, key), value) in page_ids.iter().zip(keys).zip(values) {
            let Some(v) = value else {
                // Indexed but gone (deleted around us, or expired): prune, best effort.
                if let Err(e) = self.store.index_prune(&self.index_key, id, &key).await {
                    tracing::debug!(id, error = %e, "could not prune a stale index entry");
                }
                continue;
            };
            match ConnectionRecord::from_json_at(id, &v.value) {
                Ok(record) => page.records.push(StoredConnection {
                    record,
                    version: v.version,
                }),
                Err(error) => page.invalid.push(InvalidRecord { key, error }),
            }
        }
        if more {
            page.next = page_ids.last().map(|l| ScanCursor::new(l.clone()));
        }
        Ok(page)
    }

    async fn get(&self, id: &ConnectionId) -> RepositoryResult<Option<StoredConnection>> {
        let key = self.checked_key(id)?;
        let Some(v) = self
            .store
            .get(&key)
            .await
            .map_err(|e| from_store(e, Some(id)))?
        else {
            return Ok(None);
        };
        let record = ConnectionRecord::from_json_at(id.as_str(), &v.value)
            .map_err(|source| RepositoryError::Corrupt { key, source })?;
        Ok(Some(StoredConnection {
            record,
            version: v.version,
        }))
    }

    async fn put(&self, record: &ConnectionRecord, mode: PutMode) -> RepositoryResult<Version> {
        let key = self.checked_key(&record.id)?;
        let value = record.to_json()?;
        if !matches!(mode, PutMode::Update(_)) {
            self.store
                .index_add(&self.index_key, record.id.as_str())
                .await
                .map_err(|e| from_store(e, None))?;
        }
        self.store
            .put_json(&key, &value, mode, self.ttl)
            .await
            .map_err(|e| from_store(e, Some(&record.id)))
    }

    async fn delete(&self, id: &ConnectionId, mode: DeleteMode) -> RepositoryResult<()> {
        let key = self.checked_key(id)?;
        self.store
            .delete(&key, mode)
            .await
            .map_err(|e| from_store(e, Some(id)))?;
        self.store
            .index_prune(&self.index_key, id.as_str(), &key)
            .await
            .map(|_| ())
            .map_err(|e| from_store(e, None))
    }
}
