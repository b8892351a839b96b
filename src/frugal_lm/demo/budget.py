"""Turn a wall-clock budget into a step count, so the LR schedule ends exactly on time.

Design choices:
- The trainer's schedule (warmup, cosine, `bp_steps` warmup) is a function of the total
  number of steps, so the budget must be known in steps *before* training starts; cutting a
  run when the clock runs out would stop the cosine half-way and leave the EMA lagging.
- The step time is measured, not guessed: a short probe run of the very same config (same
  model, data, batch, precision) times its steps after the first two (allocator and thread
  pool warm-up) with `bp_steps` already at its maximum, the most expensive steps of the real
  run. The real run is therefore slightly under budget, never over (unless the machine
  gets busier in between, which the summary shows as wall time).
- The probe goes through `frugal_lm.train.trainer.train` itself, so there is no second
  training loop to keep in sync; its scratch run directory is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from frugal_lm.config import RunConfig
from frugal_lm.train.trainer import train

PROBE_STEPS = 6
SKIPPED_PROBE_STEPS = 2
MIN_STEPS = 20
FULL_RUN_SLOWDOWN = 1.15
"""A full run's mean step is slower than the probe's: on the 2-core CPU the demo's steps
varied by +-20% over a run and averaged 11% above the probe's (checkpoints, allocator and
cache effects a 6-step probe does not see; benchmarks/RESULTS.md). Budgeting with this
factor keeps the demo inside its minutes."""


@dataclass(frozen=True)
class StepBudget:
    steps: int
    seconds_per_step: float
    train_seconds: float


def measure_seconds_per_step(config: RunConfig, scratch: Path, probe_steps: int = PROBE_STEPS) -> float:
    """Mean wall seconds of the probe's steps after the first `SKIPPED_PROBE_STEPS`."""
    shutil.rmtree(scratch, ignore_errors=True)
    probe = config.model_copy(update={"out": scratch, "steps": probe_steps, "epochs": None, "warmup_steps": 0,
                                      "checkpoint_every": 0, "resume": False, "loggers": [],
                                      "model": config.model.model_copy(update={"bp_warmup_fraction": 0.0})})
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the probe's own progress bar would only confuse
            train(probe)
        elapsed = [json.loads(line)["elapsed_s"] for line in (scratch / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    timed = elapsed[SKIPPED_PROBE_STEPS - 1:]
    return (timed[-1] - timed[0]) / max(1, len(timed) - 1)


def steps_for_budget(seconds_per_step: float, train_seconds: float, min_steps: int = MIN_STEPS) -> StepBudget:
    """As many whole steps as fit in `train_seconds` at `FULL_RUN_SLOWDOWN` times the probe's
    step time, at least `min_steps`."""
    steps = max(min_steps, math.floor(train_seconds / max(seconds_per_step * FULL_RUN_SLOWDOWN, 1e-6)))
    return StepBudget(steps, seconds_per_step, train_seconds)
