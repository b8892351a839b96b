"""Tokenizer files for transformers, and the role mapping back from them.

Design choices:
- Export writes `tokenizer.json` (what transformers' fast tokenizer loads: our vocabulary
  and merges, plus the post-processor below), `tokenizer_config.json` and
  `special_tokens_map.json` naming BOQ as BOS, EOA as EOS, our PAD, and EOQ plus the condition tokens as additional
  special tokens, and keeps our `tokenizer_info.json` so we reload the roles ourselves.
  `tokenizer_class` is `PreTrainedTokenizerFast`, which every transformers version maps to
  its tokenizers-backed class.
- PrefixLM needs `token_type_ids == 1` on the instruction, and transformers' tokenizer
  gives all zeros unless `tokenizer.json` says otherwise. So the exported `tokenizer.json`
  carries a post-processor (`prefix_lm_post_processor`): `tok(text)` is an instruction
  (BOQ + <direct> + text + EOQ, type 1 throughout: what `frugal generate --prompt text`
  feeds the model), `tok(instruction, response)` the training layout (response + EOA, type
  0). `model_input_names` lists token_type_ids so they are always returned, and padding is
  on the left as `generate` needs. Our own code encodes with `add_special_tokens=False`,
  which the post-processor leaves alone (ids unchanged, types 1: harmless to us).
- A chat template renders our prompt layout (BOQ + condition + text + EOQ; an assistant
  turn is text + EOA), so `apply_chat_template(..., condition="cot", return_dict=True)`
  gives exactly the ids our engine feeds the model, all typed 1 by the post-processor
  (the rendered text is one sequence): right for a prompt, which is all instruction.
- Import: roles come from, first to last, an explicit mapping file (`--special-tokens`),
  the directory's own `tokenizer_info.json` (our export: every role), the special tokens
  the directory declares (transformers' bos -> BOQ, eos -> EOA, pad -> PAD, as our export
  declares them; read from tokenizer_config.json, special_tokens_map.json, then the ids in
  config.json and generation_config.json), and the HRM-Text defaults (the released HRM-Text
  tokenizer's strings) only for roles still unset: EOQ and the condition tokens have no
  transformers name. A role token missing from the vocabulary is an error naming where the
  role came from; so are BOQ, EOQ and EOA sharing a token (a GPT-2-style tokenizer declares
  one token for bos and eos), which would make prompts and answers indistinguishable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from tokenizers import Tokenizer, processors

from frugal_lm.data.tokenizer import DEFAULT_CONDITION_TOKENS, DEFAULT_SPECIAL_TOKENS, TextTokenizer, load_tokenizer
from frugal_lm.errors import FrugalError

ROLES = tuple(DEFAULT_SPECIAL_TOKENS)


def chat_template(tokens: dict[str, str], conditions: dict[str, str]) -> str:
    """Jinja: each user turn -> BOQ + condition tokens + text + EOQ, each assistant turn -> text + EOA.
    `condition` is a tag or comma-separated tags as in our records ("cot,noisy"); default direct."""
    table = json.dumps(conditions)
    return (
        "{%- set conditions = " + table + " -%}"
        "{%- set tags = (condition if condition is defined else 'direct').split(',') -%}"
        "{%- for tag in tags -%}{%- if tag not in conditions -%}"
        "{{ raise_exception('unknown condition ' ~ tag ~ '; known: ' ~ (conditions | list | join(', '))) }}"
        "{%- endif -%}{%- endfor -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        + tokens["boq"]
        + "{%- for tag in tags -%}{{ conditions[tag] }}{%- endfor -%}{{ message['content'] }}"
        + tokens["eoq"]
        + "{%- elif message['role'] == 'assistant' -%}"
        "{{ message['content'] }}" + tokens["eoa"] + "{%- endif -%}{%- endfor -%}"
    )


def prefix_lm_post_processor(tokenizer: TextTokenizer) -> processors.TemplateProcessing:
    """One text -> our instruction under the default condition (BOQ <direct> text EOQ, all type 1);
    two texts -> instruction (type 1) + response + EOA (type 0): the layout the model was trained on."""
    ids = {**tokenizer.special_ids, "direct": tokenizer.condition_ids["direct"]}
    name = {role: tokenizer.tokenizer.id_to_token(i) for role, i in ids.items()}
    instruction = f"{name['boq']}:1 {name['direct']}:1 $A:1 {name['eoq']}:1"
    return processors.TemplateProcessing(
        single=instruction,
        pair=f"{instruction} $B:0 {name['eoa']}:0",
        special_tokens=[(name[r], ids[r]) for r in ("boq", "direct", "eoq", "eoa")],
    )


def write_hf_tokenizer(tokenizer: TextTokenizer, out: Path, max_length: int) -> None:
    """transformers' tokenizer files, plus ours, for `tokenizer` into `out`."""
    tokens = {role: tokenizer.tokenizer.id_to_token(i) for role, i in tokenizer.special_ids.items()}
    conditions = {tag: tokenizer.tokenizer.id_to_token(i) for tag, i in tokenizer.condition_ids.items()}
    # A copy, so the post-processor does not leak into the caller's tokenizer.
    hf_tokenizer = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    hf_tokenizer.post_processor = prefix_lm_post_processor(tokenizer)
    hf_tokenizer.save(str(out / "tokenizer.json"))
    write_tokenizer_info(tokenizer, out)
    special_map = {
        "bos_token": tokens["boq"],
        "eos_token": tokens["eoa"],
        "pad_token": tokens["pad"],
        "additional_special_tokens": [tokens["eoq"], *conditions.values()],
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "model_max_length": max_length,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template(tokens, conditions),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=1))


def write_tokenizer_info(tokenizer: TextTokenizer, out: Path) -> None:
    """`tokenizer_info.json` exactly as `TextTokenizer.save` writes it, without rewriting tokenizer.json."""
    staging = out / ".tokenizer_info"
    tokenizer.save(staging)
    shutil.move(staging / "tokenizer_info.json", out / "tokenizer_info.json")
    shutil.rmtree(staging)


def read_role_mapping(path: Path) -> tuple[dict[str, str], dict[str, str] | None]:
    """(special tokens by role, condition tokens by tag or None) from a JSON/YAML mapping file:
    `{"special_tokens": {"boq": ..., "eoq": ..., "eoa": ..., "pad": ...}, "condition_tokens": {"direct": ...}}`.
    Roles left out come from the model's declarations or the defaults; condition tags, when given,
    are exactly those listed."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FrugalError(f"{path}: special-token mapping file not found") from None
    except (OSError, yaml.YAMLError) as error:
        raise FrugalError(f"{path}: unreadable special-token mapping ({error})") from None
    if not isinstance(data, dict) or set(data) - {"special_tokens", "condition_tokens"}:
        raise FrugalError(f"{path}: expected a mapping with keys special_tokens and/or condition_tokens")
    special = data.get("special_tokens") or {}
    conditions = data.get("condition_tokens")
    for key, table in (("special_tokens", special), ("condition_tokens", conditions or {})):
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise FrugalError(f"{path}: {key} must map names to token strings")
    unknown = set(special) - set(ROLES)
    if unknown:
        raise FrugalError(f"{path}: unknown role {sorted(unknown)[0]!r} in special_tokens; roles: {', '.join(ROLES)}")
    if conditions is not None and "direct" not in conditions:
        raise FrugalError(f"{path}: condition_tokens must include 'direct' (the default condition)")
    return special, conditions


DECLARED_ROLES = {"bos": "boq", "eos": "eoa", "pad": "pad"}
"""transformers' special-token names -> our roles, the way our export declares them."""


def _json_object(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FrugalError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise FrugalError(f"{path}: expected a JSON object")
    return data


def declared_special_tokens(directory: Path, tokenizer: Tokenizer) -> dict[str, tuple[str, str]]:
    """{role: (token, where it is declared)} for the roles a transformers directory declares.
    Token strings (tokenizer_config.json, special_tokens_map.json) win over ids (config.json,
    generation_config.json), earlier files over later ones."""
    found: dict[str, tuple[str, str]] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = _json_object(directory / name)
        for hf_name, role in DECLARED_ROLES.items():
            value = data.get(f"{hf_name}_token")
            value = value.get("content") if isinstance(value, dict) else value  # a serialised AddedToken
            if isinstance(value, str) and role not in found:
                found[role] = (value, f"{name} {hf_name}_token")
    for name in ("config.json", "generation_config.json"):
        data = _json_object(directory / name)
        for hf_name, role in DECLARED_ROLES.items():
            key = f"{hf_name}_token_id"
            value = data.get(key)
            value = value[0] if isinstance(value, list) and value else value  # several EOS ids: the first
            if role in found or not isinstance(value, int) or isinstance(value, bool):
                continue
            token = tokenizer.id_to_token(value)
            if token is None:
                raise FrugalError(f"{directory / name}: {key} {value} is not in tokenizer.json's vocabulary")
            found[role] = (token, f"{name} {key}")
    return found


def _roles(explicit: dict, declared: dict, mapping_file: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """Each role's token and where it came from: the mapping file, the model's declaration, or
    HRM-Text's default, in that order."""
    special, source = {}, {}
    for role in ROLES:
        if role in explicit:
            special[role], source[role] = explicit[role], f"from {mapping_file}"
        elif role in declared:
            special[role], source[role] = declared[role][0], f"declared in {declared[role][1]}"
        else:
            special[role], source[role] = DEFAULT_SPECIAL_TOKENS[role], "the HRM-Text default"
    return special, source


def _check_roles(directory: Path, vocabulary, special: dict[str, str], source: dict[str, str], hint: str) -> None:
    for role, token in special.items():
        if vocabulary.token_to_id(token) is None:
            raise FrugalError(
                f"{directory / 'tokenizer.json'}: special token {token!r} (role {role}) is not in the vocabulary "
                f"({source[role]}){hint}"
            )
    layout = ("boq", "eoq", "eoa")
    for index, first in enumerate(layout):
        for second in layout[index + 1 :]:
            if special[first] == special[second]:
                raise FrugalError(
                    f"{directory}: roles {first} ({source[first]}) and {second} ({source[second]}) "
                    f"are both {special[first]!r}; prompts need distinct tokens{hint}"
                )


def load_hf_tokenizer(directory: Path, mapping_file: Path | None = None) -> TextTokenizer:
    """The tokenizer of a transformers model directory with our roles (see module docstring)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise FrugalError(
            f"{directory}: no tokenizer.json (a transformers fast tokenizer file is needed; "
            f"save one with AutoTokenizer.from_pretrained(...).save_pretrained(DIR))"
        )
    if mapping_file is None and (directory / "tokenizer_info.json").is_file():
        return load_tokenizer(directory)  # one of our exports: every role recorded
    explicit, conditions = read_role_mapping(mapping_file) if mapping_file is not None else ({}, None)
    try:
        vocabulary = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for a malformed file
        raise FrugalError(f"{path}: not a valid tokenizers file ({error})") from None
    special, source = _roles(explicit, declared_special_tokens(directory, vocabulary), mapping_file)
    hint = "" if mapping_file is not None else "; give the tokenizer's own strings with --special-tokens FILE"
    _check_roles(directory, vocabulary, special, source, hint)
    try:
        return load_tokenizer(directory, special, conditions or DEFAULT_CONDITION_TOKENS)
    except FrugalError as error:
        raise FrugalError(f"{error}{hint}") from None
