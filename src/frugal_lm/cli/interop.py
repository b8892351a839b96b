"""`frugal export hf` and `frugal import hf`: to and from transformers' `hrm_text` format."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _export_command(args: argparse.Namespace) -> int:
    from frugal_lm.interop import export_hf

    result = export_hf(args.model, args.out, use_ema=not args.no_ema)
    print(
        f"exported {result.weights_source} ({result.config.hidden_size} hidden, {result.config.n_layers} layers, "
        f"vocab {result.config.vocab_size}) to {result.out}; load it with "
        f"transformers.AutoModelForCausalLM.from_pretrained({str(result.out)!r})"
    )
    return 0


def _import_command(args: argparse.Namespace) -> int:
    # Local directories only: make sure nothing below (now or in a future version) reaches a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from frugal_lm.interop import import_hf

    result = import_hf(args.hf_dir, args.out, args.special_tokens)
    print(
        f"imported {args.hf_dir} ({', '.join(result.source_dtypes)} -> float32; {result.config.hidden_size} hidden, "
        f"{result.config.n_layers} layers, vocab {result.config.vocab_size}) to {result.out}; use it as "
        f"--model {result.out} or init_from={result.out}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a model to another format").add_subparsers(
        dest="export_format", metavar="FORMAT", required=True
    )
    hf = export.add_parser(
        "hf",
        help="to the transformers `hrm_text` format (HrmTextForCausalLM)",
        description="Write OUT with config.json (model_type hrm_text), model.safetensors (EMA weights unless "
        "--no-ema), the tokenizer files AutoTokenizer loads (BOQ = bos, EOA = eos, our pad; a chat "
        "template renders our prompt layout) and generation_config.json (EOA stops generation). "
        "Only net=hrm models can be exported. Pass token_type_ids == 1 on the instruction tokens "
        "(BOQ..EOQ) to transformers for PrefixLM attention.",
    )
    hf.add_argument("--model", type=Path, required=True, help="training run, checkpoint or imported model directory")
    hf.add_argument("--out", type=Path, required=True, help="new directory (refused if it exists and is not empty)")
    hf.add_argument("--no-ema", action="store_true", help="export the raw weights instead of their EMA")
    hf.set_defaults(handler=_export_command)

    imports = commands.add_parser("import", help="import a model from another format").add_subparsers(
        dest="import_format", metavar="FORMAT", required=True
    )
    hf = imports.add_parser(
        "hf",
        help="from a local transformers `hrm_text` directory (e.g. released HRM-Text weights)",
        description="Read HF_DIR (config.json, model.safetensors or sharded model-*.safetensors with "
        "model.safetensors.index.json, tokenizer.json) without network access and write OUT, a "
        "model directory for --model OUT, init_from=OUT (fine-tuning) and `frugal export hf`. "
        "Special tokens: the ones the model declares (bos_token = BOQ, eos_token = EOA, pad_token "
        "= pad, in tokenizer_config.json, special_tokens_map.json or config.json's ids), else HRM-Text's "
        "(<|im_start|> BOQ, <|im_end|> EOQ, <|box_end|> EOA, <|endoftext|> pad, <|object_ref_start|> "
        "direct, ...); --special-tokens maps other strings.",
    )
    hf.add_argument("--hf-dir", type=Path, required=True, help="local transformers model directory")
    hf.add_argument("--out", type=Path, required=True, help="new directory (refused if it exists and is not empty)")
    hf.add_argument(
        "--special-tokens",
        type=Path,
        metavar="FILE",
        help="JSON/YAML: {special_tokens: {boq, eoq, eoa, pad}, condition_tokens: {direct, cot, ...}} "
        "naming the tokenizer's own strings for each role",
    )
    hf.set_defaults(handler=_import_command)
