#!/usr/bin/env bash
# The one prepared script for a machine with a GPU (run from the repository root, with the
# project on PYTHONPATH; nothing is installed). Runs the CUDA parity tests on the real GPU,
# then the GPU benchmark, then the worker-thread scaling table on the machine's CPU cores
# (W = 1, 2, 4, 8, 16). Writes logs to $OUT when it is set. The first run compiles every
# kernel (~90 signatures): allow several minutes for the parity script.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python -c "import numba, numba.cuda; print('numba', numba.__version__); print('cuda available', numba.cuda.is_available())" 2>&1 | tee -a "$out/gpu.txt"
timeout 420 python tests/cuda_parity_script.py 2>&1 | tee "$out/parity_gpu.txt" | tail -n 60
echo "parity exit: ${PIPESTATUS[0]}"
timeout 300 python benchmarks/bench_gpu.py 2>&1 | tee "$out/bench_gpu.txt"
nproc | sed 's/^/cpu cores: /' | tee "$out/bench_workers.txt"
timeout 150 python benchmarks/bench_workers.py --rounds 5 --min-time 0.1 --model realnvp --model maf \
  2>&1 | tee -a "$out/bench_workers.txt"
