#!/usr/bin/env bash
# The default world model on one GPU, each phase inside a wall-clock budget, then GPU speed checks.
#
#   collect LaneSim (48 episodes + 72 with wandering movement, seed 0)
#   → train the nano CNN tokenizer for TOK_MIN minutes
#   → tokenize every episode
#   → train the nano dynamics for DYN_MIN minutes
#   → bench_dynamics and bench_env on the GPU (bf16 and fp32)
#
# The training budgets use `--time-limit`: the run times its own steps, shortens its schedule to fit
# and stops at the budget with a final evaluation and checkpoint. Every stage's full output goes to
# LOG; the console gets one line per stage. Re-running skips finished stages.
#
# Usage:
#   ROOT=runs/gpu bash benchmarks/gpu_world_model.sh
#   ROOT=runs/gpu TOK_MIN=2.5 DYN_MIN=4 OUT_DIR=results bash benchmarks/gpu_world_model.sh
#
# Variables (defaults): ROOT (runs/gpu) holds data4/, tok8/ and wm8/; TOK_MIN (2.5) and DYN_MIN (4)
# minutes; PLAIN (48) and WANDER (72) episodes; WORKERS (cores) collection processes; TOK_BATCH (64)
# frames and DYN_BATCH (64) sequences per step; OUT_DIR (ROOT) receives the log and the JSON of the
# benchmarks; LD (lol-dreamer) the command; BENCH (1) runs the speed checks on BENCH_DEVICE (cuda).
set -euo pipefail
ROOT=${ROOT:-runs/gpu}
TOK_MIN=${TOK_MIN:-2.5}
DYN_MIN=${DYN_MIN:-4}
PLAIN=${PLAIN:-48}
WANDER=${WANDER:-72}
WORKERS=${WORKERS:-$(nproc)}
TOK_BATCH=${TOK_BATCH:-64}
DYN_BATCH=${DYN_BATCH:-64}
OUT_DIR=${OUT_DIR:-$ROOT}
LD=${LD:-lol-dreamer}
BENCH=${BENCH:-1}
BENCH_DEVICE=${BENCH_DEVICE:-cuda}
DATA=$ROOT/data4
TOK=$ROOT/tok8
WM=$ROOT/wm8
LOG=$OUT_DIR/gpu_world_model.log
mkdir -p "$ROOT" "$OUT_DIR"
T0=$(date +%s)

stage() {  # stage NAME COMMAND...: run it with its output in LOG, say how long it took
  local name=$1 t=$(date +%s)
  shift
  echo "== $name: $*" >>"$LOG"
  if "$@" >>"$LOG" 2>&1; then
    echo "$name: done in $(($(date +%s) - t)) s (total $(($(date +%s) - T0)) s)"
  else
    local rc=$?
    echo "$name: FAILED (exit $rc) after $(($(date +%s) - t)) s; the end of $LOG:"
    tail -c 3000 "$LOG" | tr '\r' '\n' | tail -n 25
    return $rc
  fi
}

python3 - <<'EOF'
import torch
ok = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA {'on ' + torch.cuda.get_device_name(0) if ok else 'not available'}")
EOF

if [ ! -f "$DATA/index.json" ]; then
  stage collect $LD collect --out "$DATA" --episodes "$PLAIN" --workers "$WORKERS" --seed 0 --quiet
  stage collect-wander $LD collect --out "$DATA" --episodes "$WANDER" --workers "$WORKERS" \
    --wander 0.03 --seed 0 --quiet
fi
if [ ! -f "$TOK/model.safetensors" ]; then
  stage tokenizer $LD train tokenizer --data "$DATA" --out "$TOK" --preset nano --arch cnn \
    --steps 200000 --batch-size "$TOK_BATCH" --seq-len 1 --lr 1e-3 --lpips-weight 0 --ema \
    --ema-decay 0.999 --eval-every 2000 --save-every 5000 --log-every 200 --time-limit "$TOK_MIN"
fi
stage tokenize $LD tokenize --tokenizer "$TOK" --data "$DATA" --only-missing --batch-size 32
if [ ! -f "$WM/model.safetensors" ]; then
  stage dynamics $LD train dynamics --data "$DATA" --tokenizer "$TOK" --out "$WM" --preset nano \
    --steps 200000 --batch-size "$DYN_BATCH" --lr 1e-3 --flow-frac 0.5 --ema --ema-decay 0.999 \
    --eval-every 1000 --save-every 2000 --log-every 100 --time-limit "$DYN_MIN"
fi
grep -a "^Trained steps" "$LOG" | cut -c1-400 || true

if [ "$BENCH" = 1 ]; then
  stage bench-dynamics-bf16 python3 benchmarks/bench_dynamics.py --device "$BENCH_DEVICE" --dtype bf16 \
    --contexts 16 32 --batches 1 16 64 256 1024 --rollout 1000 --decode \
    --json "$OUT_DIR/bench_dynamics_${BENCH_DEVICE%%:*}_bf16.json"
  stage bench-dynamics-fp32 python3 benchmarks/bench_dynamics.py --device "$BENCH_DEVICE" --dtype fp32 \
    --contexts 32 --batches 1 64 1024 --rollout 0 --json "$OUT_DIR/bench_dynamics_${BENCH_DEVICE%%:*}_fp32.json"
  stage bench-env python3 benchmarks/bench_env.py --world-model "$WM" --device "$BENCH_DEVICE" \
    --envs vector --parts batch1 batched --ns 1 64 256 --dtypes float32 bfloat16 --shards 1 --steps 20 \
    --json "$OUT_DIR/bench_env_${BENCH_DEVICE%%:*}.json"
fi
echo "all stages done in $(($(date +%s) - T0)) s; log: $LOG"
