"""Per-sample records and per-task results, and the three output files of an eval run.

Every score is a mean over per-sample values, so one rule gives every metric its standard
error: the sample standard deviation (n - 1) over sqrt(n), the rule lm-eval-harness uses,
so our stderr and the harness's agree on the same samples. Per-sample records keep what a
person needs to see why a sample failed: the prompt, the raw output, the extracted answer,
the gold answer and the verdict.

Files (all written atomically, temp + os.replace, so an interrupted run never leaves a
half-written results.json behind):
- `results.json`: {task: {"metric", "value", "stderr", "n", "metrics": {name: {...}}}}
- `results.md`: one markdown table row per task and metric
- `samples_<task>.jsonl`: one line per sample
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frugal_lm.files import write_text_atomically


@dataclass
class SampleRecord:
    """One scored sample. `extra` carries task-specific detail (family, option scores, F1)."""

    index: int
    prompt: str
    output: str
    extracted: str | None
    gold: str
    correct: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    value: float
    stderr: float
    n: int


def mean_metric(values: Sequence[float]) -> Metric:
    """Mean with the stderr of the mean (sample std with n - 1, over sqrt(n))."""
    n = len(values)
    if n == 0:
        return Metric(float("nan"), float("nan"), 0)
    mean = sum(values) / n
    if n == 1:
        return Metric(mean, float("nan"), 1)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Metric(mean, math.sqrt(variance / n), n)


@dataclass
class TaskResult:
    """A task's metrics (the `primary` one first in tables) and its per-sample records."""

    task: str
    primary: str
    metrics: dict[str, Metric]
    samples: list[SampleRecord]

    @property
    def value(self) -> float:
        return self.metrics[self.primary].value

    def summary(self) -> dict[str, Any]:
        main = self.metrics[self.primary]
        return {
            "metric": self.primary,
            "value": main.value,
            "stderr": main.stderr,
            "n": main.n,
            "metrics": {name: asdict(metric) for name, metric in self.metrics.items()},
        }


def _json_number(value: float) -> float | None:
    """JSON has no NaN: a stderr that does not exist (n <= 1) is written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _clean(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _clean(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_clean(value) for value in data]
    return _json_number(data) if isinstance(data, float) else data


def markdown_table(results: Iterable[TaskResult]) -> str:
    lines = ["| task | metric | value | stderr | n |", "|---|---|---:|---:|---:|"]
    for result in results:
        names = [result.primary, *(name for name in result.metrics if name != result.primary)]
        for name in names:
            metric = result.metrics[name]
            stderr = "" if math.isnan(metric.stderr) else f"{metric.stderr:.4f}"
            lines.append(f"| {result.task} | {name} | {metric.value:.4f} | {stderr} | {metric.n} |")
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[TaskResult], out: Path, config: dict[str, Any] | None = None) -> dict[str, Path]:
    """results.json (with the run's `config` when given), results.md and samples_<task>.jsonl."""
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    document = {"results": {result.task: result.summary() for result in results}}
    if config is not None:
        document["config"] = config
    write_text_atomically(paths["json"], json.dumps(_clean(document), indent=1) + "\n")
    write_text_atomically(paths["markdown"], markdown_table(results))
    for result in results:
        path = out / f"samples_{result.task}.jsonl"
        write_text_atomically(
            path, "".join(json.dumps(_clean(asdict(sample)), ensure_ascii=False) + "\n" for sample in result.samples)
        )
        paths[f"samples_{result.task}"] = path
    return paths
