"""Reading transformers weight files: layouts, tied embeddings, and every way a directory can be wrong."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from frugal_lm.cli import main
from frugal_lm.errors import FrugalError
from frugal_lm.infer.loading import load_model
from frugal_lm.interop import import_hf, read_hf_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(tiny_run, tmp_path_factory, ref):
    directory = tmp_path_factory.mktemp("hf") / "model"
    ref.make_hf_model(directory, ref.tokenizer_dir(tiny_run), seed=1)
    return directory


def _copy(hf_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(hf_dir, target)
    return target


def test_unfused_in_memory_names_import_to_the_same_model(hf_dir, tmp_path):
    """A state_dict saved directly (self_attn.q_proj, mlp.up_proj, ...) imports like the fused on-disk layout."""
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    unfused = _copy(hf_dir, tmp_path)
    save_file(
        {name: tensor.contiguous() for name, tensor in model.state_dict().items()},
        str(unfused / "model.safetensors"),
        metadata={"format": "pt"},
    )
    assert "model.L_module.layers.0.self_attn.q_proj.weight" in load_file(unfused / "model.safetensors")
    fused, plain = read_hf_model(hf_dir).weights, read_hf_model(unfused).weights
    assert fused.keys() == plain.keys() and all(torch.equal(fused[name], plain[name]) for name in fused)


def test_tied_embeddings_import_as_a_copied_head(tiny_run, tmp_path, ref):
    model = ref.make_hf_model(tmp_path / "tied", ref.tokenizer_dir(tiny_run), tie_word_embeddings=True)
    assert "lm_head.weight" not in load_file(tmp_path / "tied" / "model.safetensors")
    ours = load_model(tmp_path / "tied")
    assert torch.equal(ours.model.lm_head.weight, model.model.embed_tokens.weight)
    examples = ref.encoded_examples(ours.tokenizer)
    with torch.no_grad():
        hf_logits = model(**ref.hf_inputs(examples, ours.tokenizer.special_ids["pad"])).logits
    assert ref.max_logit_difference(ref.our_logits(ours.model, examples), hf_logits, examples) <= 1e-4


def test_bf16_weights_import_exactly_as_fp32(hf_dir, tmp_path):
    half = _copy(hf_dir, tmp_path)
    weights = load_file(half / "model.safetensors")
    save_file(
        {n: t.to(torch.bfloat16) for n, t in weights.items()},
        str(half / "model.safetensors"),
        metadata={"format": "pt"},
    )
    result = import_hf(half, tmp_path / "ours")
    assert result.source_dtypes == ["bfloat16"]
    imported = load_file(tmp_path / "ours" / "model.safetensors")
    expected = weights["model.embed_tokens.weight"].to(torch.bfloat16).float()
    assert imported["embed_tokens.weight"].dtype == torch.float32
    assert torch.equal(imported["embed_tokens.weight"], expected)


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def _drop_tensor(directory, name):
    weights = load_file(directory / "model.safetensors")
    del weights[name]
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _set_tensor(directory, name, make):
    weights = load_file(directory / "model.safetensors")
    weights[name] = make(weights[name])
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _add_tensor(directory, name):
    weights = load_file(directory / "model.safetensors")
    weights[name] = torch.zeros(3)
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize(
    "break_it,message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors or model.safetensors.index.json"),
        (lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"), "frugal-lm never unpickles"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
        (lambda d: (d / "config.json").write_text("{\n  oops"), "config.json:2: not valid JSON"),
        (lambda d: _edit_config(d, model_type="llama"), "model_type is 'llama', expected 'hrm_text'"),
        (lambda d: _edit_config(d, hidden_size=64, head_dim=32), "has shape .*, config.json implies"),
        (
            lambda d: _edit_config(d, vocab_size=100),
            "the tokenizer has .* tokens, more than the model's vocab_size 100",
        ),
        (lambda d: _drop_tensor(d, "model.z_L_init"), "tensor 'model.z_L_init' is missing"),
        (lambda d: _add_tensor(d, "model.extra.weight"), "unexpected tensor 'model.extra.weight'"),
        (lambda d: _add_tensor(d, "vision_tower.weight"), "unexpected tensor 'vision_tower.weight'"),
        (lambda d: (d / "model.safetensors").write_bytes(b"not safetensors"), "unreadable safetensors file"),
        # config.json values of the wrong type or range: one line naming the file and key.
        (
            lambda d: _edit_config(d, num_attention_heads=0),
            "config.json: num_attention_heads must be a positive integer",
        ),
        (
            lambda d: _edit_config(d, hidden_size="128"),
            "config.json: hidden_size must be a positive integer, got '128'",
        ),
        (lambda d: _edit_config(d, intermediate_size=0), "config.json: intermediate_size must be a positive integer"),
        (lambda d: _edit_config(d, rms_norm_eps=-1e-5), "config.json: rms_norm_eps must be a positive finite number"),
        (
            lambda d: _edit_config(d, max_position_embeddings=10**9),
            r"config.json: max_position_embeddings=1,000,000,000 is more than frugal-lm accepts \(1,048,576\)",
        ),
        (lambda d: _edit_config(d, max_position_embeddings=1e9), "max_position_embeddings must be a positive integer"),
        (
            lambda d: _edit_config(d, hidden_size=30, head_dim=15, num_attention_heads=2),
            "config.json: invalid .*must be even for RoPE",
        ),  # our ModelConfig's check, one line
        # Tensors that are not usable weights: named with their file.
        (
            lambda d: _set_tensor(d, "model.embed_tokens.weight", lambda t: t.to(torch.int8)),
            "model.safetensors: tensor 'model.embed_tokens.weight' is int8",
        ),
        (
            lambda d: _set_tensor(d, "model.embed_tokens.weight", lambda t: t > 0),
            "model.safetensors: tensor 'model.embed_tokens.weight' is bool",
        ),
        (
            lambda d: _set_tensor(d, "model.z_L_init", lambda t: torch.full_like(t, float("nan"))),
            "model.safetensors: tensor 'model.z_L_init' has .* NaN or infinite values",
        ),
    ],
)
def test_clear_errors_for_broken_directories(hf_dir, tmp_path, capsys, break_it, message):
    broken = _copy(hf_dir, tmp_path)
    break_it(broken)
    with pytest.raises(FrugalError, match=message):
        import_hf(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    # The CLI prints one line and exits 2, no traceback.
    assert main(["import", "hf", "--hf-dir", str(broken), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("frugal import: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_clear_errors_for_broken_shards(tiny_run, tmp_path, ref):
    sharded = tmp_path / "sharded"
    ref.make_hf_model(sharded, ref.tokenizer_dir(tiny_run), max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    first_shard = sorted(set(index["weight_map"].values()))[0]
    (sharded / first_shard).unlink()
    with pytest.raises(FrugalError, match=f"shard {first_shard} is missing"):
        import_hf(sharded, tmp_path / "out")
    index["weight_map"] = {name: "model-00002-of-00010.safetensors" for name in index["weight_map"]}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FrugalError, match="the index lists .* in this shard, but it is not there"):
        import_hf(sharded, tmp_path / "out")
    (sharded / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(FrugalError, match="not a safetensors index with a weight_map"):
        import_hf(sharded, tmp_path / "out")


@pytest.mark.parametrize("outside", ["../elsewhere.safetensors", "/etc/hostname"])
def test_shard_paths_outside_the_model_directory_are_refused(tiny_run, tmp_path, capsys, ref, outside):
    sharded = tmp_path / "sharded"
    ref.make_hf_model(sharded, ref.tokenizer_dir(tiny_run), max_shard_size="20KB")
    shard = sorted(sharded.glob("model-*.safetensors"))[0]
    shutil.copyfile(shard, tmp_path / "elsewhere.safetensors")  # a real file is there: only the path is wrong
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["weight_map"] = {name: outside if file == shard.name else file for name, file in index["weight_map"].items()}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    capsys.readouterr()  # transformers' progress bar while saving
    with pytest.raises(FrugalError, match=f"shard '{outside}' is outside the model directory"):
        import_hf(sharded, tmp_path / "out")
    assert main(["import", "hf", "--hf-dir", str(sharded), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is outside the model directory" in err and err.count("\n") == 1


def test_exports_and_imports_carry_a_checksum_that_loading_verifies(exported, tmp_path, hf_dir):
    from frugal_lm.train.safetensors_io import CHECKSUM_KEY

    copy = _copy(exported, tmp_path)
    with open(copy / "model.safetensors", "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        assert CHECKSUM_KEY.encode() in handle.read(header_size)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[8 + header_size] ^= 0x01  # a low mantissa bit: the value stays finite
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(FrugalError, match="model.safetensors: the tensor data does not match the file's checksum"):
        load_model(copy)
    import_hf(hf_dir, tmp_path / "ours")
    with open(tmp_path / "ours" / "model.safetensors", "rb") as handle:
        assert CHECKSUM_KEY.encode() in handle.read(8 + int.from_bytes(handle.read(8), "little"))


def test_missing_directory(tmp_path):
    with pytest.raises(FrugalError, match="no such directory"):
        import_hf(tmp_path / "nowhere", tmp_path / "out")
