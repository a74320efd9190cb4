"""Training RetinaNet: the paper's optimisation (Sec. 4.1, "Optimization"), from 2 CPU cores to many GPUs.

Taught in notebooks/05_training.ipynb. The paper trains with SGD on 8 GPUs, 16 images per batch, learning rate
0.01 (scaled linearly for other batch sizes), momentum 0.9, weight decay 1e-4, 90k iterations with the rate divided
by 10 at 60k and 80k, horizontal flips as the only augmentation, the ResNet initialised from ImageNet. One
`TrainConfig` holds that and the data and hardware settings; three presets:

    paper   ResNet-50-FPN, 800 / 1333 px, batch 16, SGD 0.01, step decay, frozen BN, ImageNet backbone (GPUs)
    colab   the same detector on one 16 GB T4 GPU: 512 / 853 px, batch 8, SGD 0.005, fp16 with a gradient scaler
    cpu     the demo: a quarter-width ResNet-10 detector trained from scratch on the shapes set, 10 minutes on 2 cores

`train(cfg)` reads top to bottom: data -> model -> optimiser -> (resume) -> per step: learning rate, forward, loss,
NaN guard, backward, clip, update -> per epoch: checkpoint, evaluation. Along the way:

- anchor matching runs in the DataLoader's collate_fn (`retina.targets.DetectionCollate`): in its worker processes,
  when there are any (the cpu preset has none: there, both cores train);
- the data a step sees depends on nothing but (seed, epoch, step): the epoch's order is a permutation seeded with
  seed + epoch, and each sample is augmented under its own RNG seed, seed + epoch * N + index. The number of
  workers or processes, and resuming, change nothing;
- checkpoints (every epoch, at the end, on Ctrl-C) are written atomically and hold the whole state of the run.
  A resume continues at the exact next step, mid-epoch included: a resumed run ends with the same weights as an
  uninterrupted one (deterministic mode, CPU; tests/test_train.py checks it);
- Ctrl-C finishes the current step, writes the checkpoint and stops; a second Ctrl-C stops at once (the previous
  checkpoint stays intact, since writes are atomic);
- a NaN or inf loss stops the run before it touches the weights, naming the step and the loss term;
- several GPUs, machines or CPU cores: `torchrun --nproc_per_node N -m retina train ...` (DistributedDataParallel;
  on CPUs over Gloo, one thread per process).

    torchrun --nproc_per_node 2 -m retina train --preset cpu    # the demo (make demo): one process per core
    python -m retina train --preset paper --data data/coco --train-split train2017 --val-split val2017
    torchrun --nproc_per_node 8 -m retina train --preset paper --data data/coco ...
    python -m retina train --resume runs/cpu/last.pt            # continue an interrupted run
    python -m retina train --preset cpu --set model.fpn_channels=32 lr=0.002   # any config field
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from retina.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from retina.config import RetinaConfig
from retina.data import DatasetError, train_transforms
from retina.data.loader import train_loader
from retina.distributed import foreground_scale, reduce_over_processes, setup_distributed
from retina.evaluate import evaluate_model, format_metrics, open_dataset
from retina.model import RetinaNet
from retina.pretrained import WeightsError, load_backbone_weights
from retina.targets import DetectionCollate
from retina.viz import plot_loss_curve


class TrainingError(RuntimeError):
    """A run that cannot start or go on: unwritable output, unusable data, a mismatching checkpoint, a NaN loss."""


@dataclass(frozen=True)
class TrainConfig:
    """A training run: the detector (`model`), the data, the optimisation, the hardware.

    `TrainConfig.preset("cpu")`, then `.replace(lr=2e-3, **{"model.fpn_channels": 32})` for variations.
    """

    model: RetinaConfig = field(default_factory=RetinaConfig)  # num_classes is taken from the training set

    # data
    data: str = "data/shapes"  # dataset root: COCO layout (annotations/instances_{split}.json) or VOC<year>
    data_format: str = "auto"  # auto | coco | voc (see retina.evaluate.open_dataset)
    train_split: str = "train"
    val_split: str = "val"  # evaluated every eval_every epochs and at the end; "" for none
    train_sizes: tuple[int, ...] = ()  # short sides drawn per image (multi-scale training); (): model.min_size
    flip_p: float = 0.5  # horizontal flips, the paper's only augmentation
    photometric: bool = False  # colour jitter
    rotate90: bool = False  # random quarter turns: for objects without an up (the shapes set), not for photos
    preload: bool = False  # decode the training images once and keep them in memory (uint8)
    aspect_grouping: bool = False  # batch landscape images with landscape ones, portrait with portrait: less padding
    num_workers: int = 2  # DataLoader processes: decoding, augmentation and anchor matching

    # optimisation (Sec. 4.1)
    batch_size: int = 16  # images per step, over all processes
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01  # at batch_size (the CLI scales it linearly when only --batch-size changes)
    momentum: float = 0.9  # SGD momentum, AdamW beta1
    weight_decay: float = 1e-4  # on conv / linear weights; not on biases and norm parameters
    schedule: str = "step"  # step: x gamma at each milestone; cosine: half a cosine from lr down to 0
    milestones: tuple[float, ...] = (2 / 3, 8 / 9)  # fractions of the run: the paper's 60k and 80k of 90k steps
    gamma: float = 0.1
    warmup_steps: int = 500  # linear warm-up from warmup_factor * lr (Goyal et al. 2017), as Detectron
    warmup_factor: float = 1 / 3
    clip_grad_norm: float = 0.0  # clip the global gradient norm to this; 0: no clipping
    epochs: int = 12  # the paper's 90k steps of 16 images are ~12 epochs of COCO train2017
    time_budget: float = 0.0  # seconds of training; > 0: stop then, with the schedule run on elapsed time

    backbone_weights: str | None = None  # "imagenet" (torchvision's, downloaded once), a .pth path, None: random

    # hardware
    device: str = "auto"  # auto: cuda if available, else cpu
    amp: str = "none"  # autocast mixed precision: none | bf16 | fp16 (fp16 with a gradient scaler)
    channels_last: bool = False  # NHWC memory format: faster convolutions on tensor-core GPUs and on CPUs (oneDNN)
    compile: bool = False  # torch.compile the model
    num_threads: int = 0  # torch threads per process on CPU; 0: torch's default (one per core)

    # bookkeeping
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms; needs a step-based schedule (time_budget = 0)
    out_dir: str = "runs/retina"  # last.pt, metrics.jsonl, loss_curve.png
    eval_every: int = 1  # epochs between evaluations on val_split; 0: only at the end
    log_every: int = 10  # steps between metrics.jsonl records

    @classmethod
    def paper(cls) -> TrainConfig:
        """Sec. 4.1 on COCO: ResNet-50-FPN from ImageNet with frozen BN, 800 / 1333 px, 16 images per step,
        SGD 0.01, 12 epochs (~90k steps) with x0.1 at 2/3 and 8/9, bf16 autocast. For GPUs (A100-class)."""
        return cls(
            model=RetinaConfig.paper(),
            backbone_weights="imagenet",
            aspect_grouping=True,
            num_workers=4,
            amp="bf16",
            channels_last=True,
            out_dir="runs/paper",
        )

    @classmethod
    def colab(cls) -> TrainConfig:
        """The paper's detector on one Colab T4 (16 GB, no bf16): 512 / 853 px input, 8 images per step with the
        learning rate scaled linearly to 0.005, fp16 autocast with a gradient scaler, Colab's 2 CPU workers."""
        return cls(
            model=RetinaConfig.paper().replace(min_size=512, max_size=853),
            backbone_weights="imagenet",
            aspect_grouping=True,
            batch_size=8,
            lr=0.005,
            num_workers=2,
            amp="fp16",
            channels_last=True,
            out_dir="runs/colab",
        )

    @classmethod
    def cpu(cls) -> TrainConfig:
        """The demo: trained from scratch on the 256 px shapes set for 10 minutes on 2 CPU cores, as two processes
        of one thread each (`torchrun --nproc_per_node 2 -m retina train --preset cpu`, what `make demo` runs).

        Sized so that ten minutes give it enough steps: a quarter-width ResNet-10 with trainable BatchNorm, a
        64-channel FPN, subnets of one convolution with GroupNorm, three square cell-centred anchors per position
        at 16..256 px, AdamW with warm-up and a cosine schedule over the wall-clock budget, random flips and
        quarter turns, and the eight turned and mirrored views at test time. Notebook 05 explains each choice;
        notebooks/05_training_appendix.md has the runs behind them.
        """
        model = RetinaConfig(
            backbone="resnet10",
            backbone_width=16,
            backbone_norm="bn",
            trainable_stages=5,
            fpn_channels=64,
            head_convs=1,
            head_norm="gn",
            anchor_sizes=(16, 32, 64, 128, 256),
            aspect_ratios=(1.0,),
            anchor_offset=0.5,
            box_loss="giou",
            min_size=256,
            max_size=256,
            tta="d4",
        )
        return cls(
            model=model,
            preload=True,
            rotate90=True,
            num_workers=0,
            batch_size=8,
            optimizer="adamw",
            lr=4e-3,
            weight_decay=0.05,
            schedule="cosine",
            warmup_steps=50,
            warmup_factor=0.001,
            clip_grad_norm=10.0,
            epochs=100,
            time_budget=595.0,
            channels_last=True,
            eval_every=0,
            out_dir="runs/cpu",
        )

    @classmethod
    def preset(cls, name: str) -> TrainConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")
        return getattr(cls, name)()

    def replace(self, **changes) -> TrainConfig:
        """A copy with `changes`; keys "model.<field>" change the detector config. Lists become tuples."""
        model_changes = {k.removeprefix("model."): v for k, v in changes.items() if k.startswith("model.")}
        changes = {k: v for k, v in changes.items() if not k.startswith("model.")}
        unknown = sorted(set(changes) - {f.name for f in fields(TrainConfig)})
        unknown += sorted(f"model.{k}" for k in set(model_changes) - {f.name for f in fields(RetinaConfig)})
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        model = changes.pop("model", self.model).replace(**model_changes)
        model = RetinaConfig.from_dict(model.to_dict())  # from_dict turns lists into tuples
        changes |= {name: tuple(changes[name]) for name in ("train_sizes", "milestones") if name in changes}
        return replace(self, model=model, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        model = RetinaConfig.from_dict(d.pop("model", RetinaConfig().to_dict()))
        return cls(model=model).replace(**d)

    def check(self) -> None:
        """Clear errors for settings that cannot work, before anything is loaded."""
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("step", "cosine"), "amp": ("none", "bf16", "fp16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be >= 1, got {self.batch_size} and {self.epochs}")
        if self.deterministic and self.time_budget > 0:
            raise ValueError("deterministic training needs a step-based schedule: set time_budget=0 (and epochs)")


PRESETS = ("paper", "colab", "cpu")


# ---------------------------------------------------------------------------------------- model and optimiser


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


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """The learning rate of optimisation step `step` over cfg.lr, `progress` in [0, 1] through the run (step /
    total steps, or elapsed / time budget): linear warm-up over the first warmup_steps, times either step decay
    (x gamma at each milestone; paper: x0.1 at 60k and 80k of 90k steps) or a cosine from 1 down to 0."""
    if cfg.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    else:
        decay = cfg.gamma ** sum(progress >= m for m in cfg.milestones)
    if step >= cfg.warmup_steps:
        return decay
    return decay * (cfg.warmup_factor + (1 - cfg.warmup_factor) * step / cfg.warmup_steps)


# -------------------------------------------------------------------------------------------------- checkpoints


def check_resumable(checkpoint: dict, path: str | Path, config: RetinaConfig, classes: list[str]) -> None:
    """The checkpoint must be a run's (not a model file) and hold the detector this run builds; otherwise list
    every difference."""
    missing = [key for key in ("optimizer", "scaler", "progress", "rng") if key not in checkpoint]
    if missing:
        raise TrainingError(
            f"cannot resume from {path}: it is a model file (weights only, as `python -m retina export` writes), "
            f"without the run's state {missing}; start a new run from its weights instead"
        )
    saved = RetinaConfig.from_dict(checkpoint["model_config"]).to_dict()
    differences = [
        f"  {name}: checkpoint {saved[name]!r}, this run {value!r}"
        for name, value in config.to_dict().items()
        if saved[name] != value
    ]
    if list(checkpoint["classes"]) != list(classes):
        differences.append(f"  classes: checkpoint {list(checkpoint['classes'])}, this run's data {list(classes)}")
    if differences:
        raise TrainingError(
            f"cannot resume from {path}: it holds another detector than this run builds:\n"
            + "\n".join(differences)
            + "\nresume with the checkpoint's own settings (--resume without --preset or model overrides), "
            "or start a new run in another --out directory"
        )


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


class RunningLosses:
    """Running means of the losses over the steps since the last log record."""

    def __init__(self):
        self.start, self.steps, self.classification, self.bbox_regression = time.perf_counter(), 0, 0.0, 0.0

    def add(self, losses: dict[str, float]) -> None:
        self.steps += 1
        self.classification += losses["classification"]
        self.bbox_regression += losses["bbox_regression"]

    def means(self) -> dict:
        cls, box = self.classification / self.steps, self.bbox_regression / self.steps
        return {"loss": cls + box, "classification": cls, "bbox_regression": box}


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


def open_training_data(cfg: TrainConfig, rank: int, world_size: int, device: torch.device):
    """The training set's class names, this process's loader and sampler, and the validation set (main process)."""
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
    transforms = train_transforms(
        min_size=cfg.train_sizes or config.min_size,
        max_size=config.max_size,
        flip_p=cfg.flip_p,
        photometric=cfg.photometric,
        rotate90=cfg.rotate90,
    )
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
    val_set = open_dataset(cfg.data, cfg.val_split, cfg.data_format) if cfg.val_split and rank == 0 else None
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
    config = cfg.model.replace(num_classes=len(classes))
    cfg = replace(cfg, model=config)  # the checkpoint's train_config then records the model that was trained
    model = RetinaNet(config=config)
    if cfg.backbone_weights:
        load_backbone_weights(model, cfg.backbone_weights)
    if world_size > 1 and device.type == "cuda":
        # Trainable BatchNorm must normalise with the global batch's statistics, not with one GPU's share. (Gloo
        # cannot synchronise BatchNorm: on CPUs, DDP with trainable BN normalises per process.)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    progress = {"epoch": 0, "batch": 0, "step": 0, "elapsed": 0.0}  # batch: steps done in the current epoch
    metrics = None

    # ---- resume: the weights, the optimiser, the random generators and the place in the data
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        check_resumable(checkpoint, resume, config, classes)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        progress, metrics = dict(checkpoint["progress"]), checkpoint.get("metrics")
        set_rng_state(checkpoint["rng"])
        if is_main:
            trim_metrics(metrics_path, progress["step"])
            print(
                f"resuming {resume} after step {progress['step']} "
                f"(epoch {progress['epoch']} counted from 0, batch {progress['batch']} of it)"
            )
    elif is_main:
        metrics_path.unlink(missing_ok=True)  # a new run starts a new log

    net = torch.compile(model) if cfg.compile else model  # what the steps call; `model` is what gets saved
    if world_size > 1:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)

    def save(metrics: dict | None = None) -> None:
        if is_main:
            state = {
                "model": model.state_dict(),
                "model_config": config.to_dict(),
                "train_config": cfg.to_dict(),
                "classes": classes,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "progress": dict(progress),  # with train_config.seed, it also restores the sampler's order
                "rng": rng_state(),
                "metrics": metrics,
            }
            save_checkpoint(checkpoint_path, state)

    def evaluate() -> dict | None:
        """COCO mAP on the validation set (main process; the others wait), logged; None without a val split."""
        result = None
        if val_set is not None:
            result, _ = evaluate_model(model, val_set, classes, batch_size=8, num_workers=cfg.num_workers)
            with open(metrics_path, "a") as log:
                log.write(json.dumps({"step": progress["step"], "epoch": progress["epoch"], "eval": result}) + "\n")
            tqdm.write(f"validation after step {progress['step']}:\n{format_metrics(result)}")
        if world_size > 1:
            dist.barrier()
        return result

    def log(record: dict) -> None:
        if is_main:
            with open(metrics_path, "a") as file:
                file.write(json.dumps(record) + "\n")

    # ---- the loop: "running" until the last epoch ends or the time budget is spent ("finished"), or Ctrl-C
    # ("interrupted")
    steps_per_epoch = len(batches)
    total_steps = cfg.epochs * steps_per_epoch
    status = "running" if progress["epoch"] < cfg.epochs else "finished"
    model.train()
    with StopOnCtrlC() as ctrl_c:
        while status == "running":
            epoch = progress["epoch"]
            batches.set_epoch(epoch, skip=progress["batch"])
            bar = tqdm(total=steps_per_epoch, initial=progress["batch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not is_main, dynamic_ncols=True)  # fmt: skip
            window, last = RunningLosses(), time.perf_counter()
            for batch in loader:
                # all processes must agree on the clock (it sets the learning rate) and on stopping
                clock = torch.tensor([progress["elapsed"], float(ctrl_c.requested)], dtype=torch.float64)
                progress["elapsed"], stop = reduce_over_processes(clock.to(device), world_size, "max").tolist()
                if stop or (cfg.time_budget > 0 and progress["elapsed"] >= cfg.time_budget):
                    status = "interrupted" if stop else "finished"
                    break
                if cfg.time_budget > 0:
                    fraction = progress["elapsed"] / cfg.time_budget
                else:
                    fraction = progress["step"] / total_steps
                lr = cfg.lr * lr_factor(cfg, progress["step"], fraction)
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
                window.add(losses)
                speed = window.steps * cfg.batch_size / max(now - window.start, 1e-9)  # images/s, all processes
                postfix = {"loss": f"{sum(losses.values()):.3f}", "lr": f"{lr:.2e}", "img/s": f"{speed:.1f}"}
                if cfg.time_budget > 0:
                    postfix["left"] = f"{max(cfg.time_budget - progress['elapsed'], 0):.0f}s"
                bar.set_postfix(postfix, refresh=False)
                bar.update()
                if window.steps == cfg.log_every or progress["batch"] == steps_per_epoch:
                    log({"step": progress["step"], "epoch": epoch, "lr": lr, **window.means(),
                         "images_per_s": speed, "elapsed": progress["elapsed"]})  # fmt: skip
                    window = RunningLosses()
            bar.close()

            if progress["batch"] == steps_per_epoch:  # the epoch ran to its end
                progress["epoch"], progress["batch"] = progress["epoch"] + 1, 0
                status = "finished" if progress["epoch"] == cfg.epochs else status
            if status != "running":
                break
            if is_main:
                plot_loss_curve(metrics_path, out_dir / "loss_curve.png")
            if cfg.eval_every > 0 and progress["epoch"] % cfg.eval_every == 0:
                metrics = evaluate()
            save(metrics)

        if status == "finished":
            metrics = evaluate()
        save(metrics)
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


# ---------------------------------------------------------------------------------------------------------- CLI

# command-line flag -> TrainConfig field
FLAGS = {
    "data": "data",
    "format": "data_format",
    "train_split": "train_split",
    "val_split": "val_split",
    "out": "out_dir",
    "epochs": "epochs",
    "time_budget": "time_budget",
    "batch_size": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "schedule": "schedule",
    "workers": "num_workers",
    "device": "device",
    "amp": "amp",
    "seed": "seed",
    "eval_every": "eval_every",
}


def parse_overrides(items: list[str]) -> dict:
    """["lr=2e-3", "model.fpn_channels=32", "data=foo"] -> {"lr": 0.002, ...}: Python literals, else strings."""
    changes = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            changes[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            changes[key.strip()] = text
    return changes


def main(argv: list[str] | None = None) -> int:
    """`python -m retina train`: returns 0 when training finished, 130 when stopped by Ctrl-C, 1 on an error."""
    parser = argparse.ArgumentParser(
        prog="python -m retina train",
        description="Train a RetinaNet. Settings: a preset, then the flags below, then --set KEY=VALUE for any "
        "TrainConfig field (model.<field> for the detector's RetinaConfig).",
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, help="default: cpu, or the checkpoint's settings")
    parser.add_argument("--resume", metavar="CKPT", default=None, help="continue the run saved in this checkpoint")
    parser.add_argument("--data", help="dataset root (COCO or VOC layout)")
    parser.add_argument("--format", choices=("auto", "coco", "voc"))
    parser.add_argument("--train-split")
    parser.add_argument("--val-split", help='"" to skip evaluation')
    parser.add_argument("--out", help="output directory (checkpoints, metrics.jsonl, loss_curve.png)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--time-budget", type=float, help="seconds of training (0: run all epochs)")
    parser.add_argument("--batch-size", type=int, help="images per step over all processes (scales the lr)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"))
    parser.add_argument("--schedule", choices=("step", "cosine"))
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--device", help="auto, cpu, cuda")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--eval-every", type=int, help="epochs between evaluations (0: at the end only)")
    parser.add_argument("--weights", help='backbone initialisation: "imagenet", a .pth path, or "none"')
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (needs --time-budget 0)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="any config field")
    args = parser.parse_args(argv)

    try:
        if args.resume and args.preset is None:
            cfg = TrainConfig.from_dict(load_checkpoint(args.resume).get("train_config", {}))
            cfg = cfg.replace(out_dir=args.out or str(Path(args.resume).parent))
        else:
            cfg = TrainConfig.preset(args.preset or "cpu")
        changes = {name: getattr(args, flag) for flag, name in FLAGS.items() if getattr(args, flag) is not None}
        if args.batch_size is not None and args.lr is None:  # the linear scaling rule (Goyal et al. 2017)
            changes["lr"] = cfg.lr * args.batch_size / cfg.batch_size
        if args.weights is not None:
            changes["backbone_weights"] = None if args.weights.lower() == "none" else args.weights
        if args.deterministic:
            changes["deterministic"] = True
        if args.compile:
            changes["compile"] = True
        cfg = cfg.replace(**(changes | parse_overrides(args.set)))  # --set has the last word
        summary = train(cfg, resume=args.resume)
    except (TrainingError, CheckpointError, DatasetError, WeightsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    minutes = summary["elapsed"] / 60
    print(f"{summary['status']}: {summary['step']} steps in {minutes:.1f} min of training; {summary['checkpoint']}")
    if summary["metrics"]:
        print(f"validation AP {summary['metrics']['AP']:.3f}, AP50 {summary['metrics']['AP50']:.3f}")
    return 130 if summary["status"] == "interrupted" else 0
