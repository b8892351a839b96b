"""`frugal generate` and `frugal chat`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from frugal_lm.errors import FrugalError
from frugal_lm.files import write_text_atomically

MODEL_HELP = (
    "a training run directory (latest checkpoint, EMA weights), a checkpoint directory or an exported model directory"
)


def _conditions(text: str) -> tuple[str, ...]:
    return tuple(tag.strip() for tag in text.split(",") if tag.strip())


def _sampling(args: argparse.Namespace):
    from frugal_lm.infer.engine import SamplingParams

    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )
    sampling.validate()
    return sampling


def read_prompts_file(path: Path, default_conditions: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(prompt, conditions) per line of a JSONL file: {"prompt": ...} (or "instruction", so a
    records file works as is) with an optional "condition" ("cot" or "direct,noisy")."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FrugalError(f"{path}: cannot read prompts ({error})") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FrugalError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise FrugalError(f'{where}: expected an object with a "prompt" field')
        key = "prompt" if "prompt" in row else "instruction"
        if not isinstance(row.get(key), str):
            raise FrugalError(f'{where}: field "prompt" (or "instruction") must be a string')
        condition = row.get("condition")
        if condition is not None and not isinstance(condition, str):
            raise FrugalError(f'{where}: field "condition" must be a string such as "cot" or "direct,noisy"')
        prompts.append((row[key], _conditions(condition) if condition else default_conditions))
    if not prompts:
        raise FrugalError(f"{path}: no prompts in the file")
    return prompts


def _generate_command(args: argparse.Namespace) -> int:
    from frugal_lm.infer.engine import Engine, GenerationRequest

    default_conditions = _conditions(args.condition)
    if args.prompts_file is not None:
        prompts = read_prompts_file(args.prompts_file, default_conditions)
    else:
        prompts = [(prompt, default_conditions) for prompt in args.prompt]
    sampling = _sampling(args)
    if args.out is not None and args.out.exists() and not args.overwrite:
        raise FrugalError(f"--out {args.out} exists; pass --overwrite to replace it")
    engine = Engine(_load(args), max_batch_size=args.batch_size, **engine_options(args))
    requests = [GenerationRequest(prompt, conditions, sampling) for prompt, conditions in prompts]
    for request in requests:  # fail on a bad tag before any generation
        engine.encode_prompt(request.prompt, request.conditions)
    results = engine.generate(requests, progress=args.out is not None and len(requests) > 1)
    lines = [
        json.dumps(
            {
                "prompt": request.prompt,
                "condition": ",".join(request.conditions),
                "text": result.text,
                "finish_reason": result.finish_reason,
                "tokens": len(result.token_ids),
                "prompt_tokens": result.prompt_tokens,
            },
            ensure_ascii=False,
        )
        for request, result in zip(requests, results)
    ]
    if args.out is None:
        print("\n".join(lines))
    else:
        write_text_atomically(args.out, "\n".join(lines) + "\n")
        print(f"wrote {len(lines)} generations to {args.out}", file=sys.stderr)
    return 0


def _chat_command(args: argparse.Namespace) -> int:
    from frugal_lm.infer.chat import ChatSession
    from frugal_lm.infer.engine import Engine
    from frugal_lm.infer.loading import default_model_name

    try:
        import readline  # noqa: F401  (input() gains line editing and history: arrows, Ctrl-R)
    except ImportError:  # Windows has no readline; plain input() still works
        pass
    conditions = _conditions(args.condition)
    loaded = _load(args)
    engine = Engine(loaded, max_batch_size=1)
    engine.encode_prompt("", conditions)  # a bad --condition is a startup error
    model = f"{default_model_name(args.model)} ({loaded.weights_path})"
    return ChatSession(engine, _sampling(args), conditions, model=model).run()


def _load(args: argparse.Namespace):
    from frugal_lm.infer.loading import load_model
    from frugal_lm.runtime import resolve_device

    device = resolve_device(args.device)
    return load_model(args.model, device=device, prefer_ema=not args.no_ema, dtype=chosen_precision(args, device))


def chosen_precision(args: argparse.Namespace, device):
    """`--dtype` on `device`, with a note on stderr when this CPU would emulate it."""
    from frugal_lm.infer.loading import inference_precision, precision_note

    precision = inference_precision(args.dtype, device)
    note = precision_note(precision, device)
    if note:
        print(note, file=sys.stderr)
    return precision


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device`, `--dtype` and `--no-ema`, shared by generate, chat and serve."""
    add_device_argument(parser)
    parser.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "int8"),
        default="auto",
        help="how the model computes (default auto: bf16 on a GPU, fp32 on CPU); int8: int8 "
        "Linear weights with bf16 activations, the fastest on a CPU (see the README's Inference)",
    )
    add_weights_argument(parser)


def add_decode_step_arguments(parser: argparse.ArgumentParser) -> None:
    """`--compile` and `--cuda-graphs`, shared by generate and serve."""
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step with torch.compile (and replay it from CUDA graphs on a GPU): "
        "faster per token after a one-off compile of a minute or more at each context length "
        "(powers of two from 128) and batch size (powers of two); worth it for many prompts",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="GPU only: replay the decode step from CUDA graphs without compiling it; seconds to "
        "capture where compiling a large model takes minutes",
    )


def engine_options(args: argparse.Namespace) -> dict:
    """The Engine's `compile` and `cuda_graphs` from `--compile` and `--cuda-graphs`."""
    return {"compile": args.compile, "cuda_graphs": True if args.cuda_graphs else None}


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs (default: cuda when available)",
    )


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-ema",
        action="store_true",
        help="use a run's raw weights instead of their EMA (the default, usually the better model)",
    )


def _add_common(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="DIR", help=MODEL_HELP)
    parser.add_argument(
        "--condition",
        default="direct",
        help="condition tags, comma-separated: direct (default), cot, noisy, synth, ...",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        metavar="N",
        help=f"answer length limit in tokens (default {max_new_tokens})",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, metavar="T", help="0 = greedy, deterministic (default); > 0 samples"
    )
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus filter (default 1.0 = off)")
    parser.add_argument("--top-k", type=int, default=0, metavar="K", help="top-k filter (default 0 = off)")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="sampling seed (default: fresh)")
    add_device_arguments(parser)


def register(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate",
        help="answer prompts with a trained model, JSONL out",
        description="Generate an answer for each prompt (given with --prompt, repeatable, or as a JSONL file "
        'of {"prompt": ..., "condition": ...} lines) and print one JSON object per prompt: '
        "prompt, condition, text, finish_reason (stop = end-of-answer token, length = limit), "
        "tokens (generated), prompt_tokens. Prompts are batched with a KV-cache engine.",
    )
    _add_common(generate, max_new_tokens=256)
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeat for several)")
    source.add_argument(
        "--prompts-file",
        type=Path,
        metavar="FILE.jsonl",
        help='one {"prompt": str, "condition": "cot"} object per line ("instruction" works as the prompt field too)',
    )
    generate.add_argument("--out", type=Path, metavar="FILE.jsonl", help="write the JSONL here instead of stdout")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    generate.add_argument(
        "--batch-size", type=int, default=8, metavar="N", help="sequences decoded together (default 8)"
    )
    add_decode_step_arguments(generate)
    generate.set_defaults(handler=_generate_command)

    chat = commands.add_parser(
        "chat",
        help="talk to a trained model in the terminal",
        description="Interactive session: each message is answered, streamed as it is generated, with the "
        "earlier turns folded into the instruction as `frugal serve` folds a chat (/reset starts "
        "over). Line editing and history where Python has readline. Commands: /condition cot, "
        "/temperature T, /top-p P, /top-k K, /max-new-tokens N, /seed S, /settings, /reset, /help, "
        "/quit. Ctrl-C while the model answers cancels that answer; Ctrl-C or Ctrl-D at the prompt "
        "leaves.",
    )
    _add_common(chat, max_new_tokens=512)
    chat.set_defaults(handler=_chat_command)
