"""Validation during training: held-out loss every `val_every` steps, and a few greedy answers.

`val_data=DIR` is a mixed set of examples the run does not train on (`frugal data mix` of
held-out records, with the training data's tokenizer). Each validation scores the same
`val_batches` batches (the first of DIR's epoch 0) with every stack pass and no gradients,
summed over ranks, so successive values are comparable. The first `val_samples` examples
are also answered greedily and logged with their reference to `RUN_DIR/samples.jsonl`,
which shows what the loss means. Generation here is a plain loop over the whole prefix (no
KV cache: the inference engine sits above training), cheap at a few answers of a few dozen
tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from frugal_lm.data.batch import Example, pack_rows
from frugal_lm.data.loader import LoaderState, MixedDataset, PackedLoader
from frugal_lm.data.tokenizer import TextTokenizer, encodes_alike, load_tokenizer
from frugal_lm.errors import FrugalError
from frugal_lm.model import AttentionLayout, language_model_loss
from frugal_lm.train.distributed import Distributed

SAMPLE_TOKENS = 64
"""Most tokens a sample answer gets."""


class Validator:
    def __init__(
        self,
        val_dir: Path,
        train_data: MixedDataset,
        vocab_size: int,
        row_len: int,
        rows_per_rank: int,
        distributed: Distributed,
        batches: int,
        samples: int,
    ):
        self.dataset = MixedDataset(val_dir)
        train_tokenizer, val_tokenizer = (
            d.directory / "tokenizer" / "tokenizer.json" for d in (train_data, self.dataset)
        )
        if train_tokenizer.is_file() and val_tokenizer.is_file() and not encodes_alike(train_tokenizer, val_tokenizer):
            raise FrugalError(
                f"val_data={val_dir} was tokenized with another tokenizer than data={train_data.directory}"
            )
        if self.dataset.vocab_size > vocab_size:
            raise FrugalError(
                f"val_data={val_dir} has a vocabulary of {self.dataset.vocab_size}, the model {vocab_size}"
            )
        self.distributed, self.row_len = distributed, row_len
        loader = PackedLoader(self.dataset, row_len, rows_per_rank, distributed.rank, distributed.world_size)
        self.batches = [batch for batch, _ in zip((b for b, _ in loader.batches(LoaderState(), 1)), range(batches))]
        if not self.batches:
            raise FrugalError(f"val_data={val_dir} holds no complete batch of {rows_per_rank} rows x {row_len} tokens")
        count = min(samples, len(self.dataset.lengths(0)))
        self.examples = [self.dataset.example(0, index) for index in range(count)]
        tokenizer_dir = self.dataset.directory / "tokenizer"
        self.tokenizer: TextTokenizer | None = load_tokenizer(tokenizer_dir) if tokenizer_dir.is_dir() else None

    @torch.no_grad()
    def loss(self, forward: Callable, device: torch.device) -> dict[str, float]:
        """Held-out loss and token accuracy over the validation batches, every pass, all ranks."""
        sums = torch.zeros(3, device=device)
        for batch in self.batches:
            output = language_model_loss(forward, batch.to(device), bp_steps=None)
            sums += torch.stack([output.loss_sum, output.label_tokens.float(), output.correct_tokens.float()])
        sums = self.distributed.all_reduce_sum(sums)
        tokens = sums[1].clamp(min=1)
        return {"val_loss": float(sums[0] / tokens), "val_token_accuracy": float(sums[2] / tokens)}

    @torch.no_grad()
    def samples(self, forward: Callable, device: torch.device, step: int) -> list[dict]:
        """Greedy answers to the first examples' instructions, with their references."""
        if self.tokenizer is None:
            return []
        stop = self.tokenizer.special_ids["eoa"]
        answers = []
        for example in self.examples:
            instruction = list(example.instruction)
            answer = _greedy(
                forward, instruction, min(SAMPLE_TOKENS, self.row_len - len(instruction)), stop, self.row_len, device
            )
            answers.append(
                {
                    "step": step,
                    "prompt": self.tokenizer.decode(instruction),
                    "answer": self.tokenizer.decode(answer),
                    "reference": self.tokenizer.decode(example.response),
                }
            )
        return answers


def _greedy(
    forward: Callable, instruction: list[int], max_tokens: int, stop: int, row_len: int, device: torch.device
) -> list[int]:
    answer: list[int] = []
    while len(answer) < max_tokens:
        # One row of the training shape: the answer so far is the response, plus a placeholder
        # whose position is never read, so the last real position predicts the next token.
        batch = pack_rows([[Example(instruction, [*answer, 0])]], row_len).to(device)
        last_BT = torch.zeros_like(batch.prefix_mask)
        last_BT[0, len(instruction) + len(answer) - 1] = True
        logits_NV = forward(
            batch.input_ids,
            batch.position_ids,
            AttentionLayout(batch.segment_ids, batch.prefix_mask),
            None,
            logits_at_BT=last_BT,
        )
        token = int(logits_NV[0].argmax())
        if token == stop:
            break
        answer.append(token)
    return answer


def log_samples(run_dir: Path, samples: list[dict]) -> None:
    with open(run_dir / "samples.jsonl", "a", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
