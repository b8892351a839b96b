import json

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
