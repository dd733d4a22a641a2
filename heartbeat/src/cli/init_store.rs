//! `heartbeat init-store URL`: prepares a store that needs setup before first use (the
//! DynamoDB table: key `pk`, on-demand capacity, TTL on `ttl`). Safe to run again.
//! Other stores need no setup: it checks that they answer.

use std::time::Duration;

use clap::Args;
use heartbeat::{KeyLayout, StoreUrl};

use super::common::{CliError, CliResult};

/// Options of `heartbeat init-store`.
#[derive(Debug, Clone, Args)]
pub struct InitStoreArgs {
    /// The store URL (see `heartbeat --help`).
    #[arg(value_name = "URL", env = "HEARTBEAT_STORE", hide_env_values = true)]
    store: String,
}

/// Runs `init-store`.
pub async fn run(args: InitStoreArgs) -> CliResult {
    let url = StoreUrl::parse(&args.store)
        .map_err(|e| CliError::usage(format!("{e}. See `heartbeat --help` for the URL forms")))?;
    match &url {
        #[cfg(feature = "dynamodb")]
        StoreUrl::DynamoDb(_) => {
            let config = heartbeat::connect::dynamodb_config(&url, &Default::default())?;
            let setup = heartbeat::dynamodb::init_store(&config)
                .await
                .map_err(|e| CliError::from(heartbeat::connect::dynamodb_error(&url, e)))?;
            println!(
                "{url}: table {}; TTL {}",
                if setup.created {
                    "created"
                } else {
                    "already existed (checked)"
                },
                if setup.ttl_enabled_now {
                    "enabled now"
                } else {
                    "already enabled"
                }
            );
            Ok(())
        }
        _ => {
            let timeout = Duration::from_secs(5);
            let options = heartbeat::ConnectOptions {
                call_timeout: Some(timeout),
                startup_timeout: Some(timeout),
            };
            let connection = heartbeat::connect_with(url.clone(), &options).await?;
            connection.check(&KeyLayout::default(), timeout).await?;
            println!("{url}: answers; this store needs no setup");
            Ok(())
        }
    }
}
