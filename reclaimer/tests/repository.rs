//! `MemoryConnections` keeps the repository contract (the shared conformance checks),
//! and reports values that do not parse without failing the scan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use heartbeat_core::DeleteMode;
use reclaimer::conformance;
use reclaimer::{ConnectionRecordError, ConnectionRepository, MemoryConnections, RepositoryError};

#[tokio::test]
async fn memory_connections_keep_the_repository_contract() {
    conformance::run_all(&MemoryConnections::new()).await;
}

#[tokio::test]
async fn clones_share_records() {
    let a = MemoryConnections::new();
    let b = a.clone();
    a.create(&record("c1", "pod-a", None, ago(1)))
        .await
        .unwrap();
    assert!(b.get(&cid("c1")).await.unwrap().is_some());
    assert_eq!(b.len(), 1);
}

#[tokio::test]
async fn scans_report_values_that_do_not_parse_with_their_keys() {
    let repo = MemoryConnections::new();
    repo.create(&record("good", "pod-a", None, ago(1)))
        .await
        .unwrap();
    repo.put_raw(
        "ownerless",
        br#"{"id":"ownerless","url":"u","createdAt":"2026-11-30T09:30:00Z"}"#.to_vec(),
    );
    repo.put_raw("junk", b"not json".to_vec());
    let page = repo.scan(None, 10).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].record.id.as_str(), "good");
    let mut invalid: Vec<(String, bool)> = page
        .invalid
        .iter()
        .map(|i| {
            (
                i.key.clone(),
                matches!(&i.error, ConnectionRecordError::MissingOwner { id } if id == "ownerless"),
            )
        })
        .collect();
    invalid.sort();
    assert_eq!(
        invalid,
        vec![
            ("websocket-junk".to_owned(), false),
            ("websocket-ownerless".to_owned(), true)
        ]
    );
    assert!(page.next.is_none());
    match repo.get(&cid("ownerless")).await {
        Err(RepositoryError::Corrupt { key, .. }) => assert_eq!(key, "websocket-ownerless"),
        other => panic!("{other:?}"),
    }
    repo.delete(&cid("junk"), DeleteMode::Unconditional)
        .await
        .unwrap();
    assert_eq!(repo.len(), 2);
}
