//! Where the sidecar is and which state store to use: [`DaprConfig`], from the
//! environment (`DAPR_HTTP_ENDPOINT`, `DAPR_HTTP_PORT`, `DAPR_API_TOKEN`, as the Dapr
//! SDKs read them) or from a store URL (`dapr://host:port/<store>`).
//!
//! ```
//! use heartbeat_dapr::DaprConfig;
//! let config = DaprConfig::from_url_with("dapr://localhost:3501/statestore", |_| None)?;
//! assert_eq!(config.endpoint().as_str(), "http://localhost:3501/");
//! assert_eq!(config.store(), "statestore");
//! # Ok::<(), heartbeat_dapr::ConfigError>(())
//! ```

use std::fmt;
use std::time::Duration;

use url::Url;

/// Environment variable: the sidecar's HTTP endpoint (`http://host:port`).
pub const ENV_HTTP_ENDPOINT: &str = "DAPR_HTTP_ENDPOINT";
/// Environment variable: the sidecar's HTTP port on 127.0.0.1 (when no endpoint is set).
pub const ENV_HTTP_PORT: &str = "DAPR_HTTP_PORT";
/// Environment variable: the API token, sent as the `dapr-api-token` header.
pub const ENV_API_TOKEN: &str = "DAPR_API_TOKEN";
/// The sidecar's default HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 3500;
/// The default state store component name.
pub const DEFAULT_STORE: &str = "statestore";
/// Default largest value accepted (bytes). Marked text can grow up to six times when
/// JSON-escaped, which stays under daprd's default 4 MiB request limit.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 512 * 1024;

/// Why a configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URL or endpoint is malformed.
    #[error("invalid Dapr endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The port variable is not a port.
    #[error("{ENV_HTTP_PORT}={value:?} is not a TCP port (1-65535)")]
    Port {
        /// What was given.
        value: String,
    },
    /// The store name is empty or has characters Dapr does not allow.
    #[error(
        "invalid state store name {store:?}: use the component's metadata.name (letters, digits, '-', '_', '.')"
    )]
    Store {
        /// What was given.
        store: String,
    },
}

/// The API token: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token, to put in the `dapr-api-token` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// How to reach the sidecar and which state store to use.
#[derive(Clone)]
pub struct DaprConfig {
    endpoint: Url,
    store: String,
    api_token: Option<ApiToken>,
    request_timeout: Duration,
    startup_timeout: Duration,
    max_value_bytes: usize,
}

impl fmt::Debug for DaprConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaprConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("store", &self.store)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("startup_timeout", &self.startup_timeout)
            .field("max_value_bytes", &self.max_value_bytes)
            .finish()
    }
}

impl DaprConfig {
    /// A configuration for the sidecar at `endpoint` (`http://host:port`) and the state
    /// store component `store`, without a token.
    pub fn new(endpoint: &str, store: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint: parse_endpoint(endpoint)?,
            store: check_store(store)?,
            api_token: None,
            request_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(30),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        })
    }

    /// From the process environment: `DAPR_HTTP_ENDPOINT`, else `DAPR_HTTP_PORT`
    /// (default 3500) on 127.0.0.1, the token from `DAPR_API_TOKEN`, and the store
    /// `store` (use [`DEFAULT_STORE`] when in doubt).
    pub fn from_env(store: &str) -> Result<Self, ConfigError> {
        Self::from_lookup(store, |k| std::env::var(k).ok())
    }

    /// Like [`DaprConfig::from_env`], with variables from `lookup` (for tests).
    pub fn from_lookup(
        store: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let endpoint = endpoint_from_lookup(&lookup)?;
        let mut config = Self::new(&endpoint, store)?;
        config.api_token = token_from_lookup(&lookup);
        Ok(config)
    }

    /// From a store URL: `dapr://host:port/<store>` (port default 3500), or
    /// `dapr:///<store>` for the sidecar named by the environment. The token always comes
    /// from `DAPR_API_TOKEN`, never from the URL.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Self::from_url_with(url, |k| std::env::var(k).ok())
    }

    /// Like [`DaprConfig::from_url`], with variables from `lookup` (for tests).
    pub fn from_url_with(
        url: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::Endpoint {
            endpoint: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("dapr://")
            .ok_or_else(|| bad("a Dapr store URL starts with dapr://"))?;
        if rest.contains('@') || rest.contains('?') || rest.contains('#') {
            return Err(bad(
                "no credentials or options in the URL; the token comes from DAPR_API_TOKEN",
            ));
        }
        let (authority, store) = rest
            .split_once('/')
            .ok_or_else(|| bad("the state store name (the path after the host) is missing"))?;
        let store = store.trim_end_matches('/');
        let endpoint = if authority.is_empty() {
            endpoint_from_lookup(&lookup)?
        } else if authority.contains(':') && !authority.ends_with(']') {
            format!("http://{authority}")
        } else {
            format!("http://{authority}:{DEFAULT_HTTP_PORT}")
        };
        let mut config = Self::new(&endpoint, store)?;
        config.api_token = token_from_lookup(&lookup);
        Ok(config)
    }

    /// Sets the API token (sent as `dapr-api-token`).
    pub fn with_api_token(mut self, token: impl Into<String>) -> Self {
        self.api_token = Some(ApiToken::new(token));
        self
    }

    /// Sets the state store component name.
    pub fn with_store(mut self, store: &str) -> Result<Self, ConfigError> {
        self.store = check_store(store)?;
        Ok(self)
    }

    /// Time allowed for one HTTP request to the sidecar (default 5 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time allowed at start for the sidecar to become healthy (default 30 s).
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Largest value accepted by `put` (default [`DEFAULT_MAX_VALUE_BYTES`]).
    pub fn with_max_value_bytes(mut self, max: usize) -> Self {
        self.max_value_bytes = max;
        self
    }

    /// The sidecar's base URL.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The state store component name.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The API token, if any.
    pub fn api_token(&self) -> Option<&ApiToken> {
        self.api_token.as_ref()
    }

    /// Time allowed for one request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Time allowed at start for the sidecar to become healthy.
    pub fn startup_timeout(&self) -> Duration {
        self.startup_timeout
    }

    /// Largest value accepted by `put`.
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }
}

fn endpoint_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    if let Some(e) = lookup(ENV_HTTP_ENDPOINT).filter(|e| !e.trim().is_empty()) {
        return Ok(e.trim().to_owned());
    }
    let port = match lookup(ENV_HTTP_PORT).filter(|p| !p.trim().is_empty()) {
        Some(p) => p
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(ConfigError::Port { value: p })?,
        None => DEFAULT_HTTP_PORT,
    };
    Ok(format!("http://127.0.0.1:{port}"))
}

fn token_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Option<ApiToken> {
    lookup(ENV_API_TOKEN)
        .filter(|t| !t.is_empty())
        .map(ApiToken::new)
}

fn parse_endpoint(endpoint: &str) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let url = Url::parse(endpoint).map_err(|e| bad(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("use an http:// or https:// URL".to_owned()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the host is missing".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(bad(
            "no credentials or query in the endpoint; set DAPR_API_TOKEN".to_owned(),
        ));
    }
    Ok(url)
}

fn check_store(store: &str) -> Result<String, ConfigError> {
    let ok = !store.is_empty()
        && store
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(store.to_owned())
    } else {
        Err(ConfigError::Store {
            store: store.to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_to_port_3500_on_loopback() {
        let c = DaprConfig::from_lookup(DEFAULT_STORE, env(&[])).unwrap();
        assert_eq!(c.endpoint().as_str(), "http://127.0.0.1:3500/");
        assert_eq!(c.store(), "statestore");
        assert!(c.api_token().is_none());
    }

    #[test]
    fn endpoint_wins_over_port() {
        let c = DaprConfig::from_lookup(
            "s",
            env(&[
                (ENV_HTTP_ENDPOINT, "http://sidecar:4000"),
                (ENV_HTTP_PORT, "3600"),
            ]),
        )
        .unwrap();
        assert_eq!(c.endpoint().as_str(), "http://sidecar:4000/");
        let c = DaprConfig::from_lookup("s", env(&[(ENV_HTTP_PORT, "3600")])).unwrap();
        assert_eq!(c.endpoint().as_str(), "http://127.0.0.1:3600/");
        assert!(matches!(
            DaprConfig::from_lookup("s", env(&[(ENV_HTTP_PORT, "x")])),
            Err(ConfigError::Port { .. })
        ));
    }

    #[test]
    fn urls_name_host_port_and_store() {
        let c = DaprConfig::from_url_with("dapr://localhost:3501/statestore", env(&[])).unwrap();
        assert_eq!(c.endpoint().as_str(), "http://localhost:3501/");
        assert_eq!(c.store(), "statestore");
        let c = DaprConfig::from_url_with("dapr://sidecar/redis-store/", env(&[])).unwrap();
        assert_eq!(c.endpoint().as_str(), "http://sidecar:3500/");
        assert_eq!(c.store(), "redis-store");
        let c = DaprConfig::from_url_with("dapr:///kv", env(&[(ENV_HTTP_PORT, "3999")])).unwrap();
        assert_eq!(c.endpoint().as_str(), "http://127.0.0.1:3999/");
        for bad in [
            "redis://x/y",
            "dapr://host:1",
            "dapr://host:1/",
            "dapr://u:p@host:1/s",
            "dapr://host:1/s?x=1",
            "dapr://host:1/a/b",
        ] {
            assert!(DaprConfig::from_url_with(bad, env(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let c = DaprConfig::from_url_with(
            "dapr://localhost:3500/statestore",
            env(&[(ENV_API_TOKEN, "s3cret-token")]),
        )
        .unwrap();
        assert_eq!(c.api_token().unwrap().expose(), "s3cret-token");
        let shown = format!("{c:?} {:?}", c.api_token());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
