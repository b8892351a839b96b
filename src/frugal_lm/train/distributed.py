"""Process group setup and FSDP2 wrapping; the model code knows nothing of either.

Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) we join a process
group: NCCL on GPUs, gloo on CPU (how the tests cover multi-process training). FSDP2
shards every block (`fully_shard` per block, then the root for embedding, head and the
fixed initial states), with bf16 compute and fp32 reductions on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from frugal_lm.model.layers import Block


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def init_distributed(device_type: str) -> Distributed:
    """Join the torchrun process group when launched by torchrun; a no-op otherwise."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def shard_model(model: torch.nn.Module, bf16: bool) -> torch.nn.Module:
    """FSDP2: one `fully_shard` per block, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    )
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, mp_policy=policy, reshard_after_forward=False)
    fully_shard(model, mp_policy=policy)
    return model


def shutdown(distributed: Distributed) -> None:
    if distributed.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
