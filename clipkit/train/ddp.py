"""Data-parallel training without DistributedDataParallel: every process computes the loss of the
global batch from gathered features, so the gradients only need averaging.

Each process draws the same global batch (it depends only on (seed, step)) and encodes its own
share; `gather_with_grad` concatenates every share's features with their gradients, so the
contrastive loss sees all B x B pairs, as one process would.
"""

from __future__ import annotations

import os

import torch
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_environment(device: str | None = None) -> None:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, gloo on CPUs)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)


def wait_for_everyone() -> None:
    """A barrier across the processes (a no-op alone)."""
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    """Wait for every process, then leave the process group (a no-op alone)."""
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()
        dist.destroy_process_group()


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Features [b, D] of every process, concatenated in rank order [b * world, D]; gradients flow
    back to each process's own rows (their all-gather's backward sums what every rank sends)."""
    if world()[1] == 1:
        return features
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(features), dim=0)


def average_gradients(model: nn.Module) -> None:
    """Mean of every gradient over processes. Each process computed the same global loss, and the
    gather summed its gradient into each rank's rows, so the mean is the one-process gradient."""
    import torch.distributed as dist

    _, size = world()
    if size == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])  # every gradient as one vector: one all-reduce
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))  # a slice back to the gradient's shape
        offset += grad.numel()


def rank_zero_says(flag: bool) -> bool:
    """Rank 0's `flag` on every process, so decisions taken on a clock (a time limit) stay in step."""
    _, size = world()
    if size == 1:
        return flag
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([float(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def gather_objects(value) -> list:
    """Every process's `value` (any picklable Python object), in rank order; [value] alone."""
    _, size = world()
    if size == 1:
        return [value]
    import torch.distributed as dist

    values = [None] * size
    dist.all_gather_object(values, value)
    return values
