"""Turn a wall-clock budget into a first guess of the step count.

Design choices:
- The trainer's schedule (warmup, cosine, `bp_steps` warmup) is a function of the total
  number of steps. The demo gives the trainer its training seconds (`time_limit_s`), and the
  trainer re-fits the total to the clock after every step, so the cosine ends on time even
  when the machine's speed drifts (on the 2-core CPU a full run's steps averaged 11-21%
  slower than a short probe's, benchmarks/RESULTS.md). Cutting a run when the clock runs out
  would stop the cosine half-way and leave the EMA lagging.
- The first guess (which also sets the warmup length) comes from a measured step time: a
  short probe run of the very same config (same model, data, batch, precision) times its
  steps after the first two (allocator and thread pool warm-up) with `bp_steps` already at
  its maximum, the most expensive steps of the real run.
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


@dataclass(frozen=True)
class StepBudget:
    steps: int
    seconds_per_step: float
    train_seconds: float


def measure_seconds_per_step(config: RunConfig, scratch: Path, probe_steps: int = PROBE_STEPS) -> float:
    """Mean wall seconds of the probe's steps after the first `SKIPPED_PROBE_STEPS`."""
    shutil.rmtree(scratch, ignore_errors=True)
    probe = config.model_copy(
        update={
            "out": scratch,
            "steps": probe_steps,
            "epochs": None,
            "warmup_steps": 0,
            "checkpoint_every": 0,
            "resume": False,
            "loggers": [],
            "model": config.model.model_copy(update={"bp_warmup_fraction": 0.0}),
        }
    )
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the probe's own progress bar would only confuse
            train(probe)
        elapsed = [json.loads(line)["elapsed_s"] for line in (scratch / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    timed = elapsed[SKIPPED_PROBE_STEPS - 1 :]
    return (timed[-1] - timed[0]) / max(1, len(timed) - 1)


def steps_for_budget(seconds_per_step: float, train_seconds: float, min_steps: int = MIN_STEPS) -> StepBudget:
    """As many whole steps as fit in `train_seconds`, at least `min_steps`."""
    steps = max(min_steps, math.floor(train_seconds / max(seconds_per_step, 1e-6)))
    return StepBudget(steps, seconds_per_step, train_seconds)
