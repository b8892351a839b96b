"""Where a decode step's time goes: torch.profiler over the engine's steps at one batch size.

Builds the generation benchmark's random model (`generate_throughput.build_models`), fills
`--batch-size` slots with its prompts, runs untimed steps (compiling or capturing CUDA graphs
there), then profiles `--steps` steps and prints the operators by self time on CPU and GPU,
and the wall time per step next to the time the GPU was busy.

    PYTHONPATH=src python benchmarks/profile_decode.py --device cuda --batch-size 8 --engine compiled
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from frugal_lm.infer.engine import Engine, SamplingParams
from frugal_lm.infer.loading import LoadedModel
from generate_throughput import (
    ENGINES,
    add_model_arguments,
    build_models,
    make_prompts,
)  # benchmarks/, beside this script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--engine", choices=tuple(ENGINES), default="compiled")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25, help="operators to print")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, config, tokenizer, _, ours = build_models(args)
    engine = Engine(LoadedModel(ours, config, tokenizer, None), max_batch_size=args.batch_size, **ENGINES[args.engine])  # type: ignore[arg-type]
    prompts = make_prompts(tokenizer, args.batch_size, args.prompt_len)
    engine.add_many(prompts, [SamplingParams(max_new_tokens=args.new_tokens)] * len(prompts))
    warmup = args.new_tokens - args.steps - 1
    for _ in range(warmup):
        engine.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        sync()
        wall = time.perf_counter() - start
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort, row_limit=args.rows))
    gpu_busy = (
        sum(event.self_device_time_total for event in profiler.key_averages()) / 1e3 if args.device == "cuda" else 0
    )
    print(
        f"{args.engine} engine, batch {args.batch_size}: {1e3 * wall / args.steps:.2f} ms per step (under the "
        f"profiler); GPU kernels {gpu_busy / args.steps:.2f} ms per step"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
