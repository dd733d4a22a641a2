//! [`DynamoStore`]: the [`Store`] contract on one DynamoDB table.
//!
//! - Reads are strongly consistent (`ConsistentRead`), so a compare-and-swap never works
//!   from a stale copy.
//! - Compare-and-swap is a conditional `PutItem`/`DeleteItem` on the numeric `ver`
//!   attribute. Every write draws a fresh random 64-bit version, so versions are unique
//!   across writers and across delete/re-create without keeping tombstones.
//! - If the SDK retries a conditional put whose first attempt landed but whose answer was
//!   lost, the retry fails its condition; DynamoDB returns the current item
//!   (`ReturnValuesOnConditionCheckFailure`), and when its version is the one we were
//!   writing, the put is reported as the success it was.
//! - Expiry: see [`crate::item`]. Conditions treat an expired item as absent.
//! - Bulk reads: `BatchGetItem` in chunks of 100 distinct keys, a few chunks at a time,
//!   with bounded, backed-off retries of unprocessed keys.
//! - The index is a string set changed by `ADD`/`DELETE` update expressions; pruning is
//!   one `TransactWriteItems`: a `ConditionCheck` that the member's record is absent or
//!   expired, plus the `DELETE` from the set on condition that the member is in it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use futures::{StreamExt, TryStreamExt};
use heartbeat_core::{
    Capabilities, DeleteMode, PutMode, Store, StoreError, StoreResult, SystemClock, Version,
    Versioned, WallClock,
};

use crate::config::{DynamoConfig, describe_location};
use crate::error::{BACKEND, DynamoError, ErrorContext, build_error, service_code};
use crate::item::{self, ABSENT, AT_VERSION, KEY, MAX_VALUE_BYTES};

/// Keys per `BatchGetItem` request (DynamoDB's limit).
pub const BATCH_GET_LIMIT: usize = 100;
/// Rounds of `BatchGetItem` for unprocessed keys before giving up.
pub const UNPROCESSED_ROUNDS: u32 = 8;
/// Attempts of a write that DynamoDB rejected because a transaction held the item
/// (`TransactionConflict`); the SDK does not retry those.
pub const TRANSACTION_CONFLICT_ATTEMPTS: u32 = 6;
/// `BatchGetItem` requests in flight at once for one bulk read.
const BATCH_CONCURRENCY: usize = 4;

/// A heartbeat store on one DynamoDB table (see the crate docs for the layout).
///
/// Cheap to clone: clones share the SDK client.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    clock: Arc<dyn WallClock>,
    context: Arc<ErrorContext>,
}

impl fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .field("location", &self.context.location)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// Connects with `config` and checks that the table exists and has the expected key.
    /// A missing table is [`DynamoError::TableMissing`], which says how to create it. If
    /// the credentials may not `DescribeTable`, the check is skipped (logged at debug).
    pub async fn connect(config: DynamoConfig) -> Result<Self, DynamoError> {
        let client = config.load_client().await?;
        let store = Self::with_location(client, &config)?;
        crate::table::check_table(&store.client, &store.table, &store.context.location).await?;
        Ok(store)
    }

    /// Like [`DynamoStore::connect`] without checking the table (for `init-store`, or
    /// when the credentials may only read and write items).
    pub async fn connect_unchecked(config: DynamoConfig) -> Result<Self, DynamoError> {
        let client = config.load_client().await?;
        Self::with_location(client, &config)
    }

    /// A store on an existing SDK client (its retry and timeout settings apply).
    pub fn from_client(client: Client, table: impl Into<String>) -> Result<Self, DynamoError> {
        let table = table.into();
        crate::config::validate_table(&table)?;
        let region = client.config().region().map(|r| r.to_string());
        let location = describe_location(region.as_deref(), None);
        Ok(Self::build(
            client,
            table,
            location,
            DynamoConfig::DEFAULT_ATTEMPT_TIMEOUT,
        ))
    }

    fn with_location(client: Client, config: &DynamoConfig) -> Result<Self, DynamoError> {
        Ok(Self::build(
            client,
            config.table().to_owned(),
            config.describe_location(),
            config.attempt_timeout_value(),
        ))
    }

    fn build(client: Client, table: String, location: String, attempt_timeout: Duration) -> Self {
        Self {
            client,
            table: table.clone().into(),
            clock: Arc::new(SystemClock),
            context: Arc::new(ErrorContext {
                table,
                location,
                attempt_timeout,
            }),
        }
    }

    /// Uses `clock` to compute and check expiries (default: the system clock). Expiry is
    /// judged on the reader's clock against the writer's; skew between hosts shifts it,
    /// which is harmless because liveness is judged by change, not by expiry.
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates this store's table if it is missing (see [`crate::create_table`]).
    pub async fn create_table(&self) -> Result<crate::TableSetup, DynamoError> {
        crate::table::create_table(&self.client, &self.table).await
    }

    pub(crate) fn now_millis(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    pub(crate) fn store_error<E>(&self, key: &str, e: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let err = self.context.store_error(key, e);
        if !err.is_conflict() {
            metrics::counter!("heartbeat_dynamodb_errors_total").increment(1);
            tracing::debug!(table = %self.table, key, error = %err, "DynamoDB request failed");
        }
        err
    }

    /// Reads one chunk of distinct keys, retrying unprocessed keys.
    async fn batch_get_chunk(
        &self,
        keys: Vec<String>,
    ) -> StoreResult<HashMap<String, HashMap<String, AttributeValue>>> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut pending: Vec<HashMap<String, AttributeValue>> =
            keys.iter().map(|k| item::key_of(k)).collect();
        let describe = || {
            format!(
                "{} keys starting with {:?}",
                keys.len(),
                keys.first().map_or("", String::as_str)
            )
        };
        for round in 0..UNPROCESSED_ROUNDS {
            if round > 0 {
                metrics::counter!("heartbeat_dynamodb_unprocessed_retries_total").increment(1);
                tracing::debug!(table = %self.table, round, keys = pending.len(), "retrying unprocessed BatchGetItem keys");
                backoff(round, Duration::from_millis(25), Duration::from_secs(1)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|e| build_error(&describe(), e))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(self.table.to_string(), request)
                .send()
                .await
                .map_err(|e| self.store_error(&describe(), e))?;
            for item in out
                .responses()
                .and_then(|r| r.get(&*self.table))
                .into_iter()
                .flatten()
            {
                if let Some(AttributeValue::S(k)) = item.get(KEY) {
                    found.insert(k.clone(), item.clone());
                }
            }
            pending = out
                .unprocessed_keys()
                .and_then(|u| u.get(&*self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(found);
            }
        }
        Err(StoreError::Unavailable {
            backend: BACKEND,
            message: format!(
                "DynamoDB left {} of {} keys unprocessed after {UNPROCESSED_ROUNDS} BatchGetItem rounds; \
                 the table is throttled, raise its capacity or retry later",
                pending.len(),
                keys.len()
            ),
            source: None,
        })
    }

    /// Runs `send` again while DynamoDB answers that a transaction holds the item.
    async fn retry_transaction_conflicts<T, E, F, Fut>(&self, mut send: F) -> Result<T, SdkError<E>>
    where
        E: ProvideErrorMetadata,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
    {
        let mut attempt = 0;
        loop {
            match send().await {
                Err(e)
                    if attempt + 1 < TRANSACTION_CONFLICT_ATTEMPTS
                        && service_code(&e) == Some("TransactionConflictException") =>
                {
                    attempt += 1;
                    metrics::counter!("heartbeat_dynamodb_transaction_conflicts_total")
                        .increment(1);
                    backoff(
                        attempt,
                        Duration::from_millis(10),
                        Duration::from_millis(500),
                    )
                    .await;
                }
                other => return other,
            }
        }
    }
}

/// Sleeps a random time below `base * 2^attempt`, at most `max`.
async fn backoff(attempt: u32, base: Duration, max: Duration) {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let ceiling_us = u64::try_from(ceiling.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % ceiling_us)).await;
}

fn check_member(index_key: &str, member: &str) -> StoreResult<()> {
    if member.is_empty() {
        return Err(StoreError::InvalidKey {
            key: index_key.to_owned(),
            reason: "index members cannot be empty strings".to_owned(),
        });
    }
    Ok(())
}

#[async_trait]
impl Store for DynamoStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            native_sets: true,
            max_value_bytes: Some(MAX_VALUE_BYTES),
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        item::check_key(key)?;
        let out = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(item::key_of(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.store_error(key, e))?;
        match out.item() {
            None => Ok(None),
            Some(found) => item::decode(found, self.now_millis()),
        }
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        for key in keys {
            item::check_key(key)?;
        }
        // BatchGetItem refuses duplicate keys: ask for each key once.
        let mut distinct: Vec<String> = Vec::with_capacity(keys.len());
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        for key in keys {
            if seen.insert(key.as_str()) {
                distinct.push(key.clone());
            }
        }
        let chunks: Vec<Vec<String>> = distinct
            .chunks(BATCH_GET_LIMIT)
            .map(<[String]>::to_vec)
            .collect();
        let found: Vec<HashMap<String, HashMap<String, AttributeValue>>> =
            futures::stream::iter(chunks)
                .map(|chunk| self.batch_get_chunk(chunk))
                .buffered(BATCH_CONCURRENCY)
                .try_collect()
                .await?;
        let found: HashMap<&String, &HashMap<String, AttributeValue>> =
            found.iter().flat_map(|m| m.iter()).collect();
        let now = self.now_millis();
        keys.iter()
            .map(|k| match found.get(k) {
                None => Ok(None),
                Some(found) => item::decode(found, now),
            })
            .collect()
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version> {
        item::check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::ValueTooLarge {
                key: key.to_owned(),
                len: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        let len = value.len();
        let now = self.now_millis();
        let version = item::new_version();
        let expiry = ttl.map(|t| item::expiry(now, t));
        let mut request = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item::value_item(key, value, version, expiry)));
        let condition = match &mode {
            PutMode::Overwrite => None,
            PutMode::Create => Some(ABSENT),
            PutMode::Update(expected) => {
                let Ok(expected) = expected.as_str().parse::<u64>() else {
                    // Not a version this store wrote: it cannot match.
                    return Err(StoreError::Conflict {
                        key: key.to_owned(),
                    });
                };
                request = request.expression_attribute_values(":expected", item::number(expected));
                Some(AT_VERSION)
            }
        };
        if let Some(condition) = condition {
            request = request
                .condition_expression(condition)
                .set_expression_attribute_names(Some(item::names_for(condition)))
                .expression_attribute_values(":now", item::number(now))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
        }
        let result = self
            .retry_transaction_conflicts(|| request.clone().send())
            .await;
        match result {
            Ok(_) => Ok(Version::new(version.to_string())),
            Err(SdkError::ServiceError(se))
                if matches!(se.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let ours = version.to_string();
                let current = match se.err() {
                    PutItemError::ConditionalCheckFailedException(c) => {
                        c.item().and_then(item::version_of).map(str::to_owned)
                    }
                    _ => None,
                };
                if current.as_deref() == Some(ours.as_str()) {
                    // An earlier attempt of this very put landed; the SDK's retry saw it.
                    tracing::debug!(table = %self.table, key, "conditional put already applied by an earlier attempt");
                    return Ok(Version::new(ours));
                }
                metrics::counter!("heartbeat_dynamodb_conflicts_total").increment(1);
                Err(StoreError::Conflict {
                    key: key.to_owned(),
                })
            }
            Err(e)
                if service_code(&e) == Some("ValidationException")
                    && e.as_service_error()
                        .and_then(|se| se.message())
                        .is_some_and(|m| m.contains("Item size")) =>
            {
                // Our bound keeps real DynamoDB from saying this; emulators count
                // differently (moto counts binary values base64-encoded).
                Err(StoreError::ValueTooLarge {
                    key: key.to_owned(),
                    len,
                    max: MAX_VALUE_BYTES,
                })
            }
            Err(e) => Err(self.store_error(key, e)),
        }
    }

    async fn delete(&self, key: &str, mode: DeleteMode) -> StoreResult<()> {
        item::check_key(key)?;
        let mut request = self
            .client
            .delete_item()
            .table_name(&*self.table)
            .set_key(Some(item::key_of(key)));
        if let DeleteMode::IfVersion(expected) = &mode {
            let Ok(expected) = expected.as_str().parse::<u64>() else {
                return Err(StoreError::Conflict {
                    key: key.to_owned(),
                });
            };
            request = request
                .condition_expression(AT_VERSION)
                .set_expression_attribute_names(Some(item::names_for(AT_VERSION)))
                .expression_attribute_values(":expected", item::number(expected))
                .expression_attribute_values(":now", item::number(self.now_millis()));
        }
        self.retry_transaction_conflicts(|| request.clone().send())
            .await
            .map(|_| ())
            .map_err(|e| {
                let err = self.store_error(key, e);
                if err.is_conflict() {
                    metrics::counter!("heartbeat_dynamodb_conflicts_total").increment(1);
                }
                err
            })
    }

    async fn index_members(&self, index_key: &str) -> StoreResult<BTreeSet<String>> {
        item::check_key(index_key)?;
        let out = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(item::key_of(index_key)))
            .consistent_read(true)
            .projection_expression("#m")
            .set_expression_attribute_names(Some(item::names_for("#m")))
            .send()
            .await
            .map_err(|e| self.store_error(index_key, e))?;
        item::members_of(index_key, out.item())
    }

    async fn index_add(&self, index_key: &str, member: &str) -> StoreResult<()> {
        item::check_key(index_key)?;
        check_member(index_key, member)?;
        let request = self
            .client
            .update_item()
            .table_name(&*self.table)
            .set_key(Some(item::key_of(index_key)))
            .update_expression("ADD #m :member")
            .set_expression_attribute_names(Some(item::names_for("#m")))
            .expression_attribute_values(":member", AttributeValue::Ss(vec![member.to_owned()]));
        self.retry_transaction_conflicts(|| request.clone().send())
            .await
            .map(|_| ())
            .map_err(|e| self.store_error(index_key, e))
    }

    async fn index_remove(&self, index_key: &str, member: &str) -> StoreResult<()> {
        item::check_key(index_key)?;
        check_member(index_key, member)?;
        // The condition keeps UpdateItem from creating an empty index item.
        let request = self
            .client
            .update_item()
            .table_name(&*self.table)
            .set_key(Some(item::key_of(index_key)))
            .update_expression("DELETE #m :member")
            .condition_expression("attribute_exists(#pk)")
            .set_expression_attribute_names(Some(item::names_for("#m #pk")))
            .expression_attribute_values(":member", AttributeValue::Ss(vec![member.to_owned()]));
        match self
            .retry_transaction_conflicts(|| request.clone().send())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if service_code(&e) == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(self.store_error(index_key, e)),
        }
    }

    async fn index_prune(
        &self,
        index_key: &str,
        member: &str,
        member_key: &str,
    ) -> StoreResult<bool> {
        item::check_key(index_key)?;
        item::check_key(member_key)?;
        check_member(index_key, member)?;
        if index_key == member_key {
            return Err(StoreError::InvalidKey {
                key: member_key.to_owned(),
                reason: "the member's key cannot be the index key".to_owned(),
            });
        }
        let absent = ConditionCheck::builder()
            .table_name(&*self.table)
            .set_key(Some(item::key_of(member_key)))
            .condition_expression(ABSENT)
            .set_expression_attribute_names(Some(item::names_for(ABSENT)))
            .expression_attribute_values(":now", item::number(self.now_millis()))
            .build()
            .map_err(|e| build_error(member_key, e))?;
        let remove = Update::builder()
            .table_name(&*self.table)
            .set_key(Some(item::key_of(index_key)))
            .update_expression("DELETE #m :set")
            .condition_expression("contains(#m, :member)")
            .set_expression_attribute_names(Some(item::names_for("#m")))
            .expression_attribute_values(":set", AttributeValue::Ss(vec![member.to_owned()]))
            .expression_attribute_values(":member", AttributeValue::S(member.to_owned()))
            .build()
            .map_err(|e| build_error(index_key, e))?;
        let request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(absent).build())
            .transact_items(TransactWriteItem::builder().update(remove).build());
        let mut attempt = 0;
        loop {
            // The SDK sets one idempotency token per call, reused across its own retries,
            // so a retried transaction that had landed answers success.
            let err = match request.clone().send().await {
                Ok(_) => {
                    tracing::debug!(table = %self.table, index_key, member, "pruned index member");
                    return Ok(true);
                }
                Err(e) => e,
            };
            let reasons: Vec<String> = match &err {
                SdkError::ServiceError(se) => match se.err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => c
                        .cancellation_reasons()
                        .iter()
                        .filter_map(|r| r.code().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let conflict = reasons.iter().any(|r| r == "TransactionConflict")
                || service_code(&err) == Some("TransactionConflictException");
            if reasons.iter().any(|r| r == "ConditionalCheckFailed") {
                // The member's record exists (it is alive or re-joined), or the member is
                // no longer in the set: nothing to prune.
                return Ok(false);
            }
            if conflict && attempt + 1 < TRANSACTION_CONFLICT_ATTEMPTS {
                attempt += 1;
                metrics::counter!("heartbeat_dynamodb_transaction_conflicts_total").increment(1);
                backoff(
                    attempt,
                    Duration::from_millis(10),
                    Duration::from_millis(500),
                )
                .await;
                continue;
            }
            let detail = if reasons.is_empty() {
                String::new()
            } else {
                format!(" (cancellation reasons: {})", reasons.join(", "))
            };
            return Err(match self.store_error(index_key, err) {
                StoreError::Backend {
                    message, source, ..
                } => StoreError::Backend {
                    backend: BACKEND,
                    message: format!("{message}{detail}"),
                    source,
                },
                other => other,
            });
        }
    }
}
