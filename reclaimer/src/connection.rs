//! The connection record: what the seed system stores for each outbound WebSocket
//! connection, and the ownership stamp a reclaimer changes.
//!
//! The wire shape is the .NET Virtufin.WebSocketManager's (key `websocket-<id>`,
//! System.Text.Json web defaults: camelCase, `status` as an integer, timestamps with up
//! to 7 fractional digits and a trailing `Z`):
//!
//! ```json
//! {"id":"3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c","url":"wss://feed.example.test/stream",
//!  "status":2,"topic":"quotes.eurusd","autoReconnect":true,
//!  "createdAt":"2026-11-30T09:30:00.0000001Z","instanceId":"wsm-7d9f8c6b5-x2x9q",
//!  "tags":{"desk":"fx"}}
//! ```
//!
//! plus two optional fields of ours: `ownerIncarnation` (the life of the owner that
//! stamped the record, 16 hex digits) and `updatedAt` (when it was last stamped).
//!
//! Reading is lenient where the seed's writers differ (PascalCase names, up to 9
//! fractional digits, timestamps without an offset are UTC, `null` for optional
//! values) and strict about what a reclaimer needs: a record without an owner
//! (`instanceId`) is a [`ConnectionRecordError::MissingOwner`] naming the record, never
//! a panic. Fields we do not know are kept in [`ConnectionRecord::extra`] and written
//! back unchanged, so a claim never loses data of the .NET system.
//!
//! ```
//! use reclaimer::{ConnectionRecord, ConnectionStatus};
//! let raw = br#"{"id":"c-1","url":"wss://x.test","status":2,"topic":"t","autoReconnect":true,
//!   "createdAt":"2026-11-30T09:30:00.0000001Z","instanceId":"wsm-1","tags":{},"zone":"eu"}"#;
//! let record = ConnectionRecord::from_json(raw)?;
//! assert_eq!(record.owner.as_str(), "wsm-1");
//! assert_eq!(record.status, ConnectionStatus::Connected);
//! assert!(record.owner_incarnation.is_none()); // written by the .NET system
//! let written = record.to_json()?;
//! assert!(String::from_utf8_lossy(&written).contains(r#""zone":"eu""#)); // kept
//! # Ok::<(), reclaimer::ConnectionRecordError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use heartbeat_core::{Incarnation, InstanceId, InstanceIdError, Version};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest connection record we agree to parse. Real records are a few hundred bytes.
pub const MAX_CONNECTION_RECORD_BYTES: usize = 256 * 1024;

/// Longest connection id accepted, in bytes (the seed uses GUIDs: 36 bytes).
pub const MAX_CONNECTION_ID_BYTES: usize = 512;

/// A validated connection id (in the seed system a GUID; the store key is
/// `websocket-<id>`).
///
/// Rules: not empty, at most [`MAX_CONNECTION_ID_BYTES`] bytes, no control characters,
/// no `||` (Dapr's key separator).
///
/// ```
/// use reclaimer::ConnectionId;
/// let id: ConnectionId = "3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c".parse()?;
/// assert_eq!(id.as_str().len(), 36);
/// assert!("".parse::<ConnectionId>().is_err());
/// # Ok::<(), reclaimer::ConnectionIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(String);

/// Why a string is not a valid [`ConnectionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionIdError {
    /// The id was empty.
    #[error("connection id is empty; connection records need a non-empty id (a GUID)")]
    Empty,
    /// The id is too long.
    #[error("connection id is {len} bytes long; at most {max} bytes are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id contains a control character.
    #[error("connection id contains a control character (U+{code:04X}) at byte {at}")]
    ControlCharacter {
        /// Byte offset.
        at: usize,
        /// Code point.
        code: u32,
    },
    /// The id contains `||`.
    #[error("connection id contains '||' at byte {at}; Dapr uses '||' to separate app id and key")]
    DoublePipe {
        /// Byte offset.
        at: usize,
    },
}

impl ConnectionId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, ConnectionIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ConnectionIdError::Empty);
        }
        if id.len() > MAX_CONNECTION_ID_BYTES {
            return Err(ConnectionIdError::TooLong {
                len: id.len(),
                max: MAX_CONNECTION_ID_BYTES,
            });
        }
        if let Some((at, c)) = id.char_indices().find(|(_, c)| c.is_control()) {
            return Err(ConnectionIdError::ControlCharacter {
                at,
                code: u32::from(c),
            });
        }
        if let Some(at) = id.find("||") {
            return Err(ConnectionIdError::DoublePipe { at });
        }
        Ok(Self(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the id, returning the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({:?})", self.0)
    }
}

impl FromStr for ConnectionId {
    type Err = ConnectionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for ConnectionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for ConnectionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConnectionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// The state of the connection as its owner last wrote it (`status`, an integer on the
/// wire, as the .NET enum is serialized).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConnectionStatus {
    /// 0: not connected.
    #[default]
    Disconnected,
    /// 1: connecting.
    Connecting,
    /// 2: connected.
    Connected,
    /// 3: reconnecting after a drop.
    Reconnecting,
    /// A value written by a newer version of the .NET system; kept as is.
    Other(i64),
}

impl ConnectionStatus {
    /// The wire value.
    pub fn as_i64(self) -> i64 {
        match self {
            Self::Disconnected => 0,
            Self::Connecting => 1,
            Self::Connected => 2,
            Self::Reconnecting => 3,
            Self::Other(v) => v,
        }
    }

    /// The status for a wire value (unknown values are kept as [`ConnectionStatus::Other`]).
    pub fn from_i64(v: i64) -> Self {
        match v {
            0 => Self::Disconnected,
            1 => Self::Connecting,
            2 => Self::Connected,
            3 => Self::Reconnecting,
            v => Self::Other(v),
        }
    }
}

impl Serialize for ConnectionStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.as_i64())
    }
}

impl<'de> Deserialize<'de> for ConnectionStatus {
    /// Accepts the integer (the .NET default) and, leniently, the enum's names as a
    /// `JsonStringEnumConverter` would write them (case-insensitive).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Int(i64),
            #[serde(borrow)]
            Name(std::borrow::Cow<'a, str>),
        }
        match Raw::deserialize(d)? {
            Raw::Int(v) => Ok(Self::from_i64(v)),
            Raw::Name(name) => match name.to_ascii_lowercase().as_str() {
                "disconnected" => Ok(Self::Disconnected),
                "connecting" => Ok(Self::Connecting),
                "connected" => Ok(Self::Connected),
                "reconnecting" => Ok(Self::Reconnecting),
                _ => Err(serde::de::Error::custom(format!(
                    "status {name:?} is not 0-3 or Disconnected/Connecting/Connected/Reconnecting"
                ))),
            },
        }
    }
}

/// One connection record, as stored at `websocket-<id>`.
///
/// Field names follow the domain; the wire names are the seed's (see the module docs).
/// [`ConnectionRecord::extra`] holds every field we do not know, and is written back
/// as it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    /// The connection's id (`id`).
    pub id: ConnectionId,
    /// The upstream URL (`url`).
    pub url: String,
    /// The state the owner last wrote (`status`).
    pub status: ConnectionStatus,
    /// The upstream topic (`topic`; may be `null`).
    pub topic: Option<String>,
    /// Whether the owner reconnects after a drop (`autoReconnect`).
    pub auto_reconnect: bool,
    /// When the connection was created (`createdAt`, the creator's wall clock).
    pub created_at: DateTime<Utc>,
    /// The instance that owns the connection (`instanceId`).
    pub owner: InstanceId,
    /// Free-form tags (`tags`).
    pub tags: BTreeMap<String, String>,
    /// The life of the owner that stamped the record (`ownerIncarnation`, ours; absent
    /// in records written by the .NET system).
    pub owner_incarnation: Option<Incarnation>,
    /// When the ownership stamp last changed (`updatedAt`, ours; the stamper's wall
    /// clock).
    pub updated_at: Option<DateTime<Utc>>,
    /// Fields we do not know, kept and written back unchanged.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why bytes are not a connection record. Every variant names the record (its id when
/// the id could be read) and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionRecordError {
    /// The value is larger than [`MAX_CONNECTION_RECORD_BYTES`].
    #[error(
        "connection record is {len} bytes, more than the {max} allowed; the key holds something else or is corrupt"
    )]
    TooLarge {
        /// Size of the value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record has no owner (`instanceId` missing or `null`): nobody can say who
    /// holds the connection, so it is neither kept nor reclaimed.
    #[error("connection record {id:?} has no instanceId (owner); fix or delete the record")]
    MissingOwner {
        /// The record's id, as written.
        id: String,
    },
    /// The owner is not a valid instance id.
    #[error("connection record {id:?} has an invalid instanceId: {source}")]
    InvalidOwner {
        /// The record's id, as written.
        id: String,
        /// Why the owner is invalid.
        #[source]
        source: InstanceIdError,
    },
    /// The record's id is not the id its key names: a copy of another record (or a
    /// record written under the wrong key). Deciding on it could take another record's
    /// connection, so it is never decided on.
    #[error(
        "the record at connection id {at:?} says its id is {id:?}; a record must sit at its own id's key: fix or delete it"
    )]
    IdMismatch {
        /// The id the key names.
        at: String,
        /// The id the record names.
        id: String,
    },
    /// The record's id is missing or invalid.
    #[error("connection record has no valid id ({reason}); fix or delete the record")]
    InvalidId {
        /// What is wrong with it.
        reason: String,
    },
    /// The value does not parse as a connection record.
    #[error("connection record {} does not parse: {source}; expected camelCase JSON with id, url, createdAt and instanceId", id.as_deref().map_or_else(|| "(id unreadable)".to_owned(), |i| format!("{i:?}")))]
    Malformed {
        /// The record's id, if it could be read.
        id: Option<String>,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Serialization failed (should not happen for valid records).
    #[error("connection record {id:?} could not be serialized: {source}")]
    Serialize {
        /// The record's id.
        id: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

impl ConnectionRecord {
    /// A new record owned by `owner` (life `incarnation`; pass `Some`, so that a
    /// restart of the owner under the same id can be told apart), created at `now`
    /// (truncated to [`to_ticks`] precision, as it will be stored): status
    /// [`ConnectionStatus::Connecting`], auto-reconnect on, no topic, no tags.
    pub fn new(
        id: ConnectionId,
        url: impl Into<String>,
        owner: InstanceId,
        incarnation: Option<Incarnation>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            url: url.into(),
            status: ConnectionStatus::Connecting,
            topic: None,
            auto_reconnect: true,
            created_at: to_ticks(now),
            owner,
            tags: BTreeMap::new(),
            owner_incarnation: incarnation,
            updated_at: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Parses a record from stored bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConnectionRecordError> {
        if bytes.len() > MAX_CONNECTION_RECORD_BYTES {
            return Err(ConnectionRecordError::TooLarge {
                len: bytes.len(),
                max: MAX_CONNECTION_RECORD_BYTES,
            });
        }
        match serde_json::from_slice::<RawRecord>(bytes) {
            Ok(raw) => raw.validate(),
            Err(source) => Err(ConnectionRecordError::Malformed {
                id: id_hint(bytes),
                source,
            }),
        }
    }

    /// Parses the record stored at connection id `at` (the id its key names), and
    /// checks that the record says the same id ([`ConnectionRecordError::IdMismatch`]).
    /// Repositories read through this, so a stray copy of a record under another key
    /// is reported as invalid instead of being decided on.
    pub fn from_json_at(at: &str, bytes: &[u8]) -> Result<Self, ConnectionRecordError> {
        let record = Self::from_json(bytes)?;
        if record.id.as_str() != at {
            return Err(ConnectionRecordError::IdMismatch {
                at: at.to_owned(),
                id: record.id.as_str().to_owned(),
            });
        }
        Ok(record)
    }

    /// Serializes the record as the seed's readers expect: camelCase, `status` as an
    /// integer, timestamps in UTC with 7 fractional digits (.NET ticks) and `Z`, the
    /// seed's fields always present, ours only when set, unknown fields as read.
    pub fn to_json(&self) -> Result<Vec<u8>, ConnectionRecordError> {
        serde_json::to_vec(&WireOut::from(self)).map_err(|source| {
            ConnectionRecordError::Serialize {
                id: self.id.to_string(),
                source,
            }
        })
    }

    /// The record with its ownership changed to `owner` (life `incarnation`) at `at`
    /// (truncated to [`to_ticks`] precision, as it will be stored); every other field,
    /// known or unknown, is kept. This is the whole content of a claim.
    pub fn restamped(
        &self,
        owner: &InstanceId,
        incarnation: Incarnation,
        at: DateTime<Utc>,
    ) -> Self {
        let mut next = self.clone();
        next.owner = owner.clone();
        next.owner_incarnation = Some(incarnation);
        next.updated_at = Some(to_ticks(at));
        next
    }

    /// The latest ownership-relevant time the record carries: `updatedAt` if later than
    /// `createdAt`, else `createdAt`. Writer clocks, so only compared with margins.
    pub fn stamped_at(&self) -> DateTime<Utc> {
        match self.updated_at {
            Some(u) if u > self.created_at => u,
            _ => self.created_at,
        }
    }
}

/// The wire format of [`ConnectionRecord::to_json`].
impl Serialize for ConnectionRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireOut::from(self).serialize(s)
    }
}

/// The lenient reading of [`ConnectionRecord::from_json`] (without its size limit);
/// errors are the same, as messages.
impl<'de> Deserialize<'de> for ConnectionRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawRecord::deserialize(d)?
            .validate()
            .map_err(serde::de::Error::custom)
    }
}

/// `t` truncated to the precision records are stored with: 100 ns, the .NET `DateTime`
/// tick. A record read back from a store carries times at this precision; records made
/// by [`ConnectionRecord::new`] and [`ConnectionRecord::restamped`] already do, so they
/// compare equal to what a later read returns.
pub fn to_ticks(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos();
    t.with_nanosecond(nanos - nanos % 100).unwrap_or(t)
}

impl AsRef<ConnectionRecord> for ConnectionRecord {
    fn as_ref(&self) -> &ConnectionRecord {
        self
    }
}

/// A record together with the store version it had when read; pass it to
/// [`crate::ConnectionRepository::claim`] so that the claim is a compare-and-swap.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConnection {
    /// The record.
    pub record: ConnectionRecord,
    /// Its version at read time.
    pub version: Version,
}

impl AsRef<ConnectionRecord> for StoredConnection {
    fn as_ref(&self) -> &ConnectionRecord {
        &self.record
    }
}

// ---------------------------------------------------------------------------------
// Wire format.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRecord {
    #[serde(alias = "Id", default)]
    id: Option<String>,
    #[serde(alias = "Url")]
    url: String,
    #[serde(alias = "Status", default)]
    status: Option<ConnectionStatus>,
    #[serde(alias = "Topic", default)]
    topic: Option<String>,
    #[serde(alias = "AutoReconnect", default)]
    auto_reconnect: Option<bool>,
    #[serde(alias = "CreatedAt", deserialize_with = "timestamp::de")]
    created_at: DateTime<Utc>,
    #[serde(alias = "InstanceId", default)]
    instance_id: Option<String>,
    #[serde(alias = "Tags", default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(alias = "OwnerIncarnation", default)]
    owner_incarnation: Option<Incarnation>,
    #[serde(alias = "UpdatedAt", default, deserialize_with = "timestamp::de_opt")]
    updated_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl RawRecord {
    fn validate(self) -> Result<ConnectionRecord, ConnectionRecordError> {
        let raw_id = self.id.ok_or_else(|| ConnectionRecordError::InvalidId {
            reason: "the id field is missing or null".to_owned(),
        })?;
        let id =
            ConnectionId::new(raw_id.clone()).map_err(|e| ConnectionRecordError::InvalidId {
                reason: format!("{raw_id:?}: {e}"),
            })?;
        let owner = match self.instance_id {
            None => return Err(ConnectionRecordError::MissingOwner { id: raw_id }),
            Some(o) => InstanceId::new(o)
                .map_err(|source| ConnectionRecordError::InvalidOwner { id: raw_id, source })?,
        };
        Ok(ConnectionRecord {
            id,
            url: self.url,
            status: self.status.unwrap_or_default(),
            topic: self.topic,
            auto_reconnect: self.auto_reconnect.unwrap_or(false),
            created_at: self.created_at,
            owner,
            tags: self.tags.unwrap_or_default(),
            owner_incarnation: self.owner_incarnation,
            updated_at: self.updated_at,
            extra: self.extra,
        })
    }
}

/// The record's id, read as leniently as possible, to name it in errors.
fn id_hint(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(alias = "Id", default)]
        id: Option<serde_json::Value>,
    }
    let hint: IdOnly = serde_json::from_slice(bytes).ok()?;
    match hint.id? {
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    id: &'a ConnectionId,
    url: &'a str,
    status: ConnectionStatus,
    topic: &'a Option<String>,
    auto_reconnect: bool,
    #[serde(serialize_with = "timestamp::ser")]
    created_at: &'a DateTime<Utc>,
    instance_id: &'a InstanceId,
    tags: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_incarnation: Option<Incarnation>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "timestamp::ser_opt"
    )]
    updated_at: &'a Option<DateTime<Utc>>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> From<&'a ConnectionRecord> for WireOut<'a> {
    fn from(r: &'a ConnectionRecord) -> Self {
        Self {
            id: &r.id,
            url: &r.url,
            status: r.status,
            topic: &r.topic,
            auto_reconnect: r.auto_reconnect,
            created_at: &r.created_at,
            instance_id: &r.owner,
            tags: &r.tags,
            owner_incarnation: r.owner_incarnation,
            updated_at: &r.updated_at,
            extra: &r.extra,
        }
    }
}

/// Timestamps: read RFC 3339 with any offset and up to 9 fractional digits, or an ISO
/// 8601 date-time without offset (a .NET `DateTime` of unspecified kind), taken as UTC;
/// write UTC with exactly 7 fractional digits and `Z`, as .NET does (lossless for
/// .NET-written values, which have 100 ns ticks).
mod timestamp {
    use super::*;

    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(t.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|n| n.and_utc())
            .map_err(|e| format!("timestamp {s:?} is not ISO 8601 / RFC 3339 ({e})"))
    }

    pub fn format(t: &DateTime<Utc>) -> String {
        // A leap second (nanos >= 1e9) is written as the last tick of its second.
        let ticks = (t.timestamp_subsec_nanos() / 100).min(9_999_999);
        format!("{}.{ticks:07}Z", t.format("%Y-%m-%dT%H:%M:%S"))
    }

    pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
            .map(|s| parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    pub fn ser<S: Serializer>(t: &&DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn ser_opt<S: Serializer>(t: &&Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_none(),
        }
    }
}
