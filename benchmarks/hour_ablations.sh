#!/usr/bin/env bash
# Issue 16 step 4: the seed methods' ablations on a short version of the CPU-hour SSL recipe
# (recipes/fer2013_cpu_hour_ssl.yaml at 2,000 steps, bf16 + channels_last where the CPU has
# native bf16), 100 labels per class, split SEED. Rows go to benchmarks/results/fer2013_ablations.jsonl;
# `python benchmarks/paired.py benchmarks/results/fer2013_ablations.jsonl --markdown` makes the table.
#   bash benchmarks/hour_ablations.sh DATA_DIR SEED [group ...]
# groups: reference (supervised, EMA teacher), baselines sitfer dta ssfer (the papers' defaults),
# ssfer_hour (II -> III with stage III at the full 6,000-step recipe, rows to
# benchmarks/results/fer2013_hour.jsonl; III_OVERRIDES="k=v ..." and III_TAG=_name vary stage III),
# ns_hour (a Noisy Student of ssfer_hour's teacher after label-shift adaptation; NS_OVERRIDES and
# NS_TAG vary it), simclr simclr_hour (from SimCLR on every training face, not in the papers: the
# 2,000-step supervised and EMA-teacher rows, the hour's EMA teacher; SIMCLR=folder), simclr_ssfer
# (SimCLR -> FaceMix -> EMA teacher at 2,000 steps a stage; simclr_ssfer_hour: III at the hour),
# ensemble_hour (the mean prediction of the ssfer_hour and simclr_ssfer_hour teachers), ns_ensemble_hour
# (a Noisy Student of those two teachers), pair_hour (two 3,000-step stage-III teachers side by side,
# adapted, their mean prediction: the eighth session's recipe), cross_hour (cross_teacher from the two stage-II starts, then
# the mean prediction of its two networks), dst_hour (Debiased Self-Training in place of the EMA teacher),
# vit_ii (SSFER stage II on a ViT from MAE and from random weights; VIT_OVERRIDES, VIT_TAG), vit_iii (stage III from each of those, side by side),
# dta_floor freematch_floor (the self-adaptive thresholds floored at 0.7, not in the papers: at
# their 1/K start they pass every pseudo-label and the run collapses)
set -euo pipefail
DATA=${1:?FER2013 folder (train/, val/)}; SEED=${2:-0}; shift 2 || true
GROUPS_=${*:-baselines sitfer dta ssfer}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
PY=${PY:-$ROOT/.venv/bin/python}
RESULTS=${RESULTS:-$ROOT/benchmarks/results/fer2013_ablations.jsonl}
SHORT=(train.iterations=2000 train.eval_every=500 train.amp=fast train.channels_last=true)
bench() {  # bench TAG ALGORITHM [k=v ...]
  local tag=$1 algo=$2; shift 2
  "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$ROOT/recipes/fer2013_cpu_hour_ssl.yaml" \
    --algorithms "$algo" --seeds "$SEED" --tag "$tag" --results "$RESULTS" "${SHORT[@]}" "$@"
}
II=$PWD/runs/bench/fer2013/facemix_lpc100_s${SEED}abl_ii   # stage II of the ssfer groups
stage_ii() { [ -f "$II/summary.json" ] || bench abl_ii facemix; }
SIMCLR=${SIMCLR:-$PWD/runs/bench/fer2013/simclr_hour}       # SimCLR on every training face, shared by the splits
SII=$PWD/runs/bench/fer2013/facemix_lpc100_s${SEED}abl_simclr_ii   # stage II from SimCLR
VIT=$PWD/runs/bench/ssfer_hour   # the ViT rows: recipes/ssfer_fer2013_cpu_hour.yaml's stage configs, its MAE
stage_config() {  # stage_config INDEX FILE: stage I (0) or II (1) of the SSFER hour recipe as a plain config file
  "$PY" -c "import sys; from semifer.config import save_config; from semifer.ssl.pipeline import load_recipe, stage_configs
save_config(stage_configs(load_recipe('$ROOT/recipes/ssfer_fer2013_cpu_hour.yaml', None, []), '$VIT')[$1], sys.argv[1])" "$2"; }
mae() { [ -f "$VIT/mae/summary.json" ] || { mkdir -p "$VIT"; stage_config 0 "$VIT/stage_i.yaml"
  "$(dirname "$PY")/semifer" pretrain --config "$VIT/stage_i.yaml" --data "fer2013:$DATA" --out "$VIT/mae" \
    $([ -f "$VIT/mae/ckpt/last_state.pt" ] && echo resume=true); }; }
simclr() { [ -f "$SIMCLR/summary.json" ] || "$(dirname "$PY")/semifer" pretrain --config "$ROOT/recipes/simclr_fer2013_cpu_hour.yaml" \
  --data "fer2013:$DATA" --out "$SIMCLR" $([ -f "$SIMCLR/ckpt/last_state.pt" ] && echo resume=true); }
for group in $GROUPS_; do
  case $group in
    reference)  # the two rows every ablation is read against
      bench abl supervised
      bench abl ema_teacher ;;
    baselines)
      bench abl supervised
      bench abl ema_teacher
      bench abl_tflip ema_teacher algorithm.teacher_flip=true
      bench abl fixmatch algorithm.tau=0.7   # 0.95 (the paper) masks nearly all at 2,000 steps
      bench abl freematch ;;
    sitfer)
      bench abl_sem sitfer algorithm.levels=sem
      bench abl_full sitfer ;;
    dta)
      bench abl_snl dta_snl
      bench abl_nosnl dta_snl algorithm.snl=false ;;
    dta_floor)
      bench abl_snl_tmin70 dta_snl algorithm.teacher_momentum=0.99 algorithm.tau_min=0.7
      bench abl_nosnl_tmin70 dta_snl algorithm.teacher_momentum=0.99 algorithm.tau_min=0.7 algorithm.snl=false ;;
    freematch_floor)
      bench abl_tmin70 freematch algorithm.tau_min=0.7 ;;
    ssfer_hour)  # stage II as in `ssfer` (2,000 steps), then stage III on the whole hour recipe
      stage_ii
      "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$ROOT/recipes/fer2013_cpu_hour_ssl.yaml" \
        --algorithms ema_teacher --seeds "$SEED" --tag "_hour_ii_iii${III_TAG:-}" \
        --results "${HOUR_RESULTS:-$ROOT/benchmarks/results/fer2013_hour.jsonl}" "model.init=$II/ckpt/last.safetensors" \
        ${III_OVERRIDES:-} ;;
    ssfer)  # stage II (FaceMix on the labels) -> stage III (EMA teacher from II's weights)
      stage_ii
      bench abl_ii_iii ema_teacher "model.init=$II/ckpt/last.safetensors" ;;
    simclr)  # a SimCLR start (recipes/simclr_fer2013_cpu_hour.yaml, not in the papers) for the 2,000-step rows
      simclr
      bench abl_simclr supervised "model.init=$SIMCLR"
      bench abl_simclr ema_teacher "model.init=$SIMCLR" ;;
    simclr_ssfer)  # SimCLR -> FaceMix (II) -> EMA teacher (III): the combined recipe, 2,000 steps a stage
      simclr
      [ -f "$SII/summary.json" ] || bench abl_simclr_ii facemix "model.init=$SIMCLR"
      bench abl_simclr_ii_iii ema_teacher "model.init=$SII/ckpt/last.safetensors" ;;
    simclr_hour|simclr_ssfer_hour)  # the EMA teacher of the hour recipe from the SimCLR start, or from
                                    # FaceMix on it (simclr_ssfer's stage II): SimCLR -> II -> III
      simclr
      init=$SIMCLR tag=_hour_simclr
      if [ $group = simclr_ssfer_hour ]; then
        [ -f "$SII/summary.json" ] || bench abl_simclr_ii facemix "model.init=$SIMCLR"
        init=$SII/ckpt/last.safetensors tag=_hour_simclr_ii_iii
      fi
      "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$ROOT/recipes/fer2013_cpu_hour_ssl.yaml" \
        --algorithms ema_teacher --seeds "$SEED" --tag "$tag${III_TAG:-}" \
        --results "${HOUR_RESULTS:-$ROOT/benchmarks/results/fer2013_hour.jsonl}" "model.init=$init" ${III_OVERRIDES:-} ;;
    vit_ii)  # SSFER stage II (FaceMix, 2,000 steps) on the recipe's ViT (vit_tiny_c8, the conv stem, since the
             # ninth session) from its MAE encoder and from random
             # weights, both with VIT_OVERRIDES (e.g. "model.options.global_pool=avg train.layer_decay=0.75")
      mae
      stage_config 1 "$VIT/stage_ii.yaml"
      for start in mae scratch; do
        init=$([ $start = mae ] && echo "$VIT/mae/encoder.safetensors")
        "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$VIT/stage_ii.yaml" --algorithms facemix \
          --seeds "$SEED" --tag "abl_vit_${start}${VIT_TAG:-}" --results "$RESULTS" "model.init=$init" ${VIT_OVERRIDES:-}
      done ;;
    vit_iii)  # SSFER stage III (EMA teacher, the recipe's 2,000 steps) from each of vit_ii's two stage IIs (same
              # VIT_OVERRIDES / VIT_TAG; run vit_ii first): does stage I's gain survive stage III? One per core.
      stage_config 2 "$VIT/stage_iii.yaml"
      for start in mae scratch; do
        II_RUN=$PWD/runs/bench/fer2013/facemix_lpc100_s${SEED}abl_vit_${start}${VIT_TAG:-}
        [ -f "$II_RUN/summary.json" ] || { echo "vit_iii: no stage II at $II_RUN; run the vit_ii group first" >&2; exit 2; }
        "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$VIT/stage_iii.yaml" --algorithms ema_teacher \
          --seeds "$SEED" --tag "abl_vit_${start}_iii${VIT_TAG:-}" --results "$RESULTS" \
          "model.init=$II_RUN/ckpt/last.safetensors" model.init_head=true ${VIT_OVERRIDES:-} &
      done
      wait ;;
    ns_hour)  # the teacher of ssfer_hour (with III_TAG), adapted to the unlabelled faces' class prior,
              # then a Noisy Student from scratch on the whole hour recipe (run ssfer_hour first)
      T=$PWD/runs/bench/fer2013/ema_teacher_lpc100_s${SEED}_hour_ii_iii${III_TAG:-}
      H=${HOUR_RESULTS:-$ROOT/benchmarks/results/fer2013_hour.jsonl}
      [ -f "$T/summary.json" ] || { echo "ns_hour: no teacher at $T; run the ssfer_hour group first" >&2; exit 2; }
      [ -f "$T/ckpt/last.prior.json" ] || "$PY" "$HERE/prior_shift.py" --data "fer2013:$DATA" --rows "$H" "$HERE"/results/fer2013_*.jsonl \
        --match "$(basename "$T")" --store --out "$ROOT/benchmarks/results/fer2013_prior.jsonl"
      "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$ROOT/recipes/fer2013_cpu_hour_ssl.yaml" \
        --algorithms noisy_student --seeds "$SEED" --tag "_hour_ns${NS_TAG:-}" --results "$H" \
        "algorithm.teacher=$T" ${NS_OVERRIDES:-} ;;
    ns_ensemble_hour)  # a Noisy Student of ensemble_hour's two teachers (their mean labels, each adapted to the
                       # unlabelled faces' prior first), learning that prior itself (prior=online)
      T1=$PWD/runs/bench/fer2013/ema_teacher_lpc100_s${SEED}_hour_simclr_ii_iii${III_TAG:-}
      T2=$PWD/runs/bench/fer2013/ema_teacher_lpc100_s${SEED}_hour_ii_iii${III_TAG:-}
      H=${HOUR_RESULTS:-$ROOT/benchmarks/results/fer2013_hour.jsonl}
      for T in "$T1" "$T2"; do
        [ -f "$T/summary.json" ] || { echo "ns_ensemble_hour: no teacher at $T; run simclr_ssfer_hour and ssfer_hour first" >&2; exit 2; }
        [ -f "$T/ckpt/last.prior.json" ] || "$PY" "$HERE/prior_shift.py" --data "fer2013:$DATA" --rows "$H" \
          --match "$(basename "$T")" --store --out "$ROOT/benchmarks/results/fer2013_prior.jsonl"
      done
      "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$ROOT/recipes/fer2013_cpu_hour_ssl.yaml" \
        --algorithms noisy_student --seeds "$SEED" --tag "_hour_ns_ens${III_TAG:-}" --results "$H" \
        "algorithm.teacher=[$T1,$T2]" algorithm.prior=online ${NS_OVERRIDES:-} ;;
    pair_hour)  # two half-length stage-III teachers side by side, one per core (eighth session): simclr_ssfer_hour's
                # and ssfer_hour's, with PAIR_OVERRIDES (default 3,000 steps, test-time shifts) and III_TAG
                # (default _ur4_prior_3k), each adapted to the unlabelled faces' prior, then their mean prediction
      O=${PAIR_OVERRIDES:-train.uratio=4 train.iterations=3000 train.eval_every=500 train.eval_shift=0.06}
      T=${III_TAG:-_ur4_prior_3k}
      simclr
      III_OVERRIDES="$O" III_TAG=$T bash "$0" "$DATA" "$SEED" simclr_ssfer_hour & first=$!
      III_OVERRIDES="$O" III_TAG=$T bash "$0" "$DATA" "$SEED" ssfer_hour
      wait $first
      for R in "$PWD/runs/bench/fer2013/ema_teacher_lpc100_s${SEED}_hour_simclr_ii_iii$T" \
               "$PWD/runs/bench/fer2013/ema_teacher_lpc100_s${SEED}_hour_ii_iii$T"; do
        [ -f "$R/ckpt/last.prior.json" ] || "$(dirname "$PY")/semifer" adapt-prior --checkpoint "$R" --data "fer2013:$DATA" --split train
      done
      III_TAG=$T bash "$0" "$DATA" "$SEED" ensemble_hour ;;
    cross_hour)  # cross_teacher (not in the papers): student A from SimCLR -> FaceMix (simclr_ssfer's stage II), its
                 # peer B from FaceMix on random weights (ssfer's stage II), each taught by the other's EMA teacher
                 # on the hour recipe's stage III (the recipe's ema_teacher options given again: a new algorithm
                 # name drops them; III_OVERRIDES / III_TAG vary it); then B as a run of its own, both adapted to
                 # the unlabelled faces' prior (semifer adapt-prior), and their mean prediction
      simclr; stage_ii
      [ -f "$SII/summary.json" ] || bench abl_simclr_ii facemix "model.init=$SIMCLR"
      H=${HOUR_RESULTS:-$ROOT/benchmarks/results/fer2013_hour.jsonl}
      "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$ROOT/recipes/fer2013_cpu_hour_ssl.yaml" \
        --algorithms cross_teacher --seeds "$SEED" --tag "_hour_x${III_TAG:-}" --results "$H" \
        "model.init=$SII/ckpt/last.safetensors" "algorithm.peer_init=$II" algorithm.tau=0.7 \
        algorithm.teacher_momentum=0.99 algorithm.prior=online ${III_OVERRIDES:-}
      X=$PWD/runs/bench/fer2013/cross_teacher_lpc100_s${SEED}_hour_x${III_TAG:-}
      [ -d "${X}_peer" ] || "$PY" "$HERE/peer_run.py" "$X"
      for T in "$X" "${X}_peer"; do
        [ -f "$T/ckpt/last.prior.json" ] || "$(dirname "$PY")/semifer" adapt-prior --checkpoint "$T" --data "fer2013:$DATA" --split train
      done
      "$PY" "$HERE/ensemble.py" --data "fer2013:$DATA" --runs "$X" "${X}_peer" --rows "$H" \
        --out "${ENSEMBLE_RESULTS:-$ROOT/benchmarks/results/fer2013_ensemble.jsonl}" ;;
    dst_hour)  # Debiased Self-Training (not in the papers) in place of simclr_ssfer_hour's EMA teacher, from the same
               # stage II, at the 3,000-step recipe (the ema_teacher options given again: a new algorithm name drops
               # them; III_OVERRIDES / III_TAG vary it), then adapted to the unlabelled faces' prior
      simclr
      [ -f "$SII/summary.json" ] || bench abl_simclr_ii facemix "model.init=$SIMCLR"
      T=${III_TAG:-_ur4_prior_3k}
      "$PY" "$HERE/fer2013.py" --data "fer2013:$DATA" --config "$ROOT/recipes/fer2013_cpu_hour_ssl.yaml" \
        --algorithms dst --seeds "$SEED" --tag "_hour_simclr_ii_iii$T" \
        --results "${HOUR_RESULTS:-$ROOT/benchmarks/results/fer2013_hour.jsonl}" "model.init=$SII/ckpt/last.safetensors" \
        train.uratio=4 train.iterations=3000 train.eval_every=500 train.eval_shift=0.06 \
        algorithm.tau=0.7 algorithm.teacher_momentum=0.99 algorithm.prior=online ${III_OVERRIDES:-}
      R=$PWD/runs/bench/fer2013/dst_lpc100_s${SEED}_hour_simclr_ii_iii$T
      [ -f "$R/ckpt/last.prior.json" ] || "$(dirname "$PY")/semifer" adapt-prior --checkpoint "$R" --data "fer2013:$DATA" --split train ;;
    ensemble_hour)  # the mean prediction of ssfer_hour's and simclr_ssfer_hour's teachers (same III_TAG; run
                    # both first): two single-thread runs side by side fill a 2-core machine
      runs=("$PWD/runs/bench/fer2013/ema_teacher_lpc100_s${SEED}_hour_simclr_ii_iii${III_TAG:-}"
            "$PWD/runs/bench/fer2013/ema_teacher_lpc100_s${SEED}_hour_ii_iii${III_TAG:-}")
      "$PY" "$HERE/ensemble.py" --data "fer2013:$DATA" --runs "${runs[@]}" \
        --rows "${HOUR_RESULTS:-$ROOT/benchmarks/results/fer2013_hour.jsonl}" \
        --out "${ENSEMBLE_RESULTS:-$ROOT/benchmarks/results/fer2013_ensemble.jsonl}" ;;
    *) echo "unknown group $group (reference baselines sitfer dta ssfer ssfer_hour ns_hour simclr simclr_ssfer simclr_hour simclr_ssfer_hour ensemble_hour ns_ensemble_hour pair_hour cross_hour dst_hour vit_ii dta_floor freematch_floor)" >&2; exit 2 ;;
  esac
done
