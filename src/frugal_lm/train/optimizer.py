"""AdamATan2 with decoupled weight decay and an EMA of the weights in optimizer state.

AdamATan2 (Everett et al., 2024; used by HRM and HRM-Text) replaces Adam's
`m / (sqrt(v) + eps)` with `a * atan2(m, b * sqrt(v))`: bounded (|update| <= a * pi/2), scale
invariant, and free of the epsilon whose tuning Adam needs at low precision. With bias
correction, for each parameter p with gradient g at step t:

    m = beta1 * m + (1 - beta1) * g          v = beta2 * v + (1 - beta2) * g^2
    p = p * (1 - lr * weight_decay)          (decoupled, as AdamW)
    p = p - lr * a * atan2(m / (1 - beta1^t), b * sqrt(v / (1 - beta2^t)))
    ema = ema_decay * ema + (1 - ema_decay) * p

The EMA lives in each parameter's optimizer state (key `ema`), so it is sharded, saved and
resumed exactly like the moments, under FSDP2 and Distributed Checkpoint alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class AdamATan2(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.1, ema_decay: float | None = 0.9999, a: float = 1.27, b: float = 1.0):
        if lr < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid AdamATan2 settings: lr={lr}, betas={betas}, weight_decay={weight_decay}")
        if ema_decay is not None and not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, ema_decay=ema_decay, a=a, b=b))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    if group["ema_decay"] is not None:
                        state["ema"] = param.detach().clone()
                state["step"] += 1
                step = state["step"].item()
                grad = param.grad
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                param.mul_(1 - group["lr"] * group["weight_decay"])
                denominator = (exp_avg_sq / (1 - beta2 ** step)).sqrt_().mul_(group["b"])
                update = torch.atan2(exp_avg / (1 - beta1 ** step), denominator)
                param.add_(update, alpha=-group["lr"] * group["a"])
                if "ema" in state:
                    state["ema"].lerp_(param, 1 - group["ema_decay"])
        return loss

    def ema_tensors(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, its EMA) for every parameter that has taken a step."""
        for group in self.param_groups:
            for param in group["params"]:
                if "ema" in self.state.get(param, {}):
                    yield param, self.state[param]["ema"]

    @contextmanager
    def ema_weights(self):
        """Swap the EMA into the parameters for the duration (evaluation, export)."""
        pairs = list(self.ema_tensors())
        for param, ema in pairs:
            param.data, self.state[param]["ema"] = ema, param.data
        try:
            yield
        finally:
            for param, _ in pairs:
                param.data, self.state[param]["ema"] = self.state[param]["ema"], param.data
