"""Weights trained elsewhere, in our model: torchvision's ImageNet ResNets and its COCO RetinaNets.

Shown at work in the last section of notebooks/06_nms.ipynb. Two uses:
    load_backbone_weights   ImageNet ResNet weights for the backbone, the paper's starting point (Sec. 4.1)
    from_torchvision        a whole torchvision RetinaNet, e.g. its COCO weights through `coco_retinanet`:
        v1  `retinanet_resnet50_fpn`     box AP 36.4 on COCO val2017: the paper's heads, P6 from P5
        v2  `retinanet_resnet50_fpn_v2`  box AP 41.5: GroupNorm heads, P6 from C5, GIoU box loss, the improvements
                                         of Zhang et al. 2020, "Bridging the Gap Between Anchor-based and
                                         Anchor-free Detection via Adaptive Training Sample Selection"

The import follows nanoGPT's `from_pretrained`: build our model from the matching config, map every one of our
names to torchvision's, check every shape, and fail listing everything that is missing, left over or misshapen.
With `torchvision_config`, our model also prepares images as torchvision does (resize, padding, anchor strides),
so its detections are torchvision's: tests/test_pretrained.py checks that box for box.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet_ResNet50_FPN_V2_Weights, RetinaNet_ResNet50_FPN_Weights
from torchvision.ops import FrozenBatchNorm2d

from retina.config import RetinaConfig
from retina.model import RetinaNet

# The COCO weights of each variant. Their meta["categories"] are the 91 names of COCO's category ids 0..90:
# "__background__" at 0 and "N/A" at the ids COCO left unused, so that label k is category id k.
COCO_WEIGHTS = {"v1": RetinaNet_ResNet50_FPN_Weights.COCO_V1, "v2": RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1}

# How each variant differs from our default RetinaConfig (torchvision's builders, retinanet.py).
VARIANTS = {
    "v1": dict(p6_from="p5", box_loss="l1"),
    "v2": dict(head_norm="gn", box_loss="giou", backbone_norm="bn"),  # v2 builds its ResNet with plain BatchNorm
}

# torchvision's GeneralizedRCNNTransform and AnchorGenerator, shared by both variants: the weights were trained
# on images prepared this way.
TORCHVISION_INPUT = dict(size_divisible=32, strides_from_grid=True, resize_like_torchvision=True, pad_with_mean=True)


class WeightsError(RuntimeError):
    """Weights that cannot be had (offline, unreadable file) or that do not fit the model."""


def torchvision_config(variant: str = "v1", **overrides) -> RetinaConfig:
    """The RetinaConfig of torchvision's RetinaNet `variant` ("v1" or "v2"), 91 COCO classes; `overrides`
    change any field, e.g. `num_classes=5` or `backbone_norm_eps=0.0`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")
    return RetinaConfig(num_classes=91, **TORCHVISION_INPUT, **VARIANTS[variant]).replace(**overrides)


def torchvision_key_map(config: RetinaConfig) -> dict[str, str]:
    """Prefixes of our parameter names -> those of torchvision's RetinaNet for the same layer.

    Our head tower is `[conv, (GroupNorm,) ReLU] * k` in one Sequential; torchvision's is k Conv2dNormActivation
    blocks, each `[conv, (GroupNorm,) ReLU]`.
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
    per_block = 3 if config.head_norm == "gn" else 2  # layers per tower block
    for k in range(config.head_convs):
        for ours, theirs in (("cls_head", "classification_head"), ("box_head", "regression_head")):
            renames[f"{ours}.tower.{per_block * k}."] = f"head.{theirs}.conv.{k}.0."
            if config.head_norm == "gn":
                renames[f"{ours}.tower.{per_block * k + 1}."] = f"head.{theirs}.conv.{k}.1."
    return renames


# Names of older torchvision checkpoints -> the current ones, as torchvision renames them when it loads a state dict
# (the `_load_from_state_dict` overrides of RetinaNetClassificationHead, RetinaNetRegressionHead and
# FeaturePyramidNetwork): head towers were one Sequential [conv, ReLU] * 4, FPN blocks bare convs.
OLD_NAMES = [
    (re.compile(r"(head\.\w+_head\.conv)\.(\d+)\.(weight|bias)"), lambda m: f"{m[1]}.{int(m[2]) // 2}.0.{m[3]}"),
    (re.compile(r"(backbone\.fpn\.\w+_blocks)\.(\d+)\.(weight|bias)"), lambda m: f"{m[1]}.{m[2]}.0.{m[3]}"),
]


def current_torchvision_names(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state_dict` with older torchvision names (`conv.0/2/4/6` in the heads, `inner_blocks.0.weight` in the
    FPN) renamed to the current ones; current names pass unchanged."""
    renamed = {}
    for name, tensor in state_dict.items():
        for pattern, rename in OLD_NAMES:
            match = pattern.fullmatch(name)
            if match:
                name = rename(match)
                break
        renamed[name] = tensor
    return renamed


def from_torchvision(source: nn.Module | dict[str, Tensor], variant: str = "v1", **overrides) -> RetinaNet:
    """Our RetinaNet with the weights of a torchvision RetinaNet: the model itself or its state dict.

    `variant` is "v1" (`retinanet_resnet50_fpn`) or "v2" (`retinanet_resnet50_fpn_v2`); the number of classes
    is read from the weights, and `overrides` change any RetinaConfig field. A torchvision model also gives its
    BatchNorm eps, which a state dict does not hold: torchvision sets it to 0.0 after loading the v1 COCO weights
    (`overwrite_eps`), so that file needs `backbone_norm_eps=0.0` (`coco_retinanet` passes it).

    Every one of our tensors must find a torchvision tensor of the same shape, and every torchvision tensor must
    be used; otherwise WeightsError lists all the names that do not fit. Two exceptions: BatchNorm's
    `num_batches_tracked` counters are not weights (copied where both models have them), and torchvision's
    GroupNorm heads have convolutions without bias, which ours have: those biases are set to zero.

    v2's ResNet has trainable BatchNorm, as torchvision builds it; to fine-tune with small batches, pass
    `backbone_norm="frozen_bn"`. Example: `from_torchvision(retinanet_resnet50_fpn(weights="COCO_V1"))`.
    """
    if isinstance(source, nn.Module):
        eps = {m.eps for m in source.modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))}
        if len(eps) == 1:
            overrides = {"backbone_norm_eps": eps.pop(), **overrides}
        source = source.state_dict()
    state_dict = current_torchvision_names(source)
    config = torchvision_config(variant, **overrides)
    if "num_classes" not in overrides:
        logits_bias = state_dict.get("head.classification_head.cls_logits.bias")
        if logits_bias is not None:  # without it, the check below reports the missing name
            config = config.replace(num_classes=logits_bias.numel() // config.num_anchors)
    model = RetinaNet(config=config)

    renames = torchvision_key_map(config)
    loaded, problems, used = {}, [], set()
    for name, tensor in model.state_dict().items():
        prefix = next((p for p in renames if name.startswith(p)), None)
        source_name = renames[prefix] + name[len(prefix) :] if prefix else name
        if name.endswith("num_batches_tracked"):
            loaded[name] = state_dict.get(source_name, tensor)
        elif source_name in state_dict and state_dict[source_name].shape != tensor.shape:
            problems.append(f"{name}: ours {list(tensor.shape)}, torchvision's {list(state_dict[source_name].shape)}")
        elif source_name in state_dict:
            loaded[name] = state_dict[source_name]
        elif config.head_norm == "gn" and re.fullmatch(r"head\.\w+_head\.conv\.\d+\.0\.bias", source_name):
            loaded[name] = torch.zeros_like(tensor)  # torchvision's convs before a GroupNorm have no bias
        else:
            problems.append(f"{name}: no {source_name} in the torchvision state dict")
        used.add(source_name)
    left_over = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")]
    problems += [f"{k}: in the torchvision state dict, not used by our {variant} model" for k in left_over]
    if problems:
        likely = "v2" if "head.classification_head.conv.0.1.weight" in state_dict else "v1"  # v2: GroupNorm heads
        hint = f"\nthe heads of these weights are those of {likely}: variant={likely!r}?" if likely != variant else ""
        raise WeightsError(
            f"cannot load torchvision's RetinaNet weights into our {variant} model:\n  " + "\n  ".join(problems) + hint
        )
    model.load_state_dict(loaded)
    return model


def coco_retinanet(variant: str = "v1", **overrides) -> tuple[RetinaNet, list[str]]:
    """Our RetinaNet with torchvision's COCO weights (downloaded once into torch's hub cache), and the names
    of its 91 labels ("__background__" and "N/A" among them: label k is COCO category id k).

    `variant` "v1": box AP 36.4 on COCO val2017; "v2": 41.5. `overrides` change RetinaConfig fields."""
    if variant not in COCO_WEIGHTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {list(COCO_WEIGHTS)}")
    weights = COCO_WEIGHTS[variant]
    state_dict = download_weights(weights, f"torchvision's COCO RetinaNet {variant}")
    if variant == "v1":  # trained before torchvision's BatchNorm eps fix: torchvision itself runs it with 0.0
        overrides = {"backbone_norm_eps": 0.0, **overrides}
    return from_torchvision(state_dict, variant, **overrides), list(weights.meta["categories"])


def download_weights(weights: torchvision.models.WeightsEnum, what: str, hint: str = "") -> dict[str, Tensor]:
    """The state dict of torchvision `weights`: read from torch's hub cache, downloaded there the first time.
    Without network, WeightsError says which URL to fetch and where to put the file."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as error:  # no network: URLError is an OSError
        raise WeightsError(
            f"cannot download {what} ({error}). Without internet, download {weights.url} on a connected machine "
            f"and copy it to {cached} (torch's hub cache, where torchvision looks first){hint}."
        ) from None
    except Exception as error:  # a truncated or foreign file in the cache
        raise WeightsError(f"cannot read {cached} ({error}): delete it to download it again") from None


def load_backbone_weights(model: RetinaNet, source: str) -> None:
    """Initialise the ResNet of `model` from ImageNet: `source` "imagenet" (torchvision's weights, downloaded once
    into torch's hub cache) or the path of a torchvision ResNet state dict (.pth)."""
    name = model.config.backbone
    if source == "imagenet" and name not in torchvision.models.list_models(torchvision.models):
        raise WeightsError(f"torchvision has no ImageNet weights for {name}: train it from scratch (--weights none)")
    if source == "imagenet":
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        hint = (
            f", or pass the file as the backbone weights (--weights /path/to/{Path(weights.url).name}); "
            "--weights none trains from random initialisation"
        )
        state = download_weights(weights, f"the ImageNet weights of {name}", hint)
    else:
        path = Path(source)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise WeightsError(f"cannot read backbone weights {path}: {error}") from None
    # torchvision's names -> ours: conv1 and bn1 are our stem[0] and stem[1]; the classifier (fc) is not used.
    stem = {"conv1": "stem.0", "bn1": "stem.1"}
    renamed = {}
    for key, value in state.items():
        head, rest = key.split(".", 1)
        if head != "fc":
            renamed[f"{stem.get(head, head)}.{rest}"] = value
    own = model.backbone.state_dict()
    # FrozenBatchNorm2d keeps no num_batches_tracked: that counter of a BatchNorm file has no place to go.
    renamed = {k: v for k, v in renamed.items() if k in own or not k.endswith("num_batches_tracked")}
    problems = [f"{k}: missing from the file" for k in own if k not in renamed]
    problems += [f"{k}: in the file, not in {name}" for k in renamed if k not in own]
    problems += [
        f"{k}: {list(renamed[k].shape)} in the file, {list(v.shape)} in {name}"
        for k, v in own.items()
        if k in renamed and renamed[k].shape != v.shape
    ]
    if problems:
        raise WeightsError(f"{source} does not hold {name} weights:\n  " + "\n  ".join(problems[:10]))
    model.backbone.load_state_dict(renamed)
