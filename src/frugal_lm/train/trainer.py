"""Training a run: one code path for one CPU, one GPU, or `torchrun` with FSDP2 (and expert
parallelism for a mixture of experts, `expert_parallel=N`: train/expert_parallel.py).

`train` runs named phases: build the model and optimizer (`_build`: initialised from `seed`
or `init_from`, compiled, checkpointed and sharded as the config says), restore a
checkpoint (`resume=true`, train/resume.py), plan the run (the budget planner's prediction,
printed and compared with the actual run at the end), then hand over to
`loop.TrainingLoop`, which runs the steps (train/step.py), logs, validates and checkpoints.

Fine-tuning (`init_from=DIR`) takes DIR's architecture and vocabulary from its config.yaml
(an imported model needs no restated sizes; model.* keys set to other than the preset's
value still win) and refuses data made with a tokenizer other than DIR's.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from frugal_lm.config import ARCHITECTURE_KEYS, ModelConfig, RunConfig, validate
from frugal_lm.data.loader import MixedDataset, PackedLoader
from frugal_lm.data.tokenizer import encodes_alike
from frugal_lm.errors import FrugalError
from frugal_lm.files import check_output_dir, record_output
from frugal_lm.model import build_model
from frugal_lm.plan.budget import DataProfile, TrainingPlan, plan_run, read_data_profile
from frugal_lm.plan.devices import Device, device_running_here
from frugal_lm.plan.report import duration
from frugal_lm.runtime import check_can_compile, compiles, resolve_device, uses_bf16
from frugal_lm.train.checkpoint import Checkpointer, TrainerState, checkpoint_of, latest_checkpoint
from frugal_lm.train.distributed import Distributed, init_distributed, shard_model, shutdown
from frugal_lm.train.expert_parallel import check_expert_parallel, shard_experts
from frugal_lm.train.loggers import check_available
from frugal_lm.train.loop import TrainingLoop, steps_within
from frugal_lm.train.optimizer import AdamATan2
from frugal_lm.train.resume import resume
from frugal_lm.train.step import TrainStep, checkpoint_activations, compile_blocks
from frugal_lm.train.validate import Validator
from frugal_lm.train.weights import load_weights, read_model_config

__all__ = ["TrainResult", "steps_within", "train"]

UNBOUNDED_EPOCHS = 1 << 30


TRAIN_COMMAND = "frugal train"
RUN_ENTRIES = (
    "config.yaml",
    "checkpoints",
    "metrics.jsonl",
    "samples.jsonl",
    "plan_vs_actual.json",
    "train.log",  # the demo's, where it sends the run's progress
    "report",
    "tensorboard",
    "wandb",
)
"""What a run may write at the top of its directory (its output marker lists them)."""


def claim_run_dir(run_dir: Path) -> None:
    """Refuse a fresh run's out= when it holds anything a run did not write (one line, nothing
    changed); else create it and mark it as a run's. A run killed before its first
    checkpoint left its own folder, which stays reusable."""
    check_output_dir(run_dir, TRAIN_COMMAND, whole=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_output(run_dir, TRAIN_COMMAND, RUN_ENTRIES)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    last_loss: float
    checkpoint: Path | None


def _model_config_for(config: RunConfig, dataset: MixedDataset) -> ModelConfig:
    """The configured architecture on the data's vocabulary; with init_from=DIR (DIR has a
    config.yaml), DIR's architecture and vocabulary except the model.* keys the user gave
    (`RunConfig.model_keys_given`), and the data must use DIR's tokenizer."""
    if config.init_from is None:
        return config.model.model_copy(update={"vocab_size": dataset.vocab_size})
    init_from = Path(config.init_from)
    if (init_from / "config.json").is_file() and not (init_from / "config.yaml").is_file():
        raise FrugalError(
            f"init_from={init_from} is a transformers model directory; convert it with "
            f"`frugal import hf --hf-dir {init_from} --out DIR`, then use init_from=DIR"
        )
    source = checkpoint_of(init_from)
    if not (source / "config.yaml").is_file():
        return config.model.model_copy(update={"vocab_size": dataset.vocab_size})
    saved = read_model_config(source)
    if "net" in config.model_keys_given and config.net != saved.net:
        raise FrugalError(f"net={config.net}, but init_from={config.init_from} holds a net={saved.net} model")
    # DIR's architecture, except the keys the user set: an imported model fine-tunes as it is.
    inherited = {key: getattr(saved, key) for key in ARCHITECTURE_KEYS if key not in config.model_keys_given}
    model_config = validate(
        ModelConfig,
        {**config.model.model_dump(), **inherited, "vocab_size": saved.vocab_size},
        f"model.* keys with init_from={init_from}",
    )
    saved_tokenizer = source / "tokenizer" / "tokenizer.json"
    data_tokenizer = dataset.directory / "tokenizer" / "tokenizer.json"
    if saved_tokenizer.is_file() and data_tokenizer.is_file():
        if not encodes_alike(saved_tokenizer, data_tokenizer):
            raise FrugalError(
                f"the data's tokenizer ({data_tokenizer.parent}) differs from init_from's "
                f"({saved_tokenizer.parent}); tokenize the data with `frugal data tokenize "
                f"--tokenizer {saved_tokenizer.parent}`"
            )
    elif dataset.vocab_size > saved.vocab_size:
        raise FrugalError(
            f"the data's vocabulary ({dataset.vocab_size}) is larger than init_from's model ({saved.vocab_size})"
        )
    return model_config


def _describe(config: RunConfig, distributed: Distributed, device: torch.device, parameters: int) -> str:
    environment = (
        f"# frugal-lm on {platform.node()}: python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"device {device}, world size {distributed.world_size}, {parameters:,} parameters"
    )
    return environment + "\n" + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def train(config: RunConfig) -> TrainResult:
    if config.data is None or config.out is None:
        raise FrugalError("frugal train needs data=DIR (a mixed training set) and out=RUN_DIR")
    run_dir = Path(config.out)
    if not config.resume:
        if latest_checkpoint(run_dir) is not None:
            raise FrugalError(f"{run_dir} already holds a run; pass resume=true to continue it, or choose another out=")
        check_output_dir(run_dir, TRAIN_COMMAND, whole=False)  # every rank, before any writes (`claim_run_dir`)
    check_available(config.loggers)
    device = resolve_device(config.device)
    distributed = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)
    try:
        return _train(config, run_dir, device, distributed)
    finally:
        shutdown(distributed)


def _build(config: RunConfig, device: torch.device, distributed: Distributed, bf16: bool, compiled: bool):
    """Model (initialised from `seed`, or init_from's weights) and optimizer, compiled,
    checkpointed and sharded as the config says (experts over `expert_parallel` ranks, the
    rest by FSDP2), and the expert parallelism (None without)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    if config.init_from is not None and not config.resume:
        model.load_state_dict(load_weights(config.init_from, config.model), strict=True)
    if config.activation_checkpointing:
        checkpoint_activations(model)
    if compiled:
        check_can_compile(device)
        compile_blocks(model)
    expert_parallel = shard_experts(model, config, distributed, device)
    if distributed.world_size > 1:
        model = shard_model(model, bf16, ignored=set(expert_parallel.parameters) if expert_parallel else None)
    optimizer = AdamATan2(
        model.parameters(),
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        ema_decay=config.ema_decay,
    )
    return model, optimizer, expert_parallel


def _plan(
    config: RunConfig,
    total_steps: int,
    progress: TrainerState,
    distributed: Distributed,
    device: torch.device,
    bf16: bool,
    data_profile: DataProfile,
) -> tuple[TrainingPlan, Device]:
    hardware = device_running_here(device.type, device.index or 0, bf16)
    plan = plan_run(
        config.model,
        config.preset,
        float(total_steps * config.batch_tokens * distributed.world_size),
        distributed.world_size,
        hardware,
        price_per_gpu_hour=config.price_per_device_hour,
        label_fraction=data_profile.label_fraction,
        lengths=data_profile.lengths,
        batch_tokens=config.batch_tokens,
        expert_parallel=config.expert_parallel,
        activation_checkpointing=config.activation_checkpointing,
    )
    if distributed.is_main:
        print(
            f"plan: {total_steps - progress.step:,} steps, ~{plan.processed_tokens:,.0f} token slots, "
            f"{plan.flops_per_token / 1e9:.2f} GFLOP/token, ~{duration(plan.wall_hours)} and "
            f"${plan.dollars:.2f} at {plan.mfu:.0%} MFU (plan/flops.py's count) of {hardware.description} "
            f"({hardware.peak_flops / 1e12:.2f} TFLOP/s peak)",
            file=sys.stderr,
        )
    return plan, hardware


def _fit_warmup(config: RunConfig, total_steps: int, distributed: Distributed) -> RunConfig:
    """A warmup longer than a fifth of the run would keep the LR below its peak for most of
    it (the default 100 steps in a 40-step run never reach it): cut it to a tenth, and say so."""
    if config.warmup_steps <= total_steps // 5:
        return config
    warmup = total_steps // 10
    if distributed.is_main:
        print(
            f"note: warmup_steps={config.warmup_steps} is more than a fifth of this run's {total_steps:,} steps; "
            f"warming up over {warmup:,} steps instead",
            file=sys.stderr,
        )
    return config.model_copy(update={"warmup_steps": warmup})


def _train(config: RunConfig, run_dir: Path, device: torch.device, distributed: Distributed) -> TrainResult:
    dataset = MixedDataset(config.data)
    config = config.model_copy(update={"model": _model_config_for(config, dataset)})
    check_expert_parallel(config, distributed.world_size)
    row_len = config.row_len or dataset.max_seq_len
    rows_per_rank = config.batch_tokens // row_len
    if rows_per_rank < 1:
        raise FrugalError(f"batch_tokens={config.batch_tokens} is smaller than one row of {row_len} tokens")
    loader = PackedLoader(
        dataset, row_len, rows_per_rank, distributed.rank, distributed.world_size, config.instruction_loss
    )
    # Without steps=, a run makes the passes the mix was made with (`frugal data mix --epochs`).
    epochs = config.epochs or (UNBOUNDED_EPOCHS if config.steps else dataset.n_epochs)
    total_steps = config.steps or sum(loader.steps_in(epoch) for epoch in range(epochs))
    config = _fit_warmup(config, total_steps, distributed)
    bf16 = uses_bf16(config.precision, device, config.model.hidden_size)
    model, optimizer, expert_parallel = _build(
        config, device, distributed, bf16, compiles(config.compile, device, total_steps)
    )

    checkpointer = Checkpointer(run_dir, config.keep_checkpoints, dataset.directory / "tokenizer")
    progress = TrainerState()
    if config.resume:
        progress = resume(config, checkpointer, model, optimizer, dataset, distributed)
    progress.world_size = distributed.world_size  # checkpoints from here on record this session's ranks
    checkpointer.remove_partial()
    if distributed.is_main:
        if config.resume:  # a run's own folder (it holds the checkpoint): marked, older runs too
            record_output(run_dir, TRAIN_COMMAND, RUN_ENTRIES)
        else:
            claim_run_dir(run_dir)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        print(_describe(config, distributed, device, sum(p.numel() for p in model.parameters())), file=sys.stderr)
    data_profile = read_data_profile(Path(config.data))
    plan, hardware = _plan(config, total_steps, progress, distributed, device, bf16, data_profile)
    validator = (
        Validator(
            config.val_data,
            dataset,
            config.model.vocab_size,
            row_len,
            rows_per_rank,
            distributed,
            config.val_batches,
            config.val_samples,
        )
        if config.val_data is not None
        else None
    )
    loop = TrainingLoop(
        config,
        run_dir,
        distributed,
        dataset,
        loader,
        TrainStep(
            model,
            optimizer,
            distributed,
            bf16,
            config.grad_clip,
            expert_parallel.reduce_gradients if expert_parallel else None,
        ),
        hardware,
        checkpointer,
        data_profile,
        validator,
    )
    start = progress.model_copy()
    last_saved = loop.run(progress, total_steps, epochs, device)
    if distributed.is_main and progress.step > start.step:
        _report_plan_vs_actual(run_dir, plan, loop, progress, start, total_steps, config, distributed, hardware)
    return TrainResult(
        run_dir, progress.step, progress.tokens, loop.last_loss, last_saved or latest_checkpoint(run_dir)
    )


def _report_plan_vs_actual(
    run_dir: Path,
    plan: TrainingPlan,
    loop: TrainingLoop,
    progress: TrainerState,
    start: TrainerState,
    total_steps: int,
    config: RunConfig,
    distributed: Distributed,
    hardware: Device,
) -> None:
    elapsed = loop.elapsed
    actual = {
        "wall_hours": elapsed / 3600,
        "tokens_per_second": (progress.tokens - start.tokens) / elapsed,
        "mfu": loop.flops_done / elapsed / (hardware.peak_flops * distributed.world_size),
        "dollars": elapsed / 3600 * distributed.world_size * config.price_per_device_hour,
        "steps": progress.step - start.step,
    }
    fraction = (progress.step - start.step) / max(1, total_steps)
    predicted = {
        "wall_hours": plan.wall_hours * fraction,
        "tokens_per_second": plan.tokens_per_second,
        "mfu": plan.mfu,
        "dollars": plan.dollars * fraction,
    }
    (run_dir / "plan_vs_actual.json").write_text(json.dumps({"plan": predicted, "actual": actual}, indent=1))
    print(
        "plan vs actual: " + ", ".join(f"{key} {predicted[key]:.4g} / {actual[key]:.4g}" for key in predicted),
        file=sys.stderr,
    )
