"""Anchors: the fixed boxes every prediction of RetinaNet is made relative to (paper Sec. 4, "Anchors").

Taught in notebooks/01_anchors.ipynb. Each pyramid level P_k (k = 3..7, stride 2^k) has one anchor
size (32..512 px); around it sit `len(scales) * len(aspect_ratios)` = A shapes (9 in the paper). At
every location (i, j) of the level's H_k x W_k grid the A shapes are shifted to (j, i) * stride.

Layout, the one the heads' outputs follow:
    per level:  [H_k, W_k, A, 4]      A ordered ratio-major: a = ratio_index * len(scales) + scale_index
    flattened:  [N, 4], N = sum_k H_k W_k A, level by level (P3 first)

With the default settings (centres at cell corners, integer sizes, rounded corners) the anchors equal
`torchvision.models.detection.anchor_utils.AnchorGenerator` with RetinaNet's sizes, box for box.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from retina.config import RetinaConfig


def anchor_shapes(
    size: float, scales: tuple[float, ...], aspect_ratios: tuple[float, ...], round_anchors: bool = True
) -> Tensor:
    """The A anchors of one level centred at (0, 0): `[A, 4]` xyxy, A = len(aspect_ratios) * len(scales).

    An anchor of scale s and aspect ratio r (= height / width) has the area of a (size * s)^2 square:
    width = size * s / sqrt(r), height = size * s * sqrt(r).
    """
    sizes = [int(size * s) if round_anchors else size * s for s in scales]
    sizes = torch.tensor(sizes, dtype=torch.float32)
    h_ratios = torch.sqrt(torch.tensor(aspect_ratios, dtype=torch.float32))
    w_ratios = 1 / h_ratios
    widths = (w_ratios[:, None] * sizes[None, :]).reshape(-1)  # [A], ratio-major
    heights = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    shapes = torch.stack((-widths, -heights, widths, heights), dim=1) / 2
    return shapes.round() if round_anchors else shapes


def grid_sizes(image_size: tuple[int, int], strides: tuple[int, ...]) -> list[tuple[int, int]]:
    """(H_k, W_k) of each level for an `(height, width)` input: ceil(size / stride), as ResNet's strided
    convolutions (kernel 3, padding 1) produce."""
    height, width = image_size
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def shift_anchors(
    shapes: Tensor, grid_size: tuple[int, int], stride: float | tuple[float, float], offset: float = 0.0
) -> Tensor:
    """Place `shapes[A, 4]` at every location of a `grid_size` grid: -> `[H, W, A, 4]`.

    `stride` is one number or a `(stride_y, stride_x)` pair."""
    height, width = grid_size
    stride_y, stride_x = stride if isinstance(stride, (tuple, list)) else (stride, stride)
    ys = (torch.arange(height, dtype=torch.float32) + offset) * stride_y  # [H]
    xs = (torch.arange(width, dtype=torch.float32) + offset) * stride_x  # [W]
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    centres = torch.stack((x, y, x, y), dim=-1)  # [H, W, 4]
    return centres[:, :, None, :] + shapes[None, None, :, :]


def anchors_per_level(
    config: RetinaConfig,
    sizes: list[tuple[int, int]],
    strides: tuple[float | tuple[float, float], ...] | None = None,
) -> list[Tensor]:
    """The anchors of every level for feature grids of `sizes`: a list of `[H_k, W_k, A, 4]`.

    `strides` defaults to `config.strides`; pass others to mimic a generator that derives them from
    the image size (as torchvision does for sizes that are not multiples of 128: there a level's
    stride is a `(stride_y, stride_x)` pair, `(height // H_k, width // W_k)`).
    """
    strides = config.strides if strides is None else strides
    if not len(config.anchor_sizes) == len(strides) == len(sizes):
        raise ValueError(
            f"{len(config.anchor_sizes)} anchor sizes, {len(strides)} strides and {len(sizes)} grids: "
            "need one of each per pyramid level"
        )
    return [
        shift_anchors(
            anchor_shapes(size, config.anchor_scales, config.aspect_ratios, config.round_anchors),
            grid,
            stride,
            config.anchor_offset,
        )
        for size, grid, stride in zip(config.anchor_sizes, sizes, strides, strict=True)
    ]


def generate_anchors(config: RetinaConfig, image_size: tuple[int, int]) -> Tensor:
    """All anchors for an `(height, width)` input, flattened level-major: `[N, 4]` xyxy.

    With `config.strides_from_grid`, each level's stride is `(height // H_k, width // W_k)`, as torchvision's
    generator derives it (its v1 and v2 COCO weights were trained with those anchors)."""
    grids = grid_sizes(image_size, config.strides)
    strides = tuple((image_size[0] // h, image_size[1] // w) for h, w in grids) if config.strides_from_grid else None
    levels = anchors_per_level(config, grids, strides)
    return torch.cat([level.reshape(-1, 4) for level in levels])


def anchors_per_level_counts(config: RetinaConfig, image_size: tuple[int, int]) -> list[int]:
    """N_k = H_k * W_k * A for each level: how to split a flattened `[..., N, ...]` tensor by level."""
    return [h * w * config.num_anchors for h, w in grid_sizes(image_size, config.strides)]
