//! The .NET system's records (the shared test vectors) parse, and what we write is what
//! a .NET reader expects. The vectors are vendored in `tests/vectors/`; when the
//! project's `shared/vectors/` sits beside the checkout, the copies must match it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use heartbeat_core::{InstanceHeartbeat, InstanceStatus, index};

fn vendored(name: &str) -> Vec<u8> {
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
fn dotnet_camel_case_heartbeat_parses() {
    let hb = InstanceHeartbeat::from_json(&vendored("heartbeat-dotnet.json")).unwrap();
    assert_eq!(hb.instance_id.as_str(), "wsm-7d9f8c6b5-x2x9q");
    assert_eq!(hb.grpc_host_port.as_deref(), Some("10.244.1.17:5002"));
    assert_eq!(
        hb.last_seen_at.timestamp_subsec_nanos(),
        123_456_700,
        "7 fractional digits kept"
    );
    assert_eq!(
        (hb.incarnation, hb.sequence, hb.started_at),
        (None, None, None)
    );
    assert_eq!(hb.status, InstanceStatus::Alive);
}

#[test]
fn dotnet_pascal_case_heartbeat_parses() {
    let hb = InstanceHeartbeat::from_json(&vendored("heartbeat-dotnet-pascal.json")).unwrap();
    assert_eq!(hb.instance_id.as_str(), "wsm-7d9f8c6b5-k8m2p");
    assert_eq!(hb.grpc_host_port.as_deref(), Some("10.244.2.4:5002"));
    assert_eq!(hb.last_seen_at.timestamp_subsec_millis(), 500);
}

#[test]
fn dotnet_index_parses() {
    let set = index::decode(
        "websocketmanager/instances/_index",
        &vendored("index-dotnet.json"),
    )
    .unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.contains("wsm-7d9f8c6b5-x2x9q") && set.contains("wsm-7d9f8c6b5-k8m2p"));
}

#[test]
fn our_record_keeps_the_seed_fields_a_dotnet_reader_needs() {
    let ours = InstanceHeartbeat::from_json(&vendored("heartbeat-dotnet.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&ours.to_json().unwrap()).unwrap();
    assert_eq!(json["instanceId"], "wsm-7d9f8c6b5-x2x9q");
    assert_eq!(json["grpcHostPort"], "10.244.1.17:5002");
    let ts = json["lastSeenAt"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() <= "2026-11-30T09:41:07.1234567Z".len(),
        "{ts}"
    );
    // System.Text.Json reads at most 7 fractional digits.
    let fraction = ts.split('.').nth(1).unwrap().trim_end_matches('Z');
    assert!(fraction.len() <= 7);
}
