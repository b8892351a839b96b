import subprocess
import sys

import pytest

from frugal_lm.cli import main


def test_config_command_prints_parameter_count(capsys):
    assert main(["config", "preset=XL", "model.vocab_size=65536"]) == 0
    assert "# parameters: 1,182,793,728" in capsys.readouterr().out


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
    return {"synth": ["data", "synth", "--out", out, "--rows", "5", "--heldout-rows", "2"],
            "tokenizer": ["data", "tokenizer", "--vocab-size", "300", "--out", out, train],
            "tokenize": ["data", "tokenize", "--tokenizer", str(inputs / "tok"), "--out", out, train],
            "mix": ["data", "mix", "--tokenized", str(inputs / "tks"), "--out", out, "--context", "128"]}[name]


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
    _one_line_error(capsys, main(_data_command(command, data_inputs, str(precious))),
                    f"frugal data: error: --out {precious}: directory is not empty")
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"] and not (tmp_path / "precious.partial").exists()
    _one_line_error(capsys, main(_data_command(command, data_inputs, str(precious / "thesis.txt"))),
                    "exists and is not a directory")
    # Its own earlier output is replaced (or, for tokenize, brought up to date).
    out = tmp_path / "out"
    assert main(_data_command(command, data_inputs, str(out))) == 0
    assert main(_data_command(command, data_inputs, str(out))) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "precious"]


def test_output_piped_into_a_reader_that_stops_ends_quietly(tmp_path):
    """`frugal data validate FILE | head -1`: the pipe closes under the writer."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q"}\n' * 5000)  # more output than any pipe or stdout buffer holds
    process = subprocess.Popen([sys.executable, "-m", "frugal_lm", "data", "validate", str(bad)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # as `head -1` does after its line
    error = process.stderr.read().decode()
    assert process.wait() == 1
    assert "Traceback" not in error and "BrokenPipeError" not in error and "Exception ignored" not in error
