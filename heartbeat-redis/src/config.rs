//! Where the Redis server is and how to talk to it: [`RedisConfig`], built from a URL.
//!
//! Accepted URLs:
//! - `redis://[user[:password]@]host[:port][/db]`: one server (standalone, or a proxy);
//! - `rediss://...`: the same over TLS (server certificate checked against the
//!   webpki roots, or against [`RedisConfig::tls_root_certificate`]);
//! - `redis+cluster://[user[:password]@]host1:port1[,host2:port2...]` and
//!   `rediss+cluster://...`: a Redis Cluster, given by one or more seed nodes;
//! - [`RedisConfig::cluster`]: a Cluster from a list of `redis://` seed URLs.
//!
//! User and password are taken from the URL (percent-encode special characters). They
//! never appear in logs, errors or `Debug` output: [`RedisConfig`]'s `Debug` prints the
//! URLs with the password replaced by `***` (see [`redact_url`]).
//!
//! ```
//! use std::time::Duration;
//! use heartbeat_redis::RedisConfig;
//! let config = RedisConfig::from_url("redis://app:s3cret@redis.internal:6379/0")?
//!     .call_timeout(Duration::from_secs(2));
//! assert!(!format!("{config:?}").contains("s3cret"));
//! # Ok::<(), heartbeat_redis::ConfigError>(())
//! ```

use std::fmt;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::layout::DEFAULT_VERSION_PREFIX;

/// Default time allowed for one call (one round trip, or one bulk read).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default longest wait between two reconnection attempts.
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Default largest value accepted (client-side check; Redis itself allows 512 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Why a configuration is invalid. Messages never contain a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse or uses an unknown scheme.
    #[error(
        "invalid Redis URL {url}: {reason}; expected redis://, rediss://, redis+cluster:// or rediss+cluster://"
    )]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A Cluster configuration without any seed node.
    #[error(
        "a Redis Cluster needs at least one seed node; list host:port pairs separated by commas"
    )]
    NoSeedNodes,
    /// A setting is out of range.
    #[error("invalid Redis setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Standalone server or Cluster.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server.
    Standalone(Box<ConnectionInfo>),
    /// Seed nodes of a Cluster.
    Cluster(Vec<ConnectionInfo>),
}

/// How to reach Redis and how patient to be. Build it with [`RedisConfig::from_url`] or
/// [`RedisConfig::cluster`], adjust with the builder methods.
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) target: Target,
    /// The URLs as given, password redacted (for Debug and logs).
    pub(crate) display: Vec<String>,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) version_prefix: String,
    pub(crate) max_value_bytes: usize,
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
}

impl RedisConfig {
    /// A configuration from one URL (see the module docs for the accepted forms).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ConfigError::InvalidUrl {
                url: redact_url(url),
                reason: "missing scheme".into(),
            })?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "rediss" => {
                let info = parse_node(url, url)?;
                Ok(Self::new(
                    Target::Standalone(Box::new(info)),
                    vec![redact_url(url)],
                ))
            }
            "redis+cluster" | "rediss+cluster" => {
                let node_scheme = if scheme.eq_ignore_ascii_case("rediss+cluster") {
                    "rediss"
                } else {
                    "redis"
                };
                let nodes = split_cluster_url(rest)
                    .into_iter()
                    .map(|authority| format!("{node_scheme}://{authority}"))
                    .collect::<Vec<_>>();
                let mut infos = Vec::with_capacity(nodes.len());
                for node in &nodes {
                    infos.push(parse_node(node, url)?);
                }
                if infos.is_empty() {
                    return Err(ConfigError::NoSeedNodes);
                }
                Ok(Self::new(Target::Cluster(infos), vec![redact_url(url)]))
            }
            other => Err(ConfigError::InvalidUrl {
                url: redact_url(url),
                reason: format!("unknown scheme {other:?}"),
            }),
        }
    }

    /// A Cluster configuration from seed node URLs (`redis://` or `rediss://`, all with
    /// the same user and password).
    pub fn cluster<I, S>(seed_nodes: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut infos = Vec::new();
        let mut display = Vec::new();
        for node in seed_nodes {
            let node = node.as_ref().trim();
            infos.push(parse_node(node, node)?);
            display.push(redact_url(node));
        }
        if infos.is_empty() {
            return Err(ConfigError::NoSeedNodes);
        }
        Ok(Self::new(Target::Cluster(infos), display))
    }

    fn new(target: Target, display: Vec<String>) -> Self {
        Self {
            target,
            display,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
            version_prefix: DEFAULT_VERSION_PREFIX.to_owned(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            tls_root_certificate: None,
        }
    }

    /// Time allowed for every call (default 5 s); a call that takes longer fails with
    /// `StoreError::Timeout`.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Time allowed to open a connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait between reconnection attempts after the server went away
    /// (default 1 s). Shorter means faster recovery and more connection attempts.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// Prefix of the version keys (default `heartbeat-version:`, see the crate docs for
    /// the layout). Must not contain `{` or `}`.
    pub fn version_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.version_prefix = prefix.into();
        self
    }

    /// Largest value accepted (default 1 MiB); larger puts fail with
    /// `StoreError::ValueTooLarge` before anything is sent.
    pub fn max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// A PEM root certificate to verify the server's TLS certificate with, instead of
    /// the built-in web PKI roots (a private CA).
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Whether this is a Cluster configuration.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        let first = match &self.target {
            Target::Standalone(info) => Some(&**info),
            Target::Cluster(infos) => infos.first(),
        };
        first.is_some_and(|i| matches!(i.addr(), redis::ConnectionAddr::TcpTls { .. }))
    }

    /// The URLs, password redacted: safe to log.
    pub fn redacted_urls(&self) -> &[String] {
        &self.display
    }

    /// Checks the settings; called when connecting.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (setting, d) in [
            ("call timeout", self.call_timeout),
            ("connect timeout", self.connect_timeout),
            ("reconnect max delay", self.reconnect_max_delay),
        ] {
            if d.is_zero() {
                return Err(ConfigError::InvalidSetting {
                    setting,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        if self.version_prefix.contains(['{', '}']) {
            return Err(ConfigError::InvalidSetting {
                setting: "version prefix",
                reason: "must not contain '{' or '}' (the version key's hash tag follows it)"
                    .into(),
            });
        }
        if self.max_value_bytes == 0 {
            return Err(ConfigError::InvalidSetting {
                setting: "max value bytes",
                reason: "must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "mode",
                &if self.is_cluster() {
                    "cluster"
                } else {
                    "standalone"
                },
            )
            .field("urls", &self.display)
            .field("call_timeout", &self.call_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("version_prefix", &self.version_prefix)
            .field("max_value_bytes", &self.max_value_bytes)
            .field(
                "tls_root_certificate",
                &self.tls_root_certificate.as_ref().map(|_| "set"),
            )
            .finish()
    }
}

/// Parses one node URL with the redis client's parser; errors name `original` redacted.
fn parse_node(node: &str, original: &str) -> Result<ConnectionInfo, ConfigError> {
    node.into_connection_info()
        .map_err(|e| ConfigError::InvalidUrl {
            url: redact_url(original),
            // The client's parse errors are fixed texts (no URL parts in them).
            reason: e.to_string(),
        })
}

/// Splits `user:pass@h1:p1,h2:p2/0?x=y` into one authority per node, each with the
/// user info and the path/query: `user:pass@h1:p1/0?x=y`, `user:pass@h2:p2/0?x=y`.
fn split_cluster_url(rest: &str) -> Vec<String> {
    // The last '@' ends the user info (a password may contain '/' or '?').
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (hosts, tail) = after.split_at(end);
    hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{userinfo}{h}{tail}"))
        .collect()
}

/// `url` with the password (the user info after the first `:`) replaced by `***`.
///
/// ```
/// use heartbeat_redis::config::redact_url;
/// assert_eq!(redact_url("redis://app:p%40ss@h:6379/0"), "redis://app:***@h:6379/0");
/// assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL we understand: it may be anything, so show nothing of it.
        return "<unparsable URL>".to_owned();
    };
    // The last '@' ends the user info: a password may contain '/', '?' or '#' that were
    // not percent-encoded, and must be hidden all the same.
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            format!("{scheme}://{user}@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn standalone_url_with_credentials() {
        let c = RedisConfig::from_url("redis://app:s3cr%40t@localhost:6380/2").unwrap();
        assert!(!c.is_cluster());
        assert!(!c.is_tls());
        let Target::Standalone(info) = &c.target else {
            panic!("standalone expected")
        };
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().password(), Some("s3cr@t"));
        assert_eq!(info.redis_settings().db(), 2);
    }

    #[test]
    fn tls_url() {
        let c = RedisConfig::from_url("rediss://:pw@redis.example:6380").unwrap();
        assert!(c.is_tls());
    }

    #[test]
    fn cluster_url_lists_seed_nodes_with_shared_credentials() {
        let c = RedisConfig::from_url("redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001,h3:7002")
            .unwrap();
        let Target::Cluster(infos) = &c.target else {
            panic!("cluster expected")
        };
        assert_eq!(infos.len(), 3);
        for info in infos {
            assert_eq!(info.redis_settings().password(), Some("pw"));
            assert_eq!(info.redis_settings().username(), Some("u"));
        }
        assert!(c.is_cluster());
        assert!(!c.is_tls());
        assert!(
            RedisConfig::from_url("rediss+cluster://h1:1,h2:2")
                .unwrap()
                .is_tls()
        );
    }

    #[test]
    fn cluster_from_seed_list() {
        let c = RedisConfig::cluster(["redis://h1:7000", "redis://h2:7001"]).unwrap();
        assert!(c.is_cluster());
        assert_eq!(
            RedisConfig::cluster(Vec::<String>::new()).err(),
            Some(ConfigError::NoSeedNodes)
        );
        assert_eq!(
            RedisConfig::from_url("redis+cluster://").err(),
            Some(ConfigError::NoSeedNodes)
        );
    }

    #[test]
    fn bad_urls_are_rejected_without_leaking_the_password() {
        for url in [
            "http://u:topsecret@h",
            "topsecret",
            "redis://u:topsecret@h/notadb",
            "redis+cluster://u:topsecret@h:1,h2:notaport",
            "redis://u:top/secret@h:notaport",
        ] {
            let err = RedisConfig::from_url(url).expect_err(url);
            let text = format!("{err} {err:?}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn debug_redacts_passwords() {
        for url in [
            "redis://app:hunter2@h:6379",
            "rediss://:hunter2@h",
            "redis+cluster://app:hunter2@h1:1,h2:2",
        ] {
            let c = RedisConfig::from_url(url).unwrap();
            let debug = format!("{c:?} {c:#?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("***"), "{debug}");
        }
        let c = RedisConfig::cluster(["redis://:hunter2@h1:1"]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn settings_are_validated() {
        let c = RedisConfig::from_url("redis://h").unwrap();
        assert!(c.clone().validate().is_ok());
        assert!(c.clone().call_timeout(Duration::ZERO).validate().is_err());
        assert!(c.clone().version_prefix("v{x}:").validate().is_err());
        assert!(c.max_value_bytes(0).validate().is_err());
    }
}
