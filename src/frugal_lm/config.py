"""Typed configuration: pydantic models, YAML presets and dotted `key=value` overrides.

A run is described by one `RunConfig`. It is resolved in layers, later ones winning:

1. the model preset `presets/models/<preset>.yaml` and the net `presets/nets/<net>.yaml`,
2. the recipe file given with `--config FILE.yaml` (any subset of `RunConfig`),
3. command-line overrides `key=value` (`lr=3e-4`, `model.hidden_size=256`).

`preset` and `net` may come from the file or the command line; they pick layer 1. A preset
may name its net (`net: transformer` in grok1.yaml): that net is used when none is given, and
a net given explicitly wins (its YAML is layered over the preset's). Every
key is checked: an unknown or ill-typed key raises `FrugalError` naming the key and what
is allowed, so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator, model_validator

from frugal_lm.errors import FrugalError

NetName = Literal["hrm", "transformer", "universal"]
AttentionBackendName = Literal["auto", "sdpa", "flex", "fa3"]


# Longest context a model may declare: RoPE tables and KV caches are sized from it before any
# weight is read, so a typo (1e9) would otherwise try to allocate terabytes.
MAX_SEQ_LEN = 1 << 20


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class MoeConfig(StrictModel):
    """Mixture-of-experts FFN (`model.moe`); `experts: 0` is the dense SwiGLU, bit-identical to a
    config without this section. Names follow transformers' MoE configs (Qwen3-MoE, DeepSeek-V3)."""

    experts: int = 0
    """Routed experts per MoE layer; 0 = dense."""
    top_k: int = 2
    """Routed experts each token goes through."""
    intermediate_size: int | None = None
    """Each expert's SwiGLU width (transformers' `moe_intermediate_size`); None: the dense width."""
    shared_experts: int = 0
    """Always-on experts of the same width (DeepSeek's `n_shared_experts`), summed as one SwiGLU."""
    first_dense_layers: int = 0
    """The first blocks of each stack keep a dense FFN (DeepSeek's `first_k_dense_replace`)."""
    score: Literal["softmax", "sigmoid"] = "softmax"
    """Router scores: softmax over experts (Qwen3-MoE, Mixtral) or per-expert sigmoid (DeepSeek-V3)."""
    norm_topk: bool = True
    """Renormalise the chosen top-k weights to sum to 1."""
    route_scale: float = 1.0
    """Routed output scale (DeepSeek's `routed_scaling_factor`)."""
    bias_update_rate: float = 0.0
    """Auxiliary-loss-free balancing (DeepSeek-V3): a per-expert bias added to the scores for
    selection only, moved by this much per step toward equal load; 0 = off."""
    aux_loss_coef: float = 0.0
    """Weight of the load-balancing auxiliary loss (Switch / GShard form); 0 = off."""
    aux_loss_scope: Literal["batch", "sequence"] = "batch"
    """Balance over the whole batch (Switch) or within each packed example (DeepSeek-V3's
    sequence-wise loss), averaged over the examples."""
    z_loss_coef: float = 0.0
    """Weight of the router z-loss (ST-MoE): mean squared logsumexp of the router logits; 0 = off."""
    capacity_factor: float | None = None
    """None: dropless. Otherwise each expert takes at most capacity_factor * tokens * top_k / experts
    tokens per layer call; the rest are dropped (counted in the metrics) and pass by on the residual.
    Training only: inference is dropless, so a token's output never depends on its batch."""
    implementation: Literal["auto", "grouped", "loop"] = "auto"
    """How the experts compute: one grouped matmul over the tokens sorted by expert, or a loop
    over experts (portable, reads the token counts on the host); equal results. auto: grouped
    where `torch._grouped_mm` runs (CPU with 16-byte-aligned sizes, CUDA bf16 on sm80+)."""

    @model_validator(mode="after")
    def _check_experts(self) -> MoeConfig:
        if self.experts == 0:
            return self
        if self.experts == 1:
            raise ValueError("moe.experts must be 0 (dense) or >= 2: one expert is the dense FFN with a router")
        if self.experts < 0:
            raise ValueError(f"moe.experts must be >= 0, got {self.experts}")
        if not 1 <= self.top_k <= self.experts:
            raise ValueError(f"moe.top_k must be within 1..moe.experts ({self.experts}), got {self.top_k}")
        if self.intermediate_size is not None and self.intermediate_size < 1:
            raise ValueError(f"moe.intermediate_size must be >= 1, got {self.intermediate_size}")
        for name in ("shared_experts", "first_dense_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"moe.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("bias_update_rate", "aux_loss_coef", "z_loss_coef"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"moe.{name} must be a finite number >= 0, got {value}")
        if not (math.isfinite(self.route_scale) and self.route_scale > 0):
            raise ValueError(f"moe.route_scale must be a finite number > 0, got {self.route_scale}")
        if self.capacity_factor is not None and not (math.isfinite(self.capacity_factor) and self.capacity_factor > 0):
            raise ValueError(f"moe.capacity_factor must be > 0 or null (dropless), got {self.capacity_factor}")
        return self

    @property
    def enabled(self) -> bool:
        return self.experts > 0


class ModelConfig(StrictModel):
    """Architecture of one network. Derived sizes are properties, never stored twice."""

    net: NetName = "hrm"
    vocab_size: int = 65536
    hidden_size: int
    n_layers: int
    """Blocks in the whole model; the HRM splits them into an H and an L stack of half each."""
    n_heads: int
    n_kv_heads: int | None = None
    """Key/value heads (grouped-query attention); None: one per query head, as `hrm_text`."""
    attention_gate: bool = True
    """The sigmoid output gate of HRM-Text's attention; off for models without one (Grok-1)."""
    expansion: float = 4.0
    """SwiGLU width: intermediate = round_up(round(expansion * hidden * 2/3), 256)."""
    h_cycles: int = 2
    l_cycles: int = 3
    ut_passes: int = 4
    """Passes of the shared stack in the Universal Transformer baseline."""
    bp_steps_start: int = 2
    bp_steps_end: int = 5
    bp_warmup_fraction: float = 0.2
    """`bp_steps` (stack passes that carry gradients) grows from start to end over this
    fraction of the run's steps."""
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float | None = None
    """Std of the token embedding init; None means LeCun, 1 / sqrt(hidden_size). The
    embedding output is scaled by 1 / init_std so that tokens enter at unit scale."""
    max_seq_len: int = 2048
    attention_backend: AttentionBackendName = "auto"
    moe: MoeConfig = MoeConfig()

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        positive = (
            "vocab_size",
            "hidden_size",
            "n_layers",
            "n_heads",
            "h_cycles",
            "l_cycles",
            "ut_passes",
            "bp_steps_start",
            "bp_steps_end",
            "max_seq_len",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of n_heads ({self.n_heads})")
        self._check_attention_and_experts()
        if self.head_dim % 2:
            raise ValueError(f"head_dim (hidden_size / n_heads = {self.head_dim}) must be even for RoPE")
        if self.net == "hrm" and self.n_layers % 2:
            raise ValueError(f"net=hrm splits n_layers into two stacks: n_layers must be even, got {self.n_layers}")
        if self.max_seq_len > MAX_SEQ_LEN:
            raise ValueError(
                f"max_seq_len must be <= {MAX_SEQ_LEN:,} (it sizes RoPE tables and KV caches), got {self.max_seq_len:,}"
            )
        for name in ("expansion", "norm_eps", "rope_theta", "init_std"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if self.bp_steps_start > self.bp_steps_end:
            raise ValueError("bp_steps_start must be <= bp_steps_end")
        if not 0.0 <= self.bp_warmup_fraction <= 1.0:
            raise ValueError("bp_warmup_fraction must be within [0, 1]")
        return self

    def _check_attention_and_experts(self) -> None:
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_kv_heads ({self.n_kv_heads}) must be >= 1 and divide n_heads ({self.n_heads})")
        if self.moe.enabled and self.moe.first_dense_layers > self.layers_per_stack:
            raise ValueError(
                f"moe.first_dense_layers ({self.moe.first_dense_layers}) is more than the blocks per stack "
                f"({self.layers_per_stack})"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def intermediate_size(self) -> int:
        return round_up(round(self.expansion * self.hidden_size * 2 / 3), 256)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def expert_intermediate_size(self) -> int:
        """Each routed (and shared) expert's SwiGLU width."""
        return self.moe.intermediate_size if self.moe.intermediate_size is not None else self.intermediate_size

    def is_moe_layer(self, block_index: int) -> bool:
        """Whether block `block_index` of a stack has experts (the first `first_dense_layers` do not)."""
        return self.moe.enabled and block_index >= self.moe.first_dense_layers

    @property
    def layers_per_stack(self) -> int:
        return self.n_layers // 2 if self.net == "hrm" else self.n_layers

    @property
    def stack_passes(self) -> int:
        """How many times a stack runs in one forward pass."""
        if self.net == "hrm":
            return self.h_cycles * (self.l_cycles + 1)
        if self.net == "universal":
            return self.ut_passes
        return 1

    @property
    def embedding_init_std(self) -> float:
        return self.init_std if self.init_std is not None else 1.0 / math.sqrt(self.hidden_size)


class RunConfig(StrictModel):
    """Everything `frugal train` needs: the keys of a recipe file (ARCHITECTURE.md, "Training")."""

    preset: str = "tiny"
    data: Path | None = None
    out: Path | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_tokens: int = 4096
    lr: float = 3e-4
    seed: int = 0
    checkpoint_every: int = 0
    resume: bool = False
    init_from: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    instruction_loss: bool = False
    """Also train on instruction tokens (HRM-Text trains on responses only)."""
    row_len: int | None = None
    """Tokens per packed row; default: the mixed set's max sequence length."""
    warmup_steps: int = 100
    lr_floor: float = 0.1
    """The cosine ends at lr * lr_floor."""
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    ema_decay: float | None = 0.9999
    grad_clip: float | None = 1.0
    keep_checkpoints: int = 3
    log_every: int = 10
    price_per_device_hour: float = 2.0
    """Dollars per device-hour, for the cost shown while training."""
    compile: bool | Literal["auto"] = "auto"
    """Compile each block with torch.compile. `auto`: on CUDA, and on a CPU with a C++ compiler
    for runs of 1,000 steps or more, which earn back its seconds of compiling (runtime.compiles)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory, ~1/3 more compute."""
    expert_parallel: int = 1
    """Ranks over which each MoE layer's experts are sharded (torchrun); tokens travel by all-to-all."""
    time_limit_s: float | None = None
    """Wall seconds for the training loop. The total step count (`steps` is the first guess)
    is re-fitted after every step to what the mean step time so far leaves room for, so the
    LR and bp_steps schedules end on time. Time-budgeted runs (`frugal demo`) use it; their
    step count then depends on the machine's speed, as a fixed `steps` does not."""
    val_data: Path | None = None
    """A mixed set of held-out examples (same tokenizer): its loss is logged as `val_loss`."""
    val_every: int | None = None
    """Steps between validations; default: ten per run (and always at the end)."""
    val_batches: int = 8
    """Batches of val_data each validation scores (the same ones every time)."""
    val_samples: int = 3
    """Held-out instructions answered greedily at each validation (RUN_DIR/samples.jsonl)."""
    max_hours: float | None = None
    """Stop cleanly, with a checkpoint, once the run (all its sessions) has trained this long."""
    max_dollars: float | None = None
    """Stop cleanly, with a checkpoint, once the run has cost this much at price_per_device_hour."""
    loggers: list[Literal["tensorboard", "wandb"]] = []
    """Mirror metrics.jsonl to TensorBoard and/or Weights & Biases (extras, installed separately)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 compute with fp32 master weights (train/step.py). auto: on GPUs, and on CPUs with
    native bf16 instructions for models wide enough to gain from it (runtime.uses_bf16)."""
    model: ModelConfig
    _model_keys_given: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="before")
    @classmethod
    def _net_lives_in_model(cls, data: Any) -> Any:
        """`net` is the model's (`model.net`); a top-level `net` (the `net=` shorthand, and
        config.yaml files written before) moves there."""
        if isinstance(data, dict) and "net" in data:
            data = dict(data)
            net = data.pop("net")
            model = dict(data.get("model") or {})
            model.setdefault("net", net)
            data["model"] = model
        return data

    @property
    def net(self) -> str:
        return self.model.net

    @property
    def model_keys_given(self) -> frozenset[str]:
        """The model.* keys the recipe file or the command line set (`net` included when
        given), as opposed to the preset's: with init_from=DIR these override DIR's
        architecture and the others come from DIR. Empty for a config built in code."""
        return self._model_keys_given

    @field_validator("loggers", mode="before")
    @classmethod
    def _one_logger_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # loggers=tensorboard

    @model_validator(mode="after")
    def _check_training(self) -> RunConfig:
        self._check_length()
        self._check_optimizer()
        for name in ("batch_tokens", "keep_checkpoints", "log_every", "val_batches", "expert_parallel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.val_every is not None and self.val_every < 1 or self.val_samples < 0:
            raise ValueError("val_every must be >= 1 (or null: ten validations per run) and val_samples >= 0")
        if self.price_per_device_hour < 0 or self.checkpoint_every < 0:
            raise ValueError("price_per_device_hour and checkpoint_every must be >= 0")
        return self

    def _check_length(self) -> None:
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give epochs or steps, not both")
        for name in ("epochs", "steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (leave it out for one epoch of the data)")
        if self.time_limit_s is not None and (self.time_limit_s <= 0 or self.steps is None):
            raise ValueError("time_limit_s must be > 0 and comes with steps= (the first guess of the step count)")
        for name in ("max_hours", "max_dollars"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 or null (no limit), got {getattr(self, name)}")

    def _check_optimizer(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0) or not 0 <= self.lr_floor <= 1 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, 0 <= lr_floor <= 1, warmup_steps >= 0")
        if not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {list(self.betas)}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) or null (no EMA), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null (no clipping), got {self.grad_clip}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


# ModelConfig keys about how a model trains, not about its weights or forward pass.
TRAINING_SCHEDULE_KEYS = frozenset({"bp_steps_start", "bp_steps_end", "bp_warmup_fraction", "attention_backend"})
ARCHITECTURE_KEYS = tuple(key for key in ModelConfig.model_fields if key not in TRAINING_SCHEDULE_KEYS | {"vocab_size"})
"""The keys that shape the weights or the forward pass (the vocabulary comes with the data)."""


def preset_names() -> list[str]:
    folder = resources.files("frugal_lm") / "presets" / "models"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_yaml(path: Path | Any, what: str) -> Any:
    """A YAML file's content; a missing, unreadable or invalid file is one line naming it."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FrugalError(f"{what} not found: {path}") from None
    except OSError as error:
        raise FrugalError(f"{path}: cannot read the {what} ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise FrugalError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        reason = " ".join(str(getattr(error, "problem", None) or error).split())  # one line
        raise FrugalError(f"{path}{where}: not valid YAML ({reason})") from None


def _read_yaml(path: Path | Any, what: str) -> dict[str, Any]:
    data = read_yaml(path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FrugalError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _preset_layer(preset: str, net: str | None = None) -> dict[str, Any]:
    """The preset's keys under its net's; `net=None`: the net the preset names, else hrm."""
    folder = resources.files("frugal_lm") / "presets"
    if preset not in preset_names():
        raise FrugalError(f"unknown preset {preset!r}; allowed: {', '.join(preset_names())}")
    model = _read_yaml(folder / "models" / f"{preset}.yaml", "preset")
    net = net or model.get("net") or ModelConfig.model_fields["net"].default
    nets = sorted(p.name.removesuffix(".yaml") for p in (folder / "nets").iterdir())
    if net not in nets:
        raise FrugalError(f"unknown net {net!r}; allowed: {', '.join(nets)}")
    return {**model, **_read_yaml(folder / "nets" / f"{net}.yaml", "net")}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["lr=3e-4", "model.hidden_size=256"]` -> nested dict with YAML-parsed values."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise FrugalError(f"override {item!r} is not of the form key=value (e.g. lr=3e-4, model.hidden_size=256)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FrugalError(f"override {item!r} conflicts with an earlier {part}=...")
            node = child
        node[leaf] = value
    return tree


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def format_validation_error(error: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem, each naming the dotted key and what would have been accepted."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, item["loc"])
            lines.append(f"{source}: unknown key {key!r}; allowed: {', '.join(allowed)}")
        elif item["type"] == "value_error":
            lines.append(f"{source}: invalid {key}: {item['msg'].removeprefix('Value error, ')}")
        elif item["type"] == "missing":
            lines.append(f"{source}: missing required key {key!r}")
        else:
            lines.append(f"{source}: bad value for {key!r} ({item['input']!r}): {item['msg']}")
    return "; ".join(lines)


def validate(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise FrugalError(format_validation_error(error, model, source)) from None


def load_model_config(preset: str, net: str | None = None, **overrides: Any) -> ModelConfig:
    """A preset's `ModelConfig`, e.g. `load_model_config("XL", vocab_size=65536)`; `net=None`
    is the preset's own net (hrm unless it names one). Nested overrides (`moe={"top_k": 1}`)
    merge into the preset's section."""
    return validate(ModelConfig, _merge(_preset_layer(preset, net), overrides), f"preset {preset}")


def recipe_names() -> list[str]:
    folder = resources.files("frugal_lm") / "presets" / "recipes"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _recipe_file(config_file: Path | str) -> Path | Any:
    """A path, or the name of a packaged recipe (`--config sft`)."""
    path = Path(config_file)
    if not path.exists():
        if str(config_file) in recipe_names():
            return resources.files("frugal_lm") / "presets" / "recipes" / f"{config_file}.yaml"
        raise FrugalError(
            f"--config {config_file}: no such file, nor a packaged recipe (recipes: {', '.join(recipe_names())})"
        )
    return path


def resolve_run_config(config_file: Path | str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Presets, then the recipe file (a path or a packaged recipe name such as `sft`), then
    `key=value` overrides, validated as one `RunConfig`."""
    file_layer = _read_yaml(_recipe_file(config_file), "config file") if config_file else {}
    command_layer = parse_overrides(overrides or [])
    # A run's length given on the command line replaces the recipe's, in either unit.
    for given, replaced in (("steps", "epochs"), ("epochs", "steps")):
        if given in command_layer and replaced not in command_layer:
            file_layer.pop(replaced, None)
    chosen = _merge(file_layer, command_layer)
    model_layer = chosen.get("model") if isinstance(chosen.get("model"), dict) else {}
    preset = chosen.get("preset", RunConfig.model_fields["preset"].default)
    net_given = "net" in chosen or "net" in model_layer
    net = chosen.pop("net", model_layer.get("net"))  # `net=` is model.net; none given: the preset's
    if not isinstance(preset, str) or not (net is None or isinstance(net, str)):
        raise FrugalError("preset and net must be names, e.g. preset=tiny net=hrm")
    preset_layer = _preset_layer(preset, net)
    layered = _merge({"model": preset_layer}, chosen)
    layered["model"]["net"] = preset_layer["net"]
    source = " + ".join(filter(None, [str(config_file) if config_file else "", "command line" if overrides else ""]))
    config = validate(RunConfig, layered, source or "defaults")
    config._model_keys_given = frozenset([*model_layer, *(["net"] if net_given else [])])
    return config
