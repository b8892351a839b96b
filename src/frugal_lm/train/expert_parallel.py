"""Expert parallelism: each MoE layer's experts sharded over `expert_parallel` ranks; the
tokens travel to the rank that holds their expert and back by all-to-all.

Layout. W torchrun ranks form a 2-D mesh, (W / N expert replicas) x (N expert-parallel
ranks), N = `expert_parallel`. Expert-parallel rank q holds experts [q * E/N, (q+1) * E/N)
of every MoE layer as the local shard of DTensor parameters placed `Shard(0)` on its group
of N ranks, so Distributed Checkpoint saves and reshards them as it does FSDP's shards (a
run saved at N = 2 resumes on one process, and back). FSDP2 shards everything else over
all W ranks and leaves the experts alone (`distributed.shard_model(ignored=...)`). The model
knows none of this: its MoE layer hands the assignments it sorted by expert to a
`dispatcher` when one is set, which `shard_experts` sets.

One MoE call (`ExpertDispatcher`), as torchtitan's ExpertParallel:
1. counts: the layer's assignments per expert say how many rows go to each rank; the counts
   are exchanged first (an all-to-all of E integers) so each rank knows what it receives,
   read on the host (the all-to-all needs the splits there: one sync per call);
2. the rows go out by an autograd all-to-all and arrive grouped by sending rank; a
   permutation regroups them by local expert for the grouped matmul;
3. the local experts run with the local shards as their weights (`functional_call`); the
   outputs go back by the inverse permutation and the reverse all-to-all.

Gradients. step.py scales each rank's loss so that the ranks' gradients sum to the
one-process gradient, and FSDP averages its reductions over the W ranks. An expert's
gradient already sums over every token its group's N ranks sent it; summed over the W / N
replicas and divided by W (`ExpertParallel.reduce_gradients`, after the backward pass) it
is the one-process gradient too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single, all_to_all_single_autograd
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor
from torch.func import functional_call

from frugal_lm.config import RunConfig
from frugal_lm.errors import FrugalError
from frugal_lm.model.moe import moe_layers
from frugal_lm.train.distributed import Distributed

REPLICA_DIM, EXPERT_DIM = "expert_replica", "expert_parallel"


def check_expert_parallel(config: RunConfig, world_size: int) -> None:
    """`expert_parallel` must shard an MoE model's experts evenly over torchrun's ranks."""
    ranks, experts = config.expert_parallel, config.model.moe.experts
    if ranks == 1:
        return
    if not config.model.moe.enabled:
        raise FrugalError(f"expert_parallel={ranks} shards experts, but the model is dense (model.moe.experts is 0)")
    if experts % ranks:
        raise FrugalError(f"expert_parallel={ranks} does not divide model.moe.experts={experts}")
    if world_size == 1:
        raise FrugalError(
            f"expert_parallel={ranks} needs torchrun with a multiple of {ranks} processes "
            f"(torchrun --nproc_per_node={ranks} -m frugal_lm train ...); this is one process"
        )
    if world_size % ranks:
        raise FrugalError(f"expert_parallel={ranks} does not divide torchrun's {world_size} ranks")


class ExpertDispatcher:
    """Runs one MoE layer's experts on the ranks that hold them (the layer's `dispatcher`)."""

    def __init__(self, group: dist.ProcessGroup, ranks: int):
        self.group, self.ranks = group, ranks

    @torch.compiler.disable  # host-side splits and collectives: run eagerly inside a compiled block
    def __call__(self, experts: nn.Module, x_SC: torch.Tensor, tokens_per_expert_E: torch.Tensor) -> torch.Tensor:
        """`experts` on `x_SC`, rows sorted by expert (`tokens_per_expert_E` of them each; rows
        after the last group reach no expert and come back as zeros), as the layer would run it."""
        R = self.ranks
        L = tokens_per_expert_E.shape[0] // R
        with torch.no_grad():
            received_RL = all_to_all_single(tokens_per_expert_E, None, None, self.group).wait().view(R, L)
            sent_R = tokens_per_expert_E.view(R, L).sum(1)
            splits = torch.stack([sent_R, received_RL.sum(1)]).tolist()  # one host sync for both
        send, receive = splits
        routed = sum(send)
        received_XC = all_to_all_single_autograd(x_SC[:routed], receive, send, self.group)
        order_X = _rank_major_to_expert_major(received_RL)
        weights = {name: _local(param) for name, param in experts.named_parameters(recurse=False)}
        out_XC = functional_call(experts, weights, (received_XC[order_X], received_RL.sum(0)))
        back_XC = out_XC[torch.argsort(order_X)]  # the inverse permutation: rank-major again
        returned_SC = all_to_all_single_autograd(back_XC, send, receive, self.group)
        unrouted_SC = returned_SC.new_zeros(x_SC.shape[0] - routed, returned_SC.shape[1])
        return torch.cat([returned_SC, unrouted_SC])


def _rank_major_to_expert_major(received_RL: torch.Tensor) -> torch.Tensor:
    """The order that regroups received rows (rank 0's rows for local experts 0..L-1, then
    rank 1's, ...) by local expert, keeping the ranks' order within an expert."""
    R, L = received_RL.shape
    device = received_RL.device
    key_RL = torch.arange(L, device=device)[None, :] * R + torch.arange(R, device=device)[:, None]
    key_X = torch.repeat_interleave(key_RL.reshape(-1), received_RL.reshape(-1))
    return torch.argsort(key_X, stable=True)


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.to_local() if isinstance(param, DTensor) else param


@dataclass
class ExpertParallel:
    """The experts' mesh and sharded parameters of a run with `expert_parallel` > 1."""

    mesh: DeviceMesh
    world_size: int
    parameters: list[nn.Parameter]

    @torch.no_grad()
    def reduce_gradients(self) -> None:
        """Complete the experts' gradients after the backward pass (see the module docstring):
        sum over the expert replicas, divide by the world size."""
        grads = [param.grad.to_local() for param in self.parameters if param.grad is not None]
        if not grads:
            return
        if self.mesh.size(0) > 1:
            group = self.mesh.get_group(REPLICA_DIM)
            for work in [dist.all_reduce(grad, group=group, async_op=True) for grad in grads]:
                work.wait()
        torch._foreach_div_(grads, float(self.world_size))


def shard_experts(model: nn.Module, config: RunConfig, distributed: Distributed, device: torch.device):
    """Shard every MoE layer's experts over `config.expert_parallel` ranks and route its
    tokens there; None when expert_parallel is 1. Call before `distributed.shard_model`,
    which must then ignore `ExpertParallel.parameters`."""
    check_expert_parallel(config, distributed.world_size)
    ranks = config.expert_parallel
    if ranks == 1:
        return None
    shape = (distributed.world_size // ranks, ranks)
    mesh = init_device_mesh(device.type, shape, mesh_dim_names=(REPLICA_DIM, EXPERT_DIM))
    experts_mesh = mesh[EXPERT_DIM]
    dispatcher = ExpertDispatcher(experts_mesh.get_group(), ranks)
    parameters = []
    for layer in moe_layers(model):
        for name, param in list(layer.experts.named_parameters(recurse=False)):
            # Every rank built the same weights (one seed, or init_from): each keeps its shard.
            sharded = nn.Parameter(distribute_tensor(param.detach(), experts_mesh, [Shard(0)], src_data_rank=None))
            layer.experts.register_parameter(name, sharded)
            parameters.append(sharded)
        layer.dispatcher = dispatcher
    return ExpertParallel(mesh, distributed.world_size, parameters)
