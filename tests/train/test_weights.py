"""Weight files are verified when read: a checksum mismatch, non-float or non-finite tensors are
one-line errors naming the file and tensor, never a model that generates garbage with exit 0."""

import shutil
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from frugal_lm.cli import main
from frugal_lm.errors import FrugalError
from frugal_lm.train.safetensors_io import CHECKSUM_KEY, checksum_metadata, read_tensors
from frugal_lm.train.weights import load_weights, read_model_config


def _checkpoint_copy(tiny_run, tmp_path):
    """A copy of the tiny run's latest checkpoint (the shared fixture must stay intact)."""
    source = sorted((tiny_run / "checkpoints").glob("step_*"))[-1]
    target = tmp_path / "checkpoint"
    shutil.copytree(source, target)
    return target


def _flip_first_data_byte(path):
    """Flip the lowest mantissa bit of the first stored value: still finite, only a checksum sees it."""
    data = bytearray(path.read_bytes())
    header_size = struct.unpack("<Q", data[:8])[0]
    data[8 + header_size] ^= 0x01
    path.write_bytes(bytes(data))


def _metadata(path):
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def _one_line_error(capsys, arguments):
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_checkpoints_carry_a_checksum_of_their_tensors(tiny_run):
    checkpoint = sorted((tiny_run / "checkpoints").glob("step_*"))[-1]
    for name in ("model.safetensors", "ema.safetensors"):
        stored = _metadata(checkpoint / name).get(CHECKSUM_KEY)
        assert stored and checksum_metadata(load_file(checkpoint / name))[CHECKSUM_KEY] == stored


def test_a_flipped_byte_in_a_checkpoint_is_refused_naming_the_file(tiny_run, tmp_path, capsys):
    checkpoint = _checkpoint_copy(tiny_run, tmp_path)
    _flip_first_data_byte(checkpoint / "ema.safetensors")
    with pytest.raises(FrugalError, match="ema.safetensors: the tensor data does not match the file's checksum"):
        load_weights(checkpoint, read_model_config(checkpoint))
    err = _one_line_error(capsys, ["generate", "--model", str(checkpoint), "--prompt", "1+1=", "--max-new-tokens", "2"])
    assert "ema.safetensors" in err and "checksum" in err


def test_nan_weights_are_refused_naming_the_file_and_tensor(tiny_run, tmp_path, capsys):
    checkpoint = _checkpoint_copy(tiny_run, tmp_path)
    weights = load_file(checkpoint / "ema.safetensors")
    weights = {name: torch.full_like(tensor, float("nan")) for name, tensor in weights.items()}
    save_file(weights, str(checkpoint / "ema.safetensors"), metadata=checksum_metadata(weights))  # checksum is right
    first = sorted(weights)[0]
    with pytest.raises(FrugalError, match=f"ema.safetensors: tensor '{first}' has .* NaN or infinite values"):
        load_weights(checkpoint, read_model_config(checkpoint))
    err = _one_line_error(capsys, ["generate", "--model", str(checkpoint), "--prompt", "1+1="])
    assert f"'{first}'" in err


def test_weights_without_a_checksum_still_load(tiny_run, tmp_path):
    checkpoint = _checkpoint_copy(tiny_run, tmp_path)
    weights = load_file(checkpoint / "ema.safetensors")
    save_file(weights, str(checkpoint / "ema.safetensors"))  # as a third party or an older version wrote it
    assert CHECKSUM_KEY not in _metadata(checkpoint / "ema.safetensors")
    loaded = load_weights(checkpoint, read_model_config(checkpoint))
    assert all(torch.equal(loaded[name], weights[name]) for name in weights)


def test_integer_and_bool_tensors_are_not_weights(tmp_path):
    for dtype in (torch.int8, torch.bool):
        path = tmp_path / f"{dtype}.safetensors"
        save_file({"a.weight": torch.zeros(2, 2), "b.weight": torch.ones(3, dtype=dtype)}, str(path))
        with pytest.raises(FrugalError, match=f"tensor 'b.weight' is {str(dtype).removeprefix('torch.')}"):
            read_tensors(path)
