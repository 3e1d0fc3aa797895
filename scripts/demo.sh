#!/usr/bin/env bash
# `make demo`: supervised-only and semi-supervised training (the EMA teacher, the best method on
# FER2013 in docs/benchmarks.md) on the embedded synthetic faces (recipes/demo.yaml), with the same
# labels and iterations, side by side; one live line per run (step, val accuracy so far, ETA);
# then both test accuracies, their paired test, and what they mean. One thread each (the recipe):
# a second thread for the EMA teacher (~3x the work per step) made the demo slower on 2 cores, not
# faster, and one thread reproduces docs/benchmarks.md, section 0, seed 0 exactly. Arguments are
# key=value overrides for both runs (bash scripts/demo.sh train.iterations=50: a quick look);
# DEMO_OUT moves the run folders.
set -euo pipefail
cd "$(dirname "$0")/.."
SEMIFER=.venv/bin/semifer
PY=.venv/bin/python
OUT=${DEMO_OUT:-runs/demo}
export OMP_WAIT_POLICY=passive  # two runs on two cores: no OpenMP spin-waiting against each other
rm -rf "$OUT" && mkdir -p "$OUT"
RUNS=(supervised ema_teacher)
declare -A ARGS=(
  [supervised]="algorithm.name=supervised"
  # teacher_momentum=null: the teacher is the run's EMA at train.ema, whose warm-up lets it follow
  # the student from step 0. A fixed 0.99 from step 0 averaged the fast early AdamW steps into a
  # teacher at chance for ~300 steps, whose confident wrong labels held the student back.
  [ema_teacher]="algorithm.name=ema_teacher algorithm.teacher_momentum=null train.ema=0.99"
)
echo "Training supervised (the labelled faces only) and ema_teacher (the same labelled faces plus"
echo "the unlabelled ones) side by side on the embedded synthetic faces. One line per run: step,"
echo "accuracy so far on held-out faces (val), time left. Logs: $OUT/<run>.log"
for run in "${RUNS[@]}"; do
  # shellcheck disable=SC2086
  ( rc=0; $SEMIFER train --config recipes/demo.yaml --out "$OUT/$run" ${ARGS[$run]} "$@" > "$OUT/$run.log" 2>&1 || rc=$?
    echo "$rc" > "$OUT/$run.rc" ) &
done
$PY scripts/demo_progress.py watch "${RUNS[@]/#/$OUT/}"
wait
status=0
for run in "${RUNS[@]}"; do
  if [ "$(cat "$OUT/$run.rc")" != 0 ]; then
    echo "$run failed; last lines of $OUT/$run.log:" >&2
    tail -n 20 "$OUT/$run.log" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit "$status"
echo
$SEMIFER compare "$OUT/supervised" "$OUT/ema_teacher"
$SEMIFER report "$OUT/supervised" "$OUT/ema_teacher" --out "$OUT/report.html" > /dev/null
echo
$PY scripts/demo_progress.py explain "$OUT/supervised" "$OUT/ema_teacher"
