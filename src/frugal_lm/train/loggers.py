"""Where step metrics go: `metrics.jsonl` always, TensorBoard and W&B when asked for.

The JSONL file is the source of truth (`frugal report` and resume read it); the optional
sinks mirror it. Asking for a sink whose package is missing fails at start, with the
command that installs it, rather than silently logging nowhere.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from frugal_lm.errors import FrugalError

INSTALL_HINTS = {
    "tensorboard": "pip install tensorboard",
    "wandb": "pip install wandb",
}


def check_available(sinks: list[str]) -> None:
    for sink in sinks:
        if importlib.util.find_spec(sink) is None:
            raise FrugalError(
                f"loggers includes {sink!r} but the {sink} package is not installed; "
                f"run `{INSTALL_HINTS[sink]}` or drop it from loggers"
            )


class MetricsLogger:
    def __init__(self, run_dir: Path, sinks: list[str], config: dict[str, Any], resume: bool):
        check_available(sinks)
        self.file = open(Path(run_dir) / "metrics.jsonl", "a")
        self.tensorboard = self.wandb = None
        if "tensorboard" in sinks:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if "wandb" in sinks:
            import wandb

            self.wandb = wandb.init(
                project="frugal-lm",
                name=Path(run_dir).name,
                config=config,
                dir=str(run_dir),
                resume="allow" if resume else None,
            )

    def log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(f"train/{key}", value, record["step"])
        if self.wandb is not None:
            self.wandb.log(numbers, step=record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
