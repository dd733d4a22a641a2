//! From a store URL to a running store client: [`connect`].
//!
//! Each backend is included by its cargo feature. A URL whose backend this build does
//! not include is still parsed, and [`connect`] says which feature to enable, so the
//! mistake is found at start-up with a message that says what to do.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), heartbeat::ConnectError> {
//! let connection = heartbeat::connect("memory://").await?;
//! assert_eq!(connection.store.backend(), "memory");
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use heartbeat_core::{KeyLayout, Store, StoreError};

use crate::store_url::{Backend, StoreUrl, StoreUrlError};

/// A connected store.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The URL it was made from (safe to print: secrets are redacted).
    pub url: StoreUrl,
    /// The store, for [`heartbeat_core::HeartbeatService`] and direct reads.
    pub store: Arc<dyn Store>,
    /// The connection records on the same store, for the [`reclaimer`], if this backend
    /// has a repository in this build.
    pub connections: Option<Arc<dyn reclaimer::ConnectionRepository>>,
}

/// Why a store could not be connected. [`ConnectError::exit_code`] maps each case to
/// the `heartbeat` binary's exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not valid.
    #[error(transparent)]
    InvalidUrl(#[from] StoreUrlError),
    /// The URL names a backend this build does not include.
    #[error(
        "{url}: the {backend} backend is not part of this build; rebuild with the cargo feature \
         `{feature}` (for example `cargo build --release -p heartbeat --features {feature}`)"
    )]
    NotCompiled {
        /// The URL (redacted).
        url: String,
        /// The backend.
        backend: Backend,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// The backend rejected the settings derived from the URL.
    #[error("{url}: {message}")]
    Config {
        /// The URL (redacted).
        url: String,
        /// What the backend said (secrets redacted).
        message: String,
    },
    /// The store did not answer.
    #[error("{url} is unreachable: {source}")]
    Unreachable {
        /// The URL (redacted).
        url: String,
        /// What the client said.
        #[source]
        source: StoreError,
    },
    /// The client could not be set up, or the store answered with an error.
    #[error("{url}: {source}")]
    Store {
        /// The URL (redacted).
        url: String,
        /// What the client said.
        #[source]
        source: StoreError,
    },
}

impl ConnectError {
    /// The `heartbeat` binary's exit code for this error: 2 for a bad URL or a backend
    /// not in this build, 3 for an unreachable store, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::InvalidUrl(_) | Self::NotCompiled { .. } | Self::Config { .. } => 2,
            Self::Unreachable { .. } => 3,
            Self::Store { .. } => 1,
        }
    }

    /// Classifies a store error met while connecting or probing.
    pub fn from_store(url: &StoreUrl, source: StoreError) -> Self {
        let url = url.to_string();
        if is_unreachable(&source) {
            Self::Unreachable { url, source }
        } else {
            Self::Store { url, source }
        }
    }
}

/// Whether a store error means the store could not be reached (rather than that it
/// answered with an error).
pub fn is_unreachable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Unavailable { .. } | StoreError::Timeout { .. }
    )
}

/// Settings of [`connect_with`].
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Time allowed for one store call (and for opening a connection); the backend's
    /// default when `None`.
    pub call_timeout: Option<Duration>,
    /// How long to wait for a store that is still starting (the Dapr sidecar's
    /// health); the backend's default when `None`.
    pub startup_timeout: Option<Duration>,
}

/// Parses `url` and connects to the store it names, with the backend's defaults.
pub async fn connect(url: &str) -> Result<Connection, ConnectError> {
    let url = StoreUrl::parse(url)?;
    connect_with(url, &ConnectOptions::default()).await
}

/// Connects to the store `url` names, with the backend's defaults.
pub async fn connect_url(url: StoreUrl) -> Result<Connection, ConnectError> {
    connect_with(url, &ConnectOptions::default()).await
}

/// Connects to the store `url` names.
pub async fn connect_with(
    url: StoreUrl,
    options: &ConnectOptions,
) -> Result<Connection, ConnectError> {
    let _ = options;
    match &url {
        StoreUrl::Memory => memory(url),
        #[cfg(feature = "redis")]
        StoreUrl::Redis(_) => redis(url, options).await,
        #[cfg(not(feature = "redis"))]
        StoreUrl::Redis(_) => not_compiled(url),
        #[cfg(feature = "dapr")]
        StoreUrl::Dapr(_) => dapr(url, options).await,
        #[cfg(not(feature = "dapr"))]
        StoreUrl::Dapr(_) => not_compiled(url),
        #[cfg(feature = "dynamodb")]
        StoreUrl::DynamoDb(_) => dynamodb(url, options).await,
        #[cfg(not(feature = "dynamodb"))]
        StoreUrl::DynamoDb(_) => not_compiled(url),
    }
}

#[cfg(feature = "dapr")]
async fn dapr(url: StoreUrl, options: &ConnectOptions) -> Result<Connection, ConnectError> {
    use heartbeat_dapr::{
        ConnectError as DaprConnectError, DaprConfig, DaprConnections, DaprStore,
    };
    let StoreUrl::Dapr(d) = &url else {
        return not_compiled(url);
    };
    let shown = url.to_string();
    let config_error = |message: String| ConnectError::Config {
        url: shown.clone(),
        message,
    };
    let mut config =
        DaprConfig::new(d.endpoint(), d.store()).map_err(|e| config_error(e.to_string()))?;
    if let Some(token) = d.token() {
        config = config.with_api_token(token.expose());
    }
    if let Some(t) = options.call_timeout {
        config = config.with_request_timeout(t);
    }
    if let Some(t) = options.startup_timeout {
        config = config.with_startup_timeout(t);
    }
    match DaprStore::connect(config).await {
        Ok(store) => Ok(Connection {
            url,
            connections: Some(Arc::new(DaprConnections::new(store.clone()))),
            store: Arc::new(store),
        }),
        Err(DaprConnectError::NotHealthy { source, .. }) => {
            Err(ConnectError::Unreachable { url: shown, source })
        }
        Err(DaprConnectError::Client(source) | DaprConnectError::Metadata(source)) => {
            Err(ConnectError::from_store(&url, source))
        }
        Err(
            e @ (DaprConnectError::StoreNotFound { .. } | DaprConnectError::NoEtagSupport { .. }),
        ) => Err(config_error(e.to_string())),
    }
}

/// The DynamoDB configuration a `dynamodb://` URL names.
#[cfg(feature = "dynamodb")]
pub fn dynamodb_config(
    url: &StoreUrl,
    options: &ConnectOptions,
) -> Result<heartbeat_dynamodb::DynamoConfig, ConnectError> {
    let StoreUrl::DynamoDb(d) = url else {
        return Err(ConnectError::Config {
            url: url.to_string(),
            message: "not a dynamodb:// URL".to_owned(),
        });
    };
    let mut config =
        heartbeat_dynamodb::DynamoConfig::new(d.table()).map_err(|e| ConnectError::Config {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    if let Some(r) = d.region() {
        config = config.region(r);
    }
    if let Some(e) = d.endpoint() {
        config = config.endpoint(e);
    }
    if let Some(p) = d.profile() {
        config = config.profile(p);
    }
    if let Some(n) = d.max_attempts() {
        config = config.max_attempts(n);
    }
    if let Some(t) = options.call_timeout {
        config = config.attempt_timeout(t).connect_timeout(t);
    }
    Ok(config)
}

/// Classifies a DynamoDB setup error: configuration (2), unreachable (3) or other (1).
#[cfg(feature = "dynamodb")]
pub fn dynamodb_error(url: &StoreUrl, e: heartbeat_dynamodb::DynamoError) -> ConnectError {
    use heartbeat_dynamodb::DynamoError;
    let shown = url.to_string();
    match e {
        DynamoError::Aws { ref message, .. } if looks_unreachable(message) => {
            ConnectError::Unreachable {
                url: shown,
                source: StoreError::Unavailable {
                    backend: "dynamodb",
                    message: e.to_string(),
                    source: Some(Box::new(e)),
                },
            }
        }
        DynamoError::Aws { .. } | DynamoError::TableNotActive { .. } => ConnectError::Store {
            url: shown,
            source: StoreError::Backend {
                backend: "dynamodb",
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
        },
        other => ConnectError::Config {
            url: shown,
            message: other.to_string(),
        },
    }
}

#[cfg(feature = "dynamodb")]
fn looks_unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "dispatch failure",
        "timed out",
        "timeout",
        "connection refused",
        "dns error",
        "io error",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

#[cfg(feature = "dynamodb")]
async fn dynamodb(url: StoreUrl, options: &ConnectOptions) -> Result<Connection, ConnectError> {
    use heartbeat_dynamodb::{DynamoConnections, DynamoStore};
    let config = dynamodb_config(&url, options)?;
    let store = DynamoStore::connect(config)
        .await
        .map_err(|e| dynamodb_error(&url, e))?;
    Ok(Connection {
        url,
        connections: Some(Arc::new(DynamoConnections::new(store.clone()))),
        store: Arc::new(store),
    })
}

#[cfg(feature = "redis")]
async fn redis(url: StoreUrl, options: &ConnectOptions) -> Result<Connection, ConnectError> {
    use heartbeat_redis::{RedisConfig, RedisStore};
    let StoreUrl::Redis(r) = &url else {
        return not_compiled(url);
    };
    let config_error = |e: heartbeat_redis::ConfigError| ConnectError::Config {
        url: url.to_string(),
        message: e.to_string(),
    };
    let urls = r.connection_urls();
    let mut config = if r.cluster() {
        RedisConfig::cluster(urls.iter().map(|u| u.expose())).map_err(config_error)?
    } else {
        let first = urls.first().map(|u| u.expose()).unwrap_or_default();
        RedisConfig::from_url(first).map_err(config_error)?
    };
    if let Some(t) = options.call_timeout {
        config = config.call_timeout(t).connect_timeout(t);
    }
    match RedisStore::connect_with(config).await {
        Ok(store) => Ok(Connection {
            url,
            connections: Some(Arc::new(heartbeat_redis::RedisConnections::new(
                store.clone(),
            ))),
            store: Arc::new(store),
        }),
        Err(heartbeat_redis::ConnectError::Config(e)) => Err(config_error(e)),
        Err(heartbeat_redis::ConnectError::Store { source, .. }) => {
            Err(ConnectError::from_store(&url, source))
        }
    }
}

#[cfg(feature = "memory")]
fn memory(url: StoreUrl) -> Result<Connection, ConnectError> {
    Ok(Connection {
        url,
        store: Arc::new(heartbeat_memory::MemoryStore::new()),
        connections: Some(Arc::new(reclaimer::MemoryConnections::new())),
    })
}

#[cfg(not(feature = "memory"))]
fn memory(url: StoreUrl) -> Result<Connection, ConnectError> {
    not_compiled(url)
}

/// The error for a URL whose backend this build does not include.
#[allow(dead_code)] // unused when every backend feature is enabled
fn not_compiled(url: StoreUrl) -> Result<Connection, ConnectError> {
    let backend = url.backend();
    Err(ConnectError::NotCompiled {
        url: url.to_string(),
        backend,
        feature: backend.feature(),
    })
}

impl Connection {
    /// Reads the index once, within `timeout`: the cheapest proof that the store is
    /// reachable and answers. Use it before joining, to fail early with a clear error.
    pub async fn check(&self, keys: &KeyLayout, timeout: Duration) -> Result<(), ConnectError> {
        let index = keys.index_key();
        match tokio::time::timeout(timeout, self.store.index_members(index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ConnectError::from_store(&self.url, e)),
            Err(_) => Err(ConnectError::from_store(
                &self.url,
                StoreError::Timeout {
                    key: index.to_owned(),
                    after: timeout,
                },
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_connects_and_answers() {
        let c = connect("memory://").await.unwrap();
        assert_eq!(c.store.backend(), "memory");
        c.check(&KeyLayout::default(), Duration::from_secs(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn bad_urls_are_usage_errors() {
        let err = connect("nonsense").await.unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("scheme"), "{err}");
    }

    #[test]
    fn a_backend_compiled_out_names_its_feature() {
        let url = StoreUrl::parse("dapr://localhost:3500/statestore").unwrap();
        let err = not_compiled(url).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--features dapr"), "{err}");
    }

    #[cfg(not(feature = "dynamodb"))]
    #[tokio::test]
    async fn connect_refuses_a_backend_compiled_out() {
        let err = connect("dynamodb://heartbeats?region=eu-west-1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--features dynamodb"), "{err}");
    }
}
