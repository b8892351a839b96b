"""`--verify`: which teacher replies are kept (rejection sampling, STaR-style).

Design choices:
- `final-answer`: the row's known answer is its response as read: the text after its last
  `####` (GSM8K's solutions), else its last \\boxed{} (MATH's), else the whole response. The
  reply's final answer is the first line after its last `####`, else its last \\boxed{}, else
  its last number ("the answer is 18." counts). Two numbers are compared as exact decimals
  (thousands separators, currency and a unit word ignored: "$1,080" == "1080 dollars");
  anything else by math-verify's symbolic equivalence (\\frac12 == 0.5 == 1/2), else as text
  with case and spaces ignored.
- A row with no known answer (an empty response) cannot be verified; `generate` records it in
  rejected.jsonl with that reason without asking the teacher (nothing is spent on it).
- `json`: the reply (or the one ```json fenced block in it) must parse as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frugal_lm.data.answers import as_number, extract_number, gsm8k_final_answer, last_boxed

VERIFY_MODES = ("final-answer", "json")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.DOTALL)


def known_answer(response: str) -> str | None:
    """The answer a row's response gives (after `####`, else boxed, else all of it); None when empty."""
    if "####" in response:
        answer = gsm8k_final_answer(response)
    else:
        answer = last_boxed(response) or response
    answer = answer.strip()
    return answer or None


def final_answer(output: str) -> str | None:
    """The final answer a reply gives: after its last `####`, else its last boxed, else its last number."""
    if "####" in output:
        tail = output.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else None
    return last_boxed(output) or extract_number(output)


def answers_match(gold: str, predicted: str | None) -> bool:
    if predicted is None:
        return False
    gold_number, predicted_number = as_number(gold), as_number(predicted)
    if gold_number is not None and predicted_number is not None:
        return gold_number == predicted_number
    if _math_equivalent(gold, predicted):
        return True
    return " ".join(gold.lower().split()) == " ".join(predicted.lower().split())


def _math_equivalent(gold: str, predicted: str) -> bool:
    from math_verify import parse, verify

    gold_parsed, predicted_parsed = parse(f"\\boxed{{{gold}}}"), parse(f"\\boxed{{{predicted}}}")
    return bool(gold_parsed) and bool(predicted_parsed) and bool(verify(gold_parsed, predicted_parsed))


def json_payload(text: str) -> Any:
    """The JSON a reply holds: all of it, or its one fenced block; raises ValueError (with a reason) if none."""
    fenced = _FENCE.findall(text)
    candidate = fenced[0] if len(fenced) == 1 else text
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None


def rejection(mode: str | None, output: str, gold: str | None) -> str | None:
    """Why `output` fails verification `mode` (None: kept). `gold`: the row's known answer."""
    if mode == "final-answer":
        predicted = final_answer(output)
        if answers_match(gold or "", predicted):
            return None
        return f"final answer {predicted!r} does not match the known answer {gold!r}"
    if mode == "json":
        try:
            json_payload(output)
        except ValueError as error:
            return f"--verify json: {error}"
    return None
