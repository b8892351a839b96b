import subprocess
import sys

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
