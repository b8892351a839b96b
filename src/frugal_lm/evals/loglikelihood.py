"""Log-likelihood of a response given an instruction, under the PrefixLM mask, batched.

This is how multiple choice is scored: each option is laid out as the response of the
question, exactly as in training (instruction = BOQ + conditions + text + EOQ, attended
bidirectionally; response tokens attended causally), and its summed log-probability is
read off one forward pass. One example per row, rows padded to the longest in the batch;
the AttentionLayout keeps padding invisible, so a score does not depend on its batch
neighbours (up to float rounding of the batched matmuls).

Design choices:
- Requests are sorted by length (longest first) before batching, so padding stays small
  and an out-of-memory error would show up on the first batch; results come back in
  request order.
- The LM head runs only at the positions that predict response tokens (`logits_at_BT`),
  so long instructions (few-shot prompts, DROP passages) cost no vocabulary projection.
- An example longer than the model's context keeps its response and the tail of its
  instruction text; the instruction's leading BOQ + condition tokens and final EOQ are
  kept, because the model reads the task from them (lm-eval also truncates from the left).
- `is_greedy` (every response token is the argmax) is what lm-eval's loglikelihood needs.

Shape legend: B rows, T tokens per row, N scored positions in the batch, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from frugal_lm.model import LanguageModel
from frugal_lm.model.attention import AttentionLayout


@dataclass(frozen=True)
class ResponseScore:
    logprob: float  # sum over response tokens of log p(token | instruction, earlier tokens)
    is_greedy: bool  # every response token is the model's argmax
    tokens: int  # response tokens scored


def fit_to_context(
    instruction: Sequence[int], response: Sequence[int], max_len: int, keep_head: int
) -> tuple[list[int], list[int]]:
    """Drop instruction tokens after the first `keep_head` (BOQ + conditions) from the left
    until instruction + response - 1 packed tokens fit in `max_len`; the last instruction
    token (EOQ) always stays. Responses longer than the context keep their first tokens."""
    instruction, response = list(instruction), list(response)
    packed = len(instruction) + len(response) - 1
    if packed <= max_len:
        return instruction, response
    excess = packed - max_len
    body = instruction[keep_head:-1]
    cut = min(excess, len(body))
    instruction = instruction[:keep_head] + body[cut:] + instruction[-1:]
    excess -= cut
    if excess:
        response = response[: len(response) - excess]
    return instruction, response


@torch.inference_mode()
def score_responses(
    model: LanguageModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    batch_size: int = 8,
    progress: bool = False,
) -> list[ResponseScore]:
    """log p(response | instruction) for each (instruction ids, response ids) pair."""
    device = model.lm_head.weight.device
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    scores: list[ResponseScore | None] = [None] * len(pairs)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="log-likelihood", unit="batch", disable=not progress):
        lengths = [(len(pairs[i][0]), len(pairs[i][1])) for i in batch]
        row_len = max(p + r - 1 for p, r in lengths)
        input_ids_BT = torch.full((len(batch), row_len), pad_id, dtype=torch.long)
        position_ids_BT = torch.zeros((len(batch), row_len), dtype=torch.long)
        scored_BT = torch.zeros((len(batch), row_len), dtype=torch.bool)
        targets = []
        for row, index in enumerate(batch):
            instruction, response = pairs[index]
            P, R = len(instruction), len(response)
            input_ids_BT[row, : P + R - 1] = torch.tensor([*instruction, *response[:-1]])
            position_ids_BT[row, : P + R - 1] = torch.arange(P + R - 1)
            scored_BT[row, P - 1 : P + R - 1] = True  # position j predicts token j + 1
            targets.extend(response)
        layout = AttentionLayout.from_lengths([[(P, R - 1)] for P, R in lengths], row_len, device)
        logits_NV = model(
            input_ids_BT.to(device), position_ids_BT.to(device), layout, logits_at_BT=scored_BT.to(device)
        ).float()
        logprobs_NV = torch.log_softmax(logits_NV, dim=-1)
        targets_N = torch.tensor(targets, device=device)
        token_logprobs_N = logprobs_NV.gather(1, targets_N[:, None])[:, 0].cpu()
        greedy_N = (logits_NV.argmax(dim=-1) == targets_N).cpu()
        start = 0
        for (_, R), index in zip(lengths, batch):
            scores[index] = ResponseScore(
                float(token_logprobs_N[start : start + R].sum()), bool(greedy_N[start : start + R].all()), R
            )
            start += R
    return scores  # type: ignore[return-value]
