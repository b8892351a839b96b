"""AdamATan2 with decoupled weight decay and an EMA of the weights in optimizer state.

AdamATan2 (Everett et al., 2024; used by HRM and HRM-Text) replaces Adam's
`m / (sqrt(v) + eps)` with `a * atan2(m, b * sqrt(v))`: bounded (|update| <= a * pi/2), scale
invariant, and free of the epsilon whose tuning Adam needs at low precision. With bias
correction, for each parameter p with gradient g at step t:

    m = beta1 * m + (1 - beta1) * g          v = beta2 * v + (1 - beta2) * g^2
    p = p * (1 - lr * weight_decay)          (decoupled, as AdamW)
    p = p - lr * a * atan2(m / (1 - beta1^t), b * sqrt(v / (1 - beta2^t)))
    ema = d * ema + (1 - d) * p,   d = min(ema_decay, (1 + t) / (10 + t))

The EMA lives in each parameter's optimizer state (key `ema`), so it is sharded, saved and
resumed exactly like the moments, under FSDP2 and Distributed Checkpoint alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def ema_decay_at(ema_decay: float, step: float) -> float:
    """The EMA's decay after `step` updates: (1 + t) / (10 + t), capped at `ema_decay`. A fixed
    0.9999 would keep a 40-step run's EMA at its random init; warming the decay up makes the
    EMA average over about the last tenth of any run until the cap is reached."""
    return min(ema_decay, (1 + step) / (10 + step))


class AdamATan2(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
        ema_decay: float | None = 0.9999,
        a: float = 1.27,
        b: float = 1.0,
    ):
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
            params = [param for param in group["params"] if param.grad is not None]
            if params:
                self._update(group, params)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        """One step for `params`, as multi-tensor (foreach) kernels: a handful of launches per
        group instead of ~10 per parameter, with the same arithmetic as the formula above."""
        beta1, beta2 = group["betas"]
        lr, states = group["lr"], [self._state_of(param, group) for param in params]
        for state in states:
            state["step"] += 1
        # Step counts live on the CPU, so reading them costs no device sync.
        steps = [state["step"].item() for state in states]
        grads = [param.grad for param in params]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        denominators = torch._foreach_div(exp_avg_sqs, [1 - beta2**step for step in steps])
        torch._foreach_sqrt_(denominators)
        torch._foreach_mul_(denominators, group["b"])
        numerators = torch._foreach_div(exp_avgs, [1 - beta1**step for step in steps])
        updates = [torch.atan2(numerator, denominator) for numerator, denominator in zip(numerators, denominators)]
        torch._foreach_add_(params, updates, alpha=-lr * group["a"])
        if group["ema_decay"] is not None:
            weights = [1 - ema_decay_at(group["ema_decay"], step) for step in steps]
            torch._foreach_lerp_([state["ema"] for state in states], params, weights)

    def _state_of(self, param: torch.Tensor, group: dict) -> dict:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group["ema_decay"] is not None:
                state["ema"] = param.detach().clone()
        return state

    def ema_tensors(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, its EMA) for every parameter that has taken a step."""
        for group in self.param_groups:
            for param in group["params"]:
                if "ema" in self.state.get(param, {}):
                    yield param, self.state[param]["ema"]
