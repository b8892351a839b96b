"""Load balancing of a mixture of experts in training: the balance losses, the step's routing
statistics over ranks, the expert-bias update, and the collapsed-router warning.

The MoE layers report each call's statistics to a `RoutingRecorder` (model/moe.py); here:
- the training loss gains `aux_loss_coef` x the mean auxiliary loss and `z_loss_coef` x the
  mean z-loss over the calls that carry gradients (with truncated backprop the earlier
  passes carry none, and a term without gradient would only shift the loss);
- `RoutingStats` sums the step's tokens per expert per layer over passes and ranks (one
  all-reduce), with the losses' means over every call and rank, for metrics.jsonl;
- with `bias_update_rate`, each layer's selection bias moves once per step, after the
  optimizer step, by rate x sign(mean load - load) per expert (DeepSeek-V3's
  auxiliary-loss-free balancing). The bias is a buffer: no optimizer, no weight decay, and
  every rank applies the same all-reduced update;
- a router that sends most tokens to one expert for `COLLAPSE_STEPS` steps in a row is
  reported once on the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frugal_lm.config import MoeConfig
from frugal_lm.model.moe import RoutingRecord, RoutingRecorder
from frugal_lm.train.distributed import Distributed

COLLAPSE_STEPS = 3
"""Consecutive steps of a collapsed layer before the warning."""


@dataclass
class RoutingStats:
    """One step's routing, over every rank."""

    aux_loss: float
    """Mean auxiliary (load-balancing) loss over the step's MoE layer calls."""
    z_loss: float
    """Mean router z-loss over the same calls."""
    load_LE: torch.Tensor
    """Routed (token, expert) assignments per MoE layer and expert, summed over passes (CPU)."""
    dropped_tokens: int
    """Assignments that went over an expert's capacity (0 when dropless)."""

    @property
    def load_max(self) -> float:
        """Over layers, the busiest expert's assignments over the layer's mean per expert."""
        mean_L = self.load_LE.mean(-1).clamp(min=1e-9)
        return float((self.load_LE.max(-1).values / mean_L).max())

    def load_fractions(self, digits: int = 4) -> list[list[float]]:
        """Each layer's assignments per expert as fractions of the layer's (metrics.jsonl `moe_load`)."""
        fractions_LE = self.load_LE / self.load_LE.sum(-1, keepdim=True).clamp(min=1)
        return [[round(value, digits) for value in row] for row in fractions_LE.tolist()]


def balance_loss(records: list[RoutingRecord], moe: MoeConfig) -> torch.Tensor | None:
    """The loss terms the balance coefficients add (None when both are 0 or no call has gradients)."""
    trained = [record for record in records if record[2].requires_grad]
    if not trained or not (moe.aux_loss_coef or moe.z_loss_coef):
        return None
    aux = torch.stack([record[2] for record in trained]).mean()
    z_loss = torch.stack([record[3] for record in trained]).mean()
    return moe.aux_loss_coef * aux + moe.z_loss_coef * z_loss


def routing_stats(records: list[RoutingRecord], recorder: RoutingRecorder, distributed: Distributed) -> RoutingStats:
    """The step's routing summed (the losses averaged) over calls and ranks, in one all-reduce."""
    layers, experts = recorder.layers, recorder.moe_layers[0].num_experts
    device = records[0][1].device if records else torch.device("cpu")
    load_LE = torch.zeros(layers, experts, device=device)
    totals = torch.zeros(3, device=device)  # aux loss, z-loss (means over the calls), dropped
    for layer, demand_E, aux_loss, z_loss, dropped in records:
        load_LE[layer] += demand_E
        totals += torch.stack([aux_loss.detach(), z_loss.detach(), dropped])
    totals[:2] /= max(len(records), 1)
    summed = distributed.all_reduce_sum(torch.cat([totals, load_LE.flatten()]))
    return RoutingStats(
        aux_loss=float(summed[0]) / distributed.world_size,
        z_loss=float(summed[1]) / distributed.world_size,
        load_LE=summed[3:].view(layers, experts).cpu(),
        dropped_tokens=int(summed[2]),
    )


@torch.no_grad()
def update_expert_bias(recorder: RoutingRecorder, load_LE: torch.Tensor, rate: float) -> None:
    """Move each layer's selection bias toward equal load (once per step, after the optimizer)."""
    for index, layer in enumerate(recorder.moe_layers):
        layer.gate.nudge_bias(load_LE[index], rate)


class CollapseWatch:
    """Warns once when a layer's busiest expert takes more than half of the layer's tokens (and
    twice its fair share, top_k / experts) for `COLLAPSE_STEPS` steps in a row."""

    def __init__(self, moe: MoeConfig):
        self.top_k, self.experts = moe.top_k, moe.experts
        self.threshold = max(0.5, 2 * moe.top_k / moe.experts)
        self.streak, self.warned = 0, False

    def observe(self, stats: RoutingStats) -> str | None:
        """The warning to print, the first time the streak is reached; else None."""
        if self.warned or self.experts < 4:
            return None
        tokens_L = stats.load_LE.sum(-1).clamp(min=1) / self.top_k
        share_LE = stats.load_LE / tokens_L[:, None]
        share, flat = share_LE.flatten().max(0)
        self.streak = self.streak + 1 if share > self.threshold else 0
        if self.streak < COLLAPSE_STEPS:
            return None
        self.warned = True
        layer, expert = divmod(int(flat), self.experts)
        return (
            f"warning: MoE layer {layer}'s expert {expert} takes {float(share):.0%} of the layer's tokens "
            f"(a fair share is {self.top_k / self.experts:.0%}) for {self.streak} steps: the router collapsed; "
            f"raise model.moe.aux_loss_coef or set model.moe.bias_update_rate"
        )
