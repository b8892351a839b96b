"""Grouped-query attention and the optional attention gate (`model.n_kv_heads`,
`model.attention_gate`), checked against the multi-head gated block they depart from."""

import pytest
import torch

from frugal_lm.config import load_model_config
from frugal_lm.model import AttentionLayout, build_model, count_parameters, language_model_loss
from frugal_lm.model.layers import GatedAttention

ROWS = [[(3, 5), (2, 3)], [(6, 2)]]
ROW_LEN = 16


def tiny(net="hrm", **overrides):
    return load_model_config("tiny", net, vocab_size=64, hidden_size=32, n_heads=4, max_seq_len=ROW_LEN, **overrides)


def forward(model):
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (2, ROW_LEN), generator=generator)
    positions = torch.arange(ROW_LEN).expand(2, ROW_LEN)
    return model(tokens, positions, AttentionLayout.from_lengths(ROWS, ROW_LEN))


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_grouped_query_attention_equals_multi_head_with_shared_key_value_heads(n_kv_heads):
    """A GQA model is the MHA model whose key/value heads repeat per group: copy its weights
    with k_proj/v_proj rows repeated group-wise and the logits agree."""
    torch.manual_seed(0)
    gqa = build_model(tiny(n_kv_heads=n_kv_heads)).eval()
    mha = build_model(tiny()).eval()
    group, head_dim = 4 // n_kv_heads, 8
    state = {}
    for name, tensor in gqa.state_dict().items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            tensor = tensor.view(n_kv_heads, head_dim, -1).repeat_interleave(group, dim=0).reshape(4 * head_dim, -1)
        state[name] = tensor
    mha.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(forward(gqa), forward(mha), rtol=1e-5, atol=1e-5)


def test_attention_without_gate_has_no_gate_weights_and_is_the_ungated_projection():
    """No gate: out = o_proj(attention). A gated block with gate weights 0 (sigmoid = 1/2) and
    o_proj doubled computes the same thing exactly."""
    torch.manual_seed(0)
    ungated = build_model(tiny(attention_gate=False)).eval()
    assert not any("gate_proj" in name and "self_attn" in name for name, _ in ungated.named_parameters())
    gated = build_model(tiny()).eval()
    state = dict(ungated.state_dict())
    for name, tensor in gated.state_dict().items():
        if name.endswith("self_attn.gate_proj.weight"):
            state[name] = torch.zeros_like(tensor)
    for name in list(state):
        if name.endswith("self_attn.o_proj.weight"):
            state[name] = 2 * state[name]
    gated.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(forward(ungated), forward(gated), rtol=1e-6, atol=1e-6)


def test_defaults_keep_the_multi_head_gated_block():
    attention = GatedAttention(tiny())
    assert attention.k_proj.weight.shape == attention.q_proj.weight.shape == (32, 32)
    assert attention.gate_proj is not None and attention.gate_proj.weight.shape == (32, 32)
    grouped = GatedAttention(tiny(n_kv_heads=1, attention_gate=False))
    assert grouped.k_proj.weight.shape == grouped.v_proj.weight.shape == (8, 32)
    assert grouped.gate_proj is None


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
@pytest.mark.parametrize(
    "overrides", [{"n_kv_heads": 2}, {"attention_gate": False}, {"n_kv_heads": 1, "attention_gate": False}]
)
def test_parameter_count_and_gradients_with_gqa_and_without_gate(net, overrides):
    from frugal_lm.data.batch import Example, pack_rows

    config = tiny(net, **overrides)
    model = build_model(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    batch = pack_rows([[Example([1, 2, 3], [4, 5, 6])], [Example([7, 8], [9, 10, 11, 12])]], ROW_LEN)
    language_model_loss(model, batch).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.isfinite().all(), name
    k_proj = next(m.k_proj for m in model.modules() if isinstance(m, GatedAttention))
    assert k_proj.weight.grad.abs().sum() > 0
