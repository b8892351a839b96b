"""Resuming a run: restore its checkpoint, and refuse to continue it as another run.

`resume=true` restores model, optimizer+EMA, RNG and the loader position from the latest
complete checkpoint and drops the metrics lines logged after it. Other data (another
tokenizer, another mixed set) or other settings that shape the run would apply the saved
loader position and optimizer state to a different run, so they are refused, naming what
differs; only how long the run goes and how it is run may change (`RESUMABLE_CHANGES`).
The number of ranks may change too (Distributed Checkpoint reshards, experts included),
provided the global batch, `batch_tokens` x ranks, stays the same.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from frugal_lm.config import RunConfig
from frugal_lm.data.loader import MixedDataset
from frugal_lm.data.tokenizer import encodes_alike
from frugal_lm.errors import FrugalError
from frugal_lm.train.checkpoint import Checkpointer, TrainerState, read_run_config
from frugal_lm.train.distributed import Distributed

_ENDS = 1 << 20
# Keys that may differ between a run and its resumption: how long it runs and how it is run.
# The warmup is fitted to the run's length (trainer._fit_warmup), so it changes with it.
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "epochs",
        "time_limit_s",
        "max_hours",
        "max_dollars",
        "warmup_steps",
        "resume",
        "init_from",
        "device",
        "precision",
        "compile",
        "activation_checkpointing",
        "expert_parallel",
        "loggers",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "price_per_device_hour",
        "out",
        "data",
        "val_data",
        "val_every",
        "val_batches",
        "val_samples",
    }
)


def check_same_tokenizer(saved: Path, current: Path) -> None:
    """Resuming on data made with another tokenizer would train on mismatched ids."""
    saved_file, current_file = saved / "tokenizer.json", current / "tokenizer.json"
    if saved_file.is_file() and current_file.is_file() and not encodes_alike(saved_file, current_file):
        raise FrugalError(
            f"the data's tokenizer ({current}) differs from the one this run was trained with "
            f"({saved}); resume with the same data, or start a new run (init_from=) instead"
        )


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the lines up to `last_step`; a torn last line (a crash mid-write) is dropped."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise FrugalError(f"{path}:{number}: not a JSON metrics line; the file was edited or damaged") from None
        if record["step"] <= last_step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))


def data_fingerprint(dataset: MixedDataset) -> str:
    """Identifies a mixed set cheaply at any size: every file's name and size, and the first
    and last MiB of each (a different mix, order or epoch count changes at least one)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in dataset.directory.rglob("*.npy") if p.is_file()) + [
        dataset.directory / "metadata.json"
    ]:
        size = path.stat().st_size
        digest.update(f"{path.relative_to(dataset.directory)}:{size}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(_ENDS))
            handle.seek(max(0, size - _ENDS))
            digest.update(handle.read(_ENDS))
    return digest.hexdigest()


def check_same_global_batch(config: RunConfig, saved: RunConfig, saved_state: TrainerState, world_size: int) -> None:
    """`batch_tokens` is per rank: a run may resume on another number of ranks (its
    checkpoint reshards) when batch_tokens x ranks, the global batch, stays the same."""
    saved_ranks = saved_state.world_size or world_size  # older checkpoints: assume the same ranks
    if config.batch_tokens * world_size != saved.batch_tokens * saved_ranks:
        raise FrugalError(
            f"resume=true with another global batch: batch_tokens={config.batch_tokens} on {world_size} rank(s) "
            f"is {config.batch_tokens * world_size} tokens a step (the run has batch_tokens={saved.batch_tokens} "
            f"on {saved_ranks} rank(s), {saved.batch_tokens * saved_ranks}); keep batch_tokens x ranks the same, "
            f"or start a new run (another out=, init_from= to fine-tune)"
        )


def check_resumable(
    config: RunConfig, checkpoint: Path, saved_state: TrainerState, dataset: MixedDataset, world_size: int = 1
) -> None:
    """Resuming with other data or other run-shaping settings would apply the saved loader
    position and optimizer state to a different run: refuse, naming what differs."""
    saved = read_run_config(checkpoint)
    now, then = config.model_dump(mode="json"), saved.model_dump(mode="json")
    if saved_state.world_size not in (None, world_size):  # resharded: the global batch must match
        check_same_global_batch(config, saved, saved_state, world_size)
        now["batch_tokens"] = then["batch_tokens"]
    differing = [key for key in now if key not in RESUMABLE_CHANGES and key != "model" and now[key] != then[key]]
    model_now, model_then = _leaves(now["model"]), _leaves(then["model"])
    differing += [f"model.{key}" for key, value in model_now.items() if model_then.get(key) != value]
    if differing:
        shown = ", ".join(f"{key}={_value_at(now, key)} (the run has {_value_at(then, key)})" for key in differing)
        raise FrugalError(
            f"resume=true with settings other than the run's: {shown}; resume with the settings in "
            f"{checkpoint / 'config.yaml'}, or start a new run (another out=, init_from= to fine-tune)"
        )
    fingerprint = saved_state.data_fingerprint
    if fingerprint is not None and fingerprint != data_fingerprint(dataset):
        raise FrugalError(
            f"data={dataset.directory} is not the mixed set this run was trained on (its "
            f"metadata.json differs); resume with that data, or start a new run"
        )


# Model keys about how the forward pass runs, not what it computes: free to change on resume.
_RUNTIME_MODEL_KEYS = frozenset({"attention_backend", "moe.implementation"})


def _leaves(model: dict) -> dict:
    """The model section's keys, nested sections' dotted (`moe.experts`), runtime choices left out;
    so a resumed dense run given `model.moe.experts=8` is told that key, not the whole section."""
    leaves = {}
    for key, value in model.items():
        for name, leaf in value.items() if isinstance(value, dict) else [(None, value)]:
            dotted = key if name is None else f"{key}.{name}"
            if dotted not in _RUNTIME_MODEL_KEYS:
                leaves[dotted] = leaf
    return leaves


def _value_at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def resume(
    config: RunConfig, checkpointer: Checkpointer, model, optimizer, dataset: MixedDataset, distributed: Distributed
) -> TrainerState:
    checkpoint = checkpointer.require_latest()
    check_same_tokenizer(checkpoint / "tokenizer", dataset.directory / "tokenizer")
    state = TrainerState.read(checkpoint)
    check_resumable(config, checkpoint, state, dataset, distributed.world_size)
    checkpointer.load(checkpoint, model, optimizer)
    if distributed.is_main:
        for log in ("metrics.jsonl", "samples.jsonl"):
            truncate_metrics(checkpointer.run_dir / log, state.step)
        print(f"resuming {checkpointer.run_dir} from step {state.step:,} ({checkpoint.name})", file=sys.stderr)
    return state
