//! Fuzzing the parsers with proptest: arbitrary bytes and mutated valid records give an
//! error or a value, never a panic; whatever parses round-trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heartbeat_core::{InstanceHeartbeat, InstanceId, index};
use proptest::prelude::*;

const VALID: &[u8] = br#"{"instanceId":"wsm-1","lastSeenAt":"2026-11-30T09:41:07.1234567Z","grpcHostPort":"10.0.0.1:5002","incarnation":"00000000000000ff","sequence":3,"startedAt":"2026-11-30T09:00:00Z","status":"alive"}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn heartbeat_parser_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(hb) = InstanceHeartbeat::from_json(&bytes) {
            let again = InstanceHeartbeat::from_json(&hb.to_json().unwrap()).unwrap();
            prop_assert_eq!(again.instance_id, hb.instance_id);
        }
    }

    #[test]
    fn heartbeat_parser_survives_mutations_of_a_valid_record(
        edits in proptest::collection::vec((0usize..VALID.len(), any::<u8>()), 1..8),
        cut in 0usize..=VALID.len(),
    ) {
        let mut bytes = VALID.to_vec();
        for (at, b) in edits {
            bytes[at] = b;
        }
        bytes.truncate(cut.max(1));
        let _ = InstanceHeartbeat::from_json(&bytes);
    }

    #[test]
    fn index_parser_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = index::decode("k", &bytes);
    }

    #[test]
    fn index_round_trips_any_set(members in proptest::collection::btree_set("\\PC{0,40}", 0..50)) {
        let bytes = index::encode("k", &members).unwrap();
        prop_assert_eq!(index::decode("k", &bytes).unwrap(), members);
    }

    #[test]
    fn instance_ids_are_total(s in "\\PC{0,300}|[\\x00-\\x7f]{0,300}") {
        let _ = InstanceId::new(s);
    }
}
