//! The `heartbeat` binary on the embedded store, and its errors and exit codes (no
//! server needed).
#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use assert_cmd::Command;
use common::{FAST, Running, bin, free_port, prefix, wait_http};

fn cmd() -> Command {
    Command::from_std(bin())
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_documents_exit_codes_urls_and_examples() {
    let out = cmd().arg("--help").assert().success().get_output().clone();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes",
        "2  usage or configuration error",
        "3  the store is unreachable",
        "redis+cluster://",
        "dynamodb://",
        "dapr://",
        "memory://",
        "heartbeat agent --store",
        "heartbeat members --store",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    for sub in ["agent", "members", "demo"] {
        let out = cmd()
            .args([sub, "--help"])
            .assert()
            .success()
            .get_output()
            .clone();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Examples:"),
            "{sub} --help lacks examples:\n{help}"
        );
    }
}

#[test]
fn a_url_without_scheme_exits_2_and_says_what_to_give() {
    let out = cmd()
        .args(["members", "--store", "localhost:6379"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(
        err.contains("no scheme") && err.contains("redis://"),
        "{err}"
    );
}

#[test]
fn an_unknown_scheme_exits_2_and_lists_the_known_ones() {
    let out = cmd()
        .args([
            "agent",
            "--store",
            "postgres://db/x",
            "--listen",
            "127.0.0.1:0",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(
        err.contains("unknown store URL scheme \"postgres\""),
        "{err}"
    );
    assert!(err.contains("dynamodb"), "{err}");
}

#[test]
fn a_bad_url_never_echoes_its_password() {
    let out = cmd()
        .args([
            "members",
            "--store",
            "redis://app:hunter2-secret@localhost:port",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(err.contains("not a TCP port"), "{err}");
    assert!(!err.contains("hunter2-secret"), "{err}");
}

#[cfg(not(feature = "dapr"))]
#[test]
fn a_backend_not_in_this_build_exits_2_naming_its_feature() {
    let out = cmd()
        .args(["members", "--store", "dapr://localhost:3500/statestore"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(err.contains("feature") && err.contains("dapr"), "{err}");
}

#[test]
fn invalid_timings_exit_2_and_name_the_setting() {
    let out = cmd()
        .args([
            "agent",
            "--store",
            "memory://",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "1s",
            "--stale-threshold",
            "1500ms",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr_of(&out);
    assert!(
        err.contains("two heartbeat intervals") && err.contains("--stale-threshold"),
        "{err}"
    );

    let out = cmd()
        .args([
            "agent",
            "--store",
            "memory://",
            "--heartbeat-interval",
            "soon",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("not a duration"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn invalid_environment_exits_2_and_names_the_variable() {
    let out = cmd()
        .env("INSTANCE_STALE_THRESHOLD_SECONDS", "soon")
        .args(["members", "--store", "memory://"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr_of(&out).contains("INSTANCE_STALE_THRESHOLD_SECONDS"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn members_on_memory_lists_nobody_and_says_why() {
    let out = cmd()
        .args(["members", "--store", "memory://"])
        .assert()
        .success()
        .get_output()
        .clone();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("LAST BEAT (writer clock)"), "{table}");
    assert!(table.contains("0 instance(s)"), "{table}");
    assert!(stderr_of(&out).contains("memory://"), "{}", stderr_of(&out));

    let out = cmd()
        .args(["members", "--store", "memory://", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instances"], serde_json::json!([]));
    assert_eq!(v["store"], "memory://");
}

#[test]
fn agent_on_memory_serves_health_readiness_and_metrics_then_leaves_on_sigterm() {
    let port = free_port();
    let mut agent = Running::agent(
        "solo-1",
        "memory://",
        &prefix(),
        port,
        &["--log-format", "json"],
    );
    let limit = Duration::from_secs(10);
    let (_, body) = wait_http(port, "/readyz", limit, |s, _| s == 200);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["instance"], "solo-1");
    assert_eq!(ready["livePeers"], 1);
    let (status, _) = common::http_get(port, "/healthz").unwrap();
    assert_eq!(status, 200);
    let (_, metrics) = wait_http(port, "/metrics", limit, |s, b| {
        s == 200 && b.contains("heartbeat_publish_total")
    });
    for name in [
        "heartbeat_discovery_total",
        "heartbeat_live_peers",
        "heartbeat_view_healthy 1",
        "heartbeat_self_at_risk 0",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // Structured JSON log lines.
    agent.wait_stderr("a JSON start line", limit, |l| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["instance"] == "solo-1" && v["listen"] == format!("127.0.0.1:{port}"))
    });

    agent.signal("TERM");
    let status = agent.wait_exit(limit);
    assert_eq!(status.code(), Some(0), "{}", agent.output());
    assert!(
        agent
            .stderr()
            .iter()
            .any(|l| l.contains("left the cluster")),
        "{}",
        agent.output()
    );
}

#[test]
fn agent_leaves_on_sigint_too() {
    let port = free_port();
    let mut agent = Running::agent("solo-2", "memory://", &prefix(), port, &[]);
    wait_http(port, "/readyz", Duration::from_secs(10), |s, _| s == 200);
    agent.signal("INT");
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        agent.output()
    );
}

#[test]
fn agent_with_a_taken_port_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["agent", "--store", "memory://", "--listen", &listen];
    args.extend(FAST);
    let out = cmd().args(&args).assert().code(2).get_output().clone();
    let err = stderr_of(&out);
    assert!(
        err.contains("could not listen") && err.contains("--listen"),
        "{err}"
    );
}

#[test]
fn demo_still_runs() {
    let out = cmd()
        .args(["demo"])
        .timeout(Duration::from_secs(60))
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("summary"), "{text}");
}

#[test]
fn reclaim_on_memory_has_nothing_to_do_and_needs_a_mode_and_an_id() {
    let out = cmd()
        .args([
            "reclaim",
            "--store",
            "memory://",
            "--dry-run",
            "--observe",
            "0",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 record(s)") && text.contains("dry run"),
        "{text}"
    );

    // A mode is required (clap's usage error: exit 2).
    cmd()
        .args(["reclaim", "--store", "memory://", "--observe", "0"])
        .assert()
        .code(2);
    // --apply claims on behalf of a live member: it must be named.
    let out = cmd()
        .args([
            "reclaim",
            "--store",
            "memory://",
            "--apply",
            "--observe",
            "0",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(stderr_of(&out).contains("--id"), "{}", stderr_of(&out));
}

#[test]
fn init_store_on_memory_needs_no_setup() {
    let out = cmd()
        .args(["init-store", "memory://"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stdout).contains("needs no setup"));
}

#[test]
fn help_never_shows_the_store_url_from_the_environment() {
    for sub in ["agent", "members", "reclaim", "init-store"] {
        let out = cmd()
            .env("HEARTBEAT_STORE", "redis://app:hunter2-secret@cache:6379")
            .args([sub, "--help"])
            .assert()
            .success()
            .get_output()
            .clone();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            !help.contains("hunter2-secret"),
            "{sub} --help shows the secret:\n{help}"
        );
    }
}
