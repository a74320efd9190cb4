"""retina.model against torchvision's FPN and RetinaNet, plus shapes, edge cases and a tiny overfit."""

from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.models.detection.retinanet import retinanet_resnet50_fpn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retina import DetectionCollate, RetinaConfig, RetinaNet
from retina.boxes import box_iou
from retina.model import FPN, IMAGENET_MEAN, IMAGENET_STD, load_torchvision_weights

TINY = dict(backbone="resnet18", fpn_channels=16, head_convs=1, backbone_norm="bn", trainable_stages=5)


def randomise_norm_stats(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Random BatchNorm statistics and affine terms, so that copying them is actually tested."""
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
            n = m.running_mean.shape[0]
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@pytest.mark.parametrize("p6_from", ["c5", "p5"])
def test_fpn_equals_torchvision_fpn_with_copied_weights(p6_from):
    torch.manual_seed(0)
    in_channels = [32, 64, 128]
    ours = FPN(in_channels, 24, p6_from=p6_from)
    extra = LastLevelP6P7(in_channels[-1] if p6_from == "c5" else 24, 24)
    theirs = FeaturePyramidNetwork(in_channels, 24, extra_blocks=extra)
    renames = {"lateral": "inner_blocks", "output": "layer_blocks"}
    state = {}
    for name, tensor in ours.state_dict().items():
        part, *rest = name.split(".")
        if part in renames:
            state[f"{renames[part]}.{rest[0]}.0.{rest[1]}"] = tensor
        else:
            state[f"extra_blocks.{name}"] = tensor
    theirs.load_state_dict(state)
    # odd sizes: the top-down path must upsample to the exact lateral size (ceil arithmetic)
    features = [torch.randn(2, c, s, s + 3) for c, s in zip(in_channels, (25, 13, 7), strict=True)]
    expected = list(theirs(OrderedDict((str(i), f) for i, f in enumerate(features))).values())
    got = ours(features)
    assert len(got) == len(expected) == 5
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def torchvision_and_ours(random_stats: bool):
    """torchvision's RetinaNet v1 with random weights (and random BatchNorm statistics, or the identity
    statistics of a fresh model), and ours with the same weights."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    theirs = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5).eval()
    if random_stats:
        randomise_norm_stats(theirs, g)
    with torch.no_grad():  # spread the class scores so that post-processing has work to do
        theirs.head.classification_head.cls_logits.bias.normal_(-2.0, 1.0, generator=g)
    ours = RetinaNet(num_classes=5, p6_from="p5", trainable_stages=5).eval()
    load_torchvision_weights(ours, theirs.state_dict())
    return theirs, ours


@pytest.fixture(scope="module")
def torchvision_pair():
    return torchvision_and_ours(random_stats=True)


def test_weight_import_uses_every_torchvision_tensor(torchvision_pair):
    theirs, ours = torchvision_pair
    their_keys = {k for k in theirs.state_dict() if not k.endswith("num_batches_tracked")}
    assert len(ours.state_dict()) == len(their_keys) == 301


def test_forward_equals_torchvision_backbone_and_head(torchvision_pair):
    theirs, ours = torchvision_pair
    images = torch.rand(2, 3, 128, 256)
    normalised = (images - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        features = list(theirs.backbone(normalised).values())
        head = theirs.head(features)
        cls_logits, box_deltas = ours(images)
    torch.testing.assert_close(cls_logits, head["cls_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(box_deltas, head["bbox_regression"], rtol=1e-4, atol=1e-4)


def test_detect_equals_torchvision_end_to_end():
    # Identity statistics: random ones blow activations up until float rounding reorders near-tied scores.
    theirs, ours = torchvision_and_ours(random_stats=False)
    # sizes that need no resize and pad the same way (multiples of 128), so both see identical tensors
    images = [torch.rand(3, 256, 384), torch.rand(3, 256, 384)]
    theirs.transform.min_size, theirs.transform.max_size = (256,), 384
    ours.config = ours.config.replace(min_size=256, max_size=384)
    expected = theirs(images)
    got = ours.detect(images)
    for g, e in zip(got, expected, strict=True):
        assert len(e["boxes"]) > 10
        torch.testing.assert_close(g["scores"], e["scores"], rtol=1e-4, atol=1e-5)
        # Near-tied scores may come out in another order, so compare detections as sets: every one of
        # ours has a torchvision detection of the same class with the same box.
        same_class = g["labels"][:, None] == e["labels"][None, :]
        agreement = torch.where(same_class, box_iou(g["boxes"], e["boxes"]), 0).max(dim=1).values
        assert agreement.min() > 0.999


def test_import_of_another_class_count_lists_the_mismatch(torchvision_pair):
    theirs, _ = torchvision_pair
    with pytest.raises(ValueError, match=r"cls_head.predict.weight: ours \[27, 256, 3, 3\], torchvision's \[45"):
        load_torchvision_weights(RetinaNet(num_classes=3, p6_from="p5"), theirs.state_dict())


@pytest.mark.parametrize("size", [(97, 131), (128, 128), (32, 200), (1, 1)])
def test_forward_shapes_match_the_anchors_for_any_size(size):
    model = RetinaNet(num_classes=3, **TINY).eval()
    with torch.no_grad():
        cls_logits, box_deltas = model(torch.rand(2, 3, *size))
    n = model.anchors(size).shape[0]
    assert cls_logits.shape == (2, n, 3)
    assert box_deltas.shape == (2, n, 4)


def test_prior_initialisation_gives_pi_everywhere():
    torch.manual_seed(0)
    model = RetinaNet(num_classes=4, prior=0.01, **TINY).eval()
    with torch.no_grad():
        cls_logits, _ = model(torch.rand(1, 3, 128, 128))
    probs = torch.sigmoid(cls_logits)
    # the head's last conv has std 0.01 weights, so every probability stays close to pi
    assert abs(probs.mean().item() - 0.01) < 1e-3
    assert 0.005 < probs.min() and probs.max() < 0.02


def test_detect_handles_uint8_small_and_rejects_bad_channels():
    model = RetinaNet(num_classes=3, min_size=64, max_size=96, score_thresh=0.0, **TINY)
    dets = model.detect([torch.randint(0, 255, (3, 40, 50), dtype=torch.uint8), torch.rand(3, 20, 20)])
    assert len(dets) == 2
    for det, (h, w) in zip(dets, [(40, 50), (20, 20)], strict=True):
        assert det["boxes"].shape[1] == 4 and len(det["boxes"]) == len(det["scores"]) == len(det["labels"]) > 0
        # boxes are reported in the input image's own coordinates
        assert det["boxes"][:, 0::2].max() <= w + 1e-4 and det["boxes"][:, 1::2].max() <= h + 1e-4
    assert model.training, "detect() must restore the training mode"
    with pytest.raises(ValueError, match=r"image 0: expected an RGB image of shape \[3, H, W\], got \[1, 20, 20\]"):
        model.detect([torch.rand(1, 20, 20)])
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        model(torch.rand(1, 4, 64, 64))


def test_unknown_settings_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'"):
        RetinaNet(num_classes=2, backbone="resnet7")
    with pytest.raises(ValueError, match="head_norm must be None or 'gn'"):
        RetinaNet(num_classes=2, head_norm="bn", **{k: v for k, v in TINY.items()})
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        RetinaNet(num_classes=0)


def test_frozen_stages_do_not_train():
    model = RetinaNet(num_classes=2, backbone="resnet18", trainable_stages=2)
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer2.parameters())
    assert all(p.requires_grad for p in model.backbone.layer3.parameters())
    assert all(p.requires_grad for p in model.fpn.parameters())


def test_small_model_overfits_one_image_and_finds_its_box():
    torch.manual_seed(0)
    config = RetinaConfig(
        num_classes=2, min_size=128, max_size=128, anchor_sizes=(16, 32, 64, 128, 256), head_norm="gn",
        **{**TINY, "fpn_channels": 32, "head_convs": 2},
    )
    model = RetinaNet(config=config)
    image = torch.full((3, 128, 128), 0.2)
    image[:, 30:90, 40:80] = torch.tensor([0.9, 0.3, 0.1])[:, None, None]
    box = torch.tensor([[40.0, 30.0, 80.0, 90.0]])
    batch = DetectionCollate(config)([(image, {"boxes": box, "labels": torch.tensor([1])})])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        losses = model.loss(batch)
        optimiser.zero_grad()
        sum(losses.values()).backward()
        optimiser.step()
    det = model.detect([image])[0]
    assert det["labels"][0] == 1
    assert box_iou(det["boxes"][:1], box).item() > 0.9
