"""Where recurrence pays: `frugal demo --compare` on the depth families over several seeds,
with standard errors, per family and per number of sequential steps, and out of distribution.
Not a test: it trains for minutes per seed.

    python benchmarks/depth_compare.py [--out DIR] [--minutes 15] [--seeds 0,1,2]
        [--tasks modexpr,chain] [--difficulty chain.hops=6,...]
        [--harder chain.hops=9,chain.min_hops=7,...] [--test-h-cycles 3,4] [--threads N]

For each seed it runs the real command, `frugal demo --compare --tasks T --difficulty D --seed S
--minutes M`, which trains the HRM, the Transformer with its parameters (same tokens and same
time) and a Transformer with the HRM's forward depth (same time), and scores each on the
demo's held-out split. Then, per arm: mean held-out exact match over the seeds with its
standard error, per family and per difficulty; the HRM's paired lead over each other arm (mean
of the per-seed differences and its standard error); training loss against seconds; and every
run scored again on a harder held-out set (`--harder`: more sequential steps than trained),
the HRM also with more H cycles at test time (`--test-h-cycles`), which a Transformer cannot
do. Record the printed tables, the command, the machine and the load average in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path


def run_compare(out: Path, args: argparse.Namespace, seed: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "frugal_lm", "demo", "--compare", "--out", str(out), "--seed", str(seed)]
    command += ["--minutes", f"{args.minutes:g}", "--tasks", args.tasks]
    command += ["--difficulty", args.difficulty] if args.difficulty else []
    command += ["--steps", str(args.steps)] if args.steps else []
    command += args.overrides
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, env=_env(args.threads))
    return json.loads((out / "summary.json").read_text())


def _env(threads: int | None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan"))


def fmt(values: list[float]) -> str:
    mean, se = mean_se(values)
    return f"{mean:.1%} ± {se:.1%}"


def scores_table(summaries: dict[int, dict]) -> None:
    """Mean ± standard error over seeds of each arm's overall, per-family and per-difficulty score."""
    labels = [report["label"] for report in next(iter(summaries.values()))["reports"]]
    by_label = {label: [s["reports"][i] for s in summaries.values()] for i, label in enumerate(labels)}
    first = by_label[labels[0]][0]
    keys = ["exact_match", *(f"family:{k}" for k in first["family_exact_match"])]
    keys += [f"depth:{k}" for k in first["depth_exact_match"]]
    print(f"\n## held-out exact match, mean ± standard error over seeds {list(summaries)}")
    print("| | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for label, key in [("parameters", "parameters"), ("steps", "steps"), ("training s", "train_seconds")]:
        cells = [f"{statistics.fmean(r[key] for r in by_label[arm]):,.0f}" for arm in labels]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for key in keys:
        cells = [fmt([_value(report, key) for report in by_label[arm]]) for arm in labels]
        print(f"| {key.replace('family:', '').replace('depth:', '  ')} | " + " | ".join(cells) + " |")
    hrm = by_label[labels[0]]
    print("\nthe HRM's lead (paired over seeds: mean of the per-seed differences ± its standard error):")
    for other in labels[1:]:
        differences = [a["exact_match"] - b["exact_match"] for a, b in zip(hrm, by_label[other])]
        mean, se = mean_se(differences)
        verdict = "ahead by > 2 SE" if mean > 2 * se else "behind by > 2 SE" if mean < -2 * se else "within 2 SE"
        print(f"  hrm - {other}: {mean:+.1%} ± {se:.1%} ({verdict})")


def _value(report: dict, key: str) -> float:
    if key.startswith("family:"):
        return report["family_exact_match"][key.removeprefix("family:")]
    if key.startswith("depth:"):
        return report["depth_exact_match"].get(key.removeprefix("depth:"), float("nan"))
    return report[key]


def loss_against_seconds(summaries: dict[int, dict]) -> None:
    """Mean training loss (window of 20 steps) at quarters of the HRM's training time."""
    print("\n## training loss against seconds (mean over seeds; the last 20 steps before each time)")
    print("| arm | 25% | 50% | 75% | 100% of the HRM's time |")
    print("|---|---:|---:|---:|---:|")
    labels = [report["label"] for report in next(iter(summaries.values()))["reports"]]
    for index, label in enumerate(labels):
        at = defaultdict(list)
        for summary in summaries.values():
            hrm_seconds = _metrics(summary["reports"][0])[-1]["elapsed_s"]
            lines = _metrics(summary["reports"][index])
            for quarter in (0.25, 0.5, 0.75, 1.0):
                before = [line["loss"] for line in lines if line["elapsed_s"] <= quarter * hrm_seconds][-20:]
                if before:
                    at[quarter].append(statistics.fmean(before))
        cells = [f"{statistics.fmean(at[q]):.3f}" if at[q] else "-" for q in (0.25, 0.5, 0.75, 1.0)]
        print(f"| {label} | " + " | ".join(cells) + " |")


def _metrics(report: dict) -> list[dict]:
    return [json.loads(line) for line in (Path(report["run_dir"]) / "metrics.jsonl").read_text().splitlines()]


def harder(summaries: dict[int, dict], args: argparse.Namespace, root: Path) -> None:
    """Every run on a held-out set with more sequential steps than trained; the HRM also with
    more H cycles at inference."""
    from frugal_lm.data.synth import parse_families, write_synthetic
    from frugal_lm.data.synth_depth import parse_difficulty
    from frugal_lm.demo.arms import depth_scores
    from frugal_lm.evals.synthetic import score_synthetic
    from frugal_lm.infer.engine import Engine
    from frugal_lm.infer.loading import load_model

    families = parse_families(args.tasks)
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for seed, summary in summaries.items():
        folder = root / f"harder_seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)
        write_synthetic(folder, families, 1, args.harder_rows, seed, "direct", parse_difficulty(args.harder))
        for report in summary["reports"]:
            cycles = [None] + (args.test_h_cycles if report["net"] == "hrm" else [])
            for h_cycles in cycles:
                loaded = load_model(report["run_dir"])
                if h_cycles is not None:
                    config = loaded.config.model_copy(update={"h_cycles": h_cycles})
                    loaded.model.config = loaded.config = config
                result = score_synthetic(Engine(loaded, max_batch_size=64), folder / "heldout.jsonl")
                label = report["label"] + (f", {h_cycles} H cycles at test" if h_cycles else "")
                results[label].append({"all": result.value, **depth_scores(result)})
    keys = sorted({key for runs in results.values() for run in runs for key in run}, key=_depth_order)
    print(f"\n## harder held-out set (--difficulty {args.harder}), mean ± standard error over seeds")
    print("| | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for key in keys:
        print(
            f"| {key} | "
            + " | ".join(fmt([run.get(key, float("nan")) for run in runs]) for runs in results.values())
            + " |"
        )


def _depth_order(key: str) -> tuple[str, int]:
    family, _, steps = key.partition("@")
    return (family, int(steps) if steps else -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/depth_compare"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--steps", type=int, help="pin every run's steps (equal tokens, not equal time)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", default="modexpr,chain")
    parser.add_argument("--difficulty", default="")
    parser.add_argument("--harder", default="", help="difficulty of the extra held-out set (default: none)")
    parser.add_argument("--harder-rows", type=int, default=600)
    parser.add_argument("--test-h-cycles", default="", help="comma-separated H cycles to also score the HRM with")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of each demo (default: torch's)")
    parser.add_argument("--reuse", action="store_true", help="read finished seeds' summaries instead of rerunning")
    parser.add_argument("overrides", nargs="*", help="recipe overrides passed to the demo")
    args = parser.parse_args()
    args.test_h_cycles = [int(c) for c in args.test_h_cycles.split(",") if c]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    summaries = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        out = args.out / f"seed{seed}"
        if args.reuse and (out / "summary.json").is_file():
            summaries[seed] = json.loads((out / "summary.json").read_text())
        else:
            summaries[seed] = run_compare(out, args, seed)
        print(f"load average after seed {seed}: {os.getloadavg()[0]:.1f}", flush=True)
    for seed, summary in summaries.items():
        print(
            f"seed {seed}: wall {summary['wall_seconds'] / 60:.1f} min; "
            + ", ".join(
                f"{r['label']} {r['exact_match']:.1%} ({r['steps']} steps, {r['train_seconds']:.0f} s)"
                for r in summary["reports"]
            )
        )
    scores_table(summaries)
    loss_against_seconds(summaries)
    if args.harder:
        harder(summaries, args, args.out)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
