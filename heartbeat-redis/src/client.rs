//! The wire side: one reconnecting connection (standalone or Cluster), a timeout on
//! every call, and the translation of Redis errors into [`StoreError`]s.

use std::future::Future;
use std::sync::Once;
use std::time::Duration;

use heartbeat_core::StoreError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, ServerErrorKind, TlsCertificates, Value};

use crate::config::{ConfigError, RedisConfig, Target};

/// The backend name in errors and metrics.
pub const BACKEND: &str = "redis";

/// A reconnecting connection to a standalone server or to a Cluster. Cheap to clone:
/// clones share the underlying multiplexed connections.
#[derive(Clone)]
pub(crate) enum Connection {
    /// `ConnectionManager`: one multiplexed connection, re-established after errors.
    Standalone(ConnectionManager),
    /// The async Cluster client: one connection per node, slot map refreshed on
    /// redirections, reconnects by itself.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server (or no seed node) could be reached in time, or it refused us.
    #[error("could not connect to Redis at {urls}: {source}")]
    Store {
        /// The URLs, passwords redacted.
        urls: String,
        /// What went wrong.
        #[source]
        source: StoreError,
    },
}

/// Installs the ring crypto provider for rustls once, unless the application installed
/// one already (the redis client builds its TLS configuration from the process default).
fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err means another thread installed one in the meantime: fine too.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// Opens the connection described by `config`.
pub(crate) async fn connect(config: &RedisConfig) -> Result<Connection, ConnectError> {
    config.validate()?;
    let urls = config.redacted_urls().join(", ");
    let fail = |source: StoreError| ConnectError::Store {
        urls: urls.clone(),
        source,
    };
    if config.is_tls() {
        ensure_crypto_provider();
    }
    let tls = config
        .tls_root_certificate
        .as_ref()
        .map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        });
    let opening = async {
        match &config.target {
            Target::Standalone(info) => {
                let client = match tls {
                    Some(certs) => redis::Client::build_with_tls((**info).clone(), certs),
                    None => redis::Client::open((**info).clone()),
                }
                .map_err(|e| map_error("connect", e))?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.call_timeout))
                    .set_min_delay(Duration::from_millis(10).min(config.reconnect_max_delay))
                    .set_max_delay(config.reconnect_max_delay)
                    // Few attempts per reconnection: the next call starts a new one, so
                    // a call never waits on a long series of attempts.
                    .set_number_of_retries(3);
                let manager = ConnectionManager::new_with_config(client, manager_config)
                    .await
                    .map_err(|e| map_error("connect", e))?;
                Ok(Connection::Standalone(manager))
            }
            Target::Cluster(nodes) => {
                let max_wait = u64::try_from(config.reconnect_max_delay.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.call_timeout)
                    .retries(3)
                    .min_retry_wait(max_wait.min(10))
                    .max_retry_wait(max_wait);
                if let Some(certs) = tls {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(|e| map_error("connect", e))?;
                let connection = client
                    .get_async_connection()
                    .await
                    .map_err(|e| map_error("connect", e))?;
                Ok(Connection::Cluster(connection))
            }
        }
    };
    let limit = config.connect_timeout + config.call_timeout;
    match tokio::time::timeout(limit, opening).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(fail(StoreError::Timeout {
            key: "connect".into(),
            after: limit,
        })),
    }
}

impl Connection {
    /// Runs `op` on a clone of the connection with a timeout of `limit`; `what` names
    /// the key (or batch) in errors and `op_name` the operation in metrics.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op_name: &'static str,
        what: &str,
        limit: Duration,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let result = match tokio::time::timeout(limit, op(self.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout {
                key: what.to_owned(),
                after: limit,
            }),
            Ok(Err(e)) => Err(map_error(what, e)),
            Err(_) => Err(StoreError::Timeout {
                key: what.to_owned(),
                after: limit,
            }),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::Timeout { .. }) => "timeout",
            Err(StoreError::Unavailable { .. }) => "unavailable",
            Err(_) => "error",
        };
        metrics::counter!("heartbeat_redis_calls_total", "op" => op_name, "result" => outcome)
            .increment(1);
        if let Err(e) = &result {
            tracing::debug!(op = op_name, key = %what.escape_debug(), error = %e, "redis call failed");
        }
        result
    }
}

/// Translates a Redis error on `what` (a key or a description of the call).
pub(crate) fn map_error(what: &str, e: RedisError) -> StoreError {
    let unavailable = |message: String, e: RedisError| StoreError::Unavailable {
        backend: BACKEND,
        message,
        source: Some(Box::new(e)),
    };
    if e.is_timeout() {
        return unavailable(format!("no answer in time for {what:?}"), e);
    }
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.kind(), redis::ErrorKind::ClusterConnectionNotFound)
    {
        return unavailable(format!("connection problem during {what:?}"), e);
    }
    if let redis::ErrorKind::Server(kind) = e.kind() {
        match kind {
            ServerErrorKind::ClusterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly => {
                return unavailable(format!("the server cannot serve {what:?} now"), e);
            }
            ServerErrorKind::CrossSlot => {
                return StoreError::Backend {
                    backend: BACKEND,
                    message: format!(
                        "{what:?} spans several Cluster slots; this is a bug in heartbeat-redis, please report it"
                    ),
                    source: Some(Box::new(e)),
                };
            }
            ServerErrorKind::NoPerm => {
                return StoreError::Backend {
                    backend: BACKEND,
                    message: format!(
                        "the Redis user may not run the commands {what:?} needs; grant it read/write on the keys, EVAL/EVALSHA and SCRIPT"
                    ),
                    source: Some(Box::new(e)),
                };
            }
            _ => {}
        }
    }
    if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed) {
        return StoreError::Backend {
            backend: BACKEND,
            message: "authentication failed; check the user and password in the Redis URL".into(),
            source: Some(Box::new(e)),
        };
    }
    if e.code() == Some("WRONGTYPE") {
        return StoreError::Corrupt {
            key: what.to_owned(),
            reason: "the key holds another Redis type than this store writes (a string value, or a set for an index)".into(),
        };
    }
    StoreError::Backend {
        backend: BACKEND,
        message: format!("{what:?}: {e}"),
        source: Some(Box::new(e)),
    }
}
