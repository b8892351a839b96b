import json

import pytest

from frugal_lm.cli import build_parser, main


def test_plan_json_matches_paper_scale(capsys):
    assert main(["plan", "--preset", "XL", "--gpus", "16", "--gpu", "h100", "--tokens", "60e9", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"] == 1_182_793_728
    assert 40 < plan["wall_hours"] < 52 and plan["fits"] is True
    assert plan["memory"]["total"] < 80e9


def test_plan_table_and_epochs(capsys):
    assert main(["plan", "--preset", "L", "--gpus", "8", "--tokens", "20e9", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "60 G processed (3 epochs)" in out and "$" in out and "dense 6ND" in out


def test_plan_reverse_question(capsys):
    assert main(["plan", "--budget-usd", "800", "--hours", "50", "--json"]) == 0
    answers = {a["preset"]: a for a in json.loads(capsys.readouterr().out)}
    assert answers["L"]["gpus"] == 8 and answers["L"]["processed_tokens"] > 50e9


def test_plan_errors_are_one_line(capsys):
    assert main(["plan", "--gpu", "tpu"]) == 2
    assert main(["plan", "--budget-usd", "100"]) == 2
    assert main(["plan", "--preset", "nope"]) == 2
    assert main(["plan", "--batch-tokens", "0"]) == 2
    assert main(["plan", "--gpus", "0"]) == 2
    assert main(["plan", "--mfu", "1.5"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 6 and all(line.startswith("frugal plan: error:") for line in errors)


def test_plan_help_states_assumptions():
    text = build_parser()._subparsers._group_actions[0].choices["plan"].format_help()
    for word in ("AdamATan2", "FSDP", "bp_steps", "PrefixLM", "MFU", "6ND", "response"):
        assert word in text


def test_plan_from_data_dir(tmp_path, capsys):
    import numpy as np

    for epoch in range(4):
        folder = tmp_path / f"epoch_{epoch}"
        folder.mkdir()
        np.save(folder / "inst_len.npy", np.full(1000, 300, dtype=np.int64))
        np.save(folder / "resp_len.npy", np.full(1000, 701, dtype=np.int64))
    assert main(["plan", "--preset", "B", "--gpus", "1", "--data", str(tmp_path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["processed_tokens"] == 4 * 1000 * 1000
    assert main(["plan", "--data", str(tmp_path / "nope")]) == 2


def test_moe_question_from_the_command_line(capsys):
    """'1T parameters, 384 experts, top-8: what do 15T tokens cost?' is budget.py's arithmetic."""
    from frugal_lm.plan.budget import dense_training_dollars, moe_parameters
    from frugal_lm.plan.devices import DEVICES

    assert (
        main(
            [
                "plan",
                "--parameters",
                "1e12",
                "--experts",
                "384",
                "--top-k",
                "8",
                "--shared-experts",
                "1",
                "--expert-fraction",
                "0.96",
                "--tokens",
                "15e12",
                "--gpu",
                "h100",
                "--gpus",
                "1024",
                "--mfu",
                "0.4",
                "--json",
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    moe = moe_parameters(1e12, 0.96, 384, 8, shared_experts=1)
    assert answer["active_parameters"] == moe.active
    assert answer["dollars"] == dense_training_dollars(moe.active, 15e12, DEVICES["h100"], 0.4, 2.0)
    assert main(["plan", "--parameters", "1e12", "--experts", "384", "--top-k", "8", "--tokens", "15e12"]) == 0
    assert "top-8" in capsys.readouterr().out
    assert main(["plan", "--experts", "384", "--parameters", "1e12"]) == 2
    assert "--experts needs --top-k and --parameters" in capsys.readouterr().err
    assert main(["plan", "--experts", "8", "--top-k", "9", "--parameters", "1e9"]) == 2
    assert "need 1 <= top_k <= experts" in capsys.readouterr().err


def test_small_runs_show_minutes_or_seconds_not_zero_hours(capsys):
    assert main(["plan", "--preset", "tiny", "--gpus", "1", "--tokens", "1e6"]) == 0
    wall = next(line for line in capsys.readouterr().out.splitlines() if "wall time" in line)
    assert wall.rstrip().endswith((" s", " min")) and "0.0 h" not in wall


def test_plan_with_data_counts_the_mix_vocabulary_as_train_does(write_mixed_set, tmp_path, capsys):
    from frugal_lm.config import load_model_config
    from frugal_lm.model import count_parameters

    mix = write_mixed_set(tmp_path / "mix")
    vocab = json.loads((mix / "metadata.json").read_text())["vocab_size"]
    assert main(["plan", "--preset", "tiny", "--gpus", "1", "--data", str(mix), "--json"]) == 0
    expected = count_parameters(load_model_config("tiny", "hrm").model_copy(update={"vocab_size": vocab}))
    assert json.loads(capsys.readouterr().out)["parameters"] == expected


@pytest.mark.parametrize(
    "native_bf16, preset, precision", [(True, "B", "bf16"), (True, "tiny", "fp32"), (False, "B", "fp32")]
)
def test_cpu_plan_measures_the_precision_train_computes_in(monkeypatch, capsys, native_bf16, preset, precision):
    import frugal_lm.runtime

    monkeypatch.setattr(frugal_lm.runtime, "cpu_has_native_bf16", lambda: native_bf16)
    assert main(["plan", "--preset", preset, "--gpu", "cpu", "--gpus", "1", "--tokens", "1e6"]) == 0
    assert f"(measured {precision} matmul)" in capsys.readouterr().out
