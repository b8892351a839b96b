import random

import numpy as np
import pytest

from frugal_lm.data.near_dedup import (
    NearDuplicateFilter,
    SortedKeyRuns,
    catch_probability,
    choose_bands,
    shingles,
)
from frugal_lm.errors import FrugalError


def test_shingles_ignore_case_punctuation_and_spacing():
    assert sorted(shingles("The cat, sat on the MAT!  Twice.")) == sorted(shingles("the cat sat on the mat twice"))
    assert len(shingles("one two three four five six")) == 2  # word 5-grams


def test_a_text_under_five_words_is_one_shingle_of_all_its_words():
    assert shingles("Add 2 and 3") == ["add 2 and 3"]
    assert shingles("Add 2 and 3") != shingles("Add 2 and 4")
    assert shingles("?!") == ["?!"]  # no words: the text itself, so it matches only itself


def test_bands_catch_a_pair_at_the_threshold_nine_times_in_ten_with_at_most_sixteen_bands():
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        bands, rows = choose_bands(threshold, 128)
        assert bands <= 16 and bands * rows <= 128
        assert catch_probability(threshold, bands, rows) >= 0.9
        assert catch_probability(threshold, bands, rows + 1) < 0.9 or (128 // (rows + 1)) < bands
    assert choose_bands(0.8, 128) == (16, 8)
    with pytest.raises(FrugalError, match="--near-dedup-threshold"):
        choose_bands(1.0, 128)


def test_sorted_key_runs_find_what_a_dict_holds_across_merges():
    rng = np.random.default_rng(0)
    runs, expected, value = SortedKeyRuns(), {}, 0
    for _ in range(40):
        keys = np.unique(rng.integers(0, 2**64 - 1, size=int(rng.integers(1, 50)), dtype=np.uint64))
        keys = np.array([k for k in keys.tolist() if k not in expected], dtype=np.uint64)
        values = np.arange(value, value + len(keys))
        expected.update(zip(keys.tolist(), values.tolist()))
        value += len(keys)
        runs.add(keys, values)
    probe = np.array([*list(expected)[:200], 1, 2, 3], dtype=np.uint64)
    assert runs.lookup(probe).tolist() == [expected.get(k, -1) for k in probe.tolist()]
    assert runs.nbytes == 12 * len(expected) and len(runs.runs) <= 8


def test_planted_near_duplicates_are_found_and_untouched_rows_kept(make_varied_rows, make_near_copy):
    rows = make_varied_rows(3000, seed=1)
    rng = random.Random(2)
    planted = {}  # position in the stream -> position of the row it copies
    stream = list(rows)
    for number, original in enumerate(rng.sample(range(len(rows)), 300)):
        kind = ("word", "punctuation", "sentence")[number % 3]
        planted[len(stream)] = original
        stream.append(make_near_copy(rows[original], kind, rng))
    near = NearDuplicateFilter()
    verdicts = []
    for start in range(0, len(stream), 512):
        verdicts += near.check([f"{r['instruction']}\n{r['response']}" for r in stream[start : start + 512]])
    caught = sum(verdicts[position] == original for position, original in planted.items())
    assert caught >= 0.9 * len(planted), caught
    untouched_removed = sum(verdict is not None for verdict in verdicts[: len(rows)])
    assert untouched_removed < 0.01 * len(rows), untouched_removed
    # Kept rows are numbered in order, and only their band keys are stored: 12 bytes a band.
    assert near.kept == verdicts.count(None)
    assert near.index_bytes == near.kept * near.bands * 12


def test_within_a_batch_the_first_occurrence_is_kept():
    near = NearDuplicateFilter()
    text = "a long enough sentence to make several shingles of five words each"
    assert near.check([text, text.upper(), "something else entirely, and then some more words"]) == [None, 0, None]
    assert near.check([text + "!"]) == [0]


def test_verified_removals_are_all_at_the_threshold(make_varied_rows, make_near_copy):
    rows = make_varied_rows(2000, seed=3)
    rng = random.Random(4)
    stream = list(rows) + [make_near_copy(rows[i], ("word", "sentence")[i % 2], rng) for i in range(0, 2000, 10)]
    texts = [f"{r['instruction']}\n{r['response']}" for r in stream]
    plain, verified = NearDuplicateFilter(), NearDuplicateFilter(verify=True)
    plain_verdicts, verified_verdicts = [], []
    for start in range(0, len(texts), 512):
        plain_verdicts += plain.check(texts[start : start + 512])
        verified_verdicts += verified.check(texts[start : start + 512])
    verified.close()
    kept = [position for position, verdict in enumerate(verified_verdicts) if verdict is None]

    def jaccard(a, b):
        first, second = set(shingles(a)), set(shingles(b))
        return len(first & second) / len(first | second)

    removed = [position for position, verdict in enumerate(verified_verdicts) if verdict is not None]
    assert removed, "the planted copies include some at or above the threshold"
    assert all(jaccard(texts[p], texts[kept[verified_verdicts[p]]]) >= 0.8 for p in removed)
    assert len(removed) < sum(verdict is not None for verdict in plain_verdicts)  # LSH alone removes more
    # Memory: the band keys plus 8 bytes per kept row (its shingles live in an unlinked scratch file).
    assert verified.index_bytes == verified.kept * (verified.bands * 12 + 8)
