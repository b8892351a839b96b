"""`frugal train`, `frugal config` and `frugal report`."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def _recipe_help() -> str:
    from frugal_lm.config import recipe_names

    return f"recipe YAML file, or a packaged recipe: {', '.join(recipe_names())} (the recipe's keys, then key=value)"


def _train_keys() -> str:
    from frugal_lm.config import ModelConfig, RunConfig

    return (
        f"Keys (key=value): {', '.join(RunConfig.model_fields)}, net (model.net), and model.* "
        f"({', '.join(ModelConfig.model_fields)}). `frugal config ...` prints every key with its resolved value."
    )


RECIPE_HELP, TRAIN_KEYS = _recipe_help(), _train_keys()


def _config_command(args: argparse.Namespace) -> int:
    from frugal_lm.config import resolve_run_config
    from frugal_lm.model import parameter_counts
    from frugal_lm.plan.report import mix_vocab_size

    config = resolve_run_config(args.config, args.overrides)
    if config.data is not None and (vocab := mix_vocab_size(Path(config.data))) is not None:
        config.model = config.model.model_copy(update={"vocab_size": vocab})  # as `frugal train` builds it
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    total, active = parameter_counts(config.model)
    print(f"# parameters: {total:,}" + (f" ({active:,} active per token)" if active != total else ""))
    return 0


def _train_command(args: argparse.Namespace) -> int:
    from frugal_lm.config import resolve_run_config
    from frugal_lm.train.trainer import train

    result = train(resolve_run_config(args.config, args.overrides))
    print(
        f"trained {result.steps} steps on {result.tokens:,} tokens; last loss {result.last_loss:.4f}; "
        f"checkpoint {result.checkpoint}"
    )
    return 0


def _report_command(args: argparse.Namespace) -> int:
    from frugal_lm.train.report import write_report

    report = write_report(args.run_dir)
    print(report.summary_path.read_text())
    print(f"plots: {', '.join(str(p) for p in report.plot_paths)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model on a mixed training set (also under torchrun)",
        description="Train with the HRM-Text recipe. " + TRAIN_KEYS,
    )
    train.add_argument("--config", help=RECIPE_HELP)
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data=mix out=runs/a steps=100")
    train.set_defaults(handler=_train_command)

    report = commands.add_parser(
        "report",
        help="plots and a summary of a training run",
        description="Write RUN_DIR/report/{loss,accuracy,exact,lr,throughput}.png "
        "and summary.md from RUN_DIR/metrics.jsonl.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.set_defaults(handler=_report_command)

    config = commands.add_parser(
        "config",
        help="print the resolved run configuration and parameter count",
        description="Resolve presets, a recipe file and key=value overrides exactly as `frugal train` "
        "would, and print the result as YAML.",
    )
    config.add_argument("--config", help=RECIPE_HELP)
    config.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. preset=XL net=hrm lr=3e-4 model.vocab_size=65536"
    )
    config.set_defaults(handler=_config_command)
