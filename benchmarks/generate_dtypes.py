"""Inference dtypes on one machine: fp32 against bf16 and int8 weights, on a trained model.

For a trained model (a `frugal demo` directory, or any `--model` the CLI takes) and the
held-out prompts next to it, each `--dtype` is measured against fp32 on the same machine:
- agreement: the fp32 engine's greedy tokens are the reference; every other dtype is
  teacher-forced along them (`Engine.feed`), and a token agrees when that dtype's argmax at
  the position is the reference token. Teacher forcing scores every position on its own,
  where free-running sequences would count everything after a first difference as wrong.
  Whole free-running sequences identical to fp32's are reported too;
- speed: generated tokens per second over all prompts, `--batch-size` at a time with the
  engine's continuous batching, prefill included; best of `--repeats` after an untimed
  warm-up round (where the compiled engines compile). Ratios are against fp32 in the same
  run, engines alternating round by round.

    PYTHONPATH=src python benchmarks/generate_dtypes.py --model runs/demo [--prompts 64] \
        [--batch-size 8] [--dtypes bf16,int8] [--no-compile] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams
from frugal_lm.infer.loading import PRECISIONS, load_model, model_directory
from frugal_lm.runtime import cpu_has_native_bf16
from generate_throughput import teacher_forced_agreement  # benchmarks/, beside this script


def heldout_prompts(model_dir: Path, count: int) -> list[GenerationRequest]:
    """The first `count` held-out instructions of a demo directory, each with its condition."""
    path = model_dir / "data" / "heldout.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; pass a `frugal demo` directory as --model")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:count]]
    sampling = SamplingParams(max_new_tokens=256)
    return [GenerationRequest(row["instruction"], (row.get("condition") or "direct",), sampling) for row in rows]


def timed_generate(engine: Engine, requests: list[GenerationRequest]) -> tuple[list[list[int]], float]:
    """Each request's greedy tokens, EOA included where it stopped there, and the seconds taken."""
    start = time.perf_counter()
    results = engine.generate(requests)
    seconds = time.perf_counter() - start
    eoa = [engine.eoa_id]
    return [result.token_ids + (eoa if result.finish_reason == "stop" else []) for result in results], seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a `frugal demo` directory")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtypes", default="bf16,int8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="eager engines only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    requests = heldout_prompts(args.model, args.prompts)
    compile = not args.no_compile
    engines = {
        name: Engine(
            load_model(model_directory(args.model), dtype=PRECISIONS[name]),
            max_batch_size=args.batch_size,
            compile=compile,
        )
        for name in ["fp32", *args.dtypes.split(",")]
    }
    prompts = [engines["fp32"].encode_prompt(request.prompt, request.conditions) for request in requests]
    print(
        f"# {platform.node()}: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}"
    )
    print(
        f"# {args.model}: {len(requests)} held-out prompts, batch {args.batch_size}, greedy, "
        f"{'compiled' if compile else 'eager'} engines"
    )
    best: dict[str, tuple[list[list[int]], float]] = {}
    for attempt in range(args.repeats + 1):
        for name, engine in engines.items():
            outputs, elapsed = timed_generate(engine, requests)
            if attempt == 0:
                print(f"  {name:<5} warm-up round {elapsed:7.1f} s", flush=True)
            elif name not in best or elapsed < best[name][1]:
                best[name] = (outputs, elapsed)
    reference, reference_seconds = best["fp32"]
    tokens = sum(len(output) for output in reference)  # EOA counts: it is a decoded token too
    print(f"  fp32  {tokens / reference_seconds:8.1f} tokens/s ({tokens} tokens in {reference_seconds:.3f} s)")
    for name, engine in engines.items():
        if name == "fp32":
            continue
        outputs, seconds = best[name]
        agree, total = teacher_forced_agreement(engine, prompts, reference)
        same = sum(a == b for a, b in zip(outputs, reference))
        rate = sum(len(output) for output in outputs) / seconds
        print(
            f"  {name:<5} {rate:8.1f} tokens/s: {rate / (tokens / reference_seconds):.2f}x fp32's "
            f"tokens/s; greedy agreement with fp32 {agree}/{total} tokens "
            f"({100 * agree / total:.2f}%), identical sequences {same}/{len(reference)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
