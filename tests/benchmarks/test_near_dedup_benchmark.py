"""benchmarks/near_dedup_throughput.py still runs end to end at a toy size (slow: `pytest -m slow`).
Its timings are not checked; its accounting is."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_near_dedup_benchmark_runs_and_reports_its_measures():
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/near_dedup_throughput.py"), "--rows", "3000"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    for label in ("exact dedup (reference):", "near dedup:", "near / exact time:", "whole curate", "index:"):
        assert label in out, out
    assert re.search(r"index: 192 bytes per kept row", out), out
