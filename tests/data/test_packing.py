import numpy as np
import pytest

from frugal_lm.data.packing import plan_epoch


def check_plan(plan, lengths):
    seen = []
    for step in range(plan.n_steps):
        for row in plan.rows(step):
            assert sum(lengths[i] for i in row) <= plan.row_len
            seen.extend(row)
    assert sorted(seen) == list(range(len(lengths)))  # every example exactly once
    assert all(plan.step_starts[k] < plan.step_starts[k + 1] for k in range(plan.n_steps))
    # Epoch order is kept up to the lookahead: after k steps no example from further than
    # `lookahead` past the examples consumed so far has been used.
    for step in range(plan.n_steps):
        consumed = plan.step_starts[step + 1]
        assert plan.order[:consumed].max() < consumed + 256


def synthetic_mix_lengths(rng, n):
    """Short arithmetic-style examples: 10 to 60 tokens."""
    return rng.integers(10, 61, n)


def heavy_tailed_lengths(rng, n, row_len):
    """Log-normal lengths with a long tail, clipped to the row."""
    return np.clip(rng.lognormal(mean=4.5, sigma=1.0, size=n).astype(np.int64), 1, row_len)


@pytest.mark.parametrize("kind", ["synthetic", "heavy_tailed"])
def test_packing_is_valid_and_at_least_99_5_percent_full(kind):
    rng = np.random.default_rng(0)
    row_len, bins = 2048, 16
    lengths = synthetic_mix_lengths(rng, 60_000) if kind == "synthetic" else heavy_tailed_lengths(rng, 40_000, row_len)
    plan = plan_epoch(lengths, bins, row_len)
    check_plan(plan, lengths)
    # The last step of an epoch is partial by nature; judge the steady state.
    full_steps = plan.n_steps - 1
    used = lengths[plan.order[: plan.step_starts[full_steps]]].sum()
    assert used / (full_steps * bins * row_len) >= 0.995


def test_rows_are_balanced_for_ranks():
    rng = np.random.default_rng(1)
    lengths = heavy_tailed_lengths(rng, 5_000, 1024)
    plan = plan_epoch(lengths, bins_per_step=8, row_len=1024)
    for step in range(plan.n_steps - 1):
        loads = [sum(lengths[i] for i in row) for row in plan.rows(step)]
        assert max(loads) - min(loads) <= max(lengths)


def test_plan_is_deterministic_and_handles_edges():
    lengths = np.array([5, 3, 8, 1, 8, 2])
    first, second = plan_epoch(lengths, 2, 8), plan_epoch(lengths, 2, 8)
    assert np.array_equal(first.order, second.order) and np.array_equal(first.row_of_slot, second.row_of_slot)
    check_plan(first, lengths)
    with pytest.raises(ValueError, match="more than a row"):
        plan_epoch(np.array([9]), 2, 8)
    assert plan_epoch(np.array([], dtype=np.int64), 2, 8).n_steps == 0
