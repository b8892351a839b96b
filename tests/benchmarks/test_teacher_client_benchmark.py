"""benchmarks/teacher_client_concurrency.py still runs end to end at a toy size (slow: `pytest -m slow`).
Its timings are not checked, only that it measures and prints both rows per N."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_teacher_client_benchmark_runs_and_prints_ratios():
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/teacher_client_concurrency.py"), "--concurrency", "2,4",
         "--requests-per-n", "3", "--delay", "0.01"],
        capture_output=True, text=True, env=environment, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = re.findall(r"N=(\d+)\s+(client|generate)\s+\d+ requests: .* ratio (\d+\.\d+)", completed.stdout)
    expected = [("2", "client"), ("2", "generate"), ("4", "client"), ("4", "generate")]
    assert [(n, label) for n, label, _ in rows] == expected
    assert all(float(ratio) > 0 for _, _, ratio in rows)
