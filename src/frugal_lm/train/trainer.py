"""The training loop: one code path for one CPU, one GPU, or `torchrun` with FSDP2.

`train` runs named phases: build the model and optimizer, restore a checkpoint
(`resume=true`), plan the run, then loop over batches: one `TrainStep` (train/step.py:
forward at the run's precision, loss normalised by the *global* label-token count, clip,
AdamATan2 + EMA), one metrics line to `RUN_DIR/metrics.jsonl`, and a checkpoint every
`checkpoint_every` steps and at the end. A non-finite loss stops the run before the bad
update is applied or checkpointed.

Resume restores model, optimizer+EMA, RNG and the loader position from the latest complete
checkpoint and drops metrics lines logged after it, so the metrics file of a killed-and-
resumed run equals that of an uninterrupted one. It refuses other data or other settings
that shape the run (`resume.check_resumable`); only the length of the run and how it is run
(device, precision, budgets, validation, logging, checkpointing) may change.

Fine-tuning (`init_from=DIR`) takes DIR's architecture and vocabulary from its config.yaml
(an imported model needs no restated sizes; model.* keys set to other than the preset's
value still win) and refuses data made with a tokenizer other than DIR's.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from frugal_lm.config import ARCHITECTURE_KEYS, ModelConfig, RunConfig, validate
from frugal_lm.data.batch import PackedBatch
from frugal_lm.data.loader import MixedDataset, PackedLoader
from frugal_lm.data.tokenizer import encodes_alike
from frugal_lm.errors import FrugalError
from frugal_lm.model import bp_steps_at, build_model
from frugal_lm.plan.budget import TrainingPlan, plan_run, read_data_profile
from frugal_lm.plan.devices import Device, device_running_here
from frugal_lm.plan.flops import training_flops_per_token
from frugal_lm.plan.report import duration
from frugal_lm.runtime import check_can_compile, compiles, resolve_device, uses_bf16
from frugal_lm.train.checkpoint import Checkpointer, TrainerState, checkpoint_of, latest_checkpoint
from frugal_lm.train.distributed import Distributed, init_distributed, shard_model, shutdown
from frugal_lm.train.loggers import MetricsLogger, check_available
from frugal_lm.train.optimizer import AdamATan2
from frugal_lm.train.resume import data_fingerprint, resume
from frugal_lm.train.schedules import learning_rate
from frugal_lm.train.step import StepResult, TrainStep, checkpoint_activations, compile_blocks
from frugal_lm.train.validate import Validator, log_samples
from frugal_lm.train.weights import load_weights, read_model_config

__all__ = ["TrainResult", "steps_within", "train"]

UNBOUNDED_EPOCHS = 1 << 30


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


def steps_within(time_limit_s: float, elapsed_s: float, seconds_per_step: float, step: int) -> int:
    """The run's total step count such that its remaining steps, at `seconds_per_step`, end
    by `time_limit_s` (`time_limit_s=`: the schedule is stretched or squeezed to the clock
    and finishes its cosine, whatever the machine's speed does meanwhile)."""
    return step + max(0, math.floor((time_limit_s - elapsed_s) / max(seconds_per_step, 1e-9)))


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
    if not config.resume and latest_checkpoint(run_dir) is not None:
        raise FrugalError(f"{run_dir} already holds a run; pass resume=true to continue it, or choose another out=")
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
    checkpointed and sharded as the config says."""
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    if config.init_from is not None and not config.resume:
        model.load_state_dict(load_weights(config.init_from, config.model), strict=True)
    if config.activation_checkpointing:
        checkpoint_activations(model)
    if compiled:
        check_can_compile(device)
        compile_blocks(model)
    if distributed.world_size > 1:
        model = shard_model(model, bf16)
    optimizer = AdamATan2(
        model.parameters(),
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        ema_decay=config.ema_decay,
    )
    return model, optimizer


def _plan(
    config: RunConfig,
    total_steps: int,
    progress: TrainerState,
    distributed: Distributed,
    device: torch.device,
    bf16: bool,
) -> tuple[TrainingPlan, Device]:
    data_profile = read_data_profile(Path(config.data))
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


def _check_token_ids(batch: PackedBatch, vocab_size: int, dataset: MixedDataset) -> None:
    largest = int(batch.input_ids.max()) if batch.input_ids.numel() else 0
    if largest >= vocab_size:
        raise FrugalError(
            f"data={dataset.directory} holds token id {largest}, but the model's vocabulary has "
            f"{vocab_size} ids (its metadata.json vocab_size, or init_from's model); "
            f"tokenize and mix the data again with the model's tokenizer"
        )


def _train(config: RunConfig, run_dir: Path, device: torch.device, distributed: Distributed) -> TrainResult:
    dataset = MixedDataset(config.data)
    config = config.model_copy(update={"model": _model_config_for(config, dataset)})
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
    model, optimizer = _build(config, device, distributed, bf16, compiles(config.compile, device, total_steps))

    checkpointer = Checkpointer(run_dir, config.keep_checkpoints, dataset.directory / "tokenizer")
    progress = TrainerState()
    if config.resume:
        progress = resume(config, checkpointer, model, optimizer, dataset, distributed)
    checkpointer.remove_partial()
    if distributed.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        print(_describe(config, distributed, device, sum(p.numel() for p in model.parameters())), file=sys.stderr)
    plan, hardware = _plan(config, total_steps, progress, distributed, device, bf16)
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
    loop = _Loop(
        config,
        run_dir,
        distributed,
        dataset,
        loader,
        TrainStep(model, optimizer, distributed, bf16, config.grad_clip),
        hardware,
        checkpointer,
        validator,
    )
    start = progress.model_copy()
    last_saved = loop.run(progress, total_steps, epochs, device)
    if distributed.is_main and progress.step > start.step:
        _report_plan_vs_actual(run_dir, plan, loop, progress, start, total_steps, config, distributed, hardware)
    return TrainResult(
        run_dir, progress.step, progress.tokens, loop.last_loss, last_saved or latest_checkpoint(run_dir)
    )


class _Loop:
    """The step loop with its clock, metrics and checkpoints."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        distributed: Distributed,
        dataset: MixedDataset,
        loader: PackedLoader,
        train_step: TrainStep,
        hardware: Device,
        checkpointer: Checkpointer,
        validator: Validator | None = None,
    ):
        self.config, self.run_dir, self.distributed, self.validator = config, run_dir, distributed, validator
        self.checkpointer = checkpointer
        self.dataset, self.loader, self.train_step, self.hardware = dataset, loader, train_step, hardware
        self.data_profile = read_data_profile(Path(config.data))
        self.last_loss, self.flops_done = math.nan, 0.0
        self.clock_origin: tuple[float, int] | None = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.train_step.started

    def run(self, progress: TrainerState, total_steps: int, epochs: int, device: torch.device) -> Path | None:
        config, distributed = self.config, self.distributed
        if distributed.is_main:
            print(f"packing fills {self.loader.plan(progress.loader.epoch).slot_use:.2%} of row slots", file=sys.stderr)
        bar = tqdm(
            total=total_steps,
            initial=progress.step,
            disable=not distributed.is_main,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        self.start_tokens, self.prior_seconds = progress.tokens, progress.train_seconds
        self.train_step.started = time.perf_counter()
        metrics = (
            MetricsLogger(self.run_dir, config.loggers, config.model_dump(mode="json"), config.resume)
            if distributed.is_main
            else None
        )
        last_saved = None
        try:
            for batch, next_state in self.loader.batches(progress.loader, epochs):
                if progress.step >= total_steps:
                    break
                total_steps, record = self._train_one(batch, next_state, progress, total_steps, device, bar)
                if metrics is not None:
                    metrics.log(record)
                bar.update(1)
                if progress.step % config.log_every == 0 or progress.step == total_steps:
                    bar.set_postfix(
                        ep=record["epoch"],
                        loss=f"{record['loss']:.4f}",
                        acc=f"{record['token_accuracy']:.3f}",
                        tok_s=f"{record['tokens_per_second']:,.0f}",
                        mfu=f"{record['mfu']:.1%}",
                        usd=f"{record['dollars']:.3f}",
                    )
                budget_spent = self._budget_spent(progress)
                if self._checkpoint_due(progress, total_steps) or budget_spent:
                    last_saved = self._save(progress)
                if budget_spent:
                    bar.write(
                        f"stopped at step {progress.step:,}: {budget_spent}; checkpoint {last_saved}. "
                        f"To go on, resume=true with a larger budget",
                        file=sys.stderr,
                    )
                    break
        except KeyboardInterrupt:
            if distributed.is_main:
                bar.write(
                    f"interrupted at step {progress.step:,}; the last checkpoint is "
                    f"{latest_checkpoint(self.run_dir) or 'none yet'}; continue with resume=true",
                    file=sys.stderr,
                )
            raise
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        return last_saved

    def _validation_due(self, step: int, total_steps: int) -> bool:
        if self.validator is None:
            return False
        every = self.config.val_every or max(1, total_steps // 10)
        return step % every == 0 or step == total_steps

    def _validate(self, step: int, device: torch.device, bar: tqdm) -> dict[str, float]:
        forward = self.train_step.forward_model()
        scores = self.validator.loss(forward, device)
        samples = self.validator.samples(forward, device, step)
        if self.distributed.is_main:
            log_samples(self.run_dir, samples)
            shown = f"; e.g. {samples[0]['prompt']!r} -> {samples[0]['answer']!r}" if samples else ""
            bar.write(f"step {step:,}: val_loss {scores['val_loss']:.4f}{shown}", file=sys.stderr)
        return scores

    def _budget_spent(self, progress: TrainerState) -> str | None:
        """Which of max_hours / max_dollars this run (all its sessions) has reached, if any.
        Every rank reads the same all-reduced clock, so all stop at the same step."""
        config, hours = self.config, progress.train_seconds / 3600
        dollars = hours * self.distributed.world_size * config.price_per_device_hour
        if config.max_hours is not None and hours >= config.max_hours:
            return f"max_hours={config.max_hours:g} reached ({hours:.2f} h trained)"
        if config.max_dollars is not None and dollars >= config.max_dollars:
            return (
                f"max_dollars={config.max_dollars:g} reached (${dollars:.2f} at ${config.price_per_device_hour:g} "
                f"per device-hour)"
            )
        return None

    def _train_one(
        self, batch, next_state, progress: TrainerState, total_steps: int, device: torch.device, bar: tqdm
    ) -> tuple[int, dict]:
        """One step on `batch`, `progress` moved past it: the (clock-fitted) total steps and its metrics."""
        config = self.config
        _check_token_ids(batch, config.model.vocab_size, self.dataset)
        lr = learning_rate(progress.step, total_steps, config.lr, config.warmup_steps, config.lr_floor)
        bp_steps = bp_steps_at(config.model, progress.step, total_steps)
        result = self.train_step(batch.to(device), lr, bp_steps, n_tokens=batch.n_tokens)
        if not result.applied:
            raise FrugalError(
                f"loss became {result.stats.loss} at step {progress.step + 1}; stopped before applying that update. "
                f"Last good checkpoint: {latest_checkpoint(self.run_dir) or 'none yet'}"
            )
        progress.step += 1
        progress.tokens += int(result.stats.tokens)
        progress.loader = next_state
        progress.train_seconds = self.prior_seconds + float(result.stats.clock_s) / self.distributed.world_size
        total_steps = bar.total = self._fit_to_clock(result, progress.step, total_steps)
        record = self._record(result, progress, lr, bp_steps)
        if self._validation_due(progress.step, total_steps):
            record.update(self._validate(progress.step, device, bar))
        return total_steps, record

    def _fit_to_clock(self, result: StepResult, step: int, total_steps: int) -> int:
        """With time_limit_s, the total step count the clock leaves room for (every rank sees
        the same mean clock, so the same total); the first step's warm-up stays out of it."""
        if self.config.time_limit_s is None:
            return total_steps
        clock = float(result.stats.clock_s) / self.distributed.world_size
        if self.clock_origin is None:
            self.clock_origin = (clock, step)
            return total_steps
        seconds_per_step = (clock - self.clock_origin[0]) / (step - self.clock_origin[1])
        return steps_within(self.config.time_limit_s, clock, seconds_per_step, step)

    def _record(self, result: StepResult, progress: TrainerState, lr: float, bp_steps: int) -> dict:
        stats, world_size = result.stats, self.distributed.world_size
        elapsed = self.elapsed
        self.last_loss = stats.loss
        self.flops_done += int(stats.tokens) * training_flops_per_token(
            self.config.model, bp_steps, self.data_profile.label_fraction, self.data_profile.lengths
        )
        return {
            "step": progress.step,
            "epoch": progress.loader.epoch,
            "loss": stats.loss,
            "slot_use": self.loader.plan(progress.loader.epoch).slot_use,
            "token_accuracy": stats.token_accuracy,
            "exact_accuracy": stats.exact_accuracy,
            "lr": lr,
            "bp_steps": bp_steps,
            "tokens": progress.tokens,
            "grad_norm": result.grad_norm,
            "elapsed_s": round(elapsed, 3),
            "tokens_per_second": (progress.tokens - self.start_tokens) / max(elapsed, 1e-9),
            "mfu": self.flops_done / max(elapsed, 1e-9) / (self.hardware.peak_flops * world_size),
            "dollars": progress.train_seconds / 3600 * world_size * self.config.price_per_device_hour,
        }

    def _checkpoint_due(self, progress: TrainerState, total_steps: int) -> bool:
        every = self.config.checkpoint_every
        return bool(every and progress.step % every == 0) or progress.step == total_steps

    def _save(self, progress: TrainerState) -> Path:
        state = progress.model_copy(update={"loss": self.last_loss, "data_fingerprint": data_fingerprint(self.dataset)})
        return self.checkpointer.save(self.train_step.model, self.train_step.optimizer, state, self.config)


def _report_plan_vs_actual(
    run_dir: Path,
    plan: TrainingPlan,
    loop: _Loop,
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
