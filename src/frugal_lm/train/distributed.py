"""Process group setup and FSDP2 wrapping; the model code knows nothing of either.

Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) we join a process
group: NCCL on GPUs, gloo on CPU (how the tests cover multi-process training). FSDP2
shards every block (`fully_shard` per block, then the root for embedding, head and the
fixed initial states), with bf16 compute and fp32 reductions on GPU, except the weights
that expert parallelism shards itself (train/expert_parallel.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from frugal_lm.model.layers import Block
from frugal_lm.model.moe import Router


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


def shard_model(model: torch.nn.Module, bf16: bool, ignored: set[torch.nn.Parameter] | None = None) -> torch.nn.Module:
    """FSDP2: one `fully_shard` per block, then the root. `ignored` parameters (experts
    sharded by expert parallelism, train/expert_parallel.py) are left to their owner."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    )
    for module in model.modules():
        # A router's own unit keeps fp32 weights under bf16: expert choice is a top-k over its
        # scores, which bf16-rounded weights would flip (model/moe.py: routers compute in fp32).
        if bf16 and isinstance(module, Router):
            fully_shard(module, mp_policy=MixedPrecisionPolicy(), ignored_params=ignored)
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, mp_policy=policy, reshard_after_forward=False, ignored_params=ignored)
    fully_shard(model, mp_policy=policy, ignored_params=ignored)
    return model


@torch.no_grad()
def clip_grad_norm(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (the very call when every gradient lives on one mesh
    or none), also for gradients sharded over several meshes (FSDP's and the experts'), whose
    norms torch cannot stack: each mesh's norm is completed over its ranks, then combined."""
    grads = [param.grad for param in parameters if param.grad is not None]
    mesh_of = [id(grad.device_mesh) if isinstance(grad, DTensor) else None for grad in grads]
    if len(set(mesh_of)) <= 1:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    norms = []
    for mesh in dict.fromkeys(mesh_of):
        norm = torch.nn.utils.get_total_norm([grad for grad, key in zip(grads, mesh_of) if key == mesh])
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    total = torch.linalg.vector_norm(torch.stack(norms))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s coefficient
    torch._foreach_mul_([grad.to_local() if isinstance(grad, DTensor) else grad for grad in grads], scale)
    return total


def shutdown(distributed: Distributed) -> None:
    if distributed.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
