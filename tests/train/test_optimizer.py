import math

import pytest
import torch

from frugal_lm.train.optimizer import AdamATan2


def test_two_steps_by_hand():
    """Every quantity computed with Python floats, independently of the implementation."""
    lr, beta1, beta2, wd, decay, a, b = 0.1, 0.9, 0.95, 0.1, 0.5, 1.27, 1.0
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = AdamATan2([param], lr=lr, betas=(beta1, beta2), weight_decay=wd, ema_decay=decay, a=a, b=b)
    p, m, v = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0]
    ema = list(p)
    for step, grads in enumerate([[0.5, -1.0], [-0.25, 2.0]], start=1):
        param.grad = torch.tensor(grads)
        optimizer.step()
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            p[i] *= 1 - lr * wd
            p[i] -= lr * a * math.atan2(m[i] / (1 - beta1**step), b * math.sqrt(v[i] / (1 - beta2**step)))
            warmed = min(decay, (1 + step) / (10 + step))  # the decay warms up with the step count
            ema[i] = warmed * ema[i] + (1 - warmed) * p[i]
        assert param.tolist() == pytest.approx(p, abs=1e-6)
        assert optimizer.state[param]["ema"].tolist() == pytest.approx(ema, abs=1e-6)


def test_update_is_bounded_and_scale_invariant():
    for scale in (1e-12, 1.0, 1e12):
        param = torch.nn.Parameter(torch.zeros(3))
        optimizer = AdamATan2([param], lr=1.0, weight_decay=0.0, ema_decay=None)
        param.grad = torch.tensor([1.0, -1.0, 0.0]) * scale
        optimizer.step()
        # First step: m_hat = g, sqrt(v_hat) = |g|, so atan2 = pi/4 whatever the scale.
        assert param.tolist() == pytest.approx([-1.27 * math.pi / 4, 1.27 * math.pi / 4, 0.0])


def test_state_dict_round_trip_keeps_ema():
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = AdamATan2([param], ema_decay=0.99)
    param.grad = torch.ones(2)
    optimizer.step()
    restored = AdamATan2([param], ema_decay=0.99)
    restored.load_state_dict(optimizer.state_dict())
    assert torch.equal(restored.state[param]["ema"], optimizer.state[param]["ema"])
