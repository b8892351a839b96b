"""The LM head's cross-entropy on labelled tokens, in chunks when the logits would be large.

fp32 logits over a 65,536-token vocabulary are 256 KiB per labelled token: 4 GiB for a
16k-token step. Above `CHUNK_LOGITS` logits the head runs over slices of the labelled
tokens, each under activation checkpointing, so only one slice's logits exist at a time
(forward and backward) at the cost of computing the head's forward twice. Below it, the
head runs once on all labelled tokens, with exactly the operations of an unchunked loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK_LOGITS = 1 << 26
"""Logits (labelled tokens x vocabulary) above which the head runs in chunks: 256 MiB fp32."""


@dataclass
class HeadLoss:
    loss_sum: torch.Tensor  # summed cross-entropy over the labelled tokens
    correct_N: torch.Tensor  # argmax == target, per labelled token


def logits_loss(logits_NV: torch.Tensor, targets_N: torch.Tensor) -> HeadLoss:
    logits_NV = logits_NV.float()
    loss_sum = F.cross_entropy(logits_NV, targets_N, reduction="sum")
    with torch.no_grad():
        correct_N = logits_NV.argmax(-1) == targets_N
    return HeadLoss(loss_sum, correct_N)


def _chunk_loss(hidden_NC: torch.Tensor, weight_VC: torch.Tensor, targets_N: torch.Tensor):
    result = logits_loss(F.linear(hidden_NC, weight_VC), targets_N)
    return result.loss_sum, result.correct_N


def head_loss(
    hidden_NC: torch.Tensor, weight_VC: torch.Tensor, targets_N: torch.Tensor, chunk_logits: int = CHUNK_LOGITS
) -> HeadLoss:
    """Cross-entropy of `hidden_NC @ weight_VC.T` against `targets_N`, chunked above `chunk_logits`."""
    n_tokens, vocab = targets_N.numel(), weight_VC.shape[0]
    if n_tokens * vocab <= chunk_logits:
        return logits_loss(F.linear(hidden_NC, weight_VC), targets_N)
    chunk = max(1, chunk_logits // vocab)
    sums, corrects = [], []
    for start in range(0, n_tokens, chunk):
        part = slice(start, start + chunk)
        loss_sum, correct_N = checkpoint(_chunk_loss, hidden_NC[part], weight_VC, targets_N[part], use_reentrant=False)
        sums.append(loss_sum)
        corrects.append(correct_N)
    return HeadLoss(torch.stack(sums).sum(), torch.cat(corrects))
