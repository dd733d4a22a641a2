//! How our value bytes become a Dapr state `value`, and back.
//!
//! The Dapr state API stores JSON values, and daprd does not keep their bytes: it
//! parses the `value` into Go values and writes it again, so object keys are reordered
//! (sorted by the in-memory component, in map order by the Redis component), numbers
//! become `float64` (`1.0` reads as `1`, large integers lose digits) and `<`, `>`, `&`
//! come back escaped. The seed (.NET) system reads our records as JSON objects, so they
//! must be stored as JSON, not as JSON strings.
//!
//! The rule:
//! - **JSON form**: bytes that are compact JSON as `serde_json` writes it (no
//!   insignificant whitespace, `serde_json`'s string escaping, no duplicate object keys,
//!   numbers only integers within ±2^53, so they survive `float64`) are sent as the raw
//!   JSON `value`. Reads return the value re-serialized compactly **with object keys
//!   sorted**: equal as JSON to what was written, and byte-identical when the object
//!   keys were already sorted (arrays, scalars, single-key objects always are). Heartbeat
//!   records and the index take this path, so the seed reads them. Connection records
//!   are always stored as JSON ([`DaprStore::put_json`](crate::DaprStore::put_json)),
//!   even with fields daprd changes (floats, huge integers); reads normalize those the
//!   way daprd does, so versions stay consistent.
//! - **Text form**: everything else (plain text such as `value-3`, pretty-printed or
//!   differently escaped JSON, floats, non-UTF-8 bytes) is stored as a JSON string
//!   that starts with a marker (`"\u0000heartbeat:text:"` followed by the text, or
//!   `"\u0000heartbeat:hex:"` followed by hex for bytes that are not UTF-8). Reads
//!   return exactly the bytes written.
//!
//! A JSON string value that itself starts with the marker is stored in text form too,
//! so reading is never ambiguous. Values written by others (the .NET system) are read
//! as JSON form.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The prefix of every marked value (a NUL, so that no real record starts with it).
pub(crate) const MARKER: &str = "\u{0}heartbeat:";
const TEXT: &str = "\u{0}heartbeat:text:";
const HEX: &str = "\u{0}heartbeat:hex:";

/// Largest integer that a `float64` holds exactly.
const MAX_EXACT_INT: u64 = 1 << 53;

/// A JSON value that keeps the order of object keys (serde_json's `Value` sorts them).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Whether daprd keeps this value's meaning exactly: no duplicate keys, only
    /// integers a `float64` holds.
    fn survives_dapr(&self) -> bool {
        match self {
            Json::Null | Json::Bool(_) | Json::Str(_) => true,
            Json::Num(n) => {
                if let Some(u) = n.as_u64() {
                    u <= MAX_EXACT_INT
                } else if let Some(i) = n.as_i64() {
                    i.unsigned_abs() <= MAX_EXACT_INT
                } else {
                    false
                }
            }
            Json::Arr(items) => items.iter().all(Json::survives_dapr),
            Json::Obj(fields) => {
                let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                let unique = keys.windows(2).all(|w| w[0] != w[1]);
                unique && fields.iter().all(|(_, v)| v.survives_dapr())
            }
        }
    }

    /// The form a read returns: object keys sorted, integers a `float64` cannot hold
    /// as daprd turns them into (so our write and daprd's copy normalize alike).
    fn normalize(&mut self) {
        match self {
            Json::Arr(items) => items.iter_mut().for_each(Json::normalize),
            Json::Obj(fields) => {
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                fields.iter_mut().for_each(|(_, v)| v.normalize());
            }
            Json::Num(n) => {
                let big = n.as_u64().is_some_and(|u| u > MAX_EXACT_INT)
                    || n.as_i64().is_some_and(|i| i.unsigned_abs() > MAX_EXACT_INT);
                if big && let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                    *n = f;
                }
            }
            _ => {}
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Num(n) => n.serialize(s),
            Json::Str(v) => s.serialize_str(v),
            Json::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Obj(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Num(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Num(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(v)
                    .map(Json::Num)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    fields.push((k, v));
                }
                Ok(Json::Obj(fields))
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

/// Whether `bytes` are stored as JSON (see the module docs) rather than as marked text.
pub(crate) fn is_json_form(bytes: &[u8]) -> bool {
    let Ok(parsed) = serde_json::from_slice::<Json>(bytes) else {
        return false;
    };
    if let Json::Str(s) = &parsed
        && s.starts_with(MARKER)
    {
        return false;
    }
    if !parsed.survives_dapr() {
        return false;
    }
    serde_json::to_vec(&parsed).is_ok_and(|again| again == bytes)
}

/// The JSON text to send as the Dapr `value` for `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    if is_json_form(bytes) {
        // Checked above: valid UTF-8 JSON.
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let marked = match std::str::from_utf8(bytes) {
        Ok(text) => format!("{TEXT}{text}"),
        Err(_) => format!("{HEX}{}", hex(bytes)),
    };
    // Serializing a string cannot fail; fall back to an empty string literal anyway.
    serde_json::to_string(&marked).unwrap_or_else(|_| String::from("\"\""))
}

/// The JSON text to send for bytes that must be stored as JSON whatever their form
/// (connection records, which the seed reads): the bytes themselves when they are JSON
/// (reads then return them normalized, see [`decode`]), else marked text.
pub(crate) fn encode_as_json(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Str(s)) if s.starts_with(MARKER) => encode(bytes),
        Ok(_) => String::from_utf8_lossy(bytes).into_owned(),
        Err(_) => encode(bytes),
    }
}

/// The bytes a read returns for a `value` daprd gives back (the body of a GET, or
/// `data` of a bulk item). Errors describe a marked value that does not decode.
pub(crate) fn decode(body: &[u8]) -> Result<Vec<u8>, String> {
    let Ok(mut parsed) = serde_json::from_slice::<Json>(body) else {
        // Not JSON: written by something that bypassed the JSON API; give it as is.
        return Ok(body.to_vec());
    };
    if let Json::Str(s) = &parsed {
        if let Some(text) = s.strip_prefix(TEXT) {
            return Ok(text.as_bytes().to_vec());
        }
        if let Some(digits) = s.strip_prefix(HEX) {
            return unhex(digits).ok_or_else(|| {
                "a hex-marked value holds characters that are not hex digits".to_owned()
            });
        }
    }
    parsed.normalize();
    serde_json::to_vec(&parsed).map_err(|e| format!("the value could not be re-serialized ({e})"))
}

/// What a read of `bytes` returns after they were written (see the module docs).
#[cfg(test)]
pub(crate) fn stored_form(bytes: &[u8]) -> Vec<u8> {
    decode(encode(bytes).as_bytes()).unwrap_or_else(|_| bytes.to_vec())
}

/// A 64-bit FNV-1a hash: a stable fingerprint of a value, part of version tokens on
/// components whose ETags repeat.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(digits: &str) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> Vec<u8> {
        decode(encode(bytes).as_bytes()).unwrap()
    }

    #[test]
    fn records_are_stored_as_json_objects() {
        let record = br#"{"instanceId":"a","lastSeenAt":"2026-11-30T09:41:07.1234567Z","grpcHostPort":"10.0.0.1:5002","sequence":7}"#;
        assert!(is_json_form(record));
        let sent: serde_json::Value = serde_json::from_str(&encode(record)).unwrap();
        assert_eq!(sent["instanceId"], "a");
        // Read back equal as JSON, keys sorted.
        let back: serde_json::Value = serde_json::from_slice(&round_trip(record)).unwrap();
        assert_eq!(
            back,
            serde_json::from_slice::<serde_json::Value>(record).unwrap()
        );
    }

    #[test]
    fn sorted_compact_json_round_trips_byte_for_byte() {
        for v in [
            &br#"["a","b"]"#[..],
            b"1",
            b"-42",
            br#""hello""#,
            b"null",
            br#"{"a":[1,{"x":true}],"b":"\u0001"}"#,
            r#"{"note":"é中😀"}"#.as_bytes(),
        ] {
            assert!(is_json_form(v), "{}", String::from_utf8_lossy(v));
            assert_eq!(round_trip(v), v);
        }
    }

    #[test]
    fn everything_else_round_trips_as_marked_text() {
        for v in [
            &b"value-3"[..],
            b"",
            b"v4",
            br#"{"instanceId":"a","note":"\u00e9\u4e2d\ud83d\ude00"}"#,
            b"{ \"a\": 1 }",
            b"1.0",
            b"1e2",
            b"12345678901234567890",
            br#"{"a":1,"a":2}"#,
            b"\"\\u0000heartbeat:text:x\"",
            b"\xff\x00\xfe",
            b"1 ",
        ] {
            assert!(!is_json_form(v), "{}", String::from_utf8_lossy(v));
            let sent: serde_json::Value = serde_json::from_str(&encode(v)).unwrap();
            assert!(sent.as_str().unwrap().starts_with(MARKER));
            assert_eq!(round_trip(v), v, "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn values_as_daprd_rewrites_them_decode_to_the_stored_form() {
        // daprd's Redis component writes keys in map order and escapes '<'.
        let written = br#"{"b":"<x>","a":2}"#;
        let from_daprd = br#"{"a":2,"b":"\u003cx\u003e"}"#;
        assert_eq!(decode(from_daprd).unwrap(), stored_form(written));
        assert_eq!(stored_form(written), br#"{"a":2,"b":"<x>"}"#);
    }

    #[test]
    fn big_integers_normalize_like_daprd_writes_them() {
        let ours = br#"{"n":12345678901234567890123,"f":1.5}"#;
        let from_daprd = br#"{"f":1.5,"n":1.2345678901234568e+22}"#;
        let forced = encode_as_json(ours);
        assert_eq!(forced.as_bytes(), ours);
        assert_eq!(
            decode(forced.as_bytes()).unwrap(),
            decode(from_daprd).unwrap()
        );
    }

    #[test]
    fn corrupt_hex_is_reported() {
        assert!(decode(b"\"\\u0000heartbeat:hex:zz\"").is_err());
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }
}
