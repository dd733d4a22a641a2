#!/usr/bin/env bash
# Installs moto_server (the DynamoDB emulator the heartbeat-dynamodb tests run against)
# into the workspace's virtual environment <workspace>/.venv, and prints its path.
#
# Idempotent: an existing venv with the pinned moto is reused. The tests find the
# binary at $HEARTBEAT_MOTO_SERVER, else <workspace>/.venv/bin/moto_server, else on PATH.
#
# Usage: tests/moto/setup.sh            (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail

MOTO_VERSION="5.2.5"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
venv="$workspace/.venv"
python="${PYTHON:-python3}"
server="$venv/bin/moto_server"

installed_version() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true
}

if [[ -x "$server" && "$(installed_version)" == "$MOTO_VERSION" ]]; then
    echo "$server"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi

echo "installing moto[server]==$MOTO_VERSION into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2

if [[ ! -x "$server" ]]; then
    echo "error: $server missing after installing moto[server]==$MOTO_VERSION" >&2
    exit 1
fi
echo "$server"
