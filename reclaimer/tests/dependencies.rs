//! The reclaimer stays embeddable: its normal dependencies never pull in a backend
//! client (no redis, reqwest, hyper or aws crates).
//!
//! Two checks: a walk of `Cargo.lock` from the normal dependencies declared in
//! `reclaimer/Cargo.toml` (always runs; it over-approximates, since the lock file also
//! lists dev-dependencies of workspace members), and `cargo tree -p reclaimer -e normal
//! --locked` when cargo can run it. The same check by hand, for CI scripts:
//!
//! ```sh
//! ! cargo tree -p reclaimer -e normal --prefix none | grep -E '^(redis|reqwest|hyper|aws-)'
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn forbidden(name: &str) -> bool {
    name == "redis"
        || name.starts_with("redis-")
        || name == "reqwest"
        || name.starts_with("hyper")
        || name.starts_with("aws-")
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Names in the `[dependencies]` table of our manifest.
fn normal_dependencies() -> Vec<String> {
    let manifest = std::fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap().trim();
            out.push(name.to_owned());
        }
    }
    assert!(!out.is_empty(), "no [dependencies] found in Cargo.toml");
    out
}

/// package name -> names of its dependencies, from Cargo.lock (all versions merged).
fn lock_graph() -> BTreeMap<String, BTreeSet<String>> {
    let lock = std::fs::read_to_string(manifest_dir().join("../Cargo.lock")).unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_deps = false;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            current = None;
            in_deps = false;
        } else if let Some(name) = line.strip_prefix("name = ") {
            let name = name.trim_matches('"').to_owned();
            graph.entry(name.clone()).or_default();
            current = Some(name);
        } else if line.starts_with("dependencies = [") {
            in_deps = !line.ends_with(']');
        } else if in_deps && line == "]" {
            in_deps = false;
        } else if in_deps {
            let dep = line.trim_matches(|c| c == '"' || c == ',');
            let dep = dep.split(' ').next().unwrap().to_owned();
            if let Some(c) = &current {
                graph.get_mut(c).unwrap().insert(dep);
            }
        }
    }
    graph
}

#[test]
fn no_backend_client_in_the_lock_file_closure() {
    let graph = lock_graph();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(String, Vec<String>)> = normal_dependencies()
        .into_iter()
        .map(|d| (d.clone(), vec!["reclaimer".to_owned(), d]))
        .collect();
    while let Some((name, path)) = todo.pop() {
        assert!(
            !forbidden(&name),
            "reclaimer depends on {name}: {}",
            path.join(" -> ")
        );
        if !seen.insert(name.clone()) {
            continue;
        }
        for dep in graph.get(&name).into_iter().flatten() {
            let mut p = path.clone();
            p.push(dep.clone());
            todo.push((dep.clone(), p));
        }
    }
    assert!(seen.contains("heartbeat-core"));
    assert!(
        !seen.contains("heartbeat-memory"),
        "heartbeat-memory must stay a dev-dependency"
    );
}

#[test]
fn cargo_tree_shows_no_backend_client() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "reclaimer",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--locked",
            "--offline",
        ])
        .current_dir(manifest_dir())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "SKIPPED: cargo tree failed ({}); the Cargo.lock walk still checks",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: cargo could not run ({e}); the Cargo.lock walk still checks");
            return;
        }
    };
    let tree = String::from_utf8(out.stdout).unwrap();
    let names: BTreeSet<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
    assert!(names.contains("heartbeat-core"), "{tree}");
    let bad: Vec<&&str> = names.iter().filter(|n| forbidden(n)).collect();
    assert!(
        bad.is_empty(),
        "backend clients in cargo tree -p reclaimer: {bad:?}"
    );
    assert!(!names.contains("heartbeat-memory"));
}
