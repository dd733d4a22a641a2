//! The heartbeat record: what one instance publishes about itself.
//!
//! The wire shape is the seed system's (`instanceId`, `lastSeenAt`, `grpcHostPort`,
//! camelCase, written by System.Text.Json) plus our own optional fields. Readers are
//! lenient in the ways the seed's writers differ (PascalCase names, 7 fractional digits,
//! missing extension fields, unknown fields) and strict about everything else: a record
//! that does not parse is an error, never a panic and never "probably alive".

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::InstanceId;

/// Largest heartbeat record we agree to parse. Real records are a few hundred bytes;
/// anything this large is corrupt or hostile.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// One life of a process: a random value chosen at every process start.
///
/// Two records with the same [`InstanceId`] but different incarnations belong to two
/// different lives (a pod restarted under the same host name): the older life has ended,
/// and whatever it owned may be reclaimed. Serialized as 16 lowercase hex digits so that
/// JavaScript and .NET readers never round it through a double.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(u64);

impl Incarnation {
    /// A fresh random incarnation.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// An incarnation with a chosen value (tests, simulations).
    pub const fn from_u64(v: u64) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Incarnation({self})")
    }
}

impl std::str::FromStr for Incarnation {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Self)
    }
}

impl Serialize for Incarnation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Incarnation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!("incarnation {s:?} is not 1-16 hex digits"))
        })
    }
}

/// What the writer says about its own life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Running and serving. Records without a status (the .NET writer) are alive.
    #[default]
    Alive,
    /// Shutting down gracefully: its life has ended, its connections may be taken.
    Leaving,
    /// A status written by a newer version of the protocol. Treated as alive, never as
    /// ended: we do not take connections on a word we do not understand.
    #[serde(other)]
    Unknown,
}

/// A heartbeat record as stored at `websocketmanager/instances/<id>`.
///
/// ```
/// use heartbeat_core::InstanceHeartbeat;
/// let raw = br#"{"instanceId":"wsm-1","lastSeenAt":"2026-11-30T09:41:07.1234567Z","grpcHostPort":"10.0.0.1:5002"}"#;
/// let hb = InstanceHeartbeat::from_json(raw)?;
/// assert_eq!(hb.instance_id.as_str(), "wsm-1");
/// assert!(hb.incarnation.is_none()); // written by the .NET system
/// # Ok::<(), heartbeat_core::RecordError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceHeartbeat {
    /// The instance this record belongs to.
    #[serde(alias = "InstanceId")]
    pub instance_id: InstanceId,
    /// The writer's wall clock at publish time. A hint, never the judge of liveness.
    #[serde(alias = "LastSeenAt", with = "rfc3339")]
    pub last_seen_at: DateTime<Utc>,
    /// Where peers reach this instance (`host:port`). The .NET writer may write `null`.
    #[serde(alias = "GrpcHostPort", default)]
    pub grpc_host_port: Option<String>,
    /// The life this record belongs to; absent in records of the .NET writer.
    #[serde(
        alias = "Incarnation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub incarnation: Option<Incarnation>,
    /// Incremented at every publish within one incarnation.
    #[serde(alias = "Sequence", default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// When this incarnation started (writer's clock).
    #[serde(
        alias = "StartedAt",
        default,
        with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// Alive or leaving.
    #[serde(alias = "Status", default)]
    pub status: InstanceStatus,
}

/// Why bytes are not a heartbeat record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The value is larger than [`MAX_RECORD_BYTES`].
    #[error(
        "heartbeat record is {len} bytes, more than the {max} allowed; the key holds something else or is corrupt"
    )]
    TooLarge {
        /// Size of the value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is not a valid heartbeat record.
    #[error(
        "heartbeat record does not parse: {0}; expected camelCase JSON with instanceId and lastSeenAt"
    )]
    Malformed(#[source] serde_json::Error),
    /// Serialization failed (should not happen for valid records).
    #[error("heartbeat record could not be serialized: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl InstanceHeartbeat {
    /// Parses a record from stored bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge {
                len: bytes.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        serde_json::from_slice(bytes).map_err(RecordError::Malformed)
    }

    /// Serializes the record as the seed's readers expect: camelCase, `lastSeenAt` in
    /// RFC 3339 UTC with a trailing `Z`.
    pub fn to_json(&self) -> Result<Vec<u8>, RecordError> {
        serde_json::to_vec(self).map_err(RecordError::Serialize)
    }

    /// What changes at every publish: observers compare it to see that the writer lives.
    /// For .NET records (no incarnation or sequence) the timestamp is all that changes.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            incarnation: self.incarnation,
            sequence: self.sequence,
            last_seen_at: self.last_seen_at,
        }
    }
}

/// The part of a record that changes at every publish (see [`InstanceHeartbeat::fingerprint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The writer's incarnation, if it writes one.
    pub incarnation: Option<Incarnation>,
    /// The writer's sequence, if it writes one.
    pub sequence: Option<u64>,
    /// The writer's timestamp.
    pub last_seen_at: DateTime<Utc>,
}

/// Writes timestamps as RFC 3339 UTC with microseconds and `Z` (System.Text.Json reads
/// up to 7 fractional digits); reads any RFC 3339 offset and up to 9 fractional digits.
mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("timestamp {s:?} is not RFC 3339 ({e})"))
    }
}

mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.map(|s| rfc3339::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstanceHeartbeat {
        InstanceHeartbeat {
            instance_id: InstanceId::new("pod-1").unwrap(),
            last_seen_at: "2026-11-30T09:41:07.123456Z".parse().unwrap(),
            grpc_host_port: Some("10.0.0.1:5002".into()),
            incarnation: Some(Incarnation::from_u64(0xabc)),
            sequence: Some(7),
            started_at: Some("2026-11-30T09:00:00Z".parse().unwrap()),
            status: InstanceStatus::Alive,
        }
    }

    #[test]
    fn writes_camel_case_with_seed_fields() {
        let json: serde_json::Value = serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        assert_eq!(json["instanceId"], "pod-1");
        assert_eq!(json["lastSeenAt"], "2026-11-30T09:41:07.123456Z");
        assert_eq!(json["grpcHostPort"], "10.0.0.1:5002");
        assert_eq!(json["incarnation"], "0000000000000abc");
        assert_eq!(json["sequence"], 7);
        assert_eq!(json["startedAt"], "2026-11-30T09:00:00.000000Z");
        assert_eq!(json["status"], "alive");
    }

    #[test]
    fn round_trips() {
        let hb = sample();
        assert_eq!(
            InstanceHeartbeat::from_json(&hb.to_json().unwrap()).unwrap(),
            hb
        );
    }

    #[test]
    fn reads_nine_fractional_digits_and_offsets() {
        let raw = br#"{"instanceId":"a","lastSeenAt":"2026-11-30T10:41:07.123456789+01:00"}"#;
        let hb = InstanceHeartbeat::from_json(raw).unwrap();
        assert_eq!(
            hb.last_seen_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
            "2026-11-30T09:41:07.123456789Z"
        );
        assert_eq!(hb.grpc_host_port, None);
    }

    #[test]
    fn ignores_unknown_fields_and_accepts_unknown_status() {
        let raw = br#"{"instanceId":"a","lastSeenAt":"2026-11-30T09:41:07Z","zone":"eu","status":"draining"}"#;
        let hb = InstanceHeartbeat::from_json(raw).unwrap();
        assert_eq!(hb.status, InstanceStatus::Unknown);
    }

    #[test]
    fn malformed_input_is_an_error() {
        for raw in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"{\"instanceId\":\"a\"}",
            b"{\"instanceId\":\"a/b\",\"lastSeenAt\":\"2026-11-30T09:41:07Z\"}",
            b"{\"instanceId\":\"a\",\"lastSeenAt\":\"yesterday\"}",
            b"{\"instanceId\":\"a\",\"lastSeenAt\":\"2026-11-30T09:41:07Z\",\"incarnation\":\"xyz\"}",
            b"{\"instanceId\":\"a\",\"lastSeenAt\":\"2026-11-30T09:41:07Z\",\"sequence\":-1}",
        ] {
            assert!(matches!(InstanceHeartbeat::from_json(raw), Err(RecordError::Malformed(_))), "{raw:?}");
        }
        let huge = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            InstanceHeartbeat::from_json(&huge),
            Err(RecordError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = InstanceHeartbeat::from_json(&bytes);
        }

        #[test]
        fn arbitrary_json_text_never_panics(s in "\\{(\"[a-zA-Z]{1,12}\":(\"[^\"]{0,40}\"|[0-9]{1,20}|null|true),?){0,8}\\}") {
            let _ = InstanceHeartbeat::from_json(s.as_bytes());
        }
    }
}
