"""Time, dollars and memory of a training run, forward ("what does this cost") and
reverse ("what can I train for $X in T hours"), plus MoE parameter arithmetic.

Cost = processed tokens x `training_flops_per_token` / (gpus x peak x MFU). The MFU is
the one free number: it is calibrated on the HRM-Text paper's two published runs (see
`REFERENCE_RUNS`), which both imply about 42% on H100 with our FLOP model; that is the
default. Tokens are *processed* tokens (unique tokens x epochs), the quantity the GPUs
spend FLOPs on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from frugal_lm.config import ModelConfig, load_model_config
from frugal_lm.errors import FrugalError
from frugal_lm.model import count_parameters
from frugal_lm.plan.defaults import DEFAULT_BATCH_TOKENS, DEFAULT_LABEL_FRACTION, DEFAULT_MEAN_EXAMPLE_LEN, DEFAULT_MFU
from frugal_lm.plan.devices import Device
from frugal_lm.plan.flops import LengthProfile, dense_transformer_flops_per_token, flop_breakdown, mean_bp_steps
from frugal_lm.plan.memory import MemoryEstimate, estimate_memory

SECONDS_PER_HOUR = 3600.0


def default_lengths(config: ModelConfig) -> LengthProfile:
    """Assumed example lengths when no data set is given: `DEFAULT_MEAN_EXAMPLE_LEN`, but at
    most half the context (a tiny model with 256-token rows has no 1,024-token examples)."""
    return LengthProfile.assumed(min(DEFAULT_MEAN_EXAMPLE_LEN, config.max_seq_len / 2))


@dataclass(frozen=True)
class ReferenceRun:
    """A published run: the calibration target of the MFU."""

    preset: str
    gpus: int
    hours: float
    dollars: float
    processed_tokens: float
    price_per_gpu_hour: float = 2.0


REFERENCE_RUNS = (
    # HRM-Text (arXiv 2605.20613), 65,536-token vocabulary, 2,048 context. Token counts are
    # not broken down per run in the paper; we take ~60B processed tokens (40B unique,
    # partly repeated over epochs) for both, our stated assumption.
    ReferenceRun("L", gpus=8, hours=50.0, dollars=800.0, processed_tokens=60e9),
    ReferenceRun("XL", gpus=16, hours=46.0, dollars=1472.0, processed_tokens=60e9),
)


@dataclass
class DataProfile:
    """What a mixed training set tells the planner: tokens per epoch, epochs, lengths."""

    tokens_per_epoch: float
    epochs: int
    label_fraction: float
    lengths: LengthProfile


def read_data_profile(directory: Path) -> DataProfile:
    """Read a `frugal data mix` output: `epoch_K/{inst_len,resp_len}.npy` per epoch."""
    epochs = sorted(directory.glob("epoch_*"))
    if not epochs:
        raise FrugalError(f"{directory}: no epoch_K/ folders; expected a `frugal data mix` output")
    try:
        inst = np.load(epochs[0] / "inst_len.npy").astype(np.int64)
        resp = np.load(epochs[0] / "resp_len.npy").astype(np.int64)
    except (OSError, ValueError) as error:
        raise FrugalError(f"{epochs[0]}: cannot read inst_len.npy / resp_len.npy ({error})") from None
    total = inst + resp - 1
    if total.size == 0 or total.sum() <= 0:
        raise FrugalError(f"{epochs[0]}: no examples")
    pairs = inst * inst + (total * (total + 1) - inst * (inst + 1)) // 2
    return DataProfile(
        float(total.sum()),
        len(epochs),
        float(resp.sum() / total.sum()),
        LengthProfile(float(pairs.sum() / total.sum())),
    )


@dataclass
class TrainingPlan:
    preset: str
    net: str
    parameters: int
    gpus: int
    device: str
    processed_tokens: float
    mean_bp_steps: float
    flops_per_token: float
    total_flops: float
    dense_6nd_flops: float
    mfu: float
    tokens_per_second: float
    gpu_hours: float
    wall_hours: float
    price_per_gpu_hour: float
    dollars: float
    memory: MemoryEstimate
    device_memory_bytes: float
    warnings: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.device_memory_bytes

    def to_dict(self) -> dict:
        data = asdict(self)
        data["memory"] = {**asdict(self.memory), "total": self.memory.total}
        data["fits"] = self.fits
        return data


def plan_run(
    config: ModelConfig,
    preset: str,
    processed_tokens: float,
    gpus: int,
    device: Device,
    mfu: float = DEFAULT_MFU,
    price_per_gpu_hour: float = 2.0,
    label_fraction: float = DEFAULT_LABEL_FRACTION,
    lengths: LengthProfile | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> TrainingPlan:
    """Cost of training `config` on `processed_tokens` with `gpus` x `device`."""
    if processed_tokens <= 0:
        raise FrugalError("tokens must be > 0")
    if gpus < 1:
        raise FrugalError("gpus must be >= 1")
    if batch_tokens < 1:
        raise FrugalError("batch tokens per device must be >= 1")
    if not 0 < mfu <= 1:
        raise FrugalError(f"mfu must be within (0, 1], got {mfu}")
    if price_per_gpu_hour < 0:
        raise FrugalError("price must be >= 0")
    lengths = lengths or default_lengths(config)
    steps = max(1, int(processed_tokens // (gpus * batch_tokens)))
    bp_steps = mean_bp_steps(config, min(steps, 100_000))
    per_token = flop_breakdown(config, bp_steps, label_fraction, lengths).total
    total = per_token * processed_tokens
    parameters = count_parameters(config)
    tokens_per_second = gpus * device.peak_flops * mfu / per_token
    wall_hours = processed_tokens / tokens_per_second / SECONDS_PER_HOUR
    memory = estimate_memory(
        config,
        batch_tokens,
        gpus,
        round(max(bp_steps, config.bp_steps_end)),
        label_fraction,
        compute_bytes=4 if device.name == "cpu" else 2,
        sharded=gpus > 1,
    )
    plan = TrainingPlan(
        preset,
        config.net,
        parameters,
        gpus,
        device.name,
        processed_tokens,
        bp_steps,
        per_token,
        total,
        dense_transformer_flops_per_token(parameters) * processed_tokens,
        mfu,
        tokens_per_second,
        wall_hours * gpus,
        wall_hours,
        price_per_gpu_hour,
        wall_hours * gpus * price_per_gpu_hour,
        memory,
        device.memory_bytes,
    )
    if not plan.fits:
        plan.warnings.append(
            f"will not fit: ~{memory.total / 1e9:.1f} GB per device > {device.memory_bytes / 1e9:.0f} GB on "
            f"{device.name}; use more GPUs (FSDP shards the model state) or fewer batch tokens per device"
        )
    return plan


@dataclass
class Affordable:
    """One answer to "what can I train for $X in T hours"."""

    preset: str
    parameters: int
    gpus: int
    processed_tokens: float
    tokens_per_parameter: float
    dollars: float


def affordable_runs(
    budget_usd: float,
    hours: float,
    device: Device,
    net: str = "hrm",
    mfu: float = DEFAULT_MFU,
    price_per_gpu_hour: float = 2.0,
    presets: tuple[str, ...] = ("B", "L", "XL", "XXL"),
    label_fraction: float = DEFAULT_LABEL_FRACTION,
) -> list[Affordable]:
    """For each preset: GPUs the budget rents for `hours`, and tokens they process."""
    if budget_usd <= 0 or hours <= 0 or price_per_gpu_hour <= 0:
        raise FrugalError("--budget-usd, --hours and --price must be > 0")
    gpus = int(budget_usd // (price_per_gpu_hour * hours))
    if gpus < 1:
        raise FrugalError(
            f"${budget_usd:,.0f} does not rent one {device.name} for {hours:g} h at ${price_per_gpu_hour:g}/GPU-hour"
        )
    answers = []
    for preset in presets:
        config = load_model_config(preset, net)
        per_token = flop_breakdown(config, config.bp_steps_end, label_fraction, default_lengths(config)).total
        tokens = gpus * device.peak_flops * mfu * hours * SECONDS_PER_HOUR / per_token
        parameters = count_parameters(config)
        answers.append(
            Affordable(preset, parameters, gpus, tokens, tokens / parameters, gpus * hours * price_per_gpu_hour)
        )
    return answers


@dataclass(frozen=True)
class MoeParameters:
    total: float
    active: float


def moe_parameters(
    total: float, expert_fraction: float, experts: int, top_k: int, shared_experts: int = 0
) -> MoeParameters:
    """Active parameters per token of a mixture of experts.

    `expert_fraction` of the `total` sits in `experts` routed experts (equal size), of which
    `top_k` run per token; `shared_experts` more of the same size always run. The rest
    (attention, embeddings, router) is dense and always active. Compute scales with the
    active parameters, which is why "1T parameters" can be cheap."""
    if not 0.0 <= expert_fraction <= 1.0:
        raise FrugalError("expert_fraction must be within [0, 1]")
    if not 1 <= top_k <= experts:
        raise FrugalError(f"need 1 <= top_k <= experts, got top_k={top_k}, experts={experts}")
    per_expert = total * expert_fraction / (experts + shared_experts)
    active = total * (1 - expert_fraction) + per_expert * (top_k + shared_experts)
    return MoeParameters(total, active)


def dense_training_dollars(
    active_parameters: float, processed_tokens: float, device: Device, mfu: float = 0.4, price_per_gpu_hour: float = 2.0
) -> float:
    """6 N_active D at the given MFU and price: the floor for checking a claimed MoE cost."""
    seconds = 6.0 * active_parameters * processed_tokens / (device.peak_flops * mfu)
    return seconds / SECONDS_PER_HOUR * price_per_gpu_hour
