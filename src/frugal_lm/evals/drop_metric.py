"""DROP exact match and F1, as the official DROP evaluation script defines them.

An answer is a bag of spans. Each span is normalised (lower case, punctuation and articles
removed, numbers canonicalised: "1,000" -> 1000.0). EM: the sets of normalised spans are
equal. F1: predicted and gold spans are aligned one-to-one to maximise token-bag F1
(Hungarian assignment, scipy), a span pair scoring 0 when the gold span holds numbers and
the predicted one shares none of them; the aligned F1s are averaged over the larger bag.
Against several gold answers the best one counts. The prediction is one string (a single
span), as lm-eval-harness scores generated DROP answers; F1 is rounded to 2 decimals like
the official script, so our numbers and theirs are comparable.
"""

from __future__ import annotations

import re
import string

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(char for char in token if char not in _PUNCTUATION)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def normalize_span(span: str) -> str:
    tokens = (_normalize_token(token) for token in re.split(" |-", span))
    return " ".join(token for token in tokens if token.strip()).strip()


def _bags(spans: tuple[str, ...]) -> tuple[list[str], list[set[str]]]:
    normalized = [normalize_span(span) for span in spans]
    return normalized, [set(span.split()) for span in normalized]


def _f1(predicted: set[str], gold: set[str]) -> float:
    common = len(gold & predicted)
    precision = common / len(predicted) if predicted else 1.0
    recall = common / len(gold) if gold else 1.0
    return 0.0 if precision == 0 and recall == 0 else 2 * precision * recall / (precision + recall)


def _numbers_compatible(gold: set[str], predicted: set[str]) -> bool:
    gold_numbers = {word for word in gold if _is_number(word)}
    return not gold_numbers or bool(gold_numbers & {word for word in predicted if _is_number(word)})


def em_f1(predicted: str | tuple[str, ...], gold: tuple[str, ...]) -> tuple[float, float]:
    """(exact match, F1) of one prediction against one gold answer (a tuple of spans)."""
    from scipy.optimize import linear_sum_assignment

    predicted = (predicted,) if isinstance(predicted, str) else tuple(predicted)
    predicted_spans, predicted_bags = _bags(predicted)
    gold_spans, gold_bags = _bags(gold)
    exact = float(set(predicted_spans) == set(gold_spans) and len(predicted_spans) == len(gold_spans))
    scores = np.zeros((len(gold_bags), len(predicted_bags)))
    for g, gold_bag in enumerate(gold_bags):
        for p, predicted_bag in enumerate(predicted_bags):
            if _numbers_compatible(gold_bag, predicted_bag):
                scores[g, p] = _f1(predicted_bag, gold_bag)
    rows, columns = linear_sum_assignment(-scores)
    best = np.zeros(max(len(gold_bags), len(predicted_bags)))
    for row, column in zip(rows, columns):
        best[row] = max(best[row], scores[row, column])
    return exact, round(float(np.mean(best)), 2)


def best_em_f1(predicted: str, answers: tuple[tuple[str, ...], ...]) -> tuple[float, float]:
    """The best (EM, F1) over the gold answers; answers that are empty strings do not count."""
    best_exact, best_f1 = 0.0, 0.0
    for gold in answers:
        if not gold or not gold[0].strip():
            continue
        exact, f1 = em_f1(predicted, gold)
        best_exact, best_f1 = max(best_exact, exact), max(best_f1, f1)
    return best_exact, best_f1
