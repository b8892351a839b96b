"""`frugal train` tokens/s of this tree against an earlier commit, side by side on one machine.

Checks out REF into a temporary git worktree, makes one synthetic mixed set with this tree,
then runs `frugal train preset=PRESET steps=N` alternately with REF's code and this tree's
(REF, this, REF, this, ...) on that same data, as a user would run it (the precision each
tree picks by itself, `precision=auto`), and again with `precision=fp32` pinned in both (the
step's own speed, like for like). Tokens/s is measured from step `--skip` to the last step, out of
each run's metrics.jsonl, so start-up and the first steps' warm-up (and compiling) are left
out. The compiled run (`compile=true`, per-block torch.compile) is this tree's only.

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
    subprocess.run(
        [sys.executable, "-m", "frugal_lm", *args],
        cwd=cwd,
        env=environment,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def make_data(scratch: Path) -> Path:
    frugal(ROOT, "data", "synth", "--out", str(scratch / "synth"), "--rows", "6000", cwd=scratch)
    train = str(scratch / "synth" / "train.jsonl")
    frugal(ROOT, "data", "tokenizer", train, "--vocab-size", "264", "--out", str(scratch / "tok"), cwd=scratch)
    frugal(
        ROOT,
        "data",
        "tokenize",
        train,
        "--tokenizer",
        str(scratch / "tok"),
        "--out",
        str(scratch / "tokenized"),
        cwd=scratch,
    )
    frugal(
        ROOT,
        "data",
        "mix",
        "--tokenized",
        str(scratch / "tokenized"),
        "--out",
        str(scratch / "mix"),
        "--context",
        "256",
        cwd=scratch,
    )
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
    parser.add_argument("--skip", type=int, default=4, help="first steps left out (warm-up, and compiling)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        scratch = Path(temporary)
        reference = scratch / "ref"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(reference), args.ref],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            data = make_data(scratch)
            print(
                f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; preset {args.preset}, "
                f"{args.steps} steps; reference {args.ref}"
            )
            # (settings, the runs compared): as a user runs it; the step like for like; this tree compiled.
            for settings, labels in (
                (["precision=auto"], ("ref", "this")),
                (["precision=fp32"], ("ref", "this")),
                (["precision=auto", "compile=true"], ("this",)),
            ):
                speeds: dict[str, list[float]] = {label: [] for label in labels}
                for repeat in range(args.repeats):
                    for label in labels:
                        out = scratch / f"run-{'-'.join(settings)}-{label}-{repeat}"
                        frugal(
                            reference if label == "ref" else ROOT,
                            "train",
                            f"data={data}",
                            f"out={out}",
                            f"preset={args.preset}",
                            f"steps={args.steps}",
                            *settings,
                            "log_every=1",
                            cwd=scratch,
                        )
                        speeds[label].append(tokens_per_second(out, skip=args.skip))
                medians = {label: statistics.median(values) for label, values in speeds.items()}
                shown = ", ".join(
                    f"{args.ref if label == 'ref' else 'this tree'} {medians[label]:,.0f} tokens/s "
                    f"{[round(s) for s in speeds[label]]}"
                    for label in labels
                )
                if settings == ["precision=auto"]:
                    baseline = medians["ref"]  # what a user of REF got
                like_for_like = f"{medians['this'] / medians['ref']:.2f}x like for like, " if "ref" in medians else ""
                print(
                    f"{' '.join(settings)}: {shown}: {like_for_like}"
                    f"{medians['this'] / baseline:.2f}x {args.ref} at precision=auto"
                )
            print(f"load average at end: {os.getloadavg()[0]:.2f}")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(reference)], check=False)


if __name__ == "__main__":
    main()
