//! The conformance suite, and DynamoDB-specific behaviour, against `moto_server`
//! (install it with `tests/moto/setup.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ManualClock, config, fresh_table, table_store};
use heartbeat_conformance::support::moto;
use heartbeat_conformance::{DynStore, store_conformance};
use heartbeat_core::{DeleteMode, PutMode, Store, StoreError};
use heartbeat_dynamodb::aws_sdk_dynamodb::Client;
use heartbeat_dynamodb::aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut;
use heartbeat_dynamodb::aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use heartbeat_dynamodb::aws_sdk_dynamodb::error::BoxError;
use heartbeat_dynamodb::aws_sdk_dynamodb::types::AttributeValue;
use heartbeat_dynamodb::item::MAX_KEY_BYTES;
use heartbeat_dynamodb::{DynamoError, DynamoStore};

async fn dynamo_store() -> Option<DynStore> {
    Some(Arc::new(table_store().await?))
}

store_conformance!(dynamo_store, #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);

#[tokio::test]
async fn missing_table_error_says_how_to_create_it() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let table = fresh_table("missing");
    let err = DynamoStore::connect(config(&endpoint, &table))
        .await
        .unwrap_err();
    assert!(matches!(err, DynamoError::TableMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("heartbeat init-store dynamodb://{table}"))
            && message.contains("create_table"),
        "{message}"
    );

    // Without the up-front check, item calls say the same.
    let store = DynamoStore::connect_unchecked(config(&endpoint, &table))
        .await
        .unwrap();
    let err = store.get("k").await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("init-store"), "{err}");
}

#[tokio::test]
async fn create_table_makes_a_usable_table_with_ttl_and_is_idempotent() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let table = fresh_table("create");
    let store = DynamoStore::connect_unchecked(config(&endpoint, &table))
        .await
        .unwrap();
    let first = store.create_table().await.unwrap();
    assert!(first.created && first.ttl_enabled_now, "{first:?}");

    let client = store.client();
    let description = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let description = description.table().unwrap();
    assert_eq!(description.key_schema().len(), 1);
    assert_eq!(description.key_schema()[0].attribute_name(), "pk");
    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description().unwrap().attribute_name(),
        Some("ttl")
    );

    let again = store.create_table().await.unwrap();
    assert!(!again.created && !again.ttl_enabled_now, "{again:?}");

    // connect now passes its check, and the table works.
    let store = DynamoStore::connect(config(&endpoint, &table))
        .await
        .unwrap();
    let v = store
        .put("k", b"v".to_vec(), PutMode::Create, None)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().version, v);
}

#[tokio::test]
async fn a_table_with_another_key_is_refused() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    use heartbeat_dynamodb::aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let table = fresh_table("otherkey");
    let store = DynamoStore::connect_unchecked(config(&endpoint, &table))
        .await
        .unwrap();
    store
        .client()
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let err = DynamoStore::connect(config(&endpoint, &table))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DynamoError::TableMisconfigured { reason, .. } if reason.contains("\"pk\"")),
        "{err}"
    );
}

/// Items past their precise expiry that DynamoDB has not deleted yet (its TTL deletion
/// is lazy; moto never deletes) read as missing, alone and in bulk, and conditional
/// writes treat them as absent.
#[tokio::test]
async fn expired_but_not_deleted_items_read_as_missing() {
    let Some(raw) = table_store().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new());
    let store = raw.clone().with_clock(clock.clone());
    let ns = heartbeat_conformance::namespace("expired");
    let (key, other) = (format!("{ns}k"), format!("{ns}other"));
    let v1 = store
        .put(
            &key,
            b"old".to_vec(),
            PutMode::Overwrite,
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    store
        .put(
            &other,
            b"kept".to_vec(),
            PutMode::Overwrite,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(store.get(&key).await.unwrap().unwrap().version, v1);

    clock.advance(Duration::from_millis(1));
    assert_eq!(store.get(&key).await.unwrap(), None);
    let bulk = store.get_many(&[key.clone(), other.clone()]).await.unwrap();
    assert!(bulk[0].is_none() && bulk[1].is_some(), "{bulk:?}");

    // The item is still in the table, with its TTL attribute in epoch seconds.
    let item = raw_item(&raw, &key)
        .await
        .expect("moto keeps expired items");
    assert!(matches!(item.get("ttl"), Some(AttributeValue::N(_))));
    assert!(matches!(item.get("exp_ms"), Some(AttributeValue::N(_))));

    // Conditional writes see it as absent: updating or deleting its version conflicts,
    // creating succeeds.
    assert!(
        store
            .put(&key, b"x".to_vec(), PutMode::Update(v1.clone()), None)
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert!(
        store
            .delete(&key, DeleteMode::IfVersion(v1.clone()))
            .await
            .unwrap_err()
            .is_conflict()
    );
    let v2 = store
        .put(&key, b"new".to_vec(), PutMode::Create, None)
        .await
        .unwrap();
    assert_ne!(v2, v1);
    let now = store.get(&key).await.unwrap().unwrap();
    assert_eq!((now.value.as_slice(), now.version), (b"new".as_slice(), v2));
    // A put without TTL clears the expiry attributes.
    let item = raw_item(&raw, &key).await.unwrap();
    assert!(!item.contains_key("ttl") && !item.contains_key("exp_ms"));
}

/// `index_prune` treats an expired record as missing, too.
#[tokio::test]
async fn prune_removes_members_whose_record_expired() {
    let Some(store) = table_store().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new());
    let store = store.with_clock(clock.clone());
    let ns = heartbeat_conformance::namespace("prune-expired");
    let index = format!("{ns}_index");
    let member_key = format!("{ns}pod");
    store
        .put(
            &member_key,
            b"{}".to_vec(),
            PutMode::Overwrite,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    store.index_add(&index, "pod").await.unwrap();
    assert!(!store.index_prune(&index, "pod", &member_key).await.unwrap());
    clock.advance(Duration::from_secs(5));
    assert!(store.index_prune(&index, "pod", &member_key).await.unwrap());
    assert!(store.index_members(&index).await.unwrap().is_empty());
}

/// Long keys and large values work together; a value DynamoDB (here: moto) refuses as too
/// large is `ValueTooLarge`, not a generic error. (The declared maximum itself is proven
/// to fit by a unit test on DynamoDB's size rules: moto counts binary values base64
/// encoded, a third larger than DynamoDB does, so it refuses values near the maximum.)
#[tokio::test]
async fn long_keys_and_large_values_work_together() {
    let Some(store) = table_store().await else {
        return;
    };
    let ns = heartbeat_conformance::namespace("max");
    let key = format!("{ns}{}", "k".repeat(MAX_KEY_BYTES - ns.len()));
    let value: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let v = store
        .put(
            &key,
            value.clone(),
            PutMode::Overwrite,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (value, v.clone()));
    let too_long = format!("{key}k");
    assert!(matches!(
        store.get(&too_long).await,
        Err(StoreError::InvalidKey { .. })
    ));
    let max = store.capabilities().max_value_bytes.unwrap();
    match store
        .put(&key, vec![1; max], PutMode::Update(v.clone()), None)
        .await
    {
        // Real DynamoDB and accurate emulators.
        Ok(_) => {}
        Err(StoreError::ValueTooLarge { len, .. }) => assert_eq!(len, max),
        Err(e) => panic!("expected success or ValueTooLarge, got {e:?}"),
    }
}

/// Bulk reads above the 100-key batch limit keep order, with duplicates, across chunks.
#[tokio::test]
async fn bulk_reads_span_several_batches() {
    let Some(store) = dynamo_store().await else {
        return;
    };
    let ns = heartbeat_conformance::namespace("batches");
    let keys: Vec<String> = (0..250).map(|i| format!("{ns}{i}")).collect();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i.is_multiple_of(2)) {
        store
            .put(key, i.to_string().into_bytes(), PutMode::Overwrite, None)
            .await
            .unwrap();
    }
    let mut asked: Vec<String> = keys.iter().rev().cloned().collect();
    asked.extend(keys.iter().take(120).cloned());
    let got = store.get_many(&asked).await.unwrap();
    assert_eq!(got.len(), asked.len());
    for (key, value) in asked.iter().zip(&got) {
        let i: usize = key[ns.len()..].parse().unwrap();
        let expected = i.is_multiple_of(2).then(|| i.to_string().into_bytes());
        assert_eq!(value.as_ref().map(|v| v.value.clone()), expected, "{key}");
    }
}

/// Values are arbitrary bytes, not text.
#[tokio::test]
async fn binary_values_round_trip() {
    let Some(store) = dynamo_store().await else {
        return;
    };
    let key = format!("{}bin", heartbeat_conformance::namespace("binary"));
    let value: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe, 0]).collect();
    store
        .put(&key, value.clone(), PutMode::Create, None)
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, value);
    let empty = format!("{key}-empty");
    store
        .put(&empty, Vec::new(), PutMode::Create, None)
        .await
        .unwrap();
    assert_eq!(store.get(&empty).await.unwrap().unwrap().value, b"");
}

async fn raw_item(store: &DynamoStore, key: &str) -> Option<HashMap<String, AttributeValue>> {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
}

/// Replaces the answer of the next request with a 500 (the request itself landed), as
/// when a response is lost: the SDK retries.
#[derive(Debug)]
struct LoseNextAnswer(Arc<AtomicBool>);

impl Intercept for LoseNextAnswer {
    fn name(&self) -> &'static str {
        "LoseNextAnswer"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.0.swap(false, Ordering::SeqCst) {
            *context.response_mut().status_mut() = 500.try_into()?;
        }
        Ok(())
    }
}

/// A conditional put whose first attempt landed but whose answer was lost is retried by
/// the SDK; the retry's condition fails on our own write, which the store recognizes by
/// its version and reports as the success it was.
#[tokio::test]
async fn a_conditional_put_whose_answer_was_lost_still_succeeds() {
    let Some(plain) = table_store().await else {
        return;
    };
    let armed = Arc::new(AtomicBool::new(false));
    let client = Client::from_conf(
        plain
            .client()
            .config()
            .to_builder()
            .interceptor(LoseNextAnswer(armed.clone()))
            .build(),
    );
    let store = DynamoStore::from_client(client, plain.table()).unwrap();
    let key = format!("{}k", heartbeat_conformance::namespace("lost-answer"));

    armed.store(true, Ordering::SeqCst);
    let v1 = store
        .put(&key, b"1".to_vec(), PutMode::Create, None)
        .await
        .unwrap();
    assert!(!armed.load(Ordering::SeqCst), "no answer was lost");
    assert_eq!(store.get(&key).await.unwrap().unwrap().version, v1);

    armed.store(true, Ordering::SeqCst);
    let v2 = store
        .put(&key, b"2".to_vec(), PutMode::Update(v1.clone()), None)
        .await
        .unwrap();
    assert!(!armed.load(Ordering::SeqCst), "no answer was lost");
    let now = store.get(&key).await.unwrap().unwrap();
    assert_eq!((now.value.as_slice(), &now.version), (b"2".as_slice(), &v2));

    // A genuine conflict stays a conflict.
    assert!(
        store
            .put(&key, b"3".to_vec(), PutMode::Update(v1), None)
            .await
            .unwrap_err()
            .is_conflict()
    );
}
