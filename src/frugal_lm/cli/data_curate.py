"""`frugal data curate`: the CLI of data/curate.py. It builds what the pipeline is handed: the
reader (the `--format`, `--map`, `--turns`, `--condition` of the other data commands), the
quality filters (loading a tokenizer or lingua when asked) and the benchmark check (from
evals: the data layer never imports it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frugal_lm.errors import FrugalError

# The library's defaults, repeated so that building the parser imports neither numpy nor the
# data modules (tests/cli/test_data_curate.py checks they agree).
FILTER_NAMES = ("short-response", "echo", "refusal", "repetition", "mojibake")
NEAR_DEDUP_THRESHOLD, NEAR_DEDUP_PERMS, MAX_REPETITION = 0.8, 128, 0.3


def _reader(args: argparse.Namespace):
    """path -> a `SourceReader`: its examples, and (after reading) the format it detected."""
    from frugal_lm.cli.data import reader_options
    from frugal_lm.data.readers import SourceReader

    options = reader_options(args)
    return lambda path: SourceReader(path, options)


def _filters(args: argparse.Namespace) -> list:
    from frugal_lm.data.quality_filters import DEFAULT_FILTERS, build_filters, make_language, make_too_long

    if (args.max_tokens is None) != (args.tokenizer is None):
        raise FrugalError("--max-tokens and --tokenizer go together: the length is counted in that tokenizer's tokens")
    too_long = None
    if args.max_tokens is not None:
        from frugal_lm.data.tokenizer import load_tokenizer

        too_long = make_too_long(load_tokenizer(args.tokenizer).tokenizer, args.max_tokens)
    language = make_language(args.language) if args.language else None
    disabled = set(DEFAULT_FILTERS) if args.no_filters else set()
    for names in args.no_filter:
        disabled |= {name.strip() for name in names.split(",") if name.strip()}
    return build_filters(disabled, args.max_repetition, too_long, language)


def _contamination(args: argparse.Namespace):
    if args.benchmarks is None:
        return None, []
    from frugal_lm.evals.decontaminate import build_index

    index, missing = build_index(args.benchmarks, args.ngram)
    return index.hits, missing


def _data_curate_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.curate import CurateSettings, curate
    from frugal_lm.files import check_output_dir

    check_output_dir(args.out, "frugal data curate")  # refuse a foreign --out before any slow setup
    missing_sources = [source for source in args.sources if not source.exists()]
    if missing_sources:
        raise FrugalError(f"{missing_sources[0]}: no such file")
    out = args.out.resolve()
    inside = [source for source in args.sources if out == source.resolve() or out in source.resolve().parents]
    if inside:  # the output replaces --out whole: it would delete its own input
        raise FrugalError(f"{inside[0]} is inside --out {args.out}, which curate replaces; choose another --out")
    settings = CurateSettings(
        exact_dedup=not args.no_exact_dedup,
        near_dedup=not args.no_near_dedup,
        dedup_on=args.dedup_on,
        near_dedup_threshold=args.near_dedup_threshold,
        near_dedup_perms=args.near_dedup_perms,
        near_dedup_verify=args.near_dedup_verify,
        decontaminate=args.decontaminate,
    )
    read = _reader(args)
    filters = _filters(args)
    contamination, missing = _contamination(args)
    report = curate(
        args.sources, args.out, read, settings, filters, contamination, missing, progress=sys.stderr.isatty()
    )
    total = report.total
    removed = ", ".join(f"{count:,} {step}" for step, count in total.removed.items() if count) or "none"
    print(
        f"read {total.read:,} examples: kept {total.kept:,}"
        + (f" ({total.flagged:,} flagged as contaminated)" if total.flagged else "")
        + f", {total.bad_rows:,} bad, removed {removed} -> {args.out}/records.jsonl "
        f"(removed rows with their reasons in removed.jsonl, counts in report.md)"
    )
    return 0


def register_curate(data: argparse._SubParsersAction, out_help: str) -> None:
    """Add `curate` to the `frugal data` group."""
    curate = data.add_parser(
        "curate",
        help="filter, deduplicate and decontaminate record files, accounting for every row",
        description="Steps in order: bad rows and skipped conversation turns, quality filters, decontamination "
        "(with --benchmarks), exact duplicates, near-duplicates (MinHash LSH), keeping the first occurrence. "
        "Writes OUT/records.jsonl (kept rows, each with its source and where), OUT/removed.jsonl (every other "
        "row, with its step and reason), OUT/report.json, report.md and lengths.png.",
    )
    curate.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    curate.add_argument("--out", type=Path, required=True, help=out_help)
    from frugal_lm.cli.data import add_reader_arguments

    add_reader_arguments(curate)
    dedup = curate.add_argument_group("deduplication")
    dedup.add_argument("--no-exact-dedup", action="store_true", help="keep exact duplicates")
    dedup.add_argument("--no-near-dedup", action="store_true", help="keep near-duplicates")
    dedup.add_argument(
        "--dedup-on",
        choices=["pair", "instruction"],
        default="pair",
        help="what two rows must share to be duplicates: instruction and response (default), or the instruction",
    )
    dedup.add_argument(
        "--near-dedup-threshold",
        type=float,
        metavar="J",
        default=NEAR_DEDUP_THRESHOLD,
        help=f"Jaccard similarity of the word 5-grams of normalised text (default {NEAR_DEDUP_THRESHOLD})",
    )
    dedup.add_argument(
        "--near-dedup-perms",
        type=int,
        metavar="N",
        default=NEAR_DEDUP_PERMS,
        help=f"MinHash permutations (default {NEAR_DEDUP_PERMS})",
    )
    dedup.add_argument(
        "--near-dedup-verify",
        action="store_true",
        help="confirm each LSH candidate on the exact Jaccard similarity of the shingle sets (kept rows' "
        "shingle hashes go to a scratch file in the output's staging folder): fewer distinct rows removed, "
        "fewer edited copies of short rows caught",
    )
    filters = curate.add_argument_group("quality filters")
    filters.add_argument("--no-filters", action="store_true", help="turn off every default quality filter")
    filters.add_argument(
        "--no-filter",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"turn off these filters: {', '.join(FILTER_NAMES)}",
    )
    filters.add_argument(
        "--max-repetition",
        type=float,
        metavar="SHARE",
        default=MAX_REPETITION,
        help=f"largest share of repeated word 4-grams in a response (default {MAX_REPETITION})",
    )
    filters.add_argument(
        "--max-tokens", type=int, metavar="N", help="remove rows longer than this many tokens (with --tokenizer)"
    )
    filters.add_argument("--tokenizer", type=Path, metavar="DIR", help="tokenizer directory counting --max-tokens")
    filters.add_argument(
        "--language", metavar="CODE", help="keep only rows in this language, ISO 639-1 (needs frugal-lm[language])"
    )
    contamination = curate.add_argument_group("decontamination")
    contamination.add_argument(
        "--benchmarks", type=Path, metavar="DIR", help="benchmark test sets in the `frugal eval --data-dir` layout"
    )
    contamination.add_argument("--ngram", type=int, default=13, metavar="N", help="n-gram length in words (default 13)")
    contamination.add_argument(
        "--decontaminate",
        choices=["remove", "flag"],
        default="remove",
        help="remove overlapping rows (default), or keep them with a `contamination` field",
    )
    curate.set_defaults(handler=_data_curate_command)
