"""`frugal demo` user mistakes: one line on stderr, exit code 2, nothing touched or deleted."""

import json

import pytest

from frugal_lm.cli import main
from frugal_lm.demo.run import prepare_out_dir
from frugal_lm.files import read_output_marker


def run(capsys, *argv):
    code = main(["demo", *argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_refuses_a_non_empty_directory_that_is_not_a_demo_run(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    code, err = run(capsys, "--out", str(tmp_path), "--overwrite")
    assert code == 2
    assert "holds no demo run" in err and str(tmp_path) in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_refuses_a_finished_demo_run_without_overwrite(tmp_path, capsys):
    (tmp_path / "demo.json").write_text("{}")
    (tmp_path / "summary.json").write_text(json.dumps({"reports": [{"exact_match": 0.5}]}))
    code, err = run(capsys, "--out", str(tmp_path))
    assert code == 2
    assert "finished demo run (mean held-out exact match 50.0%)" in err and "--overwrite" in err
    assert (tmp_path / "summary.json").is_file()


def test_names_an_unfinished_demo_run(tmp_path, capsys):
    (tmp_path / "demo.json").write_text("{}")
    (tmp_path / "mix").mkdir()
    code, err = run(capsys, "--out", str(tmp_path))
    assert code == 2 and "unfinished demo run" in err


def test_a_demo_directory_is_marked_so_other_commands_name_it_when_refusing_it(tmp_path, capsys):
    out = tmp_path / "demo"
    prepare_out_dir(out, overwrite=False)
    assert read_output_marker(out)["command"] == "frugal demo"
    code, err = run(capsys, "--out", str(out))
    assert code == 2 and "unfinished demo run" in err
    assert main(["data", "synth", "--out", str(out), "--rows", "5", "--heldout-rows", "2"]) == 2
    assert "written by `frugal demo`, not `frugal data synth`" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".frugal_output.json"]


def test_out_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    code, err = run(capsys, "--out", str(path))
    assert code == 2 and "not a directory" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minutes", "0"], "--minutes must be > 0"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["lr_typo=1"], "unknown key 'lr_typo'"),
        (["model.hidden_size=banana"], "model.hidden_size"),
        (["--tasks", "addition,juggling"], "unknown task family 'juggling'"),
        (["--tasks", "chain", "--difficulty", "modexpr.ops=3"], "difficulty given for 'modexpr'"),
        (["--tasks", "chain", "--difficulty", "chain.hops=0"], "--difficulty chain: bad value for 'hops'"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "demo"
    code, err = run(capsys, "--out", str(out), *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_unknown_net_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--net", "rnn"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'rnn'" in capsys.readouterr().err


def test_help_explains_the_pipeline(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for word in ("synthetic", "tokenizer", "held-out", "--minutes", "--compare", "--overwrite", "summary.json"):
        assert word in text
