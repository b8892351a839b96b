"""Expert parallelism's token exchange: the bytes each device sends per step, and their time.

With the routed experts of every MoE layer split over N expert-parallel ranks, each MoE layer
call (one MoE block in one stack pass) is two all-to-alls: dispatch sends every routed copy
of a token (top_k per token, C values each) to the rank that holds its expert, combine sends
the experts' outputs back. Under balanced routing (N - 1) / N of the copies leave the device.
The backward pass mirrors both (the combine's gradient travels as a dispatch and the other
way round). Forward runs in every stack pass; backward only in the `bp_steps` passes with
gradients (HRM); activation checkpointing's recompute is not counted. Values travel in the
compute dtype; the router's indices and weights are negligible next to them.

Time: one rank sends and receives at once over its own links, copies for ranks of its node at
the NVLink (or PCIe) rate and copies for other nodes at the InfiniBand rate (`devices.py`);
the links work concurrently, so the slower of the two bounds the exchange. An expert-parallel
group is consecutive ranks: up to `gpus_per_node` of them share a node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from frugal_lm.config import ModelConfig
from frugal_lm.plan.devices import Device
from frugal_lm.plan.parameters import ParameterBreakdown


@dataclass(frozen=True)
class AllToAll:
    """One device's expert-parallel traffic in one optimizer step (sent; as much is received)."""

    exchanges: int
    """All-to-all calls per step (dispatch and combine, forward and backward, every MoE layer call)."""
    intra_node_bytes: float
    inter_node_bytes: float
    seconds: float
    """At the device table's link rates (NaN where a rate is unknown)."""

    @property
    def bytes(self) -> float:
        return self.intra_node_bytes + self.inter_node_bytes


def exchanges_per_step(config: ModelConfig, bp_steps: float) -> int:
    """Dispatch + combine per MoE layer call, forward in every pass and backward in the
    `bp_steps` passes with gradients."""
    moe_blocks = ParameterBreakdown.of(config).moe_blocks_per_stack
    passes = config.stack_passes
    window = min(bp_steps, passes)
    return round(2 * moe_blocks * (passes + window))


def all_to_all_per_step(
    config: ModelConfig,
    tokens_per_device: int,
    expert_parallel: int,
    device: Device,
    bp_steps: float,
    compute_bytes: int = 2,
) -> AllToAll:
    """What one device sends per step when each MoE layer's experts are split over
    `expert_parallel` ranks (1: nothing travels)."""
    exchanges = exchanges_per_step(config, bp_steps)
    copies = tokens_per_device * config.moe.top_k if config.moe.enabled else 0
    per_exchange = copies * config.hidden_size * compute_bytes
    node = min(device.gpus_per_node, expert_parallel)
    intra = exchanges * per_exchange * (node - 1) / expert_parallel
    inter = exchanges * per_exchange * (expert_parallel - node) / expert_parallel
    times = [
        moved / rate
        for moved, rate in ((intra, device.intra_node_bytes_per_s), (inter, device.inter_node_bytes_per_s))
        if moved
    ]
    seconds = float("nan") if any(math.isnan(t) for t in times) else max(times, default=0.0)
    return AllToAll(exchanges, intra, inter, seconds)
