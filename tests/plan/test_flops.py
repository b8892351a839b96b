import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from frugal_lm.config import load_model_config
from frugal_lm.data.batch import Example, pack_rows
from frugal_lm.model import AttentionLayout, build_model, language_model_loss
from frugal_lm.plan.flops import LengthProfile, attended_pairs, flop_breakdown, mean_bp_steps

ROWS = [[Example([1, 2, 3], [4, 5, 6, 7, 8]), Example([9, 10], [11, 12, 13])], [Example([1, 2, 3, 4, 5, 6], [7, 8])]]
ROW_LEN = 16


def _tiny(net: str = "hrm"):
    return load_model_config("tiny", net=net, vocab_size=384, hidden_size=64, n_heads=4, attention_backend="sdpa")


@pytest.mark.parametrize(
    "net,bp_steps", [("hrm", 2), ("hrm", 5), ("hrm", None), ("transformer", None), ("universal", 3)]
)
def test_matmul_flops_match_flop_counter(net, bp_steps):
    torch.manual_seed(0)
    config = _tiny(net)
    model = build_model(config)
    batch = pack_rows(ROWS, ROW_LEN)
    with FlopCounterMode(display=False) as counter:
        language_model_loss(model, batch, bp_steps=bp_steps).loss.backward()
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    # SDPA with a boolean mask on CPU is not counted; every counted FLOP is a dense matmul.
    assert set(counts) == {"aten.mm"}
    rows, labelled = batch.input_ids.numel(), int((batch.labels != -100).sum())
    predicted = flop_breakdown(config, bp_steps, label_fraction=labelled / rows)
    assert predicted.matmul * rows == pytest.approx(counts["aten.mm"], rel=1e-9)


def test_backward_counts_only_passes_in_window():
    config = _tiny()
    two, five = flop_breakdown(config, 2), flop_breakdown(config, 5)
    assert five.matmul_backward == pytest.approx(2.5 * two.matmul_backward)
    assert five.matmul_forward == two.matmul_forward


def test_attended_pairs_match_the_packed_mask():
    batch = pack_rows(ROWS, ROW_LEN)
    layout = AttentionLayout(batch.segment_ids, batch.prefix_mask)
    mask = layout.dense_mask_B1TT
    real = (batch.segment_ids >= 0)[:, None, :, None]
    measured = int((mask & real).sum())
    expected = sum(attended_pairs(len(e.instruction), e.packed_len) for row in ROWS for e in row)
    assert measured == expected
    profile = LengthProfile.from_examples((len(e.instruction), e.packed_len) for row in ROWS for e in row)
    assert profile.pairs_per_token == pytest.approx(expected / batch.n_tokens)


def test_attended_pairs_edge_cases():
    assert attended_pairs(0, 4) == 10  # purely causal: 1 + 2 + 3 + 4
    assert attended_pairs(4, 4) == 16  # fully bidirectional


def test_mean_bp_steps_follows_warmup():
    config = _tiny()
    # 2 -> 5 over the first 20%: floor steps 2,3,4 each over a third of the warmup.
    assert mean_bp_steps(config, 10_000) == pytest.approx(0.8 * 5 + 0.2 * 3, abs=1e-3)


@pytest.mark.parametrize("bp_steps", [2, 5])
def test_attention_flops_match_dense_math_kernel(bp_steps):
    """The math SDPA kernel multiplies the full T x T score matrix (the mask only zeroes it),
    so with T attended keys per token our attention count must equal its bmm FLOPs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    config = _tiny()
    model = build_model(config)
    batch = pack_rows(ROWS, ROW_LEN)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        language_model_loss(model, batch, bp_steps=bp_steps).loss.backward()
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    dense = flop_breakdown(config, bp_steps, profile=LengthProfile(pairs_per_token=float(ROW_LEN)))
    assert dense.attention * batch.input_ids.numel() == pytest.approx(counts["aten.bmm"], rel=1e-9)


FULL_ROWS = [
    [Example([1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11]), Example([9, 10], [11, 12, 13, 14, 15])],
    [Example([1, 2, 3, 4, 5, 6], list(range(7, 18)))],
]
"""Rows without padding: padding never reaches an expert, so the counter sees only real tokens there."""


@pytest.mark.parametrize(
    "net, overrides",
    [
        ("hrm", {"n_kv_heads": 2}),
        ("transformer", {"n_kv_heads": 1, "attention_gate": False}),
        ("transformer", {"moe": {"experts": 4, "top_k": 2, "intermediate_size": 64, "implementation": "loop"}}),
        (
            "hrm",
            {
                "n_kv_heads": 2,
                "moe": {
                    "experts": 4,
                    "top_k": 1,
                    "intermediate_size": 64,
                    "shared_experts": 1,
                    "first_dense_layers": 1,
                    "implementation": "loop",
                },
            },
        ),
    ],
    ids=["gqa", "gqa-no-gate", "moe", "hrm-moe-shared-first-dense"],
)
def test_gqa_gate_and_expert_flops_match_flop_counter(net, overrides):
    """The per-expert loop runs one mm per expert over its tokens, which the counter sees: the
    router, top_k routed and shared experts, dense first blocks and GQA projections all agree."""
    torch.manual_seed(0)
    config = load_model_config(
        "tiny", net=net, vocab_size=384, hidden_size=64, n_heads=4, attention_backend="sdpa", **overrides
    )
    model = build_model(config)
    batch = pack_rows(FULL_ROWS, ROW_LEN)
    assert bool((batch.segment_ids >= 0).all())
    with FlopCounterMode(display=False) as counter:
        language_model_loss(model, batch, bp_steps=3).loss.backward()
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    rows, labelled = batch.input_ids.numel(), int((batch.labels != -100).sum())
    predicted = flop_breakdown(config, 3, label_fraction=labelled / rows)
    assert predicted.matmul * rows == pytest.approx(counts["aten.mm"], rel=1e-9)


def test_moe_forward_flops_per_pass_by_hand():
    """Per token and block: 2 x (attention + router + (top_k + shared) x expert), dense blocks
    2 x (attention + SwiGLU)."""
    from frugal_lm.plan.flops import matmul_flops_per_pass

    moe = {"experts": 8, "top_k": 2, "intermediate_size": 96, "shared_experts": 1, "first_dense_layers": 1}
    config = load_model_config("tiny", "transformer", hidden_size=64, n_heads=4, n_kv_heads=2, moe=moe)
    attention = 64 * (64 + 64 + 32 + 32 + 64)  # q, o, k, v (2 heads of 16), gate
    dense = attention + 3 * 64 * config.intermediate_size
    moe_block = attention + 8 * 64 + (2 + 1) * 3 * 64 * 96
    assert matmul_flops_per_pass(config) == 2 * (dense + 3 * moe_block)
