"""retina.anchors against torchvision's AnchorGenerator with RetinaNet's settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from retina.anchors import (
    anchor_shapes,
    anchors_per_level,
    anchors_per_level_counts,
    generate_anchors,
    grid_sizes,
)
from retina.config import RetinaConfig

STRIDES = (8, 16, 32, 64, 128)


def torchvision_anchors(image_size: tuple[int, int], grids: list[tuple[int, int]]) -> torch.Tensor:
    """torchvision's RetinaNet anchors (as in `retinanet_resnet50_fpn`) for an image and feature grids."""
    anchor_sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    aspect_ratios = ((0.5, 1.0, 2.0),) * len(anchor_sizes)
    generator = AnchorGenerator(anchor_sizes, aspect_ratios)
    images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
    features = [torch.zeros(1, 1, h, w) for h, w in grids]
    (anchors,) = generator(images, features)
    return anchors


@pytest.mark.parametrize("image_size", [(128, 128), (256, 384), (640, 512), (384, 1280)])
def test_equal_to_torchvision_for_multiples_of_128(image_size):
    height, width = image_size
    grids = [(height // s, width // s) for s in STRIDES]
    ours = generate_anchors(RetinaConfig(), image_size)
    expected = torchvision_anchors(image_size, grids)
    assert ours.dtype == expected.dtype == torch.float32
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("image_size", [(200, 300), (333, 333), (130, 517)])
def test_equal_to_torchvision_with_its_strides_for_other_sizes(image_size):
    """torchvision derives each level's (stride_y, stride_x) as image_size // grid_size."""
    height, width = image_size
    config = RetinaConfig()
    grids = grid_sizes(image_size, config.strides)
    tv_strides = tuple((height // h, width // w) for h, w in grids)
    ours = torch.cat([level.reshape(-1, 4) for level in anchors_per_level(config, grids, tv_strides)])
    expected = torchvision_anchors(image_size, grids)
    assert torch.equal(ours, expected)
    # The derived strides are not the nominal ones here, so the default anchors differ from torchvision's; the
    # strides_from_grid setting derives them as torchvision does.
    assert tv_strides != tuple((s, s) for s in config.strides)
    assert not torch.equal(generate_anchors(config, image_size), expected)
    assert torch.equal(generate_anchors(config.replace(strides_from_grid=True), image_size), expected)


def test_scalar_strides_equal_pairs():
    config = RetinaConfig()
    grids = grid_sizes((256, 256), config.strides)
    scalar = anchors_per_level(config, grids, (7, 15, 30, 60, 100))
    pairs = anchors_per_level(config, grids, tuple((s, s) for s in (7, 15, 30, 60, 100)))
    for a, b in zip(scalar, pairs, strict=True):
        assert torch.equal(a, b)


def test_grid_sizes_follow_strided_convolutions():
    """ceil(size / stride), the sizes ResNet (conv 7x7/2, max pool 3x3/2, 3x3/2 convs) and P6, P7 produce."""
    for image_size in [(333, 517), (128, 256), (97, 130)]:
        x = torch.zeros(1, 1, *image_size)
        x = F.conv2d(x, torch.zeros(1, 1, 7, 7), stride=2, padding=3)  # conv1
        x = F.max_pool2d(x, 3, stride=2, padding=1)  # C2, stride 4
        shapes = []
        for _ in range(5):  # C3, C4, C5 (3x3 stride-2 convs), P6, P7 (3x3 stride-2 convs)
            x = F.conv2d(x, torch.zeros(1, 1, 3, 3), stride=2, padding=1)
            shapes.append(tuple(x.shape[-2:]))
        assert grid_sizes(image_size, STRIDES) == shapes


def test_layout_and_one_anchor_by_hand():
    config = RetinaConfig()
    image_size = (256, 384)
    levels = anchors_per_level(config, grid_sizes(image_size, config.strides))
    assert [tuple(level.shape) for level in levels] == [
        (32, 48, 9, 4),
        (16, 24, 9, 4),
        (8, 12, 9, 4),
        (4, 6, 9, 4),
        (2, 3, 9, 4),
    ]
    # P4 (stride 16, size 64), row i = 2, column j = 3, aspect ratio 2.0 (index 2), scale 2^(1/3) (index 1):
    # a = 2 * 3 + 1 = 7; size int(64 * 2^(1/3)) = 80; w = 80 / sqrt(2) = 56.57, h = 80 * sqrt(2) = 113.14;
    # rounded half sizes 28 and 57 around the centre (j * 16, i * 16) = (48, 32).
    expected = torch.tensor([48.0 - 28, 32.0 - 57, 48.0 + 28, 32.0 + 57])
    assert torch.equal(levels[1][2, 3, 7], expected)
    # The same anchor in the flattened [N, 4]: after all of P3, then (i * W + j) * A + a.
    flat = generate_anchors(config, image_size)
    assert torch.equal(flat[32 * 48 * 9 + (2 * 24 + 3) * 9 + 7], expected)
    # P3, location (0, 0), a = 4: ratio 1.0, scale 2^(1/3): a square of side int(32 * 2^(1/3)) = 40
    assert torch.equal(levels[0][0, 0, 4], torch.tensor([-20.0, -20.0, 20.0, 20.0]))
    # every anchor of level k, location (i, j) is centred on (j * stride, i * stride)
    for level, stride in zip(levels, config.strides, strict=True):
        h, w = level.shape[:2]
        centres = (level[..., :2] + level[..., 2:]) / 2  # [H, W, A, 2]
        ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
        # rounding may move a centre by at most half a pixel
        assert (centres[..., 0] - xs[..., None]).abs().max() <= 0.5
        assert (centres[..., 1] - ys[..., None]).abs().max() <= 0.5


def test_anchor_order_is_ratio_major():
    """a = ratio_index * len(scales) + scale_index: widths and heights of the 9 shapes of P3."""
    config = RetinaConfig(round_anchors=False)
    shapes = anchor_shapes(32, config.anchor_scales, config.aspect_ratios, round_anchors=False)
    wh = shapes[:, 2:] - shapes[:, :2]
    for r, ratio in enumerate(config.aspect_ratios):
        for s, scale in enumerate(config.anchor_scales):
            a = r * len(config.anchor_scales) + s
            side = 32 * scale
            expected = torch.tensor([side / math.sqrt(ratio), side * math.sqrt(ratio)], dtype=torch.float32)
            torch.testing.assert_close(wh[a], expected)


@pytest.mark.parametrize("image_size", [(256, 384), (512, 512)])
def test_total_count(image_size):
    config = RetinaConfig()
    grids = [(image_size[0] // s, image_size[1] // s) for s in STRIDES]
    n = 9 * sum(h * w for h, w in grids)
    assert generate_anchors(config, image_size).shape == (n, 4)
    counts = anchors_per_level_counts(config, image_size)
    assert counts == [9 * h * w for h, w in grids] and sum(counts) == n
    if image_size == (256, 384):
        assert n == 9 * (1536 + 384 + 96 + 24 + 6)


def test_cell_centre_offset_shifts_by_half_a_stride():
    image_size = (256, 384)
    corner = anchors_per_level(RetinaConfig(), grid_sizes(image_size, STRIDES))
    centre = anchors_per_level(RetinaConfig(anchor_offset=0.5), grid_sizes(image_size, STRIDES))
    for a, b, stride in zip(corner, centre, STRIDES, strict=True):
        assert torch.equal(b - a, torch.full_like(a, stride / 2))


def test_unrounded_anchors_have_exact_areas_and_ratios():
    config = RetinaConfig(round_anchors=False)
    levels = anchors_per_level(config, grid_sizes((256, 256), config.strides))
    for level, size in zip(levels, config.anchor_sizes, strict=True):
        wh = (level[..., 2:] - level[..., :2]).double()  # [H, W, A, 2]
        area = wh[..., 0] * wh[..., 1]
        ratio = wh[..., 1] / wh[..., 0]  # height / width
        for r, aspect in enumerate(config.aspect_ratios):
            for s, scale in enumerate(config.anchor_scales):
                a = r * 3 + s
                torch.testing.assert_close(
                    area[..., a], torch.full_like(area[..., a], (size * scale) ** 2), rtol=1e-5, atol=0
                )
                torch.testing.assert_close(ratio[..., a], torch.full_like(ratio[..., a], aspect), rtol=1e-5, atol=0)
    # while the default (rounded) sizes are the truncated ones: int(32 * 2^(2/3)) = 50, not 50.8
    rounded = anchor_shapes(32, config.anchor_scales, (1.0,), round_anchors=True)
    assert torch.equal(rounded[:, 2] - rounded[:, 0], torch.tensor([32.0, 40.0, 50.0]))


def test_mismatched_levels_raise():
    config = RetinaConfig()
    with pytest.raises(ValueError, match="need one of each per pyramid level"):
        anchors_per_level(config, [(4, 4)] * 4)
    with pytest.raises(ValueError, match="5 anchor sizes, 3 strides"):
        anchors_per_level(config, [(4, 4)] * 5, strides=(8, 16, 32))
