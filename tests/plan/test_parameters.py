"""The planner's parameter breakdown: equal to the model's own count and to the built module,
and Grok-1's published figures from its preset."""

import pytest

from frugal_lm.config import load_model_config
from frugal_lm.model import build_model, parameter_counts
from frugal_lm.plan.parameters import ParameterBreakdown

VARIANTS = {
    "dense": {},
    "gqa": {"n_kv_heads": 2},
    "no-gate": {"attention_gate": False},
    "moe": {"moe": {"experts": 4, "top_k": 2, "intermediate_size": 256}},
    "moe-shared-first-dense": {
        "n_kv_heads": 1,
        "moe": {"experts": 4, "top_k": 1, "intermediate_size": 128, "shared_experts": 2, "first_dense_layers": 1},
    },
}


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_breakdown_equals_the_model_count_and_the_built_module(net, variant):
    config = load_model_config("tiny", net, vocab_size=512, **VARIANTS[variant])
    parameters = ParameterBreakdown.of(config)
    assert (parameters.total, parameters.active) == parameter_counts(config)
    model = build_model(config, device="meta")
    assert parameters.total == sum(p.numel() for p in model.parameters())


def test_active_parameters_by_hand():
    """tiny (hidden 128, 4 heads of 32, 4 layers) as a transformer with 2 key/value heads, no
    gate, 4 experts of width 256, top-2, one shared expert, the first block dense."""
    config = load_model_config(
        "tiny",
        "transformer",
        vocab_size=512,
        n_kv_heads=2,
        attention_gate=False,
        moe={"experts": 4, "top_k": 2, "intermediate_size": 256, "shared_experts": 1, "first_dense_layers": 1},
    )
    C, V = 128, 512
    attention = C * 128 * 2 + C * 64 * 2  # q, o; k, v of 2 heads of 32
    dense_ffn = 3 * C * 512  # the first block: SwiGLU of the dense width
    expert = 3 * C * 256
    embeddings = 2 * V * C
    total = embeddings + 4 * attention + dense_ffn + 3 * (4 * C + (4 + 1) * expert)
    active = embeddings + 4 * attention + dense_ffn + 3 * (4 * C + (2 + 1) * expert)
    parameters = ParameterBreakdown.of(config)
    assert (parameters.total, parameters.active) == (total, active)
    assert parameters.routed_experts == 3 * 4 * expert


def test_grok1_preset_counts_grok1s_published_parameters():
    config = load_model_config("grok1")
    assert config.net == "transformer" and config.kv_heads == 8 and not config.attention_gate
    parameters = ParameterBreakdown.of(config)
    assert parameters.embedding == pytest.approx(805e6, rel=0.001)
    assert parameters.attention == pytest.approx(88e6, rel=0.001)
    assert parameters.experts * parameters.expert == pytest.approx(4.83e9, rel=0.001)
    assert parameters.moe_blocks == 64 and parameters.top_k == 2
    assert parameters.total == pytest.approx(314e9, rel=0.01)


def test_the_1t_variant_has_1t_parameters_and_grok1s_layer_shape():
    grok, variant = load_model_config("grok1"), load_model_config("grok1-1t")
    assert 1e12 <= ParameterBreakdown.of(variant).total <= 1.02e12
    for key in ("hidden_size", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len", "attention_gate", "net"):
        assert getattr(variant, key) == getattr(grok, key), key
    assert variant.expert_intermediate_size == grok.expert_intermediate_size
    assert variant.moe.top_k == grok.moe.top_k and variant.moe.experts % 8 == 0
