//! The connection record: the .NET vector parses, unknown fields survive a rewrite,
//! PascalCase and 9 fractional digits are read, and broken records are errors that name
//! the record. The vector is vendored in `tests/vectors/`; when the project's
//! `shared/vectors/` sits beside the checkout, the copy must match it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use chrono::{SecondsFormat, Utc};
use common::*;
use proptest::prelude::*;
use reclaimer::{ConnectionRecord, ConnectionRecordError, ConnectionStatus};
use serde_json::{Value, json};

fn vector() -> Vec<u8> {
    let name = "connection-dotnet.json";
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors")
        .join(name);
    if let Ok(original) = std::fs::read(&shared) {
        assert_eq!(
            bytes,
            original,
            "tests/vectors/{name} differs from {}",
            shared.display()
        );
    }
    bytes
}

#[test]
fn the_dotnet_vector_parses() {
    let r = ConnectionRecord::from_json(&vector()).unwrap();
    assert_eq!(r.id.as_str(), "3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c");
    assert_eq!(r.url, "wss://feed.example.test/stream");
    assert_eq!(r.status, ConnectionStatus::Connected);
    assert_eq!(r.topic.as_deref(), Some("quotes.eurusd"));
    assert!(r.auto_reconnect);
    assert_eq!(
        r.created_at.timestamp_subsec_nanos(),
        100,
        "7th fractional digit kept"
    );
    assert_eq!(r.owner.as_str(), "wsm-7d9f8c6b5-x2x9q");
    assert_eq!(r.tags.get("desk").map(String::as_str), Some("fx"));
    assert_eq!((r.owner_incarnation, r.updated_at), (None, None));
    assert!(r.extra.is_empty());
}

#[test]
fn rewriting_the_dotnet_vector_changes_nothing() {
    let original: Value = serde_json::from_slice(&vector()).unwrap();
    let r = ConnectionRecord::from_json(&vector()).unwrap();
    let written: Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
    assert_eq!(written, original);
}

#[test]
fn a_claim_keeps_every_field_and_unknown_ones() {
    let mut raw: Value = serde_json::from_slice(&vector()).unwrap();
    raw["retryPolicy"] = json!({"maxAttempts": 5, "backoff": [1, 2, 4]});
    raw["lastMessageAt"] = json!("2026-11-30T09:31:00.1234567Z");
    raw["nullable"] = Value::Null;
    let r = ConnectionRecord::from_json(&serde_json::to_vec(&raw).unwrap()).unwrap();
    let at = "2026-11-30T10:00:00.5Z".parse().unwrap();
    let claimed = r.restamped(&iid("pod-b"), inc(0xabc), at);
    let written: Value = serde_json::from_slice(&claimed.to_json().unwrap()).unwrap();
    let mut expected = raw.clone();
    expected["instanceId"] = json!("pod-b");
    expected["ownerIncarnation"] = json!("0000000000000abc");
    expected["updatedAt"] = json!("2026-11-30T10:00:00.5000000Z");
    assert_eq!(written, expected);
}

#[test]
fn pascal_case_and_nine_fractional_digits_are_read() {
    let raw = br#"{"Id":"c-1","Url":"wss://x.test","Status":3,"Topic":null,"AutoReconnect":false,
        "CreatedAt":"2026-11-30T10:30:00.123456789+01:00","InstanceId":"pod-a","Tags":{"a":"b"},
        "OwnerIncarnation":"00000000000000ff","UpdatedAt":"2026-11-30T09:31:00Z","Extra":1}"#;
    let r = ConnectionRecord::from_json(raw).unwrap();
    assert_eq!(r.status, ConnectionStatus::Reconnecting);
    assert_eq!(r.topic, None);
    assert_eq!(
        r.created_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        "2026-11-30T09:30:00.123456789Z"
    );
    assert_eq!(r.owner_incarnation, Some(inc(255)));
    assert!(r.updated_at.is_some());
    assert_eq!(r.extra.get("Extra"), Some(&json!(1)));
    // Written back in camelCase (System.Text.Json's web defaults read it case-insensitively).
    let written: Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
    assert_eq!(written["instanceId"], "pod-a");
    assert_eq!(written["createdAt"], "2026-11-30T09:30:00.1234567Z");
    assert_eq!(written["Extra"], 1);
}

#[test]
fn timestamps_without_offset_are_utc_and_status_names_are_read() {
    let raw = br#"{"id":"c","url":"u","status":"Connecting","createdAt":"2026-11-30T09:30:00.1234567","instanceId":"p"}"#;
    let r = ConnectionRecord::from_json(raw).unwrap();
    assert_eq!(r.status, ConnectionStatus::Connecting);
    assert_eq!(
        r.created_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        "2026-11-30T09:30:00.123456700Z"
    );
    assert_eq!(r.status.as_i64(), 1);
}

#[test]
fn serde_impls_match_from_json_and_to_json() {
    let r: ConnectionRecord = serde_json::from_slice(&vector()).unwrap();
    assert_eq!(r, ConnectionRecord::from_json(&vector()).unwrap());
    assert_eq!(serde_json::to_vec(&r).unwrap(), r.to_json().unwrap());
    let e = serde_json::from_str::<ConnectionRecord>(
        r#"{"id":"conn-80","url":"u","createdAt":"2026-11-30T09:30:00Z"}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("conn-80"), "{e}");
}

#[test]
fn unknown_status_values_survive_a_rewrite() {
    let raw =
        br#"{"id":"c","url":"u","status":42,"createdAt":"2026-11-30T09:30:00Z","instanceId":"p"}"#;
    let r = ConnectionRecord::from_json(raw).unwrap();
    assert_eq!(r.status, ConnectionStatus::Other(42));
    let written: Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
    assert_eq!(written["status"], 42);
}

#[test]
fn a_record_without_an_owner_is_an_error_that_names_it() {
    for raw in [
        &br#"{"id":"conn-77","url":"u","status":2,"createdAt":"2026-11-30T09:30:00Z"}"#[..],
        br#"{"id":"conn-77","url":"u","status":2,"createdAt":"2026-11-30T09:30:00Z","instanceId":null}"#,
    ] {
        let e = ConnectionRecord::from_json(raw).unwrap_err();
        assert!(matches!(&e, ConnectionRecordError::MissingOwner { id } if id == "conn-77"), "{e:?}");
        assert!(e.to_string().contains("conn-77"), "{e}");
    }
    let e = ConnectionRecord::from_json(
        br#"{"id":"conn-78","url":"u","createdAt":"2026-11-30T09:30:00Z","instanceId":"a/b"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ConnectionRecordError::InvalidOwner { id, .. } if id == "conn-78"),
        "{e:?}"
    );
}

#[test]
fn malformed_records_are_errors_naming_the_record_when_possible() {
    let e = ConnectionRecord::from_json(
        br#"{"id":"conn-79","url":"u","createdAt":"yesterday","instanceId":"p"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ConnectionRecordError::Malformed { id: Some(id), .. } if id == "conn-79"),
        "{e:?}"
    );
    assert!(e.to_string().contains("conn-79"));
    for raw in [&b""[..], b"{", b"null", b"[]", b"{\"url\":\"u\"}"] {
        assert!(ConnectionRecord::from_json(raw).is_err(), "{raw:?}");
    }
    let e = ConnectionRecord::from_json(
        br#"{"url":"u","createdAt":"2026-11-30T09:30:00Z","instanceId":"p"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(e, ConnectionRecordError::InvalidId { .. }),
        "{e:?}"
    );
    let huge = vec![b' '; reclaimer::connection::MAX_CONNECTION_RECORD_BYTES + 1];
    assert!(matches!(
        ConnectionRecord::from_json(&huge),
        Err(ConnectionRecordError::TooLarge { .. })
    ));
}

#[test]
fn new_records_round_trip() {
    let mut r = record("c-9", "pod-a", Some(3), Utc::now());
    r.updated_at = Some(Utc::now());
    r.tags.insert("desk".into(), "fx".into());
    let back = ConnectionRecord::from_json(&r.to_json().unwrap()).unwrap();
    // Written with 100 ns precision, like .NET.
    assert_eq!(
        back.created_at.timestamp_subsec_nanos(),
        r.created_at.timestamp_subsec_nanos() / 100 * 100
    );
    assert_eq!(
        (back.id, back.owner, back.owner_incarnation, back.tags),
        (r.id, r.owner, r.owner_incarnation, r.tags)
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ConnectionRecord::from_json(&bytes);
    }

    #[test]
    fn arbitrary_json_objects_never_panic(s in "\\{(\"(id|url|status|createdAt|instanceId|tags|topic|[a-zA-Z]{1,8})\":(\"[^\"]{0,30}\"|-?[0-9]{1,20}|null|true|\\{\\}|\\[\\]),?){0,9}\\}") {
        let _ = ConnectionRecord::from_json(s.as_bytes());
    }

    #[test]
    fn unknown_fields_always_survive_a_claim(
        extra in proptest::collection::btree_map("x[a-zA-Z0-9]{0,10}", prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[^\"\\\\]{0,20}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ], 0..8),
    ) {
        let mut raw: Value = serde_json::from_slice(&vector()).unwrap();
        for (k, v) in &extra {
            raw[k] = v.clone();
        }
        let r = ConnectionRecord::from_json(&serde_json::to_vec(&raw).unwrap()).unwrap();
        let claimed = r.restamped(&iid("pod-z"), inc(1), Utc::now());
        let written: Value = serde_json::from_slice(&claimed.to_json().unwrap()).unwrap();
        for (k, v) in &extra {
            prop_assert_eq!(&written[k], v);
        }
        for k in ["id", "url", "status", "topic", "autoReconnect", "createdAt", "tags"] {
            prop_assert_eq!(&written[k], &raw[k]);
        }
    }
}
