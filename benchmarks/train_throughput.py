"""Training throughput of frugal-lm's step, per preset, eager and compiled, against peaks measured in the same run.

For each preset and mode the benchmark runs the trainer's own step (`train/step.py`: the
run's precision, bf16 weights cast once per step, AdamATan2 + EMA) on packed PrefixLM rows
of heavy-tailed instruction/response lengths, and prints:
- tokens/s per device (real tokens, padding excluded);
- MFU under both conventions: ours (the planner's count: every matmul the step runs, with
  mask-aware attention and the LM head on labelled tokens) and HRM-Text's (2N per forward
  stack pass + 4N per backward pass, N one stack's parameters; no attention);
- the peak each MFU is against: the device's spec bf16 peak (plan/devices.py) and its
  bf16 matmul peak measured in this run (8,192^3 products; 2,048^3 on a CPU);
- compile time (the first two steps, minus two steady steps) and peak device memory;
- optionally transformers' `HrmTextForCausalLM` on the same examples, padded, as the
  outside reference.

    python benchmarks/train_throughput.py --device cuda --presets B,L,XL --modes eager,compiled \
        --rows 4 --row-len 4096 --steps 8 --transformers-at B
    python benchmarks/train_throughput.py --device cpu --presets tiny --rows 16 --row-len 256 --vocab 512

Each preset builds at `--vocab` (65,536 by default, as the reference). An out-of-memory
configuration is reported and skipped. `--json FILE` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from frugal_lm.config import load_model_config
from frugal_lm.data.batch import Example, pack_rows
from frugal_lm.data.packing import plan_epoch
from frugal_lm.model import build_model
from frugal_lm.plan.devices import DEVICES
from frugal_lm.plan.flops import LengthProfile, reference_flops_per_token, training_flops_per_token
from frugal_lm.runtime import uses_bf16
from frugal_lm.train.distributed import Distributed
from frugal_lm.train.optimizer import AdamATan2
from frugal_lm.train.step import TrainStep, checkpoint_activations, compile_blocks

BP_STEPS = 5


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 10) -> float:
    size = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def spec_peak(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    name = torch.cuda.get_device_name(device).lower()
    return next((d.peak_flops for key, d in DEVICES.items() if key.split("-")[0] in name), float("nan"))


def make_examples(rng: np.random.Generator, count: int, vocab: int) -> list[Example]:
    """Instruction/response lengths like a reasoning SFT mix: heavy-tailed, 4..1,400 tokens."""
    examples = []
    for _ in range(count):
        inst = int(np.clip(rng.lognormal(4.0, 0.8), 4, 600))
        resp = int(np.clip(rng.lognormal(4.3, 0.8), 2, 800))
        examples.append(Example(rng.integers(10, vocab, inst).tolist(), rng.integers(10, vocab, resp).tolist()))
    return examples


def make_batches(examples: list[Example], rows: int, row_len: int, count: int):
    examples = [e for e in examples if e.packed_len <= row_len]  # as mixing drops what a row cannot hold
    plan = plan_epoch(np.array([e.packed_len for e in examples]), rows, row_len)
    steps = [plan.rows(step) for step in range(min(count, plan.n_steps - 1))]
    batches = [pack_rows([[examples[i] for i in row] for row in rows_of_step], row_len) for rows_of_step in steps]
    groups = [[examples[i] for row in rows_of_step for i in row] for rows_of_step in steps]
    return batches, groups, plan.slot_use


def our_steps(config, batches, steps: int, device: torch.device, compiled: bool, checkpointing: bool) -> dict:
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if checkpointing:
        checkpoint_activations(model)
    if compiled:
        torch._dynamo.reset()
        compile_blocks(model)
    bf16 = uses_bf16("auto", device, config.hidden_size)
    step = TrainStep(model, AdamATan2(model.parameters(), lr=1e-4), Distributed(), bf16, grad_clip=1.0)
    batches = [batch.to(device) for batch in batches]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for index in range(2):  # warm-up, and compiling
        step(batches[index % len(batches)], 1e-4, BP_STEPS)
    synchronize(device)
    warmup_s = time.perf_counter() - started
    started, tokens = time.perf_counter(), 0
    for index in range(steps):
        batch = batches[index % len(batches)]
        step(batch, 1e-4, BP_STEPS)
        tokens += batch.n_tokens
    synchronize(device)
    elapsed = time.perf_counter() - started
    return {
        "tokens_per_second": tokens / elapsed,
        "step_s": elapsed / steps,
        "compile_s": max(0.0, warmup_s - 2 * elapsed / steps) if compiled else 0.0,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        "precision": "bf16" if bf16 else "fp32",
    }


def transformers_steps(config, groups, steps: int, device: torch.device) -> float:
    from transformers import HrmTextConfig, HrmTextForCausalLM

    hf_config = HrmTextConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers_per_stack,
        num_attention_heads=config.n_heads,
        head_dim=config.head_dim,
        max_position_embeddings=4096,
        H_cycles=config.h_cycles,
        L_cycles=config.l_cycles,
        rms_norm_eps=config.norm_eps,
        initializer_range=config.embedding_init_std,
    )
    torch.manual_seed(0)
    model = HrmTextForCausalLM(hf_config).to(device).train()
    model.config._attn_implementation = "sdpa"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = device.type == "cuda"

    def padded(examples):
        length = max(len(e.instruction) + len(e.response) for e in examples)  # transformers shifts labels itself
        ids = torch.zeros(len(examples), length, dtype=torch.long)
        labels = torch.full((len(examples), length), -100)
        mask, types = torch.zeros_like(ids), torch.zeros_like(ids)
        for row, e in enumerate(examples):
            sequence = list(e.instruction) + list(e.response)
            ids[row, : len(sequence)] = torch.tensor(sequence)
            labels[row, len(e.instruction) : len(sequence)] = torch.tensor(list(e.response))
            mask[row, : len(sequence)] = 1
            types[row, : len(e.instruction)] = 1
        return [t.to(device) for t in (ids, labels, mask, types)], int(mask.sum())

    def step(group):
        (ids, labels, mask, types), real = padded(group)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return real

    step(groups[0])
    synchronize(device)
    started, tokens = time.perf_counter(), 0
    for index in range(steps):
        tokens += step(groups[index % len(groups)])
    synchronize(device)
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", default="B,L,XL")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--row-len", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--transformers-at", default="", help="preset to also run transformers' HRM at (e.g. B)")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    device = torch.device(args.device)

    examples = [e for e in make_examples(np.random.default_rng(0), 4000, args.vocab) if e.packed_len <= args.row_len]
    batches, groups, slot_use = make_batches(examples, args.rows, args.row_len, args.steps + 2)
    lengths = LengthProfile.from_examples((len(e.instruction), e.packed_len) for e in examples)
    label_fraction = sum(len(e.response) for e in examples) / sum(e.packed_len for e in examples)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}")
    print(
        f"batch: {args.rows} rows x {args.row_len} tokens ({slot_use:.1%} slot use), vocab {args.vocab:,}, "
        f"bp_steps {BP_STEPS}, label fraction {label_fraction:.2f}"
    )
    measured_bf16, measured_fp32 = matmul_peak(torch.bfloat16, device), matmul_peak(torch.float32, device)
    spec = spec_peak(device)
    print(
        f"peaks: spec bf16 {spec / 1e12:.1f} TFLOP/s, measured matmul bf16 {measured_bf16 / 1e12:.2f} "
        f"TFLOP/s, fp32 {measured_fp32 / 1e12:.2f} TFLOP/s"
    )
    results = {"spec_bf16": spec, "measured_bf16": measured_bf16, "measured_fp32": measured_fp32, "runs": []}
    for preset in args.presets.split(","):
        config = load_model_config(preset, "hrm", vocab_size=args.vocab, max_seq_len=max(args.row_len, 256))
        ours = training_flops_per_token(config, BP_STEPS, label_fraction, lengths)
        reference = reference_flops_per_token(config, BP_STEPS)
        for mode in args.modes.split(","):
            try:
                run = our_steps(config, batches, args.steps, device, mode == "compiled", args.activation_checkpointing)
            except torch.OutOfMemoryError:
                print(f"{preset} {mode}: out of memory at {args.rows} x {args.row_len} tokens")
                torch.cuda.empty_cache()
                continue
            peak = measured_bf16 if run["precision"] == "bf16" else measured_fp32
            run.update(
                preset=preset,
                mode=mode,
                parameters=sum(p.numel() for p in build_model(config, device="meta").parameters()),
                mfu_ours_spec=run["tokens_per_second"] * ours / spec,
                mfu_ours_measured=run["tokens_per_second"] * ours / peak,
                mfu_reference_spec=run["tokens_per_second"] * reference / spec,
                mfu_reference_measured=run["tokens_per_second"] * reference / peak,
            )
            results["runs"].append(run)
            memory = f", peak memory {run['peak_memory_gb']:.1f} GB" if run["peak_memory_gb"] is not None else ""
            print(
                f"{preset} ({run['parameters'] / 1e6:.0f}M) {mode} {run['precision']}: "
                f"{run['tokens_per_second']:,.0f} tokens/s ({run['step_s'] * 1e3:.0f} ms/step), MFU ours "
                f"{run['mfu_ours_spec']:.1%} of spec / {run['mfu_ours_measured']:.1%} of measured, reference "
                f"convention {run['mfu_reference_spec']:.1%} / {run['mfu_reference_measured']:.1%}, "
                f"compile {run['compile_s']:.0f} s{memory}"
            )
        if preset == args.transformers_at:
            hf = transformers_steps(config, groups, max(2, args.steps // 2), device)
            results["transformers"] = {"preset": preset, "tokens_per_second": hf}
            best = max((r["tokens_per_second"] for r in results["runs"] if r["preset"] == preset), default=0.0)
            print(
                f"transformers HrmTextForCausalLM at {preset} (padded, bf16 autocast on GPU): {hf:,.0f} tokens/s; "
                f"frugal-lm's best is {best / hf:.2f}x"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
