//! Configuration: table, region, endpoint, credentials and retry/timeout settings, from a
//! builder or a `dynamodb://<table>?region=..&endpoint=..` URL.
//!
//! Credentials come from the standard AWS chain (environment, profile files, web
//! identity / IRSA, ECS and EC2 instance metadata) unless given explicitly, which is
//! meant for tests against emulators. They never appear in `Debug` output or logs.

use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

use crate::error::DynamoError;

/// The URL scheme of a DynamoDB store.
pub const URL_SCHEME: &str = "dynamodb";

/// Explicit credentials (for emulators and tests). `Debug` shows neither key.
#[derive(Clone)]
pub struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl StaticCredentials {
    /// Credentials from an access key pair.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// Adds a session token (temporary credentials).
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    fn to_sdk(&self) -> Credentials {
        Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            None,
            "heartbeat-static",
        )
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticCredentials(<redacted>)")
    }
}

/// How to reach the heartbeat table.
///
/// ```
/// use heartbeat_dynamodb::DynamoConfig;
///
/// let config = DynamoConfig::new("heartbeat")?
///     .region("eu-west-1")
///     .endpoint("http://127.0.0.1:8000");
/// assert_eq!(config, DynamoConfig::from_url("dynamodb://heartbeat?region=eu-west-1&endpoint=http://127.0.0.1:8000")?);
/// # Ok::<(), heartbeat_dynamodb::DynamoError>(())
/// ```
#[derive(Clone)]
pub struct DynamoConfig {
    table: String,
    region: Option<String>,
    endpoint: Option<String>,
    profile: Option<String>,
    credentials: Option<StaticCredentials>,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    connect_timeout: Duration,
    attempt_timeout: Duration,
}

impl PartialEq for DynamoConfig {
    /// Equal when everything but the credentials is equal (credentials are not compared,
    /// so that comparing configurations cannot leak them through timing or messages).
    fn eq(&self, other: &Self) -> bool {
        self.table == other.table
            && self.region == other.region
            && self.endpoint == other.endpoint
            && self.profile == other.profile
            && self.credentials.is_some() == other.credentials.is_some()
            && self.max_attempts == other.max_attempts
            && self.initial_backoff == other.initial_backoff
            && self.max_backoff == other.max_backoff
            && self.connect_timeout == other.connect_timeout
            && self.attempt_timeout == other.attempt_timeout
    }
}

impl fmt::Debug for DynamoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoConfig")
            .field("table", &self.table)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("profile", &self.profile)
            .field(
                "credentials",
                &if self.credentials.is_some() {
                    "static (redacted)"
                } else {
                    "default chain"
                },
            )
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

impl DynamoConfig {
    /// Default number of attempts per request (the SDK's standard retry mode: throttling,
    /// 5xx and connection errors are retried with exponential backoff and jitter).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
    /// Default first retry backoff.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(50);
    /// Default longest retry backoff.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(1);
    /// Default TCP/TLS connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    /// Default timeout of one attempt of a request.
    pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A configuration for `table`, with region and credentials from the AWS chain.
    pub fn new(table: impl Into<String>) -> Result<Self, DynamoError> {
        let table = table.into();
        validate_table(&table)?;
        Ok(Self {
            table,
            region: None,
            endpoint: None,
            profile: None,
            credentials: None,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: Self::DEFAULT_ATTEMPT_TIMEOUT,
        })
    }

    /// Parses `dynamodb://<table>?region=<region>&endpoint=<url>&profile=<name>&max_attempts=<n>`.
    /// Every parameter is optional; values may be percent-encoded. Credentials in the URL
    /// are refused: they come from the AWS chain.
    pub fn from_url(url: &str) -> Result<Self, DynamoError> {
        let invalid = |reason: &str| DynamoError::InvalidUrl {
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix(URL_SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| invalid("the URL must start with dynamodb://"))?;
        if rest.contains('#') {
            return Err(invalid("a fragment (#...) is not allowed"));
        }
        let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
        if table.contains('@') {
            return Err(invalid(
                "credentials in the URL are not accepted; they come from the AWS credential chain \
                 (environment, profile, web identity, instance metadata)",
            ));
        }
        let table = table.strip_suffix('/').unwrap_or(table);
        if table.is_empty() {
            return Err(invalid("the table name is missing"));
        }
        if table.contains('/') {
            return Err(invalid(
                "the table name is the whole authority; nothing may follow it but ?parameters",
            ));
        }
        let table = percent_decode(table).map_err(|e| invalid(&e))?;
        let mut config = Self::new(table)?;
        let mut seen = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if seen.contains(&name) {
                return Err(invalid(&format!("parameter {name:?} is given twice")));
            }
            seen.push(name.clone());
            if value.is_empty() {
                return Err(invalid(&format!("parameter {name:?} has no value")));
            }
            let value = value.into_owned();
            config = match name.as_ref() {
                "region" => config.region(value),
                "endpoint" | "endpoint_url" => {
                    validate_endpoint(&value)?;
                    config.endpoint(value)
                }
                "profile" => config.profile(value),
                "max_attempts" => {
                    let n = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| invalid("max_attempts must be a whole number >= 1"))?;
                    config.max_attempts(n)
                }
                other => {
                    return Err(invalid(&format!(
                        "unknown parameter {other:?} (known: region, endpoint, profile, max_attempts)"
                    )));
                }
            };
        }
        Ok(config)
    }

    /// The AWS region (otherwise from `AWS_REGION`, the profile or instance metadata).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An endpoint override, e.g. `http://127.0.0.1:8000` for DynamoDB Local or moto.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The AWS profile to read from the shared config files.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Explicit credentials instead of the AWS chain (for emulators and tests).
    pub fn credentials(mut self, credentials: StaticCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Attempts per request, including the first (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Backoff between retries: the first one, and the longest.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Timeout of connecting to DynamoDB.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of one attempt of a request (retries get their own).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The configured region, if any.
    pub fn region_name(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The endpoint override, if any.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The attempt timeout.
    pub fn attempt_timeout_value(&self) -> Duration {
        self.attempt_timeout
    }

    /// Builds an SDK client: region, endpoint and credentials from this configuration or
    /// the AWS chain; retries in the SDK's standard mode with this configuration's
    /// attempts and backoff. Fails when no region can be found.
    pub async fn load_client(&self) -> Result<Client, DynamoError> {
        let retry = RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = &self.credentials {
            loader = loader.credentials_provider(credentials.to_sdk());
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(DynamoError::NoRegion {
                table: self.table.clone(),
            });
        }
        Ok(Client::new(&sdk))
    }

    /// Region and endpoint, for messages.
    pub(crate) fn describe_location(&self) -> String {
        describe_location(self.region.as_deref(), self.endpoint.as_deref())
    }
}

pub(crate) fn describe_location(region: Option<&str>, endpoint: Option<&str>) -> String {
    let region = region.unwrap_or("region from the AWS chain");
    match endpoint {
        Some(e) => format!("region {region}, endpoint {e}"),
        None => format!("region {region}"),
    }
}

/// Checks a DynamoDB table name: 3 to 255 characters from `[a-zA-Z0-9_.-]`.
pub fn validate_table(name: &str) -> Result<(), DynamoError> {
    let err = |reason: &str| DynamoError::InvalidTable {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.len() < 3 || name.len() > 255 {
        return Err(err(&format!("it has {} characters", name.chars().count())));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(err(&format!("character {c:?} is not allowed")));
    }
    Ok(())
}

fn validate_endpoint(endpoint: &str) -> Result<(), DynamoError> {
    let invalid = |reason: String| DynamoError::InvalidUrl { reason };
    let parsed = url::Url::parse(endpoint)
        .map_err(|e| invalid(format!("the endpoint is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the endpoint must be http:// or https://, not {}://",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "the endpoint must not carry credentials; they come from the AWS credential chain"
                .to_owned(),
        ));
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "the table name is not valid UTF-8 after percent-decoding".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn url_with_table_only_uses_the_chain() {
        let c = DynamoConfig::from_url("dynamodb://heartbeat").unwrap();
        assert_eq!(c.table(), "heartbeat");
        assert_eq!(c.region_name(), None);
        assert_eq!(c.endpoint_url(), None);
        assert_eq!(c, DynamoConfig::new("heartbeat").unwrap());
    }

    #[test]
    fn url_parameters_are_read() {
        let c = DynamoConfig::from_url(
            "dynamodb://My_Table.v2-prod/?region=eu-central-1&endpoint=http%3A%2F%2F127.0.0.1%3A4566&profile=ops&max_attempts=7",
        )
        .unwrap();
        assert_eq!(c.table(), "My_Table.v2-prod");
        assert_eq!(c.region_name(), Some("eu-central-1"));
        assert_eq!(c.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!(c.profile.as_deref(), Some("ops"));
        assert_eq!(c.max_attempts, 7);
        // Unencoded endpoints work too.
        let raw =
            DynamoConfig::from_url("dynamodb://tbl?endpoint=https://dynamodb.local:8000/").unwrap();
        assert_eq!(raw.endpoint_url(), Some("https://dynamodb.local:8000/"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("redis://x", "must start with dynamodb://"),
            ("dynamodb://", "table name is missing"),
            ("dynamodb://?region=x", "table name is missing"),
            ("dynamodb://ab", "it has 2 characters"),
            ("dynamodb://a%20b", "character ' ' is not allowed"),
            ("dynamodb://tbl/extra", "nothing may follow"),
            ("dynamodb://tbl?colour=red", "unknown parameter \"colour\""),
            ("dynamodb://tbl?region=a&region=b", "given twice"),
            ("dynamodb://tbl?region=", "has no value"),
            (
                "dynamodb://tbl?endpoint=localhost:8000",
                "endpoint must be http",
            ),
            ("dynamodb://tbl?endpoint=not%20a%20url", "not a URL"),
            ("dynamodb://tbl?max_attempts=0", "max_attempts"),
            ("dynamodb://tbl#x", "fragment"),
        ];
        for (url, expected) in cases {
            let err = DynamoConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn credentials_in_urls_are_refused_without_echoing_them() {
        for url in [
            "dynamodb://AKIAEXAMPLE:s3cr3t@table",
            "dynamodb://tbl?endpoint=http://AKIAEXAMPLE:s3cr3t@localhost:8000",
        ] {
            let err = DynamoConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains("credential"), "{err}");
            assert!(
                !err.contains("s3cr3t") && !err.contains("AKIAEXAMPLE"),
                "{err}"
            );
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let c = DynamoConfig::new("heartbeat")
            .unwrap()
            .credentials(StaticCredentials::new("AKIAEXAMPLE", "s3cr3t").session_token("tok3n"));
        let shown = format!("{c:?}");
        for secret in ["AKIAEXAMPLE", "s3cr3t", "tok3n"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn table_names_are_validated() {
        assert!(validate_table("abc").is_ok());
        assert!(validate_table(&"a".repeat(255)).is_ok());
        assert!(validate_table(&"a".repeat(256)).is_err());
        assert!(validate_table("with/slash").is_err());
        assert!(validate_table("ümlaut").is_err());
    }
}
