//! Store URLs: which backend to use and where it is, in one string.
//!
//! | URL | backend (cargo feature) |
//! |---|---|
//! | `memory://` | the in-process store (`memory`); empty at every start, shared only inside one process |
//! | `redis://[user:password@]host[:port][/db]` | Redis (`redis`) |
//! | `rediss://...` | Redis over TLS (`redis`) |
//! | `redis+cluster://host1:port1,host2:port2,...` (and `rediss+cluster://`) | Redis Cluster, seed nodes (`redis`) |
//! | `dapr://host:port/<store>` | the Dapr state API of a sidecar (`dapr`) |
//! | `dapr:///<store>` | the same, sidecar from `DAPR_HTTP_ENDPOINT` or `DAPR_HTTP_PORT` (default `http://127.0.0.1:3500`) |
//! | `dynamodb://<table>?region=<region>&endpoint=<url>` | Amazon DynamoDB (`dynamodb`); credentials from the usual AWS variables |
//!
//! Parsing needs no backend: a URL for a backend that this build does not include is
//! still recognised, so the error can name the feature to enable. Secrets (passwords in
//! the URL, `DAPR_API_TOKEN`) are kept in [`Secret`], which never prints its value: the
//! [`Display`](std::fmt::Display) and [`Debug`] forms of a parsed URL are safe to log.
//!
//! ```
//! use heartbeat::store_url::StoreUrl;
//! let url: StoreUrl = "redis://app:s3cret@10.0.0.5:6380/2".parse()?;
//! assert_eq!(url.to_string(), "redis://app:***@10.0.0.5:6380/2");
//! assert_eq!(url.backend().feature(), "redis");
//! # Ok::<(), heartbeat::store_url::StoreUrlError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

/// Environment variable: the Dapr sidecar's HTTP endpoint (`http://host:port`).
pub const ENV_DAPR_HTTP_ENDPOINT: &str = "DAPR_HTTP_ENDPOINT";
/// Environment variable: the Dapr sidecar's HTTP port on localhost.
pub const ENV_DAPR_HTTP_PORT: &str = "DAPR_HTTP_PORT";
/// Environment variable: the Dapr API token sent with every request.
pub const ENV_DAPR_API_TOKEN: &str = "DAPR_API_TOKEN";
/// The Dapr sidecar's default HTTP port.
pub const DEFAULT_DAPR_HTTP_PORT: u16 = 3500;
/// Redis's default port.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

const EXAMPLES: &str = "memory://, redis://localhost:6379, rediss://user:password@host:6380/0, \
redis+cluster://host1:7000,host2:7001, dapr://localhost:3500/statestore, dapr:///statestore, \
dynamodb://heartbeats?region=eu-west-1";

/// A value that must never appear in logs or error messages. Its `Debug` and `Display`
/// print `***`; [`Secret::expose`] gives the value to the code that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the code that sends it to the store. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The backends a store URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The in-process store.
    Memory,
    /// Redis, standalone or Cluster.
    Redis,
    /// The Dapr sidecar state API.
    Dapr,
    /// Amazon DynamoDB.
    DynamoDb,
}

impl Backend {
    /// The cargo feature of the `heartbeat` crate that includes this backend.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Dapr => "dapr",
            Self::DynamoDb => "dynamodb",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            Self::Redis => "Redis",
            Self::Dapr => "Dapr",
            Self::DynamoDb => "DynamoDB",
        })
    }
}

/// Why a string is not a store URL. Messages never contain the secrets of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    /// Nothing was given.
    #[error("the store URL is empty; give one such as {EXAMPLES}")]
    Empty,
    /// No `scheme://`.
    #[error("the store URL has no scheme (like redis://); give one such as {EXAMPLES}")]
    NoScheme,
    /// A scheme no backend uses.
    #[error(
        "unknown store URL scheme {scheme:?}; use memory, redis, rediss, redis+cluster, rediss+cluster, dapr or dynamodb (for example {EXAMPLES})"
    )]
    UnknownScheme {
        /// The scheme given.
        scheme: String,
    },
    /// The scheme is known but the rest is not valid for it.
    #[error("invalid {backend} store URL: {reason}; for example {example}")]
    Invalid {
        /// The backend the scheme names.
        backend: Backend,
        /// What is wrong.
        reason: String,
        /// A valid URL for that backend.
        example: &'static str,
    },
}

fn invalid(backend: Backend, reason: impl Into<String>) -> StoreUrlError {
    let example = match backend {
        Backend::Memory => "memory://",
        Backend::Redis => "redis://localhost:6379/0 or redis+cluster://host1:7000,host2:7001",
        Backend::Dapr => "dapr://localhost:3500/statestore or dapr:///statestore",
        Backend::DynamoDb => {
            "dynamodb://heartbeats?region=eu-west-1 or dynamodb://heartbeats?region=us-east-1&endpoint=http://localhost:5000"
        }
    };
    StoreUrlError::Invalid {
        backend,
        reason: reason.into(),
        example,
    }
}

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory://`: a fresh, empty in-process store.
    Memory,
    /// `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`.
    Redis(RedisUrl),
    /// `dapr://host:port/<store>` or `dapr:///<store>`.
    Dapr(DaprUrl),
    /// `dynamodb://<table>?region=..&endpoint=..`.
    DynamoDb(DynamoDbUrl),
}

impl StoreUrl {
    /// Parses `s`, reading the Dapr variables from the process environment.
    pub fn parse(s: &str) -> Result<Self, StoreUrlError> {
        Self::parse_with_env(s, &|name| std::env::var(name).ok())
    }

    /// Parses `s`, reading environment variables through `env` (for tests).
    pub fn parse_with_env(
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, StoreUrlError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(StoreUrlError::Empty);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(StoreUrlError::NoScheme);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" | "mem" => parse_memory(rest),
            "redis" => RedisUrl::parse(rest, false, false).map(Self::Redis),
            "rediss" => RedisUrl::parse(rest, true, false).map(Self::Redis),
            "redis+cluster" | "redis-cluster" => {
                RedisUrl::parse(rest, false, true).map(Self::Redis)
            }
            "rediss+cluster" | "rediss-cluster" => {
                RedisUrl::parse(rest, true, true).map(Self::Redis)
            }
            "dapr" => DaprUrl::parse(rest, env).map(Self::Dapr),
            "dynamodb" | "ddb" => DynamoDbUrl::parse(rest).map(Self::DynamoDb),
            other => Err(StoreUrlError::UnknownScheme {
                // Schemes hold no secrets, but keep the message short.
                scheme: other.chars().take(40).collect(),
            }),
        }
    }

    /// The backend this URL names.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Memory => Backend::Memory,
            Self::Redis(_) => Backend::Redis,
            Self::Dapr(_) => Backend::Dapr,
            Self::DynamoDb(_) => Backend::DynamoDb,
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory://"),
            Self::Redis(r) => r.fmt(f),
            Self::Dapr(d) => d.fmt(f),
            Self::DynamoDb(d) => d.fmt(f),
        }
    }
}

fn parse_memory(rest: &str) -> Result<StoreUrl, StoreUrlError> {
    if rest.is_empty() || rest == "/" {
        Ok(StoreUrl::Memory)
    } else {
        Err(invalid(
            Backend::Memory,
            "memory:// takes no host, path or options",
        ))
    }
}

/// A Redis URL: one server, or the seed nodes of a Cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    tls: bool,
    cluster: bool,
    /// Percent-encoded, as given.
    username: Option<String>,
    /// Percent-encoded, as given.
    password: Option<Secret>,
    nodes: Vec<(String, u16)>,
    db: Option<u32>,
    /// Raw query string, passed through to the client.
    query: Option<String>,
}

impl RedisUrl {
    fn parse(rest: &str, tls: bool, cluster: bool) -> Result<Self, StoreUrlError> {
        // Credentials first, up to the last '@': a password with an unencoded '/', '?'
        // or ':' must never end up in a host, port or path that an error message shows.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_owned()).filter(|q| !q.is_empty())),
            None => (rest, None),
        };
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (
                    Some(u.to_owned()).filter(|u| !u.is_empty()),
                    Some(Secret::new(p)),
                ),
                None => (Some(info.to_owned()).filter(|u| !u.is_empty()), None),
            },
        };
        let mut nodes = Vec::new();
        for node in hosts.split(',') {
            nodes.push(parse_host_port(node, DEFAULT_REDIS_PORT, Backend::Redis)?);
        }
        if !cluster && nodes.len() > 1 {
            return Err(invalid(
                Backend::Redis,
                "several hosts are only allowed for a Cluster; use redis+cluster://",
            ));
        }
        let db = match path.trim_end_matches('/') {
            "" => None,
            p => Some(p.parse::<u32>().map_err(|_| {
                invalid(
                    Backend::Redis,
                    "the path must be a database number (0-15 on a default server)",
                )
            })?),
        };
        if cluster && db.is_some_and(|d| d != 0) {
            return Err(invalid(
                Backend::Redis,
                "a Redis Cluster has only database 0; remove the path",
            ));
        }
        Ok(Self {
            tls,
            cluster,
            username,
            password,
            nodes,
            db,
            query,
        })
    }

    /// Whether the connection uses TLS (`rediss`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether this names a Redis Cluster.
    pub fn cluster(&self) -> bool {
        self.cluster
    }

    /// The server, or the Cluster's seed nodes, as `(host, port)`.
    pub fn nodes(&self) -> &[(String, u16)] {
        &self.nodes
    }

    /// The database number, if given.
    pub fn db(&self) -> Option<u32> {
        self.db
    }

    /// The user name (decoded), if given.
    pub fn username(&self) -> Option<String> {
        self.username.as_deref().map(decode)
    }

    /// The password (decoded), if given.
    pub fn password(&self) -> Option<Secret> {
        self.password
            .as_ref()
            .map(|p| Secret::new(decode(p.expose())))
    }

    /// One `redis://` or `rediss://` URL per node, with credentials, database and
    /// options, as the Redis client expects them. They contain the password: never log
    /// them (log this value's `Display` instead).
    pub fn connection_urls(&self) -> Vec<Secret> {
        self.nodes
            .iter()
            .map(|node| Secret::new(self.node_url(node, true)))
            .collect()
    }

    fn node_url(&self, (host, port): &(String, u16), reveal: bool) -> String {
        let mut s = String::from(if self.tls { "rediss://" } else { "redis://" });
        self.push_userinfo(&mut s, reveal);
        push_host(&mut s, host, *port);
        if let Some(db) = self.db {
            s.push_str(&format!("/{db}"));
        }
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(&if reveal { q.clone() } else { redact_query(q) });
        }
        s
    }

    fn push_userinfo(&self, s: &mut String, reveal: bool) {
        if self.username.is_none() && self.password.is_none() {
            return;
        }
        if let Some(u) = &self.username {
            s.push_str(u);
        }
        if let Some(p) = &self.password {
            s.push(':');
            s.push_str(if reveal { p.expose() } else { "***" });
        }
        s.push('@');
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::from(match (self.tls, self.cluster) {
            (false, false) => "redis://",
            (true, false) => "rediss://",
            (false, true) => "redis+cluster://",
            (true, true) => "rediss+cluster://",
        });
        self.push_userinfo(&mut s, false);
        for (i, (host, port)) in self.nodes.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_host(&mut s, host, *port);
        }
        if let Some(db) = self.db {
            s.push_str(&format!("/{db}"));
        }
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(&redact_query(q));
        }
        f.write_str(&s)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// The Dapr sidecar and the state store component to use.
#[derive(Clone, PartialEq, Eq)]
pub struct DaprUrl {
    endpoint: String,
    store: String,
    token: Option<Secret>,
}

impl DaprUrl {
    fn parse(rest: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, StoreUrlError> {
        if rest.contains('@') {
            return Err(invalid(
                Backend::Dapr,
                "credentials do not go in the URL; set DAPR_API_TOKEN",
            ));
        }
        if rest.contains('?') {
            return Err(invalid(
                Backend::Dapr,
                "options are not supported; the API token comes from DAPR_API_TOKEN",
            ));
        }
        let Some((authority, store)) = rest.split_once('/') else {
            return Err(invalid(
                Backend::Dapr,
                "the state store name is missing (the path after the host)",
            ));
        };
        let store = store.trim_end_matches('/');
        if store.is_empty() {
            return Err(invalid(Backend::Dapr, "the state store name is empty"));
        }
        if !store
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                Backend::Dapr,
                format!(
                    "the state store name {store:?} may contain only letters, digits, '-', '_' and '.'"
                ),
            ));
        }
        let endpoint = if authority.is_empty() {
            let from_env = env(ENV_DAPR_HTTP_ENDPOINT).filter(|e| !e.trim().is_empty());
            match from_env {
                Some(e) => {
                    let e = e.trim().trim_end_matches('/').to_owned();
                    let parsed = url::Url::parse(&e).map_err(|err| {
                        invalid(
                            Backend::Dapr,
                            format!("{ENV_DAPR_HTTP_ENDPOINT} is not a URL ({err})"),
                        )
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(invalid(
                            Backend::Dapr,
                            format!("{ENV_DAPR_HTTP_ENDPOINT} must be an http:// or https:// URL"),
                        ));
                    }
                    e
                }
                None => {
                    let port = match env(ENV_DAPR_HTTP_PORT).filter(|p| !p.trim().is_empty()) {
                        Some(p) => p
                            .trim()
                            .parse::<u16>()
                            .ok()
                            .filter(|p| *p != 0)
                            .ok_or_else(|| {
                                invalid(
                                    Backend::Dapr,
                                    format!("{ENV_DAPR_HTTP_PORT}={p:?} is not a TCP port"),
                                )
                            })?,
                        None => DEFAULT_DAPR_HTTP_PORT,
                    };
                    format!("http://127.0.0.1:{port}")
                }
            }
        } else {
            let (host, port) = parse_host_port(authority, DEFAULT_DAPR_HTTP_PORT, Backend::Dapr)?;
            let mut e = String::from("http://");
            push_host(&mut e, &host, port);
            e
        };
        Ok(Self {
            endpoint,
            store: store.to_owned(),
            token: env(ENV_DAPR_API_TOKEN)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        })
    }

    /// The sidecar's HTTP endpoint (`http://host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The name of the state store component.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The API token (from `DAPR_API_TOKEN`), if set.
    pub fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }
}

impl fmt::Display for DaprUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, h)| h);
        write!(f, "dapr://{host}/{}", self.store)
    }
}

impl fmt::Debug for DaprUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaprUrl")
            .field("endpoint", &self.endpoint)
            .field("store", &self.store)
            .field("token", &self.token)
            .finish()
    }
}

/// A DynamoDB table, with an optional region, endpoint (for local emulators), AWS
/// profile and retry budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoDbUrl {
    table: String,
    region: Option<String>,
    endpoint: Option<String>,
    profile: Option<String>,
    max_attempts: Option<u32>,
}

impl DynamoDbUrl {
    fn parse(rest: &str) -> Result<Self, StoreUrlError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.contains('@') {
            return Err(invalid(
                Backend::DynamoDb,
                "credentials do not go in the URL; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role",
            ));
        }
        let table = path.trim_matches('/');
        if table.is_empty() {
            return Err(invalid(Backend::DynamoDb, "the table name is missing"));
        }
        if !(3..=255).contains(&table.len())
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                Backend::DynamoDb,
                format!(
                    "the table name {:?} must be 3-255 letters, digits, '-', '_' or '.'",
                    table.chars().take(60).collect::<String>()
                ),
            ));
        }
        let mut region = None;
        let mut endpoint = None;
        let mut profile = None;
        let mut max_attempts = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "region" => {
                    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        return Err(invalid(
                            Backend::DynamoDb,
                            format!("region {v:?} is not an AWS region name"),
                        ));
                    }
                    region = Some(v.into_owned());
                }
                "profile" => {
                    if v.is_empty() {
                        return Err(invalid(Backend::DynamoDb, "profile is empty"));
                    }
                    profile = Some(v.into_owned());
                }
                "max_attempts" => {
                    max_attempts =
                        Some(v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                            invalid(
                                Backend::DynamoDb,
                                "max_attempts must be a whole number >= 1",
                            )
                        })?);
                }
                "endpoint" | "endpoint_url" => {
                    let parsed = url::Url::parse(&v).map_err(|e| {
                        invalid(Backend::DynamoDb, format!("endpoint is not a URL ({e})"))
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(invalid(
                            Backend::DynamoDb,
                            "endpoint must be an http:// or https:// URL",
                        ));
                    }
                    if !parsed.username().is_empty() || parsed.password().is_some() {
                        return Err(invalid(
                            Backend::DynamoDb,
                            "credentials do not go in the endpoint; use the AWS variables",
                        ));
                    }
                    endpoint = Some(v.trim_end_matches('/').to_owned());
                }
                other => {
                    return Err(invalid(
                        Backend::DynamoDb,
                        format!(
                            "unknown option {other:?}; the options are region, endpoint, profile and max_attempts"
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            table: table.to_owned(),
            region,
            endpoint,
            profile,
            max_attempts,
        })
    }

    /// The AWS profile, if given (otherwise the AWS configuration's).
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// The most attempts per request (retries included), if given.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The region, if given (otherwise the AWS configuration's).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The endpoint URL, if given (a local emulator).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }
}

impl fmt::Display for DynamoDbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dynamodb://{}", self.table)?;
        let mut sep = '?';
        if let Some(r) = &self.region {
            write!(f, "{sep}region={r}")?;
            sep = '&';
        }
        if let Some(e) = &self.endpoint {
            write!(f, "{sep}endpoint={e}")?;
            sep = '&';
        }
        if let Some(p) = &self.profile {
            write!(f, "{sep}profile={p}")?;
            sep = '&';
        }
        if let Some(n) = self.max_attempts {
            write!(f, "{sep}max_attempts={n}")?;
        }
        Ok(())
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn push_host(s: &mut String, host: &str, port: u16) {
    if host.contains(':') {
        s.push_str(&format!("[{host}]:{port}"));
    } else {
        s.push_str(&format!("{host}:{port}"));
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host_port(
    s: &str,
    default_port: u16,
    backend: Backend,
) -> Result<(String, u16), StoreUrlError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(invalid(backend, "an IPv6 address lacks its closing ']'"));
        };
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid(backend, "expected ':port' after an IPv6 address"))?,
            ),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(backend, "the host is missing"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(invalid(
            backend,
            format!(
                "the host {:?} contains characters a host name cannot have",
                host.chars().take(60).collect::<String>()
            ),
        ));
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            invalid(
                backend,
                format!(
                    "the port {:?} of host {host} is not a TCP port (1-65535)",
                    p.chars().take(20).collect::<String>()
                ),
            )
        })?,
    };
    Ok((host.to_owned(), port))
}

/// Replaces the values of options that look secret.
fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_name(k) => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "secret", "token", "auth", "key"]
        .iter()
        .any(|s| k.contains(s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(s: &str) -> Result<StoreUrl, StoreUrlError> {
        StoreUrl::parse_with_env(s, &no_env)
    }

    #[test]
    fn memory_urls() {
        assert_eq!(parse("memory://").unwrap(), StoreUrl::Memory);
        assert_eq!(parse("memory:///").unwrap(), StoreUrl::Memory);
        assert_eq!(parse("MEMORY://").unwrap().to_string(), "memory://");
        assert!(matches!(
            parse("memory://somewhere"),
            Err(StoreUrlError::Invalid {
                backend: Backend::Memory,
                ..
            })
        ));
    }

    #[test]
    fn redis_standalone_with_defaults() {
        let StoreUrl::Redis(r) = parse("redis://localhost").unwrap() else {
            panic!("not redis")
        };
        assert!(!r.tls() && !r.cluster());
        assert_eq!(r.nodes(), &[("localhost".to_owned(), 6379)]);
        assert_eq!(r.db(), None);
        assert_eq!(r.connection_urls()[0].expose(), "redis://localhost:6379");
    }

    #[test]
    fn redis_with_credentials_db_and_tls() {
        let url = parse("rediss://app:p%40ss@cache.example:6380/3?protocol=resp3").unwrap();
        let StoreUrl::Redis(r) = &url else {
            panic!("not redis")
        };
        assert!(r.tls());
        assert_eq!(r.db(), Some(3));
        assert_eq!(r.username().as_deref(), Some("app"));
        assert_eq!(r.password().unwrap().expose(), "p@ss");
        assert_eq!(
            r.connection_urls()[0].expose(),
            "rediss://app:p%40ss@cache.example:6380/3?protocol=resp3"
        );
        assert_eq!(url.backend(), Backend::Redis);
    }

    #[test]
    fn passwords_are_never_printed() {
        let secret = "hunter2-very-secret";
        for raw in [
            format!("redis://:{secret}@localhost:6379"),
            format!("redis://default:{secret}@localhost/0"),
            format!("rediss+cluster://u:{secret}@a:7000,b:7001"),
            format!("redis://localhost?password={secret}"),
        ] {
            let url = parse(&raw).unwrap();
            let shown = format!("{url} {url:?}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        let StoreUrl::Redis(r) = parse(&format!("redis://:{secret}@h")).unwrap() else {
            panic!("not redis")
        };
        let urls = r.connection_urls();
        assert!(!format!("{urls:?}").contains(secret));
        assert!(urls[0].expose().contains(secret));
    }

    #[test]
    fn errors_do_not_echo_passwords() {
        let secret = "hunter2-very-secret";
        for raw in [
            format!("redis://:{secret}@localhost:notaport"),
            format!("redis://:{secret}@a:1,b:2"),
            format!("redis://:{secret}@localhost/db"),
            format!("redis://u:{secret}/x?y:z@localhost:bad"),
            format!("redis://u:a?{secret}@localhost:bad"),
            format!("dapr://u:{secret}@localhost:3500/state"),
            format!("dynamodb://u:{secret}@table"),
        ] {
            let err = parse(&raw).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
        }
    }

    #[test]
    fn redis_cluster_seed_nodes() {
        let url = parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002").unwrap();
        let StoreUrl::Redis(r) = &url else {
            panic!("not redis")
        };
        assert!(r.cluster());
        assert_eq!(r.nodes().len(), 3);
        assert_eq!(r.nodes()[2], ("::1".to_owned(), 7002));
        assert_eq!(
            url.to_string(),
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"
        );
        let urls: Vec<String> = r
            .connection_urls()
            .iter()
            .map(|u| u.expose().to_owned())
            .collect();
        assert_eq!(
            urls,
            [
                "redis://10.0.0.1:7000",
                "redis://10.0.0.2:7001",
                "redis://[::1]:7002"
            ]
        );
    }

    #[test]
    fn redis_mistakes_are_explained() {
        for (raw, needle) in [
            ("redis://", "host is missing"),
            ("redis://localhost:0", "not a TCP port"),
            ("redis://localhost:99999", "not a TCP port"),
            ("redis://a:1,b:2", "redis+cluster"),
            ("redis://localhost/zero", "database number"),
            ("redis+cluster://a:1,b:2/3", "database 0"),
            ("redis://[::1", "closing"),
        ] {
            let err = parse(raw).unwrap_err().to_string();
            assert!(err.contains(needle), "{raw}: {err}");
            assert!(err.contains("for example"), "{raw}: {err}");
        }
    }

    #[test]
    fn dapr_with_host_and_store() {
        let url = parse("dapr://localhost:3501/statestore").unwrap();
        let StoreUrl::Dapr(d) = &url else {
            panic!("not dapr")
        };
        assert_eq!(d.endpoint(), "http://localhost:3501");
        assert_eq!(d.store(), "statestore");
        assert_eq!(d.token(), None);
        assert_eq!(url.to_string(), "dapr://localhost:3501/statestore");
        let StoreUrl::Dapr(d) = parse("dapr://sidecar/state").unwrap() else {
            panic!("not dapr")
        };
        assert_eq!(d.endpoint(), "http://sidecar:3500");
    }

    #[test]
    fn dapr_reads_the_sidecar_variables() {
        let env = |name: &str| match name {
            ENV_DAPR_HTTP_PORT => Some("3600".to_owned()),
            ENV_DAPR_API_TOKEN => Some("tok-123-secret".to_owned()),
            _ => None,
        };
        let url = StoreUrl::parse_with_env("dapr:///statestore", &env).unwrap();
        let StoreUrl::Dapr(d) = &url else {
            panic!("not dapr")
        };
        assert_eq!(d.endpoint(), "http://127.0.0.1:3600");
        assert_eq!(d.token().unwrap().expose(), "tok-123-secret");
        assert!(!format!("{url} {url:?}").contains("tok-123-secret"));

        let env = |name: &str| {
            (name == ENV_DAPR_HTTP_ENDPOINT).then(|| "https://dapr.internal:443/".to_owned())
        };
        let StoreUrl::Dapr(d) = StoreUrl::parse_with_env("dapr:///s", &env).unwrap() else {
            panic!("not dapr")
        };
        assert_eq!(d.endpoint(), "https://dapr.internal:443");

        let StoreUrl::Dapr(d) = parse("dapr:///s").unwrap() else {
            panic!("not dapr")
        };
        assert_eq!(d.endpoint(), "http://127.0.0.1:3500");
    }

    #[test]
    fn dapr_mistakes_are_explained() {
        for (raw, needle) in [
            ("dapr://localhost:3500", "store name is missing"),
            ("dapr://localhost:3500/", "store name is empty"),
            ("dapr://localhost:3500/a/b", "may contain only"),
            ("dapr://localhost:3500/s?token=x", "DAPR_API_TOKEN"),
        ] {
            let err = parse(raw).unwrap_err().to_string();
            assert!(err.contains(needle), "{raw}: {err}");
        }
        let env = |name: &str| (name == ENV_DAPR_HTTP_PORT).then(|| "http".to_owned());
        let err = StoreUrl::parse_with_env("dapr:///s", &env).unwrap_err();
        assert!(err.to_string().contains(ENV_DAPR_HTTP_PORT), "{err}");
    }

    #[test]
    fn dynamodb_table_region_endpoint() {
        let url =
            parse("dynamodb://heartbeats?region=eu-west-1&endpoint=http://127.0.0.1:5000").unwrap();
        let StoreUrl::DynamoDb(d) = &url else {
            panic!("not dynamodb")
        };
        assert_eq!(d.table(), "heartbeats");
        assert_eq!(d.region(), Some("eu-west-1"));
        assert_eq!(d.endpoint(), Some("http://127.0.0.1:5000"));
        assert_eq!(
            url.to_string(),
            "dynamodb://heartbeats?region=eu-west-1&endpoint=http://127.0.0.1:5000"
        );
        let StoreUrl::DynamoDb(d) = parse("dynamodb://My_Table.v2").unwrap() else {
            panic!("not dynamodb")
        };
        assert_eq!(
            (d.table(), d.region(), d.endpoint()),
            ("My_Table.v2", None, None)
        );
        let url = parse("dynamodb://t12?profile=ops&max_attempts=2").unwrap();
        let StoreUrl::DynamoDb(d) = &url else {
            panic!("not dynamodb")
        };
        assert_eq!((d.profile(), d.max_attempts()), (Some("ops"), Some(2)));
        assert_eq!(url.to_string(), "dynamodb://t12?profile=ops&max_attempts=2");
    }

    #[test]
    fn dynamodb_mistakes_are_explained() {
        for (raw, needle) in [
            ("dynamodb://", "table name is missing"),
            ("dynamodb://ab", "3-255"),
            ("dynamodb://a*b", "3-255"),
            ("dynamodb://tbl?regoin=x", "unknown option \"regoin\""),
            ("dynamodb://tbl?endpoint=localhost:5000", "http://"),
            ("dynamodb://tbl?endpoint=nota url", "not a URL"),
            ("dynamodb://tbl?region=", "region"),
            ("dynamodb://tbl?max_attempts=0", "max_attempts"),
        ] {
            let err = parse(raw).unwrap_err().to_string();
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn unknown_and_missing_schemes() {
        assert_eq!(parse(""), Err(StoreUrlError::Empty));
        assert_eq!(parse("localhost:6379"), Err(StoreUrlError::NoScheme));
        let err = parse("postgres://db").unwrap_err();
        assert!(matches!(err, StoreUrlError::UnknownScheme { ref scheme } if scheme == "postgres"));
        assert!(err.to_string().contains("redis"), "{err}");
    }

    #[test]
    fn every_backend_names_its_feature() {
        for (raw, feature) in [
            ("memory://", "memory"),
            ("redis://h", "redis"),
            ("rediss+cluster://h:1", "redis"),
            ("dapr:///s", "dapr"),
            ("dynamodb://tbl", "dynamodb"),
        ] {
            assert_eq!(parse(raw).unwrap().backend().feature(), feature);
        }
    }
}
