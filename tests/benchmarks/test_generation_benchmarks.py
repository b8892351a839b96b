"""The inference benchmarks still run, end to end, at toy sizes (slow: `pytest -m slow`).
Their figures are not checked (timings never are); their agreement checks are."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SRC = Path(__file__).resolve().parents[2] / "src"


def run_benchmark(script: str, *args: str) -> str:
    environment = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, env=environment, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_generate_throughput_runs_and_agrees_with_transformers(dtype):
    pytest.importorskip("transformers")
    out = run_benchmark(
        "generate_throughput.py",
        *("--hidden", "32", "--heads", "2", "--layers-per-stack", "1", "--vocab", "512"),
        *("--batch-sizes", "1,2", "--prompts", "2", "--new-tokens", "4", "--repeats", "1", "--no-compile"),
        *("--dtype", dtype),
    )
    assert "the matmul floor" in out and "transformers" in out
    if dtype == "fp32":
        assert out.count("identical sequences 2/2") == 2  # the benchmark also exits 1 otherwise
    else:
        assert out.count("teacher-forced greedy agreement") == 2


@pytest.mark.slow
def test_generate_dtypes_runs_on_a_trained_model(tiny_run, tmp_path):
    from frugal_lm.data.synth import generate

    demo = tmp_path / "demo"
    (demo / "data").mkdir(parents=True)
    (demo / "run").symlink_to(tiny_run)
    rows = [
        {"instruction": problem.instruction, "response": problem.response, "condition": "direct"}
        for problem in generate(["addition"], 3, seed=0, heldout=True)
    ]
    (demo / "data" / "heldout.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = run_benchmark("generate_dtypes.py", "--model", str(demo), "--prompts", "3", "--repeats", "1", "--no-compile")
    assert "bf16" in out and "int8" in out and out.count("greedy agreement with fp32") == 2
