#!/usr/bin/env bash
# One-shot GPU check for a lent GPU machine (torch with CUDA, nvcc, no network): build for the
# local GPU's arch (default sm_90a for an H200), run the test suite on cuda, run the GPU
# benchmarks, and write everything to $OUT (default ./gpu-out). Usage: bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export KERNELFUSE_CUDA=ON KERNELFUSE_CUDA_ARCHS=${KERNELFUSE_CUDA_ARCHS:-90a} MAX_JOBS=${MAX_JOBS:-16}
export CMAKE_BUILD_PARALLEL_LEVEL=$MAX_JOBS
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvcc --version | tail -1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/env.txt" 2>&1
t0=$(date +%s)
python -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
python -c "import kernelfuse, json; print(json.dumps(kernelfuse.build_info()))" | tee -a "$OUT/env.txt"
# CUDA tests first (fast feedback), then the full suite on both devices.
KERNELFUSE_POISON=1 python -m pytest -q -k "cuda" tests 2>&1 | tail -40 > "$OUT/tests_cuda.txt"
python -m pytest -q tests -m "not slow" 2>&1 | tail -60 > "$OUT/tests_all.txt"
tail -3 "$OUT/tests_cuda.txt" "$OUT/tests_all.txt"
python bench/run_all.py --device cuda --results "$OUT/RESULTS-cuda.md" > "$OUT/bench.log" 2>&1
cp bench/results/*-cuda.md "$OUT/" 2>/dev/null
cat "$OUT/RESULTS-cuda.md" 2>/dev/null | tail -40
