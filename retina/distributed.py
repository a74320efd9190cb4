"""Several processes, one run: joining torchrun's process group, and what the processes must agree on.

`torchrun --nproc_per_node N -m retina train ...` starts N processes (GPUs, or CPU cores over Gloo); each runs
`retina.train.train` on its share of every batch, and DistributedDataParallel averages their gradients.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun (WORLD_SIZE > 1 in the environment) this joins the process group:
    NCCL between GPUs, Gloo on CPUs; each process drives the GPU of its LOCAL_RANK."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local_rank}" if device_name == "cuda" else device_name)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def foreground_scale(cls_targets: Tensor, world_size: int) -> Tensor:
    """The factor that turns one process's `retina_loss` into its share of the whole batch's loss.

    `retina_loss` divides by the number of foreground anchors F_r of the images it sees (`cls_targets [B, N]`, a
    class index >= 0 at the foreground). DDP averages the W processes' gradients, which would give
    mean_r(L_r / F_r) instead of sum_r(L_r) / F, the loss one process computes on the whole batch. So the counts are
    summed over the processes (as detectron2 does) and each loss is rescaled to L_r / (F / W): the average over
    the processes is then exactly sum_r(L_r) / F, and the gradients equal the single-process ones.
    """
    local = (cls_targets >= 0).sum().float()
    total = local.clone()
    dist.all_reduce(total)
    return local.clamp(min=1) * world_size / total.clamp(min=1)  # undo retina_loss's F_r, apply F / W


def reduce_over_processes(values: Tensor, world_size: int, op: str = "mean") -> Tensor:
    """`values` combined over all processes ("mean" or "max"); unchanged in a single process."""
    if world_size == 1:
        return values
    dist.all_reduce(values, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return values / world_size if op == "mean" else values
