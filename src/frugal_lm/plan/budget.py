"""Time, dollars and memory of a training run, forward ("what does this cost") and
reverse ("what can I train for $X in T hours", "how many tokens does $X buy this model").
A mixture of experts is planned from its config like any model: its FLOPs count the active
parameters, its memory the expert-parallel sharding, and its all-to-all traffic is reported.

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
from frugal_lm.plan.all_to_all import AllToAll, all_to_all_per_step
from frugal_lm.plan.defaults import DEFAULT_BATCH_TOKENS, DEFAULT_LABEL_FRACTION, DEFAULT_MEAN_EXAMPLE_LEN, DEFAULT_MFU
from frugal_lm.plan.devices import Device
from frugal_lm.plan.flops import LengthProfile, dense_transformer_flops_per_token, flop_breakdown, mean_bp_steps
from frugal_lm.plan.memory import MemoryEstimate, estimate_memory
from frugal_lm.plan.parameters import ParameterBreakdown

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
    active_parameters: int
    """Parameters one token runs through (= parameters for a dense model)."""
    expert_parallel: int = 1
    all_to_all: AllToAll | None = None
    """Expert-parallel traffic per device per step; None for a dense model."""
    step_seconds: float = 0.0
    """One step's compute time at the plan's MFU (batch tokens per device x FLOPs per token)."""
    warnings: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.device_memory_bytes

    def to_dict(self) -> dict:
        data = asdict(self)
        data["memory"] = {**asdict(self.memory), "total": self.memory.total}
        if self.all_to_all is not None:
            data["all_to_all"]["bytes"] = self.all_to_all.bytes
        data["fits"] = self.fits
        return data


def _check_expert_parallel(config: ModelConfig, gpus: int, expert_parallel: int) -> None:
    if expert_parallel < 1:
        raise FrugalError(f"expert_parallel must be >= 1, got {expert_parallel}")
    if expert_parallel == 1:
        return
    if not config.moe.enabled:
        raise FrugalError(f"expert_parallel={expert_parallel} needs a model with experts (model.moe.experts)")
    if config.moe.experts % expert_parallel:
        raise FrugalError(f"expert_parallel={expert_parallel} must divide model.moe.experts ({config.moe.experts})")
    if gpus % expert_parallel:
        raise FrugalError(f"expert_parallel={expert_parallel} must divide the number of GPUs ({gpus})")


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
    expert_parallel: int = 1,
    activation_checkpointing: bool = False,
) -> TrainingPlan:
    """Cost of training `config` on `processed_tokens` with `gpus` x `device`, the routed
    experts of a mixture split over `expert_parallel` of them."""
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
    _check_expert_parallel(config, gpus, expert_parallel)
    lengths = lengths or default_lengths(config)
    steps = max(1, int(processed_tokens // (gpus * batch_tokens)))
    bp_steps = mean_bp_steps(config, min(steps, 100_000))
    per_token = flop_breakdown(config, bp_steps, label_fraction, lengths).total
    parameters = ParameterBreakdown.of(config)
    tokens_per_second = gpus * device.peak_flops * mfu / per_token
    wall_hours = processed_tokens / tokens_per_second / SECONDS_PER_HOUR
    compute_bytes = 4 if device.name == "cpu" else 2
    memory = estimate_memory(
        config,
        batch_tokens,
        gpus,
        round(max(bp_steps, config.bp_steps_end)),
        label_fraction,
        compute_bytes=compute_bytes,
        sharded=gpus > 1,
        expert_parallel=expert_parallel,
        activation_checkpointing=activation_checkpointing,
    )
    traffic = None
    if config.moe.enabled:
        traffic = all_to_all_per_step(config, batch_tokens, expert_parallel, device, bp_steps, compute_bytes)
    plan = TrainingPlan(
        preset=preset,
        net=config.net,
        parameters=parameters.total,
        gpus=gpus,
        device=device.name,
        processed_tokens=processed_tokens,
        mean_bp_steps=bp_steps,
        flops_per_token=per_token,
        total_flops=per_token * processed_tokens,
        dense_6nd_flops=dense_transformer_flops_per_token(parameters.active) * processed_tokens,
        mfu=mfu,
        tokens_per_second=tokens_per_second,
        gpu_hours=wall_hours * gpus,
        wall_hours=wall_hours,
        price_per_gpu_hour=price_per_gpu_hour,
        dollars=wall_hours * gpus * price_per_gpu_hour,
        memory=memory,
        device_memory_bytes=device.memory_bytes,
        active_parameters=parameters.active,
        expert_parallel=expert_parallel,
        all_to_all=traffic,
        step_seconds=batch_tokens * per_token / (device.peak_flops * mfu),
    )
    _add_warnings(plan, device, config)
    return plan


def _add_warnings(plan: TrainingPlan, device: Device, config: ModelConfig) -> None:
    if not plan.fits:
        hint = "use more GPUs (FSDP shards the model state) or fewer batch tokens per device"
        if config.moe.enabled and plan.gpus > 1:
            hint = (
                "more GPUs shard only what FSDP holds: every block gathered at once, and with "
                "expert_parallel each rank's E/expert_parallel experts whole (train/expert_parallel.py)"
            )
        plan.warnings.append(
            f"will not fit: ~{plan.memory.total / 1e9:.1f} GB per device > {device.memory_bytes / 1e9:.0f} GB on "
            f"{device.name}; {hint}"
        )
    traffic = plan.all_to_all
    if traffic is not None and traffic.seconds > 0.5 * plan.step_seconds:
        plan.warnings.append(
            f"the all-to-all ({traffic.seconds:.2g} s per step) is more than half a step's compute "
            f"({plan.step_seconds:.2g} s): keep expert_parallel within a node or raise the batch tokens"
        )


def budget_run(
    config: ModelConfig,
    preset: str,
    budget_usd: float,
    gpus: int,
    device: Device,
    mfu: float = DEFAULT_MFU,
    price_per_gpu_hour: float = 2.0,
    label_fraction: float = DEFAULT_LABEL_FRACTION,
    lengths: LengthProfile | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    expert_parallel: int = 1,
    activation_checkpointing: bool = False,
) -> TrainingPlan:
    """The plan that spends `budget_usd` training `config` on `gpus` x `device`: as many
    tokens as the money buys (cost is linear in tokens but for the HRM's bp_steps warmup,
    whose average moves with the step count: two refinements settle it)."""
    if budget_usd <= 0 or price_per_gpu_hour <= 0:
        raise FrugalError("--budget-usd and --price must be > 0")
    per_token = flop_breakdown(config, config.bp_steps_end, label_fraction, lengths or default_lengths(config)).total
    tokens = budget_usd / price_per_gpu_hour * SECONDS_PER_HOUR * device.peak_flops * mfu / per_token
    plan = None
    for _ in range(3):
        plan = plan_run(
            config,
            preset,
            tokens,
            gpus,
            device,
            mfu,
            price_per_gpu_hour,
            label_fraction,
            lengths,
            batch_tokens,
            expert_parallel,
            activation_checkpointing,
        )
        tokens *= budget_usd / plan.dollars
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
    bp_steps: int


def affordable_runs(
    budget_usd: float,
    hours: float,
    device: Device,
    net: str = "hrm",
    mfu: float = DEFAULT_MFU,
    price_per_gpu_hour: float = 2.0,
    presets: tuple[str, ...] = ("B", "L", "XL", "XXL"),
    label_fraction: float = DEFAULT_LABEL_FRACTION,
    overrides: dict | None = None,
) -> list[Affordable]:
    """For each preset (with the model `overrides`): GPUs the budget rents for `hours`, and
    tokens they process."""
    if budget_usd <= 0 or hours <= 0 or price_per_gpu_hour <= 0:
        raise FrugalError("--budget-usd, --hours and --price must be > 0")
    gpus = int(budget_usd // (price_per_gpu_hour * hours))
    if gpus < 1:
        raise FrugalError(
            f"${budget_usd:,.0f} does not rent one {device.name} for {hours:g} h at ${price_per_gpu_hour:g}/GPU-hour"
        )
    answers = []
    for preset in presets:
        config = load_model_config(preset, net, **(overrides or {}))
        per_token = flop_breakdown(config, config.bp_steps_end, label_fraction, default_lengths(config)).total
        tokens = gpus * device.peak_flops * mfu * hours * SECONDS_PER_HOUR / per_token
        parameters = ParameterBreakdown.of(config).total
        answers.append(
            Affordable(
                preset,
                parameters,
                gpus,
                tokens,
                tokens / parameters,
                gpus * hours * price_per_gpu_hour,
                min(config.bp_steps_end, config.stack_passes),
            )
        )
    return answers
