#!/usr/bin/env bash
# One prepared GPU session: the quality comparison of issue 4 (four models x three seeds at an
# equal token budget, bench/quality.py) and the default model (engine.train with a time budget),
# side by side on one CUDA GPU. Everything it produces lands in $OUT as a few archives.
#
# Before (on any machine):  python -m engine.corpus fetch
#                           python -m bench.quality --data data/corpus --out data/quality-gpu \
#                               --vocab 8192 --batch-size 32 --threads 2 --measure-speed data/cpu_speed.json
# Then, on the GPU machine: OUT=somewhere bash bench/gpu_session.sh
# Knobs: SMOKE (0 skips step 1), MODELS, SEEDS, JOBS (the comparison's runs), SJOBS/STHREADS/STIMEOUT
# (its scoring), QTOKENS (tokens per comparison run, default 10.0 M), QTIMEOUT (s), DEFAULT_MIN (minutes of
# training for the default model; 0 skips it), DEFAULT_CONFIG.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-data/gpu-out}
PY=${PYTHON:-python3}
QTOKENS=${QTOKENS:-10010624}  # 1,222 steps of 32 x 256 tokens
QTIMEOUT=${QTIMEOUT:-420}
DEFAULT_MIN=${DEFAULT_MIN:-5}
DEFAULT_CONFIG=${DEFAULT_CONFIG:-assets/configs/default-gpu.json}
DEVICE=${DEVICE:-cuda}
QOUT=${QOUT:-data/quality-gpu}
mkdir -p "$OUT" data
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec > >(tee -a "$OUT/session.log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" || exit 1
Q=(--data data/corpus --out "$QOUT" --vocab 8192 --batch-size 32 --lr 1e-3 --warmup-steps 100 --device "$DEVICE" --threads 1 ${QEXTRA:-})

# 1. a few training steps of every comparison model on the GPU (also its single-process speed):
#    when this fails nothing else is started, so the session's remaining time is kept
if [ "${SMOKE:-1}" = 1 ]; then "$PY" -m bench.quality "${Q[@]}" --measure-speed "$OUT/gpu_speed.json" || exit 1; fi
date -u

# 2. the default model (time budget, best validation kept) and the comparison, side by side
DEFAULT_PID=
[ "$DEFAULT_MIN" != 0 ] && "$PY" -m engine.train --data data/corpus --out data/gpu-default --config "$DEFAULT_CONFIG" \
    --tokenizer assets/model/tokenizer.json --device "$DEVICE" --threads 1 --keep-best \
    --max-minutes "$DEFAULT_MIN" --log-every 200 --name sdr-sfdlm ${DEXTRA:-} > data/gpu-default.log 2>&1 &
[ "$DEFAULT_MIN" != 0 ] && DEFAULT_PID=$!
RUNS=(--tokens "$QTOKENS" --seeds "${SEEDS:-0,1,2}" --models "${MODELS:-sfdlm-uniform,sfdlm-absorbing,transformer-uniform,causal}")
# training only, side by side on the GPU; then the scoring (CPU work) with the machine's cores
# to itself: twelve scorings at once beside twelve GPU feeders did not finish within the time limit
timeout "$QTIMEOUT" "$PY" -m bench.quality "${Q[@]}" "${RUNS[@]}" --jobs "${JOBS:-12}" --eval-every 100 --no-score
echo "comparison training exit $?"
date -u
timeout "${STIMEOUT:-240}" "$PY" -m bench.quality "${Q[@]}" "${RUNS[@]}" --jobs "${SJOBS:-8}" --score \
    --threads "${STHREADS:-2}" ${CPU_SPEED:+--speed "$CPU_SPEED"}
echo "comparison scoring exit $?"
date -u
if [ -n "$DEFAULT_PID" ]; then
  wait "$DEFAULT_PID"
  echo "default model exit $?"
  tail -n 3 data/gpu-default.log
fi

# 3. pack (the device returns at most 8 files of 16 MiB)
tar czf "$OUT/quality.tgz" "$QOUT"/results.json "$QOUT"/*/row.json "$QOUT"/*/log.jsonl \
    "$QOUT"/*/stderr.log 2>/dev/null
tar czf "$OUT/default-logs.tgz" data/gpu-default.log data/gpu-default/log.jsonl 2>/dev/null
if [ -d data/gpu-default/best ]; then
  tar czf "$OUT/default-best.tgz" data/gpu-default/best
  split -b 15m "$OUT/default-best.tgz" "$OUT/default-best.tgz.part-" && rm "$OUT/default-best.tgz"
fi
ls -la "$OUT"
date -u
