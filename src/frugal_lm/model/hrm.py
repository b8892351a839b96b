"""HRM-Text: the Hierarchical Recurrent Model (Sapient Intelligence, arXiv 2605.20613).

Two stacks of `n_layers / 2` blocks: L (fast, low level) and H (slow, high level).
z_H starts at the scaled token embedding, z_L at a fixed untrained vector `z_L_init`
(a buffer saved with the weights). For each of `h_cycles` H cycles:

    repeat l_cycles times:  z_L = L(z_L + z_H)
    then once:              z_H = H(z_H + z_L)

and the logits come from the final z_H. With the defaults (2 x (3 + 1)) that is 8 stack
passes, each with its own attention keys and values (the KV-cache slot of pass p, layer
j is p * layers_per_stack + j, the layout of transformers' `hrm_text`).
"""

from __future__ import annotations

import torch

from frugal_lm.config import ModelConfig
from frugal_lm.model.attention import AttentionLayout
from frugal_lm.model.layers import Stack
from frugal_lm.model.lm import LanguageModel, PassSchedule, trunc_normal_


class HRM(LanguageModel):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.L_module = Stack(config, config.layers_per_stack)
        self.H_module = Stack(config, config.layers_per_stack)
        self.register_buffer("z_L_init", torch.empty(config.hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        trunc_normal_(self.z_L_init, 1.0)

    def trunk(
        self, x_BTC: torch.Tensor, rotary, layout: AttentionLayout, backend: str, schedule: PassSchedule
    ) -> torch.Tensor:
        z_H = x_BTC
        z_L = self.z_L_init.to(x_BTC.dtype).expand_as(x_BTC)
        for _ in range(self.config.h_cycles):
            for _ in range(self.config.l_cycles):
                z_L = schedule.run(self.L_module, z_L + z_H, rotary, layout, backend)
            z_H = schedule.run(self.H_module, z_H + z_L, rotary, layout, backend)
        return z_H
