#!/usr/bin/env bash
# Runs every benchmark script; each prints its figures and writes JSON under artifacts/bench/.
# Figures quoted in docs/benchmarks.md come from these scripts only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ALPAMAYO_VENV:-$ROOT/.venv}"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 10 + $$ % 90 ))}"
mkdir -p artifacts/bench
for bench in benchmarks/bench_*.py; do
  if [ "$(basename "$bench")" = bench_gpu.py ] && \
     ! "$VENV/bin/python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "== $bench: skipped (no CUDA device; \`python $bench --dry-run\` checks its path on the CPU)"
    continue
  fi
  echo "== $bench"
  "$VENV/bin/python" "$bench" "$@"
done
echo "JSON results: artifacts/bench/"
