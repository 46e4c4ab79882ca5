#!/usr/bin/env bash
# One call on the GPU machine (the device tool): environment, GPU correctness tests, then benchmarks.
# Run from the repo root with .whl/ (lark wheel) and .data/matrices carried; results go under $OUT.
# Usage: bash benchmarks/gpu_session.sh "<kernels>" "<matrix filter>" [test|notest]
# BENCH_ARGS overrides the extra run.py arguments (default "--dtypes float32"), e.g. BENCH_ARGS="--quick".
set -uo pipefail
KERNELS="${1:-spmv,spmm32,spmm128,sddmm}"
MATRICES="${2:-}"
TESTS="${3:-test}"
OUT="${OUT:-/tmp/out}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD SPARSEC_MATRICES=$PWD/.data/matrices SPARSEC_CACHE_DIR=/tmp/sccache PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/gpu.txt"
if [ "$TESTS" = test ]; then
  TRITON_INTERPRET=0 timeout 300 python3 -m pytest -q -n 8 -p no:cacheprovider tests/backends/test_gpu.py \
    tests/backends/test_triton.py > "$OUT/gpu_tests.log" 2>&1
  echo "tests exit $?"; tail -4 "$OUT/gpu_tests.log"
fi
timeout "${BENCH_TIMEOUT:-400}" python3 benchmarks/run.py --device gpu --kernels "$KERNELS" ${BENCH_ARGS:---dtypes float32} \
  ${MATRICES:+--matrices "$MATRICES"} \
  --out "$OUT/bench" > "$OUT/bench.log" 2>&1
echo "bench exit $?"
sed -n '1,/## Fraction of the floor/p' "$OUT/bench/summary.md" | grep -v "^$" | head -60
tail -3 "$OUT/bench.log"
tar czf "$OUT/bench.tgz" -C "$OUT" bench && rm -rf "$OUT/bench"
