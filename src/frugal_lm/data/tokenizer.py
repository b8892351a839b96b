"""Byte-level BPE tokenizer (HuggingFace `tokenizers`) with HRM-Text's special tokens.

Token layout of one example (ARCHITECTURE.md, as in HRM-Text so its released tokenizer works):
    instruction = [BOQ] + condition tokens + tokens(instruction) + [EOQ]
    response    = tokens(response) + [EOA]
The special-token strings and ids live in `tokenizer_info.json` beside `tokenizer.json`,
so an existing tokenizer (e.g. one shipped with released weights) can be used as is with
a mapping of which of its tokens play which role.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from frugal_lm.data.records import Record
from frugal_lm.errors import FrugalError
from frugal_lm.files import os_errors_as_user_errors, staged_output

COMMAND = "frugal data tokenizer"

DEFAULT_SPECIAL_TOKENS = {
    "boq": "<|im_start|>",
    "eoq": "<|im_end|>",
    "eoa": "<|box_end|>",
    "pad": "<|endoftext|>",
}
DEFAULT_CONDITION_TOKENS = {
    "direct": "<|object_ref_start|>",
    "cot": "<|object_ref_end|>",
    "noisy": "<|quad_start|>",
    "synth": "<|quad_end|>",
}


@dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the ids of its role-playing special tokens."""

    tokenizer: object
    special_ids: dict[str, int]
    condition_ids: dict[str, int]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode_records(self, records: list[Record]) -> list[tuple[list[int], list[int]]]:
        """(instruction ids, response ids) per record, batch-encoded."""
        texts = [r.instruction for r in records] + [r.response for r in records]
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        n = len(records)
        pairs = []
        for index, record in enumerate(records):
            conditions = [self.condition_ids[tag] for tag in record.conditions]
            instruction = [self.special_ids["boq"], *conditions, *encoded[index].ids, self.special_ids["eoq"]]
            response = [*encoded[n + index].ids, self.special_ids["eoa"]]
            pairs.append((instruction, response))
        return pairs

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        info = {
            "special_tokens": {role: self.tokenizer.id_to_token(i) for role, i in self.special_ids.items()},
            "special_ids": self.special_ids,
            "condition_tokens": {tag: self.tokenizer.id_to_token(i) for tag, i in self.condition_ids.items()},
            "condition_ids": self.condition_ids,
            "vocab_size": self.vocab_size,
        }
        (directory / "tokenizer_info.json").write_text(json.dumps(info, indent=1))


def save_tokenizer_dir(tokenizer: TextTokenizer, out: Path) -> None:
    """`frugal data tokenizer --out`: the tokenizer as a whole directory of its own, which
    replaces only an earlier tokenizer written there (`frugal_lm.files.staged_output`)."""
    with os_errors_as_user_errors(out), staged_output(out, COMMAND) as staging:
        tokenizer.save(staging)


def _role_ids(tokenizer, tokens: dict[str, str], source: str) -> dict[str, int]:
    ids = {}
    for role, token in tokens.items():
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise FrugalError(f"{source}: special token {token!r} (role {role}) is not in the vocabulary")
        ids[role] = token_id
    return ids


def train_tokenizer(
    texts: Iterator[str],
    vocab_size: int,
    special_tokens: dict[str, str] | None = None,
    condition_tokens: dict[str, str] | None = None,
) -> TextTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special_tokens = special_tokens or DEFAULT_SPECIAL_TOKENS
    condition_tokens = condition_tokens or DEFAULT_CONDITION_TOKENS
    reserved = [*special_tokens.values(), *condition_tokens.values()]
    if vocab_size < 256 + len(reserved):
        raise FrugalError(
            f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least "
            f"{256 + len(reserved)} (256 bytes + {len(reserved)} special tokens)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=reserved,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(
        tokenizer,
        _role_ids(tokenizer, special_tokens, "trained tokenizer"),
        _role_ids(tokenizer, condition_tokens, "trained tokenizer"),
    )


def load_tokenizer(
    directory: Path | str, special_tokens: dict[str, str] | None = None, condition_tokens: dict[str, str] | None = None
) -> TextTokenizer:
    """`tokenizer.json` with `tokenizer_info.json`, or with an explicit role mapping (or the
    HRM-Text defaults) for a tokenizer that came from elsewhere."""
    from tokenizers import Tokenizer

    directory = Path(directory)
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise FrugalError(f"{directory}: no tokenizer.json (make one with `frugal data tokenizer`)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for a malformed file
        raise FrugalError(f"{path}: not a valid tokenizers file ({error})") from None
    info_path = directory / "tokenizer_info.json"
    if special_tokens is None and info_path.is_file():
        info = json.loads(info_path.read_text())
        special_tokens, condition_tokens = info["special_tokens"], info["condition_tokens"]
    return TextTokenizer(
        tokenizer,
        _role_ids(tokenizer, special_tokens or DEFAULT_SPECIAL_TOKENS, str(path)),
        _role_ids(tokenizer, condition_tokens or DEFAULT_CONDITION_TOKENS, str(path)),
    )


def encodes_alike(first: Path, second: Path) -> bool:
    """Whether two `tokenizer.json` files map text to the same ids: the same vocabulary,
    merges, special tokens, normalisation and pre-tokenisation. How a file adds special
    tokens around a text (the post-processor an export adds), padding and truncation do
    not change the ids the data was tokenized into."""

    def identity(path: Path) -> dict:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FrugalError(f"{path}: unreadable tokenizer ({error})") from None
        return {key: data.get(key) for key in ("model", "added_tokens", "normalizer", "pre_tokenizer")}

    return identity(first) == identity(second)
