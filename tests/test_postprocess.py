"""retina.postprocess against torchvision: the teaching NMS, and the batched detection path."""

import pytest
import torch
import torchvision
from torchvision import tv_tensors
from torchvision.models.detection.retinanet import retinanet_resnet50_fpn
from torchvision.transforms.v2 import functional as TF

from retina import RetinaConfig, RetinaNet
from retina.anchors import anchors_per_level_counts, generate_anchors
from retina.boxes import decode_boxes
from retina.postprocess import (
    TTA_VIEWS,
    average_views,
    batched_nms,
    grouped_nms,
    nms,
    postprocess_detections,
    unview_anchors,
    unview_boxes,
    view_images,
)


def clustered_boxes(n: int, generator: torch.Generator, exact_copies: int = 20) -> torch.Tensor:
    """Boxes in a few tight clusters (many overlaps), with some exact duplicates."""
    centres = torch.rand(5, 2, generator=generator) * 100
    pick = torch.randint(0, 5, (n,), generator=generator)
    xy = centres[pick] + torch.randn(n, 2, generator=generator) * 4
    wh = torch.rand(n, 2, generator=generator) * 30 + 2
    boxes = torch.cat((xy, xy + wh), dim=1)
    boxes[-exact_copies:] = boxes[:exact_copies]
    return boxes


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_teaching_nms_keeps_what_torchvision_keeps(seed, threshold):
    g = torch.Generator().manual_seed(seed)
    boxes = clustered_boxes(300, g)
    # scores on a coarse grid: many exact ties, which must be broken the same way
    scores = torch.randint(0, 20, (300,), generator=g).float() / 20
    expected = torchvision.ops.nms(boxes, scores, threshold)
    got = nms(boxes, scores, threshold)
    assert torch.equal(got, expected)
    assert 5 < len(got) < 300


@pytest.mark.parametrize("seed", range(5))
def test_teaching_batched_nms_keeps_what_torchvision_keeps(seed):
    g = torch.Generator().manual_seed(seed)
    boxes = clustered_boxes(400, g)
    scores = torch.randint(0, 10, (400,), generator=g).float() / 10
    groups = torch.randint(0, 4, (400,), generator=g)
    expected = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    got = batched_nms(boxes, scores, groups, 0.5)
    assert torch.equal(got, expected)
    # a box only suppresses boxes of its own group: more survive than with plain NMS
    assert len(got) > len(nms(boxes, scores, 0.5))


@pytest.mark.parametrize("seed", range(3))
def test_grouped_nms_keeps_what_torchvision_keeps(seed):
    g = torch.Generator().manual_seed(seed)
    boxes = clustered_boxes(3000, g)  # over 1000 boxes: torchvision's CPU path loops over the groups
    scores = torch.rand(3000, generator=g)  # distinct, so that the order is defined
    groups = torch.randint(0, 300, (3000,), generator=g)
    expected = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    assert torch.equal(grouped_nms(boxes, scores, groups, 0.5), expected)
    empty = grouped_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long


def test_nms_of_nothing_and_of_one_box():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert nms(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def random_outputs(config: RetinaConfig, batch: int, size: tuple[int, int], seed: int):
    g = torch.Generator().manual_seed(seed)
    anchors = generate_anchors(config, size)
    n = anchors.shape[0]
    # centred near -3 so that only some scores pass 0.05 and the top-k and threshold both matter
    cls_logits = torch.randn(batch, n, config.num_classes, generator=g) * 1.5 - 3
    box_deltas = torch.randn(batch, n, 4, generator=g) * 0.3
    return cls_logits, box_deltas, anchors


def torchvision_postprocess(cls_logits, box_deltas, anchors, counts, image_sizes, config):
    reference = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=config.num_classes,
        score_thresh=config.score_thresh, nms_thresh=config.nms_thresh,
        detections_per_img=config.detections_per_img, topk_candidates=config.topk_candidates,
    )
    head = {"cls_logits": list(cls_logits.split(counts, 1)), "bbox_regression": list(box_deltas.split(counts, 1))}
    level_anchors = [list(anchors.split(counts))] * len(cls_logits)
    return reference.postprocess_detections(head, level_anchors, [tuple(s) for s in image_sizes.tolist()])


@pytest.mark.parametrize(
    "settings",
    [{}, {"topk_candidates": 50, "detections_per_img": 40}, {"score_thresh": 0.3, "nms_thresh": 0.3}],
)
def test_batched_detections_equal_torchvision_per_image(settings):
    config = RetinaConfig(num_classes=4, **settings)
    size = (256, 384)
    cls_logits, box_deltas, anchors = random_outputs(config, 3, size, seed=7)
    image_sizes = torch.tensor([[256, 384], [200, 300], [256, 130]])  # each image clipped to its own size
    counts = anchors_per_level_counts(config, size)
    got = postprocess_detections(cls_logits, box_deltas, anchors, image_sizes, config, counts)
    expected = torchvision_postprocess(cls_logits, box_deltas, anchors, counts, image_sizes, config)
    assert len(got) == 3
    for g, e, (h, w) in zip(got, expected, image_sizes.tolist(), strict=True):
        assert 0 < len(e["boxes"]) <= config.detections_per_img
        torch.testing.assert_close(g["boxes"], e["boxes"])
        torch.testing.assert_close(g["scores"], e["scores"])
        assert torch.equal(g["labels"], e["labels"])
        assert g["boxes"][:, 0::2].max() <= w and g["boxes"][:, 1::2].max() <= h


def test_images_without_detections_get_empty_results():
    config = RetinaConfig(num_classes=3)
    size = (128, 128)
    cls_logits, box_deltas, anchors = random_outputs(config, 2, size, seed=0)
    cls_logits[0] = -20  # nothing above the score threshold in the first image
    counts = anchors_per_level_counts(config, size)
    got = postprocess_detections(cls_logits, box_deltas, anchors, torch.tensor([[128, 128]] * 2), config, counts)
    assert got[0]["boxes"].shape == (0, 4) and got[0]["scores"].shape == (0,) and got[0]["labels"].shape == (0,)
    assert len(got[1]["boxes"]) > 0
    assert got[0]["labels"].dtype == torch.long


def test_a_score_exactly_at_the_threshold_is_dropped_as_in_torchvision():
    """torchvision's RetinaNet keeps `scores > score_thresh`: a score equal to the threshold is dropped. Logit 0
    scores sigmoid(0) = 0.5 exactly (in float32 too), with score_thresh 0.5."""
    config = RetinaConfig(num_classes=3, score_thresh=0.5)
    size = (128, 128)
    anchors = generate_anchors(config, size)
    counts = anchors_per_level_counts(config, size)
    cls_logits = torch.full((1, len(anchors), 3), -20.0)  # [1, N, 3]: nothing anywhere near the threshold ...
    cls_logits[0, 100, 1] = 0.0  # ... but a score of exactly 0.5
    cls_logits[0, 2000, 2] = 2.0  # and one of 0.88, far from it
    box_deltas = torch.zeros(1, len(anchors), 4)
    image_sizes = torch.tensor([[128, 128]])
    got = postprocess_detections(cls_logits, box_deltas, anchors, image_sizes, config, counts)[0]
    assert torch.sigmoid(torch.tensor(0.0)) == 0.5
    assert got["labels"].tolist() == [2] and got["scores"].tolist() == [torch.sigmoid(torch.tensor(2.0)).item()]
    expected = torchvision_postprocess(cls_logits, box_deltas, anchors, counts, image_sizes, config)[0]
    assert torch.equal(got["labels"], expected["labels"]) and torch.equal(got["scores"], expected["scores"])
    torch.testing.assert_close(got["boxes"], expected["boxes"])


# ---- test-time augmentation: views made and undone by torchvision's v2 transforms, anchors paired by their boxes


def tta_model(**overrides) -> RetinaNet:
    config = dict(
        num_classes=3, backbone="resnet10", backbone_width=8, backbone_norm="bn", trainable_stages=5,
        fpn_channels=16, head_convs=1, anchor_offset=0.5,
    )
    torch.manual_seed(0)
    model = RetinaNet(**(config | overrides)).eval()
    for head in (model.cls_head, model.box_head):  # outputs that differ from anchor to anchor
        torch.nn.init.normal_(head.predict.weight, std=0.3)
    return model


def torchvision_view(images, k, mirrored):
    view = TF.rotate(images, 90 * k, expand=True)  # counter-clockwise, as torch.rot90 on (H, W)
    return TF.horizontal_flip(view) if mirrored else view


def torchvision_unview(boxes, k, mirrored, view_size):
    # no clamping: anchors and boxes may reach past the image
    boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=view_size, clamping_mode=None)
    if mirrored:
        boxes = TF.horizontal_flip(boxes)
    return TF.rotate(boxes, -90 * k, expand=True).as_subclass(torch.Tensor)


@pytest.mark.parametrize("view", TTA_VIEWS["d4"])
def test_one_view_is_the_model_on_the_torchvision_turned_image(view):
    """average_views over one view = the model on torchvision's turned/mirrored image, its boxes turned back by
    torchvision, each anchor paired with the view's anchor that torchvision maps onto it (ratios 0.5, 1, 2 swap)."""
    k, mirrored = view
    model = tta_model()
    config, size = model.config, (256, 384)
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    logits, deltas = average_views(model, images, config, views=[view])

    view_images_ = torchvision_view(images, k, mirrored)
    assert torch.equal(view_images(images, k, mirrored), view_images_)
    view_size = tuple(view_images_.shape[-2:])
    view_logits, view_deltas = model(view_images_)
    view_anchors = generate_anchors(config, view_size)
    anchors = generate_anchors(config, size)
    # anchors have integer corners; torchvision's rotation matrix is exact only to ~1e-13 px
    mapped = torchvision_unview(view_anchors, k, mirrored, view_size).round().tolist()
    index = {tuple(box): i for i, box in enumerate(mapped)}
    pair = torch.tensor([index[tuple(box)] for box in anchors.round().tolist()])  # every anchor has its view anchor
    assert len(set(pair.tolist())) == len(anchors)

    expected_boxes = torchvision_unview(decode_boxes(view_deltas, view_anchors).flatten(0, 1), k, mirrored, view_size)
    expected_boxes = expected_boxes.view(2, -1, 4)[:, pair]
    torch.testing.assert_close(logits.sigmoid(), view_logits.sigmoid()[:, pair], atol=1e-5, rtol=0)
    torch.testing.assert_close(decode_boxes(deltas, anchors), expected_boxes, atol=1e-3, rtol=0)
    assert logits.shape == view_logits.shape and (view_logits.std() > 0.1)


def test_averaged_views_do_not_change_when_the_image_is_turned_or_mirrored():
    """The eight views are a group: the average over the views of a turned image is the average for the image,
    turned. The mean of eight random-weight views is not turned like that unless every view is undone right."""
    model = tta_model(tta="d4")
    config, size = model.config, (256, 256)
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2))
    logits, deltas = average_views(model, images, config)
    anchors = generate_anchors(config, size)
    for k, mirrored in TTA_VIEWS["d4"][1:]:
        view_logits, view_deltas = average_views(model, view_images(images, k, mirrored), config)
        back = unview_anchors(view_logits.sigmoid(), k, mirrored, config, size)
        torch.testing.assert_close(back, logits.sigmoid(), atol=1e-5, rtol=0)
        boxes = unview_boxes(decode_boxes(view_deltas, anchors), k, mirrored, size)
        expected = decode_boxes(deltas, anchors)
        torch.testing.assert_close(unview_anchors(boxes, k, mirrored, config, size), expected, atol=1e-3, rtol=0)
    # and one view alone is not invariant: the test above could not pass by accident
    single, _ = model(view_images(images, 1, False))
    assert (unview_anchors(single.sigmoid(), 1, False, config, size) - model(images)[0].sigmoid()).abs().max() > 1e-3


def test_no_tta_is_the_model_itself_and_detect_uses_the_views():
    model = tta_model()
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    for a, b in zip(average_views(model, images, model.config), model(images), strict=True):
        assert torch.equal(a, b)
    image = (torch.rand(3, 200, 300, generator=torch.Generator().manual_seed(4)) * 255).to(torch.uint8)
    plain, flipped = tta_model(score_thresh=0.0), tta_model(score_thresh=0.0, tta="flip")
    one, two = plain.detect([image])[0], flipped.detect([image])[0]
    assert len(one["boxes"]) > 0 and len(two["boxes"]) > 0 and not torch.equal(one["scores"], two["scores"])
    assert two["boxes"][:, 0::2].max() <= 300 and two["boxes"][:, 1::2].max() <= 200


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tta": "rot"}, "tta must be one of"),
        ({"tta": "flip", "anchor_offset": 0.0}, "cell-centred anchors"),
        ({"tta": "d4", "aspect_ratios": (1.0, 2.0)}, "lack some 1 / r"),
    ],
)
def test_tta_that_cannot_work_is_refused_when_the_model_is_built(overrides, message):
    with pytest.raises(ValueError, match=message):
        tta_model(**overrides)
    tta_model(**(overrides | {"tta": "none"}))  # the same detector without the views is fine


def test_tta_needs_grids_that_fit_the_image_exactly():
    model = tta_model(tta="flip")
    with pytest.raises(ValueError, match="every stride"):
        average_views(model, torch.rand(1, 3, 200, 256), model.config)
