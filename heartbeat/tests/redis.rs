//! The `heartbeat` binary on a real Redis: agents, `members`, crash and graceful-stop
//! detection, `/healthz` when Redis goes away, and an unreachable store.
//!
//! Needs `redis-server` on PATH: fails in CI (`CI=true`) without it, skips elsewhere.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use assert_cmd::Command;
use common::{Running, bin, eventually, free_port, prefix, wait_http};
use heartbeat::Incarnation;
use heartbeat::reclaimer::{ConnectionId, ConnectionRecord, ConnectionRepository};
use heartbeat::redis::{RedisConnections, RedisStore};
use heartbeat_conformance::support::{redis, require};
use serde_json::Value;

/// Threshold (1 s) + discovery (250 ms), with room for a loaded machine.
const DETECT: Duration = Duration::from_secs(8);
const START: Duration = Duration::from_secs(15);

fn members_json(url: &str, prefix: &str) -> Value {
    let out = Command::from_std(bin())
        .args([
            "members",
            "--store",
            url,
            "--prefix",
            prefix,
            "--json",
            "--stale-threshold",
            "1s",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_of(v: &Value, id: &str) -> Option<String> {
    v["instances"]
        .as_array()?
        .iter()
        .find(|i| i["instanceId"] == id)
        .map(|i| i["status"].as_str().unwrap_or("?").to_owned())
}

fn watch(url: &str, prefix: &str) -> Running {
    Running::start(
        "members --watch",
        &[
            "members",
            "--store",
            url,
            "--prefix",
            prefix,
            "--watch",
            "--discovery-interval",
            "250ms",
            "--stale-threshold",
            "1s",
        ],
    )
}

#[test]
fn two_agents_are_listed_by_members() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let url = server.url();
    let prefix = prefix();
    let (p1, p2) = (free_port(), free_port());
    let _a = Running::agent(
        "node-a",
        &url,
        &prefix,
        p1,
        &["--advertise", "10.0.0.1:5002"],
    );
    let _b = Running::agent("node-b", &url, &prefix, p2, &[]);
    wait_http(p1, "/readyz", START, |s, _| s == 200);
    wait_http(p2, "/readyz", START, |s, _| s == 200);

    let v = eventually("both agents alive in members --json", START, || {
        let v = members_json(&url, &prefix);
        (status_of(&v, "node-a").as_deref() == Some("alive")
            && status_of(&v, "node-b").as_deref() == Some("alive"))
        .then_some(v)
    });
    let a = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instanceId"] == "node-a")
        .unwrap();
    assert_eq!(a["grpcHostPort"], "10.0.0.1:5002");
    assert_eq!(a["ageClock"], "writer");
    assert_eq!(a["incarnation"].as_str().unwrap().len(), 16);

    let out = Command::from_std(bin())
        .args(["members", "--store", &url, "--prefix", &prefix])
        .assert()
        .success()
        .get_output()
        .clone();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-a") && l.contains("alive")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-b") && l.contains("alive")),
        "{table}"
    );

    // Each agent sees the other.
    wait_http(p1, "/readyz", START, |_, b| b.contains("\"livePeers\":2"));
}

#[test]
fn a_killed_agent_is_seen_dead_within_threshold_plus_discovery() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let url = server.url();
    let prefix = prefix();
    let (p1, p2) = (free_port(), free_port());
    let survivor = Running::agent("keep-1", &url, &prefix, p1, &[]);
    let mut victim = Running::agent("kill-1", &url, &prefix, p2, &[]);
    wait_http(p1, "/readyz", START, |_, b| b.contains("\"livePeers\":2"));
    let watcher = watch(&url, &prefix);
    watcher.wait_stdout("watch sees kill-1 join", START, |l| {
        l.contains("joined") && l.contains("kill-1")
    });

    victim.kill9();
    watcher.wait_stdout("watch sees kill-1 dead", DETECT, |l| {
        l.contains("left") && l.contains("kill-1") && l.contains("reason=expired")
    });
    survivor.wait_stderr("the survivor logs kill-1 expired", DETECT, |l| {
        l.contains("instance left") && l.contains("kill-1") && l.contains("expired")
    });
    // One-shot: no longer alive (dead, missing, or already pruned from the index).
    eventually("members no longer shows kill-1 alive", DETECT, || {
        let v = members_json(&url, &prefix);
        let s = status_of(&v, "kill-1");
        (s.as_deref() != Some("alive") && s.as_deref() != Some("suspected")).then_some(())
    });
    assert_eq!(
        status_of(&members_json(&url, &prefix), "keep-1").as_deref(),
        Some("alive")
    );
}

#[test]
fn a_stopped_agent_is_gone_at_the_next_discovery() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let url = server.url();
    let prefix = prefix();
    let (p1, p2) = (free_port(), free_port());
    let survivor = Running::agent("stay-1", &url, &prefix, p1, &[]);
    let mut leaver = Running::agent("stop-1", &url, &prefix, p2, &[]);
    wait_http(p1, "/readyz", START, |_, b| b.contains("\"livePeers\":2"));
    let watcher = watch(&url, &prefix);
    watcher.wait_stdout("watch sees stop-1 join", START, |l| {
        l.contains("joined") && l.contains("stop-1")
    });

    leaver.signal("TERM");
    assert_eq!(
        leaver.wait_exit(START).code(),
        Some(0),
        "{}",
        leaver.output()
    );
    // Graceful: seen at the next discovery (250 ms), well before a threshold.
    watcher.wait_stdout("watch sees stop-1 leave gracefully", DETECT, |l| {
        l.contains("left") && l.contains("stop-1") && l.contains("reason=graceful")
    });
    survivor.wait_stderr("the survivor logs stop-1 graceful", DETECT, |l| {
        l.contains("instance left") && l.contains("stop-1") && l.contains("graceful")
    });
    let v = members_json(&url, &prefix);
    assert_eq!(status_of(&v, "stop-1"), None, "left the index: {v}");
    assert_eq!(status_of(&v, "stay-1").as_deref(), Some("alive"), "{v}");
}

#[test]
fn members_watch_json_prints_one_object_per_change() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let url = server.url();
    let prefix = prefix();
    let port = free_port();
    let agent = Running::agent("json-1", &url, &prefix, port, &[]);
    wait_http(port, "/readyz", START, |s, _| s == 200);
    let watcher = Running::start(
        "members --watch --json",
        &[
            "members",
            "--store",
            &url,
            "--prefix",
            &prefix,
            "--watch",
            "--json",
            "--discovery-interval",
            "250ms",
            "--stale-threshold",
            "1s",
        ],
    );
    let parsed = |l: &str| serde_json::from_str::<Value>(l).ok();
    watcher.wait_stdout("a joined object", START, |l| {
        parsed(l).is_some_and(|v| v["event"] == "joined" && v["instanceId"] == "json-1")
    });
    agent.signal("TERM");
    let line = watcher.wait_stdout("a left object", DETECT, |l| {
        parsed(l).is_some_and(|v| v["event"] == "left" && v["instanceId"] == "json-1")
    });
    let v = parsed(&line).unwrap();
    assert_eq!(v["reason"], "graceful");
    assert!(v["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
}

#[test]
fn metrics_show_the_heartbeat_and_reclaim_metrics() {
    let Some(server) = require("redis-server", redis::shared()) else {
        return;
    };
    let port = free_port();
    let _agent = Running::agent("metrics-1", &server.url(), &prefix(), port, &[]);
    wait_http(port, "/metrics", START, |s, b| {
        s == 200 && b.contains("heartbeat_publish_total{result=\"ok\"}")
    });
    // The reclaimer sweeps once the view is actionable.
    let (_, body) = wait_http(port, "/metrics", START, |_, b| {
        b.contains("reclaim_sweeps_total")
    });
    for name in [
        "reclaim_orphans",
        "reclaim_brake_engaged 0",
        "heartbeat_discovery_total{result=\"ok\"}",
        "heartbeat_discovery_seconds",
        "heartbeat_membership_events_total{kind=\"joined\"}",
        "heartbeat_live_peers",
        "heartbeat_view_healthy",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}:\n{body}");
    }
}

#[test]
fn healthz_turns_503_when_redis_stops_and_200_when_it_returns() {
    let Some(server) = require("redis-server", redis::RedisServer::start()) else {
        return;
    };
    let port = free_port();
    let agent = Running::agent("health-1", &server.url(), &prefix(), port, &[]);
    wait_http(port, "/healthz", START, |s, b| {
        s == 200 && b.contains("\"reason\":\"ok\"")
    });

    server.kill();
    let (_, body) = wait_http(port, "/healthz", DETECT, |s, _| s == 503);
    assert!(body.contains("unavailable"), "{body}");
    let (status, _) = common::http_get(port, "/readyz").unwrap();
    assert_eq!(status, 503);
    agent.wait_stderr("a view_unhealthy or self_at_risk line", DETECT, |l| {
        l.contains("view_unhealthy") || l.contains("self_at_risk")
    });

    server.restart().unwrap();
    wait_http(port, "/healthz", START, |s, _| s == 200);
}

#[test]
fn an_unreachable_store_exits_3_with_a_clear_message() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    for sub in [&["members"][..], &["agent", "--listen", "127.0.0.1:0"][..]] {
        let out = Command::from_std(bin())
            .args(sub)
            .args(["--store", &url])
            .timeout(Duration::from_secs(30))
            .assert()
            .code(3)
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unreachable") && err.contains(&url), "{err}");
        assert!(err.contains("--store"), "{err}");
    }
}

fn record(
    id: &str,
    owner: &str,
    incarnation: Option<u64>,
    age: chrono::Duration,
) -> ConnectionRecord {
    ConnectionRecord::new(
        id.parse().unwrap(),
        format!("wss://upstream.test/{id}"),
        owner.parse().unwrap(),
        incarnation.map(Incarnation::from_u64),
        chrono::Utc::now() - age,
    )
}

fn reclaim(url: &str, prefix: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::from_std(bin())
        .args(["reclaim", "--store", url, "--prefix", prefix])
        .args(["--discovery-interval", "250ms", "--stale-threshold", "1s"])
        .args(extra)
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line_of<'a>(text: &'a str, connection: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(connection))
        .unwrap_or_else(|| panic!("no line for {connection}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_prints_decisions_and_claims_by_compare_and_swap() {
    // Its own server: the connection records use the seed's fixed key layout.
    let Some(server) = require("redis-server", redis::RedisServer::start()) else {
        return;
    };
    let url = server.url();
    let prefix = prefix();
    let port = free_port();
    let _agent = Running::agent("live-1", &url, &prefix, port, &["--no-reclaim"]);
    wait_http(port, "/readyz", START, |s, _| s == 200);
    let v = members_json(&url, &prefix);
    let live = v["instances"][0]["incarnation"]
        .as_str()
        .unwrap()
        .to_owned();
    let live_incarnation = u64::from_str_radix(&live, 16).unwrap();

    let store = RedisStore::connect(&url).await.unwrap();
    let repo = RedisConnections::new(store);
    let old = chrono::Duration::minutes(10);
    for r in [
        record("c-orphan", "gone-1", Some(7), old),
        record("c-live", "live-1", Some(live_incarnation), old),
        // Stamped by a new member whose clock runs a minute ahead: young for the
        // whole test, however long the observations take.
        record("c-new", "new-1", Some(9), chrono::Duration::minutes(-1)),
    ] {
        repo.create(&r).await.unwrap();
    }

    let (code, out, err) = reclaim(&url, &prefix, &["--dry-run"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        line_of(&out, "c-orphan").contains("designated claimer is live-1"),
        "{out}"
    );
    assert!(
        line_of(&out, "c-live").contains("keep: owner is live"),
        "{out}"
    );
    assert!(
        line_of(&out, "c-new").contains("owner_unknown_recent"),
        "{out}"
    );
    assert!(
        out.contains("3 record(s)") && out.contains("dry run"),
        "{out}"
    );
    let id: ConnectionId = "c-orphan".parse().unwrap();
    assert_eq!(
        repo.get(&id).await.unwrap().unwrap().record.owner.as_str(),
        "gone-1"
    );

    let (code, _, err) = reclaim(&url, &prefix, &["--apply", "--id", "nobody-1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no live member named nobody-1"), "{err}");

    let (code, out, err) = reclaim(&url, &prefix, &["--apply", "--id", "live-1"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        line_of(&out, "c-orphan").contains("CLAIMED for live-1"),
        "{out}"
    );
    assert!(out.contains("1 claimed, 0 conflict(s)"), "{out}");
    let claimed = repo.get(&id).await.unwrap().unwrap().record;
    assert_eq!(claimed.owner.as_str(), "live-1");
    assert_eq!(
        claimed.owner_incarnation,
        Some(Incarnation::from_u64(live_incarnation))
    );
    let new: ConnectionId = "c-new".parse().unwrap();
    assert_eq!(
        repo.get(&new).await.unwrap().unwrap().record.owner.as_str(),
        "new-1"
    );

    // Nothing left to take: a second run claims nothing.
    let (code, out, _) = reclaim(&url, &prefix, &["--apply", "--id", "live-1"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(line_of(&out, "c-orphan").contains("keep"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reclaims_the_connections_of_a_killed_agent() {
    let Some(server) = require("redis-server", redis::RedisServer::start()) else {
        return;
    };
    let url = server.url();
    let prefix = prefix();
    let (p1, p2) = (free_port(), free_port());
    let survivor = Running::agent(
        "heir-1",
        &url,
        &prefix,
        p1,
        &["--reclaim-interval", "300ms"],
    );
    let mut victim = Running::agent("doomed-1", &url, &prefix, p2, &["--no-reclaim"]);
    wait_http(p1, "/readyz", START, |_, b| b.contains("\"livePeers\":2"));
    let v = members_json(&url, &prefix);
    let doomed = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instanceId"] == "doomed-1")
        .unwrap()["incarnation"]
        .as_str()
        .unwrap()
        .to_owned();
    let repo = RedisConnections::new(RedisStore::connect(&url).await.unwrap());
    let r = record(
        "c-1",
        "doomed-1",
        Some(u64::from_str_radix(&doomed, 16).unwrap()),
        chrono::Duration::zero(),
    );
    repo.create(&r).await.unwrap();

    victim.kill9();
    survivor.wait_stderr("the survivor takes c-1 over", DETECT, |l| {
        l.contains("took over an orphaned connection") && l.contains("c-1")
    });
    let id: ConnectionId = "c-1".parse().unwrap();
    assert_eq!(
        repo.get(&id).await.unwrap().unwrap().record.owner.as_str(),
        "heir-1"
    );
    let (_, body) = wait_http(p1, "/metrics", START, |_, b| {
        b.contains("reclaim_claims_total{result=\"won\"} 1")
    });
    assert!(body.contains("reclaim_sweeps_total"), "{body}");
}
