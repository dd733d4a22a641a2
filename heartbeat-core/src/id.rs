//! Instance identifiers, validated once at construction.
//!
//! An [`InstanceId`] names one replica. In the seed system it is the pod's host name
//! (falling back to a GUID), and it becomes part of a store key
//! (`websocketmanager/instances/<id>`). Validating it once, as a type, means no key built
//! from it can escape its prefix, collide with the index key or smuggle a separator into
//! a record, and no code further down has to check again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id accepted, in bytes: the longest DNS name, which is what host names are.
pub const MAX_INSTANCE_ID_BYTES: usize = 253;

/// A validated instance identifier (a host name, a pod name, a GUID).
///
/// Rules: not empty, at most [`MAX_INSTANCE_ID_BYTES`] bytes, no control characters,
/// no whitespace, no `/`, no `||`, and not starting with `_` (so `_index` can never be
/// an instance).
///
/// ```
/// use heartbeat_core::InstanceId;
/// let id: InstanceId = "wsm-7d9f8c6b5-x2x9q".parse()?;
/// assert_eq!(id.as_str(), "wsm-7d9f8c6b5-x2x9q");
/// assert!("_index".parse::<InstanceId>().is_err());
/// # Ok::<(), heartbeat_core::InstanceIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(String);

/// Why a string is not a valid [`InstanceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceIdError {
    /// The id was empty.
    #[error("instance id is empty: set HOSTNAME or pass a non-empty id")]
    Empty,
    /// The id is longer than [`MAX_INSTANCE_ID_BYTES`].
    #[error("instance id is {len} bytes long; at most {max} bytes are allowed (a DNS name)")]
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id contains a control character (newline, tab, NUL, ...).
    #[error(
        "instance id contains a control character (U+{code:04X}) at byte {at}; use a host name or a GUID"
    )]
    ControlCharacter {
        /// Byte offset of the character.
        at: usize,
        /// The character's code point.
        code: u32,
    },
    /// The id contains whitespace.
    #[error("instance id contains whitespace at byte {at}; use a host name or a GUID")]
    Whitespace {
        /// Byte offset of the character.
        at: usize,
    },
    /// The id contains `/`, which would change the key's path.
    #[error("instance id contains '/' at byte {at}; '/' separates store key segments")]
    Slash {
        /// Byte offset of the character.
        at: usize,
    },
    /// The id contains `||`, the separator of Dapr's composite keys.
    #[error("instance id contains '||' at byte {at}; Dapr uses '||' to separate app id and key")]
    DoublePipe {
        /// Byte offset of the separator.
        at: usize,
    },
    /// The id starts with `_`, reserved for protocol keys such as `_index`.
    #[error(
        "instance id '{0}' starts with '_', which is reserved for protocol keys such as '_index'"
    )]
    Reserved(String),
}

impl InstanceId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InstanceIdError> {
        let id = id.into();
        validate(&id)?;
        Ok(Self(id))
    }

    /// A random id (a UUID-shaped hex string), the seed's fallback when `HOSTNAME` is unset.
    pub fn random() -> Self {
        let bits: u128 = rand::random();
        let hex = format!("{bits:032x}");
        Self(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ))
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

fn validate(id: &str) -> Result<(), InstanceIdError> {
    if id.is_empty() {
        return Err(InstanceIdError::Empty);
    }
    if id.len() > MAX_INSTANCE_ID_BYTES {
        return Err(InstanceIdError::TooLong {
            len: id.len(),
            max: MAX_INSTANCE_ID_BYTES,
        });
    }
    for (at, c) in id.char_indices() {
        if c.is_control() {
            return Err(InstanceIdError::ControlCharacter {
                at,
                code: u32::from(c),
            });
        }
        if c.is_whitespace() {
            return Err(InstanceIdError::Whitespace { at });
        }
        if c == '/' {
            return Err(InstanceIdError::Slash { at });
        }
    }
    if let Some(at) = id.find("||") {
        return Err(InstanceIdError::DoublePipe { at });
    }
    if id.starts_with('_') {
        return Err(InstanceIdError::Reserved(id.to_owned()));
    }
    Ok(())
}

impl FromStr for InstanceId {
    type Err = InstanceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for InstanceId {
    type Error = InstanceIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_guids_pass() {
        for ok in [
            "wsm-7d9f8c6b5-x2x9q",
            "3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c",
            "node.example.com",
            "a",
            "a:b",
            "a|b",
        ] {
            assert!(InstanceId::new(ok).is_ok(), "{ok}");
        }
        assert!(InstanceId::new(InstanceId::random().into_string()).is_ok());
    }

    #[test]
    fn each_bad_id_has_a_distinct_readable_error() {
        let cases = [
            ("", "empty"),
            ("_index", "reserved"),
            ("a/b", "'/'"),
            ("a||b", "'||'"),
            ("a\nb", "control character"),
            ("a b", "whitespace"),
        ];
        let mut seen = Vec::new();
        for (input, needle) in cases {
            let err = InstanceId::new(input).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(needle), "{input:?}: {text}");
            seen.push(std::mem::discriminant(&err));
        }
        let long = "a".repeat(300);
        let err = InstanceId::new(long).unwrap_err();
        assert_eq!(err, InstanceIdError::TooLong { len: 300, max: 253 });
        assert!(err.to_string().contains("300 bytes"));
        seen.push(std::mem::discriminant(&err));
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(unique.len(), seen.len());
    }

    #[test]
    fn exactly_253_bytes_pass() {
        assert!(InstanceId::new("a".repeat(253)).is_ok());
        assert!(InstanceId::new("a".repeat(254)).is_err());
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<InstanceId>("\"a/b\"").is_err());
        let id: InstanceId = serde_json::from_str("\"pod-1\"").unwrap();
        assert_eq!(id.as_str(), "pod-1");
    }

    proptest::proptest! {
        #[test]
        fn accepted_ids_never_contain_forbidden_parts(s in "\\PC{0,300}") {
            if let Ok(id) = InstanceId::new(s.clone()) {
                proptest::prop_assert!(!id.as_str().contains('/'));
                proptest::prop_assert!(!id.as_str().contains("||"));
                proptest::prop_assert!(!id.as_str().starts_with('_'));
                proptest::prop_assert!(id.as_str().len() <= MAX_INSTANCE_ID_BYTES);
                proptest::prop_assert!(!id.as_str().is_empty());
            }
        }
    }
}
