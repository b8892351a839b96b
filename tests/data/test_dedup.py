import random

from frugal_lm.data.dedup import DuplicateFilter, row_key


def test_first_occurrences_match_a_python_set_over_many_batches():
    rng = random.Random(0)
    pool = [row_key(f"question {i}", f"answer {i % 7}") for i in range(3000)]
    duplicate_filter, seen = DuplicateFilter(), set()
    for batch_number in range(200):
        keys = [rng.choice(pool) for _ in range(rng.randint(0, 60))]
        expected = []
        for key in keys:  # brute force: first time this key appears anywhere in the stream
            expected.append(key not in seen)
            seen.add(key)
        assert duplicate_filter.first_seen(keys).tolist() == expected, f"batch {batch_number}"
    assert len(duplicate_filter) == len(seen)
    assert sum(run.nbytes for run in duplicate_filter.runs) == 16 * len(seen)  # 16 bytes per unique row
    # Sorted runs, each over twice the next: about log2(unique / batch) of them.
    sizes = [len(run) for run in duplicate_filter.runs]
    assert all(a > 2 * b for a, b in zip(sizes, sizes[1:])) and len(sizes) <= 12
    for run in duplicate_filter.runs:
        as_bytes = [bytes(key) for key in run]
        assert as_bytes == sorted(set(as_bytes))


def test_row_key_separates_the_fields():
    assert row_key("ab", "c") != row_key("a", "bc")
    assert row_key("a", "b") == row_key("a", "b") and len(row_key("a", "b")) == 16
