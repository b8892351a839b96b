"""`frugal demo`: the main job, the whole pipeline on the embedded synthetic tasks."""

from __future__ import annotations

import argparse
from pathlib import Path


def _demo_command(args: argparse.Namespace) -> int:
    print("frugal demo: not yet available in this version (the end-to-end demo lands with the "
          "data, training and inference stages). Try `frugal config preset=tiny` meanwhile.")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="train a small reasoning model on synthetic tasks (CPU ok)",
                               description="Run the whole pipeline on the embedded synthetic tasks.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    demo.add_argument("--minutes", type=float, default=10.0, help="time budget in minutes (default 10)")
    demo.set_defaults(handler=_demo_command)
