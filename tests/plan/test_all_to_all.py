"""Expert-parallel all-to-all traffic per step, against counts made by hand."""

import math

import pytest

from frugal_lm.config import load_model_config
from frugal_lm.plan.all_to_all import all_to_all_per_step, exchanges_per_step
from frugal_lm.plan.devices import Device

# Two GPUs per node, 1 GB/s between GPUs of a node, 0.1 GB/s between nodes.
SMALL_NODES = Device("test", 1e12, 1e9, "test device", 2, 1e9, 1e8, "test links")
MOE = {"experts": 4, "top_k": 2, "intermediate_size": 128}


def test_transformer_exchanges_and_bytes_by_hand():
    config = load_model_config("tiny", "transformer", hidden_size=64, n_heads=2, n_layers=2, moe=MOE)
    # 2 MoE blocks x 1 pass, forward and backward, dispatch and combine.
    assert exchanges_per_step(config, bp_steps=1) == 8
    traffic = all_to_all_per_step(config, 100, expert_parallel=4, device=SMALL_NODES, bp_steps=1, compute_bytes=2)
    per_exchange = 100 * 2 * 64 * 2  # tokens x top_k copies x hidden x bf16
    # 4 ranks over nodes of 2: of each rank's copies 1/4 stay, 1/4 go to its node mate, 2/4 leave the node.
    assert traffic.intra_node_bytes == 8 * per_exchange / 4
    assert traffic.inter_node_bytes == 8 * per_exchange * 2 / 4
    assert traffic.seconds == pytest.approx(max(traffic.intra_node_bytes / 1e9, traffic.inter_node_bytes / 1e8))


def test_hrm_passes_forward_everywhere_backward_in_the_window():
    # 4 layers -> stacks of 2 blocks, the first dense: 1 MoE block per stack pass, 8 passes.
    config = load_model_config("tiny", "hrm", moe={**MOE, "first_dense_layers": 1})
    assert exchanges_per_step(config, bp_steps=5) == 2 * 1 * (8 + 5)
    assert exchanges_per_step(config, bp_steps=2) == 2 * 1 * (8 + 2)


def test_nothing_travels_without_expert_parallelism_or_experts():
    moe = load_model_config("tiny", "transformer", moe=MOE)
    assert all_to_all_per_step(moe, 100, 1, SMALL_NODES, 1).bytes == 0
    dense = load_model_config("tiny", "transformer")
    assert all_to_all_per_step(dense, 100, 2, SMALL_NODES, 1).bytes == 0


def test_a_group_inside_one_node_uses_only_its_links_and_unknown_links_give_nan():
    config = load_model_config("tiny", "transformer", moe=MOE)
    traffic = all_to_all_per_step(config, 100, 2, SMALL_NODES, 1)
    assert traffic.inter_node_bytes == 0 and traffic.seconds == traffic.intra_node_bytes / 1e9
    unknown = Device("gpu?", 1e12, 1e9, "unknown")
    assert math.isnan(all_to_all_per_step(config, 100, 2, unknown, 1).seconds)
