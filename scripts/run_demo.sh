#!/usr/bin/env bash
# `make demo`: the README's main job. Makes the demo bag and the tiny model (once), starts the planner
# node and replays the bag into it over DDS in lockstep, prints the summary table and where the report is.
# Extra arguments go to `alpamayo-ros demo` (e.g. --offline, --fresh, --duration 45, --backend kinematic).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ALPAMAYO_VENV:-$ROOT/.venv}"
cd "$ROOT"
if [[ ! -x "$VENV/bin/alpamayo-ros" ]]; then
  echo "no $VENV/bin/alpamayo-ros: run 'make setup' first" >&2
  exit 2
fi
# DDS stays on this machine; a domain of its own so other ROS processes here are not disturbed.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 10 + $$ % 90 ))}"
exec "$VENV/bin/alpamayo-ros" demo --out "${ALPAMAYO_DEMO_OUT:-artifacts/demo}" "$@"
