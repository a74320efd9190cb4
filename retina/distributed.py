"""Several processes, one run: joining torchrun's process group, and what the processes must agree on.

`torchrun --nproc_per_node N -m retina train ...` starts N processes (GPUs, or CPU cores over Gloo); each runs
`retina.train.train` on its share of every batch, and DistributedDataParallel averages their gradients. They
evaluate together too (`evaluate_sharded`): no process waits through another's whole evaluation, which on a
large validation set outlasts NCCL's 10-minute timeout.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, Subset

from retina.evaluate import coco_evaluate, dataset_ground_truth, evaluate_model, predict
from retina.model import RetinaNet


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


def evaluate_sharded(
    model: RetinaNet, dataset: Dataset, classes: list[str], rank: int, world_size: int, num_workers: int = 0
) -> dict | None:
    """COCO metrics of `model` on `dataset` (`retina.evaluate.evaluate_model`'s), the images shared out: process r
    detects on images r, r + W, r + 2W, ...; the main process gathers every detection and scores them all. Returns
    the metrics on the main process, None on the others. One process: `evaluate_model` itself."""
    if world_size == 1:
        return evaluate_model(model, dataset, classes, batch_size=8, num_workers=num_workers)[0]
    shard = Subset(dataset, range(rank, len(dataset), world_size))
    image_ids, detections = predict(model, shard, batch_size=8, num_workers=num_workers)
    gathered = [None] * world_size
    dist.all_gather_object(gathered, (image_ids, detections))
    if rank != 0:
        return None
    image_ids = [image_id for ids, _ in gathered for image_id in ids]
    detections = [detection for _, part in gathered for detection in part]
    ground_truth, cat_ids = dataset_ground_truth(dataset)
    metrics, _ = coco_evaluate(ground_truth, image_ids, detections, cat_ids, classes)
    metrics["num_images"] = len(image_ids)
    return metrics
