"""`frugal plan`: turn command-line answers into a `TrainingPlan` or the reverse question,
and print them as a readable table or JSON. The arithmetic lives in budget.py."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from frugal_lm.errors import FrugalError
from frugal_lm.plan.defaults import (DEFAULT_BATCH_TOKENS, DEFAULT_LABEL_FRACTION, DEFAULT_MEAN_EXAMPLE_LEN,
                                     DEFAULT_MFU)
from frugal_lm.plan.devices import DEVICES, get_device

ASSUMPTIONS = f"""\
assumptions:
  FLOPs   exact matmul count of our nets: every stack pass forward (HRM: 2 H cycles x (3 L + 1 H)
          passes of n_layers/2 blocks; q,k,v,gate,o projections + SwiGLU), backward = 2x forward
          only for the bp_steps passes with gradients (2 -> 5 warmup over the first 20% of steps,
          averaged over the run), attention scores/values under the PrefixLM mask, LM head only on
          response tokens (default {DEFAULT_LABEL_FRACTION:.0%} of tokens, or measured from --data).
          Without --data examples are assumed {DEFAULT_MEAN_EXAMPLE_LEN} tokens long (at most half
          the context), 30% instruction.
  tokens  processed tokens = --tokens (or one epoch of --data) x --epochs.
  MFU     default {DEFAULT_MFU:.0%}: what the HRM-Text paper's runs imply with this FLOP model
          (L: 8 H100 x 50 h = $800, XL: 16 H100 x 46 h = $1,472, ~60B processed tokens each,
          vocabulary 65,536 as in our presets, context 2,048).
  memory  per device: fp32 master weights, fp32 grads, AdamATan2 two moments and EMA
          (20 B/param) sharded by FSDP over --gpus; one block (+ prefetch) and the
          embedding/head gathered in bf16; activations of the bp_steps=5 passes with gradients
          for --batch-tokens tokens, LM-head logits in fp32; +10% for allocator and buffers.
  devices dense bf16 peak FLOP/s (no sparsity); cpu: measured with a short matmul benchmark.
  compare 'dense 6ND' is what a plain Transformer of the same parameters would spend."""


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="XL", help="model size preset (default XL)")
    parser.add_argument("--net", default="hrm", choices=["hrm", "transformer", "universal"])
    parser.add_argument("--gpus", type=int, default=16, help="devices (default 16)")
    parser.add_argument("--gpu", default="h100", help=f"device: {', '.join([*DEVICES, 'cpu'])} (default h100)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tokens", type=float, help="tokens per epoch (default 60e9)")
    source.add_argument("--data", type=Path, help="a `frugal data mix` output: tokens, epochs, lengths from it")
    parser.add_argument("--epochs", type=int, help="epochs (default 1, or the epochs in --data)")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"model FLOPs utilisation (default {DEFAULT_MFU})")
    parser.add_argument("--price", type=float, default=2.0, help="USD per GPU-hour (default 2.0)")
    parser.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                        help=f"tokens per device per micro-batch (default {DEFAULT_BATCH_TOKENS})")
    parser.add_argument("--budget-usd", type=float, help="reverse question: what can I train for this much ...")
    parser.add_argument("--hours", type=float, help="... in this many hours (with --budget-usd)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _human(value: float, unit: str = "") -> str:
    for scale, suffix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}{unit}"
    return f"{value:.3g} {unit}"


def run_plan(args: argparse.Namespace) -> int:
    """Answer `frugal plan` (heavy imports here, so building the parser stays fast)."""
    from frugal_lm.config import load_model_config
    from frugal_lm.plan.budget import affordable_runs, plan_run, read_data_profile

    device = get_device(args.gpu)
    if (args.budget_usd is None) != (args.hours is None):
        raise FrugalError("--budget-usd and --hours go together")
    if args.budget_usd is not None:
        answers = affordable_runs(args.budget_usd, args.hours, device, args.net, args.mfu, args.price)
        if args.json:
            print(json.dumps([asdict(answer) for answer in answers], indent=2))
            return 0
        print(f"${args.budget_usd:,.0f} for {args.hours:g} h at ${args.price:g}/GPU-hour rents "
              f"{answers[0].gpus} x {device.name}; at {args.mfu:.0%} MFU ({args.net}, bp_steps "
              f"{load_model_config('B', args.net).bp_steps_end}):")
        print(f"  {'preset':<7}{'params':>10}{'tokens':>12}{'tokens/param':>14}")
        for a in answers:
            print(f"  {a.preset:<7}{_human(a.parameters):>10}{_human(a.processed_tokens):>12}{a.tokens_per_parameter:>14.0f}")
        return 0
    config = load_model_config(args.preset, args.net)
    label_fraction, lengths = DEFAULT_LABEL_FRACTION, None
    if args.data is not None:
        profile = read_data_profile(args.data)
        tokens, epochs = profile.tokens_per_epoch, args.epochs or profile.epochs
        label_fraction, lengths = profile.label_fraction, profile.lengths
    else:
        tokens, epochs = args.tokens if args.tokens is not None else 60e9, args.epochs or 1
    if epochs < 1:
        raise FrugalError("--epochs must be >= 1")
    plan = plan_run(config, args.preset, tokens * epochs, args.gpus, device, args.mfu, args.price,
                    label_fraction, lengths, args.batch_tokens)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    memory = plan.memory
    rows = [
        ("model", f"{args.preset} {args.net}, {plan.parameters:,} parameters"),
        ("hardware", f"{plan.gpus} x {device.description}, peak {_human(device.peak_flops, 'FLOP/s')} each"),
        ("tokens", f"{_human(plan.processed_tokens)} processed ({epochs} epoch{'s' * (epochs > 1)})"),
        ("FLOPs/token", f"{_human(plan.flops_per_token)} (mean bp_steps {plan.mean_bp_steps:.2f})"),
        ("total FLOPs", f"{plan.total_flops:.3g}  (dense 6ND: {plan.dense_6nd_flops:.3g}, "
                        f"x{plan.total_flops / plan.dense_6nd_flops:.2f})"),
        ("throughput", f"{_human(plan.tokens_per_second, 'tokens/s')} at {plan.mfu:.0%} MFU"),
        ("wall time", f"{plan.wall_hours:,.1f} h ({plan.wall_hours / 24:.1f} days)"),
        ("GPU-hours", f"{plan.gpu_hours:,.0f}"),
        ("cost", f"${plan.dollars:,.0f} at ${plan.price_per_gpu_hour:g}/GPU-hour"),
        ("memory/device", f"{memory.total / 1e9:.1f} GB of {plan.device_memory_bytes / 1e9:.0f} GB "
                          f"(state {memory.model_state / 1e9:.1f}, activations {memory.activations / 1e9:.1f}, "
                          f"LM head {memory.lm_head / 1e9:.1f}, gathered {memory.gathered_weights / 1e9:.1f})"),
    ]
    for name, value in rows:
        print(f"{name:>14}  {value}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    return 0
