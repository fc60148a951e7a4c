#!/usr/bin/env bash
# The test command: lint, type check, the full pytest suite, and core/ on numpy 1.26.
# ROS tests stay on loopback: test/conftest.py sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a
# per-run ROS_DOMAIN_ID before rclpy is imported; they are exported here too for subprocesses.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ALPAMAYO_VENV:-$ROOT/.venv}"
cd "$ROOT"

export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 10 + $$ % 90 ))}"
export PYTHONDONTWRITEBYTECODE=1

echo "== ruff"
"$VENV/bin/ruff" check alpamayo_ros test launch scripts
echo "== mypy (core)"
"$VENV/bin/mypy" alpamayo_ros/core
echo "== core on numpy 1.26"
PYTHONPATH="$ROOT" "$VENV/np126/bin/python" -m pytest -q -p no:cacheprovider -m "not ros" test/core --confcutdir=test/core "$@"
echo "== pytest (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery LOCALHOST)"
"$VENV/bin/python" -m pytest "$@"
