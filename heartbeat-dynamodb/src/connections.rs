//! [`DynamoConnections`]: the reclaimer's [`ConnectionRepository`] on the heartbeat table.
//!
//! Each connection record is an item like any store value (see [`crate::item`]): key
//! `websocket-<id>` (the seed's layout; the prefix is configurable), the record's JSON
//! in `val`, a random version in `ver`, and the expiry attributes when a TTL is
//! configured. `get`, `put` and `delete` are the [`DynamoStore`]'s, so a claim, the
//! trait's compare-and-swap on the version, is one conditional `PutItem`: two claimers
//! holding the same version can never both win.
//!
//! `scan` is a DynamoDB `Scan` with `begins_with(pk, prefix)` as filter, strongly
//! consistent, paged by `LastEvaluatedKey` (the cursor is the last key DynamoDB looked
//! at). The filter applies after DynamoDB reads a page, so pages may be short or empty
//! before the last. A scan reads the whole table: with very many connections, give them
//! their own table (a second [`DynamoStore`]).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use heartbeat_core::{DeleteMode, PutMode, Store, StoreError};
use reclaimer::repository::SEED_KEY_PREFIX;
use reclaimer::{
    ConnectionId, ConnectionRecord, ConnectionRecordError, ConnectionRepository, InvalidRecord,
    RepositoryError, RepositoryResult, ScanCursor, ScanPage, StoredConnection,
};

use crate::error::BACKEND;
use crate::item::{self, KEY};
use crate::store::DynamoStore;

/// Most items one `Scan` page evaluates (DynamoDB also stops at 1 MB).
pub const MAX_SCAN_LIMIT: usize = 1000;

/// Connection records on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoConnections {
    store: DynamoStore,
    prefix: String,
    ttl: Option<Duration>,
}

impl DynamoConnections {
    /// Records at `websocket-<id>` in `store`'s table, without TTL.
    pub fn new(store: DynamoStore) -> Self {
        Self {
            store,
            prefix: SEED_KEY_PREFIX.to_owned(),
            ttl: None,
        }
    }

    /// Keys `<prefix><id>` instead of `websocket-<id>` (e.g. one prefix per tenant).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Expires records `ttl` after each write, claims included (the seed's records carry
    /// a 300 s TTL refreshed by their owner). Expired records read as missing at once.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The store key of a connection.
    pub fn key_of(&self, id: &ConnectionId) -> String {
        format!("{}{}", self.prefix, id.as_str())
    }

    /// The underlying store.
    pub fn store(&self) -> &DynamoStore {
        &self.store
    }

    fn error(&self, id: &ConnectionId, what: &str, e: StoreError) -> RepositoryError {
        match e {
            StoreError::Timeout { key, after } => RepositoryError::Timeout {
                what: format!("{what} {key:?}"),
                after,
            },
            e => RepositoryError::from_store(e, Some(id)),
        }
    }

    fn invalid(key: String, reason: String) -> InvalidRecord {
        InvalidRecord {
            key,
            error: ConnectionRecordError::InvalidId { reason },
        }
    }
}

#[async_trait]
impl ConnectionRepository for DynamoConnections {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> RepositoryResult<ScanPage> {
        let limit = i32::try_from(limit.clamp(1, MAX_SCAN_LIMIT)).unwrap_or(1);
        let filter = "begins_with(#pk, :prefix)";
        let mut request = self
            .store
            .client()
            .scan()
            .table_name(self.store.table())
            .consistent_read(true)
            .limit(limit)
            .filter_expression(filter)
            .set_expression_attribute_names(Some(item::names_for(filter)))
            .expression_attribute_values(":prefix", AttributeValue::S(self.prefix.clone()));
        if let Some(cursor) = cursor {
            request = request.set_exclusive_start_key(Some(HashMap::from([(
                KEY.to_owned(),
                AttributeValue::S(cursor.as_str().to_owned()),
            )])));
        }
        let out = request.send().await.map_err(|e| {
            let what = format!("scan of {:?}", self.prefix);
            match self.store.store_error(&what, e) {
                StoreError::Unavailable {
                    message, source, ..
                } => RepositoryError::Unavailable {
                    backend: BACKEND,
                    message,
                    source,
                },
                StoreError::Timeout { key, after } => RepositoryError::Timeout { what: key, after },
                other => RepositoryError::Store(other),
            }
        })?;
        let now = self.store.now_millis();
        let mut page = ScanPage::default();
        for found in out.items() {
            let Some(AttributeValue::S(key)) = found.get(KEY) else {
                continue;
            };
            match item::decode(found, now) {
                Ok(None) => {} // expired, not yet deleted by DynamoDB
                Ok(Some(v)) => match ConnectionRecord::from_json_at(
                    key.strip_prefix(self.prefix.as_str()).unwrap_or(key),
                    &v.value,
                ) {
                    Ok(record) => page.records.push(StoredConnection {
                        record,
                        version: v.version,
                    }),
                    Err(error) => page.invalid.push(InvalidRecord {
                        key: key.clone(),
                        error,
                    }),
                },
                Err(e) => page.invalid.push(Self::invalid(
                    key.clone(),
                    format!("the DynamoDB item holds no readable value ({e})"),
                )),
            }
        }
        page.next = match out.last_evaluated_key().and_then(|k| k.get(KEY)) {
            Some(AttributeValue::S(last)) => Some(ScanCursor::new(last.clone())),
            _ => None,
        };
        Ok(page)
    }

    async fn get(&self, id: &ConnectionId) -> RepositoryResult<Option<StoredConnection>> {
        let key = self.key_of(id);
        let Some(found) = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.error(id, "get", e))?
        else {
            return Ok(None);
        };
        let record = ConnectionRecord::from_json_at(id.as_str(), &found.value)
            .map_err(|source| RepositoryError::Corrupt { key, source })?;
        Ok(Some(StoredConnection {
            record,
            version: found.version,
        }))
    }

    async fn put(
        &self,
        record: &ConnectionRecord,
        mode: PutMode,
    ) -> RepositoryResult<heartbeat_core::Version> {
        let value = record.to_json()?;
        self.store
            .put(&self.key_of(&record.id), value, mode, self.ttl)
            .await
            .map_err(|e| self.error(&record.id, "put", e))
    }

    async fn delete(&self, id: &ConnectionId, mode: DeleteMode) -> RepositoryResult<()> {
        self.store
            .delete(&self.key_of(id), mode)
            .await
            .map_err(|e| self.error(id, "delete", e))
    }
}
