#!/usr/bin/env bash
# Does pre-training on registry English pay? Two runs of equal compute from the same seed,
# side by side on two cores (one thread each), with the shipped tokenizer and configuration:
#   A: SDR for STEPS steps (lr 2e-3), then SDR for STEPS more (lr 1e-3, warm-up 50)
#   B: Debian's package descriptions for STEPS steps, then the same SDR phase
# Then each model's test-split bound (engine.evaluate) and draft quality (bench.draft_quality,
# its default rows, one thread). Figures land in $OUT: eval-A.json, dq-A.txt / .json, likewise B.
#
# Before:  bash .ci/dev py -m engine.corpus fetch && bash .ci/dev py -m engine.corpus english
# Then:    bash bench/pretrain_english.sh            (about an hour on a 2-core machine)
# Knobs: STEPS (default 2000), SEED (11), DRAFTS (per row, 50), OUT (data/pretrain-ab), PYTHON
# (default .venv/bin/python, which `bash .ci/dev` makes, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-2000}
SEED=${SEED:-11}
DRAFTS=${DRAFTS:-50}
OUT=${OUT:-data/pretrain-ab}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python} || PY=${PYTHON:-python3}
mkdir -p "$OUT"
COMMON=(--config assets/configs/default.json --tokenizer assets/model/tokenizer.json --max-steps "$STEPS"
        --eval-every 500 --keep-best --threads 1)
phase1() { "$PY" -m engine.train --data "$2" --out "$OUT/$1-1" "${COMMON[@]}" --seed "$SEED" > "$OUT/$1-1.log" 2>&1; }
phase2() {
  "$PY" -m engine.train --data data/corpus --out "$OUT/$1-2" --init-from "$OUT/$1-1/model" --max-steps "$STEPS" \
    --lr 0.001 --warmup-steps 50 --eval-every 500 --keep-best --threads 1 --seed $((SEED + 1)) > "$OUT/$1-2.log" 2>&1
}
score() {
  "$PY" -m engine.evaluate --model "$OUT/$1-2/best" --data data/corpus --split test --json --threads 1 > "$OUT/eval-$1.json"
  "$PY" -m bench.draft_quality --model "$OUT/$1-2/best" --threads 1 --drafts "$DRAFTS" --json "$OUT/dq-$1.json" > "$OUT/dq-$1.txt" 2>&1
}
arm() { phase1 "$1" "$2" && phase2 "$1" && score "$1"; }
arm A data/corpus & a=$!
arm B data/english & b=$!
wait $a && wait $b
for arm in A B; do
  echo "== $arm: test bound"; grep -E '"nelbo_bits_per_token"' "$OUT/eval-$arm.json"
  echo "== $arm: draft quality"; cat "$OUT/dq-$arm.txt"
done
