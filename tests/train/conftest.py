"""Tiny training runs for the trainer's tests: fp32 (the same numbers on every CPU), seconds each."""

import pytest

from frugal_lm.config import resolve_run_config
from frugal_lm.train.trainer import TrainResult, train

TINY = [
    "model.hidden_size=32",
    "model.n_heads=2",
    "batch_tokens=64",
    "row_len=16",
    "warmup_steps=3",
    "lr=3e-3",
    "seed=1",
    "precision=fp32",
]


@pytest.fixture
def run_args():
    """run_args(data, out, *key=value): the command-line arguments of a tiny run."""
    return lambda data, out, *overrides: [f"data={data}", f"out={out}", *TINY, *overrides]


@pytest.fixture
def train_run(run_args):
    """train_run(data, out, *key=value): trains a tiny run and returns its TrainResult."""

    def run(data, out, *overrides) -> TrainResult:
        return train(resolve_run_config(None, run_args(data, out, *overrides)))

    return run
