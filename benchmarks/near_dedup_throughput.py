"""Throughput and memory of `frugal data curate`'s near-duplicate step, against exact dedup.

One run, on the same rows:
1. generates `--rows` short instruction -> response pairs (untimed, deterministic by seed):
   Zipf-distributed pseudo-words, an instruction of one or two sentences and a response of one
   to three (about 15-70 words a pair), of which `--planted` (default 10%) are near copies of
   an earlier row (a word changed, punctuation and case altered, or a sentence appended);
2. the reference: an exact-dedup pass over the same pairs (`dedup.row_key` + `DuplicateFilter`,
   what `frugal data tokenize` and curate's exact step do), in the same batches;
3. ours: `NearDuplicateFilter.check` in curate's batches of 2,048: normalising, 5-gram
   shingles, rensa MinHash signatures, band keys, index lookups and inserts;
4. the whole `curate` (read JSONL, filters, exact and near dedup, writing the outputs) on a
   JSONL file of the same rows, for scale;
5. untimed: the index's bytes per kept row, from its arrays and from tracemalloc (all Python
   allocations the filter made) on the first min(rows, 20,000) pairs.
It prints rows/s and seconds of each, the ratio ours / exact, and the share of planted copies
caught and of untouched rows removed.

`--real-corpus` (untimed) instead plants near copies in real English: the paragraphs of 30-150
words of the Python standard library's docstrings on this machine (each a pair: its first
sentence, then the paragraph), and prints the share caught, the share of untouched paragraphs
removed, and how similar those really are to what they were taken for (exact Jaccard of their
shingles: LSH has a soft edge, so pairs somewhat below the threshold are caught now and then).

    PYTHONPATH=src python benchmarks/near_dedup_throughput.py [--rows 100000] [--seed 0]
    PYTHONPATH=src python benchmarks/near_dedup_throughput.py --real-corpus
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import platform
import random
import statistics
import sysconfig
import tempfile
import time
import tracemalloc
from pathlib import Path

from frugal_lm.data.curate import BATCH_ROWS, curate
from frugal_lm.data.dedup import DuplicateFilter, row_key
from frugal_lm.data.near_dedup import NearDuplicateFilter, shingles
from frugal_lm.data.quality_filters import build_filters
from frugal_lm.data.records import read_rows

SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def generate_pairs(rows: int, planted_share: float, seed: int) -> tuple[list[tuple[str, str]], dict[int, int]]:
    """The pairs, and {position of a planted copy: position of its original}."""
    rng = random.Random(seed)
    vocabulary = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(20000)})
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocabulary))))

    def sentence() -> str:
        return " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(6, 14))).capitalize() + "."

    pairs: list[tuple[str, str]] = []
    planted: dict[int, int] = {}
    for position in range(rows):
        if pairs and rng.random() < planted_share:
            original = rng.randrange(len(pairs))
            planted[position] = original
            pairs.append(near_copy(pairs[original], rng))
        else:
            instruction = " ".join(sentence() for _ in range(rng.randint(1, 2)))
            pairs.append((instruction, " ".join(sentence() for _ in range(rng.randint(1, 3)))))
    return pairs, planted


def near_copy(pair: tuple[str, str], rng: random.Random) -> tuple[str, str]:
    instruction, response = pair
    kind = rng.randrange(3)
    if kind == 0:
        words = response.split()
        words[rng.randrange(len(words))] = "zoubaikei"
        return instruction, " ".join(words)
    if kind == 1:
        return instruction.upper().replace(".", ";"), response.replace(" ", "  ").replace(".", "!")
    return instruction, response + " And that is all."


def time_exact(pairs: list[tuple[str, str]]) -> float:
    start, exact = time.perf_counter(), DuplicateFilter()
    for offset in range(0, len(pairs), BATCH_ROWS):
        exact.first_seen([row_key(i, r) for i, r in pairs[offset : offset + BATCH_ROWS]])
    return time.perf_counter() - start


def time_near(
    pairs: list[tuple[str, str]], verify: bool = False
) -> tuple[float, list[int | None], NearDuplicateFilter]:
    start, near, verdicts = time.perf_counter(), NearDuplicateFilter(verify=verify), []
    for offset in range(0, len(pairs), BATCH_ROWS):
        verdicts += near.check([f"{i}\n{r}" for i, r in pairs[offset : offset + BATCH_ROWS]])
    return time.perf_counter() - start, verdicts, near


def traced_bytes_per_row(pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """(array bytes, tracemalloc bytes) per kept row: what the filter holds after the run."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _, _, near = time_near(pairs)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return near.index_bytes / near.kept, held / near.kept


def time_curate(pairs: list[tuple[str, str]]) -> float:
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "pairs.jsonl"
        source.write_text("".join(json.dumps({"instruction": i, "response": r}) + "\n" for i, r in pairs))
        start = time.perf_counter()
        curate([source], Path(directory) / "out", read_rows, filters=build_filters(set()), progress=False)
        return time.perf_counter() - start


def stdlib_paragraphs(min_words: int = 30, max_words: int = 150) -> list[tuple[str, str]]:
    """Distinct docstring paragraphs of the standard library as (first sentence, paragraph)."""
    paragraphs = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                paragraphs += [" ".join(p.split()) for p in doc.split("\n\n")]
    paragraphs = [p for p in dict.fromkeys(paragraphs) if min_words <= len(p.split()) <= max_words]
    return [(p.split(". ")[0], p) for p in paragraphs]


def jaccard(first: tuple[str, str], second: tuple[str, str]) -> float:
    a, b = set(shingles("\n".join(first))), set(shingles("\n".join(second)))
    return len(a & b) / len(a | b)


def real_corpus(planted_count: int, seed: int, verify: bool) -> None:
    rows = stdlib_paragraphs()
    rng = random.Random(seed)
    stream, planted = list(rows), {}
    for original in rng.sample(range(len(rows)), min(planted_count, len(rows))):
        planted[len(stream)] = original
        stream.append(near_copy(rows[original], rng))
    _, verdicts, near = time_near(stream, verify)
    kept = [position for position, verdict in enumerate(verdicts) if verdict is None]
    caught = sum(verdicts[position] is not None for position in planted)
    removed = [position for position in range(len(rows)) if verdicts[position] is not None]
    similarity = [jaccard(rows[position], stream[kept[verdicts[position]]]) for position in removed]
    above = sum(value >= near.threshold for value in similarity)
    print(f"{len(rows):,} standard-library docstring paragraphs, {len(planted):,} planted near copies")
    print(f"planted copies caught: {caught / len(planted):.1%}")
    print(
        f"untouched paragraphs removed: {len(removed) / len(rows):.2%} ({len(removed)}): {above} at Jaccard >= "
        f"{near.threshold} with the kept one, {len(removed) - above} below"
        + (f" (median {statistics.median(similarity):.2f}, lowest {min(similarity):.2f})" if similarity else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--planted", type=float, default=0.1, help="share of rows that are near copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-corpus", action="store_true", help="plant copies in stdlib docstrings instead")
    parser.add_argument("--verify", action="store_true", help="confirm LSH candidates on exact Jaccard")
    args = parser.parse_args()
    if args.real_corpus:
        real_corpus(1000, args.seed, args.verify)
        return

    pairs, planted = generate_pairs(args.rows, args.planted, args.seed)
    words = sum(len(f"{i} {r}".split()) for i, r in pairs) / len(pairs)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{len(pairs):,} pairs, {words:.0f} words each on average, {len(planted):,} planted near copies")
    exact_seconds = time_exact(pairs)
    near_seconds, verdicts, near = time_near(pairs, args.verify)
    curate_seconds = time_curate(pairs)
    caught = sum(verdicts[position] is not None for position in planted)
    untouched = [position for position in range(len(pairs)) if position not in planted]
    false_removals = sum(verdicts[position] is not None for position in untouched)
    array_bytes, traced = traced_bytes_per_row(pairs[:20_000])
    print(f"exact dedup (reference): {len(pairs) / exact_seconds:,.0f} rows/s, {exact_seconds:.2f} s")
    print(
        f"near dedup: {len(pairs) / near_seconds:,.0f} rows/s, {near_seconds:.2f} s, "
        f"{near.bands} bands x {near.rows_per_band} rows of {near.num_perm} permutations"
    )
    print(f"near / exact time: {near_seconds / exact_seconds:.1f}x")
    print(
        f"whole curate on a JSONL of the same rows: {len(pairs) / curate_seconds:,.0f} rows/s, {curate_seconds:.2f} s"
    )
    print(
        f"index: {near.index_bytes / near.kept:.0f} bytes per kept row ({near.index_bytes:,} bytes, "
        f"{near.kept:,} kept); at {min(len(pairs), 20_000):,} rows: arrays {array_bytes:.0f}, "
        f"tracemalloc {traced:.0f} bytes per kept row"
    )
    print(
        f"planted copies caught: {caught / max(len(planted), 1):.1%}; "
        f"untouched rows removed: {false_removals / len(untouched):.2%}"
    )


if __name__ == "__main__":
    main()
