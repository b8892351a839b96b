"""Readers for the public benchmarks' own file layouts, from a local directory (no network).

`--data-dir DIR` holds one folder per dataset, with the files as their publishers ship
them (a Hugging Face dataset snapshot or the original release, unchanged):

    DIR/gsm8k/       main/test-00000-of-00001.parquet     or  test.jsonl (grade-school-math)
    DIR/math/        test.jsonl (MATH-500)  or  <subject>/test-*.parquet  or  test/<subject>/*.json
    DIR/drop/        data/validation-*.parquet            or  drop_dataset_dev.json
    DIR/mmlu/        all/test-*.parquet (+ all/dev-*)     or  data/test/*_test.csv (+ data/dev/*_dev.csv)
    DIR/arc/         ARC-Challenge/test-*.parquet, ARC-Easy/...  or  ARC-Challenge-Test.jsonl, ...
    DIR/hellaswag/   data/validation-*.parquet            or  hellaswag_val.jsonl
    DIR/winogrande/  winogrande_xl/validation-*.parquet   or  dev.jsonl (winogrande_1.1)
    DIR/boolq/       data/validation-*.parquet            or  dev.jsonl

Design choices:
- Files are found by their published names anywhere below the dataset folder, so a snapshot
  can be dropped in as downloaded; the first layout with a match wins and all of its shards
  are read in name order. A missing file is an error naming the folder, the names looked
  for and where the data set is published.
- Benchmarks whose test labels are hidden (DROP, HellaSwag, WinoGrande, BoolQ) are scored on
  their public validation split, as everyone reports them. Few-shot examples come from the
  train (MMLU: dev) split, never from the split being scored.
- Each row becomes one of two plain items: `ChoiceItem` (context, options, label) for
  multiple choice, `AnswerItem` (question, gold answers, a worked demonstration) for
  generation. Prompt wording is the task's business (`frugal_lm.evals.tasks`).
- A malformed row is an error naming its file and row, never silently skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugal_lm.data.answers import gsm8k_final_answer, last_boxed
from frugal_lm.errors import FrugalError


@dataclass(frozen=True)
class ChoiceItem:
    where: str  # file:row, for error messages and sample records
    context: str
    options: tuple[str, ...]
    label: int  # index of the right option
    subject: str | None = None


@dataclass(frozen=True)
class AnswerItem:
    where: str
    question: str
    answers: tuple[tuple[str, ...], ...]  # alternative gold answers, each a tuple of spans
    demonstration: str  # the worked gold response, for few-shot prompts


Item = ChoiceItem | AnswerItem


# ---------------------------------------------------------------- row sources


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as parquet

        try:
            table = parquet.read_table(path)
        except Exception as error:  # pyarrow raises several types for a bad file
            raise FrugalError(f"{path}: not a readable Parquet file ({error})") from None
        for number, row in enumerate(table.to_pylist(), 1):
            yield f"{path}:row {number}", row
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield f"{path}:{number}", json.loads(line)
                    except json.JSONDecodeError as error:
                        raise FrugalError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    elif suffix == ".json":
        try:
            yield str(path), json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise FrugalError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                yield f"{path}:{number}", row
    else:
        raise FrugalError(f"{path}: unsupported file type {suffix}")


def _field(row: Any, where: str, *keys: str | int) -> Any:
    value = row
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise FrugalError(f"{where}: missing field {'.'.join(map(str, keys))!r}") from None
    return value


# ---------------------------------------------------------------- row parsers


def _gsm8k(row, where) -> list[Item]:
    solution = _field(row, where, "answer")
    try:
        gold = gsm8k_final_answer(solution)
    except ValueError:
        raise FrugalError(f"{where}: field 'answer' has no '#### <number>' final line") from None
    return [AnswerItem(where, _field(row, where, "question"), ((gold,),), solution)]


def _math(row, where) -> list[Item]:
    solution = _field(row, where, "solution")
    gold = row.get("answer") or last_boxed(solution)
    if not gold:
        raise FrugalError(f"{where}: no 'answer' field and no \\boxed{{}} answer in 'solution'")
    return [AnswerItem(where, _field(row, where, "problem"), ((gold,),), solution)]


def _drop_answer_spans(answer: dict) -> tuple[str, ...]:
    """One answer of the original release: a number, spans, or a date (as lm-eval reads it)."""
    if str(answer.get("number", "")) != "":
        return (str(answer["number"]),)
    if answer.get("spans"):
        return tuple(answer["spans"])
    date = answer.get("date") or {}
    return (" ".join(str(date.get(k, "")) for k in ("day", "month", "year")).strip(),)


def _drop(row, where) -> list[Item]:
    if "answers_spans" in row:  # the Hugging Face release: one row per question
        spans = tuple(_field(row, where, "answers_spans", "spans"))
        passage, question = _field(row, where, "passage"), _field(row, where, "question")
        return [AnswerItem(where, _drop_question(passage, question), (spans,), ", ".join(spans))]
    items = []  # the original release: one JSON object, passages with their qa_pairs
    for passage_id, passage in row.items():
        for number, pair in enumerate(_field(passage, f"{where}:{passage_id}", "qa_pairs")):
            place = f"{where}:{passage_id}/{number}"
            answers: list[tuple[str, ...]] = []
            for answer in [_field(pair, place, "answer"), *pair.get("validated_answers", [])]:
                spans = _drop_answer_spans(answer)
                if spans not in answers and spans[0].strip():
                    answers.append(spans)
            if answers:
                items.append(
                    AnswerItem(
                        place,
                        _drop_question(passage["passage"], pair["question"]),
                        tuple(answers),
                        ", ".join(answers[0]),
                    )
                )
    return items


def _drop_question(passage: str, question: str) -> str:
    return f"{passage}\nQuestion: {question}"


def _mmlu(row, where) -> list[Item]:
    if isinstance(row, list):  # original CSV: question, A, B, C, D, answer letter
        if len(row) != 6 or row[5] not in "ABCD":
            raise FrugalError(f"{where}: expected question, 4 options and an answer letter A-D")
        subject = Path(where.split(":")[0]).stem.rsplit("_", 1)[0]
        return [ChoiceItem(where, row[0], tuple(row[1:5]), "ABCD".index(row[5]), subject)]
    choices = tuple(_field(row, where, "choices"))
    answer = _field(row, where, "answer")
    if not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise FrugalError(f"{where}: field 'answer' must be an option index 0..{len(choices) - 1}, got {answer!r}")
    return [ChoiceItem(where, _field(row, where, "question"), choices, answer, row.get("subject"))]


def _arc(row, where) -> list[Item]:
    question = _field(row, where, "question")
    if isinstance(question, dict):  # original release: question.stem, question.choices[{text, label}]
        stem = _field(question, where, "stem")
        choices = _field(question, where, "choices")
        texts, labels = [c["text"] for c in choices], [c["label"] for c in choices]
    else:  # Hugging Face release: question, choices.text, choices.label
        stem = question
        texts, labels = list(_field(row, where, "choices", "text")), list(_field(row, where, "choices", "label"))
    key = str(_field(row, where, "answerKey"))
    if key not in labels:
        raise FrugalError(f"{where}: answerKey {key!r} is not one of the labels {labels}")
    return [ChoiceItem(where, stem, tuple(texts), labels.index(key))]


def _hellaswag_clean(text: str) -> str:
    """The same clean-up lm-eval applies: drop WikiHow's [title]/[header] markers."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row, where) -> list[Item]:
    context = f"{_field(row, where, 'ctx_a')} {str(_field(row, where, 'ctx_b')).capitalize()}"
    activity = row.get("activity_label")
    context = f"{activity}: {context}" if activity else context
    label = _field(row, where, "label")
    endings = tuple(_hellaswag_clean(e) for e in _field(row, where, "endings"))
    try:
        label = int(label)
    except (TypeError, ValueError):
        raise FrugalError(f"{where}: field 'label' must be an ending index, got {label!r}") from None
    return [ChoiceItem(where, _hellaswag_clean(context), endings, label)]


def _winogrande(row, where) -> list[Item]:
    answer = str(_field(row, where, "answer"))
    if answer not in ("1", "2"):
        raise FrugalError(f"{where}: field 'answer' must be '1' or '2', got {answer!r}")
    options = (_field(row, where, "option1"), _field(row, where, "option2"))
    return [ChoiceItem(where, _field(row, where, "sentence"), options, int(answer) - 1)]


def _boolq(row, where) -> list[Item]:
    answer = row.get("answer", row.get("label"))
    if not isinstance(answer, bool | int):
        raise FrugalError(f"{where}: field 'answer' must be true or false, got {answer!r}")
    question = _field(row, where, "question")
    context = f"{_field(row, where, 'passage')}\nQuestion: {question}?"
    return [ChoiceItem(where, context, ("no", "yes"), int(bool(answer)))]


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class DatasetSpec:
    folder: str
    test: tuple[str, ...]  # glob patterns below DIR/folder, first match wins
    fewshot: tuple[str, ...]
    published: str
    parse: Callable[[Any, str], list[Item]]


SPECS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec(
        "gsm8k",
        ("main/test-*.parquet", "test.jsonl"),
        ("main/train-*.parquet", "train.jsonl"),
        "Hugging Face dataset openai/gsm8k, or github.com/openai/grade-school-math (grade_school_math/data/)",
        _gsm8k,
    ),
    "math": DatasetSpec(
        "math",
        ("test.jsonl", "test-*.parquet", "test/*/*.json"),
        ("train.jsonl", "train-*.parquet", "train/*/*.json"),
        "Hugging Face datasets HuggingFaceH4/MATH-500 (test.jsonl) or EleutherAI/hendrycks_math, "
        "or the original MATH release (github.com/hendrycks/math)",
        _math,
    ),
    "drop": DatasetSpec(
        "drop",
        ("validation-*.parquet", "drop_dataset_dev.json"),
        ("train-*.parquet", "drop_dataset_train.json"),
        "Hugging Face dataset ucinlp/drop, or allenai.org/data/drop",
        _drop,
    ),
    "mmlu": DatasetSpec(
        "mmlu",
        ("all/test-*.parquet", "test/*_test.csv"),
        ("all/dev-*.parquet", "dev/*_dev.csv"),
        "Hugging Face dataset cais/mmlu (all/), or github.com/hendrycks/test (data.tar)",
        _mmlu,
    ),
    "arc_challenge": DatasetSpec(
        "arc",
        ("ARC-Challenge/test-*.parquet", "ARC-Challenge-Test.jsonl"),
        ("ARC-Challenge/train-*.parquet", "ARC-Challenge-Train.jsonl"),
        "Hugging Face dataset allenai/ai2_arc, or allenai.org/data/arc",
        _arc,
    ),
    "arc_easy": DatasetSpec(
        "arc",
        ("ARC-Easy/test-*.parquet", "ARC-Easy-Test.jsonl"),
        ("ARC-Easy/train-*.parquet", "ARC-Easy-Train.jsonl"),
        "Hugging Face dataset allenai/ai2_arc, or allenai.org/data/arc",
        _arc,
    ),
    "hellaswag": DatasetSpec(
        "hellaswag",
        ("validation-*.parquet", "hellaswag_val.jsonl"),
        ("train-*.parquet", "hellaswag_train.jsonl"),
        "Hugging Face dataset Rowan/hellaswag, or github.com/rowanz/hellaswag (data/)",
        _hellaswag,
    ),
    "winogrande": DatasetSpec(
        "winogrande",
        ("winogrande_xl/validation-*.parquet", "dev.jsonl"),
        ("winogrande_xl/train-*.parquet", "train_xl.jsonl"),
        "Hugging Face dataset allenai/winogrande, or github.com/allenai/winogrande (winogrande_1.1.zip)",
        _winogrande,
    ),
    "boolq": DatasetSpec(
        "boolq",
        ("validation-*.parquet", "dev.jsonl"),
        ("train-*.parquet", "train.jsonl"),
        "Hugging Face dataset google/boolq, or github.com/google-research-datasets/boolean-questions",
        _boolq,
    ),
}


def find_files(task: str, data_dir: Path, split: str = "test") -> list[Path]:
    """The files of `task`'s `split` ("test" or "fewshot") below DIR/<folder>."""
    spec = SPECS[task]
    folder = Path(data_dir) / spec.folder
    patterns = spec.test if split == "test" else spec.fewshot
    for pattern in patterns:
        matches = sorted(p for p in folder.glob(f"**/{pattern}") if p.is_file()) if folder.is_dir() else []
        if matches:
            return matches
    what = "test" if split == "test" else "few-shot (train/dev)"
    raise FrugalError(
        f"{task}: no {what} file in {folder} (looked for {' or '.join(patterns)}; published as {spec.published})"
    )


def load_items(task: str, data_dir: Path | str, split: str = "test", limit: int | None = None) -> list[Item]:
    """Every item of `task`'s split in file order; the first `limit` when given."""
    spec = SPECS[task]
    items: list[Item] = []
    for path in find_files(task, Path(data_dir), split):
        for where, row in _rows(path):
            items.extend(spec.parse(row, where))
            if limit is not None and len(items) >= limit:
                return items[:limit]
    if not items:
        raise FrugalError(f"{task}: no rows in {', '.join(map(str, find_files(task, Path(data_dir), split)))}")
    return items
