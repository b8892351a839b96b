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


def test_grok1_preset_plans_its_published_size_as_a_transformer(capsys):
    assert main(["plan", "--preset", "grok1", "--gpus", "1024", "--tokens", "1e12", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["net"] == "transformer"
    assert plan["parameters"] == pytest.approx(314e9, rel=0.01)
    assert 80e9 < plan["active_parameters"] < 90e9  # 2 of 8 experts per token
    assert plan["all_to_all"]["bytes"] == 0  # expert_parallel=1: nothing travels


def test_what_a_budget_buys_one_model(capsys):
    """`--budget-usd` with `--preset`: the tokens the money buys, with the whole plan."""
    command = ["plan", "--preset", "grok1", "--budget-usd", "2e6", "--gpus", "1024", "--expert-parallel", "8"]
    assert main([*command, "--activation-checkpointing"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("$2,000,000 buys ") and "per active parameter" in out
    assert "all-to-all" in out and "NVLink" in out and "memory/device" in out
    assert main([*command, "--activation-checkpointing", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dollars"] == pytest.approx(2e6, rel=1e-6) and plan["budget_usd"] == 2e6
    # With --hours, the budget rents as many GPUs as it can for that long.
    assert main(["plan", "--preset", "grok1", "--budget-usd", "2e6", "--hours", "1000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gpus"] == 1000


def test_model_overrides_turn_any_preset_into_a_mixture(capsys):
    assert main(["plan", "--preset", "XL", "--json", "model.moe.experts=8", "model.moe.top_k=2"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["active_parameters"] < plan["parameters"] / 2
    # A nested override keeps the rest of the preset's section.
    assert main(["plan", "--preset", "grok1", "--json", "model.moe.top_k=1", "model.n_kv_heads=48"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["parameters"] > 316e9 and one["active_parameters"] < 80e9


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["batch_tokens=4"], "frugal plan takes model keys only"),
        (["model.net=hrm"], "give the net as --net"),
        (["model.moe.top_k=9", "--preset", "grok1"], "moe.top_k must be within 1..moe.experts"),
        (["--preset", "grok1", "--expert-parallel", "3"], "expert_parallel=3 must divide model.moe.experts"),
        (["--preset", "grok1", "--budget-usd", "1e6", "--tokens", "1e9"], "the budget sets the tokens"),
        (["--hours", "3"], "--hours goes with --budget-usd"),
    ],
)
def test_moe_plan_errors_are_one_line(capsys, arguments, message):
    assert main(["plan", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


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
