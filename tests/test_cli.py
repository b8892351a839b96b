import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from frugal_lm.cli import main


def test_config_command_prints_parameter_count(capsys):
    assert main(["config", "preset=XL", "model.vocab_size=65536"]) == 0
    assert "# parameters: 1,182,793,728" in capsys.readouterr().out
    overrides = ["model.vocab_size=256", "model.moe.experts=8", "model.moe.top_k=2", "model.moe.intermediate_size=256"]
    assert main(["config", "preset=tiny", *overrides]) == 0
    # tiny: 4 blocks of hidden 128; each expert 3 x 128 x 256, router 8 x 128; 6 of 8 experts idle per token.
    dense = 2 * 256 * 128 + 4 * 5 * 128 * 128
    total, active = dense + 4 * (8 * 128 + 8 * 3 * 128 * 256), dense + 4 * (8 * 128 + 2 * 3 * 128 * 256)
    assert f"# parameters: {total:,} ({active:,} active per token)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.moe.experts=4", "model.moe.top_k=5"], "model.moe: moe.top_k must be within 1..moe.experts (4), got 5"),
        (["model.moe.experts=1"], "model.moe: moe.experts must be 0 (dense) or >= 2"),
        (["model.moe.experts=4", "model.moe.score=relu"], "model.moe.score"),
        (["model.moe.experts=4", "model.moe.first_dense_layers=9"], "moe.first_dense_layers (9) is more than"),
    ],
)
def test_bad_moe_settings_are_one_line_errors_naming_the_key(capsys, overrides, message):
    assert main(["config", "preset=tiny", *overrides]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and "Traceback" not in error


def test_user_mistake_is_one_line_and_nonzero(capsys):
    assert main(["config", "model.hiden_size=1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown key 'model.hiden_size'" in error and "Traceback" not in error


def test_console_entry_point_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "frugal_lm", "demo", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--minutes" in result.stdout


@pytest.fixture(scope="module")
def data_inputs(tmp_path_factory):
    """A tiny synth split, a tokenizer trained on it and its tokenized output."""
    root = tmp_path_factory.mktemp("inputs")
    assert main(["data", "synth", "--out", str(root / "synth"), "--rows", "30", "--heldout-rows", "5"]) == 0
    train = str(root / "synth" / "train.jsonl")
    assert main(["data", "tokenizer", "--vocab-size", "300", "--out", str(root / "tok"), train]) == 0
    assert main(["data", "tokenize", "--tokenizer", str(root / "tok"), "--out", str(root / "tks"), train]) == 0
    return root


def _data_command(name, inputs, out):
    train = str(inputs / "synth" / "train.jsonl")
    return {
        "synth": ["data", "synth", "--out", out, "--rows", "5", "--heldout-rows", "2"],
        "tokenizer": ["data", "tokenizer", "--vocab-size", "300", "--out", out, train],
        "tokenize": ["data", "tokenize", "--tokenizer", str(inputs / "tok"), "--out", out, train],
        "mix": ["data", "mix", "--tokenized", str(inputs / "tks"), "--out", out, "--context", "128"],
    }[name]


def _one_line_error(capsys, code, *expected):
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1, captured.err
    assert all(text in captured.err for text in expected), captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("command", ["synth", "tokenizer", "tokenize", "mix"])
def test_data_commands_never_write_into_a_folder_they_did_not_write(data_inputs, tmp_path, capsys, command):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    _one_line_error(
        capsys,
        main(_data_command(command, data_inputs, str(precious))),
        f"frugal data: error: --out {precious}: directory is not empty",
    )
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"] and not (tmp_path / "precious.partial").exists()
    _one_line_error(
        capsys, main(_data_command(command, data_inputs, str(precious / "thesis.txt"))), "exists and is not a directory"
    )
    # Its own earlier output is replaced (or, for tokenize, brought up to date).
    out = tmp_path / "out"
    assert main(_data_command(command, data_inputs, str(out))) == 0
    assert main(_data_command(command, data_inputs, str(out))) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "precious"]


def test_output_piped_into_a_reader_that_stops_ends_quietly(tmp_path):
    """`frugal data validate FILE | head -1`: the pipe closes under the writer."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q"}\n' * 5000)  # more output than any pipe or stdout buffer holds
    process = subprocess.Popen(
        [sys.executable, "-m", "frugal_lm", "data", "validate", str(bad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.readline()
    process.stdout.close()  # as `head -1` does after its line
    error = process.stderr.read().decode()
    assert process.wait() == 1
    assert "Traceback" not in error and "BrokenPipeError" not in error and "Exception ignored" not in error


def _report_run(tmp_path):
    """A run directory `frugal report` accepts: one logged step."""
    run = tmp_path / "run"
    run.mkdir()
    step = {
        "step": 1,
        "tokens": 64,
        "loss": 2.0,
        "token_accuracy": 0.1,
        "exact_accuracy": 0.0,
        "lr": 1e-3,
        "elapsed_s": 1.0,
    }
    (run / "metrics.jsonl").write_text(json.dumps(step) + "\n")
    return run


def test_an_os_error_on_a_users_path_is_one_line_naming_it_for_any_command(tiny_run, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code = main(["export", "hf", "--model", str(tiny_run), "--out", str(blocker / "hf")])
    _one_line_error(capsys, code, "frugal export: error: ", f"{blocker}/hf.partial: Not a directory")
    run = _report_run(tmp_path)
    (run / "report").write_text("a file where report/ goes")
    _one_line_error(capsys, main(["report", str(run)]), f"frugal report: error: {run / 'report'}: File exists")


def test_an_unreadable_file_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    run = _report_run(tmp_path)
    real_read_text = Path.read_text

    def denied(path, *args, **kwargs):  # chmod 000 does not stop root, so the refusal is simulated
        if path.name == "metrics.jsonl":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    _one_line_error(
        capsys, main(["report", str(run)]), f"frugal report: error: {run / 'metrics.jsonl'}: Permission denied"
    )


def test_a_full_disk_is_one_line_even_when_python_names_no_file(tmp_path, capsys, monkeypatch):
    run = _report_run(tmp_path)

    def disk_full(path, *args, **kwargs):  # a write to an open file: the OSError carries no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    _one_line_error(capsys, main(["report", str(run)]), "frugal report: error: No space left on device")


def test_an_os_error_that_names_no_file_and_is_not_the_machines_keeps_its_traceback(monkeypatch):
    from frugal_lm.cli import train as train_cli

    def bug(args):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(train_cli, "_report_command", bug)
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(["report", "anywhere"])


def test_a_bad_flag_on_a_subcommand_prints_that_subcommands_usage(capsys):
    for argv, usage in (
        (["train", "--bogus"], "usage: frugal train"),
        (["import", "hf", "--hf-dir", "x", "--out", "y", "--bogus"], "usage: frugal import hf"),
        (["data", "mix", "--tokenized", "t", "--out", "o", "--bogus"], "usage: frugal data mix"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        error = capsys.readouterr().err
        assert exit_.value.code == 2 and error.startswith(usage), error
        assert f"{usage.removeprefix('usage: ')}: error: unrecognized arguments: --bogus" in error


def test_the_top_level_help_speaks_to_users():
    from frugal_lm.cli import build_parser

    text = build_parser().format_help()
    assert "Train your own language model" in text and "frugal demo" in text
    assert "parse, call the package" not in text
