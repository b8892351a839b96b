#!/usr/bin/env bash
# Issue 21's GPU figures in one prepared run (sized for <= 8 minutes on one H100/H200):
# the GPU engine tests (eager, CUDA graphs, compiled), a profile of the batch-8 step,
# fp32 token identity and speed against transformers on the hidden-256 model at batch
# 1/8/64, and preset XL in bf16 at batch 1/8/32/64 (batch 1 against the HBM roofline).
# Everything lands under $OUT (the device tool's output folder; ./gpu_out elsewhere).
#
#   bash benchmarks/gpu_check_inference.sh            # from the repository root
#
# Where pydantic and friends are missing (the device machine), carry wheels in .whl/
# (see the device tool's README); they are installed into /tmp/site first.
set -uo pipefail
source benchmarks/gpu_env.sh  # $OUT, carried wheels, PYTHONPATH

timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/infer 2>&1 | tee "$OUT/pytest_gpu_infer.log"
timeout 60 python3 benchmarks/profile_decode.py --device cuda --batch-size 8 --engine compiled \
  2>&1 | tee "$OUT/profile_batch8_compiled.txt"
timeout 170 python3 benchmarks/generate_throughput.py --device cuda --batch-sizes 1,8,64 --engines graphs,compiled \
  --repeats 1 2>&1 | tee "$OUT/generate_hidden256_fp32.txt"
timeout 150 python3 benchmarks/generate_throughput.py --device cuda --preset XL --vocab 65536 --dtype bf16 \
  --batch-sizes 1,8,32,64 --engines graphs --repeats 1 2>&1 | tee "$OUT/generate_XL_bf16.txt"
