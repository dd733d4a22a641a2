//! How values and their versions are laid out in Redis.
//!
//! A value is stored as a plain Redis string at its own key, exactly as given (so
//! `redis-cli GET websocketmanager/instances/<id>` prints the camelCase JSON record, as
//! the seed system's tools expect). Its version lives beside it, in a *version key*:
//!
//! ```text
//! <key>                                   the value (plain string), PX ttl if any
//! heartbeat-version:{<tag>}<key>          the version token of that value, same PX ttl
//! ```
//!
//! `<tag>` is a decimal number that hashes to the same Cluster slot as `<key>` (see
//! [`crate::slots`]), so that the value and its version can be changed together by one
//! Lua script (or one `MULTI`/`EXEC` transaction) in Redis Cluster too. Both keys are
//! always written (and expire, and are deleted) together, atomically.
//!
//! A version token is 128 random bits (32 hex digits) drawn by the writer for every
//! write. It is therefore different for every write, also when the same bytes are
//! written again and when a key is deleted and re-created, and also after the server
//! lost its data in a restart without persistence (a counter would restart at zero and
//! could hand an old version out again). A value written by something else than this
//! crate (no version key) reads with the version [`UNTRACKED`]; a compare-and-swap on it
//! succeeds as long as no version key appeared, so such writers cannot be detected:
//! write through this crate, or delete the version key when writing around it.

use crate::slots;

/// Default prefix of the version keys.
pub const DEFAULT_VERSION_PREFIX: &str = "heartbeat-version:";

/// The version reported for a value that has no version key (written by another tool).
pub const UNTRACKED: &str = "untracked";

/// The version key of `key` under `prefix`: same Cluster slot as `key`.
pub fn version_key(prefix: &str, key: &str) -> String {
    let tag = slots::tag_for_slot(slots::slot(key.as_bytes()));
    format!("{prefix}{{{tag}}}{key}")
}

/// A fresh version token: 128 random bits as 32 hex digits.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_key_shares_the_slot_of_its_key() {
        for key in [
            "websocketmanager/instances/pod-1",
            "websocketmanager/instances/_index",
            "user{tagged}key",
            "odd}key{",
            "ümlaut",
        ] {
            let v = version_key(DEFAULT_VERSION_PREFIX, key);
            assert!(v.starts_with(DEFAULT_VERSION_PREFIX) && v.ends_with(key));
            assert_eq!(
                slots::slot(v.as_bytes()),
                slots::slot(key.as_bytes()),
                "{v}"
            );
        }
    }

    #[test]
    fn tokens_differ() {
        let a = new_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_token());
    }
}
