"""retina.pretrained: torchvision's RetinaNet v1 and v2 weights in our model give torchvision's raw outputs and
detections, resize and padding included; old checkpoint names, BatchNorm eps 0.0, loud mismatches; the COCO and
ImageNet downloads, offline and from the cache. Randomly initialised torchvision models: nothing is downloaded."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.detection import RetinaNet, retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import retina
from retina.config import IMAGENET_MEAN, IMAGENET_STD
from retina.pretrained import (
    COCO_WEIGHTS,
    WeightsError,
    coco_retinanet,
    from_torchvision,
    load_backbone_weights,
    torchvision_config,
    torchvision_key_map,
)

BUILDERS = {"v1": retinanet_resnet50_fpn, "v2": retinanet_resnet50_fpn_v2}

# Two images per variant, upscaled by torchvision's resize to 800 / 1333 and padded to a multiple of 32: small
# inputs, but the network runs at full size. v1: landscape, the long side capped at 1333 (399 x 1333, 499 x 1333);
# v2: portrait, the short side at 800 (1066 x 800, 1200 x 800).
IMAGE_SIZES = {"v1": [(30, 100), (45, 120)], "v2": [(64, 48), (90, 60)]}


def random_torchvision_retinanet(variant: str, num_classes: int = 4) -> torch.nn.Module:
    """torchvision's RetinaNet `variant` with random weights, in eval mode. The class logits are raised so that
    hundreds of detections per image pass the 0.05 threshold, and made to depend on the image as much as on the
    anchor and class, so that fewer scores nearly tie."""
    torch.manual_seed(0)
    model = BUILDERS[variant](weights=None, weights_backbone=None, num_classes=num_classes).eval()
    cls_logits = model.head.classification_head.cls_logits
    with torch.no_grad():
        cls_logits.weight.mul_(5)
        cls_logits.bias.normal_(-1.5, 1.0)
    return model


@pytest.fixture(scope="module", params=["v1", "v2"])
def parity(request) -> dict:
    """torchvision's model and ours with its weights, both run once on the same images, with the raw head outputs
    caught on the way."""
    variant = request.param
    theirs = random_torchvision_retinanet(variant)
    ours = from_torchvision(theirs, variant)
    images = [torch.rand(3, h, w) for h, w in IMAGE_SIZES[variant]]
    caught = {}
    theirs.head.register_forward_hook(lambda module, args, out: caught.update(their_head=out))
    ours.register_forward_hook(lambda module, args, out: caught.update(our_head=out))
    with torch.no_grad():
        expected = theirs(images)
    got = ours.detect(images)
    return dict(variant=variant, theirs=theirs, ours=ours, images=images, expected=expected, got=got, **caught)


def test_weight_import_uses_every_torchvision_tensor(parity):
    theirs, ours = parity["theirs"].state_dict(), parity["ours"].state_dict()
    renames = torchvision_key_map(parity["ours"].config)
    used = set()
    for name, tensor in ours.items():
        prefix = next((p for p in renames if name.startswith(p)), "")
        source = renames.get(prefix, "") + name[len(prefix) :]
        if source in theirs:
            assert torch.equal(tensor, theirs[source]), name
            used.add(source)
        else:  # v2: our head convs have the bias that torchvision's GroupNorm heads leave out
            assert parity["variant"] == "v2" and ".tower." in name and name.endswith(".bias"), name
            assert not tensor.any()
    # Our v1 has frozen BatchNorm, without the step counters of torchvision's fresh (trainable) BatchNorm; our v2
    # has plain BatchNorm, as torchvision's v2, and takes them.
    counters = {k for k in theirs if k.endswith("num_batches_tracked")}
    assert set(theirs) - used == (counters if parity["variant"] == "v1" else set())


def test_head_outputs_equal_torchvision_on_the_same_padded_batch(parity):
    batch, sizes = parity["ours"].preprocess(parity["images"])
    image_list, _ = parity["theirs"].transform(parity["images"])
    assert [tuple(s) for s in sizes.tolist()] == image_list.image_sizes
    assert batch.shape == image_list.tensors.shape
    # torchvision normalises before it resizes and pads with zeros; we resize, pad with the mean, then normalise
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close((batch - mean) / std, image_list.tensors, rtol=0, atol=2e-6)
    cls_logits, box_deltas = parity["our_head"]  # [B, N, C], [B, N, 4] over the whole padded batch
    torch.testing.assert_close(cls_logits, parity["their_head"]["cls_logits"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(box_deltas, parity["their_head"]["bbox_regression"], rtol=1e-5, atol=1e-4)


def test_detections_equal_torchvision_with_its_resize_and_padding(parity):
    for got, expected, image in zip(parity["got"], parity["expected"], parity["images"], strict=True):
        assert len(got["scores"]) == len(expected["scores"]) == 300  # hundreds passed the threshold; 300 kept
        assert expected["boxes"][:, 2].max() > 0.9 * image.shape[2]  # in the input image's pixels, not 800 / 1333
        torch.testing.assert_close(got["scores"], expected["scores"], rtol=0, atol=1e-5)
        # Equal scores may come out in either order: pair every detection with the one torchvision detection of
        # the same class at the same place and score.
        same = (got["labels"][:, None] == expected["labels"][None, :]) & (
            (got["scores"][:, None] - expected["scores"][None, :]).abs() <= 1e-5
        )
        same &= (got["boxes"][:, None, :] - expected["boxes"][None, :, :]).abs().amax(dim=2) <= 1e-3
        assert (same.sum(dim=1) == 1).all() and (same.sum(dim=0) == 1).all()


@pytest.mark.parametrize(
    "sizes",
    [
        [(480, 640), (640, 480)],  # COCO-like, landscape and portrait: the short side becomes 800
        [(1000, 1500), (700, 3000)],  # shrunk: torchvision does not antialias; the second one's long side binds
        [(333, 500), (37, 1001), (599, 601)],  # odd sizes: torchvision floors where we would round
    ],
)
def test_preprocessing_equals_torchvision_transform(sizes):
    ours = retina.RetinaNet(config=torchvision_config(backbone="resnet18", fpn_channels=8, head_convs=1))
    theirs = GeneralizedRCNNTransform(800, 1333, IMAGENET_MEAN, IMAGENET_STD).eval()
    images = [torch.rand(3, h, w) for h, w in sizes]
    batch, image_sizes = ours.preprocess(images)
    image_list, _ = theirs(images)
    assert [tuple(s) for s in image_sizes.tolist()] == image_list.image_sizes
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close((batch - mean) / std, image_list.tensors, rtol=0, atol=2e-6)


def old_checkpoint_names(state_dict: dict) -> dict:
    """The names of torchvision checkpoints saved before its heads and FPN blocks became Conv2dNormActivation."""
    renamed = {}
    for name, tensor in state_dict.items():
        parts = name.split(".")
        if name.startswith("head.") and parts[2] == "conv":  # head.X_head.conv.k.0.weight -> conv.{2k}.weight
            name = ".".join([*parts[:3], str(2 * int(parts[3])), parts[5]])
        elif name.startswith(("backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks.")):
            name = ".".join([*parts[:4], parts[5]])  # inner_blocks.i.0.weight -> inner_blocks.i.weight
        renamed[name] = tensor
    return renamed


def test_old_checkpoint_names_load_the_same_weights():
    state_dict = random_torchvision_retinanet("v1").state_dict()  # v1 only: v2 came after the renaming
    old = old_checkpoint_names(state_dict)
    assert "head.classification_head.conv.6.weight" in old and "backbone.fpn.inner_blocks.2.bias" in old
    BUILDERS["v1"](weights=None, weights_backbone=None, num_classes=4).load_state_dict(old)  # torchvision reads them
    expected = from_torchvision(state_dict, "v1").state_dict()
    for name, tensor in from_torchvision(old, "v1").state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_eps_zero_of_the_v1_coco_weights():
    # The model torchvision's v1 builder makes for its COCO weights: frozen BatchNorm, eps overwritten with 0.0.
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=None,
        norm_layer=FrozenBatchNorm2d,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )
    theirs = RetinaNet(backbone, num_classes=3).eval()
    overwrite_eps(theirs, 0.0)
    generator = torch.Generator().manual_seed(0)
    for m in theirs.modules():  # random statistics, some variances small enough that eps matters
        if isinstance(m, FrozenBatchNorm2d):
            n = m.running_var.shape[0]
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    theirs.backbone.body.bn1.running_var[:8] = 1e-4
    images = torch.rand(1, 3, 96, 128)
    normalised = (images - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        expected = list(theirs.backbone.body(normalised).values())  # C3, C4, C5

    from_model = from_torchvision(theirs, "v1").eval()  # the model carries its eps
    from_file = from_torchvision(theirs.state_dict(), "v1", backbone_norm_eps=0.0).eval()  # a state dict does not
    default_eps = from_torchvision(theirs.state_dict(), "v1").eval()
    assert from_model.config.backbone_norm_eps == from_file.config.backbone_norm_eps == 0.0
    assert {m.eps for m in from_model.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}
    with torch.no_grad():
        for model in (from_model, from_file):
            for got, want in zip(model.backbone((images - model.mean) / model.std), expected, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        c3 = default_eps.backbone((images - default_eps.mean) / default_eps.std)[0]
    assert not torch.allclose(c3, expected[0], rtol=1e-3, atol=1e-3)


def test_another_class_count_lists_the_mismatch(parity):
    with pytest.raises(WeightsError, match=r"cls_head.predict.weight: ours \[27, 256, 3, 3\], torchvision's \[36"):
        from_torchvision(parity["theirs"].state_dict(), parity["variant"], num_classes=3)


def test_the_wrong_variant_lists_every_name_and_suggests_the_right_one(parity):
    other = {"v1": "v2", "v2": "v1"}[parity["variant"]]
    with pytest.raises(WeightsError) as error:
        from_torchvision(parity["theirs"].state_dict(), other)
    message = str(error.value)
    assert f"variant={parity['variant']!r}?" in message
    assert "fpn.p6.weight: ours" in message  # P6 from C5 (2048 channels) or from P5 (256)
    left_over = "head.classification_head.conv.3.1.weight: in the torchvision state dict, not used"
    assert (left_over in message) == (parity["variant"] == "v2")


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """An empty torch hub cache in tmp_path, and downloads that fail as without network (at once, no timeout)."""

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a directory set by torch.hub.set_dir would win over TORCH_HOME
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_coco_weights_offline_say_what_to_download_and_where(offline, variant):
    url = COCO_WEIGHTS[variant].url
    with pytest.raises(WeightsError) as error:
        coco_retinanet(variant)
    message = str(error.value)
    assert "Temporary failure in name resolution" in message
    assert f"download {url} on a connected machine and copy it to {offline / Path(url).name}" in message


def test_coco_weights_load_from_the_hub_cache(offline):
    torch.manual_seed(0)
    theirs = retinanet_resnet50_fpn(weights=None, weights_backbone=None)  # 91 classes, as the COCO weights
    offline.mkdir(parents=True)
    torch.save(theirs.state_dict(), offline / Path(COCO_WEIGHTS["v1"].url).name)
    model, classes = coco_retinanet("v1")
    assert model.config == torchvision_config("v1", backbone_norm_eps=0.0)
    assert model.config.num_classes == len(classes) == 91
    assert classes[:3] == ["__background__", "person", "bicycle"] and classes[12] == "N/A"  # label k = COCO id k
    assert torch.equal(model.cls_head.predict.weight, theirs.head.classification_head.cls_logits.weight)


def test_backbone_weights_from_a_torchvision_file(tmp_path):
    model = retina.RetinaNet(num_classes=2, backbone="resnet18", fpn_channels=16)
    resnet = torchvision.models.resnet18()
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    load_backbone_weights(model, str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.backbone.stem[0].weight, resnet.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, resnet.layer4[1].bn2.running_var)
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsError, match="does not hold resnet18 weights"):
        load_backbone_weights(model, str(tmp_path / "resnet34.pth"))


def test_imagenet_weights_offline_say_what_to_download_and_where(offline):
    model = retina.RetinaNet(num_classes=2, backbone="resnet18", fpn_channels=16)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    with pytest.raises(WeightsError) as error:
        load_backbone_weights(model, "imagenet")
    message = str(error.value)
    assert f"download {url} on a connected machine and copy it to {offline / Path(url).name}" in message
    assert "--weights none" in message


def test_no_imagenet_weights_for_resnet10():
    model = retina.RetinaNet(num_classes=2, backbone="resnet10", fpn_channels=16)
    with pytest.raises(WeightsError, match="no ImageNet weights for resnet10.*--weights none"):
        load_backbone_weights(model, "imagenet")
