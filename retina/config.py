"""One configuration for the whole detector: backbone, FPN, anchors, matching, loss, post-processing.

The model, the collate_fn, the loss and the post-processing all read this one dataclass, so a
setting lives in exactly one place. `RetinaConfig.paper()` is the setting of Lin et al. (2017),
"Focal Loss for Dense Object Detection", Sec. 4 and 5.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

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
