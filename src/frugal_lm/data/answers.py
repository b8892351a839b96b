"""Final answers: extracting and comparing them (pure text, no model).

Used by the evaluation tasks (`evals/tasks.py`) and by `frugal data generate --verify
final-answer` (`data/teacher/verify.py`); it lives in the data layer so both can import it.

Design choices:
- GSM8K-style numeric answers: the number after the last `####` when the output has one (the
  format GSM8K solutions teach), else after the last "answer is", else the last number in
  the output. Numbers are compared as exact decimals after removing thousands separators,
  currency signs and trailing units ("$1,234.50 dollars" == 1234.5), so formatting never
  decides correctness and no float rounding can make two different answers equal.
- MATH answers are checked with math-verify (the library made for it): it extracts the
  last \\boxed{} (or a bare expression) and decides symbolic equivalence (1/2 == 0.5 ==
  \\frac12). Our `last_boxed` is only used to read the gold answer and to show the
  extracted answer in per-sample records.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# A number, optionally signed, with optional thousands separators and decimals; "\u2212" is
# the typographic minus sign some text uses.
_NUMBER = re.compile(r"[-\u2212]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-\u2212]?\$?\.\d+")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)


def gsm8k_final_answer(solution: str) -> str:
    """The text after the final '#### ' of a GSM8K solution, thousands commas removed."""
    if "####" not in solution:
        raise ValueError("no '####' answer line")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}, or `\\boxed 5`), braces
    balanced; None if there is none or it is unterminated."""
    matches = list(re.finditer(r"\\(?:boxed|fbox)", text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    if rest.startswith(" "):
        return rest.split("$")[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:index]
    return None


def parse_number(text: str) -> Decimal | None:
    """The first number in `text` as an exact decimal ("-$1,234.50 kg" -> -1234.50)."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    cleaned = match.group().replace("\u2212", "-").replace("$", "").replace(",", "").replace(" ", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def as_number(text: str) -> Decimal | None:
    """`text` as an exact decimal when it is one number (with currency, separators or a unit word:
    "$1,234.50 dollars"), else None ("1/2", "x = 3", "2 + 3" are not)."""
    value = parse_number(text)
    if value is None:
        return None
    rest = _NUMBER.sub("", text, count=1)
    return None if re.search(r"[\d/^*+=\\{}()]", rest) else value


def extract_number(output: str) -> str | None:
    """The model's numeric answer as a canonical string ("1234.5", "-7"), or None."""
    if "####" in output:
        tail = output.rsplit("####", 1)[1]
    else:
        answer_is = list(_ANSWER_IS.finditer(output))
        tail = output[answer_is[-1].end() :] if answer_is else None
    if tail is not None and (value := parse_number(tail)) is not None:
        return canonical(value)
    numbers = list(_NUMBER.finditer(output))
    if not numbers:
        return None
    value = parse_number(numbers[-1].group())
    return None if value is None else canonical(value)


def canonical(value: Decimal) -> str:
    """1234.50 -> "1234.5", 7.0 -> "7", -0 -> "0"."""
    value = value.normalize()
    if value == 0:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def numbers_match(gold: str, extracted: str | None) -> bool:
    if extracted is None:
        return False
    gold_value, value = parse_number(gold), parse_number(extracted)
    return gold_value is not None and value is not None and gold_value == value


def math_verify_match(gold: str, output: str) -> tuple[str | None, bool]:
    """(shown extracted answer, correct) for a MATH answer, decided by math-verify."""
    from math_verify import parse, verify

    gold_parsed = parse(f"\\boxed{{{gold}}}")
    predicted = parse(output)
    extracted = last_boxed(output) or (predicted[-1] if predicted and isinstance(predicted[-1], str) else None)
    return extracted, bool(predicted) and bool(verify(gold_parsed, predicted))
