"""Weight-only int8 quantization for inference (`--dtype int8`).

Decoding one token reads every weight of the model once per stack pass and does little
arithmetic with it, so on a CPU its matmuls are bound by the bytes of the weights
(benchmarks/RESULTS.md, "Generation throughput"). Storing each Linear weight as int8 with
one scale per output channel reads a quarter of fp32's bytes and half of bf16's.

- Symmetric per-output-channel scales: scale = max |w| over the row / 127, so each row
  uses the whole int8 range and a row's largest weight round-trips exactly.
- Activations, norms, attention, the KV cache and the embedding stay in the compute dtype
  (bf16): only the Linear weights shrink, which is where the bytes are.
- The matmul is PyTorch's `_weight_int8pack_mm` (int8 weight, scale applied to the
  output), which inductor lowers to its C++ micro-GEMM template when the engine compiles
  the decode step with max-autotune; eager, it runs ATen's kernel.
Weights change by up to half a quantization step, so tokens can differ from fp32's: the
engine's agreement with fp32 on a trained model is measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Int8WeightOnlyLinear", "has_int8_weights", "quantize_linears_int8"]


class Int8WeightOnlyLinear(nn.Module):
    """A bias-free Linear whose (out, in) weight is stored int8 with a scale per output row."""

    def __init__(self, weight_OI: torch.Tensor, compute_dtype: torch.dtype):
        super().__init__()
        weight_OI = weight_OI.detach().float()
        scale_O = weight_OI.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        quantized_OI = torch.round(weight_OI / scale_O[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized_OI.contiguous())
        self.register_buffer("scale", scale_O.to(compute_dtype))
        self.in_features, self.out_features = weight_OI.shape[1], weight_OI.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows_RI = x.reshape(-1, self.in_features)
        if not rows_RI.is_contiguous():
            rows_RI = rows_RI.contiguous()
        out_RO = torch.ops.aten._weight_int8pack_mm(rows_RI, self.weight_int8, self.scale)
        return out_RO.view(*x.shape[:-1], self.out_features)

    def dequantized(self) -> torch.Tensor:
        """The (out, in) weight the int8 values stand for, in fp32."""
        return self.weight_int8.float() * self.scale.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


@torch.no_grad()
def quantize_linears_int8(model: nn.Module) -> nn.Module:
    """Replace every bias-free `nn.Linear` of `model` (in place) by an `Int8WeightOnlyLinear`
    that computes in the dtype the Linear's weight had."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                if child.bias is not None:
                    raise ValueError(f"int8 weights: {name} has a bias, which the model's Linears never do")
                weight = child.weight
                setattr(parent, name, Int8WeightOnlyLinear(weight, weight.dtype).to(weight.device))
    return model


def has_int8_weights(model: nn.Module) -> bool:
    return any(isinstance(module, Int8WeightOnlyLinear) for module in model.modules())
