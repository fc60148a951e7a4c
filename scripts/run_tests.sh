#!/usr/bin/env bash
# The test command: lint, type check, core/ on numpy 1.26, a colcon build of the package checked from
# its install space (test/colcon, in the build venv .venv/colcon), and the full pytest suite.
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
echo "== colcon build of the tracked files; the install space's node, interfaces, ament index, share/"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider test/colcon "$@"
echo "== pytest (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery LOCALHOST)"
"$VENV/bin/python" -m pytest "$@"
