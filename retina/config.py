"""The configuration of retina: the detector (`RetinaConfig`) and a training run (`TrainConfig`, with its presets).

The model, the collate_fn, the loss and the post-processing all read `RetinaConfig`, so a setting lives in exactly
one place. `RetinaConfig.paper()` is the setting of Lin et al. (2017), "Focal Loss for Dense Object Detection",
Sec. 4 and 5. `TrainConfig` holds a `RetinaConfig` and the data, optimisation and hardware settings of a run
(`retina.train`, taught in notebooks/05_training.ipynb); the measurements behind the presets are in
notebooks/05_training_appendix.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

# The per-channel statistics of ImageNet that torchvision's ResNets were trained on: images in [0, 1] are
# normalised with them before the backbone.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class RetinaConfig:
    num_classes: int = 80  # foreground classes; RetinaNet has no background class (sigmoid per class)

    # backbone (Sec. 4 "Architecture")
    backbone: str = "resnet50"  # resnet10 | resnet18 | resnet34 | resnet50 | resnet101 (torchvision's ResNet)
    # channels of the stem and the first stage, doubled by each later stage: 64 is torchvision's ResNets (the only
    # width with ImageNet weights); resnet10, the from-scratch backbone, may be narrower or wider
    backbone_width: int = 64
    backbone_norm: str = "frozen_bn"  # frozen_bn: BatchNorm with fixed statistics; bn: trainable BatchNorm
    backbone_norm_eps: float = 1e-5  # the BatchNorm eps; 0.0 for torchvision's v1 COCO weights, trained with 0.0
    trainable_stages: int = 3  # how many of the ResNet stages layer4, layer3, ... (and conv1 at 5) train
    fpn_channels: int = 256  # channels of P3..P7 and of the heads
    p6_from: str = "c5"  # "c5": P6 = conv(C5), as in the paper; "p5": P6 = conv(P5), as torchvision v1

    # class and box subnets (Sec. 4 "Classification Subnet", "Box Regression Subnet")
    head_convs: int = 4  # 3x3 conv + ReLU layers before the last conv
    head_norm: str | None = None  # None (paper) or "gn" (GroupNorm(32) after each conv: trains from scratch)
    prior: float = 0.01  # pi: the initial foreground probability of every class logit (Sec. 4.1)

    # anchors (Sec. 4 "Anchors"): sizes 32..512 on P3..P7, three scales, three aspect ratios
    anchor_sizes: tuple[float, ...] = (32, 64, 128, 256, 512)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)  # one per level, P3..P7
    anchor_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    anchor_offset: float = 0.0  # 0.0: centres at cell corners (torchvision); 0.5: cell centres
    round_anchors: bool = True  # integer sizes and rounded corners, exactly as torchvision
    # True: a level's stride is the padded image size // its grid size, as torchvision's AnchorGenerator has it;
    # that differs from `strides` only when the padded size is not a multiple of 128
    strides_from_grid: bool = False

    # matching (Sec. 4 "Anchors"): IoU >= 0.5 foreground, < 0.4 background, in between ignored
    fg_iou: float = 0.5
    bg_iou: float = 0.4
    low_quality_matches: bool = True  # each ground-truth box's best anchors are foreground too
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # (wx, wy, ww, wh) of the deltas

    # loss (Sec. 3 "Focal Loss")
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "smooth_l1"  # smooth_l1 | l1 | giou | nll (Gaussian negative log-likelihood)
    smooth_l1_beta: float = 0.1  # beta = 0 is the L1 loss

    # inference (Sec. 4 "Inference")
    score_thresh: float = 0.05
    topk_candidates: int = 1000  # per level, before NMS
    nms_thresh: float = 0.5
    detections_per_img: int = 300  # torchvision keeps 300; the paper's COCO evaluation keeps 100
    # test-time augmentation (not in the paper): "none"; "flip": the image and its mirror image; "d4": the eight
    # symmetries of the square (four quarter turns, each also mirrored). Class scores and boxes are averaged anchor by
    # anchor over the views (retina.postprocess.average_views); needs cell-centred anchors (anchor_offset 0.5)
    tta: str = "none"

    # input size: images are resized to a short side of min_size (long side <= max_size) and padded to a
    # multiple of size_divisible, so that every level's grid is exact (128 = the P7 stride)
    min_size: int = 800
    max_size: int = 1333
    size_divisible: int = 128  # torchvision pads to 32 (and then needs strides_from_grid)
    # True: round the resized size down and never antialias, as torchvision's GeneralizedRCNNTransform;
    # False: round it to the nearest pixel (800 never comes out as 799) and antialias when shrinking
    resize_like_torchvision: bool = False
    pad_with_mean: bool = False  # True: pad with the ImageNet mean (0 once normalised), as torchvision; False: black

    @property
    def num_anchors(self) -> int:
        """A: anchors per location on every level."""
        return len(self.anchor_scales) * len(self.aspect_ratios)

    @property
    def pad_colour(self) -> tuple[float, float, float]:
        """The RGB value in [0, 1] that batches are padded with."""
        return IMAGENET_MEAN if self.pad_with_mean else (0.0, 0.0, 0.0)

    @property
    def box_clip(self) -> float:
        """Upper bound of the width/height deltas before exp(), so decoding cannot overflow."""
        return math.log(1000.0 / 16)

    def replace(self, **changes) -> RetinaConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RetinaConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RetinaConfig fields: {unknown}")
        tuples = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})

    @classmethod
    def paper(cls, num_classes: int = 80) -> RetinaConfig:
        """ResNet-50-FPN RetinaNet of the paper (Sec. 4-5): 800 px short side, frozen BN, no head norm."""
        return cls(num_classes=num_classes)


@dataclass(frozen=True)
class TrainConfig:
    """A training run: the detector (`model`), the data, the optimisation (Sec. 4.1), the hardware.

    `TrainConfig.preset("cpu")`, then `.replace(lr=2e-3, **{"model.fpn_channels": 32})` for variations.
    """

    model: RetinaConfig = field(default_factory=RetinaConfig)  # num_classes is taken from the training set

    # data
    data: str = "data/shapes"  # dataset root: COCO layout (annotations/instances_{split}.json) or VOC<year>
    data_format: str = "auto"  # auto | coco | voc (see retina.data.open_dataset)
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
    # seconds of training, torch.compile's first compilation included; > 0: stop then, with the schedule run on
    # elapsed time
    time_budget: float = 0.0

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
        return cls.paper().replace(
            model=RetinaConfig.paper().replace(min_size=512, max_size=853),
            batch_size=8,
            lr=0.005,
            num_workers=2,
            amp="fp16",
            out_dir="runs/colab",
        )

    @classmethod
    def cpu(cls) -> TrainConfig:
        """The demo: trained from scratch on the 256 px shapes set for 10 minutes on 2 CPU cores, as two processes
        of one thread each (`torchrun --nproc_per_node 2 -m retina train --preset cpu`, what `make demo` runs).
        Each choice is small enough for ten minutes to give it enough steps; notebook 05 explains them."""
        model = RetinaConfig(
            backbone="resnet10",
            backbone_width=16,  # a quarter-width ResNet-10: fast steps
            backbone_norm="bn",  # trained from scratch: BatchNorm statistics must learn
            trainable_stages=5,
            fpn_channels=64,
            head_convs=1,
            head_norm="gn",  # GroupNorm: subnets that train from scratch
            anchor_sizes=(16, 32, 64, 128, 256),  # the shapes' sizes
            aspect_ratios=(1.0,),  # square shapes: one aspect ratio
            anchor_offset=0.5,  # cell-centred anchors, which the eight test-time views need
            box_loss="giou",
            min_size=256,
            max_size=256,
            tta="d4",  # the eight turned and mirrored views at test time
        )
        return cls(
            model=model,
            preload=True,  # 2000 small images fit in memory: decode them once
            rotate90=True,  # the shapes have no up
            num_workers=0,  # both cores train
            batch_size=8,
            optimizer="adamw",
            lr=4e-3,
            weight_decay=0.05,
            schedule="cosine",  # over the wall-clock budget
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
        """A copy with `changes`; keys "model.<field>" change the detector config. Lists become tuples. A value of
        the wrong type (lr="fast", model.fpn_channels=1.5) raises ValueError naming the field and its type."""
        model_changes = {k.removeprefix("model."): v for k, v in changes.items() if k.startswith("model.")}
        changes = {k: v for k, v in changes.items() if not k.startswith("model.")}
        unknown = sorted(set(changes) - {f.name for f in fields(TrainConfig)})
        unknown += sorted(f"model.{k}" for k in set(model_changes) - {f.name for f in fields(RetinaConfig)})
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        model = changes.pop("model", self.model)
        changes = _checked(TrainConfig, changes, prefix="")
        model = model.replace(**_checked(RetinaConfig, model_changes, prefix="model."))
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


def _checked(cls: type, changes: dict, prefix: str) -> dict:
    """`changes` to fields of dataclass `cls`, each checked against its annotation ("float", "str | None",
    "tuple[int, ...]", ...): lists become tuples and ints floats where a float is due; a value of another type
    raises ValueError naming the field (after `prefix`) and the type it needs."""
    types = {f.name: f.type for f in fields(cls)}
    return {name: _typed(f"{prefix}{name}", types[name], value) for name, value in changes.items()}


def _typed(name: str, annotation: str, value):
    """`value` for field `name` of type `annotation`, converted (list -> tuple, int -> float) or refused."""
    optional = annotation.endswith(" | None")
    kind = annotation.removesuffix(" | None")
    if optional and value is None:
        return None
    if not kind.startswith("tuple["):
        converted = _scalar(kind, value)
        expected = f"{'an' if kind == 'int' else 'a'} {kind}"
    else:
        items = [item.strip() for item in kind.removeprefix("tuple[").removesuffix("]").split(",")]
        fixed = items[-1] != "..."  # tuple[float, float, float, float]: exactly that many
        converted = None
        if isinstance(value, list | tuple) and (not fixed or len(value) == len(items)):
            converted = tuple(_scalar(items[0], v) for v in value)
            converted = None if None in converted else converted
        expected = f"a tuple of {len(items)} {items[0]}s" if fixed else f"a tuple of {items[0]}s"
    if converted is None:
        raise ValueError(f"{name} must be {expected}{' or None' if optional else ''}, got {value!r} "
                         f"({type(value).__name__})")  # fmt: skip
    return converted


def _scalar(kind: str, value):
    """`value` as a `kind` (int, float, bool or str), or None if it is none: a bool is no number, an int is a
    float."""
    if isinstance(value, bool):
        return value if kind == "bool" else None
    if kind == "float" and isinstance(value, int | float):
        return float(value)
    types = {"int": int, "str": str}
    return value if kind in types and isinstance(value, types[kind]) else None
