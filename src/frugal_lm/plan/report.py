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
          (20 B/param) sharded by FSDP over --gpus; every block gathered in bf16 once per step
          and kept to the backward pass (train/distributed.py); activations of the bp_steps=5 passes with gradients
          for --batch-tokens tokens (--activation-checkpointing: block inputs and one block; its
          recompute, ~1/3 more compute, is not model FLOPs: lower --mfu to match), LM-head logits
          in fp32; +10% for allocator and buffers.
  devices dense bf16 peak FLOP/s (no sparsity); cpu: measured with a short matmul benchmark in
          the precision `frugal train` uses there (bf16 on CPUs with native bf16 at hidden >= 512).
  vocab   the preset's, or the mix's (metadata.json) with --data, as `frugal train` builds it.
  compare 'dense 6ND' is what a plain Transformer of the same parameters would spend (of the
          active parameters, for a mixture of experts).
  MoE     a model with experts (a preset such as grok1, or model.moe.* overrides) counts its
          active parameters: router, top_k routed and the shared experts per token. Memory:
          --expert-parallel N ranks split each layer's routed experts, a rank keeping its E/N
          whole (state and weights, not FSDP-sharded). all-to-all: dispatch + combine of top_k copies
          of each token per MoE layer call, forward every pass and backward the bp_steps passes,
          (N-1)/N of it off the device, at the device table's NVLink/PCIe rate within a node of
          8 and InfiniBand/Ethernet between nodes; reported, not added to the wall time.
  budget  --budget-usd with --hours: what each dense preset gets; with --preset: the tokens the
          money buys that model on --gpus (or as many GPUs as --hours allows)."""


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="model preset (default XL)")
    parser.add_argument(
        "--net", choices=["hrm", "transformer", "universal"], help="net (default: the preset's own, else hrm)"
    )
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
    parser.add_argument(
        "--budget-usd",
        type=float,
        help="reverse question: what this much buys (with --hours: every preset; with --preset: that model)",
    )
    parser.add_argument("--hours", type=float, help="... in this many hours (with --budget-usd)")
    parser.add_argument(
        "--expert-parallel",
        type=int,
        default=1,
        metavar="N",
        help="ranks each MoE layer's routed experts are split over (default 1)",
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="memory as with activation_checkpointing=true (blocks keep only their inputs)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="model.KEY=VALUE",
        help="model keys over the preset, as `frugal train` takes them (model.moe.experts=8 model.n_kv_heads=4)",
    )


def duration(hours: float) -> str:
    """Wall time in the unit that shows it: seconds, minutes, or hours and days."""
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.1f} h ({hours / 24:.1f} days)"


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


def model_overrides(items: list[str]) -> dict:
    """`model.KEY=VALUE` arguments as a nested dict of model keys (`frugal train`'s spelling)."""
    from frugal_lm.config import parse_overrides

    tree = parse_overrides(items)
    for key, value in tree.items():
        if key != "model" or not isinstance(value, dict):
            raise FrugalError(
                f"{key}=...: frugal plan takes model keys only, as model.KEY=VALUE (e.g. model.moe.experts=8)"
            )
    model = tree.get("model", {})
    if "net" in model:
        raise FrugalError("model.net=...: give the net as --net")
    return model


def _budget_table(args: argparse.Namespace, device, overrides: dict) -> int:
    """`--budget-usd` and `--hours` without `--preset`: what each dense preset gets for the money."""
    from frugal_lm.plan.budget import affordable_runs

    net = args.net or "hrm"
    answers = affordable_runs(args.budget_usd, args.hours, device, net, args.mfu, args.price, overrides=overrides)
    if args.json:
        print(json.dumps([asdict(answer) for answer in answers], indent=2))
        return 0
    print(
        f"${args.budget_usd:,.0f} for {args.hours:g} h at ${args.price:g}/GPU-hour rents "
        f"{answers[0].gpus} x {device.name}; at {args.mfu:.0%} MFU ({net}, bp_steps {answers[0].bp_steps}):"
    )
    print(f"  {'preset':<7}{'params':>10}{'tokens':>12}{'tokens/param':>14}")
    for a in answers:
        print(
            f"  {a.preset:<7}{_human(a.parameters):>10}{_human(a.processed_tokens):>12}{a.tokens_per_parameter:>14.0f}"
        )
    return 0


def _measured_cpu(config):
    """This CPU, measured in the precision `frugal train` would compute in here, so the plan's
    peak (and MFU) is the one the run reports."""
    import torch

    from frugal_lm.plan.devices import device_running_here
    from frugal_lm.runtime import uses_bf16

    return device_running_here("cpu", bf16=uses_bf16("auto", torch.device("cpu"), config.hidden_size))


def _tokens_and_data(args: argparse.Namespace, config):
    """(config, tokens per epoch, epochs, label fraction, lengths) from --data or --tokens."""
    from frugal_lm.plan.budget import read_data_profile

    if args.data is None:
        return config, args.tokens if args.tokens is not None else 60e9, args.epochs or 1, DEFAULT_LABEL_FRACTION, None
    if (vocab := mix_vocab_size(args.data)) is not None:
        config = config.model_copy(update={"vocab_size": vocab})
    profile = read_data_profile(args.data)
    return config, profile.tokens_per_epoch, args.epochs or profile.epochs, profile.label_fraction, profile.lengths


def run_plan(args: argparse.Namespace) -> int:
    """Answer `frugal plan` (heavy imports here, so building the parser stays fast)."""
    from frugal_lm.config import load_model_config
    from frugal_lm.plan.budget import budget_run, plan_run

    device = get_device(args.gpu)
    overrides = model_overrides(args.overrides)
    if args.hours is not None and args.budget_usd is None:
        raise FrugalError("--hours goes with --budget-usd")
    if args.budget_usd is not None and args.preset is None:
        if args.hours is None:
            raise FrugalError("--budget-usd and --hours go together (or name a model with --preset)")
        return _budget_table(args, device, overrides)
    preset = args.preset or "XL"
    config = load_model_config(preset, args.net, **overrides)
    if device.name == "cpu":
        device = _measured_cpu(config)
    config, tokens, epochs, label_fraction, lengths = _tokens_and_data(args, config)
    if epochs < 1:
        raise FrugalError("--epochs must be >= 1")
    shape = {
        "mfu": args.mfu,
        "price_per_gpu_hour": args.price,
        "label_fraction": label_fraction,
        "lengths": lengths,
        "batch_tokens": args.batch_tokens,
        "expert_parallel": args.expert_parallel,
        "activation_checkpointing": args.activation_checkpointing,
    }
    if args.budget_usd is None:
        plan = plan_run(config, preset, tokens * epochs, args.gpus, device, **shape)
    else:
        plan = budget_run(config, preset, args.budget_usd, _budget_gpus(args, device), device, **shape)
    if args.json:
        print(json.dumps({**plan.to_dict(), **({"budget_usd": args.budget_usd} if args.budget_usd else {})}, indent=2))
        return 0
    if args.budget_usd is not None:
        print(_budget_headline(plan, args.budget_usd))
    _print_plan(plan, config, device, epochs if args.budget_usd is None else None)
    return 0


def _budget_gpus(args: argparse.Namespace, device) -> int:
    """--gpus, or with --hours as many GPUs as the budget rents for that long."""
    if args.tokens is not None or args.epochs is not None:
        raise FrugalError("--tokens and --epochs do not go with --budget-usd: the budget sets the tokens")
    if args.hours is None:
        return args.gpus
    gpus = int(args.budget_usd // (args.price * args.hours))
    if gpus < 1:
        raise FrugalError(f"${args.budget_usd:,.0f} does not rent one {device.name} for {args.hours:g} h")
    return gpus


def _budget_headline(plan, budget_usd: float) -> str:
    per_active = ""
    if plan.active_parameters != plan.parameters:
        per_active = f", {plan.processed_tokens / plan.active_parameters:.1f} per active parameter"
    return (
        f"${budget_usd:,.0f} buys {_human(plan.processed_tokens)} tokens of {plan.preset} "
        f"({plan.processed_tokens / plan.parameters:.1f} per parameter{per_active}) on {plan.gpus} x {plan.device} "
        f"in {duration(plan.wall_hours)}:"
    )


def _model_row(plan, config) -> str:
    text = f"{plan.preset} {plan.net}, {plan.parameters:,} parameters"
    moe = config.moe
    if not moe.enabled:
        return text
    shared = f" + {moe.shared_experts} shared" if moe.shared_experts else ""
    return (
        f"{text}, {plan.active_parameters:,} active ({moe.experts} experts{shared}, top-{moe.top_k}, "
        f"expert parallel {plan.expert_parallel})"
    )


def _all_to_all_row(plan, device) -> str:
    traffic = plan.all_to_all
    if traffic.bytes == 0:
        return "none (expert_parallel=1: every rank holds every expert)"
    where = f"{_human(traffic.intra_node_bytes, 'B')} within a node, {_human(traffic.inter_node_bytes, 'B')} between"
    if traffic.seconds != traffic.seconds:  # NaN: no link rate for this device
        return f"{_human(traffic.bytes, 'B')} per device per step ({where}); link rates unknown for {device.name}"
    return (
        f"{_human(traffic.bytes, 'B')} per device per step ({where}), {traffic.seconds:.2g} s over "
        f"{device.interconnect} = {traffic.seconds / plan.step_seconds:.1%} of a step's compute "
        f"({plan.step_seconds:.2g} s)"
    )


def _print_plan(plan, config, device, epochs: int | None) -> None:
    memory = plan.memory
    processed = f"{_human(plan.processed_tokens)} processed"
    if epochs is not None:
        processed += f" ({epochs} epoch{'s' * (epochs > 1)})"
    compare = "dense 6ND" if not config.moe.enabled else "6 x active parameters x tokens"
    rows = [
        ("model", _model_row(plan, config)),
        ("hardware", f"{plan.gpus} x {device.description}, peak {_human(device.peak_flops, 'FLOP/s')} each"),
        ("tokens", processed),
        ("FLOPs/token", f"{_human(plan.flops_per_token)} (mean bp_steps {plan.mean_bp_steps:.2f})"),
        (
            "total FLOPs",
            f"{plan.total_flops:.3g}  ({compare}: {plan.dense_6nd_flops:.3g}, "
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
    if plan.all_to_all is not None:
        rows.append(("all-to-all", _all_to_all_row(plan, device)))
    for name, value in rows:
        print(f"{name:>14}  {value}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
