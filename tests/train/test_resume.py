"""Resume continues the same run or refuses, and never executes code from the run directory."""

import io
import json
import pickle

import pytest
import torch

from frugal_lm.cli import main
from frugal_lm.errors import FrugalError
from frugal_lm.train.checkpoint import latest_checkpoint
from frugal_lm.train.safe_dcp import SafeLoadPlanner


class _Payload:
    """Unpickling this creates `marker`: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _one_error_line(capsys) -> str:
    error = capsys.readouterr().err
    assert "Traceback" not in error
    lines = [line for line in error.splitlines() if "error:" in line]
    assert len(lines) == 1, error
    return lines[0]


def test_resume_never_executes_code_planted_in_the_checkpoint_metadata(
    tmp_path, write_mixed_set, capsys, train_run, run_args
):
    data = write_mixed_set(tmp_path / "mix", n_examples=60)
    train_run(data, tmp_path / "run", "steps=2")
    marker = tmp_path / "code_ran"
    metadata = latest_checkpoint(tmp_path / "run") / "train_state" / ".metadata"
    metadata.write_bytes(pickle.dumps(_Payload(marker)))
    code = main(["train", *run_args(data, tmp_path / "run", "steps=4", "resume=true")])
    assert code != 0
    assert ".metadata" in _one_error_line(capsys)
    assert not marker.exists()


def test_checkpoint_entries_are_loaded_without_executing_code(tmp_path):
    marker = tmp_path / "code_ran"
    buffer = io.BytesIO()
    torch.save({"lr": _Payload(marker)}, buffer)
    buffer.seek(0)

    class Item:
        class dest_index:
            fqn = "optimizer.param_groups.0.lr"

    with pytest.raises(FrugalError, match="optimizer.param_groups.0.lr: refused to load"):
        SafeLoadPlanner().load_bytes(Item, buffer)
    assert not marker.exists()


@pytest.mark.parametrize(
    "changed, named",
    [
        ("lr=1e-2", "lr=0.01 (the run has 0.003)"),
        ("batch_tokens=32", "batch_tokens=32 (the run has 64)"),
        ("model.hidden_size=64", "model.hidden_size=64 (the run has 32)"),
        ("model.moe.experts=4", "model.moe.experts=4 (the run has 0)"),  # experts on a dense run
    ],
)
def test_resume_refuses_settings_that_shape_the_run(
    tmp_path, write_mixed_set, capsys, changed, named, train_run, run_args
):
    data = write_mixed_set(tmp_path / "mix", n_examples=60)
    train_run(data, tmp_path / "run", "steps=2")
    config_before = (tmp_path / "run" / "config.yaml").read_text()
    assert main(["train", *run_args(data, tmp_path / "run", "steps=4", "resume=true", changed)]) == 2
    assert named in _one_error_line(capsys)
    assert (tmp_path / "run" / "config.yaml").read_text() == config_before


def test_resume_refuses_another_mixed_set(tmp_path, write_mixed_set, capsys, train_run, run_args):
    data = write_mixed_set(tmp_path / "mix", n_examples=60)
    other = write_mixed_set(tmp_path / "other", n_examples=60, seed=5)
    train_run(data, tmp_path / "run", "steps=2")
    assert main(["train", *run_args(other, tmp_path / "run", "steps=4", "resume=true")]) == 2
    assert "is not the mixed set this run was trained on" in _one_error_line(capsys)


def test_resume_may_lengthen_the_run_and_says_where_it_resumes(tmp_path, write_mixed_set, capsys, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=200)
    train_run(data, tmp_path / "run", "steps=2")
    result = train_run(data, tmp_path / "run", "steps=4", "resume=true", "log_every=1")
    assert result.steps == 4
    assert "from step 2 (step_00000002)" in capsys.readouterr().err


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=200)
    train_run(data, tmp_path / "run", "steps=2")
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 3, "lo')  # killed mid-write
    train_run(data, tmp_path / "run", "steps=3", "resume=true")
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


def test_resume_may_change_how_experts_compute_but_not_their_routing(
    tmp_path, write_mixed_set, capsys, train_run, run_args
):
    data = write_mixed_set(tmp_path / "mix", n_examples=60)
    moe = ["model.moe.experts=4", "model.moe.intermediate_size=32"]
    train_run(data, tmp_path / "run", "steps=2", *moe)
    train_run(data, tmp_path / "run", "steps=3", "resume=true", *moe, "model.moe.implementation=loop")
    capsys.readouterr()
    args = run_args(data, tmp_path / "run", "steps=4", "resume=true", *moe, "model.moe.top_k=1")
    assert main(["train", *args]) == 2
    assert "model.moe.top_k=1 (the run has 2)" in _one_error_line(capsys)
