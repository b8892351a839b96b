"""Procedurally generated reasoning tasks: the embedded default data of `frugal demo`.

Each family draws a problem from a seeded generator and states it as an instruction. The
response is, in format `direct`, the exact final answer alone; in format `cot` (the default),
a worked solution, one step per line, ending with `ANSWER_MARKER` and the final answer, under
the `cot` condition. Families whose answer is its own best solution (sorting, reversal) stay
`direct` in both formats. `check` scores the final answer alone by exact match after trimming
whitespace; under `cot` a missing marker is wrong. Difficulty knobs live on each family and
are the same in both formats.

The depth families `modexpr` and `chain` (`frugal_lm.data.synth_depth`: why they are answered
directly, what their knobs mean) are registered here beside the others but are not in
`DEFAULT_FAMILIES`, the demo's six; their knobs are set per run with `difficulty=`
(`synth_depth.parse_difficulty` reads the CLI's `--difficulty modexpr.ops=24,chain.hops=6`).

Why worked solutions: answered directly, multi-digit carries and partial products must be
computed in one forward pass, which a small model does not learn in a CPU budget; written
out least-significant digit first with the carry in each step, every token needs only
nearby ones (Lee et al. 2023, "Teaching Arithmetic to Small Transformers"; Feng et al. 2023
for one reduction per step). Measured in benchmarks/RESULTS.md ("Demo quality").

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

from pydantic import BaseModel

from frugal_lm.data.synth_depth import KNOBS, ChainKnobs, ModexprKnobs, chain, modexpr
from frugal_lm.errors import FrugalError
from frugal_lm.files import os_errors_as_user_errors, staged_output

COMMAND = "frugal data synth"
HELDOUT_BUCKETS = 10


ANSWER_MARKER = "#### "
"""Ends a worked solution; the final answer follows it (the GSM8K convention)."""
FORMATS = ("cot", "direct")


@dataclass(frozen=True)
class Solution:
    """A drawn problem: its instruction, the worked steps (empty where the family has none
    worth writing) and the exact final answer."""

    instruction: str
    steps: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Problem:
    family: str
    instruction: str
    response: str
    condition: str = "direct"

    @property
    def answer(self) -> str:
        """The gold final answer: the response itself, or what follows the marker under `cot`."""
        return self.response.rsplit(ANSWER_MARKER, 1)[-1] if self.condition == "cot" else self.response

    def record(self) -> dict[str, str]:
        return {
            "instruction": self.instruction,
            "response": self.response,
            "condition": self.condition,
            "category": self.family,
        }


def as_problem(family: str, solution: Solution, answer_format: str) -> Problem:
    """`direct`: the answer alone. `cot`: the worked steps, one per line, then the marker and the
    answer, under the `cot` condition; a family without steps stays `direct` in either format."""
    if answer_format == "direct" or not solution.steps:
        return Problem(family, solution.instruction, solution.answer)
    response = "\n".join(solution.steps) + "\n" + ANSWER_MARKER + solution.answer
    return Problem(family, solution.instruction, response, "cot")


def _column_sum(a: int, b: int) -> list[str]:
    """Least-significant column first, the carry written in each: 4567 + 89 ->
    7+9+0=16 6+8+1=15 5+0+1=6 4+0+0=4 (Lee et al. 2023's scratchpad, compacted)."""
    columns, carry = [], 0
    digits_a, digits_b = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(digits_a), len(digits_b))):
        x = int(digits_a[i]) if i < len(digits_a) else 0
        y = int(digits_b[i]) if i < len(digits_b) else 0
        total = x + y + carry
        columns.append(f"{x}+{y}+{carry}={total}")
        carry = total // 10
    return columns


def _addition(rng: random.Random, max_digits: int = 6) -> Solution:
    a, b = (rng.randint(0, 10 ** rng.randint(1, max_digits) - 1) for _ in range(2))
    return Solution(f"What is {a} + {b}?", (" ".join(_column_sum(a, b)),), str(a + b))


def _column_difference(a: int, b: int) -> list[str]:
    """a - b for a >= b >= 0, least-significant column first; a borrow shows as a 1 written
    before the top digit: 52 - 17 -> 12-7-0=5 5-1-1=3."""
    columns, borrow = [], 0
    digits_a, digits_b = str(a)[::-1], str(b)[::-1]
    for i, x in enumerate(map(int, digits_a)):
        y = int(digits_b[i]) if i < len(digits_b) else 0
        top = x + 10 if x - y - borrow < 0 else x
        columns.append(f"{'1' if top > 9 else ''}{x}-{y}-{borrow}={top - y - borrow}")
        borrow = int(top > 9)
    return columns


def _digit_product(a: int, digit: int) -> str:
    """a times one digit, least-significant digit of a first, with the carry: 123 * 5 ->
    3*5+0=15 2*5+1=11 1*5+1=6 =615."""
    steps, carry = [], 0
    for x in map(int, str(a)[::-1]):
        total = x * digit + carry
        steps.append(f"{x}*{digit}+{carry}={total}")
        carry = total // 10
    return " ".join(steps) + f" ={a * digit}"


def _long_product(a: int, b: int) -> list[str]:
    """a * b (both >= 0): a partial product per digit of b, least significant first, each
    added to the running total by columns (Lee et al. 2023's scratchpad)."""
    steps, total = [], 0
    for place, digit in enumerate(map(int, str(b)[::-1])):
        steps.append(_digit_product(a, digit))
        partial = a * digit * 10**place
        if place:
            steps.append(f"{total}+{partial}: " + " ".join(_column_sum(total, partial)))
        total += partial
    return steps


def _multiplication(rng: random.Random, left_digits: int = 3, right_digits: int = 2) -> Solution:
    a = rng.randint(10 ** (left_digits - 1), 10**left_digits - 1)
    b = rng.randint(10 ** (right_digits - 1), 10**right_digits - 1)
    return Solution(f"What is {a} * {b}?", tuple(_long_product(a, b)), str(a * b))


def _tens_buckets(numbers: list[int]) -> str:
    """Every tens digit in order with the numbers that have it, each bucket sorted: 52 18 14 9
    -> 0: 9 | 1: 14 18 | 2: - | 3: - | 4: - | 5: 52 | 6: - | ... Each bucket asks only which
    numbers start with one digit, and orders a few by their last; the answer is the buckets
    read in order. Answered directly, sorting was the family whose learning started at the
    most random moment (7-98% held-out over runs of the same recipe)."""
    buckets = [sorted(n for n in numbers if n // 10 == tens) for tens in range(10)]
    return " | ".join(f"{tens}: {' '.join(map(str, bucket)) or '-'}" for tens, bucket in enumerate(buckets))


def _sorting(rng: random.Random, min_count: int = 5, max_count: int = 8, max_value: int = 99) -> Solution:
    numbers = [rng.randint(0, max_value) for _ in range(rng.randint(min_count, max_count))]
    return Solution(
        f"Sort in ascending order: {' '.join(map(str, numbers))}",
        (_tens_buckets(numbers),),
        " ".join(map(str, sorted(numbers))),
    )


def _reversal(rng: random.Random, min_len: int = 4, max_len: int = 10) -> Solution:
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(min_len, max_len)))
    return Solution(f"Reverse the string: {word}", (), word[::-1])


def _apply(operator: str, a: int, b: int) -> int:
    return a + b if operator == "+" else a - b if operator == "-" else a * b


def _worked_operation(operator: str, a: int, b: int) -> str:
    """One operation of an expression worked out on one line with the column methods above,
    on magnitudes: signs are settled first (`7 - 11 = -(11 - 7)`), then the digits."""
    value = _apply(operator, a, b)
    signed_b = -b if operator == "-" else b
    if operator == "*":
        x, y = sorted((abs(a), abs(b)), key=lambda n: (len(str(n)), n), reverse=True)  # fewer digits multiply
        lines = _long_product(x, y)
        magnitude, work = f"{x} * {y}", "; ".join(lines if len(lines) > 1 else [lines[0].rsplit(" =", 1)[0]])
    elif operator == "-" and a >= b >= 0:
        magnitude, work = f"{a} - {b}", " ".join(_column_difference(a, b))
    elif (a >= 0) == (signed_b >= 0):
        magnitude, work = f"{abs(a)} + {abs(b)}", " ".join(_column_sum(abs(a), abs(b)))
    else:
        x, y = sorted((abs(a), abs(b)), reverse=True)
        magnitude, work = f"{x} - {y}", " ".join(_column_difference(x, y))
    literal = f"{a} {operator} {b}"
    settled = f"-({magnitude})" if value < 0 else magnitude
    header = literal if settled == literal else f"{literal} = {settled}"
    return f"{header}: {work} ={value}"


def _expression(rng: random.Random, operators: int = 3, max_operand: int = 20) -> Solution:
    """An arithmetic expression with `operators` (+, -, *) operators; every compound operand
    is parenthesised, so the value never depends on precedence rules. The worked solution
    takes one operation at a time, innermost leftmost first: the operation worked out by
    columns, then the expression rewritten with its value (Feng et al. 2023)."""

    def build(count: int):
        if count == 0:
            return rng.randint(0, max_operand)
        left_count = rng.randint(0, count - 1)
        return (rng.choice("+-*"), build(left_count), build(count - 1 - left_count))

    def text(node, top: bool = True) -> str:
        if isinstance(node, int):
            return str(node)
        operator, left, right = node
        inner = f"{text(left, False)} {operator} {text(right, False)}"
        return inner if top else f"({inner})"

    def reduce_once(node, steps: list[str]):
        operator, left, right = node
        if isinstance(left, int) and isinstance(right, int):
            steps.append(_worked_operation(operator, left, right))
            return _apply(operator, left, right)
        if not isinstance(left, int):
            return (operator, reduce_once(left, steps), right)
        return (operator, left, reduce_once(right, steps))

    tree = build(operators)
    instruction, steps = f"Evaluate: {text(tree)}", []
    while not isinstance(tree, int):
        tree = reduce_once(tree, steps)
        if not isinstance(tree, int):
            steps.append(text(tree))
    return Solution(instruction, tuple(steps), str(tree))


def _counting(rng: random.Random, min_len: int = 5, max_len: int = 12) -> Solution:
    """The worked solution is a running count: each letter of the word, the target beside it,
    `=` if they match and `!` if not (a comparison of the two characters just written), then
    how many times the target has appeared up to there (the previous count, plus one at `=`).
    It opens with the count before the first letter, `0`, so the first step reads a previous
    count like every other: without it a demo seed learned to answer `!` at the first letter
    whatever it was, 25% of counting lost (RESULTS.md, "Session 10")."""
    letters = rng.sample(string.ascii_lowercase, 4)  # a small alphabet so letters repeat
    word = "".join(rng.choice(letters) for _ in range(rng.randint(min_len, max_len)))
    target = rng.choice(letters)
    running = "0 " + " ".join(
        f"{letter}{target}{'=' if letter == target else '!'}{word[: i + 1].count(target)}"
        for i, letter in enumerate(word)
    )
    return Solution(f"How many times does '{target}' appear in {word}?", (running,), str(word.count(target)))


def _modexpr(rng: random.Random, knobs: ModexprKnobs | None = None) -> Solution:
    instruction, answer = modexpr(rng, knobs)
    return Solution(instruction, (), answer)  # answered directly in both formats: see synth_depth


def _chain(rng: random.Random, knobs: ChainKnobs | None = None) -> Solution:
    instruction, answer = chain(rng, knobs)
    return Solution(instruction, (), answer)


FAMILIES: dict[str, Callable[..., Solution]] = {
    "addition": _addition,
    "multiplication": _multiplication,
    "sorting": _sorting,
    "reversal": _reversal,
    "expression": _expression,
    "counting": _counting,
    "modexpr": _modexpr,
    "chain": _chain,
}
"""Every family: `FAMILIES[name](rng)` draws one problem; a family in `synth_depth.KNOBS` also
takes its knobs, `FAMILIES[name](rng, knobs)`."""
DEFAULT_FAMILIES = ("addition", "multiplication", "sorting", "reversal", "expression", "counting")
"""What `--tasks` means when not given: the demo's families."""


def is_heldout(instruction: str) -> bool:
    digest = hashlib.blake2b(instruction.encode(), digest_size=8, key=b"frugal-heldout").digest()
    return int.from_bytes(digest, "big") % HELDOUT_BUCKETS == 0


def final_answer(problem: Problem, output: str) -> str | None:
    """What a model's output answers: all of it under `direct`; under `cot`, what follows the
    last marker, or None when the marker is missing (a worked solution that never concludes)."""
    if problem.condition != "cot":
        return output.strip()
    return output.rsplit(ANSWER_MARKER, 1)[1].strip() if ANSWER_MARKER in output else None


def check(problem: Problem, output: str) -> bool:
    """Exact match of the final answer alone, ignoring surrounding whitespace."""
    return final_answer(problem, output) == problem.answer


def parse_families(names: str | None) -> list[str]:
    chosen = list(DEFAULT_FAMILIES) if not names else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in FAMILIES]
    if unknown or not chosen:
        raise FrugalError(f"unknown task family {unknown[0] if unknown else names!r}; allowed: {', '.join(FAMILIES)}")
    return chosen


def parse_weights(text: str | None, families: list[str]) -> dict[str, int]:
    """`sorting=3,expression=2` -> {"sorting": 3, "expression": 2}: train rows drawn per cycle
    of the families (1 for a family not named). Bad input is a one-line FrugalError."""
    weights: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        family, _, value = (part.strip() for part in item.partition("="))
        if family not in families:
            raise FrugalError(f"--weights: {family!r} is not among the tasks ({', '.join(families)})")
        if not value.isdigit() or int(value) < 1 or family in weights:
            raise FrugalError(f"--weights: {item!r} is not FAMILY=N with a whole N >= 1, once per family")
        weights[family] = int(value)
    return weights


def check_weights(families: list[str], weights: dict[str, int]) -> None:
    """Weights only for families being generated, each a whole number >= 1."""
    for family, weight in weights.items():
        if family not in families:
            raise FrugalError(f"weight given for {family!r}, which is not among the tasks ({', '.join(families)})")
        if not isinstance(weight, int) or weight < 1:
            raise FrugalError(f"weight of {family!r} must be a whole number >= 1, not {weight!r}")


def check_difficulty(families: list[str], difficulty: dict[str, BaseModel]) -> None:
    """Knobs only for families being generated, each of its family's knob model."""
    for family, knobs in difficulty.items():
        if family not in families:
            raise FrugalError(f"difficulty given for {family!r}, which is not among the tasks ({', '.join(families)})")
        if not isinstance(knobs, KNOBS.get(family, ())):
            expected = KNOBS[family].__name__ if family in KNOBS else "none: it has no knobs"
            raise FrugalError(f"difficulty of {family!r} must be a {expected}, not {type(knobs).__name__}")


def generate(
    families: list[str],
    rows: int,
    seed: int,
    heldout: bool,
    answer_format: str = "cot",
    difficulty: dict[str, BaseModel] | None = None,
    weights: dict[str, int] | None = None,
) -> Iterator[Problem]:
    """`rows` distinct problems per split, cycling through the families, deterministic by seed;
    `difficulty` maps a family to its knobs (e.g. {"modexpr": ModexprKnobs(ops=24)}), the
    others keep their defaults; `weights` draws a family that many times per cycle (1 when
    not named)."""
    difficulty, weights = difficulty or {}, weights or {}
    check_difficulty(families, difficulty)
    check_weights(families, weights)
    cycle = [family for family in families for _ in range(weights.get(family, 1))]
    rng = random.Random(f"{seed}:{'heldout' if heldout else 'train'}")
    seen: set[str] = set()
    attempts = 0
    while len(seen) < rows:
        attempts += 1
        if attempts > 100 * rows + 1000:
            raise FrugalError(
                f"could not draw {rows} distinct {'held-out' if heldout else 'train'} problems "
                f"from {', '.join(families)}; ask for fewer rows"
            )
        family = cycle[len(seen) % len(cycle)]
        solution = FAMILIES[family](rng, difficulty[family]) if family in difficulty else FAMILIES[family](rng)
        if solution.instruction in seen or is_heldout(solution.instruction) != heldout:
            continue
        seen.add(solution.instruction)
        yield as_problem(family, solution, answer_format)


def write_synthetic(
    out: Path,
    families: list[str],
    rows: int,
    heldout_rows: int,
    seed: int,
    answer_format: str = "cot",
    difficulty: dict[str, BaseModel] | None = None,
    weights: dict[str, int] | None = None,
) -> dict[str, Path]:
    """Write `train.jsonl` and `heldout.jsonl` under `out` (new, empty or an earlier synth's
    output: never a folder of the user's own data, see `frugal_lm.files.staged_output`).
    `weights` shapes the train split only: the held-out split stays even, so its mean is the
    mean of the families."""
    if answer_format not in FORMATS:
        raise FrugalError(f"unknown answer format {answer_format!r}; allowed: {', '.join(FORMATS)}")
    check_difficulty(families, difficulty or {})  # before anything is written
    check_weights(families, weights or {})
    out = Path(out)
    with os_errors_as_user_errors(out), staged_output(out, COMMAND) as staging:
        for split, count in (("train", rows), ("heldout", heldout_rows)):
            with open(staging / f"{split}.jsonl", "w") as handle:
                heldout = split == "heldout"
                split_weights = None if heldout else weights
                for problem in generate(families, count, seed, heldout, answer_format, difficulty, split_weights):
                    handle.write(json.dumps(problem.record()) + "\n")
    return {split: out / f"{split}.jsonl" for split in ("train", "heldout")}
