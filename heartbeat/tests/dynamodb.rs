//! The `heartbeat` binary on DynamoDB (`moto_server`): `init-store`, an agent seen by
//! `members`, a graceful stop, and an unreachable endpoint.
//!
//! Needs `moto_server` (tests/moto/setup.sh) for all but the last test: fails in CI
//! without it, skips elsewhere.
#![cfg(feature = "dynamodb")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use assert_cmd::Command;
use common::{Running, bin, eventually, free_port, prefix, wait_http};
use heartbeat_conformance::support::moto;

const AWS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY_ID),
    ("AWS_SECRET_ACCESS_KEY", moto::SECRET_ACCESS_KEY),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];
const LIMIT: Duration = Duration::from_secs(30);

fn cmd() -> Command {
    let mut c = bin();
    c.envs(AWS);
    Command::from_std(c)
}

fn table_url(endpoint: &str) -> String {
    let table = format!("hb-{}", &prefix()[5..13]);
    format!(
        "dynamodb://{table}?region={}&endpoint={endpoint}",
        moto::REGION
    )
}

#[test]
fn init_store_then_an_agent_is_listed_and_leaves() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let url = table_url(&endpoint);
    // Before init-store, the missing table is a configuration error that says what to run.
    let out = cmd()
        .args(["members", "--store", &url])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("init-store"), "{err}");

    let out = cmd()
        .args(["init-store", &url])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"));
    let out = cmd()
        .args(["init-store", &url])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stdout).contains("already existed"));

    let prefix = prefix();
    let port = free_port();
    let mut agent = Running::agent_env("ddb-1", &url, &prefix, port, &[], &AWS);
    wait_http(port, "/readyz", LIMIT, |s, _| s == 200);
    eventually("members lists ddb-1 alive", LIMIT, || {
        let out = cmd()
            .args(["members", "--store", &url, "--prefix", &prefix, "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["instances"][0]["instanceId"] == "ddb-1" && v["instances"][0]["status"] == "alive")
            .then_some(())
    });
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(LIMIT).code(), Some(0), "{}", agent.output());
    let out = cmd()
        .args(["members", "--store", &url, "--prefix", &prefix, "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instances"], serde_json::json!([]), "{v}");
}

#[test]
fn an_unreachable_endpoint_exits_3() {
    let url = format!(
        "dynamodb://heartbeats?region=us-east-1&endpoint=http://127.0.0.1:{}&max_attempts=1",
        free_port()
    );
    let out = cmd()
        .args(["members", "--store", &url])
        .timeout(LIMIT)
        .assert()
        .code(3)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unreachable") && err.contains("--store"),
        "{err}"
    );
}
