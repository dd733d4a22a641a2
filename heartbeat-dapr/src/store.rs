//! [`DaprStore`]: the heartbeat [`Store`] on a Dapr state store component.
//!
//! # Versions
//! A version is the component's ETag. daprd does not return the new ETag from a save,
//! so after every write the store reads the key once: if it holds the value just
//! written, its ETag is the new version; if somebody wrote in between, the write is
//! already superseded and the returned version is a `stale~…` token that can never
//! match (a later compare-and-swap with it is a [`StoreError::Conflict`], which is the
//! truth: the key changed since).
//!
//! # Two flavours of ETag semantics
//! - **Strict** (`state.in-memory`, and every component other than Redis): ETags are
//!   unique (UUIDs). `Create` is `concurrency: first-write` without an ETag (409 when the
//!   key exists), `Update` sends the ETag (409 when it differs or the key is missing),
//!   conditional deletes send `If-Match`.
//! - **Redis** (`state.redis`): the ETag is a per-key counter that restarts at 1 after a
//!   delete, an ETag on a missing key *creates* it, and `first-write` leaves a sticky
//!   field in the hash after which plain saves (like the .NET system's) fail. So we
//!   never send `first-write` there. Instead:
//!   - `Create` sends the ETag `-1`, which the component's script accepts only when the
//!     key is missing (an existing key's counter is never `-1`, and only `0` means "no
//!     ETag"); the new version is then `1`.
//!   - `Update` and conditional deletes first read the key: missing or another version
//!     is a conflict without writing; otherwise the ETag is sent (the script checks it
//!     atomically). After an update the key is read back: a counter of 1 holding our
//!     value means the key was deleted between our check and our save and the component
//!     re-created it, so we delete it again (on that ETag) and report a conflict.
//!   - The version token is `<counter>~<fingerprint of the value>`, so a key deleted and
//!     re-created with a different value never matches an old version even though its
//!     counter repeats.
//!   - Writes without a TTL send `ttlInSeconds: -1`, because Redis keeps an old TTL on
//!     an overwrite otherwise.
//!
//! Residual limitations on Redis, documented in the crate docs: a key deleted and
//! re-created with the same value and the same number of writes has the same version
//! (ABA on identical content); an `Update` that races with a delete of the same key
//! (between our read and our save, a millisecond) re-creates the key for the moment
//! until it is undone (readers may see it in that window); a conditional delete that
//! races with another delete succeeds instead of reporting a conflict.
//!
//! # Values
//! See [`crate::value`]: JSON records are stored as JSON (the .NET system reads them),
//! anything else as marked text; both read back as documented there.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use heartbeat_core::{
    Capabilities, DeleteMode, PutMode, Store, StoreError, StoreResult, Version, Versioned,
};

use crate::client::{BACKEND, Component, DaprClient, RawState, SaveItem, check_key};
use crate::config::DaprConfig;
use crate::index::IndexBatches;
use crate::value;

/// Attempts of an overwrite on Redis that falls back to compare-and-swap (a key with
/// the sticky `first-write` field, written by another Dapr client).
const OVERWRITE_ATTEMPTS: u32 = 20;

/// How the component treats ETags (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagSemantics {
    /// Unique ETags; an ETag on a missing key is a conflict.
    Strict,
    /// The Redis component: counters that restart, ETags that create missing keys.
    Redis,
}

impl EtagSemantics {
    /// The semantics of a component type.
    pub fn of(kind: &str) -> Self {
        if kind.starts_with("state.redis") {
            Self::Redis
        } else {
            Self::Strict
        }
    }
}

/// Why [`DaprStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The HTTP client could not be built.
    #[error("could not create the Dapr client: {0}")]
    Client(#[source] StoreError),
    /// `/v1.0/healthz` did not answer `204` in time.
    #[error(
        "daprd at {endpoint} did not become healthy within {after:?}; check that the sidecar runs and DAPR_HTTP_ENDPOINT / DAPR_HTTP_PORT point to it: {source}"
    )]
    NotHealthy {
        /// The sidecar's endpoint.
        endpoint: String,
        /// The time allowed.
        after: Duration,
        /// The last error.
        #[source]
        source: StoreError,
    },
    /// `/v1.0/metadata` failed (for example a wrong or missing API token).
    #[error("could not read daprd's metadata: {0}")]
    Metadata(#[source] StoreError),
    /// The component is not loaded.
    #[error(
        "state store {store:?} is not loaded in daprd (loaded: {loaded}); check the component's metadata.name and the resources path"
    )]
    StoreNotFound {
        /// The name asked for.
        store: String,
        /// The components daprd has.
        loaded: String,
    },
    /// The component cannot do compare-and-swap.
    #[error(
        "state store {store:?} ({kind}) does not support ETags; the heartbeat index and connection claims need compare-and-swap, so use a component with the ETAG capability (for example state.redis or state.postgresql)"
    )]
    NoEtagSupport {
        /// The component name.
        store: String,
        /// Its type.
        kind: String,
    },
}

/// The heartbeat store on a Dapr state store component (see the module docs).
#[derive(Debug, Clone)]
pub struct DaprStore {
    pub(crate) client: DaprClient,
    component: Component,
    pub(crate) semantics: EtagSemantics,
    capabilities: Capabilities,
    pub(crate) batches: Arc<IndexBatches>,
}

impl DaprStore {
    /// Waits (within the configured startup timeout) until daprd is healthy, reads its
    /// metadata and checks the component: ETag support is required; without TTL support
    /// records do not expire by themselves (liveness still works, by change).
    pub async fn connect(config: DaprConfig) -> Result<Self, ConnectError> {
        let client = DaprClient::new(config).map_err(ConnectError::Client)?;
        let config = client.config().clone();
        let deadline = tokio::time::Instant::now() + config.startup_timeout();
        loop {
            match client.healthz().await {
                Ok(()) => break,
                Err(source) if tokio::time::Instant::now() >= deadline => {
                    return Err(ConnectError::NotHealthy {
                        endpoint: config.endpoint().to_string(),
                        after: config.startup_timeout(),
                        source,
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "waiting for daprd to become healthy");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let metadata = client.metadata().await.map_err(ConnectError::Metadata)?;
        let Some(component) = metadata
            .components
            .iter()
            .find(|c| c.name == config.store())
            .cloned()
        else {
            let loaded = metadata
                .components
                .iter()
                .map(|c| format!("{} ({})", c.name, c.kind))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConnectError::StoreNotFound {
                store: config.store().to_owned(),
                loaded: if loaded.is_empty() {
                    "none".to_owned()
                } else {
                    loaded
                },
            });
        };
        Self::with_component(client, component)
    }

    /// A store on `client` for a component already described (no request is made).
    /// Fails without ETag support.
    pub fn with_component(client: DaprClient, component: Component) -> Result<Self, ConnectError> {
        if !component.has("ETAG") {
            return Err(ConnectError::NoEtagSupport {
                store: component.name.clone(),
                kind: component.kind.clone(),
            });
        }
        let ttl = component.has("TTL");
        if !ttl {
            tracing::warn!(
                store = %component.name,
                kind = %component.kind,
                "the state store has no TTL support: records of dead instances stay until pruned (liveness-only expiry)"
            );
        }
        let capabilities = Capabilities {
            ttl,
            native_sets: false,
            max_value_bytes: Some(client.config().max_value_bytes()),
        };
        tracing::info!(
            store = %component.name,
            kind = %component.kind,
            ttl,
            "connected to the Dapr state store"
        );
        Ok(Self {
            batches: Arc::default(),
            semantics: EtagSemantics::of(&component.kind),
            client,
            component,
            capabilities,
        })
    }

    /// The wire client (for raw calls).
    pub fn client(&self) -> &DaprClient {
        &self.client
    }

    /// The component as daprd describes it.
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// The ETag semantics in use.
    pub fn semantics(&self) -> EtagSemantics {
        self.semantics
    }

    /// Like [`Store::put`], but JSON bytes are always stored as a JSON value (so other
    /// Dapr clients read them as JSON) even when a read cannot give them back byte for
    /// byte: reads return them normalized (see [`crate::value`]). Used for connection
    /// records, whose extra fields may hold floats or large numbers.
    pub async fn put_json(
        &self,
        key: &str,
        value: &[u8],
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version> {
        self.write(key, value, true, mode, ttl).await
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        force_json: bool,
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version> {
        invalid_key(key)?;
        let max = self.client.config().max_value_bytes();
        if value.len() > max {
            return Err(StoreError::ValueTooLarge {
                key: key.to_owned(),
                len: value.len(),
                max,
            });
        }
        let json = if force_json {
            value::encode_as_json(value)
        } else {
            value::encode(value)
        };
        let stored = value::decode(json.as_bytes()).map_err(|reason| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        })?;
        let ttl = self.ttl_seconds(ttl);
        let r = match self.semantics {
            EtagSemantics::Strict => self.put_strict(key, &json, &stored, mode, ttl).await,
            EtagSemantics::Redis => self.put_redis(key, &json, &stored, mode, ttl).await,
        };
        count_conflict(r, "put")
    }

    fn version_of(&self, etag: &str, stored: &[u8]) -> Version {
        match self.semantics {
            EtagSemantics::Strict => Version::new(etag),
            EtagSemantics::Redis => {
                Version::new(format!("{etag}~{:016x}", value::fingerprint(stored)))
            }
        }
    }

    /// The ETag inside a version we issued; `None` for stale or foreign tokens, which
    /// cannot match anything.
    fn etag_of<'v>(&self, version: &'v Version) -> Option<&'v str> {
        let token = version.as_str();
        if token.is_empty() || token.starts_with(STALE) {
            return None;
        }
        match self.semantics {
            EtagSemantics::Strict => Some(token),
            EtagSemantics::Redis => {
                let (etag, fp) = token.split_once('~')?;
                (etag.parse::<u64>().is_ok() && u64::from_str_radix(fp, 16).is_ok()).then_some(etag)
            }
        }
    }

    pub(crate) fn decode(&self, key: &str, raw: RawState) -> StoreResult<Versioned> {
        let value = value::decode(&raw.json).map_err(|reason| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        })?;
        let version = self.version_of(&raw.etag, &value);
        Ok(Versioned { value, version })
    }

    pub(crate) fn ttl_seconds(&self, ttl: Option<Duration>) -> Option<i64> {
        if !self.capabilities.ttl {
            return None;
        }
        match ttl {
            Some(d) => {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                Some(i64::try_from(secs.max(1)).unwrap_or(i64::MAX))
            }
            // Redis keeps an old TTL on overwrite unless told otherwise.
            None if self.semantics == EtagSemantics::Redis => Some(-1),
            None => None,
        }
    }

    /// Reads the key after our write: its version if it still holds what we wrote.
    async fn version_after_write(&self, key: &str, stored: &[u8]) -> StoreResult<Version> {
        match self.client.get(key).await? {
            Some(raw) => {
                let now = self.decode(key, raw)?;
                if now.value == stored {
                    Ok(now.version)
                } else {
                    Ok(stale())
                }
            }
            None => Ok(stale()),
        }
    }

    pub(crate) async fn save(
        &self,
        key: &str,
        json: &str,
        etag: Option<&str>,
        first_write: bool,
        ttl_seconds: Option<i64>,
    ) -> StoreResult<()> {
        self.client
            .save(&[SaveItem {
                key,
                json,
                etag,
                first_write,
                ttl_seconds,
            }])
            .await
    }

    /// Reads the current state and checks it against `expected` (Redis flavour):
    /// `Err(Conflict)` when missing or different, else the ETag to send.
    async fn precheck(&self, key: &str, expected: &Version) -> StoreResult<String> {
        let conflict = || StoreError::Conflict {
            key: key.to_owned(),
        };
        let raw = self.client.get(key).await?.ok_or_else(conflict)?;
        let etag = raw.etag.clone();
        let current = self.decode(key, raw)?;
        if &current.version == expected {
            Ok(etag)
        } else {
            Err(conflict())
        }
    }

    async fn put_redis(
        &self,
        key: &str,
        json: &str,
        stored: &[u8],
        mode: PutMode,
        ttl: Option<i64>,
    ) -> StoreResult<Version> {
        match mode {
            PutMode::Create => {
                self.save(key, json, Some("-1"), false, ttl).await?;
                Ok(self.version_of("1", stored))
            }
            PutMode::Update(expected) => {
                if self.etag_of(&expected).is_none() {
                    return Err(StoreError::Conflict {
                        key: key.to_owned(),
                    });
                }
                let etag = self.precheck(key, &expected).await?;
                self.save(key, json, Some(&etag), false, ttl).await?;
                // An update of an existing key (counter >= 1) leaves a counter >= 2; a
                // counter of 1 holding our value means the key was deleted between our
                // check and our save and the component re-created it: undo that.
                match self.client.get(key).await? {
                    Some(raw) if raw.etag == "1" && etag != "0" => {
                        let now = self.decode(key, raw)?;
                        if now.value == stored {
                            tracing::warn!(
                                key,
                                "an update re-created a deleted key; deleting it again"
                            );
                            if let Err(e) = self.client.delete(key, Some("1")).await {
                                tracing::warn!(key, error = %e, "could not undo the re-creation");
                            }
                            Err(StoreError::Conflict {
                                key: key.to_owned(),
                            })
                        } else {
                            Ok(stale())
                        }
                    }
                    Some(raw) => {
                        let now = self.decode(key, raw)?;
                        Ok(if now.value == stored {
                            now.version
                        } else {
                            stale()
                        })
                    }
                    None => Ok(stale()),
                }
            }
            PutMode::Overwrite => {
                match self.save(key, json, None, false, ttl).await {
                    Ok(()) => return self.version_after_write(key, stored).await,
                    Err(e) if e.is_conflict() => {
                        // The key carries the sticky first-write field: overwrite by
                        // compare-and-swap on whatever is there.
                        tracing::debug!(key, "plain save refused; overwriting by compare-and-swap");
                    }
                    Err(e) => return Err(e),
                }
                for _ in 0..OVERWRITE_ATTEMPTS {
                    let etag = match self.client.get(key).await? {
                        Some(raw) => raw.etag,
                        None => "-1".to_owned(),
                    };
                    match self.save(key, json, Some(&etag), false, ttl).await {
                        Ok(()) => return self.version_after_write(key, stored).await,
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(StoreError::Backend {
                    backend: BACKEND,
                    message: format!(
                        "overwriting {key:?} kept conflicting with concurrent writers; retry later"
                    ),
                    source: None,
                })
            }
        }
    }

    async fn put_strict(
        &self,
        key: &str,
        json: &str,
        stored: &[u8],
        mode: PutMode,
        ttl: Option<i64>,
    ) -> StoreResult<Version> {
        match mode {
            PutMode::Overwrite => self.save(key, json, None, false, ttl).await?,
            PutMode::Create => self.save(key, json, None, true, ttl).await?,
            PutMode::Update(expected) => {
                let Some(etag) = self.etag_of(&expected) else {
                    return Err(StoreError::Conflict {
                        key: key.to_owned(),
                    });
                };
                self.save(key, json, Some(etag), true, ttl).await?;
            }
        }
        self.version_after_write(key, stored).await
    }
}

/// Prefix of versions that can never match (a write superseded before we read it back).
const STALE: &str = "stale~";

fn stale() -> Version {
    Version::new(format!("{STALE}{:016x}", rand::random::<u64>()))
}

pub(crate) fn invalid_key(key: &str) -> StoreResult<()> {
    check_key(key).map_err(|reason| StoreError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

fn count_conflict<T>(r: StoreResult<T>, op: &'static str) -> StoreResult<T> {
    if let Err(e) = &r {
        if e.is_conflict() {
            metrics::counter!("heartbeat_dapr_conflicts_total", "op" => op).increment(1);
        } else {
            metrics::counter!("heartbeat_dapr_errors_total", "op" => op).increment(1);
        }
    }
    r
}

#[async_trait]
impl Store for DaprStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        invalid_key(key)?;
        let r = match self.client.get(key).await {
            Ok(Some(raw)) => self.decode(key, raw).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        count_conflict(r, "get")
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for key in keys {
            invalid_key(key)?;
        }
        let r = async {
            let raws = self.client.get_bulk(keys).await?;
            keys.iter()
                .zip(raws)
                .map(|(key, raw)| raw.map(|raw| self.decode(key, raw)).transpose())
                .collect()
        }
        .await;
        count_conflict(r, "get_many")
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version> {
        self.write(key, &value, false, mode, ttl).await
    }

    async fn delete(&self, key: &str, mode: DeleteMode) -> StoreResult<()> {
        invalid_key(key)?;
        let r = async {
            match mode {
                DeleteMode::Unconditional => self.client.delete(key, None).await,
                DeleteMode::IfVersion(expected) => {
                    let Some(etag) = self.etag_of(&expected) else {
                        return Err(StoreError::Conflict {
                            key: key.to_owned(),
                        });
                    };
                    match self.semantics {
                        EtagSemantics::Strict => self.client.delete(key, Some(etag)).await,
                        EtagSemantics::Redis => {
                            let etag = self.precheck(key, &expected).await?;
                            self.client.delete(key, Some(&etag)).await
                        }
                    }
                }
            }
        }
        .await;
        count_conflict(r, "delete")
    }

    async fn index_members(&self, index_key: &str) -> StoreResult<BTreeSet<String>> {
        invalid_key(index_key)?;
        Ok(self.read_index(index_key).await?.0)
    }

    async fn index_add(&self, index_key: &str, member: &str) -> StoreResult<()> {
        self.batched(index_key, crate::index::IndexOp::Add(member.to_owned()))
            .await
    }

    async fn index_remove(&self, index_key: &str, member: &str) -> StoreResult<()> {
        self.batched(index_key, crate::index::IndexOp::Remove(member.to_owned()))
            .await
    }

    async fn index_prune(
        &self,
        index_key: &str,
        member: &str,
        member_key: &str,
    ) -> StoreResult<bool> {
        self.prune_index(index_key, member, member_key).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn component(kind: &str, capabilities: &[&str]) -> Component {
        Component {
            name: "statestore".to_owned(),
            kind: kind.to_owned(),
            version: "v1".to_owned(),
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn store(kind: &str, capabilities: &[&str]) -> Result<DaprStore, ConnectError> {
        let config = DaprConfig::new("http://127.0.0.1:3500", "statestore").unwrap();
        DaprStore::with_component(
            DaprClient::new(config).unwrap(),
            component(kind, capabilities),
        )
    }

    #[test]
    fn a_component_without_etags_is_refused_with_the_reason() {
        let err = store("state.azure.blobstorage", &["TTL"]).unwrap_err();
        assert!(matches!(err, ConnectError::NoEtagSupport { .. }));
        assert!(err.to_string().contains("compare-and-swap"), "{err}");
    }

    #[test]
    fn without_ttl_support_capabilities_say_so_and_no_ttl_is_sent() {
        let s = store("state.postgresql", &["ETAG", "TRANSACTIONAL"]).unwrap();
        assert!(!s.capabilities().ttl);
        assert_eq!(s.ttl_seconds(Some(Duration::from_secs(5))), None);
        assert_eq!(s.semantics(), EtagSemantics::Strict);
    }

    #[test]
    fn ttls_round_up_to_whole_seconds_and_redis_clears_old_ones() {
        let s = store("state.redis", &["ETAG", "TTL"]).unwrap();
        assert_eq!(s.semantics(), EtagSemantics::Redis);
        assert_eq!(s.ttl_seconds(Some(Duration::from_millis(1500))), Some(2));
        assert_eq!(s.ttl_seconds(Some(Duration::from_millis(1))), Some(1));
        assert_eq!(s.ttl_seconds(Some(Duration::from_secs(60))), Some(60));
        assert_eq!(s.ttl_seconds(None), Some(-1));
        let m = store("state.in-memory", &["ETAG", "TTL"]).unwrap();
        assert_eq!(m.ttl_seconds(None), None);
    }

    #[test]
    fn version_tokens_carry_the_etag_and_stale_ones_match_nothing() {
        let r = store("state.redis", &["ETAG", "TTL"]).unwrap();
        let v = r.version_of("7", b"x");
        assert_eq!(r.etag_of(&v), Some("7"));
        assert_ne!(
            v,
            r.version_of("7", b"y"),
            "the fingerprint tells values apart"
        );
        assert_eq!(r.etag_of(&stale()), None);
        assert_eq!(r.etag_of(&Version::new("d46fa448-457c")), None);
        let m = store("state.in-memory", &["ETAG", "TTL"]).unwrap();
        let uuid = Version::new("d46fa448-457c-4a91-9e28-4ad2dc673b40");
        assert_eq!(m.etag_of(&uuid), Some(uuid.as_str()));
        assert_eq!(m.etag_of(&stale()), None);
    }
}
