#!/usr/bin/env bash
# The evaluation suite on FER2013 (docs/evaluation.md): a 5-fold table, FGSM by region, temperature
# scaling and the HTML report, on the 2-core CPU recipe.
#   bash benchmarks/evaluation_fer2013.sh [DATA_DIR] [OUT]     (defaults below)
# Steps whose outputs exist are skipped or resumed (kfold skips finished folds).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/semifer-data/fer2013}
OUT=${2:-runs/eval_fer2013}
SEMIFER=.venv/bin/semifer
SPEC="fer2013:$DATA"
export OMP_NUM_THREADS=1

# 1. K-fold over the train split, supervised (every item of the 4 training folds is labelled).
$SEMIFER kfold --config recipes/fer2013_cpu.yaml --data "$SPEC" --folds 5 --out "$OUT/kfold" \
    algorithm.name=supervised

# 2. One run on 100 labels per class, evaluated on val, to attack and calibrate.
RUN="$OUT/sup_lpc100"
[ -f "$RUN/summary.json" ] || $SEMIFER train --config recipes/fer2013_cpu.yaml --data "$SPEC" --out "$RUN" \
    algorithm.name=supervised

# 3. FGSM restricted to Grad-CAM regions, eps in [0, 1] pixel units, on 1000 seeded val images.
$SEMIFER attack --checkpoint "$RUN" --data "$SPEC" --split val --eps 0,0.02,...,0.1 \
    --region focused,unfocused,all --limit 1000 --device cpu

# 4. Temperature on 4000 random train images (97 % unseen with 700 labels), half held out;
#    then the val evaluation with it, and Grad-CAM examples for the report.
$SEMIFER calibrate --checkpoint "$RUN" --data "$SPEC" --split train --limit 4000 --device cpu
$SEMIFER eval --checkpoint "$RUN" --data "$SPEC" --split val
$SEMIFER explain --checkpoint "$RUN" --input "$SPEC" --split val --limit 16 --device cpu

# 5. One page with everything.
$SEMIFER report "$RUN" "$OUT/kfold" --out "$OUT/report.html" --title "FER2013 evaluation suite (cnn_small, CPU)"
cat "$OUT/kfold/kfold.md" "$RUN/attack/fgsm.md"
