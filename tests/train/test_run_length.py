"""How long a run goes and what it leaves: the mix's epochs, a warmup fitted to the run, an EMA
useful at any length, money and time budgets, checkpoints, Ctrl-C."""

import json

import torch
from safetensors.torch import load_file

from frugal_lm.cli import main
from frugal_lm.config import resolve_run_config
from frugal_lm.model import build_model
from frugal_lm.train import step as step_module
from frugal_lm.train.checkpoint import list_checkpoints
from frugal_lm.train.trainer import train
from frugal_lm.train.weights import read_model_config

TINY = [
    "model.hidden_size=32",
    "model.n_heads=2",
    "batch_tokens=64",
    "row_len=16",
    "lr=3e-3",
    "seed=1",
    "precision=fp32",
]


def run_config(data, out, *extra):
    return resolve_run_config(None, [f"data={data}", f"out={out}", *TINY, *extra])


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_without_steps_a_run_makes_the_epochs_the_mix_was_made_with(tmp_path, write_mixed_set):
    data = write_mixed_set(tmp_path / "mix", n_examples=60, n_epochs=3)
    train(run_config(data, tmp_path / "run"))
    assert sorted({record["epoch"] for record in records(tmp_path / "run")}) == [0, 1, 2]


def test_a_short_run_reaches_its_peak_lr_and_its_ema_follows_the_weights(tmp_path, write_mixed_set, capsys):
    data = write_mixed_set(tmp_path / "mix", n_examples=400)
    config = run_config(data, tmp_path / "run", "steps=40")  # the defaults: warmup 100, EMA 0.9999
    assert (config.warmup_steps, config.ema_decay) == (100, 0.9999)
    result = train(config)
    assert "warming up over 4 steps instead" in capsys.readouterr().err
    assert max(record["lr"] for record in records(tmp_path / "run")) == config.lr
    raw, ema = load_file(result.checkpoint / "model.safetensors"), load_file(result.checkpoint / "ema.safetensors")
    torch.manual_seed(config.seed)
    initial = build_model(read_model_config(result.checkpoint)).state_dict()
    name = "lm_head.weight"
    # The EMA sits near where training went, not at the random init it started from.
    assert (ema[name] - raw[name]).norm() < 0.5 * (initial[name] - raw[name]).norm()


def test_max_dollars_stops_with_a_checkpoint_and_resume_goes_on(tmp_path, write_mixed_set, capsys):
    data = write_mixed_set(tmp_path / "mix", n_examples=400)
    pricey = ["steps=12", "price_per_device_hour=3600000"]  # $1,000 a second
    stopped = train(run_config(data, tmp_path / "run", *pricey, "max_dollars=0.001"))
    assert stopped.steps < 12 and stopped.checkpoint == list_checkpoints(tmp_path / "run")[-1]
    assert f"step_{stopped.steps:08d}" in stopped.checkpoint.name
    assert "max_dollars=0.001 reached" in capsys.readouterr().err
    finished = train(run_config(data, tmp_path / "run", *pricey, "resume=true"))
    assert finished.steps == 12


def test_max_hours_counts_every_session_of_the_run(tmp_path, write_mixed_set):
    data = write_mixed_set(tmp_path / "mix", n_examples=400)
    train(run_config(data, tmp_path / "run", "steps=3"))
    state = json.loads((list_checkpoints(tmp_path / "run")[-1] / "trainer_state.json").read_text())
    assert state["train_seconds"] > 0
    resumed = train(
        run_config(data, tmp_path / "run", "steps=12", "resume=true", f"max_hours={state['train_seconds'] / 3600}")
    )
    assert resumed.steps == 4  # the budget was spent before: one more step, then stop


def test_checkpoint_every_zero_checkpoints_only_the_end(tmp_path, write_mixed_set):
    data = write_mixed_set(tmp_path / "mix", n_examples=60, n_epochs=3)
    train(run_config(data, tmp_path / "run"))
    assert len(list_checkpoints(tmp_path / "run")) == 1


def test_ctrl_c_names_the_last_checkpoint_and_resume(tmp_path, write_mixed_set, capsys, monkeypatch):
    data = write_mixed_set(tmp_path / "mix", n_examples=400)
    calls = []
    original = step_module.TrainStep.__call__

    def interrupted_at_step_four(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(step_module.TrainStep, "__call__", interrupted_at_step_four)
    code = main(["train", f"data={data}", f"out={tmp_path / 'run'}", *TINY, "steps=8", "checkpoint_every=2"])
    assert code == 130
    error = capsys.readouterr().err
    assert "interrupted at step 3; the last checkpoint is" in error and "step_00000002" in error
    assert "continue with resume=true" in error and "Traceback" not in error
