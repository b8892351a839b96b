import math

import pytest

from frugal_lm.train.schedules import learning_rate


def test_warmup_then_cosine_to_floor_by_hand():
    peak, total, warmup, floor = 1e-3, 11, 2, 0.1
    lrs = [learning_rate(step, total, peak, warmup, floor) for step in range(total)]
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3)
    # Cosine over steps 2..10 (8 intervals): step 6 is half way, peak*(0.1 + 0.9*0.5).
    assert lrs[2] == pytest.approx(1e-3)
    assert lrs[6] == pytest.approx(1e-3 * 0.55)
    assert lrs[4] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))
    assert lrs[10] == pytest.approx(1e-4)
    assert learning_rate(50, total, peak, warmup, floor) == pytest.approx(1e-4)


def test_no_warmup_starts_at_peak():
    assert learning_rate(0, 100, 3e-5, 0, 0.1) == pytest.approx(3e-5)
