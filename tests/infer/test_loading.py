import pytest
import torch

from frugal_lm.errors import FrugalError
from frugal_lm.infer.loading import load_model
from frugal_lm.train.checkpoint import latest_checkpoint
from safetensors.torch import load_file


def test_run_dir_and_checkpoint_dir_load_the_same_ema_weights(tiny_run):
    from_run = load_model(tiny_run)
    checkpoint = latest_checkpoint(tiny_run)
    from_checkpoint = load_model(checkpoint)
    assert from_run.weights_path == checkpoint / "ema.safetensors"
    ema = load_file(checkpoint / "ema.safetensors")
    for name, tensor in from_checkpoint.model.state_dict().items():
        assert torch.equal(tensor, ema[name]), name
    assert not from_run.model.training
    assert from_run.tokenizer.special_ids == from_checkpoint.tokenizer.special_ids


def test_raw_weights_on_request_and_rope_tables_rebuilt(tiny_run):
    loaded = load_model(tiny_run, prefer_ema=False)
    assert loaded.weights_path.name == "model.safetensors"
    config = loaded.config
    expected = 1.0 / (config.rope_theta ** (torch.arange(0, config.head_dim, 2).float() / config.head_dim))
    assert torch.allclose(loaded.model.rotary.inv_freq, expected)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(FrugalError, match="no such model directory"):
        load_model(tmp_path / "missing")
    with pytest.raises(FrugalError, match="not a model directory"):
        load_model(tmp_path)
