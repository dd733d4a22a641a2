//! Opening the store named by a URL: the heartbeat [`Store`] and the
//! [`ConnectionRepository`] holding the subscription records, on the same backend.
//!
//! `memory://` is in-process only (several managers in one process, for tests);
//! `redis://host:port` (also `rediss://`, `redis+cluster://`) keeps heartbeats and
//! subscription records in Redis, the records on the seed's layout
//! (`websocket-<id>`, index set `websocket-index`: [`heartbeat_redis::RedisConnections`]).

use std::sync::Arc;
use std::time::Duration;

use heartbeat_core::Store;
use reclaimer::{ConnectionRepository, MemoryConnections};

/// Why a store URL could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The URL names a backend this example does not support.
    #[error("unsupported store URL {url:?}; use memory:// or redis://host:port")]
    Unsupported {
        /// The URL, as given (without secrets: only the scheme is kept).
        url: String,
    },
    /// The URL is malformed.
    #[error("invalid store URL {url}: {message}")]
    InvalidUrl {
        /// The URL, secrets masked.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The backend could not be reached.
    #[error("could not open the store at {url}: {message}")]
    Open {
        /// The URL, secrets masked.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl BackendError {
    /// Whether retrying cannot help (the URL itself is wrong).
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Unsupported { .. } | Self::InvalidUrl { .. })
    }
}

/// The two halves of one backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where heartbeats live.
    pub store: Arc<dyn Store>,
    /// Where subscription records live.
    pub connections: Arc<dyn ConnectionRepository>,
}

impl Backend {
    /// An in-process backend (`memory://`): shared only by the managers of this
    /// process; clone it to run several managers on the same data.
    pub fn memory() -> Self {
        Self {
            store: Arc::new(heartbeat_memory::MemoryStore::new()),
            connections: Arc::new(MemoryConnections::new()),
        }
    }

    /// Opens the backend named by `url`. `reconnect_within` bounds the wait between
    /// reconnection attempts after the store went away (Redis): keep it at most one
    /// heartbeat interval, so that every instance publishes again soon after the store
    /// is back, well before its peers would judge its missing heartbeat as an end.
    pub async fn open(url: &str, reconnect_within: Duration) -> Result<Self, BackendError> {
        let scheme = url.split("://").next().unwrap_or_default();
        match scheme {
            "memory" => Ok(Self::memory()),
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
                let open_error = |message: String| BackendError::Open {
                    url: heartbeat_redis::config::redact_url(url),
                    message,
                };
                let config = heartbeat_redis::RedisConfig::from_url(url)
                    .map_err(|e| BackendError::InvalidUrl {
                        url: heartbeat_redis::config::redact_url(url),
                        message: e.to_string(),
                    })?
                    .reconnect_max_delay(reconnect_within);
                let store = heartbeat_redis::RedisStore::connect_with(config)
                    .await
                    .map_err(|e| open_error(e.to_string()))?;
                Ok(Self {
                    connections: Arc::new(heartbeat_redis::RedisConnections::new(store.clone())),
                    store: Arc::new(store),
                })
            }
            _ => Err(BackendError::Unsupported {
                url: format!("{scheme}://..."),
            }),
        }
    }
}
