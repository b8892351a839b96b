"""Atomic, resumable checkpoints: Distributed Checkpoint for training state, safetensors for weights.

`RUN_DIR/checkpoints/step_00001234/` holds
- `train_state/`: model + optimizer (moments and EMA) via Distributed Checkpoint, sharded as
  the run was and reshardable on load (an N-rank run resumes or loads on one process);
- `model.safetensors` and `ema.safetensors`: full weights for inference, export and
  fine-tuning (`--model DIR`, `init_from=`), written by rank 0;
- `trainer_state.json`: step, loader position, tokens seen, metrics; `rng.pt`: RNG states
  (tensors only, loaded with `weights_only=True`); `config.yaml`: the resolved config;
  `tokenizer/`: the tokenizer the data was made with, so a checkpoint is self-contained.

Atomicity: everything is written into `step_X.partial`, then renamed to `step_X` in one
`os.replace`. A run killed mid-write leaves only a `.partial` directory, which is ignored
and cleaned up next time; a directory named `step_X` is always complete. Distributed
Checkpoint's metadata file is a pickle and its non-tensor entries are `torch.save` bytes;
both are read without executing code (`safe_dcp`): a run directory copied from elsewhere
can be resumed safely.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import yaml
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from frugal_lm.config import RunConfig, validate
from frugal_lm.data.loader import LoaderState
from frugal_lm.errors import FrugalError
from frugal_lm.train.optimizer import AdamATan2
from frugal_lm.train.safe_dcp import SafeFileSystemReader, SafeLoadPlanner, read_metadata_safely
from frugal_lm.train.safetensors_io import checksum_metadata

STEP_DIR = re.compile(r"^step_(\d{8})$")
# Saving and loading in a single process is intended, not a misconfiguration.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def checkpoint_of(directory: Path | str) -> Path:
    """The checkpoint a model directory stands for, the one rule every command uses: a
    training run's latest complete checkpoint, or DIR itself when it holds the weights (one
    checkpoint, or an imported model)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FrugalError(f"{directory}: no such model directory")
    checkpoint = latest_checkpoint(directory)
    if checkpoint is not None:
        return checkpoint
    if (directory / "model.safetensors").is_file() or (directory / "ema.safetensors").is_file():
        return directory
    raise FrugalError(
        f"{directory}: not a model directory (expected a training run with checkpoints/, "
        f"a checkpoint with model.safetensors, or an imported or exported model)"
    )


def full_weights(model: torch.nn.Module, optimizer: AdamATan2 | None = None) -> dict[str, torch.Tensor]:
    """Unsharded CPU weights of `model`, or of its EMA when `optimizer` is given. Collective
    under FSDP2: every rank must call it."""
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if optimizer is not None:
        ema_of = {id(param): ema for param, ema in optimizer.ema_tensors()}
        for name, param in model.named_parameters():
            if id(param) in ema_of:
                ema = ema_of[id(param)]
                ema = ema.full_tensor() if hasattr(ema, "full_tensor") else ema
                weights[name] = ema.detach().to("cpu", copy=True)
    return {name: tensor.contiguous() for name, tensor in weights.items()}


class TrainerState(BaseModel):
    """Where a run is, besides its weights and optimizer: `trainer_state.json` of a checkpoint."""

    model_config = ConfigDict(validate_assignment=True)

    step: int = 0
    tokens: int = 0
    loader: LoaderState = Field(default_factory=LoaderState)
    train_seconds: float = 0.0
    """Training-loop seconds over every session of the run (what max_hours and max_dollars count)."""
    loss: float | None = None
    data_fingerprint: str | None = None
    """Identifies the mixed set trained on (`resume.data_fingerprint`); None in older checkpoints."""
    world_size: int | None = None
    """Ranks the run trained on (`batch_tokens` is per rank, so resuming compares the global
    batch, batch_tokens x world_size); None in older checkpoints."""

    @classmethod
    def read(cls, checkpoint: Path) -> TrainerState:
        path = Path(checkpoint) / "trainer_state.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise FrugalError(f"{path}: unreadable trainer state ({error})") from None
        return validate(cls, data, str(path))

    def write(self, checkpoint: Path) -> None:
        (Path(checkpoint) / "trainer_state.json").write_text(self.model_dump_json(indent=1))


class Checkpointer:
    """A run's checkpoints under `RUN_DIR/checkpoints`: written atomically, restored exactly,
    the last `keep` kept. Collective under FSDP2: every rank calls `save` and `load`."""

    def __init__(self, run_dir: Path, keep: int = 3, tokenizer_dir: Path | None = None):
        self.run_dir, self.keep, self.tokenizer_dir = Path(run_dir), keep, tokenizer_dir
        self.folder = self.run_dir / "checkpoints"

    def latest(self) -> Path | None:
        return latest_checkpoint(self.run_dir)

    def require_latest(self) -> Path:
        checkpoint = self.latest()
        if checkpoint is None:
            raise FrugalError(f"resume=true but {self.folder} holds no complete checkpoint")
        return checkpoint

    def remove_partial(self) -> None:
        """A killed run's half-written checkpoint is never complete: clear it."""
        if _is_main() and self.folder.is_dir():
            for partial in self.folder.glob("step_*.partial"):
                if STEP_DIR.match(partial.name.removesuffix(".partial")):  # only names `save` writes
                    shutil.rmtree(partial, ignore_errors=True)

    def save(self, model: torch.nn.Module, optimizer: AdamATan2, state: TrainerState, config: RunConfig) -> Path:
        final = self.folder / f"step_{state.step:08d}"
        partial = self.folder / f"step_{state.step:08d}.partial"
        if _is_main():
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        _barrier()
        try:
            self._write(partial, model, optimizer, state, config)
        except (OSError, RuntimeError, SafetensorError, CheckpointException) as error:
            # A full disk surfaces as any of these (DCP, safetensors and torch.save wrap it).
            if _is_main():
                shutil.rmtree(partial, ignore_errors=True)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise FrugalError(
                f"could not write the checkpoint {final} ({reason}); it was removed and the earlier "
                f"checkpoints are intact: free disk space, then resume=true"
            ) from None
        if _is_main():
            if final.exists():  # the same step saved again
                shutil.rmtree(final)
            os.replace(partial, final)
            _fsync_directory(self.folder)
            for old in list_checkpoints(self.run_dir)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return final

    def _write(
        self, partial: Path, model: torch.nn.Module, optimizer: AdamATan2, state: TrainerState, config: RunConfig
    ) -> None:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=partial / "train_state")
        raw, ema = full_weights(model), full_weights(model, optimizer)
        if not _is_main():
            return
        save_file(raw, partial / "model.safetensors", metadata=checksum_metadata(raw))
        save_file(ema, partial / "ema.safetensors", metadata=checksum_metadata(ema))
        torch.save(_rng_states(), partial / "rng.pt")
        state.write(partial)
        (partial / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        if self.tokenizer_dir is not None and Path(self.tokenizer_dir).is_dir():
            shutil.copytree(self.tokenizer_dir, partial / "tokenizer")
        for file in partial.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())

    @staticmethod
    def load(checkpoint: Path, model: torch.nn.Module, optimizer: AdamATan2) -> None:
        """Restore model, optimizer and RNG states in place (the trainer state is
        `TrainerState.read`, which resuming checks before loading anything)."""
        model_state, optimizer_state = get_state_dict(model, optimizer)
        states = {"model": model_state, "optimizer": optimizer_state}
        folder = Path(checkpoint) / "train_state"
        read_metadata_safely(folder / ".metadata")
        dcp.load(states, storage_reader=SafeFileSystemReader(folder), planner=SafeLoadPlanner())
        set_state_dict(model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optimizer"])
        _set_rng_states(torch.load(Path(checkpoint) / "rng.pt", weights_only=True))


def _rng_states() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng_states(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_run_config(checkpoint: Path) -> RunConfig:
    """The resolved config a checkpoint (or a run directory) was written with."""
    path = Path(checkpoint) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FrugalError(f"{path}: unreadable run config ({error})") from None
    if not isinstance(data, dict):
        raise FrugalError(f"{path}: not a run config (expected a mapping of keys to values)")
    return validate(RunConfig, data, str(path))
