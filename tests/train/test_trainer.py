import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frugal_lm.config import resolve_run_config
from frugal_lm.errors import FrugalError
from frugal_lm.train import checkpoint as checkpoint_module
from frugal_lm.train import loop as loop_module
from frugal_lm.train.checkpoint import latest_checkpoint, list_checkpoints
from frugal_lm.train.weights import load_weights


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    return [r["loss"] for r in records]


def frugal_command(*args):
    return [sys.executable, "-m", "frugal_lm", *args]


# A mixture of experts whose selection bias moves every step: exact resume needs it checkpointed.
MOE = [
    "model.moe.experts=4",
    "model.moe.intermediate_size=32",
    "model.moe.score=sigmoid",
    "model.moe.bias_update_rate=0.01",
    "model.moe.aux_loss_coef=0.01",
    "model.moe.z_loss_coef=0.001",
]


@pytest.mark.parametrize("model", [[], MOE], ids=["dense", "moe"])
def test_kill_and_resume_reproduces_the_uninterrupted_losses_bitwise(
    tmp_path, write_mixed_set, train_run, run_args, model
):
    data = write_mixed_set(tmp_path / "mix", n_examples=400, n_epochs=2)
    steps, half = 24, 8
    straight = train_run(data, tmp_path / "straight", f"steps={steps}", *model)
    assert straight.steps == steps

    killed_dir = tmp_path / "killed"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        frugal_command("train", *run_args(data, killed_dir, f"steps={steps}", f"checkpoint_every={half}", *model)),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not (killed_dir / "checkpoints" / f"step_{half:08d}").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    logged_before_kill = len(losses(killed_dir))
    assert half <= logged_before_kill < steps  # killed mid-run, after the checkpoint

    resumed = train_run(data, killed_dir, f"steps={steps}", "resume=true", *model)
    assert resumed.steps == steps
    assert losses(killed_dir) == losses(tmp_path / "straight")  # bitwise: same floats


def test_torchrun_two_ranks_match_one_process(tmp_path, write_mixed_set, train_run, run_args):
    data = write_mixed_set(tmp_path / "mix", n_examples=120, n_epochs=1)
    steps = ["steps=5", "grad_clip=null", "warmup_steps=1"]
    train_run(data, tmp_path / "one", *steps, "batch_tokens=64")
    # Two ranks with half the rows each: the same global batch of 4 rows.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "frugal_lm",
            "train",
            *run_args(data, tmp_path / "two", *steps, "batch_tokens=32"),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 5
    assert two == pytest.approx(one, rel=1e-4)
    # The sharded run's checkpoint loads on one process.
    config = resolve_run_config(None, run_args(data, tmp_path / "two")).model.model_copy(update={"vocab_size": 1280})
    assert set(load_weights(tmp_path / "two", config)) >= {"embed_tokens.weight", "lm_head.weight"}


def test_refuses_to_overwrite_a_run_and_resumes_only_with_a_checkpoint(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix")
    train_run(data, tmp_path / "run", "steps=2")
    with pytest.raises(FrugalError, match="already holds a run; pass resume=true"):
        train_run(data, tmp_path / "run", "steps=2")
    with pytest.raises(FrugalError, match="holds no complete checkpoint"):
        train_run(data, tmp_path / "empty", "steps=2", "resume=true")
    with pytest.raises(FrugalError, match="not a mixed training set"):
        train_run(tmp_path, tmp_path / "x", "steps=2")


def test_a_fresh_run_never_writes_into_a_folder_it_did_not_make(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix")
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "config.yaml").write_text("mine")
    with pytest.raises(FrugalError, match="not empty and was written by something else"):
        train_run(data, thesis, "steps=2")
    assert [p.name for p in thesis.iterdir()] == ["config.yaml"] and (thesis / "config.yaml").read_text() == "mine"
    # A run killed before its first checkpoint left only its own files: the same out= runs again.
    killed = tmp_path / "killed"
    train_run(data, killed, "steps=2")
    for checkpoint in list_checkpoints(killed):
        shutil.rmtree(checkpoint)
    assert train_run(data, killed, "steps=2").steps == 2


def test_only_the_checkpoints_own_partial_folders_are_cleared(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix")
    train_run(data, tmp_path / "run", "steps=2", "checkpoint_every=1")
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "step_00000009.partial").mkdir()  # a killed save's leftover
    (checkpoints / "notes.partial").mkdir()  # not a name a save writes
    train_run(data, tmp_path / "run", "steps=3", "resume=true")
    assert not (checkpoints / "step_00000009.partial").exists()
    assert (checkpoints / "notes.partial").is_dir()


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    tmp_path, write_mixed_set, monkeypatch, train_run
):
    data = write_mixed_set(tmp_path / "mix", n_examples=200)
    schedule = loop_module.learning_rate
    # From step 6 on, an absurd learning rate: the weights blow up and the loss with them.
    monkeypatch.setattr(loop_module, "learning_rate", lambda step, *args: 1e30 if step >= 6 else schedule(step, *args))
    with pytest.raises(
        FrugalError, match=r"loss became (nan|inf) at step \d+; stopped before applying that update.*step_00000006"
    ):
        train_run(data, tmp_path / "run", "steps=12", "checkpoint_every=2", "grad_clip=null", "weight_decay=0")
    assert latest_checkpoint(tmp_path / "run").name == "step_00000006"


def test_a_failed_checkpoint_write_leaves_the_previous_one_valid(tmp_path, write_mixed_set, monkeypatch, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=200)
    run_dir = tmp_path / "run"
    train_run(data, run_dir, "steps=4", "checkpoint_every=2")
    before = list_checkpoints(run_dir)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    with pytest.raises(FrugalError, match=r"could not write the checkpoint .*step_00000006 \(\[Errno 28\] No space"):
        train_run(data, run_dir, "steps=8", "checkpoint_every=2", "resume=true")
    assert list_checkpoints(run_dir) == before  # the failed write is not a checkpoint, and is gone
    assert not any(p.name.endswith(".partial") for p in (run_dir / "checkpoints").iterdir())
    monkeypatch.undo()
    resumed = train_run(data, run_dir, "steps=8", "checkpoint_every=2", "resume=true")
    assert resumed.steps == 8
    assert not any(p.name.endswith(".partial") for p in (run_dir / "checkpoints").iterdir())


def test_fine_tune_from_ema_weights(tmp_path, write_mixed_set, train_run, run_args):
    data = write_mixed_set(tmp_path / "mix", n_examples=200)
    train_run(data, tmp_path / "base", "steps=4")
    tuned = train_run(data, tmp_path / "tuned", "steps=2", f"init_from={tmp_path / 'base'}")
    assert tuned.steps == 2
    config = resolve_run_config(None, run_args(data, tmp_path / "x")).model.model_copy(update={"vocab_size": 1280})
    ema = load_weights(tmp_path / "base", config)
    raw = load_weights(tmp_path / "base", config, prefer_ema=False)
    assert not torch.equal(ema["lm_head.weight"], raw["lm_head.weight"])


def test_bf16_trains_on_cpu(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=200)
    result = train_run(data, tmp_path / "run", "steps=4", "precision=bf16")
    assert result.steps == 4 and all(math.isfinite(loss) for loss in losses(tmp_path / "run"))


def test_metrics_carry_mfu_and_the_run_records_plan_vs_actual(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=100)
    train_run(data, tmp_path / "run", "steps=3")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["mfu"] < 1 and 0 < r["slot_use"] <= 1 for r in records)
    comparison = json.loads((tmp_path / "run" / "plan_vs_actual.json").read_text())
    assert set(comparison["plan"]) == set(comparison["actual"]) - {"steps"}
    assert comparison["actual"]["steps"] == 3


def test_end_to_end_from_records_and_tokenizer_guard(tmp_path, train_run):
    from frugal_lm.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "synth"), "--rows", "200", "--heldout-rows", "10"]) == 0
    sources = [str(tmp_path / "synth" / "train.jsonl")]
    assert main(["data", "tokenizer", "--vocab-size", "300", "--out", str(tmp_path / "tok"), *sources]) == 0
    assert (
        main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokenized"), *sources])
        == 0
    )
    assert (
        main(
            [
                "data",
                "mix",
                "--tokenized",
                str(tmp_path / "tokenized"),
                "--out",
                str(tmp_path / "mix"),
                "--context",
                "64",
            ]
        )
        == 0
    )
    result = train_run(tmp_path / "mix", tmp_path / "run", "steps=3", "row_len=64")
    assert (result.checkpoint / "tokenizer" / "tokenizer.json").is_file()
    # Same data made with another tokenizer: resuming must refuse.
    assert main(["data", "tokenizer", "--vocab-size", "290", "--out", str(tmp_path / "tok2"), *sources]) == 0
    assert (
        main(
            ["data", "tokenize", "--tokenizer", str(tmp_path / "tok2"), "--out", str(tmp_path / "tokenized2"), *sources]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "mix",
                "--tokenized",
                str(tmp_path / "tokenized2"),
                "--out",
                str(tmp_path / "mix2"),
                "--context",
                "64",
            ]
        )
        == 0
    )
    with pytest.raises(FrugalError, match="tokenizer .* differs from the one this run was trained with"):
        train_run(tmp_path / "mix2", tmp_path / "run", "steps=6", "row_len=64", "resume=true")


def test_init_from_takes_the_architecture_of_dir_except_the_keys_given(tmp_path, write_mixed_set, train_run):
    from frugal_lm.train.weights import read_model_config

    data = write_mixed_set(tmp_path / "mix", n_examples=200)
    base = tmp_path / "base"
    train_run(data, base, "steps=1", "model.l_cycles=4")
    inherited = train_run(data, tmp_path / "a", "steps=1", f"init_from={base}")
    assert read_model_config(inherited.checkpoint).l_cycles == 4
    # Typing the preset's own value still counts as a choice (it fits the same weights).
    given = train_run(data, tmp_path / "b", "steps=1", "model.l_cycles=3", f"init_from={base}")
    assert read_model_config(given.checkpoint).l_cycles == 3
    with pytest.raises(FrugalError, match="net=transformer, but init_from=.* holds a net=hrm model"):
        train_run(data, tmp_path / "c", "steps=1", "net=transformer", f"init_from={base}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compile", [False, True])
def test_bf16_training_on_gpu_learns_with_the_default_gpu_attention(tmp_path, write_mixed_set, compile, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=400, n_epochs=4)
    result = train_run(
        data, tmp_path / "run", "steps=60", "device=cuda", "precision=bf16", f"compile={str(compile).lower()}"
    )
    assert result.steps == 60
    run_losses = losses(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(run_losses)))
    assert sum(run_losses[-10:]) / 10 < 0.8 * sum(run_losses[:10]) / 10


def test_token_ids_beyond_the_vocabulary_are_a_one_line_error(tmp_path, write_mixed_set, capsys, run_args):
    from frugal_lm.cli import main

    data = write_mixed_set(tmp_path / "mix", n_examples=60)
    metadata = json.loads((data / "metadata.json").read_text())
    (data / "metadata.json").write_text(json.dumps({**metadata, "vocab_size": 256}))  # ids go up to 1059
    assert main(["train", *run_args(data, tmp_path / "run", "steps=2")]) == 2
    error = capsys.readouterr().err
    assert "holds token id" in error and "vocabulary has 256 ids" in error and "Traceback" not in error
