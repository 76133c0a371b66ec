#!/usr/bin/env bash
# Rebuild datasets with the registry's recipe and record them as the canonical builds: their
# SHA-256, statistics and per-episode digests go into the package (`marl-bench record`), and
# `marl-bench verify` checks the result. Used when a change of the build itself (here: the
# behaviour agents' float64 action choice) makes the recorded canonical bytes unreachable.
#
#   bash scripts/rebuild_canonical.sh smac-2s3z-expert-v0 equal_line-n6-mixed-v0 ...
#
# Run it from a worktree at a fixed commit so edits meanwhile never enter a build; set
# MARL_BENCH_STATISTICS_FILE to the main checkout's marl_offline_bench/data/dataset_statistics.json
# to record there. Each dataset is rebuilt with --force, so the script is safe to run again.
set -uo pipefail
(($#)) || { echo "usage: rebuild_canonical.sh DATASET_ID..." >&2; exit 2; }
failed=0
for id in "$@"; do
  # <family>-<task>-<quality>-v<k>, where quality may itself hold a dash (medium-replay)
  if [[ ! $id =~ ^([a-z_]+)-([A-Za-z0-9_]+)-(random|medium-replay|medium|expert|mixed)-v[0-9]+$ ]]; then
    echo "rebuild: cannot parse dataset id $id" >&2; failed=1; continue
  fi
  family=${BASH_REMATCH[1]} task=${BASH_REMATCH[2]} quality=${BASH_REMATCH[3]}
  start=$SECONDS
  if ! marl-bench collect --env "$family" --task "$task" --quality "$quality" --force --quiet; then
    echo "rebuild: $id FAILED to build after $((SECONDS - start)) s" >&2; failed=1; continue
  fi
  echo "rebuild: $id built in $((SECONDS - start)) s; against the canonical build recorded before:"
  marl-bench verify "$id" | sed 's/^/  /'
  marl-bench record "$id" >/dev/null && marl-bench verify "$id" | tail -1 || failed=1
done
exit $failed
