#!/usr/bin/env bash
# The forecast-quality ablation: SmolLM2-135M-Instruct tuned with unsloth
# (4-bit, LoRA r16, windows 1:1/5:5/20:5) on two periods, each adapter trained only on days before its test period,
# then evaluated walk-forward (41 companies, origins every 5 trading days) under several decoding modes.
#
#   PRICES=<folder of price CSVs> MODEL=<SmolLM2 .gguf> OUT_ROOT=<dir> bash benchmarks/ablation.sh STEP...
#
# STEP is train:<name>, eval:<name>:<mode> or speed:<name>, run in order; a finished step is skipped, an interrupted
# training resumes from its last checkpoint (every 100 steps) and an interrupted evaluation from its answer cache. Names: <period>-<variant>, period p1 (test 2026-03-02 → 04-30,
# trained to 2026-02-27) or p2 (test 2025-10-01 → 12-31, trained to 2025-09-30); variant change, absolute,
# change-nosignals (the default since), candle (its prompts, the candle answer format), change-long (one epoch,
# signals), epoch (one epoch, no signals). STRIDE (default 5) spaces the evaluation's origins. Modes: k8 (median of 8 constrained samples), greedy
# (constrained), free (greedy, unconstrained: the old path).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${PRICES:?folder of price CSVs}" "${MODEL:?the SmolLM2 gguf}" "${OUT_ROOT:?output folder}"

declare -A TRAIN_END=([p1]=2026-02-27 [p2]=2025-09-30)
declare -A TEST=([p1]="2026-03-02 2026-04-30" [p2]="2025-10-01 2025-12-31")

train() {
  local name=$1 period=${1%%-*} variant=${1#*-}
  local dir="$OUT_ROOT/$name"
  [ -f "$dir/model/adapter_config.json" ] && { echo "== $name: trained already"; return; }
  # the arms as measured: twstock signals in the prompts (then the default) except for change-nosignals
  local extra=(--answer-format change --max-steps 200 --signals 1)
  case $variant in
    absolute) extra=(--answer-format absolute --max-steps 200 --signals 1) ;;
    change-nosignals) extra=(--answer-format change --max-steps 200 --signals 0 --news 0) ;;
    candle) extra=(--answer-format candle --max-steps 200 --signals 0 --news 0) ;;
    change-long) extra=(--answer-format change --max-steps 0 --num-epochs 1 --signals 1) ;;
    epoch) extra=(--answer-format change --max-steps 0 --num-epochs 1 --signals 0 --news 0) ;;
  esac
  echo "== train $name: ${extra[*]}"
  python3 main.py --train 1 --data-dir "$PRICES" --offline --model-name "$MODEL" --year 2024 --month 1 \
    --end-date "${TRAIN_END[$period]}" --windows 1:1,5:5,20:5 --load_in_4bit 1 --padding-free 0 \
    --batch-size 32 --gradient-accumulation-steps 1 --max-seq-length 2048 --save-steps 100 --resume \
    --output-dir "$dir" --model-dir "$dir/model" "${extra[@]}"
}

evaluate() {
  local name=$1 mode=$2 period=${1%%-*}
  local dir="$OUT_ROOT/$name" test=(${TEST[$period]})
  [ -d "$dir/eval_$mode" ] && { echo "== $name $mode: evaluated already"; return; }
  # sequences per batch: 1,024 held every window's prompts at once greedily; 1,024 sampled sequences (128
  # prompts x 8) ran out of the H100's memory at 20:5 (before batches were split on running out), so sampling takes
  # 256 unless K_BATCH says otherwise
  # greedy: the default, bands calibrated on the adapter's held-out days; k8 and free compare point forecasts
  # (k8's bands are its samples' quantiles, free has none), so they skip the calibration's forecasts
  local extra=(--samples 8 --bands samples --eval-batch-size "${K_BATCH:-256}")
  case $mode in
    greedy) extra=(--samples 1 --eval-batch-size 1024) ;;
    free) extra=(--samples 1 --decoding free --bands samples --eval-batch-size 1024) ;;
  esac
  echo "== evaluate $name $mode"
  python3 main.py --train 0 --evaluate 1 --data-dir "$PRICES" --offline --end-date 2026-04-30 \
    --output-dir "$dir" --model-dir "$dir/model" --test-start "${test[0]}" --test-end "${test[1]}" \
    --eval-stride "${STRIDE:-5}" --eval-models tuned --eval-name "eval_$mode" "${extra[@]}"
}

speed() {  # generation speed of an adapter, 4-bit and 16-bit inference
  local dir="$OUT_ROOT/$1/model"
  for bits in 1 0; do
    python3 -m benchmarks.generate_speed --model-dir "$dir" --prices "$PRICES" --windows 1:1,5:5,20:5 \
      --modes greedy,greedy-free,k8 --count 128 --batch-size 256 --load-in-4bit $bits
  done
}

for step in "$@"; do
  IFS=: read -r kind name mode <<<"$step"
  case $kind in
    train) train "$name" || echo "== FAILED $step" ;;
    eval) evaluate "$name" "$mode" || echo "== FAILED $step" ;;
    speed) speed "$name" || echo "== FAILED $step" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
