"""Baselines under the same trainer, block and parameter count as the HRM, for ablations.

- `Transformer`: one stack of `n_layers` blocks, one pass.
- `UniversalTransformer`: one stack of `n_layers` blocks with shared weights, run
  `ut_passes` times with the embedding re-injected each pass (z = S(z + x), z starting
  at a fixed vector like the HRM's z_L). At 4 passes it spends the HRM's forward FLOPs
  (8 passes of n_layers / 2 blocks), so it isolates the effect of the H/L hierarchy.
"""

from __future__ import annotations

import torch

from frugal_lm.config import ModelConfig
from frugal_lm.model.attention import AttentionLayout
from frugal_lm.model.layers import Stack
from frugal_lm.model.lm import LanguageModel, PassSchedule, trunc_normal_


class Transformer(LanguageModel):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.stack = Stack(config, config.n_layers)
        self.reset_parameters()

    def trunk(self, x_BTC, rotary, layout: AttentionLayout, backend: str, schedule: PassSchedule) -> torch.Tensor:
        return schedule.run(self.stack, x_BTC, rotary, layout, backend)


class UniversalTransformer(LanguageModel):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.stack = Stack(config, config.n_layers)
        self.register_buffer("z_init", torch.empty(config.hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        trunc_normal_(self.z_init, 1.0)

    def trunk(self, x_BTC, rotary, layout: AttentionLayout, backend: str, schedule: PassSchedule) -> torch.Tensor:
        z = self.z_init.to(x_BTC.dtype).expand_as(x_BTC)
        for _ in range(self.config.ut_passes):
            z = schedule.run(self.stack, z + x_BTC, rotary, layout, backend)
        return z
