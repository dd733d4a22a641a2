//! The connection repository on DynamoDB (moto_server): records, claims, scans, TTL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use common::{ManualClock, table_store};
use heartbeat_core::{DeleteMode, Incarnation, InstanceId, PutMode, Store};
use reclaimer::{
    Claim, ClaimOutcome, ConnectionId, ConnectionRecord, ConnectionRepository, InvalidRecord,
    RepositoryError, StoredConnection,
};

use heartbeat_dynamodb::DynamoConnections;

/// The .NET writer's record (reclaimer/tests/vectors/connection-dotnet.json) plus a field
/// we do not know.
const DOTNET_RECORD: &str = r#"{"id":"3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c","url":"wss://feed.example.test/stream","status":2,"topic":"quotes.eurusd","autoReconnect":true,"createdAt":"2026-11-30T09:30:00.0000001Z","instanceId":"wsm-7d9f8c6b5-x2x9q","tags":{"desk":"fx"},"zone":"eu-1"}"#;

/// A repository under its own random prefix in the shared table.
async fn repository() -> Option<DynamoConnections> {
    let store = table_store().await?;
    let prefix = format!("{}websocket-", heartbeat_conformance::namespace("conn"));
    Some(DynamoConnections::new(store).with_prefix(prefix))
}

/// Now, at the precision records keep (the wire format has 100 ns ticks).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn id(s: &str) -> ConnectionId {
    s.parse().unwrap()
}

fn instance(s: &str) -> InstanceId {
    s.parse().unwrap()
}

fn record(conn: &str, owner: &str) -> ConnectionRecord {
    ConnectionRecord::new(
        id(conn),
        "wss://x.test",
        instance(owner),
        Some(Incarnation::from_u64(1)),
        now(),
    )
}

fn claim_by(owner: &str, life: u64) -> Claim {
    Claim {
        owner: instance(owner),
        incarnation: Incarnation::from_u64(life),
        at: now(),
    }
}

/// The repository contract every implementation runs (reclaimer::conformance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_contract_holds() {
    let Some(repo) = repository().await else {
        return;
    };
    reclaimer::conformance::run_all(&repo).await;
}

/// Every page of a scan.
async fn scan_all(
    repo: &DynamoConnections,
    limit: usize,
) -> (Vec<StoredConnection>, Vec<InvalidRecord>) {
    let (mut records, mut invalid) = (Vec::new(), Vec::new());
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = repo.scan(cursor.as_ref(), limit).await.unwrap();
        records.extend(page.records);
        invalid.extend(page.invalid);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (records, invalid),
        }
    }
    panic!("the scan does not end");
}

#[tokio::test]
async fn records_round_trip_and_a_claim_is_won_once() {
    let Some(repo) = repository().await else {
        return;
    };
    let conn = id("3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c");
    // A record as the .NET system writes it, unknown field included.
    repo.store()
        .put(
            &repo.key_of(&conn),
            DOTNET_RECORD.as_bytes().to_vec(),
            PutMode::Create,
            None,
        )
        .await
        .unwrap();
    let current = repo.get(&conn).await.unwrap().expect("record present");
    assert_eq!(current.record.owner.as_str(), "wsm-7d9f8c6b5-x2x9q");
    assert_eq!(current.record.owner_incarnation, None);

    let won = match repo.claim(&current, &claim_by("pod-b", 7)).await.unwrap() {
        ClaimOutcome::Won(w) => w,
        other => panic!("expected to win, got {other:?}"),
    };
    assert_ne!(won.version, current.version);
    // Another claimer holding the old version loses, and changes nothing.
    assert_eq!(
        repo.claim(&current, &claim_by("pod-c", 9)).await.unwrap(),
        ClaimOutcome::Conflict
    );
    let now = repo.get(&conn).await.unwrap().unwrap();
    assert_eq!(now.version, won.version);
    assert_eq!(now.record.owner.as_str(), "pod-b");
    assert_eq!(now.record.owner_incarnation, Some(Incarnation::from_u64(7)));
    assert_eq!(now.record.extra.get("zone"), Some(&"eu-1".into()));
    assert_eq!(now.record.tags.get("desk").map(String::as_str), Some("fx"));

    // Conditional delete on a stale version conflicts; on the current one it deletes.
    assert!(matches!(
        repo.delete(&conn, DeleteMode::IfVersion(current.version))
            .await,
        Err(RepositoryError::Conflict { .. })
    ));
    repo.delete(&conn, DeleteMode::IfVersion(now.version))
        .await
        .unwrap();
    assert_eq!(repo.get(&conn).await.unwrap(), None);
    repo.delete(&conn, DeleteMode::Unconditional).await.unwrap();
}

#[tokio::test]
async fn scan_pages_through_every_record_and_reports_invalid_ones() {
    let Some(repo) = repository().await else {
        return;
    };
    let mut expected = BTreeSet::new();
    for i in 0..23 {
        let conn = format!("c-{i:02}");
        repo.create(&record(&conn, "pod-a")).await.unwrap();
        expected.insert(conn);
    }
    let broken = id("broken");
    repo.store()
        .put(
            &repo.key_of(&broken),
            b"{not json".to_vec(),
            PutMode::Overwrite,
            None,
        )
        .await
        .unwrap();
    // Items outside the prefix (heartbeats, other tenants) are not returned.
    let outside = repo.key_of(&id("x")).replace("websocket-", "websocket");
    repo.store()
        .put(&outside, b"{}".to_vec(), PutMode::Overwrite, None)
        .await
        .unwrap();

    let (records, invalid) = scan_all(&repo, 7).await;
    let seen: BTreeSet<String> = records.iter().map(|r| r.record.id.to_string()).collect();
    assert_eq!(seen, expected);
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert_eq!(invalid[0].key, repo.key_of(&broken));
    assert!(matches!(
        repo.get(&broken).await,
        Err(RepositoryError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn records_with_a_ttl_expire_on_every_path() {
    let Some(store) = table_store().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new());
    let prefix = format!("{}websocket-", heartbeat_conformance::namespace("conn-ttl"));
    let repo = DynamoConnections::new(store.with_clock(clock.clone()))
        .with_prefix(prefix)
        .with_ttl(Duration::from_secs(300));
    let current = repo.create(&record("c-ttl", "pod-a")).await.unwrap();
    clock.advance(Duration::from_secs(299));
    // A claim is a write: it refreshes the TTL.
    let ClaimOutcome::Won(won) = repo.claim(&current, &claim_by("pod-b", 2)).await.unwrap() else {
        panic!("claim lost")
    };
    clock.advance(Duration::from_secs(299));
    assert_eq!(repo.get(&id("c-ttl")).await.unwrap(), Some(won.clone()));
    clock.advance(Duration::from_secs(1));
    assert_eq!(repo.get(&id("c-ttl")).await.unwrap(), None);
    assert!(scan_all(&repo, 100).await.0.is_empty());
    assert_eq!(
        repo.claim(&won, &claim_by("pod-c", 3)).await.unwrap(),
        ClaimOutcome::Conflict,
        "an expired record cannot be claimed"
    );
    // It can be created again.
    repo.create(&record("c-ttl", "pod-d")).await.unwrap();
}
