"""retina.postprocess against torchvision: the teaching NMS, and the batched detection path."""

import pytest
import torch
import torchvision
from torchvision.models.detection.retinanet import retinanet_resnet50_fpn

from retina import RetinaConfig
from retina.anchors import anchors_per_level_counts, generate_anchors
from retina.postprocess import batched_nms, grouped_nms, nms, postprocess_detections


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
