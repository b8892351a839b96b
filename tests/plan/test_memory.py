import os
import subprocess
import sys

import pytest

from frugal_lm.config import load_model_config
from frugal_lm.plan.memory import estimate_memory

# Measures the peak growth of anonymous resident memory (sampled every 0.5 ms) over one
# forward+backward in a fresh process, after a warm-up step so kernels and the allocator's
# first arenas are not counted as training memory.
_PROBE = r"""
import os, threading, torch
torch.set_num_threads(1)
from frugal_lm.config import load_model_config
from frugal_lm.model import build_model, language_model_loss
from frugal_lm.data.batch import Example, pack_rows
PAGE = os.sysconf("SC_PAGE_SIZE")
def anonymous_bytes():
    # resident minus file-backed pages: immune to the kernel evicting library pages
    resident, shared = open("/proc/self/statm").read().split()[1:3]
    return (int(resident) - int(shared)) * PAGE
config = load_model_config("tiny", vocab_size=512, attention_backend="sdpa")
model = build_model(config)
language_model_loss(model, pack_rows([[Example([1, 2], [3, 4])]], 8), bp_steps=5).loss.backward()
model.zero_grad(set_to_none=True)
batch = pack_rows([[Example(list(range(1, 20)), list(range(5, 60)))] * 3 for _ in range(6)], 256)
before, peak, done = anonymous_bytes(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anonymous_bytes())
        done.wait(0.0005)
sampler = threading.Thread(target=sample)
sampler.start()
language_model_loss(model, batch, bp_steps=5).loss.backward()
done.set()
sampler.join()
print(max(peak[0], anonymous_bytes()) - before, batch.input_ids.numel(), int((batch.labels != -100).sum()))
"""


def test_activation_estimate_within_25_percent_of_measured_peak():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": "src"},
    )
    measured, tokens, labelled = map(int, result.stdout.split())
    config = load_model_config("tiny", vocab_size=512)
    estimate = estimate_memory(
        config, tokens, gpus=1, bp_steps=5, label_fraction=labelled / tokens, compute_bytes=4, sharded=False
    )
    gradients = 4 * 4 * estimate.model_state / 20  # fp32 grads appear during this step; no optimizer ran
    predicted = (estimate.activations + estimate.lm_head + gradients) * 1.1
    assert predicted == pytest.approx(measured, rel=0.25)


def test_fsdp_divides_model_state_and_bp_steps_scale_activations():
    config = load_model_config("XL")
    one, sixteen = estimate_memory(config, 8192, gpus=1), estimate_memory(config, 8192, gpus=16)
    assert sixteen.model_state == pytest.approx(one.model_state / 16)
    two, five = estimate_memory(config, 8192, bp_steps=2), estimate_memory(config, 8192, bp_steps=5)
    assert 2.0 < five.activations / two.activations < 2.5


MOE = {"experts": 8, "top_k": 2, "intermediate_size": 256}


def test_fsdp_keeps_every_block_gathered_and_expert_parallel_keeps_its_experts_whole():
    """As train/ shards: FSDP gathers each block once per step and keeps it (reshard_after_forward
    False), so every FSDP parameter is resident once in bf16; under expert_parallel=N a rank's
    E/N experts per layer are its own, whole, not FSDP's."""
    config = load_model_config("tiny", "transformer", vocab_size=512, moe=MOE)
    C = 128
    attention, expert, root = 5 * C * C, 3 * C * 256, 2 * 512 * C
    experts = 4 * 8 * expert  # 4 MoE blocks of 8 experts
    total = root + 4 * (attention + 8 * C) + experts
    one = estimate_memory(config, 1024, gpus=8, expert_parallel=1)
    assert (one.model_state, one.gathered_weights) == (20 * total / 8, 2 * total)
    four = estimate_memory(config, 1024, gpus=8, expert_parallel=4)
    assert four.model_state == 20 * ((total - experts) / 8 + experts / 4)
    assert four.gathered_weights == 2 * (total - experts)
    # One process: a bf16 run holds its weights' bf16 copy, an fp32 run nothing more.
    assert estimate_memory(config, 1024, gpus=1, sharded=False, compute_bytes=2).gathered_weights == 2 * total
    assert estimate_memory(config, 1024, gpus=1, sharded=False, compute_bytes=4).gathered_weights == 0


def test_moe_and_gqa_activation_values_by_hand():
    from frugal_lm.plan.memory import activation_values_per_token_per_block

    config = load_model_config("tiny", "transformer", n_kv_heads=1, attention_gate=False, moe=MOE)
    C, kv_width, heads = 128, 32, 4
    attention = 10 * C + 3 * kv_width + 2 + heads  # no gate: no sigmoid and gated product
    assert activation_values_per_token_per_block(config) == attention + 4 * config.intermediate_size
    routed = 2 * (4 * 256 + 2 * C)  # per copy: the expert's SwiGLU values, dispatched input and output
    assert activation_values_per_token_per_block(config, moe_block=True) == attention + routed + 2 * 8


def test_activation_checkpointing_keeps_block_inputs_and_one_block():
    from frugal_lm.plan.memory import activation_values_per_token_per_block

    config = load_model_config("tiny", "transformer", vocab_size=512, moe=MOE)
    kept = estimate_memory(config, 1024, gpus=1, sharded=False, compute_bytes=4)
    checkpointed = estimate_memory(config, 1024, gpus=1, sharded=False, compute_bytes=4, activation_checkpointing=True)
    block = activation_values_per_token_per_block(config, moe_block=True)
    assert checkpointed.activations == 1024 * ((4 + 1) * 128 + 2 * 128 + block) * 4
    assert checkpointed.activations < kept.activations / 2
