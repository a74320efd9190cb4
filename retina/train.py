"""Training RetinaNet: the paper's optimisation (Sec. 4.1, "Optimization"), from 2 CPU cores to many GPUs.

Taught in notebooks/05_training.ipynb. The paper trains with SGD on 8 GPUs, 16 images per batch, learning rate
0.01, momentum 0.9, weight decay 1e-4, 90k iterations with the rate divided by 10 at 60k and 80k, horizontal flips
as the only augmentation, the ResNet initialised from ImageNet. `retina.config.TrainConfig` holds such a recipe
(presets paper, colab, cpu). Names: `cfg` is the run's TrainConfig, `config` a detector's RetinaConfig
(`cfg.model`), `progress` the run's place {"epoch", "batch", "step", "elapsed"} (every checkpoint holds it).

`train(cfg)` reads top to bottom: data -> model -> optimiser -> (resume) -> per step: learning rate, forward, loss,
NaN guard, backward, clip, update -> per epoch: checkpoint, evaluation. Along the way: anchor matching runs in the
DataLoader's collate_fn; the data a step sees depends on (seed, epoch, step) alone (`retina.data.loader`);
checkpoints are atomic and hold the whole run, so a resume continues at the exact next step (a resumed run ends
with the weights of an uninterrupted one: tests/test_train.py), and a resume that changes the recipe is refused
(`retina.checkpoint.check_resumable`); Ctrl-C finishes the step, saves and stops (twice: stops at once); a NaN or
inf loss stops the run before it touches the weights, naming the step and the term; several GPUs or CPU cores
(`torchrun --nproc_per_node N -m retina train ...`) train with DistributedDataParallel and share the evaluation.
The command line, `python -m retina train`, is `retina.train_cli`.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from retina.checkpoint import check_resumable, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from retina.config import TrainConfig
from retina.data import open_dataset, train_transforms
from retina.data.loader import check_resizable, train_loader
from retina.distributed import evaluate_sharded, foreground_scale, reduce_over_processes, setup_distributed
from retina.evaluate import format_metrics
from retina.model import RetinaNet
from retina.pretrained import load_backbone_weights
from retina.targets import DetectionCollate
from retina.viz import plot_loss_curve


class TrainingError(RuntimeError):
    """A run that cannot start or go on: unwritable output, unusable data, a NaN loss."""


# ---------------------------------------------------------------------------------------- model and optimiser


def build_model(cfg: TrainConfig, world_size: int, device: torch.device) -> RetinaNet:
    """The detector of `cfg.model`, its backbone initialised as `cfg.backbone_weights` says, on `device`."""
    model = RetinaNet(config=cfg.model)
    if cfg.backbone_weights:
        load_backbone_weights(model, cfg.backbone_weights)
    if world_size > 1 and device.type == "cuda":
        # Trainable BatchNorm must normalise with the global batch's statistics, not with one GPU's share. (Gloo
        # cannot synchronise BatchNorm: on CPUs, DDP with trainable BN normalises per process.)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW. Weight decay applies to weights only: decaying biases and the scales
    of BatchNorm / GroupNorm only pulls them to zero (the nanoGPT and detectron2 habit)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = device.type in ("cpu", "cuda")  # one kernel for all parameters instead of one loop step per tensor
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), fused=fused)


def lr_factor(cfg: TrainConfig, step: int, fraction: float) -> float:
    """The learning rate of optimisation step `step` over cfg.lr, `fraction` in [0, 1] of the run done (step /
    total steps, or elapsed / time budget): linear warm-up over the first warmup_steps, times either step decay
    (x gamma at each milestone; paper: x0.1 at 60k and 80k of 90k steps) or a cosine from 1 down to 0."""
    if cfg.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))
    else:
        decay = cfg.gamma ** sum(fraction >= m for m in cfg.milestones)
    if step >= cfg.warmup_steps:
        return decay
    return decay * (cfg.warmup_factor + (1 - cfg.warmup_factor) * step / cfg.warmup_steps)


# ----------------------------------------------------------------------------------------------- the run's frame


def prepare_out_dir(path: str | Path) -> Path:
    """Create the output directory and prove it is writable, before any minute is spent on training."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as error:
        raise TrainingError(f"cannot write to the output directory {out}: {error.strerror or error}") from None
    return out


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every GPU
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        # warn_only: a few CUDA kernels (e.g. the backward of nearest upsampling) have no deterministic version;
        # they warn instead of stopping the run. The CPU path is deterministic throughout.
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic  # fixed padded sizes: benchmarking pays off


class StopOnCtrlC:
    """While active, the first Ctrl-C (SIGINT) only sets `.requested`: the loop finishes its step, saves and stops.
    A second Ctrl-C raises KeyboardInterrupt at once. Outside the main thread it does nothing."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> StopOnCtrlC:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def trim_metrics(path: Path, step: int) -> None:
    """Drop the records after `step` (a run that died later than its checkpoint), so a resumed log stays one line."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))


def check_finite(losses: dict[str, float], progress: dict | None = None, checkpoint_path: Path | None = None) -> None:
    """The NaN guard: stop before a NaN or inf loss reaches the weights, saying where and which term."""
    for name, value in losses.items():
        if not math.isfinite(value):
            where = ""
            if progress is not None:
                step, epoch, batch = progress["step"] + 1, progress["epoch"] + 1, progress["batch"] + 1
                where = f" at step {step} (epoch {epoch}, batch {batch})"
            kept = ""
            if checkpoint_path is not None:
                kept = f" The last good checkpoint {checkpoint_path} is untouched (if one was written)."
            raise TrainingError(
                f"the {name} loss is {value}{where}; training stopped before the update.{kept} Try a lower --lr, "
                "gradient clipping (--set clip_grad_norm=10) or --amp none."
            )


def log_record(path: Path, record: dict) -> None:
    """Append `record` as one JSON line to the run's metrics.jsonl (what `retina.viz.plot_loss_curve` reads)."""
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")


class EpochLog:
    """An epoch's progress bar (main process) and the running means of the losses, logged to metrics.jsonl every
    `cfg.log_every` steps and at the epoch's end."""

    def __init__(self, cfg: TrainConfig, progress: dict, steps_per_epoch: int, metrics_path: Path, is_main: bool):
        self.cfg, self.steps_per_epoch, self.metrics_path, self.is_main = cfg, steps_per_epoch, metrics_path, is_main
        self.bar = tqdm(total=steps_per_epoch, initial=progress["batch"], dynamic_ncols=True, disable=not is_main,
                        desc=f"epoch {progress['epoch'] + 1}/{cfg.epochs}")  # fmt: skip
        self._reset()

    def _reset(self) -> None:
        self.start, self.steps, self.classification, self.bbox_regression = time.perf_counter(), 0, 0.0, 0.0

    def step(self, losses: dict[str, float], lr: float, progress: dict) -> None:
        """Count the step just done (`progress` already counts it)."""
        self.steps += 1
        self.classification += losses["classification"]
        self.bbox_regression += losses["bbox_regression"]
        speed = self.steps * self.cfg.batch_size / max(time.perf_counter() - self.start, 1e-9)  # images/s, all
        postfix = {"loss": f"{sum(losses.values()):.3f}", "lr": f"{lr:.2e}", "img/s": f"{speed:.1f}"}
        if self.cfg.time_budget > 0:
            postfix["left"] = f"{max(self.cfg.time_budget - progress['elapsed'], 0):.0f}s"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update()
        if self.steps == self.cfg.log_every or progress["batch"] == self.steps_per_epoch:
            cls, box = self.classification / self.steps, self.bbox_regression / self.steps
            if self.is_main:
                log_record(self.metrics_path, {"step": progress["step"], "epoch": progress["epoch"], "lr": lr,
                                               "loss": cls + box, "classification": cls, "bbox_regression": box,
                                               "images_per_s": speed, "elapsed": progress["elapsed"]})  # fmt: skip
            self._reset()

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------------------------------------------- train


def train_step(
    net: nn.Module,
    model: RetinaNet,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    device: torch.device,
    world_size: int = 1,
    progress: dict | None = None,
    checkpoint_path: Path | None = None,
) -> dict[str, float]:
    """One step of the paper's optimisation (Sec. 4.1) on a batch from `DetectionCollate`: forward, loss, NaN guard,
    backward, gradient clipping, update, at the optimiser's current learning rate.

    `net` runs the forward: the model itself, or it compiled or wrapped in DistributedDataParallel; `model` is the
    RetinaNet, whose `loss` is the one loss path (the same as `model.loss(batch)`). Returns the loss terms
    {"classification", "bbox_regression"} as floats, averaged over the processes.
    """
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    images = batch["images"].to(device, non_blocking=True, memory_format=memory_format)  # [B, 3, H, W]
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        outputs = net(images)  # class logits [B, N, C], box deltas [B, N, 4]
    losses = model.loss(batch, outputs)
    if world_size > 1:
        scale = foreground_scale(batch["cls_targets"].to(device), world_size)
        losses = {name: value * scale for name, value in losses.items()}

    # the NaN guard, before the weights are touched; the values are averaged over processes, so all agree
    values = reduce_over_processes(torch.stack(list(losses.values())).detach(), world_size)
    values = dict(zip(losses, values.tolist(), strict=True))
    check_finite(values, progress, checkpoint_path)

    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["classification"] + losses["bbox_regression"]).backward()
    if cfg.clip_grad_norm > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return values


def run_state(
    model: RetinaNet,
    cfg: TrainConfig,
    classes: list[str],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: dict,
    metrics: dict | None,
) -> dict:
    """What a run's checkpoint holds: the weights, the recipe, and all a resume needs to go on at the next step."""
    return {
        "model": model.state_dict(),
        "model_config": cfg.model.to_dict(),
        "train_config": cfg.to_dict(),
        "classes": classes,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "progress": dict(progress),  # with train_config.seed, it also restores the sampler's order
        "rng": rng_state(),
        "metrics": metrics,
    }


def restore_run(
    path: str | Path,
    cfg: TrainConfig,
    classes: list[str],
    model: RetinaNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> tuple[dict, dict | None]:
    """Load the run saved in checkpoint `path` into `model`, `optimizer`, `scaler` and the random generators, after
    checking that `cfg` continues it (`check_resumable`). Returns its progress and last metrics."""
    checkpoint = load_checkpoint(path)
    check_resumable(checkpoint, path, cfg, classes)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    return dict(checkpoint["progress"]), checkpoint.get("metrics")


def open_training_data(cfg: TrainConfig, rank: int, world_size: int, device: torch.device):
    """The training set's class names, this process's loader and sampler, and the validation set (None without
    a val_split)."""
    train_set = open_dataset(cfg.data, cfg.train_split, cfg.data_format)
    if len(train_set) == 0:
        raise TrainingError(f"the training set {cfg.data} ({cfg.train_split}) has no images")
    if cfg.batch_size > len(train_set):
        raise TrainingError(
            f"batch_size {cfg.batch_size} is larger than the training set ({len(train_set)} images in "
            f"{cfg.data} {cfg.train_split}): use --batch-size {len(train_set)} or less"
        )
    if cfg.batch_size % world_size:
        raise TrainingError(f"batch_size {cfg.batch_size} does not split evenly over {world_size} processes")
    config = cfg.model.replace(num_classes=len(train_set.classes))
    sizes = cfg.train_sizes or (config.min_size,)
    check_resizable(train_set, sizes, config.max_size)  # before training, not at the step that meets it
    transforms = train_transforms(sizes, config.max_size, cfg.flip_p, cfg.photometric, cfg.rotate90)
    loader, batches = train_loader(
        train_set,
        transforms,
        DetectionCollate(config),  # matching happens here, in the workers
        cfg.batch_size // world_size,
        cfg.seed,
        rank,
        world_size,
        preload=cfg.preload,
        aspect_grouping=cfg.aspect_grouping,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    if len(batches) == 0:
        raise TrainingError(f"no complete batch of {cfg.batch_size} images per epoch (aspect grouping?)")
    val_set = open_dataset(cfg.data, cfg.val_split, cfg.data_format) if cfg.val_split else None
    if val_set is not None and list(val_set.classes) != list(train_set.classes):
        raise TrainingError(
            f"the validation set {cfg.data} ({cfg.val_split}) has the classes {list(val_set.classes)}, the "
            f"training set ({cfg.train_split}) {list(train_set.classes)}"
        )
    return list(train_set.classes), loader, batches, val_set


def train(cfg: TrainConfig, resume: str | Path | None = None) -> dict:
    """Train a RetinaNet as `cfg` says; with `resume`, continue the run of that checkpoint at its next step.

    Returns {"status": "finished" | "interrupted", "checkpoint", "epoch", "step", "elapsed", "metrics"}.
    Raises TrainingError, CheckpointError, DatasetError or WeightsError with a message saying what is wrong.
    """
    cfg.check()
    rank, world_size, device = setup_distributed(cfg.device)
    is_main = rank == 0
    out_dir = prepare_out_dir(cfg.out_dir)
    checkpoint_path, metrics_path = out_dir / "last.pt", out_dir / "metrics.jsonl"
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed, cfg.deterministic)

    # ---- data, model, optimiser
    classes, loader, batches, val_set = open_training_data(cfg, rank, world_size, device)
    cfg = cfg.replace(model=cfg.model.replace(num_classes=len(classes)))  # the checkpoint records what is trained
    model = build_model(cfg, world_size, device)
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    progress = {"epoch": 0, "batch": 0, "step": 0, "elapsed": 0.0}  # batch: steps done in the current epoch
    metrics = None

    # ---- resume: the weights, the optimiser, the random generators and the place in the data
    if resume is not None:
        progress, metrics = restore_run(resume, cfg, classes, model, optimizer, scaler)
        if is_main:
            trim_metrics(metrics_path, progress["step"])
            print(f"resuming {resume} after step {progress['step']} (epoch {progress['epoch']} counted from 0, "
                  f"batch {progress['batch']} of it)")  # fmt: skip
    elif is_main:
        metrics_path.unlink(missing_ok=True)  # a new run starts a new log

    # What the steps call; `model` is what gets saved. Compiled around DDP, as PyTorch documents: DDP's hooks then
    # overlap the gradients' all-reduce with the compiled backward. The first call compiles, within the time budget.
    net = model
    if world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    def save() -> None:
        if is_main:
            save_checkpoint(checkpoint_path, run_state(model, cfg, classes, optimizer, scaler, progress, metrics))

    def evaluate() -> dict | None:
        """COCO mAP on the validation set, shared over the processes, logged; None without a val split."""
        if val_set is None:
            return None
        result = evaluate_sharded(model, val_set, classes, rank, world_size, cfg.num_workers)
        if is_main:
            log_record(metrics_path, {"step": progress["step"], "epoch": progress["epoch"], "eval": result})
            tqdm.write(f"validation after step {progress['step']}:\n{format_metrics(result)}")
        return result

    # ---- the loop: "running" until the last epoch ends or the time budget is spent ("finished"), or Ctrl-C
    steps_per_epoch = len(batches)
    status = "running" if progress["epoch"] < cfg.epochs else "finished"
    model.train()
    with StopOnCtrlC() as ctrl_c:
        while status == "running":
            epoch = progress["epoch"]
            batches.set_epoch(epoch, skip=progress["batch"])
            epoch_log, last = EpochLog(cfg, progress, steps_per_epoch, metrics_path, is_main), time.perf_counter()
            for batch in loader:
                # all processes must agree on the clock (it sets the learning rate) and on stopping
                clock = torch.tensor([progress["elapsed"], float(ctrl_c.requested)], dtype=torch.float64)
                progress["elapsed"], stop = reduce_over_processes(clock.to(device), world_size, "max").tolist()
                if stop or (cfg.time_budget > 0 and progress["elapsed"] >= cfg.time_budget):
                    status = "interrupted" if stop else "finished"
                    break
                if cfg.time_budget > 0:
                    done = progress["elapsed"] / cfg.time_budget
                else:
                    done = progress["step"] / (cfg.epochs * steps_per_epoch)
                lr = cfg.lr * lr_factor(cfg, progress["step"], done)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                losses = train_step(
                    net, model, batch, optimizer, scaler, cfg, device, world_size, progress, checkpoint_path
                )

                now = time.perf_counter()
                progress["elapsed"] += now - last
                progress["step"] += 1
                progress["batch"] += 1
                last = now
                epoch_log.step(losses, lr, progress)
            epoch_log.close()

            if progress["batch"] == steps_per_epoch:  # the epoch ran to its end
                progress["epoch"], progress["batch"] = progress["epoch"] + 1, 0
                status = "finished" if progress["epoch"] == cfg.epochs else status
            if status != "running":
                break
            if is_main:
                plot_loss_curve(metrics_path, out_dir / "loss_curve.png")
            if cfg.eval_every > 0 and progress["epoch"] % cfg.eval_every == 0:
                metrics = evaluate()
            save()

        if status == "finished":
            metrics = evaluate()
        save()
        if is_main and metrics_path.is_file():
            plot_loss_curve(metrics_path, out_dir / "loss_curve.png")
    if world_size > 1:
        dist.destroy_process_group()
    return {
        "status": status,
        "checkpoint": str(checkpoint_path),
        "epoch": progress["epoch"],
        "step": progress["step"],
        "elapsed": progress["elapsed"],
        "metrics": metrics,
    }
