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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from retina.anchors import anchors_per_level_counts, generate_anchors
from retina.config import RetinaConfig
from retina.losses import retina_loss
from retina.postprocess import postprocess_detections
from retina.targets import as_image_tensor, pad_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier; returns [C3, C4, C5] (strides 8, 16, 32)."""

    def __init__(self, name: str = "resnet50", norm: str = "frozen_bn", trainable_stages: int = 3):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown backbone {name!r}; expected one of {RESNETS}")
        if norm not in ("frozen_bn", "bn"):
            raise ValueError(f"unknown backbone_norm {norm!r}; expected 'frozen_bn' or 'bn'")
        if not 0 <= trainable_stages <= 5:
            raise ValueError(f"trainable_stages must be in 0..5, got {trainable_stages}")
        norm_layer = FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        expansion = 4 if name in ("resnet50", "resnet101") else 1  # Bottleneck vs BasicBlock
        self.out_channels = [128 * expansion, 256 * expansion, 512 * expansion]  # C3, C4, C5
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
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = ResNetBackbone(config.backbone, config.backbone_norm, config.trainable_stages)
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
        """The `[N, 4]` anchors matching `forward`'s outputs for a `(height, width)` input."""
        return generate_anchors(self.config, image_size).to(self.mean.device)

    def loss(self, batch: dict) -> dict[str, Tensor]:
        """Losses for a batch from `DetectionCollate`: {"classification", "bbox_regression"}."""
        images = batch["images"].to(self.mean.device)
        cls_logits, box_deltas = self(images)
        return retina_loss(
            cls_logits.float(),
            box_deltas.float(),
            batch["cls_targets"].to(images.device),
            batch["box_targets"].to(images.device),
            self.anchors(tuple(images.shape[-2:])),
            self.config,
        )

    @torch.no_grad()
    def detect(self, images: Tensor | list[Tensor], resize: bool = True) -> list[dict[str, Tensor]]:
        """Detections for images `[3, H, W]` (a list, or a `[B, 3, H, W]` batch), float in [0, 1] or uint8.

        Each image is resized to the configured short side (`min_size`, long side at most `max_size`),
        the batch is padded, and the boxes come back in the input image's pixel coordinates.
        Returns one `{"boxes" [K, 4] xyxy, "scores" [K], "labels" [K]}` per image.
        """
        was_training = self.training
        self.eval()
        device = self.mean.device
        images = [as_image_tensor(img, f"image {i}").to(device) for i, img in enumerate(images)]
        resized = [self._resize(img) if resize else img for img in images]
        batch, sizes = pad_images(resized, self.config.size_divisible)
        cls_logits, box_deltas = self(batch)
        padded_size = tuple(batch.shape[-2:])
        detections = postprocess_detections(
            cls_logits,
            box_deltas,
            self.anchors(padded_size),
            sizes.to(device),
            self.config,
            anchors_per_level_counts(self.config, padded_size),
        )
        for det, img, small in zip(detections, images, resized, strict=True):
            # undo the resize per axis (rounding makes the two factors differ slightly)
            fy, fx = img.shape[-2] / small.shape[-2], img.shape[-1] / small.shape[-1]
            det["boxes"] = det["boxes"] * det["boxes"].new_tensor([fx, fy, fx, fy])
        self.train(was_training)
        return detections

    def _resize(self, image: Tensor) -> Tensor:
        """Resize `image[3, H, W]` so its short side is `min_size` and its long side at most `max_size`."""
        height, width = image.shape[-2:]
        scale = min(self.config.min_size / min(height, width), self.config.max_size / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        if size == (height, width):
            return image
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0]


def torchvision_key_map(config: RetinaConfig) -> dict[str, str]:
    """Our parameter names -> those of torchvision's `retinanet_resnet50_fpn` (v1) for the same layer.

    v1's layout is ours with `p6_from="p5"` and no head norm; its COCO weights have 91 classes.
    """
    renames = {
        "backbone.stem.0.": "backbone.body.conv1.",
        "backbone.stem.1.": "backbone.body.bn1.",
        **{f"backbone.layer{i}.": f"backbone.body.layer{i}." for i in range(1, 5)},
        **{f"fpn.lateral.{i}.": f"backbone.fpn.inner_blocks.{i}.0." for i in range(3)},
        **{f"fpn.output.{i}.": f"backbone.fpn.layer_blocks.{i}.0." for i in range(3)},
        "fpn.p6.": "backbone.fpn.extra_blocks.p6.",
        "fpn.p7.": "backbone.fpn.extra_blocks.p7.",
        "cls_head.predict.": "head.classification_head.cls_logits.",
        "box_head.predict.": "head.regression_head.bbox_reg.",
    }
    for k in range(config.head_convs):  # our tower is [conv, relu] * k; theirs is [Conv2dNormActivation] * k
        renames[f"cls_head.tower.{2 * k}."] = f"head.classification_head.conv.{k}.0."
        renames[f"box_head.tower.{2 * k}."] = f"head.regression_head.conv.{k}.0."
    return renames


def load_torchvision_weights(model: RetinaNet, state_dict: dict[str, Tensor]) -> RetinaNet:
    """Copy the weights of a torchvision `retinanet_resnet50_fpn` state dict into `model`, in place.

    Every one of our tensors must find a tensor of the same shape; a missing key or a shape mismatch is
    an error that lists all of them (e.g. another class count: build the model with num_classes=91).
    """
    if model.config.head_norm is not None or model.config.p6_from != "p5":
        raise ValueError("torchvision's RetinaNet v1 has no head norm and P6 from P5: use head_norm=None, p6_from='p5'")
    renames = torchvision_key_map(model.config)
    ours = model.state_dict()
    loaded, problems = {}, []
    for name, tensor in ours.items():
        prefix = next((p for p in renames if name.startswith(p)), None)
        source = renames[prefix] + name[len(prefix) :] if prefix else name
        if source not in state_dict:
            problems.append(f"{name}: no {source} in the torchvision state dict")
        elif state_dict[source].shape != tensor.shape:
            problems.append(f"{name}: ours {list(tensor.shape)}, torchvision's {list(state_dict[source].shape)}")
        else:
            loaded[name] = state_dict[source]
    if problems:
        raise ValueError("cannot load torchvision weights:\n  " + "\n  ".join(problems))
    model.load_state_dict(loaded)
    return model
