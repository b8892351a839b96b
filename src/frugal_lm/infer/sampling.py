"""Choosing the next token: greedy, or temperature with top-k and top-p (nucleus) filters.

Each sequence samples with its own `torch.Generator`, seeded from its request, so a
seeded request gives the same tokens whatever else shares the batch. Filters apply in
the usual order (temperature, top-k, then top-p on what is left); top-p keeps the
smallest set of most likely tokens whose probability reaches p, and always the top one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frugal_lm.errors import FrugalError


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 means greedy (argmax)."""
    top_p: float = 1.0
    top_k: int = 0
    """0 means no top-k filter."""
    seed: int | None = None
    """None draws a fresh seed per request."""

    def validate(self) -> None:
        """FrugalError naming the field for values no sampler can use."""
        if self.max_new_tokens < 1:
            raise FrugalError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0.0:  # also rejects NaN
            raise FrugalError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise FrugalError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise FrugalError(f"top_k must be >= 0 (0 = off), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def request_generator(params: SamplingParams, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def filtered_logits(logits_V: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Logits (fp32) after temperature, top-k and top-p; removed tokens are -inf."""
    logits_V = logits_V.float() / params.temperature
    if 0 < params.top_k < logits_V.numel():
        kth_largest = torch.topk(logits_V, params.top_k).values[-1]
        logits_V = logits_V.masked_fill(logits_V < kth_largest, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits_V, descending=True)
        probabilities = torch.softmax(sorted_logits, dim=-1)
        # Mass strictly before each token: a token is kept while that is still below p.
        mass_before = torch.cumsum(probabilities, dim=-1) - probabilities
        removed = order[mass_before >= params.top_p]
        logits_V = logits_V.index_fill(0, removed, float("-inf"))
    return logits_V


def sample_token(logits_V: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    if params.greedy:
        return int(torch.argmax(logits_V))
    probabilities = torch.softmax(filtered_logits(logits_V, params), dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))
