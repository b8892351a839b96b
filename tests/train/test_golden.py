"""A fixed-seed run of the tiny preset reproduces its recorded loss curve.

`assets/golden_tiny_losses.json` was written by this test's own run on the trainer before
the training step was restructured (issue 17), so any change to what a step computes
shows here. To record a deliberate change: `FRUGAL_RECORD_GOLDEN=1 python -m pytest
tests/train/test_golden.py`, and say why in the commit.

The tolerance covers another CPU's fp32 kernels only (a different vector width sums in a
different order, ~1e-7 relative per op); on the recording machine the match is bitwise.
"""

import json
import os
from pathlib import Path

import pytest

from frugal_lm.config import resolve_run_config
from frugal_lm.train.trainer import train

GOLDEN = Path(__file__).parent / "assets" / "golden_tiny_losses.json"
SETTINGS = [
    "preset=tiny",
    "steps=30",
    "batch_tokens=96",
    "warmup_steps=5",
    "lr=1e-3",
    "seed=0",
    "precision=fp32",
    "log_every=1",
]


def test_tiny_preset_reproduces_its_golden_loss_curve(tmp_path, write_mixed_set):
    data = write_mixed_set(tmp_path / "mix", n_examples=300, n_epochs=1)
    train(resolve_run_config(None, [f"data={data}", f"out={tmp_path / 'run'}", *SETTINGS]))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records]
    if os.environ.get("FRUGAL_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps({"settings": SETTINGS, "losses": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["settings"] == SETTINGS
    assert len(losses) == len(golden["losses"]) == 30
    assert losses == pytest.approx(golden["losses"], rel=1e-5, abs=1e-6)
