"""One training step: forward at the run's precision, backward, clip, AdamATan2 + EMA.

Precision. fp32 runs the model as it is. bf16 computes in bf16 with fp32 master weights,
casting each weight once per step, not once per stack pass (the HRM runs its stacks up to
8 times a step, and autocast casts a weight at every use): one process calls the model
with a bf16 copy of its parameters (`torch.func.functional_call`; the copy's gradient
flows back to the fp32 parameter through the cast), and under FSDP2 the sharding policy
gathers the weights in bf16 once per step (`distributed.shard_model`).

Compilation (`compile=true`) compiles each block on its own, as torchtitan does: every
stack pass of every layer reuses one compiled graph (two: with and without gradients),
where compiling the whole model would unroll passes x layers into one graph.

The step's counts (loss, label tokens, accuracy, tokens, clock) are summed across ranks in
one all-reduce, as named `StepStats`.

A mixture of experts (train/moe_balance.py) adds its balance losses to the loss, logs its
routing (`StepResult.routing`) and, after the optimizer step, moves its experts' selection
bias. Its routers stay fp32 under bf16: their logits pick the experts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call

from frugal_lm.data.batch import PackedBatch
from frugal_lm.model import language_model_loss
from frugal_lm.model.layers import Block, Stack
from frugal_lm.model.moe import Router, attach_recorder
from frugal_lm.train.distributed import Distributed, clip_grad_norm
from frugal_lm.train.moe_balance import RoutingStats, balance_loss, routing_stats, update_expert_bias
from frugal_lm.train.optimizer import AdamATan2


@dataclass
class StepStats:
    """Sums over the step's batch (over every rank once `all_reduced`)."""

    loss_sum: torch.Tensor
    label_tokens: torch.Tensor
    correct_tokens: torch.Tensor
    examples: torch.Tensor
    correct_examples: torch.Tensor
    tokens: torch.Tensor
    clock_s: torch.Tensor
    """Seconds since the loop started (summed over ranks: divide by the world size)."""

    def all_reduced(self, distributed: Distributed) -> StepStats:
        fields = dataclasses.fields(self)
        summed = distributed.all_reduce_sum(torch.stack([getattr(self, field.name).float() for field in fields]))
        return StepStats(*summed.unbind())

    @property
    def loss(self) -> float:
        return float(self.loss_sum / self.label_tokens.clamp(min=1))

    @property
    def token_accuracy(self) -> float:
        return float(self.correct_tokens / self.label_tokens.clamp(min=1))

    @property
    def exact_accuracy(self) -> float:
        return float(self.correct_examples / self.examples.clamp(min=1))


@dataclass
class StepResult:
    stats: StepStats  # all-reduced
    grad_norm: float | None  # before clipping; None without grad_clip
    applied: bool  # False when the loss was not finite: no update was made
    routing: RoutingStats | None = None  # a mixture of experts' routing (all-reduced)


def compile_blocks(model: torch.nn.Module) -> None:
    """Compile every block in place (its parameters and state-dict keys stay as they were)."""
    for module in model.modules():
        if isinstance(module, Block):
            module.compile(dynamic=False)


def checkpoint_activations(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them."""
    for module in model.modules():
        if isinstance(module, Stack):
            module.checkpoint_blocks = True


class TrainStep:
    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: AdamATan2,
        distributed: Distributed,
        bf16: bool,
        grad_clip: float | None,
        finish_gradients: Callable[[], None] | None = None,
    ):
        """`finish_gradients` completes, after the backward pass, gradients that it left
        partial (expert parallelism's experts: `ExpertParallel.reduce_gradients`)."""
        self.model, self.optimizer, self.distributed = model, optimizer, distributed
        self.finish_gradients = finish_gradients
        # Under FSDP2 the sharding policy already gathers bf16 weights (distributed.shard_model).
        self.cast_weights = bf16 and distributed.world_size == 1
        self.grad_clip = grad_clip
        self.moe = model.config.moe
        self.recorder = attach_recorder(model)
        self.fp32_weights = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, Router)}

    def forward_model(self) -> Callable:
        if not self.cast_weights:
            return self.model
        weights = {
            name: param if name in self.fp32_weights else param.to(torch.bfloat16)
            for name, param in self.model.named_parameters()
        }
        return lambda *args, **kwargs: functional_call(self.model, weights, args, kwargs)

    def __call__(
        self, batch: PackedBatch, lr: float, bp_steps: int, n_tokens: int | None = None, clock_s: float = 0.0
    ) -> StepResult:
        """One step on `batch` (already on the device). `n_tokens`, its real tokens counted on
        the host beforehand, spares a device sync (default: counted here); `clock_s`, the
        caller's clock, is summed over ranks with the step's counts."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n_tokens = batch.n_tokens if n_tokens is None else n_tokens
        if self.recorder is not None:
            self.recorder.take()  # anything left by a validation pass
        output = language_model_loss(self.forward_model(), batch, bp_steps)
        records = self.recorder.take() if self.recorder is not None else []
        device = output.loss_sum.device
        stats = StepStats(
            output.loss_sum,
            output.label_tokens,
            output.correct_tokens,
            output.examples,
            output.correct_examples,
            # torch.full launches a fill; torch.tensor(value, device=cuda) would copy and wait.
            torch.full((), float(n_tokens), device=device),
            torch.full((), clock_s, device=device),
        ).all_reduced(self.distributed)
        world_size = self.distributed.world_size
        # Exactly output.loss with one rank; N ranks' gradients sum to the single-process one.
        loss = output.loss * (output.label_tokens / stats.label_tokens.clamp(min=1) * world_size)
        balance = balance_loss(records, self.moe)
        (loss if balance is None else loss + balance).backward()
        routing = None
        if self.recorder is not None:
            self.recorder.take()  # what recomputed (activation-checkpointed) blocks left
            routing = routing_stats(records, self.recorder, self.distributed)
        if self.finish_gradients is not None:
            self.finish_gradients()
        grad_norm = clip_grad_norm(list(self.model.parameters()), self.grad_clip) if self.grad_clip else None
        applied = math.isfinite(stats.loss)
        if applied:
            self.optimizer.step()
            if routing is not None and self.moe.bias_update_rate:
                update_expert_bias(self.recorder, routing.load_LE, self.moe.bias_update_rate)
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(stats, None if grad_norm is None else _as_float(grad_norm), applied, routing)


def _as_float(norm: torch.Tensor) -> float:
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
