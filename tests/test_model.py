"""retina.model against torchvision's FPN, plus shapes, preprocessing, edge cases and a tiny overfit. The whole model
against torchvision's RetinaNet, with its weights: tests/test_pretrained.py."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retina import DetectionCollate, RetinaConfig, RetinaNet
from retina.boxes import box_iou
from retina.model import FPN, Head, resnet10

TINY = dict(backbone="resnet18", fpn_channels=16, head_convs=1, backbone_norm="bn", trainable_stages=5)


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


def test_preprocess_rounds_antialiases_and_pads_with_black():
    model = RetinaNet(num_classes=2, **TINY)  # 800 / 1333, padded to 128
    images = [torch.rand(3, 480, 640), torch.rand(3, 1600, 1200)]
    batch, sizes = model.preprocess(images)
    # 640 * 800 / 480 = 1066.7: rounded to 1067 (torchvision's resize floors it to 1066)
    assert sizes.tolist() == [[800, 1067], [1067, 800]] and batch.shape == (2, 3, 1152, 1152)
    # shrunk with antialiasing (torchvision's resize does not antialias)
    shrunk = F.interpolate(images[1][None], size=(1067, 800), mode="bilinear", antialias=True)[0]
    assert torch.equal(batch[1, :, :1067, :800], shrunk)
    assert not batch[0, :, 800:].any() and not batch[0, :, :, 1067:].any()


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


def test_detect_of_no_images_returns_no_detections():
    model = RetinaNet(num_classes=2, **TINY)
    assert model.detect([]) == []


def test_user_gave_detect_an_empty_image():
    model = RetinaNet(num_classes=2, **TINY)
    with pytest.raises(ValueError, match=r"image 1: the image is empty, shape \[3, 0, 40\]"):
        model.detect([torch.rand(3, 30, 40), torch.rand(3, 0, 40)])


def test_user_gave_detect_an_image_with_a_nan_pixel():
    model = RetinaNet(num_classes=2, **TINY)
    image = torch.rand(3, 32, 32)
    image[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"image 0: 1 pixel values are NaN or inf"):
        model.detect([image])


def test_user_gave_detect_one_image_instead_of_a_list():
    model = RetinaNet(num_classes=2, **TINY)
    with pytest.raises(ValueError, match=r"got one image tensor of shape \[3, 32, 48\]; expected a list of \[3, H, W\] "
                       r"float tensors in \[0, 1\] \(e.g. \[image\]\) or a \[B, 3, H, W\] batch"):  # fmt: skip
        model.detect(torch.rand(3, 32, 48))


def test_user_gave_detect_0_to_255_floats():
    model = RetinaNet(num_classes=2, **TINY)
    with pytest.raises(ValueError, match=r"image 0: float values must be in \[0, 1\]"):
        model.detect([torch.rand(3, 32, 32) * 255])


def test_detect_takes_a_batch_like_a_list():
    model = RetinaNet(num_classes=2, min_size=64, max_size=64, score_thresh=0.0, **TINY)
    batch = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    from_batch, from_list = model.detect(batch), model.detect([batch[0], batch[1]])
    assert len(from_batch) == 2 and len(from_batch[0]["boxes"]) > 0
    for a, b in zip(from_batch, from_list, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "scores", "labels"))


def test_detect_restores_training_mode_when_it_fails():
    model = RetinaNet(num_classes=2, **TINY).train()

    def fail(*args, **kwargs):
        assert not model.training, "detect runs the network in eval mode"
        raise RuntimeError("out of memory")

    model.forward = fail
    with pytest.raises(RuntimeError, match="out of memory"):
        model.detect([torch.rand(3, 32, 32)])
    assert model.training
    with pytest.raises(ValueError, match=r"image 1: expected an RGB image"):  # in preprocess, after the switch
        model.detect([torch.rand(3, 32, 32), torch.rand(1, 32, 32)])
    assert model.training


def test_head_orders_its_outputs_location_then_anchor_then_class():
    """The head's `[B, H*W*A, K]` rows must run over locations (row-major), then anchors, then classes: the order of
    `generate_anchors`. A head whose prediction conv writes `1000 * location + channel` makes every entry name
    where it came from; channel `a * K + k` is anchor a's class k (torchvision's layout)."""
    A, K = 3, 2  # A != K: an anchor-major and a class-major reading differ
    head = Head(channels=1, num_anchors=A, outputs_per_anchor=K, num_convs=0, norm=None)
    with torch.no_grad():
        head.predict.weight.zero_()
        head.predict.weight[:, 0, 1, 1] = 1000.0  # the 3x3 conv's centre tap copies the input
        head.predict.bias.copy_(torch.arange(A * K, dtype=torch.float32))
    sizes = [(2, 3), (1, 2)]  # two levels
    features = [torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).repeat(2, 1, 1, 1) for h, w in sizes]
    out = head(features)  # [2, N, K]
    expected = torch.cat([
        1000.0 * torch.arange(h * w).repeat_interleave(A)[:, None] + torch.arange(A * K).view(A, K).repeat(h * w, 1)
        for h, w in sizes
    ])  # fmt: skip
    assert out.shape == (2, sum(h * w for h, w in sizes) * A, K)
    torch.testing.assert_close(out[1], expected)
    torch.testing.assert_close(out[0], expected)


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
        num_classes=2,
        min_size=128,
        max_size=128,
        anchor_sizes=(16, 32, 64, 128, 256),
        head_norm="gn",
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


def test_resnet10_is_resnet18_with_one_block_per_stage():
    ours = RetinaNet(num_classes=2, **(TINY | {"backbone": "resnet10"})).backbone
    reference = torchvision.models.resnet18()
    for name in ("layer1", "layer2", "layer3", "layer4"):
        stage, reference_stage = getattr(ours, name), getattr(reference, name)
        assert len(stage) == 1 and len(reference_stage) == 2
        # the one block is ResNet-18's first block of the stage, stride and downsampling included
        assert [p.shape for p in stage[0].parameters()] == [p.shape for p in reference_stage[0].parameters()]
    features = ours(torch.rand(1, 3, 64, 96))
    assert [f.shape for f in features] == [(1, 128, 8, 12), (1, 256, 4, 6), (1, 512, 2, 3)]


def test_resnet10_equals_torchvisions_resnet_with_one_block_per_stage():
    torch.manual_seed(0)
    reference = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1]).eval()
    ours = resnet10().eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(state)  # strict: the same modules, names and shapes
    x = torch.rand(2, 3, 70, 90)
    with torch.no_grad():
        expected, got = x, x
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            expected, got = getattr(reference, name)(expected), getattr(ours, name)(got)
    torch.testing.assert_close(got, expected)
    # torchvision's initialisation: He normal (fan out) for every conv
    conv = ours.layer3[0].conv1
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - (2 / fan_out) ** 0.5) < 0.05 * (2 / fan_out) ** 0.5


@pytest.mark.parametrize("width", [16, 32])
def test_narrow_resnet10_scales_every_stage(width):
    wide = RetinaNet(num_classes=2, **(TINY | {"backbone": "resnet10"})).backbone
    narrow = RetinaNet(num_classes=2, **(TINY | {"backbone": "resnet10", "backbone_width": width})).backbone
    ratio = 64 // width
    for (name, w), (_, n) in zip(wide.named_parameters(), narrow.named_parameters(), strict=True):
        in_ratio = 1 if name == "stem.0.weight" else ratio  # the stem's input is the 3 image channels
        expected = (
            (w.shape[0] // ratio, w.shape[1] // in_ratio, *w.shape[2:]) if w.ndim == 4 else (w.shape[0] // ratio,)
        )
        assert n.shape == expected, name
    features = narrow(torch.rand(1, 3, 64, 96))
    assert [f.shape for f in features] == [(1, 2 * width, 8, 12), (1, 4 * width, 4, 6), (1, 8 * width, 2, 3)]
    assert narrow.out_channels == [2 * width, 4 * width, 8 * width]


def test_only_resnet10_takes_another_width():
    with pytest.raises(ValueError, match="backbone_width 32: torchvision's resnet18 is 64 wide"):
        RetinaNet(num_classes=2, **(TINY | {"backbone_width": 32}))
    with pytest.raises(ValueError, match="backbone_width must be at least 1, got 0"):
        RetinaNet(num_classes=2, **(TINY | {"backbone": "resnet10", "backbone_width": 0}))
