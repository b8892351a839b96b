"""`frugal demo`: the main job, the whole pipeline on the embedded synthetic tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Train a small reasoning model from scratch on this machine, no GPU, data or downloads needed:
synthetic tasks (addition, multiplication, sorting, reversal, expression, counting) ->
tokenizer -> tokenize -> mix -> train (the `demo` recipe: a tiny HRM) -> exact-match score on
held-out problems per family -> sample answers -> export to the transformers hrm_text format.
Training gets as many steps as fit the time budget (measured step time), so the learning-rate
schedule ends on time. Writes everything under --out, with DIR/summary.json."""


def _demo_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.synth import parse_families
    from frugal_lm.demo import DataSettings, DemoOptions, run_demo

    data = DataSettings(families=tuple(parse_families(args.tasks)), answer_format=args.answer_format, seed=args.seed)
    run_demo(
        DemoOptions(
            out=args.out,
            minutes=args.minutes,
            net=args.net,
            compare=args.compare,
            steps=args.steps,
            overwrite=args.overwrite,
            data=data,
            overrides=tuple(args.overrides),
        )
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="train a small reasoning model on synthetic tasks (CPU ok)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="demo directory, must be empty or new (default runs/demo)"
    )
    demo.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="wall-clock budget for the whole demo in minutes (default 10); more minutes, more "
        "training steps, higher scores",
    )
    demo.add_argument(
        "--net",
        choices=["hrm", "transformer"],
        default="hrm",
        help="network to train (default hrm; transformer is the same-size baseline)",
    )
    demo.add_argument(
        "--compare",
        action="store_true",
        help="train HRM and a Transformer with the same parameters on the same tokens and "
        "print both scores side by side",
    )
    demo.add_argument(
        "--steps", type=int, help="train exactly this many steps instead of filling --minutes (reproducible runs)"
    )
    demo.add_argument(
        "--tasks",
        help="comma-separated task families (default all): addition, multiplication, "
        "sorting, reversal, expression, counting",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="draws the problems, the training order and the model's initialisation (default 0); "
        "another seed checks that a score is not one lucky draw",
    )
    demo.add_argument(
        "--answer-format",
        choices=["cot", "direct"],
        default="cot",
        help="cot (default): worked solutions for the arithmetic families and counting, scored on "
        "the final answer after the marker; direct: the final answer alone",
    )
    demo.add_argument(
        "--overwrite", action="store_true", help="replace a previous demo run in --out (never any other directory)"
    )
    demo.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="recipe overrides on top of the `demo` recipe, e.g. lr=1e-3 model.hidden_size=192",
    )
    demo.set_defaults(handler=_demo_command)
