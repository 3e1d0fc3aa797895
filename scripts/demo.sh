#!/usr/bin/env bash
# `make demo`: supervised-only and semi-supervised training (the EMA teacher, the best method on
# FER2013 in docs/benchmarks.md) on the embedded synthetic faces, with the same labels and
# iterations, trained side by side, then their test accuracies side by side. The EMA teacher does
# ~5x the work per step, so it gets two threads: the second core is its own once supervised ends
# (3.7 min in all on an idle 2-core machine; docs/benchmarks.md, section 0).
set -euo pipefail
cd "$(dirname "$0")/.."
SEMIFER=.venv/bin/semifer
export OMP_WAIT_POLICY=passive  # two runs on two cores: no OpenMP spin-waiting against each other
rm -rf runs/demo && mkdir -p runs/demo
declare -A ARGS=(
  [supervised]="algorithm.name=supervised"
  [ema_teacher]="algorithm.name=ema_teacher algorithm.teacher_momentum=0.99 train.threads=2"
)
declare -A PIDS=()
for run in supervised ema_teacher; do
  # shellcheck disable=SC2086
  $SEMIFER train --config recipes/demo.yaml --out "runs/demo/$run" ${ARGS[$run]} > "runs/demo/$run.log" 2>&1 &
  PIDS[$run]=$!
  echo "training $run -> runs/demo/$run (log: runs/demo/$run.log)"
done
status=0
for run in "${!PIDS[@]}"; do
  if ! wait "${PIDS[$run]}"; then
    echo "$run failed; last lines of runs/demo/$run.log:" >&2
    tail -n 20 "runs/demo/$run.log" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit "$status"
echo
$SEMIFER compare runs/demo/supervised runs/demo/ema_teacher
