#!/usr/bin/env bash
# Builds our minimal daprd (see main.go / README.md) once and caches it.
#
# stdout: ONLY the absolute path of the daprd binary (all progress -> stderr).
# Cache:  ${HEARTBEAT_CACHE_DIR:-$HOME/.cache/heartbeat}/daprd-<hash>/daprd
#         where <hash> = sha256(go.mod + go.sum + main.go), first 16 hex chars.
# If the binary already exists this returns immediately without invoking go.
# Needs only `go` (>= the version in go.mod, or GOTOOLCHAIN=auto) and access
# to the Go module proxy. Safe to call concurrently (flock when available).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

if command -v sha256sum >/dev/null 2>&1; then
  sha() { sha256sum; }
else
  sha() { shasum -a 256; }
fi
hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha | cut -c1-16)"

cache_root="${HEARTBEAT_CACHE_DIR:-$HOME/.cache/heartbeat}"
out_dir="$cache_root/daprd-$hash"
out="$out_dir/daprd"

if [[ -x "$out" ]]; then
  printf '%s\n' "$out"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: 'go' not found in PATH; cannot build daprd" >&2
  exit 1
fi

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd -P)"
out="$out_dir/daprd"

build() {
  # Re-check under the lock: another process may have finished the build.
  if [[ -x "$out" ]]; then
    return 0
  fi
  tmp="$out_dir/daprd.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  echo "build.sh: building daprd into $out (cold module cache: ~2-3 min download + compile)" >&2
  local start=$SECONDS
  # Stamp the pinned Dapr version (shown by --version and GET /v1.0/metadata).
  local ver
  ver="$(awk '$1 == "github.com/dapr/dapr" { sub(/^v/, "", $2); print $2 }' "$here/go.mod")"
  local bi=github.com/dapr/dapr/pkg/buildinfo
  (
    cd "$here"
    CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath \
      -ldflags "-s -w -X $bi.version=$ver -X $bi.gitversion=v$ver-heartbeat-minimal" -o "$tmp" .
  ) 1>&2
  mv -f "$tmp" "$out"
  trap - EXIT
  echo "build.sh: built daprd in $((SECONDS - start))s" >&2
}

if command -v flock >/dev/null 2>&1; then
  exec 9>"$out_dir/.lock"
  flock 9
  build
  flock -u 9
else
  build
fi

printf '%s\n' "$out"
