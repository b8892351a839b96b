import pytest
import torch

from frugal_lm.infer.loading import PRECISIONS, load_model
from frugal_lm.infer.quantize import Int8WeightOnlyLinear, has_int8_weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_is_the_matmul_with_its_dequantized_weight(dtype):
    torch.manual_seed(0)
    weight_OI = torch.randn(48, 32)
    weight_OI[3] = 0.0  # an all-zero row must not divide by zero
    linear = Int8WeightOnlyLinear(weight_OI.to(dtype), dtype)
    dequantized_OI = linear.dequantized()
    # Per row, the error is at most half a step of that row's scale (a bf16 scale, rounded
    # to 8 bits, adds up to a quarter step at the row's largest weights).
    step_O1 = weight_OI.to(dtype).float().abs().amax(dim=1, keepdim=True) / 127
    bound_O1 = step_O1 * (0.5001 if dtype == torch.float32 else 0.8)
    assert ((dequantized_OI - weight_OI.to(dtype).float()).abs() <= bound_O1).all()
    assert torch.equal(linear.weight_int8[3], torch.zeros(32, dtype=torch.int8))
    x_BTI = torch.randn(2, 5, 32).to(dtype)
    expected = x_BTI.float() @ dequantized_OI.T
    got = linear(x_BTI)
    assert got.shape == (2, 5, 48) and got.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())


def test_int8_model_quantizes_every_linear_and_tracks_fp32_logits(tiny_run):
    from frugal_lm.model import AttentionLayout

    fp32 = load_model(tiny_run)
    int8 = load_model(tiny_run, dtype=PRECISIONS["int8"])
    assert has_int8_weights(int8.model)
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.model.modules())
    assert int8.model.rotary.inv_freq.dtype == torch.float32
    assert int8.model.embed_tokens.weight.dtype == torch.bfloat16
    tokens = torch.arange(3, 23)[None]
    layout = AttentionLayout.from_lengths([[(12, 8)]], 20)
    with torch.inference_mode():
        expected = fp32.model(tokens, torch.arange(20)[None], layout)
        got = int8.model(tokens, torch.arange(20)[None], layout).float()
    # bf16 activations and int8 weights: close to fp32, not equal.
    relative = (got - expected).norm() / expected.norm()
    assert relative < 0.05, relative
    assert not torch.equal(got, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_model_runs_on_a_gpu_and_tracks_its_cpu_logits(tiny_run):
    from frugal_lm.model import AttentionLayout

    on_cpu = load_model(tiny_run, dtype=PRECISIONS["int8"])
    on_gpu = load_model(tiny_run, device="cuda", dtype=PRECISIONS["int8"])
    assert torch.equal(on_gpu.model.lm_head.weight_int8.cpu(), on_cpu.model.lm_head.weight_int8)
    tokens = torch.arange(3, 23)[None]
    layout = AttentionLayout.from_lengths([[(12, 8)]], 20)
    with torch.inference_mode():
        expected = on_cpu.model(tokens, torch.arange(20)[None], layout).float()
        got = on_gpu.model(tokens.cuda(), torch.arange(20, device="cuda")[None], layout.to("cuda")).float().cpu()
    assert (got - expected).norm() / expected.norm() < 0.02
