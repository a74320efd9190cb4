"""RetinaNet: a ResNet backbone, a feature pyramid (P3-P7) and two small subnets shared by all levels.

Taught in notebooks/04_fpn.ipynb. Paper Sec. 4 and Fig. 3:
    ResNet      C3, C4, C5: the outputs of the stages with strides 8, 16, 32 (He et al. 2016)
    FPN         P5 = 1x1(C5); P4 = 1x1(C4) + up(P5); P3 = 1x1(C3) + up(P4), each then smoothed by a 3x3
                conv; P6 = 3x3/2 conv of C5 (or of P5), P7 = 3x3/2 conv of ReLU(P6)  (Lin et al. 2017, FPN)
    subnets     4 x (3x3 conv, ReLU), then a 3x3 conv to A*C class logits / A*4 box deltas per location

`RetinaNet.forward(images[B, 3, H, W] in [0, 1])` returns class logits `[B, N, C]` and box deltas
`[B, N, 4]`, N running over the anchors of `retina.anchors.generate_anchors` in the same order.
`model.loss(batch)` takes a batch from `retina.targets.DetectionCollate`; `model.detect(images)` resizes,
pads, runs and post-processes, returning torchvision-style `{"boxes", "scores", "labels"}` per image.
torchvision's trained RetinaNets (COCO v1 and v2) load into it with `retina.pretrained.from_torchvision`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from retina.anchors import anchors_per_level_counts, generate_anchors
from retina.config import IMAGENET_MEAN, IMAGENET_STD, RetinaConfig
from retina.images import as_image_list, pad_images
from retina.losses import retina_loss
from retina.postprocess import average_views, check_tta, postprocess_detections

RESNETS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101")


def resnet10(width: int = 64, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> nn.Module:
    """ResNet-10: torchvision's ResNet-18 with one BasicBlock per stage instead of two, and stages `width`, 2, 4 and 8
    x `width` channels wide (torchvision's are 64..512). For training from scratch on a small budget: at width 64 it
    is half ResNet-18's compute, at width 32 a quarter of that. Module names and initialisation are torchvision's
    ResNet's (conv1, bn1, layer1..layer4); torchvision ships no ImageNet weights for it."""
    resnet = nn.Module()
    resnet.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    resnet.bn1 = norm_layer(width)
    resnet.relu = nn.ReLU(inplace=True)
    resnet.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    channels = width
    for stage in range(4):
        planes, stride = width * 2**stage, 1 if stage == 0 else 2
        downsample = None
        if stride != 1:
            downsample = nn.Sequential(nn.Conv2d(channels, planes, 1, stride=stride, bias=False), norm_layer(planes))
        block = torchvision.models.resnet.BasicBlock(channels, planes, stride, downsample, norm_layer=norm_layer)
        resnet.add_module(f"layer{stage + 1}", nn.Sequential(block))
        channels = planes
    for m in resnet.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return resnet


class ResNetBackbone(nn.Module):
    """A ResNet (torchvision's, or `resnet10`) without its classifier; returns [C3, C4, C5] (strides 8, 16, 32)."""

    def __init__(
        self,
        name: str = "resnet50",
        norm: str = "frozen_bn",
        trainable_stages: int = 3,
        eps: float = 1e-5,
        width: int = 64,
    ):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown backbone {name!r}; expected one of {RESNETS}")
        if width < 1:
            raise ValueError(f"backbone_width must be at least 1, got {width}")
        if width != 64 and name != "resnet10":
            raise ValueError(f"backbone_width {width}: torchvision's {name} is 64 wide; only resnet10 takes another")
        if norm not in ("frozen_bn", "bn"):
            raise ValueError(f"unknown backbone_norm {norm!r}; expected 'frozen_bn' or 'bn'")
        if not 0 <= trainable_stages <= 5:
            raise ValueError(f"trainable_stages must be in 0..5, got {trainable_stages}")
        norm_layer = partial(FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d, eps=eps)
        if name == "resnet10":
            resnet = resnet10(width, norm_layer)
        else:
            resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        expansion = 4 if name in ("resnet50", "resnet101") else 1  # Bottleneck vs BasicBlock
        self.out_channels = [2 * width * expansion, 4 * width * expansion, 8 * width * expansion]  # C3, C4, C5
        # Freeze the early stages (their features are generic; the paper fine-tunes from ImageNet).
        stages = [self.layer4, self.layer3, self.layer2, self.layer1, self.stem]
        for stage in stages[trainable_stages:]:
            stage.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)  # [B, C_3, H/8, W/8]
        c4 = self.layer3(c3)  # [B, C_4, H/16, W/16]
        c5 = self.layer4(c4)  # [B, C_5, H/32, W/32]
        return [c3, c4, c5]


class FPN(nn.Module):
    """Feature pyramid: [C3, C4, C5] -> [P3, P4, P5, P6, P7], all with `channels` channels."""

    def __init__(self, in_channels: list[int], channels: int = 256, p6_from: str = "c5"):
        super().__init__()
        if p6_from not in ("c5", "p5"):
            raise ValueError(f"p6_from must be 'c5' (paper) or 'p5' (torchvision v1), got {p6_from!r}")
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.p6_from = p6_from
        self.p6 = nn.Conv2d(in_channels[-1] if p6_from == "c5" else channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        for conv in [*self.lateral, *self.output, self.p6, self.p7]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        # Top-down: start from the coarsest map and add each upsampled map to the next lateral one.
        top = self.lateral[-1](features[-1])
        merged = [top]
        for lateral, c in zip(self.lateral[-2::-1], features[-2::-1], strict=True):
            top = lateral(c) + F.interpolate(top, size=c.shape[-2:], mode="nearest")
            merged.insert(0, top)
        outputs = [conv(m) for conv, m in zip(self.output, merged, strict=True)]  # [P3, P4, P5]
        p6 = self.p6(features[-1] if self.p6_from == "c5" else outputs[-1])
        p7 = self.p7(F.relu(p6))
        return [*outputs, p6, p7]


class Head(nn.Module):
    """A subnet shared by all levels: `num_convs` x (3x3 conv [+ GroupNorm] + ReLU), then a 3x3 conv
    with A * `outputs_per_anchor` channels. Returns `[B, N, outputs_per_anchor]` over all levels."""

    def __init__(
        self, channels: int, num_anchors: int, outputs_per_anchor: int, num_convs: int, norm: str | None
    ):
        super().__init__()
        if norm not in (None, "gn"):
            raise ValueError(f"head_norm must be None or 'gn', got {norm!r}")
        layers = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
            if norm == "gn":
                # 32 groups at 256 channels (Wu & He 2018); at least 8 channels a group for narrow heads,
                # so a 1x1 P7 map still has several values to normalise over
                layers.append(nn.GroupNorm(math.gcd(32, max(1, channels // 8)), channels))
            layers.append(nn.ReLU(inplace=True))
        self.tower = nn.Sequential(*layers)
        self.predict = nn.Conv2d(channels, num_anchors * outputs_per_anchor, 3, padding=1)
        self.outputs_per_anchor = outputs_per_anchor
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)  # Sec. 4.1 "Initialization"
                nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> Tensor:
        outputs = []
        for x in features:
            y = self.predict(self.tower(x))  # [B, A*K, H, W]
            b, _, h, w = y.shape
            # [B, A, K, H, W] -> [B, H, W, A, K]: the anchors' own [H, W, A] order
            y = y.view(b, -1, self.outputs_per_anchor, h, w).permute(0, 3, 4, 1, 2)
            outputs.append(y.reshape(b, -1, self.outputs_per_anchor))
        return torch.cat(outputs, dim=1)


class RetinaNet(nn.Module):
    """RetinaNet (Lin et al. 2017). `RetinaNet(num_classes=20)` or `RetinaNet(config=RetinaConfig(...))`;
    keyword arguments override config fields: `RetinaNet(num_classes=6, backbone="resnet18")`."""

    def __init__(self, num_classes: int | None = None, config: RetinaConfig | None = None, **overrides):
        super().__init__()
        config = config or RetinaConfig()
        if num_classes is not None:
            overrides["num_classes"] = num_classes
        self.config = config = config.replace(**overrides)
        if config.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {config.num_classes}")
        check_tta(config)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._anchors: dict = {}  # (config, image size, device) -> [N, 4], see `anchors`
        self.backbone = ResNetBackbone(
            config.backbone,
            config.backbone_norm,
            config.trainable_stages,
            config.backbone_norm_eps,
            config.backbone_width,
        )
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels, config.p6_from)
        A, channels = config.num_anchors, config.fpn_channels
        self.cls_head = Head(channels, A, config.num_classes, config.head_convs, config.head_norm)
        self.box_head = Head(channels, A, 4, config.head_convs, config.head_norm)
        # Sec. 4.1: start every class at probability pi, so the ~100k background anchors do not
        # swamp the first steps with a huge loss.
        nn.init.constant_(self.cls_head.predict.bias, -math.log((1 - config.prior) / config.prior))

    def features(self, images: Tensor) -> list[Tensor]:
        """[P3, P4, P5, P6, P7] for `images[B, 3, H, W]` in [0, 1]."""
        return self.fpn(self.backbone((images - self.mean) / self.std))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits `[B, N, C]` and box deltas `[B, N, 4]` for `images[B, 3, H, W]` in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {list(images.shape)}")
        features = self.features(images)
        return self.cls_head(features), self.box_head(features)

    def anchors(self, image_size: tuple[int, int]) -> Tensor:
        """The `[N, 4]` anchors matching `forward`'s outputs for a `(height, width)` input (computed once per size,
        config and device: a training run asks for the same ones every step)."""
        key = (self.config, tuple(image_size), self.mean.device)
        if key not in self._anchors:
            if len(self._anchors) >= 16:  # many image sizes (detect on photos): keep the memory bounded
                self._anchors.clear()
            self._anchors[key] = generate_anchors(self.config, tuple(image_size)).to(self.mean.device)
        return self._anchors[key]

    def loss(self, batch: dict, outputs: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """Losses for a batch from `DetectionCollate`: {"classification", "bbox_regression"}.

        `outputs`: the network's `(class logits [B, N, C], box deltas [B, N, 4])` for `batch["images"]` when the
        caller has run it already (the trainer runs it under autocast, compiled or in DDP); else computed here.
        """
        device = self.mean.device
        if outputs is None:
            outputs = self(batch["images"].to(device))
        cls_logits, box_deltas = outputs
        return retina_loss(
            cls_logits.float(),
            box_deltas.float(),
            batch["cls_targets"].to(device, non_blocking=True),  # [B, N]
            batch["box_targets"].to(device, non_blocking=True),  # [B, N, 4]
            self.anchors(tuple(batch["images"].shape[-2:])),
            self.config,
        )

    def preprocess(self, images: Tensor | list[Tensor], resize: bool = True) -> tuple[Tensor, Tensor]:
        """The batch `forward` takes: images `[3, H, W]` (a list, or a `[B, 3, H, W]` batch), float in [0, 1] or
        uint8 (checked by `retina.images.as_image_list`), each resized to the configured short side (`min_size`,
        long side at most `max_size`), then padded together to a multiple of `size_divisible`. Returns
        `[B, 3, H', W']` in [0, 1] and the `[B, 2]` (height, width) of each resized image in it."""
        device = self.mean.device
        images = [img.to(device) for img in as_image_list(images)]
        resized = [self._resize(img) if resize else img for img in images]
        return pad_images(resized, self.config.size_divisible, self.config.pad_colour)

    @torch.no_grad()
    def detect(self, images: Tensor | list[Tensor], resize: bool = True) -> list[dict[str, Tensor]]:
        """Detections for images `[3, H, W]` (a list, or a `[B, 3, H, W]` batch), float in [0, 1] or uint8.

        The images go through `preprocess` (and through `config.tta`'s views); the boxes come back in each input
        image's own pixel coordinates.
        Returns one `{"boxes" [K, 4] xyxy, "scores" [K], "labels" [K]}` per image; no images, an empty list.
        """
        if isinstance(images, (list, tuple)) and len(images) == 0:
            return []
        was_training = self.training
        self.eval()
        try:  # an error on the way (a bad image, out of memory) must not leave a training model in eval mode
            batch, sizes = self.preprocess(images, resize)
            cls_logits, box_deltas = average_views(self, batch, self.config)  # self(batch) unless config.tta is set
            padded_size = tuple(batch.shape[-2:])
            detections = postprocess_detections(
                cls_logits,
                box_deltas,
                self.anchors(padded_size),
                sizes.to(batch.device),
                self.config,
                anchors_per_level_counts(self.config, padded_size),
            )
        finally:
            self.train(was_training)
        for det, img, (height, width) in zip(detections, images, sizes.tolist(), strict=True):
            # undo the resize per axis (rounding makes the two factors differ slightly)
            fy, fx = img.shape[-2] / height, img.shape[-1] / width
            det["boxes"] = det["boxes"] * det["boxes"].new_tensor([fx, fy, fx, fy])
        return detections

    def _resize(self, image: Tensor) -> Tensor:
        """Resize `image[3, H, W]` so its short side is `min_size` and its long side at most `max_size`."""
        height, width = image.shape[-2:]
        scale = min(self.config.min_size / min(height, width), self.config.max_size / max(height, width))
        if self.config.resize_like_torchvision:
            # torchvision calls F.interpolate(scale_factor=scale), which floors the size, without antialiasing
            size, antialias = (math.floor(height * scale), math.floor(width * scale)), False
        else:
            size, antialias = (round(height * scale), round(width * scale)), scale < 1
        size = (max(1, size[0]), max(1, size[1]))
        if size == (height, width):
            return image
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]
