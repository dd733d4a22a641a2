//! Table setup: [`create_table`] (what `heartbeat init-store dynamodb://<table>` runs) and
//! the check [`crate::DynamoStore::connect`] does.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use crate::config::DynamoConfig;
use crate::error::{DynamoError, service_code};
use crate::item::{KEY, TTL};

/// How long [`create_table`] waits for a new table to become active.
pub const ACTIVE_WAIT: Duration = Duration::from_secs(120);

/// What [`create_table`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSetup {
    /// The table was created now (`false`: it existed and was checked).
    pub created: bool,
    /// TTL on the `ttl` attribute was enabled now (`false`: it already was).
    pub ttl_enabled_now: bool,
}

/// Creates the heartbeat table if it is missing: partition key `pk` (String), on-demand
/// capacity (`PAY_PER_REQUEST`), TTL on the `ttl` attribute. Waits until the table is
/// active. An existing table is checked (its key must be `pk` of type String) and gets TTL
/// enabled if it has none. Safe to run again.
///
/// Needs `dynamodb:CreateTable`, `DescribeTable`, `DescribeTimeToLive` and
/// `UpdateTimeToLive` on the table.
pub async fn create_table(client: &Client, table: &str) -> Result<TableSetup, DynamoError> {
    crate::config::validate_table(table)?;
    let created = match client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| build_failed("CreateTable", table, e))?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(KEY)
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| build_failed("CreateTable", table, e))?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(table, "created DynamoDB table");
            true
        }
        Err(e) if service_code(&e) == Some("ResourceInUseException") => false,
        Err(e) => return Err(DynamoError::aws("CreateTable", table, e)),
    };
    let description = wait_active(client, table).await?;
    check_key_schema(table, &description)?;
    let ttl_enabled_now = enable_ttl(client, table).await?;
    Ok(TableSetup {
        created,
        ttl_enabled_now,
    })
}

/// [`create_table`] with a client built from `config`.
pub async fn init_store(config: &DynamoConfig) -> Result<TableSetup, DynamoError> {
    let client = config.load_client().await?;
    create_table(&client, config.table()).await
}

async fn wait_active(client: &Client, table: &str) -> Result<TableDescription, DynamoError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| DynamoError::aws("DescribeTable", table, e))?;
        let description = out
            .table()
            .cloned()
            .unwrap_or_else(|| TableDescription::builder().build());
        let status = description.table_status().cloned();
        if status == Some(TableStatus::Active) {
            return Ok(description);
        }
        if start.elapsed() >= ACTIVE_WAIT {
            return Err(DynamoError::TableNotActive {
                table: table.to_owned(),
                status: status
                    .map_or_else(|| "without status".to_owned(), |s| s.as_str().to_owned()),
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn enable_ttl(client: &Client, table: &str) -> Result<bool, DynamoError> {
    let out = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| DynamoError::aws("DescribeTimeToLive", table, e))?;
    if let Some(d) = out.time_to_live_description() {
        let on = matches!(
            d.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        );
        match d.attribute_name() {
            Some(TTL) if on => return Ok(false),
            Some(other) if on => {
                return Err(DynamoError::TableMisconfigured {
                    table: table.to_owned(),
                    reason: format!(
                        "TTL is enabled on attribute {other:?}, but heartbeat writes expiry to {TTL:?}; \
                         disable TTL on the table (UpdateTimeToLive) and run init-store again, or use another table"
                    ),
                });
            }
            _ => {}
        }
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL)
                .build()
                .map_err(|e| build_failed("UpdateTimeToLive", table, e))?,
        )
        .send()
        .await
        .map_err(|e| DynamoError::aws("UpdateTimeToLive", table, e))?;
    tracing::info!(table, attribute = TTL, "enabled TTL on DynamoDB table");
    Ok(true)
}

fn check_key_schema(table: &str, description: &TableDescription) -> Result<(), DynamoError> {
    let keys = description.key_schema();
    let hash_ok = keys
        .iter()
        .any(|k| k.key_type() == &KeyType::Hash && k.attribute_name() == KEY);
    let type_ok = description
        .attribute_definitions()
        .iter()
        .any(|a| a.attribute_name() == KEY && a.attribute_type() == &ScalarAttributeType::S);
    if hash_ok && type_ok && keys.len() == 1 {
        return Ok(());
    }
    let found: Vec<String> = keys
        .iter()
        .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
        .collect();
    Err(DynamoError::TableMisconfigured {
        table: table.to_owned(),
        reason: format!(
            "its key is [{}], but heartbeat needs a single partition key {KEY:?} of type String; \
             use another table name or recreate this one",
            found.join(", ")
        ),
    })
}

/// Checks that `table` exists and has the heartbeat key. Without permission to describe
/// it, assumes it is fine (item calls will say otherwise).
pub(crate) async fn check_table(
    client: &Client,
    table: &str,
    location: &str,
) -> Result<(), DynamoError> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => check_key_schema(
            table,
            &out.table()
                .cloned()
                .unwrap_or_else(|| TableDescription::builder().build()),
        ),
        Err(e) if service_code(&e) == Some("ResourceNotFoundException") => {
            Err(DynamoError::TableMissing {
                table: table.to_owned(),
                location: location.to_owned(),
            })
        }
        Err(e) if service_code(&e) == Some("AccessDeniedException") => {
            tracing::debug!(
                table,
                "no permission to DescribeTable; skipping the table check"
            );
            Ok(())
        }
        Err(e) => Err(DynamoError::aws("DescribeTable", table, e)),
    }
}

fn build_failed(
    operation: &'static str,
    table: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> DynamoError {
    DynamoError::Aws {
        operation,
        table: table.to_owned(),
        message: format!("could not build the request: {e}"),
        source: Some(Box::new(e)),
    }
}
