"""Figures of 01_anchors.ipynb and 02_target_encoding.ipynb: the anchors of a config on an image, the grids of
anchor centres per level, the anchor tuner's recall picture (`retina.widgets.anchor_tuner`), and the fate of every
anchor under `retina.targets.match_anchors`."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib import patches
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from retina.anchors import anchor_shapes, anchors_per_level, generate_anchors, grid_sizes
from retina.config import RetinaConfig
from retina.figures.common import LEVEL_COLORS, LEVEL_NAMES, fit_boxes, image_hwc, plot_boxes, show_image
from retina.targets import BACKGROUND, IGNORE, match_anchors


def anchors_figure(config: RetinaConfig, image: Tensor | np.ndarray, level: int = 1) -> Figure:
    """Left: the anchors of one scale (every aspect ratio) of pyramid level `level` at the first and last
    locations of its grid, i.e. at two corners of the image. Right: the square anchors at the top-left
    location across every size (levels x scales). Shown in 01_anchors.ipynb."""
    height, width = image_hwc(image).shape[:2]
    grids = grid_sizes((height, width), config.strides)
    levels = anchors_per_level(config, grids)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5), dpi=80)

    ratios = len(config.aspect_ratios)
    scales = len(config.anchor_scales)
    corner = levels[level]  # [H_k, W_k, A, 4]
    ratio_colors = plt.cm.viridis(np.linspace(0.1, 0.9, ratios))
    one_scale = corner[..., ::scales, :]  # [H_k, W_k, ratios, 4]: scale index 0 of every ratio
    show_image(left, image)
    for where in (one_scale[0, 0], one_scale[-1, -1]):
        plot_boxes(left, where, color=ratio_colors, linewidth=2)
    fit_boxes(left, torch.cat((one_scale[0, 0], one_scale[-1, -1])), height, width)
    left.legend(
        handles=[
            patches.Patch(color=c, label=f"h/w = {r:g}")
            for c, r in zip(ratio_colors, config.aspect_ratios, strict=True)
        ],
        loc="center",
        fontsize=8,
    )
    size = config.anchor_sizes[level] * config.anchor_scales[0]
    left.set_title(f"{LEVEL_NAMES[level]} (stride {config.strides[level]}), size {size:g}: two corners")

    square = min(range(ratios), key=lambda r: abs(math.log(config.aspect_ratios[r])))  # the ratio nearest 1
    shapes = [  # [scales, 4] each, at the top-left location
        anchor_shapes(s, config.anchor_scales, config.aspect_ratios, config.round_anchors)[square * scales :][:scales]
        + config.anchor_offset * stride
        for s, stride in zip(config.anchor_sizes, config.strides, strict=True)
    ]
    show_image(right, image)
    for k, level_shapes in enumerate(shapes):
        plot_boxes(right, level_shapes, color=LEVEL_COLORS[k % len(LEVEL_COLORS)], linewidth=1.5)
    fit_boxes(right, torch.cat(shapes), height, width)
    right.legend(
        handles=[
            patches.Patch(color=LEVEL_COLORS[k % len(LEVEL_COLORS)], label=f"{LEVEL_NAMES[k]}: {s:g} px")
            for k, s in enumerate(config.anchor_sizes)
        ],
        loc="lower right",
        fontsize=8,
    )
    right.set_title(f"one location, every size ({len(config.anchor_sizes)} levels x {scales} scales)")
    fig.tight_layout()
    return fig


def anchor_recall_figure(
    image: Tensor | np.ndarray, boxes: Tensor, on_sample: dict, on_dataset: dict, config: RetinaConfig
) -> Figure:
    """The anchor tuner's picture (01_anchors.ipynb). Left: each box of a sample image (white) with its best
    anchor in the colour of that anchor's level, solid if their IoU reaches `config.fg_iou`, dashed if not.
    Right: the histogram of every dataset box's best-anchor IoU, stacked by level, with the anchor recall.
    `on_sample` and `on_dataset` are `retina.widgets.anchor_recall` results."""
    height, width = image_hwc(image).shape[:2]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6), dpi=80, gridspec_kw={"width_ratios": [1, 1.3]})
    show_image(left, image)
    plot_boxes(left, boxes, color="white", linewidth=2)
    hits = on_sample["best_iou"] >= config.fg_iou
    for anchor, level, hit in zip(on_sample["best_anchor"], on_sample["best_level"], hits, strict=True):
        plot_boxes(left, anchor[None], color=LEVEL_COLORS[level % len(LEVEL_COLORS)], linestyle="-" if hit else "--")
    if len(boxes):
        fit_boxes(left, torch.cat((torch.as_tensor(boxes).reshape(-1, 4), on_sample["best_anchor"])), height, width)
    left.set_title(f"sample: {int(hits.sum())} of {len(hits)} boxes have an anchor at IoU >= {config.fg_iou:g}")

    num_levels = on_dataset["level_iou"].shape[1]
    per_level = [on_dataset["best_iou"][on_dataset["best_level"] == k] for k in range(num_levels)]
    recall = on_dataset["recall_per_level"]
    labels = [f"{name} ({config.anchor_sizes[k]:g} px): {recall[name]:.0%}" for k, name in enumerate(recall)]
    right.hist(per_level, bins=np.linspace(0, 1, 21), stacked=True, color=LEVEL_COLORS[:num_levels], label=labels)
    right.axvline(config.fg_iou, color="k", linestyle="--")
    right.set_xlabel("IoU of each box with its best anchor")
    right.set_ylabel("boxes")
    right.legend(fontsize=8, loc="upper left")
    right.set_title(f"{len(on_dataset['best_iou'])} boxes: anchor recall {on_dataset['recall']:.1%}")
    fig.tight_layout()
    return fig


def grids_figure(config: RetinaConfig, image: Tensor | np.ndarray) -> Figure:
    """One panel per pyramid level: the anchor centres of its grid over the image, with the level's anchor
    count H_k x W_k x A in the title. Shown in 01_anchors.ipynb."""
    height, width = image_hwc(image).shape[:2]
    grids = grid_sizes((height, width), config.strides)
    fig, axes = plt.subplots(1, len(grids), figsize=(3 * len(grids), 3.2), dpi=80)
    for k, (ax, (h, w), stride) in enumerate(zip(axes, grids, config.strides, strict=True)):
        show_image(ax, image, margin=8)
        centres = (np.arange(max(h, w)) + config.anchor_offset) * stride
        ys, xs = np.meshgrid(centres[:h], centres[:w])  # every (y, x) pair of anchor centres
        ax.scatter(xs.ravel(), ys.ravel(), s=max(1.0, 200 / max(h, w)), color=LEVEL_COLORS[k % len(LEVEL_COLORS)])
        ax.set_title(f"{LEVEL_NAMES[k]}: {h}x{w}x{config.num_anchors} = {h * w * config.num_anchors}", fontsize=9)
    fig.tight_layout()
    return fig


def matching_figure(
    image: Tensor | np.ndarray, boxes: Tensor, config: RetinaConfig, image_size: tuple[int, int] | None = None
) -> Figure:
    """The fate of every anchor of one image: foreground anchors in their box's colour, ignored anchors
    dashed grey; background anchors (nearly all of them) are only counted. Shown in 02_target_encoding.ipynb.

    `image_size` is the padded input size the anchors are built for (default: the image's own size)."""
    height, width = image_hwc(image).shape[:2]
    anchors = generate_anchors(config, image_size or (height, width))
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    valid = torch.ones(1, len(boxes), dtype=torch.bool)
    matched = match_anchors(
        anchors, boxes[None], valid, None, config.fg_iou, config.bg_iou, config.low_quality_matches
    )[0]  # [N]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=80)
    show_image(ax, image, margin=8)
    ignored = anchors[matched == IGNORE]
    plot_boxes(ax, ignored, color="0.6", linewidth=0.6, linestyle="--")
    box_colors = [plt.cm.tab10(g % 10) for g in range(len(boxes))]
    for g in range(len(boxes)):
        plot_boxes(ax, anchors[matched == g], color=[box_colors[g]] * int((matched == g).sum()), linewidth=0.7)
    plot_boxes(ax, boxes, color=box_colors, linewidth=3)
    counts = {
        "foreground": int((matched >= 0).sum()),
        "ignored": int((matched == IGNORE).sum()),
        "background": int((matched == BACKGROUND).sum()),
    }
    ax.set_title(", ".join(f"{n} {name}" for name, n in counts.items()), fontsize=10)
    fig.tight_layout()
    return fig
