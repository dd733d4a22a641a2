//! The contract of [`ConnectionRepository`], as functions any implementation's tests
//! can call (the Redis and Dapr repositories run the same ones as
//! [`MemoryConnections`](crate::MemoryConnections)).
//!
//! Each check panics with a message naming the broken rule. Each starts by emptying the
//! repository through the trait (scan, then delete), so give it a repository of its
//! own (a fresh key prefix, a flushed database). [`run_all`] runs every check.
//!
//! ```
//! # async fn demo() {
//! let repo = reclaimer::MemoryConnections::new();
//! reclaimer::conformance::run_all(&repo).await;
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
//! ```

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use heartbeat_core::{DeleteMode, Incarnation, InstanceId, PutMode};

use crate::connection::{ConnectionId, ConnectionRecord, StoredConnection};
use crate::repository::{Claim, ClaimOutcome, ConnectionRepository, RepositoryError, ScanCursor};

fn at() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_000_000, 123_456_700).unwrap_or_default()
}

fn owner(s: &str) -> InstanceId {
    match InstanceId::new(s) {
        Ok(id) => id,
        Err(e) => panic!("test id {s:?}: {e}"),
    }
}

fn cid(s: &str) -> ConnectionId {
    match ConnectionId::new(s) {
        Ok(id) => id,
        Err(e) => panic!("test id {s:?}: {e}"),
    }
}

fn sample(id: &str, by: &str) -> ConnectionRecord {
    let mut r = ConnectionRecord::new(
        cid(id),
        format!("wss://feed.example.test/{id}"),
        owner(by),
        None,
        at(),
    );
    r.topic = Some("quotes.eurusd".into());
    r.tags.insert("desk".into(), "fx".into());
    r.extra
        .insert("dotnetOnly".into(), serde_json::json!({"kept": [1, 2, 3]}));
    r
}

fn ok<T>(what: &str, r: Result<T, RepositoryError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// Every record, following the scan to its end.
pub async fn scan_all(repo: &dyn ConnectionRepository, limit: usize) -> Vec<StoredConnection> {
    let mut out = Vec::new();
    let mut cursor: Option<ScanCursor> = None;
    for _ in 0..1_000_000 {
        let page = ok("scan", repo.scan(cursor.as_ref(), limit).await);
        out.extend(page.records);
        match page.next {
            Some(next) => {
                assert_ne!(
                    Some(&next),
                    cursor.as_ref(),
                    "scan returned the cursor it was given"
                );
                cursor = Some(next);
            }
            None => return out,
        }
    }
    panic!("scan did not end after a million pages");
}

/// Deletes every record (through the trait).
pub async fn clear(repo: &dyn ConnectionRepository) {
    for r in scan_all(repo, 100).await {
        ok(
            "delete",
            repo.delete(&r.record.id, DeleteMode::Unconditional).await,
        );
    }
}

/// Runs every check, clearing the repository before each.
pub async fn run_all(repo: &dyn ConnectionRepository) {
    put_get_round_trip(repo).await;
    get_missing_is_none(repo).await;
    create_conflicts_when_present(repo).await;
    stale_version_is_a_conflict(repo).await;
    delete_honours_versions(repo).await;
    versions_are_unique_across_recreate(repo).await;
    claim_restamps_and_keeps_everything_else(repo).await;
    claim_with_a_stale_version_is_a_conflict(repo).await;
    concurrent_claims_have_one_winner(repo).await;
    scan_returns_every_record(repo).await;
}

/// A record written is read back equal, with the version the write returned.
pub async fn put_get_round_trip(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("rt-1", "pod-a");
    let v = ok("put", repo.put(&r, PutMode::Overwrite).await);
    let got =
        ok("get", repo.get(&r.id).await).unwrap_or_else(|| panic!("record written but not found"));
    assert_eq!(
        got.record, r,
        "record read back differs from the one written"
    );
    assert_eq!(got.version, v, "get returned another version than put");
}

/// Getting a missing record is `Ok(None)`.
pub async fn get_missing_is_none(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    assert!(
        ok("get", repo.get(&cid("missing")).await).is_none(),
        "a missing record was found"
    );
}

/// `create` of a present record is a conflict and changes nothing.
pub async fn create_conflicts_when_present(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("cr-1", "pod-a");
    let first = ok("create", repo.create(&r).await);
    let other = sample("cr-1", "pod-b");
    match repo.create(&other).await {
        Err(RepositoryError::Conflict { id }) => assert_eq!(id, r.id),
        other => panic!("create of a present record: expected Conflict, got {other:?}"),
    }
    let got = ok("get", repo.get(&r.id).await).unwrap_or_else(|| panic!("record vanished"));
    assert_eq!(
        got.version, first.version,
        "a failed create changed the record"
    );
    assert_eq!(got.record.owner, r.owner);
}

/// An update on an old version, or on a missing record, is a conflict.
pub async fn stale_version_is_a_conflict(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("sv-1", "pod-a");
    let v1 = ok("create", repo.create(&r).await).version;
    let v2 = ok("update", repo.put(&r, PutMode::Update(v1.clone())).await);
    assert_ne!(v1, v2, "an update must return a new version");
    assert!(
        matches!(
            repo.put(&r, PutMode::Update(v1.clone())).await,
            Err(RepositoryError::Conflict { .. })
        ),
        "update with a stale version must be a Conflict"
    );
    ok(
        "delete",
        repo.delete(&r.id, DeleteMode::Unconditional).await,
    );
    assert!(
        matches!(
            repo.put(&r, PutMode::Update(v2)).await,
            Err(RepositoryError::Conflict { .. })
        ),
        "update of a deleted record must be a Conflict"
    );
    assert!(
        ok("get", repo.get(&r.id).await).is_none(),
        "a failed update re-created the record"
    );
}

/// Conditional deletes check the version; unconditional deletes of missing records
/// succeed.
pub async fn delete_honours_versions(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("del-1", "pod-a");
    let v1 = ok("create", repo.create(&r).await).version;
    let v2 = ok("update", repo.put(&r, PutMode::Update(v1.clone())).await);
    assert!(
        matches!(
            repo.delete(&r.id, DeleteMode::IfVersion(v1)).await,
            Err(RepositoryError::Conflict { .. })
        ),
        "delete with a stale version must be a Conflict"
    );
    ok(
        "delete",
        repo.delete(&r.id, DeleteMode::IfVersion(v2.clone())).await,
    );
    assert!(ok("get", repo.get(&r.id).await).is_none());
    assert!(
        matches!(
            repo.delete(&r.id, DeleteMode::IfVersion(v2)).await,
            Err(RepositoryError::Conflict { .. })
        ),
        "conditional delete of a missing record must be a Conflict"
    );
    ok(
        "delete missing",
        repo.delete(&r.id, DeleteMode::Unconditional).await,
    );
}

/// A version read before a delete never matches the re-created record.
pub async fn versions_are_unique_across_recreate(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("uq-1", "pod-a");
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        let v = ok("create", repo.create(&r).await).version;
        assert!(
            seen.insert(v.as_str().to_owned()),
            "version {v} was returned twice"
        );
        ok(
            "delete",
            repo.delete(&r.id, DeleteMode::Unconditional).await,
        );
    }
    let v = ok("create", repo.create(&r).await).version;
    for old in &seen {
        assert!(
            matches!(
                repo.put(
                    &r,
                    PutMode::Update(heartbeat_core::Version::new(old.clone()))
                )
                .await,
                Err(RepositoryError::Conflict { .. })
            ),
            "a version of a deleted record matched the re-created one"
        );
    }
    assert!(!seen.contains(v.as_str()));
}

/// A claim changes `instanceId`, `ownerIncarnation` and `updatedAt` only.
pub async fn claim_restamps_and_keeps_everything_else(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("cl-1", "pod-a");
    let current = ok("create", repo.create(&r).await);
    let claim = Claim {
        owner: owner("pod-b"),
        incarnation: Incarnation::from_u64(0xfeed),
        at: at(),
    };
    let won = match ok("claim", repo.claim(&current, &claim).await) {
        ClaimOutcome::Won(w) => w,
        ClaimOutcome::Conflict => panic!("claim on the current version lost"),
    };
    let got = ok("get", repo.get(&r.id).await).unwrap_or_else(|| panic!("claimed record vanished"));
    assert_eq!(
        got, won,
        "the claim's result differs from the stored record"
    );
    let mut expected = r.clone();
    expected.owner = claim.owner.clone();
    expected.owner_incarnation = Some(claim.incarnation);
    expected.updated_at = Some(claim.at);
    assert_eq!(
        got.record, expected,
        "a claim changed more than the ownership stamp"
    );
}

/// A claim on a version that is no longer current is a conflict and writes nothing.
pub async fn claim_with_a_stale_version_is_a_conflict(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("cl-2", "pod-a");
    let stale = ok("create", repo.create(&r).await);
    let mut touched = r.clone();
    touched.status = crate::ConnectionStatus::Reconnecting;
    ok(
        "update",
        repo.put(&touched, PutMode::Update(stale.version.clone()))
            .await,
    );
    let claim = Claim {
        owner: owner("pod-b"),
        incarnation: Incarnation::from_u64(1),
        at: at(),
    };
    assert_eq!(
        ok("claim", repo.claim(&stale, &claim).await),
        ClaimOutcome::Conflict,
        "a claim on a stale version must be a Conflict"
    );
    let got = ok("get", repo.get(&r.id).await).unwrap_or_else(|| panic!("record vanished"));
    assert_eq!(
        got.record.owner, r.owner,
        "a conflicting claim changed the owner"
    );
    ok(
        "delete",
        repo.delete(&r.id, DeleteMode::Unconditional).await,
    );
    assert_eq!(
        ok("claim", repo.claim(&stale, &claim).await),
        ClaimOutcome::Conflict,
        "a claim on a deleted record must be a Conflict"
    );
    assert!(
        ok("get", repo.get(&r.id).await).is_none(),
        "a claim re-created a deleted record"
    );
}

/// Many claimers holding the same version: exactly one wins.
pub async fn concurrent_claims_have_one_winner(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let r = sample("cl-3", "pod-a");
    let current = ok("create", repo.create(&r).await);
    let claims: Vec<Claim> = (0..16)
        .map(|i| Claim {
            owner: owner(&format!("pod-{i}")),
            incarnation: Incarnation::from_u64(i),
            at: at(),
        })
        .collect();
    let outcomes = futures::future::join_all(claims.iter().map(|c| repo.claim(&current, c))).await;
    let mut winners = Vec::new();
    for (c, o) in claims.iter().zip(outcomes) {
        if let ClaimOutcome::Won(_) = ok("claim", o) {
            winners.push(c.owner.clone());
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "claims on one version: winners {winners:?}"
    );
    let got = ok("get", repo.get(&r.id).await).unwrap_or_else(|| panic!("record vanished"));
    assert_eq!(
        got.record.owner, winners[0],
        "the stored owner is not the winner"
    );
}

/// Scans in pages of any size return every record (at least once, nothing else).
pub async fn scan_returns_every_record(repo: &dyn ConnectionRepository) {
    clear(repo).await;
    let mut expected = BTreeSet::new();
    for i in 0..37 {
        let r = sample(&format!("scan-{i:02}"), "pod-a");
        ok("create", repo.create(&r).await);
        expected.insert(r.id.to_string());
    }
    for limit in [1, 7, 36, 37, 1000] {
        let got: BTreeSet<String> = scan_all(repo, limit)
            .await
            .into_iter()
            .map(|r| r.record.id.to_string())
            .collect();
        assert_eq!(got, expected, "scan with limit {limit}");
    }
}
