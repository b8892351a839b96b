"""The step loop of a run: steps, the clock, metrics, validation, budgets and checkpoints.

`train.trainer` builds everything a run needs and hands it to `TrainingLoop.run`, which
trains from the run's position to its last step: each step checks the batch's token ids,
sets the scheduled LR and `bp_steps`, runs one `TrainStep`, logs one metrics line (with the
validation loss where due), and checkpoints every `checkpoint_every` steps, at the end, and
where `max_hours`/`max_dollars` stop the run. With `time_limit_s` the total step count is
refitted to the clock after every step (`steps_within`), so the schedule ends on time.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from frugal_lm.config import RunConfig
from frugal_lm.data.batch import PackedBatch
from frugal_lm.data.loader import MixedDataset, PackedLoader
from frugal_lm.errors import FrugalError
from frugal_lm.model import bp_steps_at
from frugal_lm.plan.budget import DataProfile
from frugal_lm.plan.devices import Device
from frugal_lm.plan.flops import training_flops_per_token
from frugal_lm.train.checkpoint import Checkpointer, TrainerState, latest_checkpoint
from frugal_lm.train.distributed import Distributed
from frugal_lm.train.loggers import MetricsLogger
from frugal_lm.train.moe_balance import CollapseWatch, RoutingStats
from frugal_lm.train.resume import data_fingerprint
from frugal_lm.train.schedules import learning_rate
from frugal_lm.train.step import StepResult, TrainStep
from frugal_lm.train.validate import Validator, log_samples


def steps_within(time_limit_s: float, elapsed_s: float, seconds_per_step: float, step: int) -> int:
    """The run's total step count such that its remaining steps, at `seconds_per_step`, end
    by `time_limit_s` (`time_limit_s=`: the schedule is stretched or squeezed to the clock
    and finishes its cosine, whatever the machine's speed does meanwhile)."""
    return step + max(0, math.floor((time_limit_s - elapsed_s) / max(seconds_per_step, 1e-9)))


def _check_token_ids(batch: PackedBatch, vocab_size: int, dataset: MixedDataset) -> None:
    largest = int(batch.input_ids.max()) if batch.input_ids.numel() else 0
    if largest >= vocab_size:
        raise FrugalError(
            f"data={dataset.directory} holds token id {largest}, but the model's vocabulary has "
            f"{vocab_size} ids (its metadata.json vocab_size, or init_from's model); "
            f"tokenize and mix the data again with the model's tokenizer"
        )


class TrainingLoop:
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
        data_profile: DataProfile,
        validator: Validator | None = None,
    ):
        self.config, self.run_dir, self.distributed, self.validator = config, run_dir, distributed, validator
        self.checkpointer = checkpointer
        self.dataset, self.loader, self.train_step, self.hardware = dataset, loader, train_step, hardware
        self.data_profile = data_profile
        self.data_fingerprint = data_fingerprint(dataset)  # saved with every checkpoint; read once
        self.last_loss, self.flops_done = math.nan, 0.0
        self.collapse_watch = CollapseWatch(config.model.moe) if config.model.moe.enabled else None
        self.clock_origin: tuple[float, int] | None = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

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
        self.started = time.perf_counter()
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
        result = self.train_step(batch.to(device), lr, bp_steps, batch.n_tokens, time.perf_counter() - self.started)
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
        if result.routing is not None:
            record.update(self._routing_metrics(result.routing, progress.step))
            warning = self.collapse_watch.observe(result.routing)
            if warning and self.distributed.is_main:
                bar.write(warning, file=sys.stderr)
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

    def _routing_metrics(self, routing: RoutingStats, step: int) -> dict:
        """A mixture of experts' balance per step; the load per layer and expert (L x E
        fractions) every `log_every` steps and at the first, for `frugal report`."""
        metrics = {"moe_aux_loss": routing.aux_loss, "moe_z_loss": routing.z_loss, "moe_load_max": routing.load_max}
        if self.config.model.moe.capacity_factor is not None:
            metrics["moe_dropped_tokens"] = routing.dropped_tokens
        if step % self.config.log_every == 0 or step == 1:
            metrics["moe_load"] = routing.load_fractions()
        return metrics

    def _checkpoint_due(self, progress: TrainerState, total_steps: int) -> bool:
        every = self.config.checkpoint_every
        return bool(every and progress.step % every == 0) or progress.step == total_steps

    def _save(self, progress: TrainerState) -> Path:
        state = progress.model_copy(update={"loss": self.last_loss, "data_fingerprint": self.data_fingerprint})
        return self.checkpointer.save(self.train_step.model, self.train_step.optimizer, state, self.config)
