"""Task-completion loss and accuracy over packed rows.

The LM head runs only on positions that carry a label (responses, unless the batch was
packed with instruction loss), which saves its FLOPs and the (T, vocab) logits memory on
instruction tokens, and in chunks when even those logits would be large (`head.py`).
Counts are returned as tensors, not Python numbers, so the trainer can sum them across
ranks and steps without a device sync per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frugal_lm.data.batch import IGNORE_INDEX, PackedBatch
from frugal_lm.model.attention import AttentionLayout
from frugal_lm.model.lm import LanguageModel


@dataclass
class LossOutput:
    loss: torch.Tensor  # mean cross-entropy over label tokens (what backward uses)
    loss_sum: torch.Tensor  # the same, summed, detached
    label_tokens: torch.Tensor  # how many tokens carried a label
    correct_tokens: torch.Tensor  # argmax == label
    examples: torch.Tensor  # examples with at least one label
    correct_examples: torch.Tensor  # examples whose every label token is right

    @property
    def token_accuracy(self) -> float:
        return float(self.correct_tokens) / max(1, int(self.label_tokens))

    @property
    def exact_accuracy(self) -> float:
        return float(self.correct_examples) / max(1, int(self.examples))


def global_example_ids(segment_ids_BT: torch.Tensor) -> torch.Tensor:
    """Number examples across the whole batch (row-local segment ids + row offsets); -1 stays."""
    per_row = segment_ids_BT.amax(dim=1).clamp(min=-1).long() + 1
    offsets = torch.cumsum(per_row, 0) - per_row
    ids = segment_ids_BT.long() + offsets[:, None]
    return torch.where(segment_ids_BT >= 0, ids, -1)


def language_model_loss(model: LanguageModel, batch: PackedBatch, bp_steps: int | None = None) -> LossOutput:
    layout = AttentionLayout(batch.segment_ids, batch.prefix_mask)
    has_label_BT = batch.labels != IGNORE_INDEX
    targets_N = batch.labels[has_label_BT]
    head = model(batch.input_ids, batch.position_ids, layout, bp_steps, logits_at_BT=has_label_BT, targets_N=targets_N)
    loss_sum, correct_N = head.loss_sum, head.correct_N
    label_tokens = has_label_BT.sum()
    with torch.no_grad():
        example_N = global_example_ids(batch.segment_ids)[has_label_BT]
        n_examples = int(example_N.max()) + 1 if example_N.numel() else 0
        wrong_per_example = torch.zeros(n_examples, device=correct_N.device).index_add_(
            0, example_N, (~correct_N).float()
        )
        labelled_per_example = torch.bincount(example_N, minlength=n_examples)
        examples = (labelled_per_example > 0).sum()
        correct_examples = ((labelled_per_example > 0) & (wrong_per_example == 0)).sum()
    return LossOutput(
        loss=loss_sum / label_tokens.clamp(min=1),
        loss_sum=loss_sum.detach(),
        label_tokens=label_tokens,
        correct_tokens=correct_N.sum(),
        examples=examples,
        correct_examples=correct_examples,
    )
