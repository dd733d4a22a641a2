//! The `heartbeat` binary on a Dapr sidecar (`daprd` with the in-memory state store):
//! an agent seen by `members`, and an unreachable sidecar.
//!
//! Needs daprd (tests/daprd/build.sh, or HEARTBEAT_DAPRD) for the first test: fails in
//! CI without it, skips elsewhere.
#![cfg(feature = "dapr")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use assert_cmd::Command;
use common::{Running, bin, eventually, free_port, prefix, wait_http};
use heartbeat_conformance::support::{daprd, require};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn an_agent_on_dapr_is_listed_by_members() {
    let Some(sidecar) = require("daprd", daprd::shared()) else {
        return;
    };
    let url = format!(
        "dapr://127.0.0.1:{}/{}",
        sidecar.http_port(),
        daprd::MEMORY_STORE
    );
    let prefix = prefix();
    let port = free_port();
    let _agent = Running::agent("dapr-1", &url, &prefix, port, &[]);
    wait_http(port, "/readyz", LIMIT, |s, _| s == 200);
    eventually("members lists dapr-1 alive", LIMIT, || {
        let out = Command::from_std(bin())
            .args(["members", "--store", &url, "--prefix", &prefix, "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["instances"][0]["instanceId"] == "dapr-1" && v["instances"][0]["status"] == "alive")
            .then_some(())
    });
}

#[test]
fn an_unreachable_sidecar_exits_3() {
    let url = format!("dapr://127.0.0.1:{}/statestore", free_port());
    let out = Command::from_std(bin())
        .args(["members", "--store", &url, "--store-timeout", "1s"])
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
