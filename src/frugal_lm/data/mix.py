"""`frugal data mix`: tokenized sources -> one training set with per-epoch shuffled indices.

Rules come from a YAML list; for each tokenized source the first rule whose `prefix`
starts the source's file name applies (a source no rule matches is used whole, once):

    - prefix: gsm8k          # matches gsm8k_train.jsonl
      max_per_file: 50000    # sample at most this many rows per epoch (fresh sample each epoch)
      repeat: 2              # use the (sampled) rows this many times per epoch
      long_context: truncate # rows longer than the context: truncate the response, or drop
      min_response_len: 2    # drop rows whose response (with EOA) is shorter

Output (ARCHITECTURE.md): `tokens.npy` (all sources concatenated), `epoch_K/{inst_start,inst_len,
resp_start,resp_len}.npy`, `metadata.json` (`metadata.MixMetadata`: vocab size rounded up to
a multiple of 256, max sequence length, tokens per epoch, tokenizer info, per-source counts
and contamination status) and `report.md`. Everything is a function of the inputs and the seed: the same
seed gives the same bytes. Tokens are concatenated chunk by chunk (`frugal_lm.data.arrays`),
so memory holds the row index, never the token arrays.

Safety: `--out` must be new, empty or an earlier mix (`frugal_lm.files.staged_output`), so
a mistyped path never deletes data, and never the tokenized input. The mix is built in
`OUT.partial` and renamed into place; a failure (a damaged source, a full disk) removes it.
Each tokenized source is checked before use: meta.json readable, every array present, of
the size its header announces and as long as meta.json's counts say.

Contamination: each source's status comes from the sidecar `<SOURCE>.contamination.json`
that `frugal data decontaminate` writes beside the record file; the report says "not
checked" without one and "stale" when it was made from another version of the file than
the one tokenized, so a clean-looking number never describes different data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from frugal_lm.config import StrictModel, read_yaml, validate
from frugal_lm.data.arrays import NpyWriter, iter_npy_chunks, npy_length, npy_problem
from frugal_lm.data.metadata import MixMetadata, MixSource, SourceMeta, read_source_meta, write_mix_metadata
from frugal_lm.data.tokenize import COMMAND as TOKENIZE
from frugal_lm.data.tokenize import INDEX_FIELDS, SCRATCH, output_damage
from frugal_lm.errors import FrugalError
from frugal_lm.files import os_errors_as_user_errors, read_output_marker, staged_output

COMMAND = "frugal data mix"


class MixRule(StrictModel):
    prefix: str = ""
    max_per_file: int | None = Field(None, ge=0)
    repeat: int = Field(1, ge=0)  # 0 leaves the source out; a negative count has no meaning
    long_context: Literal["truncate", "drop"] = "drop"
    min_response_len: int = Field(1, ge=0)


def read_rules(path: Path | None) -> list[MixRule]:
    if path is None:
        return []
    data = read_yaml(Path(path), "mix file")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise FrugalError(f"{path}: expected a YAML list of rules (- prefix: ...)")
    # Errors in config's one-line format, each naming the rule: "PATH: rule 2: bad value for 'repeat' ...".
    return [validate(MixRule, item, f"{path}: rule {number}") for number, item in enumerate(data, start=1)]


@dataclass
class SourceStats:
    name: str
    category: str
    rows_available: int
    rows_per_epoch: int = 0
    tokens_per_epoch: int = 0
    truncated: int = 0
    dropped_long: int = 0
    dropped_short: int = 0
    unique_tokens: int = 0
    contamination: dict = field(default_factory=dict)


@dataclass
class MixResult:
    out: Path
    epochs: int
    tokens_per_epoch: list[int] = field(default_factory=list)
    sources: list[SourceStats] = field(default_factory=list)


def contamination_status(meta: SourceMeta) -> dict:
    """The decontamination check of a tokenized source, from the sidecar
    `<SOURCE>.contamination.json` that `frugal data decontaminate` writes beside the record
    file: `{"status": "not checked"}`, or the sidecar's counts with status "checked", or
    "stale" when the sidecar describes another version of the file than the one tokenized
    (its size or mtime differ from meta.json's)."""
    sidecar = Path(f"{meta.source}.contamination.json")
    if not sidecar.is_file():
        return {"status": "not checked"}
    try:
        check = json.loads(sidecar.read_text())
        size, mtime = int(check["source_size"]), float(check["source_mtime"])
        benchmarks = {
            str(name): {"test_items": int(counts["test_items"]), "contaminated_rows": int(counts["contaminated_rows"])}
            for name, counts in check["benchmarks"].items()
        }
        summary = {
            "ngram": int(check["ngram"]),
            "benchmarks": benchmarks,
            "contaminated_rows": int(check["contaminated_rows"]),
            "rows": int(check["rows"]),
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise FrugalError(
            f"{sidecar}: not a contamination report ({type(error).__name__}: {error}); "
            f"re-run `frugal data decontaminate` on {meta.source}"
        ) from None
    # mtime travels as float seconds in the sidecar and as integer ns in meta.json: equal
    # up to float rounding (~0.2 microseconds at today's epoch seconds).
    fresh = size == meta.size and abs(mtime - (meta.mtime_ns or 0) / 1e9) < 1e-6
    return {"status": "checked" if fresh else "stale", **summary}


def _load_source(folder: Path) -> tuple[SourceMeta, dict[str, np.ndarray]]:
    """meta.json and the row index of one tokenized source, each checked; a damaged source
    is a one-line error that names it (and the file), never a half-built mix."""

    def damaged(reason: str) -> FrugalError:
        return FrugalError(f"{folder}: damaged tokenized source: {reason}; re-run `frugal data tokenize`")

    try:
        meta = read_source_meta(folder, label="meta.json")
    except FrugalError as error:
        raise damaged(str(error)) from None
    if meta.files is not None:  # sizes recorded by tokenize: catches a missing or cut file at once
        if (reason := output_damage(folder, meta, checksums=False)) is not None:
            raise damaged(reason)
    for name, length in (("tokens", meta.tokens), *((f, meta.rows) for f in INDEX_FIELDS)):
        if (reason := npy_problem(folder / f"{name}.npy", length)) is not None:
            raise damaged(reason)
    index = {f: np.load(folder / f"{f}.npy", allow_pickle=False) for f in INDEX_FIELDS}
    return meta, index


def _source_folders(tokenized: Path) -> list[Path]:
    """The tokenized sources: folders with a meta.json, and those tokenize's marker lists
    (one of those without meta.json is damaged, an error rather than a source left out)."""
    marker = read_output_marker(tokenized)
    listed = set(marker["entries"]) - {SCRATCH, "tokenizer"} if marker and marker["command"] == TOKENIZE else set()
    return sorted(p for p in tokenized.iterdir() if p.is_dir() and ((p / "meta.json").is_file() or p.name in listed))


def _context_needed(inst_len: np.ndarray, resp_len: np.ndarray) -> np.ndarray:
    """Tokens of context each row needs: the model reads all but its last token."""
    return inst_len + resp_len - 1


def _select_rows(
    meta: SourceMeta, index: dict[str, np.ndarray], rule: MixRule, context: int, offset: int
) -> tuple[dict[str, np.ndarray], SourceStats]:
    """The rows of one source the rule keeps (index shifted by the source's `offset` in the
    concatenated tokens) and its counts."""
    inst_len, resp_len = index["inst_len"].copy(), index["resp_len"].copy()
    stats = SourceStats(Path(meta.source).name, Path(meta.source).stem, len(inst_len))
    too_short = resp_len < rule.min_response_len
    too_long = _context_needed(inst_len, resp_len) > context
    fits_by_truncation = too_long & (inst_len < context)
    if rule.long_context == "truncate":
        resp_len[fits_by_truncation & ~too_short] = context + 1 - inst_len[fits_by_truncation & ~too_short]
        stats.truncated = int((fits_by_truncation & ~too_short).sum())
        keep = ~too_short & (~too_long | fits_by_truncation)
    else:
        keep = ~too_short & ~too_long
    stats.dropped_short = int(too_short.sum())
    stats.dropped_long = int((too_long & ~too_short & ~keep).sum())
    kept = {
        "inst_start": index["inst_start"][keep] + offset,
        "inst_len": inst_len[keep],
        "resp_start": index["resp_start"][keep] + offset,
        "resp_len": resp_len[keep],
    }
    return kept, stats


def _concatenate_tokens(folders: list[Path], path: Path, vocab_size: int) -> None:
    """All sources' tokens into one `.npy`, streamed chunk by chunk (never whole in memory)."""
    lengths = [npy_length(folder / "tokens.npy") for folder in folders]
    with NpyWriter(path, np.uint16 if vocab_size <= 65536 else np.uint32, sum(lengths)) as writer:
        for folder in folders:
            for chunk in iter_npy_chunks(folder / "tokens.npy"):
                if len(chunk) and int(chunk.max()) >= vocab_size:
                    raise FrugalError(
                        f"{folder}: token id {int(chunk.max())} is outside the vocabulary of "
                        f"{vocab_size:,} in meta.json; re-run `frugal data tokenize`"
                    )
                writer.write(chunk)


def mix(
    tokenized: Path, out: Path, rules_path: Path | None = None, epochs: int = 1, context: int = 2048, seed: int = 0
) -> MixResult:
    if epochs < 1 or context < 2:
        raise FrugalError("--epochs must be >= 1 and --context >= 2")
    rules = read_rules(rules_path)
    folders = _source_folders(Path(tokenized)) if Path(tokenized).is_dir() else []
    if not folders:
        raise FrugalError(f"{tokenized}: no tokenized sources (run `frugal data tokenize` first)")
    with os_errors_as_user_errors(out), staged_output(out, COMMAND) as staging:
        return _mix_into(staging, out, folders, Path(tokenized), rules, epochs, context, seed)


def longest_example(tokenized: Path) -> int:
    """The context the longest tokenized row needs (the rule `_select_rows` drops rows by)."""
    folders = _source_folders(Path(tokenized)) if Path(tokenized).is_dir() else []
    if not folders:
        raise FrugalError(f"{tokenized}: no tokenized sources (run `frugal data tokenize` first)")
    indexes = [_load_source(folder)[1] for folder in folders]
    return max(
        (
            int(_context_needed(index["inst_len"], index["resp_len"]).max())
            for index in indexes
            if len(index["inst_len"])
        ),
        default=2,
    )


def _mix_into(
    staging: Path,
    out: Path,
    folders: list[Path],
    tokenized: Path,
    rules: list[MixRule],
    epochs: int,
    context: int,
    seed: int,
) -> MixResult:
    result = MixResult(out, epochs)
    vocab_size, offset, shortest = 0, 0, None
    kept_per_source = []
    for folder in folders:
        meta, index = _load_source(folder)
        source_name = Path(meta.source).name
        rule = next((r for r in rules if source_name.startswith(r.prefix)), MixRule())
        kept, stats = _select_rows(meta, index, rule, context, offset)
        if len(index["inst_len"]):
            needed = int((index["inst_len"] + index["resp_len"]).min()) - 1  # the length rule of _select_rows
            shortest = needed if shortest is None else min(shortest, needed)
        stats.contamination = contamination_status(meta)
        kept_per_source.append((kept, rule, stats))
        offset += npy_length(folder / "tokens.npy")
        vocab_size = max(vocab_size, meta.vocab_size)
        result.sources.append(stats)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        parts = []
        for kept, rule, stats in kept_per_source:
            rows = np.arange(len(kept["inst_len"]))
            if rule.max_per_file is not None and len(rows) > rule.max_per_file:
                rows = np.sort(rng.choice(rows, rule.max_per_file, replace=False))
            rows = np.tile(rows, rule.repeat)
            parts.append({f: kept[f][rows] for f in INDEX_FIELDS})
            if epoch == 0:
                stats.rows_per_epoch = len(rows)
                stats.tokens_per_epoch = int((kept["inst_len"][rows] + kept["resp_len"][rows]).sum())
                stats.unique_tokens = int((kept["inst_len"][np.unique(rows)] + kept["resp_len"][np.unique(rows)]).sum())
        order = rng.permutation(sum(len(p["inst_len"]) for p in parts))
        if len(order) == 0:
            raise _empty_mix_error(result.sources, shortest, context)
        folder = staging / f"epoch_{epoch}"
        folder.mkdir()
        for name in INDEX_FIELDS:
            np.save(folder / f"{name}.npy", np.concatenate([p[name] for p in parts]).astype(np.int64)[order])
        result.tokens_per_epoch.append(int(sum((p["inst_len"] + p["resp_len"]).sum() for p in parts)))
    _concatenate_tokens(folders, staging / "tokens.npy", vocab_size)
    tokenizer_info = {}
    if (tokenized / "tokenizer").is_dir():
        shutil.copytree(tokenized / "tokenizer", staging / "tokenizer")
        info_path = staging / "tokenizer" / "tokenizer_info.json"
        tokenizer_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    write_mix_metadata(
        staging,
        MixMetadata(
            vocab_size=-(-vocab_size // 256) * 256,
            max_seq_len=context,
            epochs=epochs,
            tokens_per_epoch=result.tokens_per_epoch,
            seed=seed,
            tokenizer_info=tokenizer_info,
            sources=[
                MixSource(
                    name=s.name,
                    rows_available=s.rows_available,
                    rows_per_epoch=s.rows_per_epoch,
                    tokens_per_epoch=s.tokens_per_epoch,
                    contamination=s.contamination,
                )
                for s in result.sources
            ],
        ),
    )
    (staging / "report.md").write_text(_report(result, context))
    return result


def _empty_mix_error(sources: list[SourceStats], shortest: int | None, context: int) -> FrugalError:
    """Why no row is left: training on an empty mix would fail later, far from the cause."""
    available = sum(s.rows_available for s in sources)
    long, short = sum(s.dropped_long for s in sources), sum(s.dropped_short for s in sources)
    reasons = []
    if long:
        reasons.append(
            f"{long:,} longer than --context {context} (the shortest needs --context {shortest:,}; "
            f"a rule with long_context: truncate keeps rows whose instruction fits)"
        )
    if short:
        reasons.append(f"{short:,} with a response shorter than min_response_len")
    if available - long - short:
        reasons.append(f"{available - long - short:,} left out by the rules' repeat or max_per_file")
    return FrugalError(f"the mix would hold no rows: of {available:,} rows, " + "; ".join(reasons or ["none exist"]))


def _contamination_cell(status: dict) -> str:
    if status["status"] == "not checked":
        return "not checked"
    flagged = f"{status['contaminated_rows']:,} of {status['rows']:,} rows"
    return f"{flagged}, stale" if status["status"] == "stale" else flagged


def _report(result: MixResult, context: int) -> str:
    lines = [
        f"# Training mix: {result.epochs} epoch(s), context {context}",
        "",
        "| source | category | rows available | rows / epoch | tokens / epoch | unique tokens | "
        "truncated | dropped (long) | dropped (short) | contamination |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result.sources:
        lines.append(
            f"| {s.name} | {s.category} | {s.rows_available:,} | {s.rows_per_epoch:,} | "
            f"{s.tokens_per_epoch:,} | {s.unique_tokens:,} | {s.truncated:,} | {s.dropped_long:,} | "
            f"{s.dropped_short:,} | {_contamination_cell(s.contamination)} |"
        )
    total = sum(s.tokens_per_epoch for s in result.sources)
    unique = sum(s.unique_tokens for s in result.sources)
    lines += [
        "",
        f"Tokens per epoch: {total:,} ({unique:,} unique, {total - unique:,} repeated).",
        "",
        "## Contamination",
        "",
        "Rows sharing an n-gram with a benchmark's test items, from `frugal data decontaminate`. "
        '"stale": the check was run on another version of the file than the one tokenized '
        "(size or mtime differ); re-run it.",
        "",
    ]
    for s in result.sources:
        status = s.contamination
        if status["status"] == "not checked":
            lines.append(f"- {s.name}: not checked")
            continue
        per_benchmark = ", ".join(
            f"{name} {counts['contaminated_rows']:,} rows ({counts['test_items']:,} test items)"
            for name, counts in sorted(status["benchmarks"].items())
        )
        lines.append(
            f"- {s.name}: {'stale; ' if status['status'] == 'stale' else ''}{status['ngram']}-gram check, "
            f"{status['contaminated_rows']:,} of {status['rows']:,} rows contaminated: "
            f"{per_benchmark or 'no benchmarks'}"
        )
    return "\n".join(lines) + "\n"
