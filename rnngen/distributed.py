"""Several processes, one model: PyTorch DistributedDataParallel under torchrun.

`torchrun --nproc_per_node=N -m rnngen train ...` starts N copies of rnngen with RANK,
LOCAL_RANK and WORLD_SIZE set; each joins the process group (gloo on CPUs, nccl on CUDA GPUs),
trains on its own contiguous block of the token streams, and DDP averages the gradients. Rank 0
alone writes files and shows progress. A plain `rnngen train` is a group of one, and every
function here is then a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the run directory, the metrics and the progress bar."""
        return self.rank == 0


def join(device: torch.device) -> tuple[Group, torch.device]:
    """Join the torchrun process group if there is one; each rank gets its own GPU when on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Group(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), local_rank), device


def leave(group: Group) -> None:
    if group.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: Group) -> None:
    if group.enabled:
        dist.barrier()


def sum_over_ranks(group: Group, values: list[float], device: torch.device) -> list[float]:
    """Add plain numbers up over all ranks (one small all-reduce)."""
    if not group.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_rank(group: Group, flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (so all ranks stop at the same step)."""
    return sum_over_ranks(group, [float(flag)], device)[0] > 0


def gather_objects(group: Group, obj) -> list:
    """Every rank's `obj`, in rank order (plain data and CPU tensors)."""
    if not group.enabled:
        return [obj]
    gathered = [None] * group.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
