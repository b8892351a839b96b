"""The main job: `frugal demo` runs the whole pipeline on the embedded synthetic tasks.

Modules: `stages` (each stage as the call its `frugal` command makes), `budget` (time
budget -> training steps), `summary` (the report, on screen and in summary.json), `run`
(the order, the budget and the display; `run_demo`). Layer: demo sits above evals and
below the CLI, and adds no logic of its own to any stage.
"""

from frugal_lm.demo.run import DemoOptions, run_demo
from frugal_lm.demo.stages import DataSettings

__all__ = ["DataSettings", "DemoOptions", "run_demo"]
