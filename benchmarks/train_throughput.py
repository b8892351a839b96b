"""Training throughput of frugal-lm vs the device's matmul peak and transformers' HrmTextForCausalLM.

One run measures, on the same machine and the same data:
1. the device's dense matmul peak (fp32 and bf16), from large square matrix products;
2. our training step (packed PrefixLM rows, truncated backprop at bp_steps=5, AdamATan2),
   real tokens per second, and its achieved FLOP/s (FLOPs counted by FlopCounterMode on
   one step) as a fraction of each peak;
3. a training step of transformers' HrmTextForCausalLM with the same sizes on padded
   batches of the same examples (same real tokens per step; its own default gradient
   routing), with torch.optim.AdamW, and the ratio of tokens per second.

    python benchmarks/train_throughput.py [--steps 3] [--hidden 512] [--layers-per-stack 4] [--row-len 2048]
        [--device cpu|cuda] [--compile]

On a GPU both sides also run under bf16 autocast and the ratio compares the best of each.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from frugal_lm.config import load_model_config
from frugal_lm.data.batch import Example, pack_rows
from frugal_lm.data.packing import plan_epoch
from frugal_lm.model import build_model, language_model_loss
from frugal_lm.train.optimizer import AdamATan2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    size = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def make_examples(rng: np.random.Generator, count: int, vocab: int) -> list[Example]:
    """Instruction/response lengths like a reasoning SFT mix: heavy-tailed, 20..1000 tokens."""
    examples = []
    for _ in range(count):
        inst = int(np.clip(rng.lognormal(4.0, 0.8), 4, 600))
        resp = int(np.clip(rng.lognormal(4.3, 0.8), 2, 800))
        examples.append(Example(rng.integers(10, vocab, inst).tolist(), rng.integers(10, vocab, resp).tolist()))
    return examples


def count_flops(config, batch, device: torch.device) -> int:
    """FLOPs of one forward+backward, counted eagerly with SDPA attention (same math as any
    backend; the counter sees inside neither compiled code nor FlexAttention)."""
    model = build_model(config.model_copy(update={"attention_backend": "sdpa"})).to(device)
    with FlopCounterMode(display=False) as counter:
        language_model_loss(model, batch, bp_steps=5).loss.backward()
    return counter.get_total_flops()


def our_steps(config, batches, steps, bf16: bool, device: torch.device, compile: bool):
    torch.manual_seed(0)
    model = build_model(config).to(device)
    optimizer = AdamATan2(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile else model
    batches = [batch.to(device) for batch in batches]

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output = language_model_loss(forward, batch, bp_steps=5)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flops_per_step = count_flops(config, batches[0], device)
    for _ in range(2):  # warm-up (and compiling)
        step(batches[0])
    synchronize(device)
    start = time.perf_counter()
    tokens = 0
    for index in range(steps):
        batch = batches[index % len(batches)]
        step(batch)
        tokens += batch.n_tokens
    synchronize(device)
    elapsed = time.perf_counter() - start
    return tokens / elapsed, flops_per_step * steps / elapsed


def transformers_steps(config, example_groups, steps, device: torch.device, bf16: bool):
    from transformers import HrmTextConfig, HrmTextForCausalLM

    hf_config = HrmTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers_per_stack, num_attention_heads=config.n_heads, head_dim=config.head_dim,
        max_position_embeddings=4096, H_cycles=config.h_cycles, L_cycles=config.l_cycles,
        rms_norm_eps=config.norm_eps, initializer_range=config.embedding_init_std)
    torch.manual_seed(0)
    model = HrmTextForCausalLM(hf_config).to(device).train()
    model.config._attn_implementation = "sdpa"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def padded(examples):
        length = max(len(e.instruction) + len(e.response) for e in examples)  # HF shifts labels itself
        ids = torch.zeros(len(examples), length, dtype=torch.long)
        labels = torch.full((len(examples), length), -100)
        mask = torch.zeros(len(examples), length, dtype=torch.long)
        types = torch.zeros(len(examples), length, dtype=torch.long)
        for row, e in enumerate(examples):
            sequence = list(e.instruction) + list(e.response)
            n = len(sequence)
            ids[row, :n] = torch.tensor(sequence)
            labels[row, len(e.instruction):n] = torch.tensor(list(e.response))
            mask[row, :n] = 1
            types[row, :len(e.instruction)] = 1
        return ids.to(device), labels.to(device), mask.to(device), types.to(device), int(mask.sum()) - len(examples)

    def step(group):
        ids, labels, mask, types, _ = padded(group)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(example_groups[0])
    synchronize(device)
    start = time.perf_counter()
    tokens = 0
    for index in range(steps):
        group = example_groups[index % len(example_groups)]
        step(group)
        tokens += padded(group)[4]
    synchronize(device)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers-per-stack", type=int, default=4)
    parser.add_argument("--row-len", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (not transformers')")
    args = parser.parse_args()
    device = torch.device(args.device)

    config = load_model_config("tiny", "hrm", hidden_size=args.hidden, n_layers=2 * args.layers_per_stack,
                               n_heads=args.hidden // 64, vocab_size=args.vocab, max_seq_len=args.row_len)
    rng = np.random.default_rng(0)
    examples = make_examples(rng, 400, args.vocab)
    plan = plan_epoch(np.array([e.packed_len for e in examples]), args.rows, args.row_len)
    steps_available = max(1, plan.n_steps - 1)
    batches, groups = [], []
    for step in range(min(steps_available, args.steps)):
        rows = [[examples[i] for i in row] for row in plan.rows(step)]
        batches.append(pack_rows(rows, args.row_len))
        groups.append([e for row in rows for e in row])

    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads{gpu}, "
          f"torch {torch.__version__}")
    print(f"config: hidden {config.hidden_size}, {config.layers_per_stack}+{config.layers_per_stack} layers, "
          f"{config.n_heads} heads, vocab {config.vocab_size}, rows {args.rows} x {args.row_len}, "
          f"slot use {plan.slot_use:.4f}")
    peak_fp32, peak_bf16 = matmul_peak(torch.float32, device), matmul_peak(torch.bfloat16, device)
    print(f"matmul peak: fp32 {peak_fp32 / 1e9:.1f} GFLOP/s, bf16 {peak_bf16 / 1e9:.1f} GFLOP/s")
    for bf16 in (False, True):
        tokens_per_second, flops = our_steps(config, batches, args.steps, bf16, device, args.compile)
        peak = peak_bf16 if bf16 else peak_fp32
        print(f"frugal-lm {'bf16 autocast' if bf16 else 'fp32'}: {tokens_per_second:,.0f} tokens/s, "
              f"{flops / 1e9:.1f} GFLOP/s = {flops / peak:.1%} of the {'bf16' if bf16 else 'fp32'} matmul peak")
        ours_tps = tokens_per_second if not bf16 else max(ours_tps, tokens_per_second)
    if not args.skip_transformers:
        # On CPU transformers runs fp32 only (its reference precision); on a GPU also bf16.
        hf_tps = 0.0
        for bf16 in (False, True) if device.type == "cuda" else (False,):
            tokens_per_second = transformers_steps(config, groups, args.steps, device, bf16)
            print(f"transformers HrmTextForCausalLM (padded, {'bf16 autocast' if bf16 else 'fp32'}): "
                  f"{tokens_per_second:,.0f} tokens/s")
            hf_tps = max(hf_tps, tokens_per_second)
        print(f"ratio frugal-lm / transformers, best precision of each: {ours_tps / hf_tps:.2f}x")


if __name__ == "__main__":
    main()
