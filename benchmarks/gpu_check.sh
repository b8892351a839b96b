#!/usr/bin/env bash
# Issue 17's GPU figures in one prepared run (sized for <= 8 minutes on one H100/H200):
# the GPU tests, the compiled block's recompile check, and the training throughput
# benchmark for presets B, L and XL, eager and compiled, with transformers' HRM at B.
# Everything lands under $OUT (the device tool's output folder; ./gpu_out elsewhere).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# Where pydantic and friends are missing (the device machine), carry wheels in .whl/
# (see the device tool's README); they are installed into /tmp/site first.
set -uo pipefail
source benchmarks/gpu_env.sh  # $OUT, carried wheels, PYTHONPATH

timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu 2>&1 | tee "$OUT/pytest_gpu.log"
# Recompiles of the per-block compiled step after its first steps would show here.
TORCH_LOGS=recompiles timeout 330 python3 benchmarks/train_throughput.py --device cuda --presets B,L,XL \
  --modes eager,compiled --rows 4 --row-len 4096 --steps 8 --transformers-at B \
  --json "$OUT/train_throughput.json" 2>&1 | tee "$OUT/train_throughput.log"
grep -c "Recompiling" "$OUT/train_throughput.log" | sed 's/^/recompile log lines: /' | tee -a "$OUT/train_throughput.log"
