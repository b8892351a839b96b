import pytest
import torch
from safetensors.torch import load_file

from frugal_lm.errors import FrugalError
from frugal_lm.infer.loading import load_model
from frugal_lm.train.checkpoint import latest_checkpoint


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


def test_inference_precision_auto_is_bf16_on_gpu_only_and_int8_computes_in_bf16():
    from frugal_lm.infer.loading import inference_precision

    assert inference_precision("auto", torch.device("cpu")).compute_dtype == torch.float32
    assert inference_precision("auto", torch.device("cuda")).compute_dtype == torch.bfloat16
    assert inference_precision("bf16", torch.device("cpu")).compute_dtype == torch.bfloat16
    int8 = inference_precision("int8", torch.device("cpu"))
    assert (int8.compute_dtype, int8.int8_weights) == (torch.bfloat16, True)
    with pytest.raises(FrugalError, match="--dtype must be auto, fp32, bf16, int8; got 'fp16'"):
        inference_precision("fp16", torch.device("cpu"))


def test_loaded_model_reports_its_precision(tiny_run):
    from frugal_lm.infer.loading import PRECISIONS

    for name, precision in PRECISIONS.items():
        assert load_model(tiny_run, dtype=precision).precision == name


def test_bf16_model_has_rounded_weights_fp32_rope_and_close_logits(tiny_run):
    from frugal_lm.model import AttentionLayout

    fp32, bf16 = load_model(tiny_run), load_model(tiny_run, dtype=torch.bfloat16)
    for (name, full), (_, half) in zip(fp32.model.state_dict().items(), bf16.model.state_dict().items()):
        assert half.dtype == torch.bfloat16 and torch.equal(full.to(torch.bfloat16), half), name
    assert bf16.model.rotary.inv_freq.dtype == torch.float32
    assert torch.equal(bf16.model.rotary.inv_freq, fp32.model.rotary.inv_freq)
    tokens = torch.arange(3, 23)[None]
    layout = AttentionLayout.from_lengths([[(12, 8)]], 20)
    with torch.inference_mode():
        expected = fp32.model(tokens, torch.arange(20)[None], layout)
        got = bf16.model(tokens, torch.arange(20)[None], layout)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.05)


def test_a_demo_directory_loads_its_run_and_serves_under_the_demo_name(tiny_run, tmp_path, capsys):
    """`frugal eval --model runs/demo ...` as the README writes it: the demo's run/ is the model."""
    import json
    import shutil

    from frugal_lm.cli import main
    from frugal_lm.infer.loading import default_model_name

    demo = tmp_path / "demo"
    shutil.copytree(tiny_run, demo / "run", ignore=shutil.ignore_patterns("train_state"))
    assert load_model(demo).weights_path == load_model(demo / "run").weights_path
    assert (
        main(
            [
                "eval",
                "--model",
                str(demo),
                "--tasks",
                "synthetic",
                "--data-dir",
                str(tiny_run.parent / "synth"),
                "--limit",
                "2",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["config"]["weights"].startswith(
        str(demo / "run")
    )
    assert default_model_name(demo) == default_model_name(demo / "run") == "demo"
    assert (
        default_model_name(latest_checkpoint(demo / "run")) == f"demo-step{int(latest_checkpoint(tiny_run).name[5:])}"
    )
    assert default_model_name(tiny_run) == tiny_run.parent.name
