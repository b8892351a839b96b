"""Training a mixture of experts: balance losses in the loss, routing in the metrics, the
expert-bias update after the optimizer step, fp32 routers under bf16, the collapse warning."""

import json

import pytest
import torch

from frugal_lm.config import MoeConfig, load_model_config
from frugal_lm.data.loader import LoaderState, MixedDataset, PackedLoader
from frugal_lm.model import build_model
from frugal_lm.model.moe import moe_layers
from frugal_lm.train.distributed import Distributed
from frugal_lm.train.moe_balance import COLLAPSE_STEPS, CollapseWatch, RoutingStats, balance_loss
from frugal_lm.train.optimizer import AdamATan2
from frugal_lm.train.step import TrainStep, checkpoint_activations, compile_blocks

MOE = ["model.moe.experts=4", "model.moe.top_k=2", "model.moe.intermediate_size=32"]


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def moe_step(tmp_path, write_mixed_set, net="hrm", bf16=False, **moe):
    data = write_mixed_set(tmp_path / "mix", n_examples=80, n_epochs=1)
    dataset = MixedDataset(data)
    moe = MoeConfig(**{"experts": 4, "top_k": 2, "intermediate_size": 32, **moe})
    config = load_model_config(
        "tiny", net, hidden_size=32, n_heads=2, n_layers=2, max_seq_len=64, vocab_size=dataset.vocab_size, moe=moe
    )
    torch.manual_seed(0)
    model = build_model(config)
    step = TrainStep(model, AdamATan2(model.parameters(), lr=1e-3), Distributed(), bf16, grad_clip=1.0)
    batches = (batch for batch, _ in PackedLoader(dataset, 16, 4).batches(LoaderState(), 1))
    return model, step, batches


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
def test_every_net_trains_a_step_with_experts(tmp_path, write_mixed_set, net):
    model, step, batches = moe_step(tmp_path, write_mixed_set, net, aux_loss_coef=0.01, z_loss_coef=0.001)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    result = step(next(batches), lr=1e-3, bp_steps=5)
    assert result.applied and result.routing is not None
    for name, param in model.named_parameters():
        assert not torch.equal(param, before[name]), name
    layers = moe_layers(model)
    assert result.routing.load_LE.shape == (len(layers), 4)
    # Every pass routes every real token to top_k experts: the load counts exactly those.
    calls = model.config.stack_passes * model.config.layers_per_stack
    assert int(result.routing.load_LE.sum()) == int(result.stats.tokens) * 2 * calls


def test_balance_losses_join_the_loss_with_their_coefficients(tmp_path, write_mixed_set):
    model, step, batches = moe_step(tmp_path, write_mixed_set)
    batch = next(batches)
    from frugal_lm.model import language_model_loss

    language_model_loss(model, batch, bp_steps=2)
    records = step.recorder.take()
    trained = [record for record in records if record[2].requires_grad]
    assert 0 < len(trained) < len(records)  # truncated backprop: only the last passes
    moe = MoeConfig(experts=4, aux_loss_coef=0.5, z_loss_coef=0.25)
    expected = 0.5 * torch.stack([r[2] for r in trained]).mean() + 0.25 * torch.stack([r[3] for r in trained]).mean()
    torch.testing.assert_close(balance_loss(records, moe), expected)
    assert balance_loss(records, MoeConfig(experts=4)) is None
    # The aux loss moves the routers' gradients, and only when its coefficient is set.
    grads = []
    for coef in (0.0, 1.0):
        model, step, batches = moe_step(tmp_path / str(coef), write_mixed_set, aux_loss_coef=coef)
        step.optimizer.step = lambda: None  # keep the gradients' effect out of the weights
        router = moe_layers(model)[0].gate.weight
        captured = []
        router.register_hook(lambda grad, captured=captured: captured.append(grad.clone()))
        step(next(batches), lr=1e-3, bp_steps=5)
        grads.append(sum(captured))
    assert not torch.allclose(grads[0], grads[1])


def test_expert_bias_moves_by_the_sign_rule_after_the_step_and_is_no_parameter(tmp_path, write_mixed_set):
    model, step, batches = moe_step(tmp_path, write_mixed_set, score="sigmoid", bias_update_rate=0.01)
    layers = moe_layers(model)
    optimized = {id(p) for group in step.optimizer.param_groups for p in group["params"]}
    assert all(id(layer.gate.e_score_correction_bias) not in optimized for layer in layers)
    result = step(next(batches), lr=1e-3, bp_steps=5)
    for index, layer in enumerate(layers):
        load = result.routing.load_LE[index]
        torch.testing.assert_close(layer.gate.e_score_correction_bias, 0.01 * torch.sign(load.mean() - load))
    # Off by default: the bias stays zero.
    model, step, batches = moe_step(tmp_path / "off", write_mixed_set, score="sigmoid")
    step(next(batches), lr=1e-3, bp_steps=5)
    assert all(layer.gate.e_score_correction_bias.abs().max() == 0 for layer in moe_layers(model))


def test_bf16_keeps_the_routers_fp32(tmp_path, write_mixed_set):
    model, step, batches = moe_step(tmp_path, write_mixed_set, bf16=True)
    routers = {id(layer.gate.weight) for layer in moe_layers(model)}
    assert len(step.fp32_weights) == len(routers) == 2
    seen = set()
    for layer in moe_layers(model):
        layer.gate.register_forward_pre_hook(lambda module, args: seen.add(module.weight.dtype))
    result = step(next(batches), lr=1e-3, bp_steps=5)
    assert result.applied and seen == {torch.float32}


def test_activation_checkpointing_with_experts_gives_the_same_step_bitwise(tmp_path, write_mixed_set):
    results = []
    for checkpointed in (False, True):
        model, step, batches = moe_step(tmp_path / str(checkpointed), write_mixed_set, aux_loss_coef=0.01)
        if checkpointed:
            checkpoint_activations(model)
        result = step(next(batches), lr=1e-3, bp_steps=5)
        results.append((float(result.stats.loss), result.routing, [p.detach().clone() for p in model.parameters()]))
    (loss, routing, weights), (loss_ac, routing_ac, weights_ac) = results
    assert loss == loss_ac and routing.aux_loss == routing_ac.aux_loss
    assert torch.equal(routing.load_LE, routing_ac.load_LE)
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_ac))


@pytest.mark.slow
def test_compiled_moe_blocks_do_not_recompile_as_routing_moves(tmp_path, write_mixed_set):
    from torch._dynamo.utils import counters

    model, step, batches = moe_step(tmp_path, write_mixed_set, capacity_factor=1.0, aux_loss_coef=0.01)
    compile_blocks(model)
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    for bp_steps in [2, 3, 5, 5, 4]:
        step(next(batches), lr=1e-3, bp_steps=bp_steps)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[-1] == graphs[1] > 0, graphs
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_a_tiny_moe_run_logs_its_routing(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=120, n_epochs=1)
    train_run(
        data, tmp_path / "run", "steps=4", "log_every=2", "net=transformer", *MOE, "model.moe.capacity_factor=1.0"
    )
    lines = metrics(tmp_path / "run")
    for line in lines:
        assert line["moe_aux_loss"] > 0 and line["moe_z_loss"] > 0 and line["moe_load_max"] >= 1
        assert line["moe_dropped_tokens"] >= 0
    assert [line["step"] for line in lines if "moe_load" in line] == [1, 2, 4]
    load = lines[0]["moe_load"]
    assert len(load) == 4 and all(len(row) == 4 and sum(row) == pytest.approx(1, abs=1e-3) for row in load)


def test_a_dense_run_logs_no_routing(tmp_path, write_mixed_set, train_run):
    data = write_mixed_set(tmp_path / "mix", n_examples=60, n_epochs=1)
    train_run(data, tmp_path / "run", "steps=1")
    assert not any(key.startswith("moe_") for key in metrics(tmp_path / "run")[0])


def test_a_collapsed_router_is_reported_once():
    watch = CollapseWatch(MoeConfig(experts=8, top_k=2))
    balanced = RoutingStats(0.0, 0.0, torch.full((2, 8), 10.0), 0)
    collapsed_LE = torch.full((2, 8), 10.0)
    collapsed_LE[1] = torch.tensor([36.0, 10, 10, 10, 10, 4, 0, 0])  # 40 tokens x top 2: expert 0 takes 90%
    collapsed = RoutingStats(0.0, 0.0, collapsed_LE, 0)
    assert watch.observe(balanced) is None
    warnings = [watch.observe(collapsed) for _ in range(COLLAPSE_STEPS + 3)]
    assert warnings[: COLLAPSE_STEPS - 1] == [None] * (COLLAPSE_STEPS - 1)
    assert "MoE layer 1's expert 0 takes" in warnings[COLLAPSE_STEPS - 1]
    assert warnings[COLLAPSE_STEPS:] == [None] * 3  # once


def test_checkpoints_hold_the_moved_expert_bias(tmp_path, write_mixed_set, train_run):
    from safetensors.torch import load_file

    data = write_mixed_set(tmp_path / "mix", n_examples=60, n_epochs=1)
    run = train_run(data, tmp_path / "run", "steps=2", *MOE, "model.moe.bias_update_rate=0.01")
    weights = load_file(run.checkpoint / "model.safetensors")
    biases = [name for name in weights if name.endswith("mlp.gate.e_score_correction_bias")]
    assert len(biases) == 4  # the tiny preset's HRM: 2 stacks of 2 MoE blocks
    assert all(weights[name].abs().max() > 0 for name in biases)
