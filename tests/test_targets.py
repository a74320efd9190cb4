"""retina.targets against torchvision's Matcher, BoxCoder and AnchorGenerator, image by image."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from retina.anchors import anchors_per_level, generate_anchors, grid_sizes
from retina.config import IMAGENET_MEAN, RetinaConfig
from retina.targets import (
    BACKGROUND,
    IGNORE,
    AnchorGrid,
    DetectionCollate,
    anchor_grid,
    encode_targets,
    match_anchors,
    pad_targets,
    split_levels,
)

IMAGE = (256, 256)


@pytest.fixture(scope="module")
def anchors() -> torch.Tensor:
    return generate_anchors(RetinaConfig(), IMAGE)


@pytest.fixture(scope="module")
def grid(anchors) -> AnchorGrid:
    return anchor_grid(anchors, grid_sizes(IMAGE, RetinaConfig().strides))


@pytest.fixture(params=["dense", "grid"])
def matchable(request, anchors, grid):
    """The anchors as match_anchors takes them: `[N, 4]` (every anchor against every box) or their AnchorGrid."""
    return anchors if request.param == "dense" else grid


def reference_match(gt: torch.Tensor, anchors: torch.Tensor, low_quality: bool = True) -> torch.Tensor:
    """torchvision's Matcher on one image; an image without boxes has only background anchors."""
    if len(gt) == 0:
        return torch.full((len(anchors),), -1, dtype=torch.long)
    return Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)(torchvision.ops.box_iou(gt, anchors))


def batch_of_boxes(make_boxes) -> list[torch.Tensor]:
    """Four images with 5, 0, 12 and 2 boxes: large, small (low-quality only), tied and in-between boxes."""
    tie = torch.tensor([[39.0, 35.0, 49.0, 45.0]])  # 10 px, centred between two P3 locations (40 and 48)
    between = torch.tensor([[100.0, 100.0, 116.0, 180.0]])  # best anchor IoU 0.459: ignored without low quality
    return [
        make_boxes(5, IMAGE, min_size=20.0, max_size=200.0),
        torch.zeros(0, 4),
        torch.cat((make_boxes(9, IMAGE, min_size=4.0, max_size=120.0), tie, make_boxes(2, IMAGE, max_size=12.0))),
        torch.cat((make_boxes(1, IMAGE, min_size=60.0, max_size=100.0), between)),
    ]


@pytest.mark.parametrize("low_quality", [True, False])
def test_match_equals_torchvision_matcher_per_image(anchors, matchable, make_boxes, low_quality):
    boxes = batch_of_boxes(make_boxes)
    targets = [{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long)} for b in boxes]
    gt, _, valid, ignore = pad_targets(targets)
    assert gt.shape == (4, 12, 4) and valid.sum(1).tolist() == [5, 0, 12, 2]
    matched = match_anchors(matchable, gt, valid, ignore, low_quality_matches=low_quality)
    assert matched.shape == (4, len(anchors)) and matched.dtype == torch.long
    for b, image_boxes in enumerate(boxes):
        expected = reference_match(image_boxes, anchors, low_quality)
        assert torch.equal(matched[b], expected), f"image {b}"
    # the test exercises every fate of an anchor
    assert {BACKGROUND, IGNORE} < set(matched.unique().tolist())
    assert (matched[1] == BACKGROUND).all()
    # Padding is ignored because it is flagged, not because its zeros are degenerate: garbage rows that
    # are not valid change nothing.
    garbage = gt.clone()
    garbage[~valid] = torch.tensor([30.0, 30.0, 90.0, 90.0])
    assert torch.equal(match_anchors(matchable, garbage, valid, ignore, low_quality_matches=low_quality), matched)


def test_low_quality_matches_make_the_best_anchors_foreground(anchors, make_boxes):
    boxes = batch_of_boxes(make_boxes)
    gt, _, valid, ignore = pad_targets([{"boxes": b, "labels": torch.zeros(len(b))} for b in boxes])
    with_lq = match_anchors(anchors, gt, valid, ignore, low_quality_matches=True)
    without = match_anchors(anchors, gt, valid, ignore, low_quality_matches=False)
    changed = with_lq != without
    assert changed.any()
    assert (with_lq[changed] >= 0).all()  # only ever adds foreground
    assert {BACKGROUND, IGNORE} <= set(without[changed].tolist())  # below 0.4 and between 0.4 and 0.5
    # every valid box has at least one anchor with low-quality matching
    for b in range(len(boxes)):
        for g in range(int(valid[b].sum())):
            assert (with_lq[b] == g).any() or _has_better_box(gt[b], anchors, g)
    # The 10 px box of image 2 (index 9) lies inside 14 P3 anchors of area 46 x 22 (ratios 0.5 and 2, scale 1):
    # 4 wide ones (centres x = 32..56, y = 40) and 10 tall ones (x = 40, 48; y = 24..56). All tie at
    # IoU 100 / 1012 and all of them turn foreground, each matched to its own best box (as in torchvision):
    # box 9 for all but one, which overlaps another box more.
    iou = torchvision.ops.box_iou(gt[2, 9:10], anchors)[0]
    best = (iou == iou.max()).nonzero()[:, 0]
    assert len(best) == 14 and torch.allclose(iou[best], torch.tensor(100.0 / 1012))
    own_best = torchvision.ops.box_iou(gt[2], anchors[best]).argmax(0)
    assert torch.equal(with_lq[2, best], own_best) and (own_best == 9).sum() == 13
    assert (without[2, best] == BACKGROUND).all()


def _has_better_box(boxes, anchors, g):
    """A box can lose all its best anchors to boxes with a higher IoU with them (as in torchvision)."""
    iou = torchvision.ops.box_iou(boxes, anchors)
    best = iou[g] == iou[g].max()
    return bool((iou[:, best].argmax(0) != g).all())


def test_batch_without_any_box_is_background(anchors):
    gt, labels, valid, ignore = pad_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}] * 3)
    assert gt.shape == (3, 0, 4)
    matched = match_anchors(anchors, gt, valid, ignore)
    assert matched.shape == (3, len(anchors)) and (matched == BACKGROUND).all()
    cls_targets, box_targets = encode_targets(anchors, gt, labels, matched)
    assert (cls_targets == BACKGROUND).all() and box_targets.shape == (3, len(anchors), 4)
    assert (box_targets == 0).all()


def test_degenerate_boxes_never_match(anchors, matchable, make_boxes):
    degenerate = torch.tensor([[50.0, 50.0, 50.0, 90.0], [10.0, 80.0, 70.0, 80.0], [30.0, 30.0, 20.0, 40.0]])
    real = make_boxes(3, IMAGE, min_size=30.0)
    targets = [
        {"boxes": degenerate, "labels": torch.tensor([0, 1, 2])},
        {"boxes": torch.cat((degenerate[:1], real)), "labels": torch.tensor([0, 1, 1, 1])},
    ]
    gt, _, valid, ignore = pad_targets(targets)
    assert valid.tolist() == [[False, False, False, False], [False, True, True, True]]
    matched = match_anchors(matchable, gt, valid, ignore)
    assert (matched[0] == BACKGROUND).all()
    assert torch.equal(matched[1], reference_match(real, anchors) + (reference_match(real, anchors) >= 0).long())
    # Even when flagged valid, a box that overlaps no anchor (IoU 0 everywhere) gets no "best" anchors:
    # without the guard every anchor would tie at IoU 0 and turn foreground, as torchvision's Matcher does.
    far = torch.tensor([[[5000.0, 5000.0, 5010.0, 5010.0]]])
    for box in (degenerate[None, :1], far):
        out = match_anchors(matchable, box, torch.ones(1, 1, dtype=torch.bool))
        assert (out == BACKGROUND).all()
        assert (reference_match(box[0], anchors) == 0).all()  # the behaviour the guard avoids


def reference_match_with_ignore(boxes, ignore, anchors, low_quality=True):
    """Matcher on the boxes that are not ignored (indices mapped back to the image's own box order); then
    background anchors with IoU >= 0.4 with an ignored box become IGNORE."""
    objects = (~ignore).nonzero()[:, 0]
    matched = reference_match(boxes[objects], anchors, low_quality)
    if len(objects):
        matched = torch.where(matched >= 0, objects[matched.clamp(min=0)], matched)
    if ignore.any():
        crowd_iou = torchvision.ops.box_iou(boxes[ignore], anchors).max(0).values
        matched = torch.where((matched == -1) & (crowd_iou >= 0.4), torch.full_like(matched, -2), matched)
    return matched


def test_ignore_boxes(anchors, matchable, make_boxes):
    objects = make_boxes(4, IMAGE, min_size=30.0, max_size=150.0)
    crowds = torch.cat((objects[:1] + torch.tensor([6.0, -4.0, 6.0, -4.0]), make_boxes(2, IMAGE, min_size=40.0)))
    # image 0: objects and crowds interleaved; image 1: only a crowd box
    order = torch.tensor([0, 4, 1, 2, 5, 3, 6])
    boxes = torch.cat((objects, crowds))[order]
    is_crowd = order >= 4
    targets = [
        {"boxes": boxes, "labels": torch.arange(7) % 3, "ignore": is_crowd},
        {"boxes": crowds[1:2], "labels": torch.tensor([1]), "ignore": torch.tensor([True])},
    ]
    gt, _, valid, ignore = pad_targets(targets)
    assert ignore.tolist() == [is_crowd.tolist(), [True] + [False] * 6]
    matched = match_anchors(matchable, gt, valid, ignore)

    assert torch.equal(matched[0], reference_match_with_ignore(boxes, is_crowd, anchors))
    assert set(matched[0][matched[0] >= 0].tolist()) == set((~is_crowd).nonzero()[:, 0].tolist())  # no crowd
    plain = reference_match(objects, anchors)  # the matching if the crowds were not there
    crowd_iou = torchvision.ops.box_iou(crowds, anchors).max(0).values
    assert ((plain == -1) & (matched[0] == IGNORE)).any()  # background turned ignore near crowds
    kept = (plain >= 0) & (crowd_iou >= 0.4)  # foreground anchors that overlap a crowd keep their box
    assert kept.any() and (matched[0][kept] >= 0).all()
    assert torch.equal(matched[0] >= 0, plain >= 0)  # crowds neither add nor remove foreground

    # image 1: a crowd alone makes no foreground, even for anchors it fits well, and ignores its neighbours
    assert torch.equal(matched[1], reference_match_with_ignore(crowds[1:2], torch.tensor([True]), anchors))
    crowd_iou = torchvision.ops.box_iou(crowds[1:2], anchors)[0]
    assert (crowd_iou >= 0.5).any() and (matched[1][crowd_iou >= 0.5] == IGNORE).all()
    assert (matched[1] >= 0).sum() == 0 and (matched[1] == IGNORE).sum() == (crowd_iou >= 0.4).sum()


def test_thresholds_are_inclusive_as_in_torchvision(anchors, matchable):
    """IoU exactly 0.5 is foreground and exactly 0.4 is ignored (Matcher: < 0.4 background, >= 0.5 foreground)."""
    square = anchors[3]  # P3 location (0, 0), ratio 1, scale 1: the 32 px square around (0, 0)
    assert torch.equal(square, torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    half = torch.tensor([[-16.0, -16.0, 16.0, 48.0]])  # 32 x 64 around the square: IoU 1024 / 2048
    two_fifths = torch.tensor([[-16.0, -16.0, 16.0, 64.0]])  # 32 x 80: IoU 1024 / 2560
    for box, iou, fate in ((half, 0.5, 0), (two_fifths, 0.4, IGNORE)):
        assert torchvision.ops.box_iou(box, square[None])[0, 0] == torch.tensor(iou)  # exactly, in float32
        matched = match_anchors(matchable, box[None], torch.ones(1, 1, dtype=torch.bool), low_quality_matches=False)
        assert matched[0, 3] == fate
        assert torch.equal(matched[0], reference_match(box, anchors, low_quality=False))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_targets_by_hand(anchors, make_boxes, gen, weights):
    boxes = batch_of_boxes(make_boxes)
    labels = [torch.randint(0, 80, (len(b),), generator=gen) for b in boxes]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels, strict=True)]
    gt, gt_labels, valid, ignore = pad_targets(targets)
    matched = match_anchors(anchors, gt, valid, ignore)
    cls_targets, box_targets = encode_targets(anchors, gt, gt_labels, matched, weights)
    assert cls_targets.shape == matched.shape and box_targets.shape == (*matched.shape, 4)
    assert torch.isfinite(box_targets).all()
    coder = BoxCoder(weights)
    for b, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        m = reference_match(image_boxes, anchors)
        fg = m >= 0
        expected_cls = torch.full_like(m, BACKGROUND)
        expected_cls[m == -2] = IGNORE
        expected_cls[fg] = image_labels[m[fg]]
        expected_box = torch.zeros(len(anchors), 4)
        if fg.any():
            expected_box[fg] = coder.encode_single(image_boxes[m[fg]], anchors[fg])
        assert torch.equal(cls_targets[b], expected_cls)
        torch.testing.assert_close(box_targets[b], expected_box, rtol=1e-6, atol=1e-6)
    assert (cls_targets >= 0).sum() > 20 and (box_targets.abs().sum(-1) > 0).sum() > 20


# ---------------------------------------------------------------- the grid fast path

# Anchor settings the fast path must handle: the paper's; torchvision's strides from the grid (an image size that is
# not a multiple of 128); cell-centred anchors of the cpu preset (3 square shapes); unrounded anchors; one shape.
GRID_CONFIGS = {
    "paper": (RetinaConfig(), (256, 384)),
    "strides from grid": (RetinaConfig(strides_from_grid=True, size_divisible=32), (224, 352)),
    "cell centres": (
        RetinaConfig(anchor_sizes=(16, 32, 64, 128, 256), aspect_ratios=(1.0,), anchor_offset=0.5),
        (256, 256),
    ),
    "unrounded": (RetinaConfig(round_anchors=False, anchor_offset=0.5), (128, 256)),
    "one shape": (RetinaConfig(anchor_scales=(1.0,), aspect_ratios=(1.0,)), (128, 128)),
}


def adversarial_images(gen, anchors: torch.Tensor, image_size: tuple[int, int]) -> list[dict]:
    """Images that stress the sub-grids and the tie-breaks, as targets ({"boxes", "labels", "ignore"})."""
    height, width = image_size

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    def boxes(n, low, high):  # n boxes of side low..high px, anywhere in the image (edges included)
        wh = low + (high - low) * rand(n, 2)
        xy = rand(n, 2) * torch.tensor([width, height]) - wh / 2
        return torch.cat((xy, xy + wh), dim=1).float()

    picked = anchors[torch.randint(len(anchors), (40,), generator=gen)]
    half_step = torch.tensor([4.0, 0.0, 4.0, 0.0])
    grid_aligned = torch.cat((picked[:20], picked[20:] + half_step))  # IoU 1, and ties between two anchors
    huge = torch.tensor([[-50.0, -80.0, width + 90.0, height + 70.0], [0.0, 0.0, width, height]])
    outside = torch.tensor([[-60.0, -60.0, -20.0, -20.0], [width + 10.0, 10.0, width + 90.0, 50.0]])
    images = [
        boxes(100, 4.0, 200.0),  # many boxes
        boxes(5, 0.5, 3.0),  # tiny boxes: their best IoU is far below 0.4
        torch.zeros(0, 4),  # an empty image
        torch.cat((grid_aligned, grid_aligned[:10])),  # duplicates: every tie between boxes
        torch.cat((huge, boxes(4, 30.0, 120.0), huge[:1])),  # larger than the image, and a duplicate of one
        torch.cat((outside, boxes(3, 10.0, 60.0))),  # boxes with no anchor inside the image near them
        boxes(30, 20.0, 2 * max(height, width)),  # boxes up to twice the image
    ]
    targets = []
    for b in images:
        ignore = rand(len(b)) < 0.2  # crowd boxes among them
        targets.append({"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long), "ignore": ignore})
    targets.append({**targets[0], "ignore": torch.zeros(len(images[0]), dtype=torch.bool)})  # no crowds
    return targets


@pytest.mark.parametrize("name", GRID_CONFIGS)
@pytest.mark.parametrize("low_quality", [True, False])
def test_grid_matching_equals_dense_and_torchvision_on_adversarial_images(gen, name, low_quality):
    config, image_size = GRID_CONFIGS[name]
    anchors = generate_anchors(config, image_size)
    grid = anchor_grid(anchors, grid_sizes(image_size, config.strides))
    targets = adversarial_images(gen, anchors, image_size)
    gt, _, valid, ignore = pad_targets(targets)
    for fg_iou, bg_iou in ((0.5, 0.4), (0.5, 0.5), (0.6, 0.05)):
        args = (gt, valid, ignore, fg_iou, bg_iou, low_quality)
        dense, fast = match_anchors(anchors, *args), match_anchors(grid, *args)
        assert torch.equal(fast, dense), f"{name}, thresholds {fg_iou} / {bg_iou}"
        if (fg_iou, bg_iou) != (0.5, 0.4):
            continue
        for b, target in enumerate(targets):
            # torchvision's Matcher makes every anchor of a box that overlaps none foreground; we make none.
            overlapping = torchvision.ops.box_iou(target["boxes"], anchors).amax(dim=1) > 0
            if low_quality and not overlapping.all():
                continue
            expected = reference_match_with_ignore(target["boxes"], target["ignore"], anchors, low_quality)
            assert torch.equal(fast[b], expected), f"{name}, image {b}"
    # every fate occurs, and low-quality matches below 0.4 (the tiny boxes) among them
    assert {BACKGROUND, IGNORE} < set(fast.unique().tolist())
    assert (fast[1] >= 0).any() == low_quality


def test_grid_matching_ties_and_duplicates_as_torchvision(grid, anchors, gen):
    """Boxes equal to anchors, shifted half a step between two, and each twice: the first of tied boxes wins
    and every tied best anchor is a low-quality match, as in torchvision's Matcher."""
    picked = anchors[torch.randint(len(anchors), (12,), generator=gen)]
    boxes = torch.cat((picked, picked + torch.tensor([4.0, 4.0, 4.0, 4.0])))
    boxes = torch.cat((boxes, boxes.flip(0)))  # each box twice: the lower slot keeps every anchor
    gt, _, valid, ignore = pad_targets([{"boxes": boxes, "labels": torch.zeros(len(boxes))}])
    matched = match_anchors(grid, gt, valid, ignore)
    assert torch.equal(matched[0], reference_match(boxes, anchors))
    assert set(matched[0][matched[0] >= 0].tolist()) <= set(range(len(boxes) // 2))


def test_grid_matching_with_thresholds_at_zero_falls_back_to_dense(grid, anchors, make_boxes):
    boxes = make_boxes(6)
    ignore = torch.tensor([[False, True, False, False, True, False]])
    gt, _, valid, _ = pad_targets([{"boxes": boxes, "labels": torch.zeros(6)}])
    for fg_iou, bg_iou in ((0.5, 0.0), (0.0, 0.0)):
        args = (gt, valid, ignore, fg_iou, bg_iou)
        assert torch.equal(match_anchors(grid, *args), match_anchors(anchors, *args))


def test_anchor_grid_describes_the_anchors(grid, anchors):
    config = RetinaConfig()
    assert grid.num_shapes == 9 and len(grid.first) == 5 * 9 and torch.equal(grid.anchors, anchors)
    levels = anchors_per_level(config, grid_sizes(IMAGE, config.strides))
    for k, level in enumerate(levels):  # [H, W, A, 4]
        h, w = level.shape[:2]
        for a in range(9):
            s = k * 9 + a
            i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            index = grid.first[s] + i * grid.row_step[s] + j * grid.num_shapes
            assert torch.equal(anchors[index], level[:, :, a])
            assert torch.equal(grid.centre_x[s, :w], ((level[0, :, a, 0] + level[0, :, a, 2]) / 2).double())
            assert torch.isinf(grid.centre_x[s, w:]).all()
    with pytest.raises(ValueError, match="do not fill grids"):
        anchor_grid(anchors[:-1], grid_sizes(IMAGE, config.strides))
    with pytest.raises(ValueError, match="not a grid"):
        anchor_grid(anchors.flip(0), grid_sizes(IMAGE, config.strides))


# ---------------------------------------------------------------- collate


def _collate_batch(gen):
    small = torch.rand(3, 100, 90, generator=gen)  # smaller than 128 px
    as_uint8 = (torch.rand(3, 300, 200, generator=gen) * 255).to(torch.uint8)
    empty = torch.rand(3, 150, 257, generator=gen)  # no boxes; wider than 256 px
    return [
        (
            small,
            {"boxes": torch.tensor([[10.0, 10.0, 60.0, 80.0], [0.0, 0.0, 5.0, 5.0]]), "labels": torch.tensor([1, 2])},
        ),
        (
            as_uint8,
            {
                "boxes": torch.tensor(
                    [[20.0, 30.0, 180.0, 250.0], [50.0, 60.0, 90.0, 110.0], [0.0, 200.0, 64.0, 300.0]]
                ),
                "labels": torch.tensor([0, 2, 1]),
                "ignore": torch.tensor([False, False, True]),  # e.g. a crowd
                "image_id": 42,
            },
        ),
        (empty, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}),
    ]


def test_detection_collate(gen):
    config = RetinaConfig(num_classes=3)
    batch = _collate_batch(gen)
    out = DetectionCollate(config)(batch)
    images = out["images"]
    assert images.shape == (3, 3, 384, 384) and images.dtype == torch.float32
    assert images.shape[-1] % 128 == 0 and images.shape[-2] % 128 == 0
    assert out["image_sizes"].tolist() == [[100, 90], [300, 200], [150, 257]]
    assert torch.equal(images[0, :, :100, :90], batch[0][0])
    assert torch.equal(images[1, :, :300, :200], batch[1][0].float() / 255)
    assert images[1].max() <= 1.0 and images[1].max() > 0.9
    assert torch.equal(images[2, :, :150, :257], batch[2][0])
    padding = torch.ones(3, 384, 384, dtype=torch.bool)
    for b, (h, w) in enumerate(out["image_sizes"].tolist()):
        mask = padding.clone()
        mask[:, :h, :w] = False
        assert (images[b][mask] == 0).all()
    assert out["targets"] == [t for _, t in batch]

    # Independent reference: torchvision's anchors for the padded size, Matcher and BoxCoder per image.
    generator = AnchorGenerator(
        tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512]),
        ((0.5, 1.0, 2.0),) * 5,
    )
    features = [torch.zeros(1, 1, 384 // s, 384 // s) for s in config.strides]
    image_list = ImageList(images, [tuple(s) for s in out["image_sizes"].tolist()])
    tv_anchors = generator(image_list, features)[0]
    n = len(tv_anchors)
    assert out["cls_targets"].shape == (3, n) and out["box_targets"].shape == (3, n, 4)
    for b, (_, target) in enumerate(batch):
        ignore = target.get("ignore", torch.zeros(len(target["boxes"]), dtype=torch.bool))
        m = reference_match_with_ignore(target["boxes"], ignore, tv_anchors)
        fg = m >= 0
        expected = m.clone()
        expected[fg] = target["labels"][m[fg]]
        assert torch.equal(out["cls_targets"][b], expected), f"image {b}"
        expected_box = torch.zeros(n, 4)
        if fg.any():
            expected_box[fg] = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(target["boxes"][m[fg]], tv_anchors[fg])
        torch.testing.assert_close(out["box_targets"][b], expected_box, rtol=1e-6, atol=1e-6)
    assert (out["cls_targets"][2] == BACKGROUND).all() and (out["box_targets"][2] == 0).all()
    assert set(out["cls_targets"][1].unique().tolist()) == {IGNORE, BACKGROUND, 0, 2}  # box 2 (label 1) ignored
    without_ignore = reference_match(batch[1][1]["boxes"], tv_anchors)
    assert ((without_ignore == 2) & (out["cls_targets"][1] == IGNORE)).any()


def test_detection_collate_pads_with_the_mean_colour_when_asked(gen):
    batch = _collate_batch(gen)
    images = DetectionCollate(RetinaConfig(num_classes=3, pad_with_mean=True))(batch)["images"]
    assert torch.equal(images[0, :, :100, :90], batch[0][0])
    # the bottom-right padding holds ImageNet's mean colour, which normalisation turns into 0, as in torchvision
    assert torch.equal(images[0, :, 100:, :], torch.tensor(IMAGENET_MEAN)[:, None, None].expand(3, 284, 384))
    assert torch.equal(images[0, :, :, 90:], torch.tensor(IMAGENET_MEAN)[:, None, None].expand(3, 384, 294))


@pytest.mark.parametrize(
    "change,error,message",
    [
        (
            lambda b: (torch.rand(1, 64, 64), b[1]),
            ValueError,
            r"image 42: expected an RGB image of shape \[3, H, W\], got \[1, 64, 64\]",
        ),
        (
            lambda b: (torch.rand(64, 64, 3), b[1]),
            ValueError,
            r"expected an RGB image of shape \[3, H, W\], got \[64, 64, 3\]",
        ),
        (lambda b: (b[0].numpy(), b[1]), TypeError, r"image 42: expected a torch.Tensor \[3, H, W\], got ndarray"),
        (lambda b: (b[0].int(), b[1]), TypeError, r"expected float values in \[0, 1\] or uint8, got torch.int32"),
        (
            lambda b: (
                b[0],
                {
                    **b[1],
                    "boxes": torch.tensor([[0.0, 0.0, 10.0, float("nan")], [1.0, 1.0, 5.0, 5.0], [0.0, 0.0, 1.0, 1.0]]),
                },
            ),
            ValueError,
            r"image 42: 'boxes' contain NaN or inf",
        ),
        (
            lambda b: (b[0], {**b[1], "labels": torch.tensor([0, 3, 1])}),
            ValueError,
            r"image 42: labels must be in 0\.\.2, got \[0, 1, 3\]",
        ),
        (lambda b: (b[0], {**b[1], "labels": torch.tensor([0, -1, 1])}), ValueError, r"labels must be in 0\.\.2"),
        (lambda b: (b[0], {**b[1], "labels": torch.tensor([0, 1])}), ValueError, r"image 42: 3 boxes but 2 labels"),
        (
            lambda b: (b[0], {**b[1], "boxes": torch.zeros(3, 5)}),
            ValueError,
            r"'boxes' must be \[n, 4\] xyxy, got shape \[3, 5\]",
        ),
        (lambda b: (b[0], {"boxes": b[1]["boxes"]}), ValueError, r"a target needs 'boxes' \[n, 4\] and 'labels' \[n\]"),
    ],
)
def test_detection_collate_errors(gen, change, error, message):
    batch = _collate_batch(gen)
    batch[1] = change(batch[1])
    if "image_id" not in batch[1][1]:
        batch[1][1]["image_id"] = 42
    with pytest.raises(error, match=message):
        DetectionCollate(RetinaConfig(num_classes=3))(batch)


def test_detection_collate_empty_batch():
    with pytest.raises(ValueError, match="cannot collate an empty batch"):
        DetectionCollate(RetinaConfig())([])


# ---------------------------------------------------------------- levels


def test_split_levels_matches_anchor_layout():
    config = RetinaConfig()
    image_size = (256, 384)
    anchors = generate_anchors(config, image_size)
    levels = anchors_per_level(config, grid_sizes(image_size, config.strides))
    batch = torch.stack((anchors, anchors + 1))  # [B, N, 4]
    split = split_levels(batch, config, image_size)
    assert len(split) == 5
    for part, level in zip(split, levels, strict=True):
        assert part.shape == (2, *level.shape)
        assert torch.equal(part[0], level) and torch.equal(part[1], level + 1)
    # a per-anchor index [B, N] -> [B, H_k, W_k, A]: anchor (i, j, a) of level k is offset_k + (i W_k + j) A + a
    index = torch.arange(len(anchors)).expand(3, -1)
    offset = 0
    for part, (h, w) in zip(
        split_levels(index, config, image_size), grid_sizes(image_size, config.strides), strict=True
    ):
        assert part.shape == (3, h, w, 9)
        i, j, a = torch.meshgrid(torch.arange(h), torch.arange(w), torch.arange(9), indexing="ij")
        assert torch.equal(part[2], offset + (i * w + j) * 9 + a)
        offset += h * w * 9
    assert offset == len(anchors)


@pytest.mark.parametrize("low_quality", [True, False])
def test_two_boxes_tied_exactly_for_an_anchor_go_to_the_first_as_in_torchvision(anchors, matchable, low_quality):
    """A 32 x 32 anchor grown 8 px down is one box, grown 8 px up another: both have IoU 1024 / 1280 = 0.8 with it,
    exactly. Of tied boxes the first (the lower slot) keeps the anchor, as in torchvision's Matcher, whose
    `max(dim=0)` returns the first maximum; the anchor is also both boxes' best, so the low-quality rule meets
    the same tie."""
    size = anchors[:, 2:] - anchors[:, :2]
    square = (size == 32.0).all(dim=1) & (anchors[:, :2] > 80.0).all(dim=1)
    k = int(square.nonzero()[0])
    grown_down, grown_up = torch.tensor([0.0, 0.0, 0.0, 8.0]), torch.tensor([0.0, -8.0, 0.0, 0.0])
    boxes = torch.stack((anchors[k] + grown_down, anchors[k] + grown_up))
    iou = torchvision.ops.box_iou(boxes, anchors)  # [2, N]
    assert iou[0, k] == iou[1, k] == 0.8 and (iou[:, k] == iou.amax(dim=1)).all()
    gt, _, valid, ignore = pad_targets([{"boxes": boxes, "labels": torch.zeros(2, dtype=torch.long)}])
    matched = match_anchors(matchable, gt, valid, ignore, low_quality_matches=low_quality)[0]
    assert matched[k] == 0
    assert torch.equal(matched, reference_match(boxes, anchors, low_quality))
