"""`frugal plan`: turn command-line answers into a `TrainingPlan` or the reverse question,
and print them as a readable table or JSON. The arithmetic lives in budget.py."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from frugal_lm.errors import FrugalError
from frugal_lm.plan.defaults import DEFAULT_BATCH_TOKENS, DEFAULT_LABEL_FRACTION, DEFAULT_MEAN_EXAMPLE_LEN, DEFAULT_MFU
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
  devices dense bf16 peak FLOP/s (no sparsity); cpu: measured with a short matmul benchmark in
          the precision `frugal train` uses there (bf16 on CPUs with native bf16 at hidden >= 512).
  vocab   the preset's, or the mix's (metadata.json) with --data, as `frugal train` builds it.
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
    parser.add_argument(
        "--mfu", type=float, default=DEFAULT_MFU, help=f"model FLOPs utilisation (default {DEFAULT_MFU})"
    )
    parser.add_argument("--price", type=float, default=2.0, help="USD per GPU-hour (default 2.0)")
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=DEFAULT_BATCH_TOKENS,
        help=f"tokens per device per micro-batch (default {DEFAULT_BATCH_TOKENS})",
    )
    parser.add_argument("--budget-usd", type=float, help="reverse question: what can I train for this much ...")
    parser.add_argument("--hours", type=float, help="... in this many hours (with --budget-usd)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    moe = parser.add_argument_group(
        "mixture of experts (checks an 'N parameters for $X' claim: 6 x active "
        "parameters x tokens; --tokens, --gpu, --gpus, --mfu, --price apply)"
    )
    moe.add_argument("--experts", type=int, metavar="E", help="routed experts (turns on the MoE question)")
    moe.add_argument("--top-k", type=int, metavar="K", help="routed experts each token runs (with --experts)")
    moe.add_argument("--parameters", type=float, metavar="N", help="total parameters, e.g. 1e12 (with --experts)")
    moe.add_argument(
        "--shared-experts",
        type=int,
        default=0,
        metavar="S",
        help="experts every token runs besides the routed ones (default 0)",
    )
    moe.add_argument(
        "--expert-fraction",
        type=float,
        default=0.95,
        metavar="F",
        help="share of the parameters in the experts (default 0.95; large MoE LLMs: 0.9-0.97)",
    )


def duration(hours: float) -> str:
    """Wall time in the unit that shows it: seconds, minutes, or hours and days."""
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.1f} h ({hours / 24:.1f} days)"


def _moe_plan(args: argparse.Namespace, device) -> int:
    """The MoE question: what `--tokens` cost a model of `--parameters` with E experts, top-K."""
    from frugal_lm.plan.budget import dense_training_dollars, moe_parameters

    if args.top_k is None or args.parameters is None:
        raise FrugalError("--experts needs --top-k and --parameters (e.g. --parameters 1e12 --experts 384 --top-k 8)")
    tokens = (args.tokens if args.tokens is not None else 60e9) * (args.epochs or 1)
    moe = moe_parameters(args.parameters, args.expert_fraction, args.experts, args.top_k, args.shared_experts)
    dollars = dense_training_dollars(moe.active, tokens, device, args.mfu, args.price)
    gpu_hours = dollars / args.price
    result = {
        "parameters": moe.total,
        "active_parameters": moe.active,
        "processed_tokens": tokens,
        "flops": 6.0 * moe.active * tokens,
        "gpu_hours": gpu_hours,
        "wall_hours": gpu_hours / args.gpus,
        "dollars": dollars,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    shared = f" + {args.shared_experts} shared" if args.shared_experts else ""
    rows = [
        (
            "model",
            f"{_human(moe.total)} parameters, {args.experts} experts{shared}, top-{args.top_k}, "
            f"{args.expert_fraction:.0%} in experts",
        ),
        ("active", f"{_human(moe.active)} parameters per token"),
        ("tokens", f"{_human(tokens)} processed"),
        ("total FLOPs", f"{result['flops']:.3g}  (6 x active x tokens: a floor, no attention or recurrence)"),
        ("hardware", f"{args.gpus} x {device.description} at {args.mfu:.0%} MFU"),
        ("wall time", duration(result["wall_hours"])),
        ("GPU-hours", f"{gpu_hours:,.0f}"),
        ("cost", f"${dollars:,.0f} at ${args.price:g}/GPU-hour"),
    ]
    for name, value in rows:
        print(f"{name:>14}  {value}")
    return 0


def _human(value: float, unit: str = "") -> str:
    for scale, suffix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}{unit}"
    return f"{value:.3g} {unit}"


def mix_vocab_size(directory: Path) -> int | None:
    """The vocabulary a model trained on this mix has (metadata.json, as `frugal train` reads
    it); None for a directory with only the epoch arrays (the preset's vocabulary stays)."""
    from frugal_lm.data.metadata import MIX_METADATA, read_mix_metadata

    if not (Path(directory) / MIX_METADATA).exists():
        return None
    return read_mix_metadata(directory).vocab_size


def _budget_plan(args: argparse.Namespace, device) -> int:
    """`--budget-usd` and `--hours`: what each preset gets for the money."""
    from frugal_lm.config import load_model_config
    from frugal_lm.plan.budget import affordable_runs

    answers = affordable_runs(args.budget_usd, args.hours, device, args.net, args.mfu, args.price)
    if args.json:
        print(json.dumps([asdict(answer) for answer in answers], indent=2))
        return 0
    print(
        f"${args.budget_usd:,.0f} for {args.hours:g} h at ${args.price:g}/GPU-hour rents "
        f"{answers[0].gpus} x {device.name}; at {args.mfu:.0%} MFU ({args.net}, bp_steps "
        f"{load_model_config('B', args.net).bp_steps_end}):"
    )
    print(f"  {'preset':<7}{'params':>10}{'tokens':>12}{'tokens/param':>14}")
    for a in answers:
        print(
            f"  {a.preset:<7}{_human(a.parameters):>10}{_human(a.processed_tokens):>12}{a.tokens_per_parameter:>14.0f}"
        )
    return 0


def run_plan(args: argparse.Namespace) -> int:
    """Answer `frugal plan` (heavy imports here, so building the parser stays fast)."""
    from frugal_lm.config import load_model_config
    from frugal_lm.plan.budget import plan_run, read_data_profile

    device = get_device(args.gpu)
    if args.experts is not None:
        return _moe_plan(args, device)
    if (args.budget_usd is None) != (args.hours is None):
        raise FrugalError("--budget-usd and --hours go together")
    if args.budget_usd is not None:
        return _budget_plan(args, device)
    config = load_model_config(args.preset, args.net)
    if device.name == "cpu":
        # Measured in the precision `frugal train` would compute in on this CPU, so the
        # plan's peak (and MFU) is the one the run reports.
        import torch

        from frugal_lm.plan.devices import device_running_here
        from frugal_lm.runtime import uses_bf16

        device = device_running_here("cpu", bf16=uses_bf16("auto", torch.device("cpu"), config.hidden_size))
    label_fraction, lengths = DEFAULT_LABEL_FRACTION, None
    if args.data is not None:
        if (vocab := mix_vocab_size(args.data)) is not None:
            config = config.model_copy(update={"vocab_size": vocab})
        profile = read_data_profile(args.data)
        tokens, epochs = profile.tokens_per_epoch, args.epochs or profile.epochs
        label_fraction, lengths = profile.label_fraction, profile.lengths
    else:
        tokens, epochs = args.tokens if args.tokens is not None else 60e9, args.epochs or 1
    if epochs < 1:
        raise FrugalError("--epochs must be >= 1")
    plan = plan_run(
        config,
        args.preset,
        tokens * epochs,
        args.gpus,
        device,
        args.mfu,
        args.price,
        label_fraction,
        lengths,
        args.batch_tokens,
    )
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    memory = plan.memory
    rows = [
        ("model", f"{args.preset} {args.net}, {plan.parameters:,} parameters"),
        ("hardware", f"{plan.gpus} x {device.description}, peak {_human(device.peak_flops, 'FLOP/s')} each"),
        ("tokens", f"{_human(plan.processed_tokens)} processed ({epochs} epoch{'s' * (epochs > 1)})"),
        ("FLOPs/token", f"{_human(plan.flops_per_token)} (mean bp_steps {plan.mean_bp_steps:.2f})"),
        (
            "total FLOPs",
            f"{plan.total_flops:.3g}  (dense 6ND: {plan.dense_6nd_flops:.3g}, "
            f"x{plan.total_flops / plan.dense_6nd_flops:.2f})",
        ),
        ("throughput", f"{_human(plan.tokens_per_second, 'tokens/s')} at {plan.mfu:.0%} MFU"),
        ("wall time", duration(plan.wall_hours)),
        ("GPU-hours", f"{plan.gpu_hours:,.0f}"),
        ("cost", f"${plan.dollars:,.0f} at ${plan.price_per_gpu_hour:g}/GPU-hour"),
        (
            "memory/device",
            f"{memory.total / 1e9:.1f} GB of {plan.device_memory_bytes / 1e9:.0f} GB "
            f"(state {memory.model_state / 1e9:.1f}, activations {memory.activations / 1e9:.1f}, "
            f"LM head {memory.lm_head / 1e9:.1f}, gathered {memory.gathered_weights / 1e9:.1f})",
        ),
    ]
    for name, value in rows:
        print(f"{name:>14}  {value}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    return 0
