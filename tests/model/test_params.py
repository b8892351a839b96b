import pytest
import torch

from frugal_lm.config import load_model_config, preset_names
from frugal_lm.model import build_model, count_parameters


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
@pytest.mark.parametrize("preset", ["tiny", "B", "L", "XL", "XXL"])
def test_count_parameters_equals_instantiated_model(preset, net):
    config = load_model_config(preset, net, vocab_size=65536)
    model = build_model(config, device="meta")
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    assert all(p.is_meta for p in model.parameters())


def test_xl_is_the_1b_model():
    assert count_parameters(load_model_config("XL", vocab_size=65536)) == pytest.approx(1.18e9, rel=0.005)


def test_presets_are_listed():
    assert preset_names() == sorted(["tiny", "B", "L", "XL", "XXL", "grok1", "grok1-1t"])


@pytest.mark.parametrize("preset", ["grok1", "grok1-1t"])
def test_moe_presets_count_equals_the_built_module(preset):
    config = load_model_config(preset)
    model = build_model(config, device="meta")
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())


def test_meta_model_materialises_with_the_same_init_distribution():
    config = load_model_config("tiny", vocab_size=256)
    model = build_model(config, device="meta")
    model.to_empty(device="cpu")
    model.reset_parameters()
    reference = build_model(config)
    for (name, tensor), (_, expected) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert tensor.isfinite().all(), name
        assert tensor.std().item() == pytest.approx(expected.std().item(), rel=0.25), name
    assert torch.equal(model.rotary.inv_freq, reference.rotary.inv_freq)
