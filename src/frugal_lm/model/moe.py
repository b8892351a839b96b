"""Mixture-of-experts FFN: a router picks `top_k` of `experts` SwiGLU experts per token.

Design choices (the issue's contract; transformers 5 is the numerical reference):
- Names and layout are transformers' fused ones, so weights exchange with that ecosystem:
  `mlp.gate.weight` (E, C), `mlp.gate.e_score_correction_bias` (E, a buffer),
  `mlp.experts.gate_up_proj` (E, 2W, C) with the gate rows first, `mlp.experts.down_proj`
  (E, C, W), and DeepSeek's `mlp.shared_experts` (one SwiGLU of width shared * W).
- The router computes in fp32: softmax (Qwen3-MoE, Mixtral) or sigmoid (DeepSeek-V3) scores.
  The correction bias is added for the choice of experts only; the weights come from the
  scores, optionally renormalised over the chosen k and scaled by `route_scale`.
- Dispatch: the N x K (token, expert) assignments are sorted by expert and run as one grouped
  matmul (`torch._grouped_mm`), or in a loop over experts (portable; equal results). Padding
  tokens and assignments over an expert's capacity get the sentinel expert E, which sorts
  last, past every group, and has combine weight zero, so they change nothing. The grouped path has static
  shapes and never reads a count on the host, so a compiled block neither breaks nor
  recompiles as the token counts move. Outputs are weighted and summed over k in fp32.
- Balance statistics (tokens per expert, the auxiliary and z losses, dropped assignments)
  are computed over real tokens only, when a `RoutingRecorder` is attached (training:
  `attach_recorder`). A call leaves them on the layer (`routing`, an attribute write that a
  compiled block makes without a guard or a graph break) and the stack, in eager code, hands
  them to the recorder after each block (`report`): a list appended inside the compiled
  block would recompile it at every call. The model never sees the losses' coefficients,
  which `train/step.py` applies, nor updates its own bias (`Router.nudge_bias`, the step's).

Shape legend: B rows, T tokens per row, N = B*T tokens, C hidden size, E routed experts,
K experts per token, S = N*K assignments, W expert width, L MoE layers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from frugal_lm.config import ModelConfig
from frugal_lm.errors import FrugalError


class Router(nn.Module):
    """Scores every expert for every token and picks the top k (fp32 throughout)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        moe = config.moe
        self.top_k, self.score, self.norm_topk, self.route_scale = moe.top_k, moe.score, moe.norm_topk, moe.route_scale
        self.weight = nn.Parameter(torch.empty(moe.experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(moe.experts, dtype=torch.float32))

    def forward(self, x_NC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits_NE, scores_NE, experts_NK, weights_NK), all fp32 but the expert ids."""
        logits_NE = F.linear(x_NC.float(), self.weight.float())
        scores_NE = logits_NE.softmax(-1) if self.score == "softmax" else logits_NE.sigmoid()
        experts_NK = torch.topk(scores_NE + self.e_score_correction_bias, self.top_k, dim=-1).indices
        weights_NK = scores_NE.gather(1, experts_NK)
        if self.norm_topk:
            weights_NK = weights_NK / (weights_NK.sum(-1, keepdim=True) + 1e-20)
        return logits_NE, scores_NE, experts_NK, weights_NK * self.route_scale

    @torch.no_grad()
    def nudge_bias(self, tokens_per_expert_E: torch.Tensor, rate: float) -> None:
        """DeepSeek-V3's auxiliary-loss-free balancing: move each expert's selection bias by
        `rate` toward the mean load (up when underloaded, down when overloaded)."""
        load_E = tokens_per_expert_E.to(self.e_score_correction_bias)
        self.e_score_correction_bias.add_(rate * torch.sign(load_E.mean() - load_E))


class Experts(nn.Module):
    """E SwiGLU experts stored stacked; runs assignments already sorted by expert."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        E, C, W = config.moe.experts, config.hidden_size, config.expert_intermediate_size
        self.num_experts, self.implementation = E, config.moe.implementation
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * W, C))
        self.down_proj = nn.Parameter(torch.empty(E, C, W))

    def fan_in_weights(self) -> Iterator[tuple[torch.Tensor, int]]:
        yield self.gate_up_proj, self.gate_up_proj.shape[-1]
        yield self.down_proj, self.down_proj.shape[-1]

    def forward(self, x_SC: torch.Tensor, tokens_per_expert_E: torch.Tensor) -> torch.Tensor:
        """x_SC sorted by expert (expert e's rows after those of experts < e); rows past the
        last group reach no expert of their own and must be weighted zero by the caller (the
        grouped path runs them through the last expert, the loop returns zeros)."""
        if self._grouped(x_SC):
            return self._grouped_mm(x_SC, tokens_per_expert_E)
        return self._loop(x_SC, tokens_per_expert_E)

    def _grouped(self, x_SC: torch.Tensor) -> bool:
        if self.implementation == "loop":
            return False
        supported = grouped_mm_supported(x_SC, self.gate_up_proj, self.down_proj)
        if self.implementation == "grouped" and not supported:
            raise FrugalError(
                f"moe.implementation=grouped: torch._grouped_mm does not run here ({x_SC.device.type}, "
                f"{x_SC.dtype}, hidden {x_SC.shape[-1]}, expert width {self.down_proj.shape[-1]}); "
                f"use moe.implementation=auto"
            )
        return supported

    def _grouped_mm(self, x_SC: torch.Tensor, tokens_per_expert_E: torch.Tensor) -> torch.Tensor:
        # Rows past the last group (padding, dropped assignments) join the last expert's group:
        # torch._grouped_mm would leave them uninitialised, forward and backward, and masking
        # them costs two passes over every row. Their combine weight is zero (`_dispatch`), so
        # they change no output and no gradient.
        offsets_E = torch.cumsum(tokens_per_expert_E, 0, dtype=torch.int32)
        offsets_E = torch.cat([offsets_E[:-1], offsets_E.new_full((1,), x_SC.shape[0])])
        weights = self.gate_up_proj.to(x_SC.dtype), self.down_proj.to(x_SC.dtype)
        gate_up_SW2 = grouped_mm(x_SC, weights[0].transpose(-2, -1), offsets_E)
        gate_SW, up_SW = gate_up_SW2.chunk(2, dim=-1)
        return grouped_mm(F.silu(gate_SW) * up_SW, weights[1].transpose(-2, -1), offsets_E)

    def _loop(self, x_SC: torch.Tensor, tokens_per_expert_E: torch.Tensor) -> torch.Tensor:
        outputs, start = [], 0
        for expert, count in enumerate(tokens_per_expert_E.tolist()):  # the portable path's host sync
            if count:
                rows_RC = x_SC[start : start + count]
                gate_RW, up_RW = F.linear(rows_RC, self.gate_up_proj[expert].to(x_SC.dtype)).chunk(2, dim=-1)
                outputs.append(F.linear(F.silu(gate_RW) * up_RW, self.down_proj[expert].to(x_SC.dtype)))
                start += count
        outputs.append(x_SC.new_zeros(x_SC.shape[0] - start, x_SC.shape[1]))
        return torch.cat(outputs)


# torch._grouped_mm as an opaque custom op: torch.compile traces it by its output shape alone.
# (Traced natively, its fake kernel accepts bf16 only, so an fp32 block would not compile.)
@torch.library.custom_op("frugal_lm::grouped_mm", mutates_args=())
def grouped_mm(x_SK: torch.Tensor, weight_EKN: torch.Tensor, offsets_E: torch.Tensor) -> torch.Tensor:
    """Rows offsets[e-1]:offsets[e] of x times weight[e]; rows past offsets[-1] are left unset."""
    return torch._grouped_mm(x_SK, weight_EKN, offs=offsets_E)


@grouped_mm.register_fake
def _(x_SK, weight_EKN, offsets_E):
    return x_SK.new_empty(x_SK.shape[0], weight_EKN.shape[-1])


@torch.library.custom_op("frugal_lm::grouped_mm_backward", mutates_args=())
def grouped_mm_backward(
    x_SK: torch.Tensor, weight_EKN: torch.Tensor, offsets_E: torch.Tensor, grad_SN: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    grad_x_SK = torch._grouped_mm(grad_SN, weight_EKN.transpose(-2, -1), offs=offsets_E)
    grad_weight_EKN = torch._grouped_mm(x_SK.transpose(0, 1), grad_SN, offs=offsets_E)  # an empty group: zeros
    return grad_x_SK, grad_weight_EKN


@grouped_mm_backward.register_fake
def _(x_SK, weight_EKN, offsets_E, grad_SN):
    return torch.empty_like(x_SK), weight_EKN.new_empty(weight_EKN.shape)


def _grouped_mm_setup_context(ctx, inputs, output) -> None:
    x_SK, weight_EKN, offsets_E = inputs
    ctx.save_for_backward(x_SK, weight_EKN, offsets_E)


def _grouped_mm_backward(ctx, grad_SN):
    x_SK, weight_EKN, offsets_E = ctx.saved_tensors
    grad_x_SK, grad_weight_EKN = grouped_mm_backward(x_SK, weight_EKN, offsets_E, grad_SN.contiguous())
    return grad_x_SK, grad_weight_EKN, None


grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup_context)


def grouped_mm_supported(x_SC: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether `torch._grouped_mm` runs these operands, forward and backward: a CPU kernel (torch
    >= 2.9) or CUDA bf16 on sm80+, every row stride a multiple of 16 bytes, and (checked in
    eager mode only, where pointers exist) 16-byte-aligned storage."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x_SC.device.type == "cuda":
        if x_SC.dtype != torch.bfloat16 or _cuda_capability(x_SC.device.index or 0) < (8, 0):
            return False
    elif x_SC.device.type != "cpu":
        return False
    sizes = [x_SC.shape[-1], *(size for weight in weights for size in weight.shape[1:])]
    if any(size * x_SC.element_size() % 16 for size in sizes):
        return False
    if torch.compiler.is_compiling():
        return True
    return all(tensor.data_ptr() % 16 == 0 for tensor in (x_SC, *weights))


@functools.cache
def _cuda_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


RoutingRecord = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""`(layer, tokens_per_expert_E, aux_loss, z_loss, dropped)` of one MoE layer call: the
expert demand of its real tokens, its balance losses (with gradients when the call had
them) and the assignments its capacity dropped."""


class RoutingRecorder:
    """Collects each MoE layer call's routing statistics during a forward pass (training)."""

    def __init__(self, layers: list[MixtureOfExperts]):
        self.moe_layers = layers
        self.records: list[RoutingRecord] = []

    @property
    def layers(self) -> int:
        return len(self.moe_layers)

    def take(self) -> list[RoutingRecord]:
        """The records since the last `take`; the layers let go of their last statistics (an
        activation-checkpointed block, recomputed in the backward pass, leaves fresh ones)."""
        records, self.records = self.records, []
        for layer in self.moe_layers:
            layer.routing = None
        return records


class MixtureOfExperts(nn.Module):
    """The MoE FFN of one block: routed experts plus optional always-on shared experts."""

    def __init__(self, config: ModelConfig, shared_experts: nn.Module | None):
        super().__init__()
        moe = config.moe
        self.num_experts, self.top_k = moe.experts, moe.top_k
        self.capacity_factor, self.aux_loss_scope = moe.capacity_factor, moe.aux_loss_scope
        self.gate = Router(config)
        self.experts = Experts(config)
        self.shared_experts = shared_experts
        self.recorder: RoutingRecorder | None = None
        self.layer_id = 0
        self.routing: tuple[torch.Tensor, ...] | None = None
        """The last call's statistics while a recorder is attached, until `report`."""
        self.dispatcher: Callable[[Experts, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        """Runs the experts instead of calling them here (expert parallelism sets one:
        `dispatcher(experts, x_SC, tokens_per_expert_E)`, the arguments of `Experts.forward`)."""

    def reset_parameters(self, init: Callable[[torch.Tensor, float], object]) -> None:
        """Per-fan-in init of the router and the stacked experts (shared experts are Linears)."""
        init(self.gate.weight, 1.0 / math.sqrt(self.gate.weight.shape[-1]))
        for weight, fan_in in self.experts.fan_in_weights():
            init(weight, 1.0 / math.sqrt(fan_in))
        self.gate.e_score_correction_bias.zero_()

    def forward(self, x_BTC: torch.Tensor, segments_BT: torch.Tensor | None = None) -> torch.Tensor:
        """`segments_BT`: the batch's example ids, -1 on padding (None: every token is real)."""
        B, T, C = x_BTC.shape
        x_NC = x_BTC.reshape(B * T, C)
        logits_NE, scores_NE, chosen_NK, weights_NK = self.gate(x_NC)
        E = self.num_experts
        real_N = None if segments_BT is None else segments_BT.reshape(-1) >= 0
        experts_NK = chosen_NK if real_N is None else chosen_NK.masked_fill(~real_N[:, None], E)
        if self.capacity_factor is not None and self.training:
            experts_NK = self._drop_over_capacity(experts_NK, real_N)
        routed_NC = self._dispatch(x_NC, experts_NK, weights_NK)
        if self.recorder is not None:
            self.routing = self._statistics(logits_NE, scores_NE, chosen_NK, experts_NK, real_N, segments_BT)
        out_BTC = routed_NC.to(x_BTC.dtype).view(B, T, C)
        return out_BTC if self.shared_experts is None else out_BTC + self.shared_experts(x_BTC)

    def _dispatch(self, x_NC: torch.Tensor, experts_NK: torch.Tensor, weights_NK: torch.Tensor) -> torch.Tensor:
        """Sort the assignments by expert, run the experts, weight and sum over k in fp32."""
        N, K = experts_NK.shape
        experts_S = experts_NK.reshape(-1)
        order_S = torch.argsort(experts_S, stable=True)
        counts_E = _counts(experts_S, self.num_experts + 1)[:-1]  # the sentinel's are last
        # index_select / index_add rather than advanced indexing: their backward passes are a
        # scatter-add and a gather, where indexing's is an accumulating index_put (slow on CPUs).
        token_S = order_S // K
        x_SC = x_NC.index_select(0, token_S)
        out_SC = (
            self.experts(x_SC, counts_E) if self.dispatcher is None else self.dispatcher(self.experts, x_SC, counts_E)
        )
        weights_S = weights_NK.reshape(-1).masked_fill(experts_S == self.num_experts, 0).index_select(0, order_S)
        weighted_SC = out_SC.float() * weights_S[:, None]
        return x_NC.new_zeros(N, x_NC.shape[-1], dtype=torch.float32).index_add_(0, token_S, weighted_SC)

    def _drop_over_capacity(self, experts_NK: torch.Tensor, real_N: torch.Tensor | None) -> torch.Tensor:
        """Assignments past an expert's capacity, in token order, go to the sentinel expert."""
        N, K = experts_NK.shape
        E = self.num_experts
        tokens = torch.full((), N, device=experts_NK.device) if real_N is None else real_N.sum()
        capacity = torch.ceil(self.capacity_factor * tokens * K / E)
        experts_S = experts_NK.reshape(-1)
        order_S = torch.argsort(experts_S, stable=True)
        counts = _counts(experts_S, E + 1)
        starts = torch.cumsum(counts, 0) - counts
        rank_sorted_S = torch.arange(N * K, device=experts_S.device) - starts[experts_S[order_S]]
        rank_S = torch.empty_like(rank_sorted_S).scatter_(0, order_S, rank_sorted_S)
        return experts_S.masked_fill(rank_S >= capacity, E).view(N, K)

    def report(self) -> None:
        """Hand the last call's statistics to the recorder (eager code: `Stack` calls it)."""
        if self.recorder is not None and self.routing is not None:
            self.recorder.records.append((self.layer_id, *self.routing))
            self.routing = None

    def _statistics(self, logits_NE, scores_NE, chosen_NK, experts_NK, real_N, segments_BT) -> tuple:
        E, K = self.num_experts, self.top_k
        real_N1 = torch.ones_like(logits_NE[:, :1]) if real_N is None else real_N[:, None].float()
        demand_E = _counts(chosen_NK.masked_fill(real_N1 == 0, E).reshape(-1), E + 1)[:-1].float()
        served = (experts_NK < E).sum()
        dropped = real_N1.sum() * K - served
        z_loss = (torch.logsumexp(logits_NE, -1) ** 2 * real_N1[:, 0]).sum() / real_N1.sum().clamp(min=1)
        probs_NE = scores_NE if self.gate.score == "softmax" else scores_NE / scores_NE.sum(-1, keepdim=True)
        if self.aux_loss_scope == "sequence" and segments_BT is not None:
            aux_loss = _sequence_aux_loss(probs_NE, chosen_NK, segments_BT, K)
        else:
            load_E = demand_E / (real_N1.sum() * K).clamp(min=1)
            importance_E = (probs_NE * real_N1).sum(0) / real_N1.sum().clamp(min=1)
            aux_loss = E * (load_E * importance_E).sum()
        return demand_E, aux_loss, z_loss, dropped.float()


def _counts(experts_S: torch.Tensor, bins: int) -> torch.Tensor:
    """Assignments per expert id, at a static size (bincount's size would depend on the data)."""
    return torch.zeros(bins, dtype=torch.int64, device=experts_S.device).scatter_add_(
        0, experts_S, torch.ones_like(experts_S)
    )


def _sequence_aux_loss(probs_NE, chosen_NK, segments_BT, K: int) -> torch.Tensor:
    """DeepSeek-V3's sequence-wise balance loss, each packed example a sequence: E * sum_e of
    (its share of the example's assignments) x (its mean score there), averaged over examples."""
    B, T = segments_BT.shape
    E = probs_NE.shape[-1]
    segments_N = segments_BT.reshape(-1)
    # Each example's slot: row * T + its index in the row; padding goes to one extra slot, B * T.
    row_N = torch.arange(B, device=segments_N.device).repeat_interleave(T)
    slot_N = torch.where(segments_N >= 0, row_N * T + segments_N.clamp(min=0), B * T)
    slots = B * T + 1
    lengths_X = torch.zeros(slots, device=probs_NE.device).index_add_(0, slot_N, torch.ones_like(probs_NE[:, 0]))
    flat_S = (slot_N[:, None] * E + chosen_NK).reshape(-1)
    counts_XE = torch.zeros(slots * E, device=probs_NE.device).scatter_add_(
        0, flat_S, torch.ones_like(flat_S, dtype=probs_NE.dtype)
    )
    importance_XE = torch.zeros(slots, E, device=probs_NE.device).index_add_(0, slot_N, probs_NE)
    lengths_X = lengths_X[:-1].clamp(min=1)
    share_XE = counts_XE.view(slots, E)[:-1] / (K * lengths_X[:, None])
    per_example_X = E * (share_XE * importance_XE[:-1] / lengths_X[:, None]).sum(-1)
    present_X = counts_XE.view(slots, E)[:-1].sum(-1) > 0
    return (per_example_X * present_X).sum() / present_X.sum().clamp(min=1)


def moe_layers(model: nn.Module) -> list[MixtureOfExperts]:
    """The model's MoE FFNs in module order (their `layer_id` order once a recorder is attached)."""
    return [module for module in model.modules() if isinstance(module, MixtureOfExperts)]


def attach_recorder(model: nn.Module) -> RoutingRecorder | None:
    """Number the MoE layers and have them report routing statistics to one recorder (None
    for a dense model). Training attaches one; inference computes no statistics."""
    layers = moe_layers(model)
    if not layers:
        return None
    recorder = RoutingRecorder(layers)
    for index, layer in enumerate(layers):
        layer.recorder, layer.layer_id = recorder, index
    return recorder
