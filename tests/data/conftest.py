"""Text the data tests make themselves: varied instruction -> response rows, and near copies of them."""

import itertools
import random

import pytest

_SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def varied_rows(count: int, seed: int = 0) -> list[dict]:
    """Rows of Zipf-distributed pseudo-words (as in natural text: a few words are very
    common), an instruction of one or two sentences and a response of two to five: about
    40-110 words a pair, as in Alpaca-style data."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocabulary))))

    def sentence() -> str:
        words = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(7, 14))
        return " ".join(words).capitalize() + rng.choice([".", ".", "?", "!"])

    return [
        {
            "instruction": " ".join(sentence() for _ in range(rng.randint(1, 2))),
            "response": " ".join(sentence() for _ in range(rng.randint(2, 5))),
        }
        for _ in range(count)
    ]


def near_copy(row: dict, kind: str, rng: random.Random) -> dict:
    """`row` with one word changed, its punctuation and case altered, or a sentence appended."""
    copy = dict(row)
    if kind == "word":
        words = copy["response"].split()
        words[rng.randrange(len(words))] = "zoubaikei"
        copy["response"] = " ".join(words)
    elif kind == "punctuation":
        copy["instruction"] = copy["instruction"].upper().replace(".", ";").replace("?", " ?")
        copy["response"] = copy["response"].replace(" ", "  ").replace(".", "!")
    else:
        copy["response"] += " And that is all there is to say about it."
    return copy


@pytest.fixture
def make_varied_rows():
    return varied_rows


@pytest.fixture
def make_near_copy():
    return near_copy
