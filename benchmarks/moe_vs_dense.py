"""Dense HRM against an MoE HRM of the same active FFN compute: step time, then learning.

The MoE arm replaces each block's SwiGLU (width W) by `--experts` experts of width W / `--top-k`,
`--top-k` of them per token, so each token runs the dense arm's FFN FLOPs (plus a router).

    python benchmarks/moe_vs_dense.py speed [--repeats 3 --steps 10]
    python benchmarks/moe_vs_dense.py learn [--steps 300 --seeds 0,1,2 --tasks addition,sorting,counting]

`speed`: the trainer's own step (train/step.py, fp32, the demo recipe's shape: tiny preset, one H
cycle of one L pass) on the same packed rows for the dense arm and the MoE arm on its grouped
(`torch._grouped_mm`) and loop paths, in interleaved rounds; prints median seconds per step and
the ratios MoE / dense and grouped / loop (issue: MoE <= 1.3x dense, grouped no slower than loop).

`learn`: `frugal demo --steps N --seed S` for each arm and seed (the same steps, so the same
tokens), reading each run's summary.json (held-out exact match per family) and metrics.jsonl
(training loss; the tasks draw fresh problems, so early-epoch training loss tracks held-out
loss). Prints the mean and standard error over seeds, the tokens each MoE run needs to reach the
dense run's final loss (10-step moving average), and the step-time ratio: at equal wall time the
slower arm gets fewer steps. Record the output, command, machine and load in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from frugal_lm.config import ModelConfig, load_model_config  # noqa: E402
from frugal_lm.data.batch import Example  # noqa: E402
from train_throughput import make_batches, our_steps  # noqa: E402


def arm_overrides(experts: int, top_k: int, dense_width: int) -> list[str]:
    width = dense_width // top_k
    return [f"model.moe.experts={experts}", f"model.moe.top_k={top_k}", f"model.moe.intermediate_size={width}"]


def speed(args: argparse.Namespace) -> None:
    dense = load_model_config("tiny", "hrm", h_cycles=1, l_cycles=1, vocab_size=512)
    width = dense.intermediate_size // args.top_k

    def moe(implementation: str) -> ModelConfig:
        moe_keys = {"experts": args.experts, "top_k": args.top_k, "intermediate_size": width}
        return ModelConfig.model_validate({**dense.model_dump(), "moe": {**moe_keys, "implementation": implementation}})

    arms = {"dense": dense, "moe grouped": moe("grouped"), "moe loop": moe("loop")}
    rng = np.random.default_rng(0)
    examples = [
        Example(
            rng.integers(10, 512, int(rng.integers(8, 60))).tolist(),
            rng.integers(10, 512, int(rng.integers(4, 90))).tolist(),
        )
        for _ in range(3000)
    ]
    batches, _, _ = make_batches(examples, rows=16, row_len=256, count=args.steps + 2)
    print(f"dense FFN width {dense.intermediate_size}; MoE: {args.experts} experts of width {width}, top-{args.top_k}")
    times: dict[str, list[float]] = {name: [] for name in arms}
    for round_index in range(args.repeats):
        for name, config in arms.items():
            result = our_steps(config, batches, args.steps, torch.device("cpu"), compiled=False, checkpointing=False)
            times[name].append(result["step_s"])
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{name} {values[-1] * 1e3:.1f} ms" for name, values in times.items())
        )
    median = {name: statistics.median(values) for name, values in times.items()}
    print("\n| arm | median s/step | / dense |\n|---|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.4f} | {value / median['dense']:.2f}x |")
    print(f"\ngrouped / loop: {median['moe grouped'] / median['moe loop']:.2f}x")


def run_demo(out: Path, seed: int, steps: int, tasks: str, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "frugal_lm", "demo", "--out", str(out), "--seed", str(seed)]
    command += ["--steps", str(steps), "--tasks", tasks, "--overwrite", *overrides]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [(m["tokens"], m["loss"]) for m in metrics if "loss" in m and "tokens" in m]
    report = summary["reports"][0]
    return {"report": report, "losses": losses}


def smoothed(losses: list[tuple[int, float]], window: int = 10) -> list[tuple[int, float]]:
    values = np.array([loss for _, loss in losses])
    kernel = np.ones(window) / window
    means = np.convolve(values, kernel, mode="valid")
    return [(losses[i + window - 1][0], float(mean)) for i, mean in enumerate(means)]


def mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def learn(args: argparse.Namespace) -> None:
    dense_width = load_model_config("tiny", "hrm").intermediate_size
    arms = {"dense": [], "moe": arm_overrides(args.experts, args.top_k, dense_width)}
    results: dict[str, list[dict]] = {name: [] for name in arms}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, overrides in arms.items():
            results[name].append(run_demo(args.out / f"{name}-seed{seed}", seed, args.steps, args.tasks, overrides))
    print("\n| | " + " | ".join(arms) + " |\n|---|---:|---:|")
    for label, pick in [
        ("held-out exact match", lambda r: r["report"]["exact_match"]),
        ("final loss (10-step mean)", lambda r: smoothed(r["losses"])[-1][1]),
        ("training s", lambda r: r["report"]["train_seconds"]),
        ("tokens seen", lambda r: r["report"]["tokens_seen"]),
    ]:
        print(f"| {label} | " + " | ".join(mean_se([pick(r) for r in results[name]]) for name in arms) + " |")
    families = list(results["dense"][0]["report"]["family_exact_match"])
    for family in families:
        cells = [mean_se([r["report"]["family_exact_match"][family] for r in results[name]]) for name in arms]
        print(f"| {family} | " + " | ".join(cells) + " |")
    print()
    for dense_run, moe_run in zip(results["dense"], results["moe"]):
        target_tokens, target = smoothed(dense_run["losses"])[-1]
        reached = next((tokens for tokens, loss in smoothed(moe_run["losses"]) if loss <= target), None)
        ratio = f"{target_tokens / reached:.2f}x fewer tokens" if reached else "not reached"
        print(f"dense final loss {target:.4f} at {target_tokens:,} tokens; MoE reaches it: {reached} ({ratio})")
    step_ratio = statistics.mean(m["report"]["train_seconds"] for m in results["moe"]) / statistics.mean(
        d["report"]["train_seconds"] for d in results["dense"]
    )
    print(f"MoE / dense training seconds for the same steps: {step_ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "learn"])
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="speed: interleaved rounds")
    parser.add_argument("--steps", type=int, default=None, help="speed: timed steps per round (10); learn: steps (300)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", default="addition,sorting,counting")
    parser.add_argument("--out", type=Path, default=Path("runs/moe_vs_dense"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    if args.mode == "speed":
        args.steps = args.steps or 10
        speed(args)
    else:
        args.steps = args.steps or 300
        learn(args)
    print(f"\nwall {time.perf_counter() - started:.0f} s, load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
