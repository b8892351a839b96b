"""The training loop: one code path for one CPU, one GPU, or `torchrun` with FSDP2.

Per step: set the scheduled LR and `bp_steps`, run the packed batch, normalise the loss by
the *global* number of label tokens (so N ranks compute exactly the gradient of one process
holding the whole batch), clip, step AdamATan2 (which also updates the EMA), log one line
to `RUN_DIR/metrics.jsonl`, and checkpoint every `checkpoint_every` steps and at each epoch
end. A non-finite loss stops the run before the bad update is checkpointed.

Resume (`resume=true`) restores model, optimizer+EMA, RNG and the loader position from the
latest complete checkpoint and drops metrics lines logged after it, so the metrics file of a
killed-and-resumed run equals that of an uninterrupted one.

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
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from frugal_lm.config import ModelConfig, RunConfig, validate
from frugal_lm.data.loader import LoaderState, MixedDataset, PackedLoader
from frugal_lm.errors import FrugalError
from frugal_lm.model import bp_steps_at, build_model, language_model_loss
from frugal_lm.plan.budget import plan_run, read_data_profile
from frugal_lm.plan.devices import device_running_here
from frugal_lm.plan.flops import training_flops_per_token
from frugal_lm.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    require_checkpoint,
    save_checkpoint,
)
from frugal_lm.train.loggers import MetricsLogger, check_available
from frugal_lm.train.distributed import Distributed, init_distributed, shard_model, shutdown
from frugal_lm.train.optimizer import AdamATan2
from frugal_lm.train.schedules import learning_rate
from frugal_lm.train.weights import load_weights, read_model_config, weights_file

UNBOUNDED_EPOCHS = 1 << 30


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    last_loss: float
    checkpoint: Path | None


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu` or `cuda` (the `device=` key and every command's `--device`) -> a device."""
    if name == "cuda" and not torch.cuda.is_available():
        raise FrugalError("device cuda was asked for, but PyTorch sees no CUDA GPU; use cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_bf16(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and (device.type == "cuda" or cpu_has_native_bf16()))


def autocast_for(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(precision, device) else nullcontext()


def _check_same_tokenizer(saved: Path, current: Path) -> None:
    """Resuming on data made with another tokenizer would train on mismatched ids."""
    def read(folder: Path) -> bytes | None:
        return (folder / "tokenizer.json").read_bytes() if (folder / "tokenizer.json").is_file() else None

    if read(saved) is not None and read(current) is not None and read(saved) != read(current):
        raise FrugalError(f"the data's tokenizer ({current}) differs from the one this run was trained with "
                          f"({saved}); resume with the same data, or start a new run (init_from=) instead")


# Keys that shape the weights or the forward pass. With init_from=DIR they come from DIR's model
# unless set to something other than the preset's value, so an imported model fine-tunes as is.
ARCHITECTURE_KEYS = ("net", "hidden_size", "n_layers", "n_heads", "expansion", "h_cycles", "l_cycles",
                     "ut_passes", "rope_theta", "norm_eps", "init_std", "max_seq_len")


def _model_config_for(config: RunConfig, dataset: MixedDataset) -> ModelConfig:
    """The configured architecture on the data's vocabulary; with init_from=DIR (DIR has a
    config.yaml), DIR's architecture and vocabulary except the model.* keys the user gave
    (`RunConfig.model_keys_given`), and the data must use DIR's tokenizer."""
    if config.init_from is None:
        return config.model.model_copy(update={"vocab_size": dataset.vocab_size})
    init_from = Path(config.init_from)
    if (init_from / "config.json").is_file() and not (init_from / "config.yaml").is_file():
        raise FrugalError(f"init_from={init_from} is a transformers model directory; convert it with "
                          f"`frugal import hf --hf-dir {init_from} --out DIR`, then use init_from=DIR")
    source = weights_file(init_from).parent
    if not (source / "config.yaml").is_file():
        return config.model.model_copy(update={"vocab_size": dataset.vocab_size})
    saved = read_model_config(source)
    if "net" in config.model_keys_given and config.net != saved.net:
        raise FrugalError(f"net={config.net}, but init_from={config.init_from} holds a net={saved.net} model")
    inherited = {key: getattr(saved, key) for key in ARCHITECTURE_KEYS if key not in config.model_keys_given}
    model_config = validate(ModelConfig, {**config.model.model_dump(), **inherited, "vocab_size": saved.vocab_size},
                            f"model.* keys with init_from={init_from}")
    saved_tokenizer = source / "tokenizer" / "tokenizer.json"
    data_tokenizer = dataset.directory / "tokenizer" / "tokenizer.json"
    if saved_tokenizer.is_file() and data_tokenizer.is_file():
        if saved_tokenizer.read_bytes() != data_tokenizer.read_bytes():
            raise FrugalError(f"the data's tokenizer ({data_tokenizer.parent}) differs from init_from's "
                              f"({saved_tokenizer.parent}); tokenize the data with `frugal data tokenize "
                              f"--tokenizer {saved_tokenizer.parent}`")
    elif dataset.vocab_size > saved.vocab_size:
        raise FrugalError(f"the data's vocabulary ({dataset.vocab_size}) is larger than init_from's model "
                          f"({saved.vocab_size})")
    return model_config


def steps_within(time_limit_s: float, elapsed_s: float, seconds_per_step: float, step: int) -> int:
    """The run's total step count such that its remaining steps, at `seconds_per_step`, end
    by `time_limit_s` (`time_limit_s=`: the schedule is stretched or squeezed to the clock
    and finishes its cosine, whatever the machine's speed does meanwhile)."""
    return step + max(0, math.floor((time_limit_s - elapsed_s) / max(seconds_per_step, 1e-9)))


def _truncate_metrics(path: Path, last_step: int) -> None:
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
        path.write_text("".join(line + "\n" for line in kept))


def _describe(config: RunConfig, distributed: Distributed, device: torch.device, parameters: int) -> str:
    environment = (f"# frugal-lm on {platform.node()}: python {sys.version.split()[0]}, torch {torch.__version__}, "
                   f"device {device}, world size {distributed.world_size}, {parameters:,} parameters")
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


def _train(config: RunConfig, run_dir: Path, device: torch.device, distributed: Distributed) -> TrainResult:
    dataset = MixedDataset(config.data)
    model_config = _model_config_for(config, dataset)
    config = config.model_copy(update={"model": model_config})
    row_len = config.row_len or int(dataset.metadata.get("max_seq_len", model_config.max_seq_len))
    rows_per_rank = config.batch_tokens // row_len
    if rows_per_rank < 1:
        raise FrugalError(f"batch_tokens={config.batch_tokens} is smaller than one row of {row_len} tokens")

    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    if config.init_from is not None and not config.resume:
        model.load_state_dict(load_weights(config.init_from, model_config), strict=True)
    if distributed.world_size > 1:
        model = shard_model(model, device.type)
    optimizer = AdamATan2(model.parameters(), lr=config.lr, betas=config.betas,
                          weight_decay=config.weight_decay, ema_decay=config.ema_decay)
    forward = torch.compile(model) if config.compile else model
    loader = PackedLoader(dataset, row_len, rows_per_rank, distributed.rank, distributed.world_size,
                          config.instruction_loss)
    epochs = config.epochs or (UNBOUNDED_EPOCHS if config.steps else 1)
    total_steps = config.steps or sum(loader.steps_in(epoch) for epoch in range(epochs))

    step, tokens_seen, state = 0, 0, LoaderState()
    metrics_path = run_dir / "metrics.jsonl"
    if config.resume:
        checkpoint = require_checkpoint(run_dir)
        _check_same_tokenizer(checkpoint / "tokenizer", dataset.directory / "tokenizer")
        trainer_state = load_checkpoint(checkpoint, model, optimizer)
        step, tokens_seen = trainer_state["step"], trainer_state["tokens"]
        state = LoaderState(**trainer_state["loader"])
        if distributed.is_main:
            _truncate_metrics(metrics_path, step)
    remove_partial_checkpoints(run_dir)
    if distributed.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        description = _describe(config, distributed, device, sum(p.numel() for p in model.parameters()))
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        print(description, file=sys.stderr)

    data_profile = read_data_profile(Path(config.data))
    hardware = device_running_here(device.type, device.index or 0, uses_bf16(config.precision, device))
    plan = plan_run(model_config, config.preset, float(total_steps * config.batch_tokens * distributed.world_size),
                    distributed.world_size, hardware, price_per_gpu_hour=config.price_per_device_hour,
                    label_fraction=data_profile.label_fraction, lengths=data_profile.lengths,
                    batch_tokens=config.batch_tokens)
    if distributed.is_main:
        print(f"plan: {total_steps - step:,} steps, ~{plan.processed_tokens:,.0f} token slots, "
              f"{plan.flops_per_token / 1e9:.2f} GFLOP/token, ~{plan.wall_hours * 60:.1f} min and "
              f"${plan.dollars:.2f} at {plan.mfu:.0%} MFU of {hardware.description} "
              f"({hardware.peak_flops / 1e12:.2f} TFLOP/s peak)", file=sys.stderr)

    progress = tqdm(total=total_steps, initial=step, disable=not distributed.is_main, unit="step",
                    dynamic_ncols=True, file=sys.stderr)
    started, start_step, start_tokens = time.perf_counter(), step, tokens_seen
    last_loss, last_saved, flops_done, clock_origin = math.nan, None, 0.0, None
    metrics = (MetricsLogger(run_dir, config.loggers, config.model_dump(mode="json"), config.resume)
               if distributed.is_main else None)
    try:
        reported_epoch = -1
        for batch, next_state in loader.batches(state, epochs):
            if step >= total_steps:
                break
            if state.epoch != reported_epoch and distributed.is_main:
                reported_epoch = state.epoch
                plan_of_epoch = loader.plan(state.epoch)
                progress.write(f"epoch {state.epoch}: {plan_of_epoch.n_steps:,} steps, packing fills "
                               f"{plan_of_epoch.slot_use:.2%} of row slots", file=sys.stderr)
            lr = learning_rate(step, total_steps, config.lr, config.warmup_steps, config.lr_floor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            bp_steps = bp_steps_at(model_config, step, total_steps)
            batch = batch.to(device)
            with autocast_for(config.precision, device):
                output = language_model_loss(forward, batch, bp_steps)
            counts = distributed.all_reduce_sum(torch.stack([
                output.loss_sum, output.label_tokens.float(), output.correct_tokens.float(),
                output.examples.float(), output.correct_examples.float(),
                torch.tensor(float(batch.n_tokens), device=device),
                torch.tensor(time.perf_counter() - started, device=device)]))
            global_label_tokens = counts[1].clamp(min=1)
            # Exactly output.loss when there is one rank; N ranks sum to the single-process gradient.
            (output.loss * (output.label_tokens / global_label_tokens * distributed.world_size)).backward()
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                         if config.grad_clip else None)
            loss_value = float(counts[0] / global_label_tokens)
            if not math.isfinite(loss_value):
                kept = latest_checkpoint(run_dir)
                raise FrugalError(f"loss became {loss_value} at step {step + 1}; stopped before applying that "
                                  f"update. Last good checkpoint: {kept or 'none yet'}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(counts[5])
            if config.time_limit_s is not None:  # every rank sees the same mean clock, so the same total
                clock = float(counts[6]) / distributed.world_size
                if clock_origin is None:  # the first step's warm-up stays out of the mean step time
                    clock_origin = (clock, step)
                else:
                    seconds_per_step = (clock - clock_origin[0]) / (step - clock_origin[1])
                    total_steps = progress.total = steps_within(config.time_limit_s, clock, seconds_per_step, step)
            last_loss = loss_value
            elapsed = time.perf_counter() - started
            tokens_per_second = (tokens_seen - start_tokens) / max(elapsed, 1e-9)
            flops_done += int(counts[5]) * training_flops_per_token(model_config, bp_steps, data_profile.label_fraction,
                                                                    data_profile.lengths)
            mfu = flops_done / max(elapsed, 1e-9) / (hardware.peak_flops * distributed.world_size)
            record = {
                "step": step, "epoch": state.epoch, "loss": loss_value,
                "slot_use": loader.plan(state.epoch).slot_use,
                "token_accuracy": float(counts[2] / global_label_tokens),
                "exact_accuracy": float(counts[4] / counts[3].clamp(min=1)),
                "lr": lr, "bp_steps": bp_steps, "tokens": tokens_seen,
                "grad_norm": None if grad_norm is None else float(grad_norm.full_tensor()
                                                                   if hasattr(grad_norm, "full_tensor")
                                                                   else grad_norm),
                "elapsed_s": round(elapsed, 3),
                "tokens_per_second": tokens_per_second,
                "mfu": mfu,
                "dollars": elapsed / 3600 * distributed.world_size * config.price_per_device_hour,
            }
            if metrics is not None:
                metrics.log(record)
            progress.update(1)
            if step % config.log_every == 0 or step == total_steps:
                progress.set_postfix(loss=f"{loss_value:.4f}", acc=f"{record['token_accuracy']:.3f}",
                                     tok_s=f"{tokens_per_second:,.0f}", mfu=f"{mfu:.1%}",
                                     usd=f"{record['dollars']:.3f}")
            epoch_ends = next_state.step >= loader.steps_in(next_state.epoch)
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or epoch_ends or step == total_steps:
                last_saved = save_checkpoint(run_dir, step, model, optimizer,
                                             {"tokens": tokens_seen, "loader": next_state.to_dict(), "loss": loss_value},
                                             config, config.keep_checkpoints, dataset.directory / "tokenizer")
            state = next_state
    finally:
        progress.close()
        if metrics is not None:
            metrics.close()
    if distributed.is_main and step > start_step:
        elapsed = time.perf_counter() - started
        actual = {"wall_hours": elapsed / 3600, "tokens_per_second": (tokens_seen - start_tokens) / elapsed,
                  "mfu": flops_done / elapsed / (hardware.peak_flops * distributed.world_size),
                  "dollars": elapsed / 3600 * distributed.world_size * config.price_per_device_hour,
                  "steps": step - start_step}
        fraction = (step - start_step) / max(1, total_steps)
        predicted = {"wall_hours": plan.wall_hours * fraction, "tokens_per_second": plan.tokens_per_second,
                     "mfu": plan.mfu, "dollars": plan.dollars * fraction}
        (run_dir / "plan_vs_actual.json").write_text(json.dumps({"plan": predicted, "actual": actual}, indent=1))
        print("plan vs actual: " + ", ".join(
            f"{key} {predicted[key]:.4g} / {actual[key]:.4g}" for key in predicted), file=sys.stderr)
    return TrainResult(run_dir, step, tokens_seen, last_loss, last_saved or latest_checkpoint(run_dir))
