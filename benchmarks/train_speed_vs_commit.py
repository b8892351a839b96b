"""`frugal train` tokens/s of this tree against an earlier commit, side by side on one machine.

Checks out REF into a temporary git worktree, makes one synthetic mixed set with this tree,
then runs `frugal train preset=PRESET steps=N` alternately with REF's code and this tree's
(REF, this, REF, this, ...) on that same data, as a user would run it (the precision each
tree picks by itself, `precision=auto`), and again with `precision=fp32` pinned in both (the
step's own speed, like for like). Tokens/s is measured from step 3 to the last step, out of
each run's metrics.jsonl, so start-up and the first steps' warm-up are left out.

    python benchmarks/train_speed_vs_commit.py --ref 7692247 [--preset tiny] [--steps 25] [--repeats 2]

Run it alone on the machine (nothing else using the cores) and note the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def frugal(source: Path, *args: str, cwd: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(source / "src")}
    subprocess.run([sys.executable, "-m", "frugal_lm", *args], cwd=cwd, env=environment, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_data(scratch: Path) -> Path:
    frugal(ROOT, "data", "synth", "--out", str(scratch / "synth"), "--rows", "6000", cwd=scratch)
    train = str(scratch / "synth" / "train.jsonl")
    frugal(ROOT, "data", "tokenizer", train, "--vocab-size", "264", "--out", str(scratch / "tok"), cwd=scratch)
    frugal(ROOT, "data", "tokenize", train, "--tokenizer", str(scratch / "tok"), "--out", str(scratch / "tokenized"),
           cwd=scratch)
    frugal(ROOT, "data", "mix", "--tokenized", str(scratch / "tokenized"), "--out", str(scratch / "mix"),
           "--context", "256", cwd=scratch)
    return scratch / "mix"


def tokens_per_second(run_dir: Path, skip: int = 2) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = records[skip - 1], records[-1]
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the commit to compare with (e.g. the main of an issue's start)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        scratch = Path(temporary)
        reference = scratch / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(reference), args.ref], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            data = make_data(scratch)
            print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; preset {args.preset}, "
                  f"{args.steps} steps; reference {args.ref}")
            for precision in ("auto", "fp32"):
                speeds: dict[str, list[float]] = {"ref": [], "this": []}
                for repeat in range(args.repeats):
                    for label, source in (("ref", reference), ("this", ROOT)):
                        out = scratch / f"run-{precision}-{label}-{repeat}"
                        frugal(source, "train", f"data={data}", f"out={out}", f"preset={args.preset}",
                               f"steps={args.steps}", f"precision={precision}", "log_every=1", cwd=scratch)
                        speeds[label].append(tokens_per_second(out))
                ref, this = statistics.median(speeds["ref"]), statistics.median(speeds["this"])
                print(f"precision={precision}: {args.ref} {ref:,.0f} tokens/s {[round(s) for s in speeds['ref']]}, "
                      f"this tree {this:,.0f} {[round(s) for s in speeds['this']]}: {this / ref:.2f}x")
            print(f"load average at end: {os.getloadavg()[0]:.2f}")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(reference)], check=False)


if __name__ == "__main__":
    main()
