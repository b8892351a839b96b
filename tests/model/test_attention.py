import math
import random

import pytest
import torch

from frugal_lm.data.batch import Example, pack_rows
from frugal_lm.errors import FrugalError
from frugal_lm.model import attention
from frugal_lm.model.attention import AttentionLayout, prefix_lm_attention, select_backend


def random_rows(rng: random.Random, n_rows: int, row_len: int) -> list[list[tuple[int, int]]]:
    """Random packings of (prefix_len, causal_len), including 1-token instructions,
    0-token causal parts (1-token responses) and rows with and without padding."""
    rows = []
    for _ in range(n_rows):
        row, used = [], 0
        while True:
            prefix_len = rng.choice([1, 1, 2, rng.randint(1, 12)])
            causal_len = rng.choice([0, 0, 1, rng.randint(0, 12)])
            if used + prefix_len + causal_len > row_len or (row and rng.random() < 0.15):
                break
            row.append((prefix_len, causal_len))
            used += prefix_len + causal_len
        rows.append(row)
    return rows


def brute_force_mask(rows, row_len) -> torch.Tensor:
    """allowed[b, q, k] from the definition, one example at a time."""
    allowed = torch.zeros(len(rows), row_len, row_len, dtype=torch.bool)
    for b, row in enumerate(rows):
        start = 0
        for prefix_len, causal_len in row:
            for q in range(prefix_len + causal_len):
                for k in range(prefix_len + causal_len):
                    allowed[b, start + q, start + k] = k <= q or k < prefix_len
            start += prefix_len + causal_len
    return allowed


def per_example_reference(q, k, v, rows) -> torch.Tensor:
    """Each example alone through plain softmax attention with its own PrefixLM mask."""
    out = torch.zeros_like(q)
    for b, row in enumerate(rows):
        start = 0
        for prefix_len, causal_len in row:
            n = prefix_len + causal_len
            span = slice(start, start + n)
            scores = q[b, :, span] @ k[b, :, span].transpose(-1, -2) / math.sqrt(q.shape[-1])
            positions = torch.arange(n)
            mask = (positions[None, :] <= positions[:, None]) | (positions[None, :] < prefix_len)
            out[b, :, span] = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v[b, :, span]
            start += n
    return out


def real_token_mask(layout: AttentionLayout) -> torch.Tensor:
    return (layout.segment_ids_BT >= 0)[:, None, :, None]


@pytest.mark.parametrize("seed", range(5))
def test_dense_mask_matches_brute_force_on_real_tokens(seed):
    rng = random.Random(seed)
    row_len = 48
    rows = random_rows(rng, 4, row_len)
    layout = AttentionLayout.from_lengths(rows, row_len)
    mask = layout.dense_mask_B1TT[:, 0]
    real = layout.segment_ids_BT >= 0
    expected = brute_force_mask(rows, row_len)
    real_pairs = real[:, :, None] & real[:, None, :]
    assert torch.equal(mask & real_pairs, expected)
    # No real query ever sees padding; padding sees exactly itself.
    assert not (mask & real[:, :, None] & ~real[:, None, :]).any()
    pad_rows = mask[~real]
    assert torch.equal(pad_rows.sum(-1), torch.ones(pad_rows.shape[0], dtype=torch.long))


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("seed", range(4))
def test_backends_match_per_example_reference(backend, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    row_len, heads, dim = 64, 2, 16
    rows = random_rows(rng, 3, row_len)
    layout = AttentionLayout.from_lengths(rows, row_len)
    q, k, v = (torch.randn(3, heads, row_len, dim) for _ in range(3))
    with torch.no_grad():
        out = prefix_lm_attention(q, k, v, layout, backend)
    expected = per_example_reference(q, k, v, rows)
    real = real_token_mask(layout).expand_as(out)
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-5)
    assert out.isfinite().all()


def reference_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False):
    """FlashAttention's varlen semantics, causal masks aligned bottom-right; with fewer key/value
    heads than query heads, query head h reads key/value head h // (H / G)."""
    k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    out = torch.zeros_like(q)
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
        ks, ke = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        if qe == qs:
            continue
        scores = torch.einsum("qhd,khd->hqk", q[qs:qe], k[ks:ke]) / math.sqrt(q.shape[-1])
        if causal:
            offset = (ke - ks) - (qe - qs)
            allowed = torch.arange(ke - ks)[None, :] <= torch.arange(qe - qs)[:, None] + offset
            scores = scores.masked_fill(~allowed, float("-inf"))
        out[qs:qe] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v[ks:ke])
    return out, None


@pytest.mark.parametrize("seed", range(3))
def test_fa3_varlen_decomposition_matches_reference(seed, monkeypatch):
    """The two varlen calls of the fa3 backend reproduce the mask (FlashAttention itself is
    replaced by a reference with its documented semantics; the kernel runs only on Hopper)."""
    import sys
    import types

    monkeypatch.setitem(
        sys.modules, "flash_attn_interface", types.SimpleNamespace(flash_attn_varlen_func=reference_varlen)
    )
    rng = random.Random(seed)
    torch.manual_seed(seed)
    row_len = 40
    rows = random_rows(rng, 3, row_len)
    layout = AttentionLayout.from_lengths(rows, row_len)
    q, k, v = (torch.randn(3, 2, row_len, 8) for _ in range(3))
    out = prefix_lm_attention(q, k, v, layout, "fa3")
    expected = per_example_reference(q, k, v, rows)
    real = real_token_mask(layout).expand_as(out)
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "flex", "fa3"])
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_attention_in_every_backend(backend, kv_heads, monkeypatch):
    """Keys and values with G < H heads: each backend equals the reference over key/value heads
    repeated to H (query head h reads key/value head h // (H / G)). FA3 is the stand-in."""
    import sys
    import types

    monkeypatch.setitem(
        sys.modules, "flash_attn_interface", types.SimpleNamespace(flash_attn_varlen_func=reference_varlen)
    )
    rng = random.Random(kv_heads)
    torch.manual_seed(kv_heads)
    row_len, heads, dim = 40, 4, 8
    rows = random_rows(rng, 3, row_len)
    layout = AttentionLayout.from_lengths(rows, row_len)
    q = torch.randn(3, heads, row_len, dim)
    k, v = (torch.randn(3, kv_heads, row_len, dim) for _ in range(2))
    with torch.no_grad():
        out = prefix_lm_attention(q, k, v, layout, backend)
    repeated = [x.repeat_interleave(heads // kv_heads, dim=1) for x in (k, v)]
    expected = per_example_reference(q, *repeated, rows)
    real = real_token_mask(layout).expand_as(out)
    assert out.shape == q.shape
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-5)


def test_varlen_layout_lengths():
    layout = AttentionLayout.from_lengths([[(2, 3), (1, 0)], [(4, 1)]], row_len=8)
    varlen = layout.varlen
    # Row 0: example (2+3), example (1+0), padding 2; row 1: example (4+1), padding 3.
    assert varlen.cu_seqlens.tolist() == [0, 5, 6, 8, 13, 16]
    assert varlen.cu_prefix_lens.tolist() == [0, 2, 3, 3, 7, 7]
    assert varlen.cu_causal_lens.tolist() == [0, 3, 3, 5, 6, 9]
    assert (varlen.max_seqlen, varlen.max_prefix_len, varlen.max_causal_len) == (5, 4, 3)


def test_layout_from_packed_batch_agrees_with_from_lengths():
    rows = [[Example([1, 2, 3], [4, 5]), Example([6], [7])], [Example([8, 9], [10, 11, 12])]]
    batch = pack_rows(rows, row_len=10)
    from_lengths = AttentionLayout.from_lengths([[(3, 1), (1, 0)], [(2, 2)]], 10)
    assert torch.equal(batch.segment_ids, from_lengths.segment_ids_BT)
    assert torch.equal(batch.prefix_mask, from_lengths.prefix_BT)


def test_select_backend_auto_on_cpu_is_sdpa():
    assert select_backend("auto", torch.device("cpu"), needs_grad=True) == "sdpa"


def test_forced_backends_that_cannot_run_fail_clearly(monkeypatch):
    with pytest.raises(FrugalError, match="flex runs on CPU only without gradients"):
        select_backend("flex", torch.device("cpu"), needs_grad=True)
    assert select_backend("flex", torch.device("cpu"), needs_grad=False) == "flex"
    monkeypatch.setattr(attention, "fa3_available", lambda: False)
    with pytest.raises(FrugalError, match="fa3 needs a CUDA GPU"):
        select_backend("fa3", torch.device("cpu"), needs_grad=False)
    with pytest.raises(FrugalError, match="unknown attention backend"):
        select_backend("xformers", torch.device("cpu"), needs_grad=False)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["sdpa", "flex", "fa3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_backends_on_gpu_match_the_reference_forward_and_backward(backend, dtype, kv_heads):
    """The real kernels (no stand-ins): outputs and input gradients against the
    per-example reference computed in fp32 on CPU."""
    if backend == "fa3" and not attention.fa3_available():
        pytest.skip("flash_attn_interface (FlashAttention 3) is not installed")
    if backend == "fa3" and dtype == torch.float32:
        pytest.skip("FlashAttention 3 runs in 16-bit only")
    rng = random.Random(0)
    torch.manual_seed(0)
    row_len, heads, dim = 256, 4, 64
    rows = random_rows(rng, 3, row_len)
    layout = AttentionLayout.from_lengths(rows, row_len)
    q = torch.randn(3, heads, row_len, dim)
    k, v = (torch.randn(3, kv_heads, row_len, dim) for _ in range(2))
    grad_out = torch.randn_like(q)
    real = real_token_mask(layout).expand_as(q)

    def run(function, device, dtype, *extra):
        inputs = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
        out = function(*inputs, *extra)
        # Padding rows' outputs are not defined by the mask: keep them out of the gradient.
        (out.float() * grad_out.to(device) * real.to(device)).sum().backward()
        return [t.detach().float().cpu() for t in (out, *(x.grad for x in inputs))]

    assert select_backend(backend, torch.device("cuda"), needs_grad=True) == backend
    ours = run(prefix_lm_attention, "cuda", dtype, layout.to("cuda"), backend)
    group = heads // kv_heads
    expected = run(
        lambda q, k, v: per_example_reference(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), rows),
        "cpu",
        torch.float32,
    )
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(ours[0][real], expected[0][real], atol=tolerance, rtol=tolerance)
    for got, want in zip(ours[1:], expected[1:]):
        torch.testing.assert_close(got, want, atol=tolerance, rtol=tolerance)


def test_the_model_builds_the_steps_mask_before_its_blocks_run():
    """Every layer and pass shares one mask (a cached property), made before any (compiled) block."""
    from frugal_lm.config import load_model_config
    from frugal_lm.model import build_model
    from frugal_lm.model.layers import Block

    model = build_model(load_model_config("tiny", "hrm", hidden_size=32, n_heads=2, vocab_size=64))
    layout = AttentionLayout.from_lengths([[(3, 4)], [(2, 2)]], row_len=8)
    mask_ready = []
    for block in model.modules():
        if isinstance(block, Block):
            block.register_forward_pre_hook(lambda module, args: mask_ready.append("dense_mask_B1TT" in vars(args[2])))
    model(torch.zeros(2, 8, dtype=torch.long), torch.arange(8).expand(2, 8), layout)
    assert len(mask_ready) == model.config.stack_passes * model.config.layers_per_stack and all(mask_ready)
