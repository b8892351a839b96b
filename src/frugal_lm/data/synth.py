"""Procedurally generated reasoning tasks: the embedded default data of `frugal demo`.

Each family draws a problem from a seeded generator, states it as an instruction and gives
the exact final answer as the response (condition `direct`); `check` scores a model's
answer by exact match after trimming whitespace. Difficulty knobs live on each family.

Train / held-out split: an instruction belongs to the held-out split iff a keyed hash of
its text falls in the held-out bucket (1 in `HELDOUT_BUCKETS`). Both splits are filtered by
the same function of the text alone, so no instruction can ever be in both, whatever the
seeds or row counts used to generate them.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from frugal_lm.errors import FrugalError

HELDOUT_BUCKETS = 10


@dataclass(frozen=True)
class Problem:
    family: str
    instruction: str
    response: str

    def record(self) -> dict[str, str]:
        return {"instruction": self.instruction, "response": self.response, "condition": "direct",
                "category": self.family}


def _addition(rng: random.Random, max_digits: int = 6) -> tuple[str, str]:
    a, b = (rng.randint(0, 10 ** rng.randint(1, max_digits) - 1) for _ in range(2))
    return f"What is {a} + {b}?", str(a + b)


def _multiplication(rng: random.Random, left_digits: int = 3, right_digits: int = 2) -> tuple[str, str]:
    a = rng.randint(10 ** (left_digits - 1), 10 ** left_digits - 1)
    b = rng.randint(10 ** (right_digits - 1), 10 ** right_digits - 1)
    return f"What is {a} * {b}?", str(a * b)


def _sorting(rng: random.Random, min_count: int = 5, max_count: int = 8, max_value: int = 99) -> tuple[str, str]:
    numbers = [rng.randint(0, max_value) for _ in range(rng.randint(min_count, max_count))]
    return f"Sort in ascending order: {' '.join(map(str, numbers))}", " ".join(map(str, sorted(numbers)))


def _reversal(rng: random.Random, min_len: int = 4, max_len: int = 10) -> tuple[str, str]:
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(min_len, max_len)))
    return f"Reverse the string: {word}", word[::-1]


def _expression(rng: random.Random, operators: int = 3, max_operand: int = 20) -> tuple[str, str]:
    """An arithmetic expression with `operators` (+, -, *) operators; every compound operand
    is parenthesised, so the value never depends on precedence rules."""
    def build(count: int) -> tuple[str, int]:
        if count == 0:
            value = rng.randint(0, max_operand)
            return str(value), value
        left_count = rng.randint(0, count - 1)
        right_count = count - 1 - left_count
        (left, a), (right, b) = build(left_count), build(right_count)
        operator = rng.choice("+-*")
        value = a + b if operator == "+" else a - b if operator == "-" else a * b
        left = f"({left})" if left_count else left
        right = f"({right})" if right_count else right
        return f"{left} {operator} {right}", value

    expression, value = build(operators)
    return f"Evaluate: {expression}", str(value)


def _counting(rng: random.Random, min_len: int = 5, max_len: int = 12) -> tuple[str, str]:
    letters = rng.sample(string.ascii_lowercase, 4)  # a small alphabet so letters repeat
    word = "".join(rng.choice(letters) for _ in range(rng.randint(min_len, max_len)))
    target = rng.choice(letters)
    return f"How many times does '{target}' appear in {word}?", str(word.count(target))


FAMILIES: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "addition": _addition,
    "multiplication": _multiplication,
    "sorting": _sorting,
    "reversal": _reversal,
    "expression": _expression,
    "counting": _counting,
}


def is_heldout(instruction: str) -> bool:
    digest = hashlib.blake2b(instruction.encode(), digest_size=8, key=b"frugal-heldout").digest()
    return int.from_bytes(digest, "big") % HELDOUT_BUCKETS == 0


def check(problem: Problem, answer: str) -> bool:
    """Exact match of the final answer, ignoring surrounding whitespace."""
    return answer.strip() == problem.response


def parse_families(names: str | None) -> list[str]:
    chosen = list(FAMILIES) if not names else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in FAMILIES]
    if unknown or not chosen:
        raise FrugalError(f"unknown task family {unknown[0] if unknown else names!r}; allowed: {', '.join(FAMILIES)}")
    return chosen


def generate(families: list[str], rows: int, seed: int, heldout: bool) -> Iterator[Problem]:
    """`rows` distinct problems per split, cycling through the families, deterministic by seed."""
    rng = random.Random(f"{seed}:{'heldout' if heldout else 'train'}")
    seen: set[str] = set()
    attempts = 0
    while len(seen) < rows:
        attempts += 1
        if attempts > 100 * rows + 1000:
            raise FrugalError(f"could not draw {rows} distinct {'held-out' if heldout else 'train'} problems "
                              f"from {', '.join(families)}; ask for fewer rows")
        family = families[len(seen) % len(families)]
        instruction, response = FAMILIES[family](rng)
        if instruction in seen or is_heldout(instruction) != heldout:
            continue
        seen.add(instruction)
        yield Problem(family, instruction, response)


def write_synthetic(out: Path, families: list[str], rows: int, heldout_rows: int, seed: int) -> dict[str, Path]:
    """Write `train.jsonl` and `heldout.jsonl` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count in (("train", rows), ("heldout", heldout_rows)):
        path = out / f"{split}.jsonl"
        with open(path, "w") as handle:
            for problem in generate(families, count, seed, heldout=split == "heldout"):
                handle.write(json.dumps(problem.record()) + "\n")
        paths[split] = path
    return paths
