#!/usr/bin/env bash
# The same runs through main.py on two trees of this project, their files compared with paths and timings set
# aside: what checked that moving the modules into capability folders changed no output (docs/measured.md).
#   PRICES=<folder of price CSVs> [MODEL=<base model: a .gguf, HF folder or Hub id>] OUT=<dir> \
#       bash benchmarks/equivalence.sh <old tree> <new tree>
# The adapter is trained once, by the old tree, and evaluated and forecast by both. A tree is a checkout or
# `git archive REV | tar -x -C DIR`. On a CPU leave MODEL unset (the bundled SmolLM2); on a GPU give its path.
set -u
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd)
: "${PRICES:?set PRICES}" "${OUT:?set OUT}"
MODEL_FLAG=()
if [ -n "${MODEL:-}" ]; then MODEL_FLAG=(--model-name "$MODEL"); fi
mkdir -p "$OUT"
printf '[{"code": "2330"}, {"code": "2454"}, {"code": "6569"}]' > "$OUT/companies.json"
(cd "$OLD" && python3 main.py --train 1 --data-dir "$PRICES" --offline "${MODEL_FLAG[@]}" --year 2025 --month 1 \
  --end-date 2025-12-31 --company-list-file "$OUT/companies.json" --windows 1:1,5:5 --max-steps 3 \
  --output-dir "$OUT/train" --model-dir "$OUT/model") > "$OUT/train.log" 2>&1 || { echo "training failed: $OUT/train.log"; exit 1; }
for side in old new; do
  tree=$OLD; [ $side = new ] && tree=$NEW
  (cd "$tree" && python3 main.py --train 0 --evaluate 1 --data-dir "$PRICES" --offline --model-dir "$OUT/model" \
     --output-dir "$OUT/$side" --test-start 2026-01-05 --test-end 2026-02-27 --eval-stride 10 \
     --eval-models tuned,base,lstm --lstm-epochs 3 --bootstrap 200 --bands calibrated --samples 2 \
     && python3 main.py --train 0 --data-dir "$PRICES" --offline --model-dir "$OUT/model" --output-dir "$OUT/$side" \
     --code 2330,6569 --past 5 --future 5 --end-date 2026-04-30) > "$OUT/$side.log" 2>&1 \
     || { echo "$side tree failed: $OUT/$side.log"; exit 1; }
done
cd "$OUT"
for f in $(cd old && find . -type f \( -name "*.json" -o -name "*.csv" -o -name "*.jsonl" -o -name "*.md" -o -name "*.png" \) \
    | grep -v -e cache -e checkpoint | sort); do
  if [ ! -f "new/$f" ]; then echo "MISSING in new: $f"; continue; fi
  if cmp -s "old/$f" "new/$f"; then echo "same  $f"; else
    n=$(diff <(sed "s#$OUT/old#X#g" "old/$f") <(sed "s#$OUT/new#X#g" "new/$f") | grep -c '^[<>]')
    echo "DIFF  $f ($n lines after the paths are set aside)"; fi
done
