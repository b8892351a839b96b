"""Demo quality: held-out exact match of `frugal demo` per family, its wall time, and the
HRM vs Transformer comparison of `frugal demo --compare`. Not a test: it trains for minutes.

    python benchmarks/demo_quality.py [--out DIR] [--minutes 10] [--steps N] [--only default|compare]

Runs the real command (`frugal demo`, then `frugal demo --compare`) in subprocesses, reads
each DIR/summary.json and prints one table. `--steps` pins the step count (the demo then
does not derive it from the clock), which makes the quality figure independent of how busy
the machine is; without it the default demo fills `--minutes` as a user's run would.
Record the printed figures, the command and the machine in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_demo(out: Path, minutes: float, steps: int | None, compare: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "frugal_lm", "demo", "--out", str(out), "--minutes", f"{minutes:g}"]
    command += ["--steps", str(steps)] if steps else []
    command += ["--compare"] if compare else []
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    summary = json.loads((out / "summary.json").read_text())
    summary["measured_wall_seconds"] = time.perf_counter() - started
    return summary


def print_reports(title: str, summary: dict) -> None:
    reports = summary["reports"]
    families = list(reports[0]["family_exact_match"])
    print(f"\n## {title}: wall {summary['wall_seconds'] / 60:.1f} min (budget {summary['minutes_budget']:g} min)")
    baseline = summary.get("family_baseline", {})
    print("| | " + " | ".join(r["net"] for r in reports) + " | majority-answer baseline |")
    print("|---|" + "---:|" * (len(reports) + 1))
    for label, key, fmt in [("parameters", "parameters", "{:,}"), ("steps", "steps", "{:,}"),
                            ("tokens seen", "tokens_seen", "{:,}"), ("training s", "train_seconds", "{:.0f}"),
                            ("tokens/s", "tokens_per_second", "{:,.0f}")]:
        print(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in reports) + " | |")
    for family in families:
        guess = f"{baseline[family]:.1%}" if family in baseline else "-"
        print(f"| {family} | " + " | ".join(f"{r['family_exact_match'][family]:.1%}" for r in reports)
              + f" | {guess} |")
    mean_guess = f"{sum(baseline.values()) / len(baseline):.1%}" if baseline else "-"
    print("| **mean exact match** | " + " | ".join(f"**{r['exact_match']:.1%}**" for r in reports)
          + f" | {mean_guess} |")
    if len(reports) == 2:
        hrm, transformer = reports
        print(f"\nHRM / Transformer mean exact match: {hrm['exact_match']:.3f} / {transformer['exact_match']:.3f}; "
              f"training time ratio {hrm['train_seconds'] / max(transformer['train_seconds'], 1e-9):.2f}x "
              f"for the same {hrm['tokens_seen']:,} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo_quality"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int, help="pin the training steps (default: from the time budget)")
    parser.add_argument("--only", choices=["default", "compare"])
    args = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    results = {}
    if args.only in (None, "default"):
        results["default"] = run_demo(args.out / "default", args.minutes, args.steps, compare=False)
    if args.only in (None, "compare"):
        results["compare"] = run_demo(args.out / "compare", args.minutes, args.steps, compare=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f} (other jobs on the cores slow every wall time)")
    for name, summary in results.items():
        print_reports(f"frugal demo{' --compare' if name == 'compare' else ''}", summary)


if __name__ == "__main__":
    main()
