"""Validation during training: held-out loss at the configured steps, and greedy samples."""

import json

import pytest

from frugal_lm.config import resolve_run_config
from frugal_lm.data.mix import mix
from frugal_lm.data.tokenize import tokenize_sources
from frugal_lm.errors import FrugalError
from frugal_lm.train.trainer import train

TINY = [
    "model.hidden_size=32",
    "model.n_heads=2",
    "model.n_layers=2",
    "batch_tokens=128",
    "lr=3e-3",
    "precision=fp32",
    "warmup_steps=0",
]


@pytest.fixture(scope="module")
def train_and_val(tiny_run, tmp_path_factory):
    """The tiny run's training mix, and a mix of its held-out records with the same tokenizer."""
    root = tiny_run.parent
    val = tmp_path_factory.mktemp("val")
    tokenize_sources(root / "tok", val / "tokenized", [root / "synth" / "heldout.jsonl"])
    mix(val / "tokenized", val / "mix", None, 1, 64, 0)
    return root / "mix", val / "mix"


def test_validation_logs_held_out_loss_and_samples_at_its_steps(train_and_val, tmp_path):
    data, val = train_and_val
    run = tmp_path / "run"
    train(
        resolve_run_config(
            None, [f"data={data}", f"out={run}", f"val_data={val}", "val_every=2", "val_samples=2", "steps=5", *TINY]
        )
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records if "val_loss" in record] == [2, 4, 5]  # and at the end
    assert all(0 < record["val_loss"] < 20 for record in records if "val_loss" in record)
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [sample["step"] for sample in samples] == [2, 2, 4, 4, 5, 5]
    heldout = [json.loads(line) for line in (data.parent / "synth" / "heldout.jsonl").read_text().splitlines()]
    assert {sample["reference"] for sample in samples} <= {row["response"] for row in heldout}
    assert all(isinstance(sample["answer"], str) and sample["prompt"] for sample in samples)


def test_the_same_validation_gives_the_same_loss(train_and_val, tmp_path):
    data, val = train_and_val
    args = [f"data={data}", f"val_data={val}", "val_every=1", "val_samples=0", "steps=2", *TINY]
    first = tmp_path / "first"
    train(resolve_run_config(None, [f"out={first}", *args]))
    second = tmp_path / "second"
    train(resolve_run_config(None, [f"out={second}", *args]))
    loss = [
        [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (first, second)
    ]
    assert loss[0] == loss[1]


def test_validation_data_from_another_tokenizer_is_refused(train_and_val, tmp_path, write_mixed_set):
    data, _ = train_and_val
    other = write_mixed_set(tmp_path / "other")  # no tokenizer, and a vocabulary larger than the run's
    with pytest.raises(FrugalError, match="val_data=.* has a vocabulary of 1280"):
        train(
            resolve_run_config(None, [f"data={data}", f"out={tmp_path / 'run'}", f"val_data={other}", "steps=1", *TINY])
        )
