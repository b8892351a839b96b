"""The mixture-of-experts FFN against transformers' MoE blocks, and its own contracts: grouped
and portable paths agree, padding never reaches an expert, capacity drops are counted, the
balance statistics follow their formulas, and a compiled block has no graph break."""

import math

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from frugal_lm.config import ModelConfig, MoeConfig
from frugal_lm.model import AttentionLayout, build_model, count_parameters, parameter_counts
from frugal_lm.model.layers import feed_forward
from frugal_lm.model.lm import trunc_normal_
from frugal_lm.model.moe import Experts, MixtureOfExperts, RoutingRecorder, attach_recorder, moe_layers

C, W, E = 32, 16, 4
# Two rows of 12 tokens: row 0 holds examples of 7 and 3 tokens and 2 pads, row 1 one of 9 and 3 pads.
ROWS = [[(3, 4), (1, 2)], [(4, 5)]]
T = 12


def moe_config(net="transformer", **moe) -> ModelConfig:
    moe = {"experts": E, "top_k": 2, "intermediate_size": W, **moe}
    return ModelConfig(net=net, vocab_size=64, hidden_size=C, n_layers=2, n_heads=2, expansion=2, moe=MoeConfig(**moe))


def moe_block(**moe) -> MixtureOfExperts:
    torch.manual_seed(0)
    block = feed_forward(moe_config(**moe), 0)
    assert isinstance(block, MixtureOfExperts)
    block.reset_parameters(trunc_normal_)
    return block


def segments() -> torch.Tensor:
    return AttentionLayout.from_lengths(ROWS, T).segment_ids_BT


def starved_input(block: MixtureOfExperts) -> torch.Tensor:
    """Inputs whose feature 0 is a constant 4 and a router that scores expert E-1 far down on
    it: that expert gets no token at all."""
    x = torch.randn(2, T, C, generator=torch.Generator().manual_seed(1))
    x[..., 0] = 4.0
    with torch.no_grad():
        block.gate.weight[:, 0] = torch.tensor([1.0] * (E - 1) + [-3.0])
    return x.requires_grad_()


def reported(block: MixtureOfExperts) -> list:
    block.report()
    return block.recorder.take()


def run(module, x, real_BT, *args):
    """Output, and the gradients of a fixed random loss over the real tokens only."""
    out = module(x, *args)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * upstream)[real_BT].sum().backward()
    grads = {name: param.grad.clone() for name, param in module.named_parameters()}
    return out, x.grad.clone(), grads


def assert_same_block(ours: MixtureOfExperts, theirs: torch.nn.Module, x: torch.Tensor) -> None:
    real_BT = segments() >= 0
    x_theirs = x.detach().clone().requires_grad_()
    out, grad_x, grads = run(ours, x, real_BT, segments())
    expected, expected_grad_x, expected_grads = run(theirs, x_theirs, real_BT)
    torch.testing.assert_close(out[real_BT], expected[real_BT], rtol=0, atol=1e-5)
    torch.testing.assert_close(grad_x, expected_grad_x, rtol=0, atol=1e-5)
    assert set(grads) == set(expected_grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=0, atol=1e-5, msg=name)
    assert grads["experts.gate_up_proj"][E - 1].abs().max() == 0  # the starved expert


@pytest.mark.parametrize("implementation", ["grouped", "loop"])
def test_matches_qwen3_moe_block_softmax_normalised_topk(implementation):
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    ours = moe_block(score="softmax", norm_topk=True, implementation=implementation)
    x = starved_input(ours)
    hf_config = Qwen3MoeConfig(
        hidden_size=C, num_experts=E, num_experts_per_tok=2, moe_intermediate_size=W, norm_topk_prob=True
    )
    theirs = Qwen3MoeSparseMoeBlock(hf_config)
    state = ours.state_dict()
    assert state.pop("gate.e_score_correction_bias").abs().max() == 0
    assert {name: tuple(t.shape) for name, t in state.items()} == {
        name: tuple(t.shape) for name, t in theirs.state_dict().items()
    }
    theirs.load_state_dict(state, strict=True)
    assert_same_block(ours, theirs, x)


@pytest.mark.parametrize("implementation", ["grouped", "loop"])
def test_matches_deepseek_v3_moe_sigmoid_bias_for_selection_scaled_with_a_shared_expert(implementation):
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    ours = moe_block(score="sigmoid", norm_topk=True, route_scale=2.5, shared_experts=1, implementation=implementation)
    x = starved_input(ours)
    with torch.no_grad():  # a selection bias that changes the choice but not the weights
        ours.gate.e_score_correction_bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    hf_config = DeepseekV3Config(
        hidden_size=C,
        n_routed_experts=E,
        num_experts_per_tok=2,
        moe_intermediate_size=W,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    )
    theirs = DeepseekV3MoE(hf_config)
    state = ours.state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == {
        name: tuple(t.shape) for name, t in theirs.state_dict().items()
    }
    theirs.load_state_dict(state, strict=True)
    assert_same_block(ours, theirs, x)
    # The bias chooses but does not weigh: without it the outputs differ.
    with torch.no_grad():
        ours.gate.e_score_correction_bias.zero_()
        assert not torch.allclose(ours(x, segments()), theirs(x))


@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_grouped_and_loop_paths_agree_with_gradients(capacity_factor):
    block = moe_block(shared_experts=1, capacity_factor=capacity_factor)
    x = starved_input(block)
    real_BT = segments() >= 0
    grouped = run(block, x, real_BT, segments())
    block.zero_grad()
    x.grad = None
    block.experts.implementation = "loop"
    loop = run(block, x, real_BT, segments())
    torch.testing.assert_close(grouped[0], loop[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(grouped[1], loop[1], rtol=0, atol=1e-6)
    for name in grouped[2]:
        torch.testing.assert_close(grouped[2][name], loop[2][name], rtol=0, atol=1e-6, msg=name)


def test_unaligned_sizes_fall_back_to_the_loop_and_forcing_grouped_says_why():
    from frugal_lm.errors import FrugalError

    config = moe_config(intermediate_size=6)  # 24-byte rows: torch._grouped_mm refuses them
    block = feed_forward(config, 0)
    block.reset_parameters(trunc_normal_)
    x = torch.randn(2, T, C)
    out = block(x)  # auto: the loop
    block.experts.implementation = "grouped"
    with pytest.raises(FrugalError, match="moe.implementation=grouped"):
        block(x)
    assert out.isfinite().all()


class CountingExperts:
    """Records the token counts each expert call gets."""

    def __init__(self, experts: Experts):
        self.counts: list[torch.Tensor] = []
        forward = experts.forward

        def spy(x_SC, tokens_per_expert_E):
            self.counts.append(tokens_per_expert_E.clone())
            return forward(x_SC, tokens_per_expert_E)

        experts.forward = spy


def test_padding_reaches_no_expert_and_counts_in_no_statistic():
    block = moe_block(capacity_factor=1.0)
    block.recorder = RoutingRecorder([block])
    spy = CountingExperts(block.experts)
    real_BT = segments() >= 0
    real = int(real_BT.sum())
    x = torch.randn(2, T, C)
    out = block(x, segments())
    ((_, demand_E, _, _, _),) = reported(block)
    assert int(demand_E.sum()) == real * 2
    assert int(spy.counts[0].sum()) <= real * 2
    # Whatever the padding holds, real tokens' outputs (capacity included) and statistics stay.
    noisy = x.clone()
    noisy[~real_BT] = 100 * torch.randn(int((~real_BT).sum()), C)
    out_noisy = block(noisy, segments())
    torch.testing.assert_close(out[real_BT], out_noisy[real_BT], rtol=0, atol=0)
    ((_, demand_noisy_E, aux, z_loss, _),) = reported(block)
    assert torch.equal(demand_E, demand_noisy_E)
    assert out_noisy[~real_BT].abs().max() == 0  # no shared expert: padding gets nothing
    assert aux.isfinite() and z_loss.isfinite()


def test_capacity_drops_are_counted_and_only_in_training():
    block = moe_block(capacity_factor=0.5)
    block.recorder = RoutingRecorder([block])
    spy = CountingExperts(block.experts)
    x = torch.randn(2, T, C)
    block(x, segments())
    ((_, demand_E, _, _, dropped),) = reported(block)
    real = int((segments() >= 0).sum())
    capacity = math.ceil(0.5 * real * 2 / E)
    served_E = spy.counts[-1]
    assert torch.equal(served_E, demand_E.long().clamp(max=capacity))
    assert int(dropped) == int((demand_E - capacity).clamp(min=0).sum()) > 0
    block.eval()  # inference is dropless: a token's output never depends on its batch
    block(x, segments())
    ((_, _, _, _, dropped),) = reported(block)
    assert int(dropped) == 0
    assert torch.equal(spy.counts[-1], demand_E.long())


def test_balance_losses_follow_their_formulas():
    block = moe_block(score="softmax")
    block.recorder = RoutingRecorder([block])
    x = torch.randn(2, T, C)
    block(x, segments())
    ((_, demand_E, aux, z_loss, _),) = reported(block)
    real_BT = segments() >= 0
    logits = x[real_BT] @ block.gate.weight.T
    probs = logits.softmax(-1)
    chosen = probs.topk(2, dim=-1).indices
    counts = torch.stack([(chosen == e).sum() for e in range(E)]).float()
    assert torch.equal(counts, demand_E)
    expected_aux = E * (counts / (2 * len(probs)) * probs.mean(0)).sum()
    torch.testing.assert_close(aux, expected_aux)
    torch.testing.assert_close(z_loss, (torch.logsumexp(logits, -1) ** 2).mean())
    # Sequence-wise (DeepSeek-V3): the same per packed example, averaged over the examples.
    block.aux_loss_scope = "sequence"
    block(x, segments())
    ((_, _, aux_sequence, _, _),) = reported(block)
    per_example = []
    for row, examples in enumerate(ROWS):
        start = 0
        for prefix, causal in examples:
            tokens = slice(start, start + prefix + causal)
            p = (x[row, tokens] @ block.gate.weight.T).softmax(-1)
            c = torch.stack([(p.topk(2, dim=-1).indices == e).sum() for e in range(E)]).float()
            per_example.append(E * (c / (2 * len(p)) * p.mean(0)).sum())
            start = tokens.stop
    torch.testing.assert_close(aux_sequence, torch.stack(per_example).mean())


def test_bias_nudge_moves_toward_equal_load():
    block = moe_block(score="sigmoid")
    block.gate.nudge_bias(torch.tensor([10.0, 2.0, 4.0, 0.0]), rate=0.01)
    torch.testing.assert_close(block.gate.e_score_correction_bias, torch.tensor([-0.01, 0.01, 0.0, 0.01]))


def test_compiled_block_has_no_graph_break_and_no_recompile_as_counts_move():
    torch._dynamo.reset()
    block = moe_block(shared_experts=1, capacity_factor=1.0, aux_loss_scope="sequence")
    block.recorder = RoutingRecorder([block])
    explanation = torch._dynamo.explain(block)(torch.randn(2, T, C), segments())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    counter = CompileCounter()
    compiled = torch.compile(block, backend=counter, fullgraph=True, dynamic=False)
    other = AttentionLayout.from_lengths([[(1, 1)], [(2, 3), (5, 1)]], T).segment_ids_BT
    records = []
    for segments_BT in (segments(), other):
        x = torch.randn(2, T, C, requires_grad=True)
        compiled(x, segments_BT).sum().backward()
        records += reported(block)
    assert counter.frame_count == 1
    assert len(records) == 2 and all(record[2].requires_grad for record in records)


def test_recorder_gets_every_layer_call_of_every_pass():
    """The HRM's stacks share their experts across passes; each pass routes afresh and reports."""
    config = moe_config(net="hrm")
    model = build_model(config)
    recorder = attach_recorder(model)
    assert recorder.layers == len(moe_layers(model)) == config.n_layers
    tokens = torch.randint(0, 64, (2, T))
    model(tokens, torch.arange(T).expand(2, T), AttentionLayout.from_lengths(ROWS, T))
    records = recorder.take()
    assert len(records) == config.stack_passes * config.layers_per_stack
    assert sorted({layer for layer, *_ in records}) == list(range(config.n_layers))


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
def test_every_net_builds_with_experts_and_every_weight_learns(net):
    config = moe_config(net=net, shared_experts=1, first_dense_layers=1)
    model = build_model(config)
    layers = moe_layers(model)
    assert len(layers) == config.n_layers // config.layers_per_stack * (config.layers_per_stack - 1)
    total, active = parameter_counts(config)
    assert total == count_parameters(config) == sum(p.numel() for p in model.parameters())
    expert = 3 * C * W
    assert total - active == len(layers) * (E - 2) * expert
    tokens = torch.randint(0, 64, (2, T))
    logits = model(tokens, torch.arange(T).expand(2, T), AttentionLayout.from_lengths(ROWS, T))
    logits.float().pow(2).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_expert_weights_get_the_per_fan_in_init():
    config = moe_config(intermediate_size=64, experts=8)
    model = build_model(config, device="meta")
    model.to_empty(device="cpu")
    model.reset_parameters()
    layer = moe_layers(model)[0]
    assert layer.gate.e_score_correction_bias.abs().max() == 0
    for weight, fan_in in [
        (layer.gate.weight, C),
        (layer.experts.gate_up_proj, C),
        (layer.experts.down_proj, 64),
    ]:
        assert weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.1)
        assert weight.abs().max().item() <= 2 / math.sqrt(fan_in) / 0.87962566 + 1e-6
