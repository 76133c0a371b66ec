#!/usr/bin/env bash
# Issue 20 item 5: what each remaining difference from the reference code changes in a `full`
# CFCQL run, one difference at a time, on one dataset and seed. Each variant writes its own
# folder under OUT, so the runs resume independently; compare their records with the sweep's
# record of the same run (the suite's settings).
#
#   bash scripts/cfcql_differences.sh mpe-pp-expert-v0 0 runs/cfcql-differences [VARIANT ...]
#
# With no VARIANT, every variant runs in turn.
set -uo pipefail
dataset=${1:?usage: cfcql_differences.sh DATASET SEED OUT}
seed=${2:?usage: cfcql_differences.sh DATASET SEED OUT}
out=${3:?usage: cfcql_differences.sh DATASET SEED OUT}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
declare -A variants=(
  [target-noise]="cfcql.target_noise=0.05 cfcql.target_noise_clip=100.0"  # N(0, 0.05), unclipped
  [input-norm]="cfcql.input_norm=True"                                     # BatchNorm on inputs
  [actor-mean]="cfcql.actor_loss_mean=True"                                # agents' mean actor loss
  [agent0-reward]="cfcql.reward_agent=0"  # agent 0's own reward (on mpe-cn not the team's sum)
  [policy-samples]="cfcql.policy_samples=True"  # CQL samples around pi too, as on MaMuJoCo
  [lr-1e-3]="cfcql.lr=0.001"  # not a difference: the code's own 0.01 on simple_spread, tenfold down
  # not a difference either: each actor against the other actors, not the data's partners
  [actor-partners-policy]="cfcql.actor_partners=policy"
  # the code's settings at once: they may matter only together
  [reference]="cfcql.target_noise=0.05 cfcql.target_noise_clip=100.0 cfcql.input_norm=True cfcql.actor_loss_mean=True cfcql.reward_agent=0"
)
names=("${@:4}")
((${#names[@]})) || names=(target-noise input-norm actor-mean agent0-reward policy-samples reference)
for name in "${names[@]}"; do
  [[ -v "variants[$name]" ]] || { echo "differences: no variant $name (${!variants[*]})" >&2; exit 2; }
  sets=()
  for pair in ${variants[$name]}; do sets+=(--set "$pair"); done
  marl-bench evaluate --algo cfcql --datasets "$dataset" --seeds "$seed," --protocol full \
    --out "$out/$name" --no-tables "${sets[@]}" || echo "differences: $name exited $?"
done
