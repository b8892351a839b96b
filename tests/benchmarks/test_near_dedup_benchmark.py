"""benchmarks/near_dedup_throughput.py still runs end to end at a toy size (slow: `pytest -m slow`).
Its timings are not checked; its accounting is."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/near_dedup_throughput.py"), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
def test_near_dedup_benchmark_runs_and_reports_its_measures():
    out = _run("--rows", "3000")
    for label in ("exact dedup (reference):", "near dedup:", "near / exact time:", "whole curate", "index:"):
        assert label in out, out
    assert re.search(r"index: 192 bytes per kept row", out), out


@pytest.mark.slow
def test_the_real_corpus_run_finds_most_planted_copies():
    out = _run("--real-corpus")
    caught = float(re.search(r"planted copies caught: ([\d.]+)%", out).group(1))
    assert caught >= 90, out
    assert "untouched paragraphs removed:" in out
