"""Generation throughput of frugal-lm's engine vs transformers' HrmTextForCausalLM.generate.

One run, same machine, same weights (our HRM; config via `frugal_lm.interop`), same
prompts (all of one token length, so neither side pads), same number of new tokens, greedy:
- batch 1: the prompts one after another;
- batch B: the prompts B at a time (ours: B engine slots; transformers: one batch).
Our engines (`--engines`): eager; compiled (`Engine(compile=True)`: torch.compile, and on
a GPU replayed from CUDA graphs); graphs (GPU only: the eager step replayed from CUDA
graphs). Compiling and capturing happen in the untimed warm-up round, whose time is printed.
Tokens per second count generated tokens (up to and including the last one before EOA)
over the wall time of the whole generation, prefill included.

Agreement: in fp32 both sides must produce the same tokens (the script exits 1 if not).
With `--dtype bf16` (transformers in bf16 too) or `int8`, rounding moves near-ties, so the
run reports teacher-forced agreement instead: transformers' tokens are fed through our
engine and a position agrees when our greedy token there is theirs.

The floors:
- CPU: the run's fp32 matmuls alone (each prefill and decode step through the Linears one
  forward calls, in call order: every stack pass, then the LM head, on the engine's
  weights). Transformers' time over that floor is the most any engine could reach here
  without fewer or cheaper matmul FLOPs and bytes; our time over it is how close we are.
- GPU: the HBM roofline at batch 1. A decode step must read every Linear weight once per
  stack pass (the HRM runs its stacks 8 times per token), the head, and the KV cache; the
  roofline is the measured copy bandwidth over those bytes.

The model is randomly initialised (throughput does not depend on training), with a tokenizer
trained on the synthetic tasks for the prompts.

    PYTHONPATH=src python benchmarks/generate_throughput.py [--hidden 256] [--layers-per-stack 2] \
        [--vocab 8192] [--prompt-len 32] [--new-tokens 64] [--repeats 2] [--threads 1] [--no-compile] \
        [--device cpu|cuda] [--preset XL] [--dtype fp32|bf16|int8] [--batch-sizes 1,8,32,64]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from frugal_lm.config import load_model_config
from frugal_lm.data.synth import generate as synthetic_problems
from frugal_lm.data.tokenizer import train_tokenizer
from frugal_lm.infer.engine import Engine, SamplingParams, store_weights_input_major
from frugal_lm.infer.kv_cache import StaticKVCache
from frugal_lm.infer.loading import PRECISIONS, LoadedModel
from frugal_lm.infer.quantize import quantize_linears_int8
from frugal_lm.interop import to_hf_config
from frugal_lm.model import build_model


def make_prompts(tokenizer, count: int, prompt_len: int) -> list[list[int]]:
    """`count` instructions of exactly `prompt_len` tokens: BOQ + direct + text + EOQ."""
    special = tokenizer.special_ids
    head, tail = [special["boq"], tokenizer.condition_ids["direct"]], [special["eoq"]]
    prompts = []
    problems = synthetic_problems(["addition", "sorting", "reversal", "expression"], 10 * count, seed=1, heldout=False)
    for problem in problems:
        text_ids: list[int] = []
        while len(text_ids) < prompt_len:  # long enough: repeat the instruction text
            text_ids += tokenizer.tokenizer.encode(problem.instruction + " ", add_special_tokens=False).ids
        prompts.append(head + text_ids[: prompt_len - 3] + tail)
        if len(prompts) == count:
            return prompts
    raise RuntimeError("not enough synthetic problems")


def run_ours(engine: Engine, prompts: list[list[int]], new_tokens: int) -> tuple[list[list[int]], float]:
    """The engine's own continuous-batching loop (what `Engine.generate` runs), on token ids."""
    sampling = SamplingParams(max_new_tokens=new_tokens)
    outputs: list[list[int]] = [[] for _ in prompts]
    start = time.perf_counter()
    waiting, owner = list(range(len(prompts))), {}
    while waiting or owner:
        joining = [waiting.pop(0) for _ in range(min(len(waiting), engine.free_slots()))]
        if joining:
            slots = engine.add_many([prompts[index] for index in joining], [sampling] * len(joining))
            owner.update(zip(slots, joining))
        for event in engine.step():
            if event.token_id is not None:
                outputs[owner[event.slot]].append(event.token_id)
            if event.finished:
                del owner[event.slot]
                engine.release(event.slot)
    return outputs, time.perf_counter() - start


def run_transformers(model, prompts: list[list[int]], new_tokens: int, eoa: int, pad: int):
    input_ids = torch.tensor(prompts, device=model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        sequences = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            token_type_ids=torch.ones_like(input_ids),  # PrefixLM: all instruction
            do_sample=False,
            max_new_tokens=new_tokens,
            eos_token_id=eoa,
            pad_token_id=pad,
        )
    if input_ids.is_cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    outputs = []
    for row in sequences[:, input_ids.shape[1] :].tolist():
        outputs.append(row[: row.index(eoa)] if eoa in row else row)
    return outputs, elapsed


def linears_of_one_forward(model, config) -> list[torch.nn.Linear]:
    """The Linear modules one decode forward calls, in call order (the net's own pass
    schedule, recorded with forward hooks on a throwaway one-token cache)."""
    called: list[torch.nn.Linear] = []
    hooks = [
        module.register_forward_hook(lambda module, inputs, output: called.append(module))
        for module in model.modules()
        if isinstance(module, torch.nn.Linear)
    ]
    device = model.lm_head.weight.device
    cache = StaticKVCache(config, 1, 1, model.lm_head.weight.dtype, device)
    position = torch.zeros(1, dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            model(position[:, None], position[:, None], None, kv_cache=cache.decode([0], position))
    finally:
        for hook in hooks:
            hook.remove()
    return called


def matmul_floor_seconds(
    model, config, rows: int, prompt_len: int, groups: int, decode_steps: int, repeats: int = 3
) -> float:
    """Best-of-`repeats` seconds of the run's matmuls alone: `groups` prefills of `rows`
    prompts of `prompt_len` tokens and `decode_steps` steps of `rows` rows, each through
    the Linears of one forward in call order (the head at one position per prompt)."""
    *trunk, head = linears_of_one_forward(model, config)
    device = model.lm_head.weight.device

    def inputs(tokens: int) -> dict[int, torch.Tensor]:
        return {
            width: torch.randn(tokens, width, device=device)
            for width in {linear.in_features for linear in (*trunk, head)}
        }

    prefill_inputs, decode_inputs = inputs(rows * prompt_len), inputs(rows)

    def forward(trunk_inputs):
        for linear in trunk:
            torch.nn.functional.linear(trunk_inputs[linear.in_features], linear.weight)
        torch.nn.functional.linear(decode_inputs[head.in_features], head.weight)

    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for _ in range(groups):
                forward(prefill_inputs)
            for _ in range(decode_steps):
                forward(decode_inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best


def measure(runs: dict, prompts, batch_size: int, repeats: int) -> dict:
    """Best of `repeats` (after a warm-up) per runner of generating for all prompts,
    `batch_size` at a time; runners alternate, so a burst of load on a shared machine
    hits both. Returns {label: (outputs, tokens per second)}."""
    best = {label: (None, float("inf")) for label in runs}
    for attempt in range(repeats + 1):
        for label, run in runs.items():
            outputs, elapsed = [], 0.0
            for first in range(0, len(prompts), batch_size):
                chunk_outputs, chunk_elapsed = run(prompts[first : first + batch_size])
                outputs += chunk_outputs
                elapsed += chunk_elapsed
            if attempt == 0:  # the warm-up; for the compiled engine it includes compiling
                print(f"  {label:<28} warm-up round {elapsed:8.1f} s", flush=True)
            elif elapsed < best[label][1]:
                best[label] = (outputs, elapsed)
    results = {}
    for label, (outputs, elapsed) in best.items():
        tokens = sum(len(o) for o in outputs)
        print(f"  {label:<28} {tokens / elapsed:10.1f} tokens/s  ({tokens} tokens in {elapsed:.3f} s)", flush=True)
        results[label] = (outputs, tokens / elapsed)
    return results


ENGINES = {
    "eager": {"compile": False, "cuda_graphs": False},
    "compiled": {"compile": True},  # on a GPU: compiled and replayed from CUDA graphs
    "graphs": {"compile": False, "cuda_graphs": True},  # GPU only: the eager step, from CUDA graphs
}
SPEC_HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12}  # SXM datasheets


def measured_hbm_bytes_per_s(device: str, n_bytes: int = 2 << 30) -> float:
    """Best of 6 device-to-device copies of `n_bytes`: bytes read plus written per second."""
    source = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(6):
        torch.cuda.synchronize()
        start = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n_bytes / best


BYTES_PER_ELEMENT = {"fp32": (4, 4), "bf16": (2, 2), "int8": (1, 2)}
"""(Linear weight, KV cache) bytes per element at each --dtype."""


def bytes_per_decode_step(model, config, dtype: str, mean_context: float) -> float:
    """What one batch-1 decode step must read: every Linear weight of every stack pass
    (the HRM reads a stack's weights at each of its passes), the head, and every layer
    slot's cached keys and values at the mean context."""
    weight_bytes, kv_bytes = BYTES_PER_ELEMENT[dtype]
    weights = sum(linear.weight.numel() for linear in linears_of_one_forward(model, config))
    layer_slots = config.stack_passes * config.layers_per_stack
    kv = layer_slots * 2 * config.kv_heads * config.head_dim * mean_context
    return weights * weight_bytes + kv * kv_bytes


def teacher_forced_agreement(engine: Engine, prompts: list[list[int]], references: list[list[int]]) -> tuple[int, int]:
    """(positions where `engine`'s greedy token is the reference token, positions): each
    reference sequence is fed through the engine one token at a time, so every position
    is scored on its own (free-running, everything after a first difference would count)."""
    agree = total = 0
    for prompt, reference in zip(prompts, references):
        (slot,) = engine.add_many([prompt], [SamplingParams(max_new_tokens=len(reference) + 1)])
        for position, target in enumerate(reference):
            agree += int(torch.argmax(engine.next_logits_NV[slot]).item() == target)
            total += 1
            if position + 1 < len(reference) and engine.slots[slot].length < engine.max_seq_len:
                engine.feed([slot], [target])
        engine.release(slot)
    return agree, total


def build_models(args):
    """(our fp32 model, its config, the tokenizer, transformers' model on the same weights,
    our model at `--dtype`)."""
    from transformers import HrmTextConfig, HrmTextForCausalLM

    torch.manual_seed(0)
    max_seq_len = args.prompt_len + args.new_tokens
    if args.preset:
        config = load_model_config(args.preset, "hrm", vocab_size=args.vocab, max_seq_len=max_seq_len)
    else:
        config = load_model_config(
            "tiny",
            "hrm",
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            n_heads=args.heads,
            n_layers=2 * args.layers_per_stack,
            max_seq_len=max_seq_len,
        )
    texts = (
        text
        for problem in synthetic_problems(["addition", "sorting", "reversal", "expression"], 2000, 0, False)
        for text in (problem.instruction, problem.response)
    )
    tokenizer = train_tokenizer(texts, vocab_size=min(args.vocab, 1024))
    model = build_model(config, device=args.device).eval()
    precision = PRECISIONS[args.dtype]
    their_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with torch.device(args.device):
        hf_model = HrmTextForCausalLM(HrmTextConfig(**to_hf_config(config, tokenizer.special_ids))).eval()
    # Our parameter names are hrm_text's inside its `model.` prefix; only the head sits on top.
    hf_model.load_state_dict(
        {name if name == "lm_head.weight" else f"model.{name}": tensor for name, tensor in model.state_dict().items()},
        strict=True,
    )
    hf_model.config._attn_implementation = "sdpa"
    hf_model.to(args.device, their_dtype)
    ours = model
    if args.dtype != "fp32":  # a copy: the fp32 floor stays measurable
        ours = build_model(config, device="meta")
        ours.to_empty(device=args.device)
        ours.load_state_dict(model.state_dict())
        ours.to(precision.compute_dtype)
        ours.eval()
        ours.rotary.inv_freq = model.rotary.inv_freq.clone()
        if precision.int8_weights:
            quantize_linears_int8(ours)
    return model, config, tokenizer, hf_model, ours


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The random model and prompt lengths `build_models` reads (shared with profile_decode.py)."""
    parser.add_argument("--preset", help="a model preset (e.g. XL) instead of --hidden/--heads/--layers-per-stack")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers-per-stack", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--prompts", type=int, help="prompts per batch size (default: max(8, batch size))")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both sides (default 1: on a shared machine, more threads "
        "than free cores make every small matmul wait at OpenMP barriers)",
    )
    parser.add_argument(
        "--engines",
        help=f"our engines, of {', '.join(ENGINES)} (default: eager,compiled on a CPU, graphs,compiled on a GPU)",
    )
    parser.add_argument("--no-compile", action="store_true", help="measure only the eager engine")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="our engine's --dtype; transformers runs in bf16 for bf16, else fp32. Outside fp32 the "
        "tokens agree only mostly: the run reports teacher-forced agreement instead of failing",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine_names = (args.engines or ("eager,compiled" if args.device == "cpu" else "graphs,compiled")).split(",")
    if args.no_compile:
        engine_names = ["eager"]
    model, config, tokenizer, hf_model, ours = build_models(args)
    loaded = LoadedModel(ours, config, tokenizer, weights_path=None)  # type: ignore[arg-type]
    eoa, pad = tokenizer.special_ids["eoa"], tokenizer.special_ids["pad"]

    gpu = f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(
        f"# {platform.node()}: {platform.processor() or platform.machine()}{gpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"# HRM {args.preset or ''} hidden {config.hidden_size}, {config.layers_per_stack}+{config.layers_per_stack} "
        f"layers, {config.n_heads} heads, vocab {config.vocab_size}, {config.stack_passes} stack passes; prompts of "
        f"{args.prompt_len} tokens, {args.new_tokens} new tokens, greedy; ours {args.dtype}, transformers "
        f"{str(next(hf_model.parameters()).dtype).removeprefix('torch.')}"
    )
    hbm = None
    if args.device == "cuda":
        hbm = measured_hbm_bytes_per_s(args.device)
        spec = next((v for k, v in SPEC_HBM_BYTES_PER_S.items() if k in torch.cuda.get_device_name()), None)
        print(f"# HBM: {hbm / 1e12:.2f} TB/s measured (copy)" + (f", {spec / 1e12:.2f} TB/s spec" if spec else ""))
    all_agree = True
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        prompts = make_prompts(tokenizer, args.prompts or max(8, batch_size), args.prompt_len)
        engines = {
            f"frugal-lm Engine ({name})": Engine(loaded, max_batch_size=batch_size, **ENGINES[name])
            for name in engine_names
        }
        print(f"batch {batch_size} ({len(prompts)} prompts):")
        runs = {
            label: (lambda p, engine=engine: run_ours(engine, p, args.new_tokens)) for label, engine in engines.items()
        }
        runs["transformers generate"] = lambda p: run_transformers(hf_model, p, args.new_tokens, eoa, pad)
        results = measure(runs, prompts, batch_size, args.repeats)
        theirs, theirs_rate = results.pop("transformers generate")
        # Decode forwards of the run: per group of prompts, about as many as its longest output.
        steps = sum(
            max(len(output) for output in theirs[first : first + batch_size])
            for first in range(0, len(prompts), batch_size)
        )
        groups = -(-len(prompts) // batch_size)
        if args.device == "cpu":
            store_weights_input_major(model)  # the fp32 engine's own layout (a no-op when it is `ours`)
            floor = matmul_floor_seconds(model, config, batch_size, args.prompt_len, groups, steps)
            theirs_seconds = sum(len(output) for output in theirs) / theirs_rate
            print(
                f"  fp32 matmul floor: {floor:.3f} s ({groups} prefills, {steps} decode steps); transformers took "
                f"{theirs_seconds:.3f} s, so no engine can exceed {theirs_seconds / floor:.2f}x here"
            )
        for label, (outputs, ours_rate) in results.items():
            same = sum(a == b for a, b in zip(outputs, theirs))
            line = f"  {label}: {ours_rate / theirs_rate:.2f}x transformers; identical sequences {same}/{len(prompts)}"
            if args.device == "cpu":
                seconds = sum(len(output) for output in outputs) / ours_rate
                line += f"; {seconds / floor:.2f}x the matmul floor"
            if args.dtype == "fp32":
                all_agree &= same == len(prompts)
            else:
                # At most 8 prompts: feeding one token per step is slow for a large model.
                agree, total = teacher_forced_agreement(engines[label], prompts[:8], theirs[:8])
                line += f"; teacher-forced greedy agreement {agree}/{total} ({100 * agree / total:.2f}%)"
            if hbm is not None and batch_size == 1:
                step_bytes = bytes_per_decode_step(model, config, args.dtype, args.prompt_len + args.new_tokens / 2)
                line += (
                    f"; HBM roofline {hbm / step_bytes:.0f} tokens/s ({step_bytes / 1e9:.2f} GB per token): "
                    f"{100 * ours_rate * step_bytes / hbm:.0f}% of it, prefill included"
                )
            print(line, flush=True)
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
