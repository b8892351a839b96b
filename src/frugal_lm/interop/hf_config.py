"""Our `ModelConfig` <-> the `config.json` of transformers' `hrm_text` model (HrmTextConfig).

Design choices:
- Pure JSON, no transformers import: exporting, importing and serving an exported
  directory work without the optional `hf` extra. The defaults HrmTextConfig applies to a
  missing key are mirrored in `HF_DEFAULTS` (a test checks them against HrmTextConfig, so a
  transformers release that changes one is caught).
- Every field that changes the forward pass is written explicitly, never left to a
  default: sizes, `num_layers_per_stack` (with the inflated `num_hidden_layers` =
  per-stack layers x H_cycles x (L_cycles + 1) that HrmTextConfig itself serialises, one KV
  slot per stack pass), cycles, `embedding_scale` (our 1 / init_std, the exact float our
  model multiplies by), `rms_norm_eps`, RoPE theta, `prefix_lm`, untied head, no biases.
- Refuse, never approximate. Export: only `net=hrm` exists in the format, with multi-head
  attention (no `n_kv_heads` below `n_heads`), the attention gate and dense FFNs (no
  `model.moe`). Import: what our
  block cannot compute (biases, another activation, scaled RoPE, a causal-only model, a
  head_dim other than hidden / heads, an SwiGLU width our `expansion` cannot reproduce)
  raises a `FrugalError` naming the file and the key.
- config.json is data someone else wrote: every key we read is checked for its JSON type
  and range first (`_check_values`), so `"hidden_size": "128"`, `num_attention_heads: 0` or
  a negative `rms_norm_eps` is a one-line error naming the file and key, never a traceback
  from the arithmetic below. Sizes that cost memory or time without showing in the weights'
  shapes (`max_position_embeddings`, layer and cycle counts) have upper bounds.
- Training-only settings do not travel: HrmTextConfig's `L_bp_cycles` and dropout are
  no-ops at inference, and our `bp_steps_*` schedule has no equivalent there; an import
  gets our defaults for them.
- Tied embeddings import by copying the embedding into the (then untied) head: the
  forward pass is the same.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from frugal_lm.config import ModelConfig, round_up, validate
from frugal_lm.errors import FrugalError

MODEL_TYPE = "hrm_text"
ARCHITECTURE = "HrmTextForCausalLM"

# HrmTextConfig's class defaults (transformers >= 5.9) for the keys that shape the forward pass.
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151808,
    "hidden_size": 1536,
    "intermediate_size": 4096,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "H_cycles": 2,
    "L_cycles": 3,
    "prefix_lm": True,
    "rope_theta": 10000.0,
}


# The context sizes RoPE tables and every KV cache the engine allocates, and no tensor's shape
# shows it: 1e9 (a typo, a corrupted file) made `generate` try to allocate terabytes. 2^20
# tokens is far beyond any released hrm_text model and still a one-line error, not an OOM.
MAX_POSITIONS = 1 << 20
# Layers are built before the weights' shapes can be compared, and each cycle is one more pass
# over a stack for every token: bounds that no real model approaches keep a typo from hanging.
MAX_LAYERS_PER_STACK = 1024
MAX_CYCLES = 64
INT_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_layers_per_stack",
    "num_attention_heads",
    "head_dim",
    "max_position_embeddings",
    "H_cycles",
    "L_cycles",
)
POSITIVE_NUMBER_KEYS = ("rms_norm_eps", "rope_theta", "initializer_range", "embedding_scale")
BOOL_KEYS = ("attention_bias", "mlp_bias", "prefix_lm", "tie_word_embeddings")
UPPER_BOUNDS = {
    "max_position_embeddings": MAX_POSITIONS,
    "num_layers_per_stack": MAX_LAYERS_PER_STACK,
    "H_cycles": MAX_CYCLES,
    "L_cycles": MAX_CYCLES,
}


def _check_values(data: dict[str, Any], source: str) -> None:
    """The JSON type and range of every key `from_hf_config` reads (absent keys take HF's defaults)."""
    rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise FrugalError(f"{source}: rope_parameters must be an object, got {rope!r}")
    values = {**data, "rope_theta": rope.get("rope_theta", data.get("rope_theta"))}
    for key in INT_KEYS:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise FrugalError(f"{source}: {key} must be a positive integer, got {value!r}")
        bound = UPPER_BOUNDS.get(key)
        if value is not None and bound is not None and value > bound:
            raise FrugalError(
                f"{source}: {key}={value:,} is more than frugal-lm accepts ({bound:,}); "
                f"it is sized from this value without the weights showing it"
            )
    for key in POSITIVE_NUMBER_KEYS:
        value = values.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
        ):
            raise FrugalError(f"{source}: {key} must be a positive finite number, got {value!r}")
    for key in BOOL_KEYS:
        if values.get(key) is not None and not isinstance(values[key], bool):
            raise FrugalError(f"{source}: {key} must be true or false, got {values[key]!r}")
    layers = values.get("num_hidden_layers")
    if values.get("num_layers_per_stack") is None and layers is not None and layers > MAX_LAYERS_PER_STACK:
        raise FrugalError(
            f"{source}: num_hidden_layers={layers:,} is more than frugal-lm accepts "
            f"({MAX_LAYERS_PER_STACK:,} per stack)"
        )


def embedding_scale(config: ModelConfig) -> float:
    """The factor our model multiplies token embeddings by (`LanguageModel.embedding_scale`)."""
    return 1.0 / config.embedding_init_std


def to_hf_config(config: ModelConfig, special_ids: dict[str, int]) -> dict[str, Any]:
    """`config.json` for `config`; `special_ids` gives BOS (BOQ), EOS (EOA) and PAD."""
    if config.net != "hrm":
        raise FrugalError(
            f"net={config.net}: the transformers hrm_text format holds only HRM models (net=hrm); "
            f"there is no transformers equivalent to export this net to"
        )
    if config.kv_heads != config.n_heads:
        raise FrugalError(
            f"n_kv_heads={config.n_kv_heads}: the transformers hrm_text format has one key/value head per "
            f"query head ({config.n_heads}); a grouped-query model cannot be exported to it"
        )
    if not config.attention_gate:
        raise FrugalError(
            "attention_gate=false: the transformers hrm_text format always applies the sigmoid output gate; "
            "a model without it cannot be exported to it"
        )
    if config.moe.enabled:
        raise FrugalError(
            f"model.moe.experts={config.moe.experts}: the transformers hrm_text format has a dense SwiGLU in "
            f"every block; a mixture-of-experts model cannot be exported to it"
        )
    per_stack = config.layers_per_stack
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_layers_per_stack": per_stack,
        "num_hidden_layers": per_stack * config.h_cycles * (config.l_cycles + 1),
        "num_attention_heads": config.n_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        # Only HF's random init reads it (bounded to [0, 1] there); the forward uses embedding_scale.
        "initializer_range": min(config.embedding_init_std, 1.0),
        "embedding_scale": embedding_scale(config),
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "H_cycles": config.h_cycles,
        "L_cycles": config.l_cycles,
        "prefix_lm": True,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "dtype": "float32",
        "bos_token_id": special_ids["boq"],
        "eos_token_id": special_ids["eoa"],
        "pad_token_id": special_ids["pad"],
    }


def _init_std_for_scale(scale: float) -> float:
    """An init_std whose reciprocal is exactly `scale`, so our model multiplies by the same float."""
    std = 1.0 / scale
    for candidate in (std, math.nextafter(std, 0.0), math.nextafter(std, math.inf)):
        if 1.0 / candidate == scale:
            return candidate
    return std


def _expansion_for(intermediate: int, hidden: int, source: str) -> float:
    expansion = intermediate * 3 / (2 * hidden)
    if intermediate % 256 or round_up(round(expansion * hidden * 2 / 3), 256) != intermediate:
        raise FrugalError(
            f"{source}: intermediate_size={intermediate} is not a multiple of 256; frugal-lm's SwiGLU "
            f"width is round_up(expansion * hidden * 2/3, 256) and cannot express it"
        )
    return expansion


def from_hf_config(data: dict[str, Any], source: str | Path) -> ModelConfig:
    """Our `ModelConfig` for an hrm_text `config.json` (already parsed); refuses what we cannot run."""
    source = str(source)
    if data.get("model_type") != MODEL_TYPE:
        raise FrugalError(
            f"{source}: model_type is {data.get('model_type')!r}, expected {MODEL_TYPE!r} "
            f"(only transformers' HRM-Text models can be imported)"
        )
    _check_values(data, source)

    def get(key: str) -> Any:
        value = data.get(key)
        return HF_DEFAULTS[key] if value is None else value

    refusals = {
        "hidden_act": (get("hidden_act") in ("silu", "swish"), "frugal-lm's MLP is SwiGLU (silu)"),
        "attention_bias": (not get("attention_bias"), "frugal-lm's projections have no biases"),
        "mlp_bias": (not get("mlp_bias"), "frugal-lm's projections have no biases"),
        "prefix_lm": (bool(get("prefix_lm")), "frugal-lm models always attend bidirectionally over the instruction"),
    }
    for key, (ok, why) in refusals.items():
        if not ok:
            raise FrugalError(f"{source}: {key}={data.get(key)!r} is not supported: {why}")
    rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise FrugalError(
            f"{source}: rope_parameters.rope_type={rope_type!r} is not supported: frugal-lm "
            f"uses plain RoPE (rope_type 'default')"
        )
    rope_theta = rope.get("rope_theta", data.get("rope_theta")) or HF_DEFAULTS["rope_theta"]

    hidden, heads = get("hidden_size"), get("num_attention_heads")
    head_dim = get("head_dim")
    if hidden % heads or head_dim != hidden // heads:
        raise FrugalError(
            f"{source}: head_dim={head_dim} with hidden_size={hidden} and num_attention_heads={heads}; "
            f"frugal-lm needs head_dim = hidden_size / num_attention_heads"
        )
    # HrmTextConfig: without num_layers_per_stack, num_hidden_layers is the per-stack count.
    per_stack = data.get("num_layers_per_stack") or get("num_hidden_layers")
    scale = data.get("embedding_scale") or 1.0 / get("initializer_range")
    values = {
        "net": "hrm",
        "vocab_size": get("vocab_size"),
        "hidden_size": hidden,
        "n_layers": 2 * per_stack,
        "n_heads": heads,
        "expansion": _expansion_for(get("intermediate_size"), hidden, source),
        "h_cycles": get("H_cycles"),
        "l_cycles": get("L_cycles"),
        "rope_theta": float(rope_theta),
        "norm_eps": float(get("rms_norm_eps")),
        "init_std": _init_std_for_scale(float(scale)),
        "max_seq_len": get("max_position_embeddings"),
    }
    return validate(ModelConfig, values, source)


def tied_embeddings(data: dict[str, Any]) -> bool:
    return bool(data.get("tie_word_embeddings", HF_DEFAULTS["tie_word_embeddings"]))
