//! Redis Cluster hash slots, and the version key that lives in the same slot as its
//! value key.
//!
//! Redis Cluster refuses a command or script whose keys hash to different slots. Every
//! value this crate writes has a companion *version key* (see [`crate::layout`]), and
//! both are changed together by one Lua script, so the two must share a slot whatever
//! the value key looks like. The version key therefore carries a hash tag chosen for
//! the value key's slot: `{<tag>}` where `<tag>` is the smallest decimal number whose
//! CRC16 falls in that slot. The table of tags is computed once and is the same on every
//! client (it depends only on CRC16).

use std::sync::OnceLock;

/// Number of hash slots in Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses it.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The byte-at-a-time table of CRC16/XMODEM.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The part of `key` that Redis hashes: the content of the first `{...}` if it is not
/// empty, else the whole key.
fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The hash slot of `key`, as Redis Cluster computes it.
pub fn slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// A hash tag (without braces) whose slot is `slot`: the smallest decimal number that
/// hashes there.
pub fn tag_for_slot(slot: u16) -> u32 {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        let mut n: u32 = 0;
        while missing > 0 {
            let s = usize::from(crc16(n.to_string().as_bytes()) % SLOTS);
            if tags[s] == u32::MAX {
                tags[s] = n;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    tags[usize::from(slot % SLOTS)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn crc16_matches_the_redis_reference_value() {
        // From the Redis Cluster specification: CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_the_redis_client() {
        for key in [
            "websocketmanager/instances/pod-1",
            "websocketmanager/instances/_index",
            "a{b}c",
            "{}x",
            "{x",
            "x}{",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "ümlaut",
            "",
        ] {
            assert_eq!(
                Slot::new(slot(key.as_bytes())),
                Some(Slot::for_key(key)),
                "{key:?}"
            );
        }
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for s in 0..SLOTS {
            let tag = tag_for_slot(s);
            assert_eq!(slot(format!("v:{{{tag}}}anything").as_bytes()), s);
        }
    }
}
