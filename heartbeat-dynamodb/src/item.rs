//! The item layout: one item per store key, in a table whose partition key is `pk`.
//!
//! | attribute | type | meaning |
//! |-----------|------|---------|
//! | `pk`      | S    | the store key (`websocketmanager/instances/pod-1`) |
//! | `val`     | B    | the value, raw bytes |
//! | `ver`     | N    | the version: a random 64-bit number drawn for every write |
//! | `exp_ms`  | N    | precise expiry, epoch milliseconds (only with a TTL) |
//! | `ttl`     | N    | the same expiry in epoch seconds, rounded up: DynamoDB's TTL attribute |
//! | `members` | SS   | index items only: the set of instance ids |
//!
//! DynamoDB deletes items some time after `ttl` passes (often minutes, up to days).
//! Liveness never waits for that: reads treat an item whose `exp_ms` has passed as
//! missing, and conditional writes treat it as absent.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use heartbeat_core::{StoreError, StoreResult, Version, Versioned};

/// Partition key attribute (String).
pub const KEY: &str = "pk";
/// Value attribute (Binary).
pub const VALUE: &str = "val";
/// Version attribute (Number).
pub const VERSION: &str = "ver";
/// Precise expiry attribute, epoch milliseconds (Number).
pub const EXPIRES_MS: &str = "exp_ms";
/// DynamoDB TTL attribute, epoch seconds (Number).
pub const TTL: &str = "ttl";
/// Index set attribute (String Set).
pub const MEMBERS: &str = "members";

/// DynamoDB's item size limit (400 KB, attribute names included).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's partition key limit.
pub const MAX_KEY_BYTES: usize = 2048;
/// The largest value we accept: the item limit less room for the longest key and the
/// other attributes (names and numbers take under 100 bytes), rounded down to 4 KiB.
pub const MAX_VALUE_BYTES: usize = MAX_ITEM_BYTES - 4 * 1024;

/// An upper bound of the size DynamoDB counts for an item: attribute names plus values
/// (strings as UTF-8, binary as raw bytes, numbers as one byte per character, which is
/// more than DynamoDB's ~1 byte per 2 digits).
pub fn item_size_bound(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
                    _ => 0,
                }
        })
        .sum()
}

/// Expression attribute names used by every expression (`ttl` is a reserved word).
pub(crate) fn names() -> HashMap<String, String> {
    [
        ("#pk", KEY),
        ("#val", VALUE),
        ("#ver", VERSION),
        ("#exp", EXPIRES_MS),
        ("#ttl", TTL),
        ("#m", MEMBERS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Only the names an expression uses (DynamoDB rejects unused ones).
pub(crate) fn names_for(expression: &str) -> HashMap<String, String> {
    names()
        .into_iter()
        .filter(|(k, _)| uses(expression, k))
        .collect()
}

fn uses(expression: &str, placeholder: &str) -> bool {
    expression.match_indices(placeholder).any(|(i, _)| {
        !expression[i + placeholder.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Condition: the item is absent or expired.
pub(crate) const ABSENT: &str = "attribute_not_exists(#pk) OR #exp <= :now";
/// Condition: the item holds version `:expected` and has not expired.
pub(crate) const AT_VERSION: &str =
    "#ver = :expected AND (attribute_not_exists(#exp) OR #exp > :now)";

/// Rejects keys DynamoDB cannot store as a partition key.
pub(crate) fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "DynamoDB partition keys cannot be empty".to_owned(),
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: format!(
                "it is {} bytes; DynamoDB partition keys are at most {MAX_KEY_BYTES}",
                key.len()
            ),
        });
    }
    Ok(())
}

/// The key of `key`'s item.
pub(crate) fn key_of(key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(KEY.to_owned(), AttributeValue::S(key.to_owned()))])
}

/// A new version: random, so unique across writers, deletes and re-creates (two writes
/// of one key collide with probability 2^-64).
pub(crate) fn new_version() -> u64 {
    rand::random::<u64>()
}

/// A number attribute.
pub(crate) fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// Expiry of a value written at `now_ms` with `ttl`: (`exp_ms`, `ttl` seconds rounded up).
pub(crate) fn expiry(now_ms: i64, ttl: Duration) -> (i64, i64) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let exp_ms = now_ms.saturating_add(ttl_ms);
    (
        exp_ms,
        exp_ms.div_euclid(1000) + i64::from(exp_ms.rem_euclid(1000) != 0),
    )
}

/// A full item for a put.
pub(crate) fn value_item(
    key: &str,
    value: Vec<u8>,
    version: u64,
    expiry: Option<(i64, i64)>,
) -> HashMap<String, AttributeValue> {
    let mut item = key_of(key);
    item.insert(
        VALUE.to_owned(),
        AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(value)),
    );
    item.insert(VERSION.to_owned(), number(version));
    if let Some((exp_ms, ttl_s)) = expiry {
        item.insert(EXPIRES_MS.to_owned(), number(exp_ms));
        item.insert(TTL.to_owned(), number(ttl_s));
    }
    item
}

/// Whether an item's precise expiry has passed at `now_ms`.
pub(crate) fn is_expired(item: &HashMap<String, AttributeValue>, now_ms: i64) -> StoreResult<bool> {
    match item.get(EXPIRES_MS) {
        None => Ok(false),
        Some(AttributeValue::N(n)) => n
            .parse::<i64>()
            .map(|exp| exp <= now_ms)
            .map_err(|_| corrupt_of(item, format!("{EXPIRES_MS} is not an integer: {n:?}"))),
        Some(_) => Err(corrupt_of(item, format!("{EXPIRES_MS} is not a number"))),
    }
}

/// The version attribute of an item, as its token.
pub(crate) fn version_of(item: &HashMap<String, AttributeValue>) -> Option<&str> {
    match item.get(VERSION) {
        Some(AttributeValue::N(n)) => Some(n),
        _ => None,
    }
}

/// Decodes an item read at `now_ms`: `None` when it has expired.
pub(crate) fn decode(
    item: &HashMap<String, AttributeValue>,
    now_ms: i64,
) -> StoreResult<Option<Versioned>> {
    if is_expired(item, now_ms)? {
        return Ok(None);
    }
    let value = match item.get(VALUE) {
        Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
        Some(AttributeValue::S(s)) => s.clone().into_bytes(),
        Some(_) => {
            return Err(corrupt_of(
                item,
                format!("{VALUE} is neither binary nor a string"),
            ));
        }
        None if item.contains_key(MEMBERS) || item.len() == 1 => {
            return Err(corrupt_of(
                item,
                "the item holds an index set, not a value; read it with index_members".to_owned(),
            ));
        }
        None => {
            return Err(corrupt_of(
                item,
                format!("the item has no {VALUE} attribute"),
            ));
        }
    };
    let version = version_of(item)
        .ok_or_else(|| corrupt_of(item, format!("the item has no numeric {VERSION} attribute")))?;
    Ok(Some(Versioned {
        value,
        version: Version::new(version),
    }))
}

/// The members of an index item (empty when absent).
pub(crate) fn members_of(
    index_key: &str,
    item: Option<&HashMap<String, AttributeValue>>,
) -> StoreResult<std::collections::BTreeSet<String>> {
    match item.and_then(|i| i.get(MEMBERS)) {
        None => Ok(Default::default()),
        Some(AttributeValue::Ss(set)) => Ok(set.iter().cloned().collect()),
        Some(_) => Err(StoreError::Corrupt {
            key: index_key.to_owned(),
            reason: format!("attribute {MEMBERS} is not a string set"),
        }),
    }
}

fn corrupt_of(item: &HashMap<String, AttributeValue>, reason: String) -> StoreError {
    let key = match item.get(KEY) {
        Some(AttributeValue::S(k)) => k.clone(),
        _ => "<unknown>".to_owned(),
    };
    StoreError::Corrupt { key, reason }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ttl_seconds_round_up_so_dynamodb_never_deletes_early() {
        assert_eq!(expiry(1_000, Duration::from_millis(1_000)), (2_000, 2));
        assert_eq!(expiry(1_000, Duration::from_millis(1_001)), (2_001, 3));
        assert_eq!(expiry(0, Duration::from_millis(1)), (1, 1));
        assert_eq!(expiry(i64::MAX - 1, Duration::from_secs(10)).0, i64::MAX);
    }

    #[test]
    fn expired_items_decode_as_missing() {
        let item = value_item("k", b"v".to_vec(), 7, Some((5_000, 5)));
        let live = decode(&item, 4_999).unwrap().unwrap();
        assert_eq!(live.value, b"v");
        assert_eq!(live.version, Version::new("7"));
        assert_eq!(decode(&item, 5_000).unwrap(), None);
        let forever = value_item("k", b"v".to_vec(), 8, None);
        assert!(decode(&forever, i64::MAX).unwrap().is_some());
    }

    #[test]
    fn index_items_are_not_values() {
        let mut item = key_of("idx");
        item.insert(MEMBERS.to_owned(), AttributeValue::Ss(vec!["a".to_owned()]));
        let err = decode(&item, 0).unwrap_err().to_string();
        assert!(err.contains("index_members"), "{err}");
        assert!(members_of("idx", Some(&item)).unwrap().contains("a"));
        assert!(members_of("idx", None).unwrap().is_empty());
    }

    #[test]
    fn placeholders_are_matched_whole() {
        assert!(uses("#ver = :v", "#ver"));
        assert!(!uses("#verx = :v", "#ver"));
        assert!(uses("SET #m = :m", "#m"));
        assert_eq!(
            names_for(ABSENT)
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            ["#exp".to_owned(), "#pk".to_owned()].into()
        );
    }

    #[test]
    fn the_largest_value_with_the_longest_key_fits_in_an_item() {
        let key = "k".repeat(MAX_KEY_BYTES);
        let item = value_item(
            &key,
            vec![0; MAX_VALUE_BYTES],
            u64::MAX,
            Some((i64::MAX, i64::MAX)),
        );
        let size = item_size_bound(&item);
        assert!(size <= MAX_ITEM_BYTES, "{size} > {MAX_ITEM_BYTES}");
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
