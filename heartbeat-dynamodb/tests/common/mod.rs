//! Shared by the test binaries: stores on moto_server, a hand-moved clock.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use heartbeat_conformance::support::moto;
use heartbeat_core::WallClock;
use heartbeat_dynamodb::{DynamoConfig, DynamoStore, StaticCredentials};

/// A configuration for `table` on the moto server at `endpoint`, with dummy credentials
/// on the client (not in the process environment: tests run in parallel).
pub fn config(endpoint: &str, table: &str) -> DynamoConfig {
    DynamoConfig::new(table)
        .unwrap()
        .region(moto::REGION)
        .endpoint(endpoint)
        .credentials(StaticCredentials::new(
            moto::ACCESS_KEY_ID,
            moto::SECRET_ACCESS_KEY,
        ))
}

/// A unique table name for a test that needs its own table.
pub fn fresh_table(name: &str) -> String {
    format!("hb-{name}-{:08x}", rand::random::<u32>())
}

/// A store on a table of its own, or `None` when moto_server is missing (outside CI).
///
/// One table per test, not one shared table: moto runs `TransactWriteItems` on a deep
/// copy of each table it touches and, when the transaction is cancelled (as a prune of
/// a live member is), puts the copy back, losing writes other requests made to that
/// table meanwhile. Real DynamoDB has no such problem.
pub async fn table_store() -> Option<DynamoStore> {
    let endpoint = moto::endpoint()?;
    let table = fresh_table("t");
    let config = config(&endpoint, &table);
    heartbeat_dynamodb::init_store(&config)
        .await
        .expect("create the test table");
    let store = DynamoStore::connect(config).await.expect("connect to moto");
    Some(store)
}

/// A wall clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock reading the system time now.
    pub fn new() -> Self {
        Self(Mutex::new(Utc::now()))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::from_std(by).unwrap();
    }
}

impl WallClock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}
