//! [`RedisStore`]: the heartbeat [`Store`] on Redis, standalone or Cluster.
//!
//! Cost per operation (round trips to the server):
//! - `put` with [`PutMode::Overwrite`] (every heartbeat): one transaction,
//!   `MULTI`, `SET key value PX ttl`, `SET version-key token PX ttl`, `EXEC`, sent at
//!   once; `Create` and `Update` (compare-and-swap): one `EVALSHA` of the put script,
//!   which checks the condition and sets both keys;
//! - `get`: one `MGET value-key version-key`;
//! - `get_many` (discovery): one `MGET` of all value and version keys, whatever their
//!   number; in Cluster mode the client splits it by slot and sends the parts to their
//!   nodes concurrently, so it is one round trip per node, in parallel;
//! - conditional `delete`: one script; unconditional: one `DEL`;
//! - index: native set commands, one each: `SMEMBERS`, `SADD`, `SREM`; `index_prune` is
//!   one script when the index and the member's key share a slot (always on a
//!   standalone server), else three commands (see [`RedisStore::index_prune`]).
//!
//! A discovery is therefore two round trips (`SMEMBERS` + `MGET`) for any number of
//! instances.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use heartbeat_core::{
    Capabilities, DeleteMode, PutMode, Store, StoreError, StoreResult, Version, Versioned,
};

use crate::client::{self, ConnectError, Connection};
use crate::config::RedisConfig;
use crate::layout::{self, UNTRACKED};
use crate::{scripts, slots};

/// The heartbeat store on Redis. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    config: Arc<RedisConfig>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's Debug redacts passwords; the connection is not printed at all.
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server or Cluster at `url` with default settings.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_with(RedisConfig::from_url(url)?).await
    }

    /// Connects with `config`. Fails if the server (or, for a Cluster, every seed node)
    /// cannot be reached within the connect timeout; after that, the connection is
    /// re-established by itself whenever it breaks.
    pub async fn connect_with(config: RedisConfig) -> Result<Self, ConnectError> {
        let conn = client::connect(&config).await?;
        tracing::info!(urls = ?config.redacted_urls(), cluster = config.is_cluster(), "connected to redis");
        Ok(Self {
            conn,
            config: Arc::new(config),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The key that holds the version of the value at `key` (see [`crate::layout`]).
    pub fn version_key(&self, key: &str) -> String {
        layout::version_key(&self.config.version_prefix, key)
    }

    /// Checks that the server answers (`PING`), within the call timeout.
    pub async fn ping(&self) -> StoreResult<()> {
        self.conn
            .call("ping", "PING", self.timeout(), |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await
            .map(|_| ())
    }

    fn timeout(&self) -> Duration {
        self.config.call_timeout
    }

    /// Writes `value` at `key` by the PUT script. Returns the new version, or `None` when
    /// the mode's condition failed.
    pub(crate) async fn put_raw(
        &self,
        key: &str,
        value: &[u8],
        mode: &PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Option<Version>> {
        if value.len() > self.config.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                key: key.to_owned(),
                len: value.len(),
                max: self.config.max_value_bytes,
            });
        }
        let vkey = self.version_key(key);
        let token = layout::new_token();
        let (mode_arg, expected) = match mode {
            PutMode::Overwrite => ("o", ""),
            PutMode::Create => ("c", ""),
            PutMode::Update(v) => ("u", v.as_str()),
        };
        let ttl_ms = ttl.map_or(0, ttl_millis);
        if *mode == PutMode::Overwrite {
            // No condition to check: a transaction of two SETs is atomic like the
            // script and cheaper for the server (every heartbeat takes this path).
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (k, v) in [(key.as_bytes(), value), (vkey.as_bytes(), token.as_bytes())] {
                let set = pipe.cmd("SET").arg(k).arg(v);
                if ttl_ms > 0 {
                    set.arg("PX").arg(ttl_ms);
                }
                set.ignore();
            }
            self.conn
                .call("put", key, self.timeout(), |mut c| async move {
                    pipe.query_async::<()>(&mut c).await
                })
                .await?;
            return Ok(Some(Version::new(token)));
        }
        let written: i64 = self
            .conn
            .call("put", key, self.timeout(), |mut c| {
                let mut invocation = scripts::PUT.key(key);
                invocation
                    .key(&vkey)
                    .arg(mode_arg)
                    .arg(expected)
                    .arg(value)
                    .arg(&token)
                    .arg(ttl_ms);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok((written == 1).then(|| Version::new(token)))
    }
}

/// A TTL in whole milliseconds, rounded up, at least 1 (`PX 0` is an error).
fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// A value and its version token, as `MGET value-key version-key` returns them.
fn versioned(value: Option<Vec<u8>>, token: Option<String>) -> Option<Versioned> {
    value.map(|value| Versioned {
        value,
        version: Version::new(token.unwrap_or_else(|| UNTRACKED.to_owned())),
    })
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        client::BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            native_sets: true,
            max_value_bytes: Some(self.config.max_value_bytes),
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        let vkey = self.version_key(key);
        let (value, token): (Option<Vec<u8>>, Option<String>) = self
            .conn
            .call("get", key, self.timeout(), |mut c| async move {
                redis::cmd("MGET")
                    .arg(key)
                    .arg(&vkey)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(versioned(value, token))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(key).arg(self.version_key(key));
        }
        let what = format!("bulk read of {} keys", keys.len());
        let raw: Vec<Option<Vec<u8>>> = self
            .conn
            .call("get_many", &what, self.timeout(), |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        if raw.len() != keys.len() * 2 {
            return Err(StoreError::Backend {
                backend: client::BACKEND,
                message: format!(
                    "MGET of {} keys returned {} values",
                    keys.len() * 2,
                    raw.len()
                ),
                source: None,
            });
        }
        let mut out = Vec::with_capacity(keys.len());
        let mut it = raw.into_iter();
        while let (Some(value), Some(token)) = (it.next(), it.next()) {
            let token = token.and_then(|t| String::from_utf8(t).ok());
            out.push(versioned(value, token));
        }
        Ok(out)
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        mode: PutMode,
        ttl: Option<Duration>,
    ) -> StoreResult<Version> {
        self.put_raw(key, &value, &mode, ttl)
            .await?
            .ok_or_else(|| StoreError::Conflict {
                key: key.to_owned(),
            })
    }

    async fn delete(&self, key: &str, mode: DeleteMode) -> StoreResult<()> {
        let vkey = self.version_key(key);
        match mode {
            DeleteMode::Unconditional => self
                .conn
                .call("delete", key, self.timeout(), |mut c| async move {
                    redis::cmd("DEL")
                        .arg(key)
                        .arg(&vkey)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await
                .map(|_| ()),
            DeleteMode::IfVersion(version) => {
                let deleted: i64 = self
                    .conn
                    .call("delete_if", key, self.timeout(), |mut c| {
                        let mut invocation = scripts::DELETE_IF_VERSION.key(key);
                        invocation.key(&vkey).arg(version.as_str());
                        async move { invocation.invoke_async(&mut c).await }
                    })
                    .await?;
                if deleted == 1 {
                    Ok(())
                } else {
                    Err(StoreError::Conflict {
                        key: key.to_owned(),
                    })
                }
            }
        }
    }

    async fn index_members(&self, index_key: &str) -> StoreResult<BTreeSet<String>> {
        let raw: Vec<Vec<u8>> = self
            .conn
            .call(
                "index_members",
                index_key,
                self.timeout(),
                |mut c| async move {
                    redis::cmd("SMEMBERS")
                        .arg(index_key)
                        .query_async(&mut c)
                        .await
                },
            )
            .await?;
        let mut members = BTreeSet::new();
        for m in raw {
            match String::from_utf8(m) {
                Ok(s) => {
                    members.insert(s);
                }
                Err(e) => {
                    tracing::warn!(index = %index_key.escape_debug(), member = ?e.as_bytes(), "ignoring a non-UTF-8 index member")
                }
            }
        }
        Ok(members)
    }

    async fn index_add(&self, index_key: &str, member: &str) -> StoreResult<()> {
        self.conn
            .call("index_add", index_key, self.timeout(), |mut c| async move {
                redis::cmd("SADD")
                    .arg(index_key)
                    .arg(member)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }

    async fn index_remove(&self, index_key: &str, member: &str) -> StoreResult<()> {
        self.conn
            .call(
                "index_remove",
                index_key,
                self.timeout(),
                |mut c| async move {
                    redis::cmd("SREM")
                        .arg(index_key)
                        .arg(member)
                        .query_async::<i64>(&mut c)
                        .await
                },
            )
            .await
            .map(|_| ())
    }

    /// Removes `member` only while `member_key` is missing.
    ///
    /// When the index and the member's key share a slot (always on a standalone server)
    /// this is one atomic script. In a Cluster they usually do not, and no command may
    /// span two slots, so it is done in three steps that are safe without atomicity:
    /// `EXISTS member_key` (present: stop), `SREM`, then `EXISTS member_key` again and,
    /// if the record appeared meanwhile, `SADD` the member back. A joiner writes its
    /// record before it adds itself to the index, so either the second check sees the
    /// record, or the joiner's `SADD` comes after our `SREM`: the member is never lost
    /// (at worst missing from the index for one round trip, while its record exists and
    /// observers follow it anyway).
    async fn index_prune(
        &self,
        index_key: &str,
        member: &str,
        member_key: &str,
    ) -> StoreResult<bool> {
        let same_slot = !self.config.is_cluster()
            || slots::slot(index_key.as_bytes()) == slots::slot(member_key.as_bytes());
        if same_slot {
            let removed: i64 = self
                .conn
                .call("index_prune", index_key, self.timeout(), |mut c| {
                    let mut invocation = scripts::PRUNE.key(index_key);
                    invocation.key(member_key).arg(member);
                    async move { invocation.invoke_async(&mut c).await }
                })
                .await?;
            return Ok(removed == 1);
        }
        if self.exists(member_key).await? {
            return Ok(false);
        }
        let removed: i64 = self
            .conn
            .call(
                "index_prune",
                index_key,
                self.timeout(),
                |mut c| async move {
                    redis::cmd("SREM")
                        .arg(index_key)
                        .arg(member)
                        .query_async(&mut c)
                        .await
                },
            )
            .await?;
        if removed == 0 {
            return Ok(false);
        }
        if self.exists(member_key).await? {
            self.index_add(index_key, member).await?;
            return Ok(false);
        }
        Ok(true)
    }
}

impl RedisStore {
    /// One `SSCAN` step over the set at `key`: the next cursor (`"0"` at the end) and
    /// the members of this step.
    pub(crate) async fn sscan(
        &self,
        key: &str,
        cursor: &str,
        count: usize,
    ) -> StoreResult<(String, Vec<Vec<u8>>)> {
        self.conn
            .call("sscan", key, self.timeout(), |mut c| async move {
                redis::cmd("SSCAN")
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut c)
                    .await
            })
            .await
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        let n: i64 = self
            .conn
            .call("exists", key, self.timeout(), |mut c| async move {
                redis::cmd("EXISTS").arg(key).query_async(&mut c).await
            })
            .await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_secs(60)), 60_000);
    }

    #[test]
    fn values_without_a_version_key_read_as_untracked() {
        let v = versioned(Some(b"x".to_vec()), None).map(|v| v.version);
        assert_eq!(v, Some(Version::new(UNTRACKED)));
        assert_eq!(versioned(None, Some("abc".into())), None);
    }
}
