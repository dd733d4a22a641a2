//! The wire client: the Dapr state API v1.0 over HTTP, as daprd really answers
//! (measured in `tests/daprd/WIRE.md`).
//!
//! - `GET /v1.0/state/{store}/{key}`: `204` is a missing key; `200` carries the JSON
//!   value and the `Etag` header (unquoted).
//! - `POST /v1.0/state/{store}/bulk`: one item per requested key, matched by key.
//! - `POST /v1.0/state/{store}`: an array of items with `etag`, `options.concurrency`
//!   and `metadata.ttlInSeconds` (a string).
//! - `DELETE /v1.0/state/{store}/{key}` with `If-Match: <etag>` (unquoted).
//! - `POST /v1.0/state/{store}/transaction`.
//!
//! Keys go into the URL percent-encoded like JS `encodeURIComponent` and also `.`
//! (daprd unescapes the key segment exactly once); in JSON bodies they are verbatim.
//!
//! Errors are mapped by [`crate::error`].

use std::time::Duration;

use heartbeat_core::{StoreError, StoreResult};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::DaprConfig;
use crate::error::is_transport_message;
pub use crate::error::{DaprError, classify};

/// The backend name in errors and logs.
pub const BACKEND: &str = "dapr";

/// Bytes of a key kept as they are in the URL path: `encodeURIComponent` minus `.`.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// Keys per bulk request.
const BULK_CHUNK: usize = 500;

/// A value as daprd returned it: the JSON text and its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawState {
    /// The JSON value as daprd wrote it.
    pub json: Vec<u8>,
    /// The ETag.
    pub etag: String,
}

/// One item of a save request.
#[derive(Debug, Clone)]
pub struct SaveItem<'a> {
    /// The key (verbatim).
    pub key: &'a str,
    /// The JSON text to store as `value`.
    pub json: &'a str,
    /// Compare-and-swap on this ETag.
    pub etag: Option<&'a str>,
    /// Send `options.concurrency: first-write`.
    pub first_write: bool,
    /// `metadata.ttlInSeconds` (`-1` removes a TTL).
    pub ttl_seconds: Option<i64>,
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum TxOperation<'a> {
    /// Save an item.
    Upsert(SaveItem<'a>),
    /// Delete a key, optionally only at an ETag.
    Delete {
        /// The key.
        key: &'a str,
        /// The ETag to match.
        etag: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct WireItem<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<WireOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata>,
}

#[derive(Serialize)]
struct WireOptions {
    concurrency: &'static str,
}

#[derive(Serialize)]
struct WireMetadata {
    #[serde(rename = "ttlInSeconds")]
    ttl_in_seconds: String,
}

#[derive(Serialize)]
struct WireTxOp<'a> {
    operation: &'static str,
    request: WireItem<'a>,
}

#[derive(Serialize)]
struct WireTx<'a> {
    operations: Vec<WireTxOp<'a>>,
}

#[derive(Serialize)]
struct BulkRequest<'a> {
    keys: &'a [String],
}

#[derive(Deserialize)]
struct BulkItem {
    key: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A component as `/v1.0/metadata` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Component {
    /// `metadata.name`.
    pub name: String,
    /// The component type (`state.redis`, `state.in-memory`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The component version.
    #[serde(default)]
    pub version: String,
    /// Capabilities (`ETAG`, `TRANSACTIONAL`, `TTL`, ...).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Component {
    /// Whether the component lists `capability`.
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(capability))
    }
}

/// What `/v1.0/metadata` says (the parts we use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    /// The app id.
    #[serde(default)]
    pub id: String,
    /// The runtime version.
    #[serde(default, rename = "runtimeVersion")]
    pub runtime_version: String,
    /// The loaded components.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// A client of one state store component through one sidecar.
#[derive(Debug, Clone)]
pub struct DaprClient {
    http: reqwest::Client,
    config: DaprConfig,
    /// `<endpoint>/v1.0/state/<store>`.
    state_url: String,
    /// `<endpoint>/v1.0`.
    api_url: String,
}

/// Percent-encodes a key for the URL path (see the module docs).
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_SET).to_string()
}

/// Checks a key against what daprd accepts; `Err` is the reason.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("keys must not be empty".to_owned());
    }
    if key.contains("||") {
        return Err("Dapr uses '||' to separate the app id from the key".to_owned());
    }
    if key == "." || key == ".." {
        return Err("'.' and '..' cannot be addressed in a URL path".to_owned());
    }
    Ok(())
}

impl DaprClient {
    /// A client for `config` (no request is made).
    pub fn new(config: DaprConfig) -> StoreResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout().min(Duration::from_secs(2)))
            .build()
            .map_err(|e| StoreError::Backend {
                backend: BACKEND,
                message: "could not build the HTTP client".to_owned(),
                source: Some(Box::new(e)),
            })?;
        let base = config.endpoint().as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            state_url: format!("{base}/v1.0/state/{}", config.store()),
            api_url: format!("{base}/v1.0"),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DaprConfig {
        &self.config
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, url);
        if let Some(token) = self.config.api_token() {
            req = req.header("dapr-api-token", token.expose());
        }
        req
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> StoreResult<reqwest::Response> {
        req.send().await.map_err(|e| self.transport(what, e))
    }

    fn transport(&self, what: &str, e: reqwest::Error) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout {
                key: what.to_owned(),
                after: self.config.request_timeout(),
            }
        } else {
            let message = if e.is_connect() {
                format!(
                    "could not connect to daprd at {} ({what})",
                    self.config.endpoint()
                )
            } else {
                format!("request to daprd failed ({what})")
            };
            StoreError::Unavailable {
                backend: BACKEND,
                message,
                source: Some(Box::new(e)),
            }
        }
    }

    async fn body(&self, what: &str, resp: reqwest::Response) -> StoreResult<Vec<u8>> {
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.transport(what, e))
    }

    async fn failure(&self, key: &str, resp: reqwest::Response, write: bool) -> StoreError {
        let status = resp.status();
        let body = self.body(key, resp).await.unwrap_or_default();
        classify(key, status, &body, write)
    }

    /// `GET /v1.0/healthz`: `Ok` once daprd is initialised (no token needed).
    pub async fn healthz(&self) -> StoreResult<()> {
        let resp = self
            .send(
                "healthz",
                self.request(reqwest::Method::GET, &format!("{}/healthz", self.api_url)),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(StoreError::unavailable(
                BACKEND,
                format!(
                    "daprd is not healthy yet (healthz answered {})",
                    resp.status()
                ),
            ))
        }
    }

    /// `GET /v1.0/metadata`.
    pub async fn metadata(&self) -> StoreResult<Metadata> {
        let resp = self
            .send(
                "metadata",
                self.request(reqwest::Method::GET, &format!("{}/metadata", self.api_url)),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure("metadata", resp, false).await);
        }
        let body = self.body("metadata", resp).await?;
        serde_json::from_slice(&body).map_err(|e| StoreError::Backend {
            backend: BACKEND,
            message: "daprd's /v1.0/metadata answer is not the expected JSON".to_owned(),
            source: Some(Box::new(e)),
        })
    }

    /// Reads one key: `None` when missing (`204`).
    pub async fn get(&self, key: &str) -> StoreResult<Option<RawState>> {
        let url = format!("{}/{}", self.state_url, encode_key(key));
        let resp = self
            .send(key, self.request(reqwest::Method::GET, &url))
            .await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => {
                let etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim_matches('"').to_owned());
                let json = self.body(key, resp).await?;
                match etag {
                    Some(etag) if !etag.is_empty() => Ok(Some(RawState { json, etag })),
                    _ => Err(StoreError::NotSupported {
                        backend: BACKEND,
                        what: format!(
                            "reading {key:?} gave no ETag; the state store component must support ETags"
                        ),
                    }),
                }
            }
            _ => Err(self.failure(key, resp, false).await),
        }
    }

    /// Reads many keys (`POST .../bulk`, in chunks), one entry per key in request order.
    /// A per-key error fails the whole read.
    pub async fn get_bulk(&self, keys: &[String]) -> StoreResult<Vec<Option<RawState>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BULK_CHUNK) {
            out.extend(self.get_bulk_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn get_bulk_chunk(&self, keys: &[String]) -> StoreResult<Vec<Option<RawState>>> {
        let what = format!("bulk read of {} keys", keys.len());
        let url = format!("{}/bulk", self.state_url);
        let resp = self
            .send(
                &what,
                self.request(reqwest::Method::POST, &url)
                    .json(&BulkRequest { keys }),
            )
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.failure(&what, resp, false).await);
        }
        let body = self.body(&what, resp).await?;
        let items: Vec<BulkItem> =
            serde_json::from_slice(&body).map_err(|e| StoreError::Backend {
                backend: BACKEND,
                message: format!("daprd's bulk answer is not the expected JSON array ({what})"),
                source: Some(Box::new(e)),
            })?;
        let mut by_key = std::collections::HashMap::with_capacity(items.len());
        for item in items {
            if let Some(error) = &item.error {
                let message = format!(
                    "bulk read of {:?} failed in the state store: {error}",
                    item.key
                );
                return Err(if is_transport_message(&error.to_ascii_lowercase()) {
                    StoreError::unavailable(BACKEND, message)
                } else {
                    StoreError::Backend {
                        backend: BACKEND,
                        message,
                        source: None,
                    }
                });
            }
            let state = match item.etag {
                Some(etag) if !etag.is_empty() => Some(RawState {
                    json: item
                        .data
                        .map(|d| d.get().as_bytes().to_vec())
                        .unwrap_or_else(|| b"null".to_vec()),
                    etag,
                }),
                _ => None,
            };
            by_key.entry(item.key).or_insert(state);
        }
        keys.iter()
            .map(|k| {
                by_key.get(k).cloned().ok_or_else(|| StoreError::Backend {
                    backend: BACKEND,
                    message: format!("daprd's bulk answer has no entry for {k:?}"),
                    source: None,
                })
            })
            .collect()
    }

    /// Saves items (`POST /v1.0/state/{store}`). Not atomic across items.
    pub async fn save(&self, items: &[SaveItem<'_>]) -> StoreResult<()> {
        let what = items.first().map_or("save", |i| i.key);
        let wire = items
            .iter()
            .map(wire_item)
            .collect::<StoreResult<Vec<_>>>()?;
        let resp = self
            .send(
                what,
                self.request(reqwest::Method::POST, &self.state_url)
                    .json(&wire),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.failure(what, resp, true).await)
        }
    }

    /// Deletes a key, only at `etag` if given (`If-Match`).
    pub async fn delete(&self, key: &str, etag: Option<&str>) -> StoreResult<()> {
        let url = format!("{}/{}", self.state_url, encode_key(key));
        let mut req = self.request(reqwest::Method::DELETE, &url);
        if let Some(etag) = etag {
            req = req.header(reqwest::header::IF_MATCH, etag);
        }
        let resp = self.send(key, req).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.failure(key, resp, true).await)
        }
    }

    /// Runs a transaction (`POST .../transaction`), for components that list
    /// `TRANSACTIONAL`. Atomic on the in-memory component, **not** on Redis (the other
    /// operations are applied when one fails its ETag check).
    pub async fn transaction(&self, operations: &[TxOperation<'_>]) -> StoreResult<()> {
        let what = "transaction";
        let operations = operations
            .iter()
            .map(|op| {
                Ok(match op {
                    TxOperation::Upsert(item) => WireTxOp {
                        operation: "upsert",
                        request: wire_item(item)?,
                    },
                    TxOperation::Delete { key, etag } => WireTxOp {
                        operation: "delete",
                        request: WireItem {
                            key,
                            value: None,
                            etag: *etag,
                            options: None,
                            metadata: None,
                        },
                    },
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let url = format!("{}/transaction", self.state_url);
        let resp = self
            .send(
                what,
                self.request(reqwest::Method::POST, &url)
                    .json(&WireTx { operations }),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.failure(what, resp, true).await)
        }
    }
}

fn wire_item<'a>(item: &SaveItem<'a>) -> StoreResult<WireItem<'a>> {
    let value: &RawValue = serde_json::from_str(item.json).map_err(|e| StoreError::Backend {
        backend: BACKEND,
        message: format!("the value for {:?} is not JSON text", item.key),
        source: Some(Box::new(e)),
    })?;
    Ok(WireItem {
        key: item.key,
        value: Some(value),
        etag: item.etag,
        options: item.first_write.then_some(WireOptions {
            concurrency: "first-write",
        }),
        metadata: item.ttl_seconds.map(|s| WireMetadata {
            ttl_in_seconds: s.to_string(),
        }),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_like_encode_uri_component_and_dots() {
        assert_eq!(
            encode_key("websocketmanager/instances/a+b%2Fc:d"),
            "websocketmanager%2Finstances%2Fa%2Bb%252Fc%3Ad"
        );
        assert_eq!(encode_key("ü:é"), "%C3%BC%3A%C3%A9");
        assert_eq!(encode_key("with space?#"), "with%20space%3F%23");
        assert_eq!(encode_key("a.b-c_d~e"), "a%2Eb-c_d~e");
    }

    #[test]
    fn keys_daprd_refuses_are_rejected_up_front() {
        assert!(check_key("").is_err());
        assert!(check_key("a||b").is_err());
        assert!(check_key("..").is_err());
        assert!(check_key("websocket-1").is_ok());
    }
}
