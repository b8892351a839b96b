"""`frugal demo`: the main job, the whole pipeline on the embedded synthetic tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

from frugal_lm.cli.data import DIFFICULTY_HELP, WEIGHTS_HELP

DESCRIPTION = """\
Train a small reasoning model from scratch on this machine, no GPU, data or downloads needed:
synthetic tasks (addition, multiplication, sorting, reversal, expression, counting) ->
tokenizer -> tokenize -> mix -> train (the `demo` recipe: a tiny HRM) -> exact-match score on
held-out problems per family -> sample answers -> export to the transformers hrm_text format.
Training gets as many steps as fit the time budget (measured step time), so the learning-rate
schedule ends on time. Writes everything under --out, with DIR/summary.json.

With only depth families (--tasks modexpr,chain, answered directly, --difficulty sets their
sequential steps) it trains the `demo-depth` recipe, an HRM that recurses, and scores each
difficulty apart. --compare trains beside the HRM a Transformer with its parameters (for the
same tokens and for the same time) and, when the HRM recurses, a Transformer with its forward
depth (for the same time)."""


def _demo_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.synth import check_difficulty, parse_families, parse_weights
    from frugal_lm.data.synth_depth import parse_difficulty
    from frugal_lm.demo import DataSettings, DemoOptions, run_demo

    families, difficulty = parse_families(args.tasks), parse_difficulty(args.difficulty)
    check_difficulty(families, difficulty)
    weights = None if args.weights is None else parse_weights(args.weights, families)
    data = DataSettings(
        families=tuple(families),
        difficulty=difficulty,
        weights=weights,
        answer_format=args.answer_format,
        seed=args.seed,
    )
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
        help="train the HRM and Transformers on the same data: same parameters at same tokens and "
        "at same time, and (when the HRM recurses) the HRM's forward depth at same time; print the "
        "scores side by side",
    )
    demo.add_argument(
        "--steps", type=int, help="train exactly this many steps instead of filling --minutes (reproducible runs)"
    )
    demo.add_argument(
        "--tasks",
        help="comma-separated task families (default all): addition, multiplication, "
        "sorting, reversal, expression, counting",
    )
    demo.add_argument("--difficulty", metavar="FAMILY.KNOB=VALUE,...", help=DIFFICULTY_HELP)
    demo.add_argument(
        "--weights", metavar="FAMILY=N,...", help=WEIGHTS_HELP + " (default expression=2,sorting=2; '' for even rows)"
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
        help="cot (default): worked solutions for every family but reversal, scored on "
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
