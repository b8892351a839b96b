"""Expert parallelism on gloo (two CPU processes under torchrun): the same run as one process,
checkpoints that reshard between the two, and exact resume after SIGKILL."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from frugal_lm.config import resolve_run_config
from frugal_lm.errors import FrugalError
from frugal_lm.train.checkpoint import latest_checkpoint
from frugal_lm.train.expert_parallel import check_expert_parallel
from frugal_lm.train.trainer import train

from ..conftest import _write_mixed_set
from .conftest import TINY

STEPS, HALF = 20, 10
# A tiny HRM whose every block is a mixture of 4 experts, top 2; the global batch is 64 tokens.
MOE = ["model.moe.experts=4", "model.moe.top_k=2", "model.moe.intermediate_size=32", f"steps={STEPS}"]
ONE_PROCESS = ["batch_tokens=64"]
TWO_RANKS = ["batch_tokens=32", "expert_parallel=2"]  # each rank half the rows, half the experts


def _args(data: Path, out: Path, *overrides: str) -> list[str]:
    return [f"data={data}", f"out={out}", *TINY, *MOE, *overrides]


def _one_process(data: Path, out: Path, *overrides: str):
    return train(resolve_run_config(None, _args(data, out, *ONE_PROCESS, *overrides)))


def _torchrun_command(data: Path, out: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "frugal_lm",
        "train",
        *_args(data, out, *TWO_RANKS, *overrides),
    ]


_ENVIRONMENT = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _two_ranks(data: Path, out: Path, *overrides: str) -> None:
    result = subprocess.run(
        _torchrun_command(data, out, *overrides), env=_ENVIRONMENT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == list(range(1, len(records) + 1))
    return [record["loss"] for record in records]


def _from_checkpoint(run_dir: Path, copy: Path, step: int) -> Path:
    """A copy of `run_dir` as it was when its checkpoint at `step` was the latest."""
    shutil.copytree(run_dir, copy)
    for checkpoint in (copy / "checkpoints").iterdir():
        if int(checkpoint.name.removeprefix("step_")) > step:
            shutil.rmtree(checkpoint)
    return copy


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run on one process and on two ranks at expert_parallel=2, checkpointed halfway."""
    root = tmp_path_factory.mktemp("expert_parallel")
    data = _write_mixed_set(root / "mix", n_examples=400, n_epochs=2)
    _one_process(data, root / "one", f"checkpoint_every={HALF}")
    _two_ranks(data, root / "two", f"checkpoint_every={HALF}")
    return data, root


def test_two_ranks_at_expert_parallel_2_train_the_same_losses_as_one_process(runs):
    _, root = runs
    one, two = _losses(root / "one"), _losses(root / "two")
    assert len(one) == len(two) == STEPS
    assert two == pytest.approx(one, rel=1e-4)
    # The experts the two ranks held trained as one process's did, each of them.
    final_one, final_two = (load_file(latest_checkpoint(root / run) / "model.safetensors") for run in ("one", "two"))
    halfway = load_file(root / "two" / "checkpoints" / f"step_{HALF:08d}" / "model.safetensors")
    assert final_two.keys() == final_one.keys()
    for name, weight in final_one.items():
        torch.testing.assert_close(final_two[name], weight, rtol=1e-4, atol=1e-5)
    experts = [name for name in final_two if name.endswith("mlp.experts.gate_up_proj")]
    assert experts
    for name in experts:
        assert all(not torch.equal(a, b) for a, b in zip(final_two[name], halfway[name]))


def test_a_two_rank_checkpoint_resumes_on_one_process_and_back(runs, tmp_path):
    data, root = runs
    # Saved at expert_parallel=2 on two ranks, continued on one process with the same global batch.
    to_one = _from_checkpoint(root / "two", tmp_path / "to_one", HALF)
    _one_process(data, to_one, "resume=true")
    assert _losses(to_one) == pytest.approx(_losses(root / "two"), rel=1e-4)
    # Saved on one process, continued on two ranks at expert_parallel=2.
    to_two = _from_checkpoint(root / "one", tmp_path / "to_two", HALF)
    _two_ranks(data, to_two, "resume=true")
    assert _losses(to_two) == pytest.approx(_losses(root / "one"), rel=1e-4)


def test_resharding_keeps_the_global_batch(runs, tmp_path, capsys):
    from frugal_lm.cli import main

    data, root = runs
    resumed = _from_checkpoint(root / "two", tmp_path / "run", HALF)
    # batch_tokens is per rank: 32 on one process is half the two-rank run's global batch.
    args = _args(data, resumed, "batch_tokens=32", "resume=true")
    assert main(["train", *args]) == 2
    error = capsys.readouterr().err
    assert "another global batch: batch_tokens=32 on 1 rank(s) is 32 tokens a step" in error
    assert "batch_tokens=32 on 2 rank(s), 64" in error and "Traceback" not in error


def test_an_expert_parallel_run_resumes_exactly_after_sigkill(runs, tmp_path):
    data, root = runs
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _torchrun_command(data, killed, f"checkpoint_every={HALF}"),
        env=_ENVIRONMENT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: torchrun and both ranks die together
    )
    deadline = time.time() + 240
    while not (killed / "checkpoints" / f"step_{HALF:08d}").exists():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert HALF <= len(_losses(killed)) < STEPS  # killed mid-run, after the checkpoint

    _two_ranks(data, killed, "resume=true")
    assert _losses(killed) == _losses(root / "two")  # bitwise: the same floats


@pytest.mark.slow
def test_four_ranks_hold_two_replicas_of_the_experts_and_match_one_process(runs, tmp_path):
    """World 4 at expert_parallel=2: each expert lives on two ranks, whose gradients are summed."""
    data, root = runs
    command = _torchrun_command(data, tmp_path / "four", "batch_tokens=16")  # 4 x 16: the same global batch
    command[command.index("--nproc_per_node=2")] = "--nproc_per_node=4"
    result = subprocess.run(command, env=_ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _losses(tmp_path / "four") == pytest.approx(_losses(root / "one"), rel=1e-4)


@pytest.mark.parametrize(
    "overrides, world_size, message",
    [
        (["expert_parallel=2"], 2, "expert_parallel=2 shards experts, but the model is dense"),
        ([*MOE, "model.moe.experts=6", "expert_parallel=4"], 4, "expert_parallel=4 does not divide model.moe.experts"),
        ([*MOE, "expert_parallel=2"], 1, "expert_parallel=2 needs torchrun with a multiple of 2 processes"),
        ([*MOE, "expert_parallel=2"], 3, "expert_parallel=2 does not divide torchrun's 3 ranks"),
    ],
)
def test_expert_parallel_settings_that_cannot_shard_are_one_line_errors(overrides, world_size, message):
    with pytest.raises(FrugalError, match=message):
        check_expert_parallel(resolve_run_config(None, overrides), world_size)


def test_expert_parallel_on_one_process_is_refused_before_training(tmp_path, write_mixed_set, capsys):
    from frugal_lm.cli import main

    data = write_mixed_set(tmp_path / "mix", n_examples=60)
    assert main(["train", *_args(data, tmp_path / "run", "expert_parallel=2")]) == 2
    error = capsys.readouterr().err
    assert "expert_parallel=2 needs torchrun" in error and "Traceback" not in error
    assert not (tmp_path / "run" / "checkpoints").exists()
