#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs and prepares what the
# tests need (redis-server, moto_server in a local venv, a daprd built from the Dapr Go
# modules), then formatting, lints and `cargo test` over every crate and feature.
# Test support starts the servers itself on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "redis-server, redis-cli, redis-benchmark, openssl (Debian)"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null || ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools openssl >/dev/null
  else
    echo "redis-server or openssl is missing; install them (apt-get install redis-server openssl) or run as root" >&2
  fi
fi
redis-server --version || true

if [ -x tests/moto/setup.sh ] || [ -f tests/moto/setup.sh ]; then
  step "moto_server (DynamoDB) in .venv"
  HEARTBEAT_MOTO_SERVER=$(bash tests/moto/setup.sh)
  export HEARTBEAT_MOTO_SERVER
  echo "$HEARTBEAT_MOTO_SERVER"
fi

if [ -f tests/daprd/build.sh ]; then
  step "daprd built from the Dapr Go modules (cached after the first build)"
  HEARTBEAT_DAPRD=$(bash tests/daprd/build.sh)
  export HEARTBEAT_DAPRD
  echo "$HEARTBEAT_DAPRD"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (all crates, all features)"
cargo test --workspace --all-features

step "reclaimer stays free of backend clients"
if cargo tree -p reclaimer -e normal --prefix none | grep -E '^(redis|reqwest|hyper|aws-)' ; then
  echo "reclaimer depends on a backend client" >&2
  exit 1
fi
echo "ok"
