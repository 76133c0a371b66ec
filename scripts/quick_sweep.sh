#!/usr/bin/env bash
# Work through a list of quick-protocol evaluations, one process, one run at a time.
#   scripts/quick_sweep.sh QUEUE_FILE LOG_FILE
# QUEUE_FILE holds "algos|dataset globs" lines, e.g. "macql,bc|equal_line-*-expert-v0".
# Start two of these in the background (one per core) on different files, or on the same one:
# run locks keep them off each other's runs, records make a re-run skip finished work, and
# touching /tmp/quick_sweep.stop ends each sweep after its current line.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
while IFS='|' read -r algos datasets; do
  [[ -z "$algos" || "$algos" == \#* ]] && continue
  [[ -e /tmp/quick_sweep.stop ]] && break
  echo "=== $(date +%T) $algos on $datasets" >> "$2"
  marl-bench evaluate --algo "$algos" --datasets "$datasets" --seeds 3 --protocol quick \
    --workers 1 --no-build --bootstrap-reps 200 >> "$2" 2>&1
done < "$1"
echo "=== $(date +%T) sweep done" >> "$2"
