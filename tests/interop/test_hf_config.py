"""config.json <-> ModelConfig, checked against transformers' own HrmTextConfig."""

import pytest

from frugal_lm.config import ModelConfig, load_model_config
from frugal_lm.errors import FrugalError
from frugal_lm.interop.hf_config import HF_DEFAULTS, from_hf_config, to_hf_config

transformers = pytest.importorskip("transformers")

SPECIAL_IDS = {"boq": 1, "eoq": 2, "eoa": 3, "pad": 0}


def test_our_defaults_are_hrm_text_configs_defaults():
    config = transformers.HrmTextConfig()
    for key, value in HF_DEFAULTS.items():
        actual = config.rope_parameters["rope_theta"] if key == "rope_theta" else getattr(config, key)
        if key == "num_hidden_layers":
            actual = config.num_layers_per_stack  # the per-stack count HrmTextConfig was given
        assert actual == value, key


def test_the_released_architecture_is_our_xl_preset():
    """HrmTextConfig's defaults describe HRM-Text-1B: our XL preset (32 x 1536, 12 heads)."""
    imported = from_hf_config(transformers.HrmTextConfig().to_dict(), "config.json")
    xl = load_model_config("XL", vocab_size=151808)
    for key in (
        "net",
        "vocab_size",
        "hidden_size",
        "n_layers",
        "n_heads",
        "intermediate_size",
        "head_dim",
        "h_cycles",
        "l_cycles",
        "rope_theta",
        "norm_eps",
    ):
        assert getattr(imported, key) == getattr(xl, key), key
    assert 1.0 / imported.embedding_init_std == 50.0  # 1 / initializer_range, bitwise


def test_legacy_keys_read_as_transformers_reads_them():
    """Without num_layers_per_stack, num_hidden_layers is the per-stack count; rope_theta may sit at the top."""
    legacy = {
        "model_type": "hrm_text",
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "head_dim": 16,
        "rope_theta": 123456.0,
        "initializer_range": 0.03,
    }
    hf = transformers.HrmTextConfig.from_dict(legacy)
    ours = from_hf_config(legacy, "config.json")
    assert ours.layers_per_stack == hf.num_layers_per_stack == 3
    assert ours.rope_theta == hf.rope_parameters["rope_theta"] == 123456.0
    assert 1.0 / ours.embedding_init_std == hf.embedding_scale


@pytest.mark.parametrize("init_std", [None, 0.02, 0.1234567])
def test_export_then_import_keeps_every_forward_field(init_std):
    config = ModelConfig(
        hidden_size=96,
        n_layers=6,
        n_heads=3,
        expansion=3.0,
        h_cycles=3,
        l_cycles=1,
        rope_theta=5e5,
        norm_eps=1e-5,
        init_std=init_std,
        vocab_size=1000,
        max_seq_len=512,
    )
    exported = to_hf_config(config, SPECIAL_IDS)
    hf = transformers.HrmTextConfig.from_dict(exported)
    assert hf.num_layers_per_stack == 3 and hf.num_hidden_layers == 3 * 3 * 2
    assert hf.embedding_scale == 1.0 / config.embedding_init_std
    back = from_hf_config(exported, "config.json")
    for key in (
        "vocab_size",
        "hidden_size",
        "n_layers",
        "n_heads",
        "intermediate_size",
        "h_cycles",
        "l_cycles",
        "rope_theta",
        "norm_eps",
        "max_seq_len",
    ):
        assert getattr(back, key) == getattr(config, key), key
    assert 1.0 / back.embedding_init_std == 1.0 / config.embedding_init_std


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("model_type", "llama", "model_type is 'llama', expected 'hrm_text'"),
        ("hidden_act", "gelu", "hidden_act='gelu' is not supported"),
        ("attention_bias", True, "attention_bias=True is not supported"),
        ("mlp_bias", True, "mlp_bias=True is not supported"),
        ("prefix_lm", False, "prefix_lm=False is not supported"),
        ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}, "rope_type='linear'"),
        ("head_dim", 32, "frugal-lm needs head_dim = hidden_size / num_attention_heads"),
        ("intermediate_size", 300, "intermediate_size=300 is not a multiple of 256"),
    ],
)
def test_refuses_what_our_model_cannot_compute(key, value, message):
    data = to_hf_config(ModelConfig(hidden_size=32, n_layers=2, n_heads=2), SPECIAL_IDS)
    data[key] = value
    with pytest.raises(FrugalError, match=message):
        from_hf_config(data, "some/config.json")


def test_refuses_to_export_other_nets():
    with pytest.raises(FrugalError, match="net=universal: the transformers hrm_text format holds only HRM"):
        to_hf_config(ModelConfig(net="universal", hidden_size=32, n_layers=2, n_heads=2), SPECIAL_IDS)


@pytest.mark.parametrize(
    "departure, message",
    [
        ({"n_kv_heads": 1}, "n_kv_heads=1: the transformers hrm_text format has one key/value head per query head"),
        ({"attention_gate": False}, "attention_gate=false: the transformers hrm_text format always applies"),
        ({"moe": {"experts": 4}}, "model.moe.experts=4: the transformers hrm_text format has a dense SwiGLU"),
    ],
)
def test_refuses_to_export_grouped_query_or_ungated_attention(departure, message):
    with pytest.raises(FrugalError, match=message):
        to_hf_config(ModelConfig(hidden_size=32, n_layers=2, n_heads=2, **departure), SPECIAL_IDS)
    # The same config with n_kv_heads = n_heads is plain multi-head attention: exported.
    assert to_hf_config(ModelConfig(hidden_size=32, n_layers=2, n_heads=2, n_kv_heads=2), SPECIAL_IDS)
