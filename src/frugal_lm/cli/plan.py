"""`frugal plan`: FLOPs, time, dollars and memory before a run."""

from __future__ import annotations

import argparse


def _plan_command(args: argparse.Namespace) -> int:
    from frugal_lm.plan.report import run_plan

    return run_plan(args)


def register(commands: argparse._SubParsersAction) -> None:
    from frugal_lm.plan.report import ASSUMPTIONS, add_plan_arguments

    plan = commands.add_parser(
        "plan",
        help="FLOPs, time, dollars and memory of a training run (or what a budget buys)",
        description="Estimate a pretraining run: parameters, FLOPs, device-hours, wall time, dollars and "
        "memory per device, against a dense 6ND Transformer; or, with --budget-usd and --hours, "
        "what each preset can train for that money and time.",
        epilog=ASSUMPTIONS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_plan_arguments(plan)
    plan.set_defaults(handler=_plan_command)
