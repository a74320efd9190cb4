"""Figures: the matplotlib pictures of the notebooks and of the README (`svgs/`), one builder each.

Every builder returns a `matplotlib.figure.Figure` and computes what it shows with the package itself
(anchors with `retina.anchors`, matching with `retina.targets`, losses with `retina.losses`), so a figure
cannot drift from the code. Which notebook shows which figure:

    box_formats_figure                        00_data.ipynb
    anchors_figure, grids_figure,
    anchor_recall_figure                      01_anchors.ipynb (the anchor tuner of retina.widgets)
    matching_figure                           02_target_encoding.ipynb
    focal_loss_figure, equation_figure        03_focal_loss.ipynb (and the README's equations)
    fpn_diagram, feature_maps_figure,
    levels_figure                             04_fpn.ipynb
    nms_steps_figure, nms_figure              06_nms.ipynb

`python -m retina.figures svgs/` (or `make svgs`) writes the README's figures, byte for byte the same on
every run: fixed seeds, a fixed `svg.hashsalt` and no date in the metadata.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib import patches
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from retina.anchors import anchor_shapes, anchors_per_level, generate_anchors, grid_sizes
from retina.boxes import box_iou
from retina.config import RetinaConfig
from retina.losses import sigmoid_focal_loss
from retina.targets import BACKGROUND, IGNORE, match_anchors

LEVEL_NAMES = ("P3", "P4", "P5", "P6", "P7")
LEVEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")

# The README's equations, written for matplotlib's mathtext (no LaTeX install needed).
EQUATIONS = {
    "loss": r"$\mathcal{L}(x, y, b) = \mathcal{L}_\mathrm{cls}(x, y) + \mathcal{L}_\mathrm{reg}(x, b)\,"
    r"\mathbf{1}\{y \neq 0\}$",
    "cls_likelihood": r"$\mathcal{L}_\mathrm{cls}^{(k,i,j,a)}(x, y) = -\log p_\theta(y \mid x),\quad "
    r"p_\theta(y \mid x) = \mathrm{Bernoulli},\ y \in \{0, 1\}^{|\mathcal{Y}|}$",
    "reg_likelihood": r"$\mathcal{L}_\mathrm{reg}^{(k,i,j,a)}(x, b) = -\log p_\theta(b \mid x),\quad "
    r"p_\theta(b \mid x) = \mathrm{Normal},\ b \in \mathbb{R}^4$",
    "targets": r"$(x, y, b) \mapsto \left(\mathrm{cls\ target} \in \{0, 1\}^{K \times M \times N \times A "
    r"\times |\mathcal{Y}|},\ \mathrm{reg\ target} \in \mathbb{R}^{K \times M \times N \times A \times 4}\right)$",
    "focal_loss": r"$\mathcal{L}_\mathrm{cls}^{(k,i,j,a)}(x, y) = -\alpha^{(y)}\,"
    r"\left(1 - p_\theta(y \mid x)\right)^\gamma\, \log p_\theta(y \mid x)$",
    "alpha": r"$\alpha^{(y)} = \alpha\,\mathbf{1}\{y = 1\} + (1 - \alpha)\,\mathbf{1}\{y = 0\}$",
    "prior": r"$b = -\log\frac{1 - \pi}{\pi},\quad \pi = 0.01$",
}


def _image_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """`[3, H, W]` float tensor in [0, 1] (the datasets' format) or `[H, W, 3]` uint8 array -> `[H, W, 3]`."""
    if isinstance(image, Tensor):
        return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    return np.asarray(image)


def show_image(ax, image: Tensor | np.ndarray, margin: float = 0.0) -> None:
    """Draw `image` in pixel coordinates (y down) on `ax`, with `margin` px of grey canvas around it."""
    pixels = _image_hwc(image)
    height, width = pixels.shape[:2]
    ax.imshow(pixels, extent=(0, width, height, 0))
    ax.set_xlim(-margin, width + margin)
    ax.set_ylim(height + margin, -margin)
    ax.set_facecolor("0.92")
    ax.set_xticks([])
    ax.set_yticks([])


def fit_boxes(ax, boxes: Tensor, height: int, width: int, pad: float = 8.0) -> None:
    """Widen `ax`'s limits so they show the whole image and every one of `boxes[K, 4]`, `pad` px around."""
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    x1 = min(0.0, float(boxes[:, 0].min())) - pad
    y1 = min(0.0, float(boxes[:, 1].min())) - pad
    x2 = max(float(width), float(boxes[:, 2].max())) + pad
    y2 = max(float(height), float(boxes[:, 3].max())) + pad
    ax.set_xlim(x1, x2)
    ax.set_ylim(y2, y1)


def plot_boxes(ax, boxes: Tensor, color="white", linewidth: float = 1.5, linestyle: str = "-", labels=None, **kw):
    """Draw xyxy `boxes[K, 4]` on `ax`; `color` is one colour or one per box, `labels` an optional text per box."""
    colors = [color] * len(boxes) if isinstance(color, str) else list(color)
    for i, (x1, y1, x2, y2) in enumerate(torch.as_tensor(boxes).reshape(-1, 4).tolist()):
        rectangle = patches.Rectangle(
            (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colors[i], linewidth=linewidth, linestyle=linestyle, **kw
        )
        ax.add_patch(rectangle)
        if labels is not None:
            ax.text(x1, y1, labels[i], color="white", fontsize=7, va="bottom", bbox={"color": colors[i], "pad": 1})


def box_formats_figure(box: Tensor, canvas: tuple[int, int] = (120, 160)) -> Figure:
    """One xyxy `box` on a blank `(height, width)` canvas, labelled with its three descriptions: the corners
    (xyxy), the top-left corner and size (xywh, COCO's), the centre and size (cxcywh). Shown in 00_data.ipynb."""
    x1, y1, x2, y2 = [float(v) for v in box]
    fig, ax = plt.subplots(figsize=(5, 3.9), dpi=80)
    ax.set_xlim(0, canvas[1])
    ax.set_ylim(canvas[0], 0)  # image coordinates: y points down
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    plot_boxes(ax, torch.tensor([[x1, y1, x2, y2]]), color="tab:blue", linewidth=2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ax.plot([x1, x2], [y1, y2], "o", color="tab:blue")
    ax.plot([cx], [cy], "o", color="tab:red")
    ax.annotate(f"({x1:g}, {y1:g})", (x1, y1), xytext=(0, 5), textcoords="offset points", ha="center", fontsize=9)
    ax.annotate(f"({x2:g}, {y2:g})", (x2, y2), xytext=(5, -5), textcoords="offset points", va="top", fontsize=9)
    ax.annotate(f"centre ({cx:g}, {cy:g})", (cx, cy), xytext=(0, 8), textcoords="offset points", ha="center",
                color="tab:red", fontsize=9)  # fmt: skip
    ax.annotate("", (x2, y2 + 6), (x1, y2 + 6), arrowprops={"arrowstyle": "<->"})
    ax.text(cx, y2 + 8, f"w = {x2 - x1:g}", ha="center", va="top", fontsize=9)
    ax.annotate("", (x1 - 6, y2), (x1 - 6, y1), arrowprops={"arrowstyle": "<->"})
    ax.text(x1 - 8, cy, f"h = {y2 - y1:g}", va="center", ha="right", fontsize=9)
    ax.set_title(
        f"xyxy ({x1:g}, {y1:g}, {x2:g}, {y2:g})   xywh ({x1:g}, {y1:g}, {x2 - x1:g}, {y2 - y1:g})\n"
        f"cxcywh ({cx:g}, {cy:g}, {x2 - x1:g}, {y2 - y1:g})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def anchors_figure(config: RetinaConfig, image: Tensor | np.ndarray, level: int = 1) -> Figure:
    """Left: the anchors of one scale (every aspect ratio) of pyramid level `level` at the first and last
    locations of its grid, i.e. at two corners of the image. Right: the square anchors at the top-left
    location across every size (levels x scales). Shown in 01_anchors.ipynb."""
    height, width = _image_hwc(image).shape[:2]
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
    height, width = _image_hwc(image).shape[:2]
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
    height, width = _image_hwc(image).shape[:2]
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
    height, width = _image_hwc(image).shape[:2]
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


def focal_loss_figure(gammas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)) -> Figure:
    """Loss of one prediction against the probability of its true label p_t, for several gamma (gamma = 0 is
    the cross-entropy), with `retina.losses.sigmoid_focal_loss` (no alpha). Shown in 03_focal_loss.ipynb."""
    p_t = torch.linspace(0.001, 1.0, 500, dtype=torch.float64)
    logits = torch.log(p_t) - torch.log1p(-p_t)  # sigmoid(logit) = p_t, target 1
    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    for gamma in gammas:
        loss = sigmoid_focal_loss(logits, torch.ones_like(logits), alpha=-1, gamma=gamma)
        label = f"$\\gamma = {gamma:g}$" + (" (cross-entropy)" if gamma == 0 else "")
        ax.plot(p_t.numpy(), loss.numpy(), label=label)
    ax.axvspan(0.6, 1.0, color="0.9", zorder=0)
    ax.text(0.8, 4.6, "well-classified\nexamples", ha="center", va="top", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 5)
    ax.set_xlabel("probability of the true label $p_t$")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return fig


def fpn_diagram() -> Figure:
    """RetinaNet's architecture: the ResNet stages C3-C5 (bottom-up), the top-down pathway with lateral 1x1
    connections giving P3-P5, P6 and P7 from strided 3x3 convolutions, and the two subnets shared by every
    level. Shown in 04_fpn.ipynb."""
    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=80)
    ax.set_xlim(0, 9)
    ax.set_ylim(0, 6.4)
    ax.axis("off")

    def block(x, y, w, h, text, color):
        ax.add_patch(patches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.03", facecolor=color, edgecolor="k"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    def arrow(x1, y1, x2, y2, text=None, color="k"):
        ax.annotate("", (x2, y2), (x1, y1), arrowprops={"arrowstyle": "->", "color": color, "lw": 1.3})
        if text and x1 == x2:  # vertical: label on the right
            ax.text(x1 + 0.08, (y1 + y2) / 2, text, ha="left", va="center", fontsize=7, color=color)
        elif text:
            ax.text((x1 + x2) / 2, (y1 + y2) / 2 + 0.08, text, ha="center", va="bottom", fontsize=7, color=color)

    # bottom-up: the ResNet, widths shrinking with the stride
    block(0.3, 0.1, 1.6, 0.45, "image", "white")
    stages = [(1.0, "C3  stride 8"), (2.1, "C4  stride 16"), (3.2, "C5  stride 32")]
    for (y, text), w in zip(stages, (1.6, 1.3, 1.0), strict=True):
        block(0.3 + (1.6 - w) / 2, y, w, 0.6, text, "#cfe2f3")
    arrow(1.1, 0.55, 1.1, 1.0, "stem, C2")
    for y0, y1 in ((1.6, 2.1), (2.7, 3.2)):
        arrow(1.1, y0, 1.1, y1)
    ax.text(1.1, 4.1, "ResNet\n(bottom-up)", ha="center", fontsize=10)

    # top-down with laterals: P5 from C5, then P4 = 1x1(C4) + up(P5), P3 = 1x1(C3) + up(P4)
    levels = [(1.0, "P3  stride 8"), (2.1, "P4  stride 16"), (3.2, "P5  stride 32"), (4.3, "P6  stride 64"),
              (5.4, "P7  stride 128")]  # fmt: skip
    for y, text in levels:
        block(3.7, y, 1.6, 0.6, text, "#d9ead3")
    for y in (1.3, 2.4, 3.5):
        arrow(1.95, y, 3.7, y, "lateral 1x1", "tab:blue")
    for y0, y1 in ((3.2, 2.7), (2.1, 1.6)):
        arrow(4.0, y0, 4.0, y1, "x2 up, add", "tab:green")
    arrow(1.95, 3.7, 3.7, 4.55, "3x3 / 2", "tab:red")
    arrow(4.0, 4.9, 4.0, 5.4, "ReLU, 3x3 / 2", "tab:red")
    ax.text(4.5, 6.1, "feature pyramid (top-down)", ha="center", fontsize=10)

    # the two subnets, applied to every level
    block(6.6, 3.6, 2.2, 0.9, "class subnet\n4 x (3x3 conv, ReLU)\n3x3 conv: A x C", "#fce5cd")
    block(6.6, 1.9, 2.2, 0.9, "box subnet\n4 x (3x3 conv, ReLU)\n3x3 conv: A x 4", "#fce5cd")
    for y, _ in levels:
        arrow(5.3, y + 0.3, 6.6, 4.05, color="0.6")
        arrow(5.3, y + 0.3, 6.6, 2.35, color="0.6")
    ax.text(7.7, 5.0, "subnets shared\nby every level", ha="center", fontsize=10)
    fig.tight_layout()
    return fig


def feature_maps_figure(image: Tensor | np.ndarray, features: list[Tensor]) -> Figure:
    """The image and, for each pyramid level, the L2 norm over channels of its feature map `[C, H_k, W_k]`
    (one image of the batch), titled with its size. Shown in 04_fpn.ipynb."""
    fig, axes = plt.subplots(1, len(features) + 1, figsize=(2.6 * (len(features) + 1), 2.9), dpi=80)
    show_image(axes[0], image)
    axes[0].set_title("input", fontsize=9)
    for k, (ax, feature) in enumerate(zip(axes[1:], features, strict=True)):
        norm = feature.detach().float().norm(dim=0).cpu().numpy()  # [H_k, W_k]
        ax.imshow(norm, cmap="magma")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{LEVEL_NAMES[k]}: {norm.shape[0]}x{norm.shape[1]}", fontsize=9)
    fig.tight_layout()
    return fig


def levels_figure(
    image: Tensor | np.ndarray, boxes: Tensor, matched: Tensor, counts: list[int], config: RetinaConfig
) -> Figure:
    """Each ground-truth box in the colour of the level most of its foreground anchors come from, labelled
    with its anchor count per level. `matched[N]` is one image's row of `match_anchors`; `counts` are the
    anchors per level (`retina.anchors.anchors_per_level_counts`). Shown in 04_fpn.ipynb."""
    level_of_anchor = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))  # [N]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=80)
    show_image(ax, image)
    colors, labels = [], []
    for g in range(len(boxes)):
        per_level = torch.bincount(level_of_anchor[matched == g], minlength=len(counts))  # [K]
        main = int(per_level.argmax())
        colors.append(LEVEL_COLORS[main % len(LEVEL_COLORS)])
        labels.append(" ".join(f"{LEVEL_NAMES[k]}:{n}" for k, n in enumerate(per_level.tolist()) if n))
    plot_boxes(ax, boxes, color=colors, linewidth=2.5, labels=labels)
    ax.legend(
        handles=[
            patches.Patch(color=LEVEL_COLORS[k], label=f"{LEVEL_NAMES[k]} ({config.anchor_sizes[k]:g} px)")
            for k in range(len(counts))
        ],
        loc="lower right",
        fontsize=8,
    )
    ax.set_title("the level each box's foreground anchors come from", fontsize=10)
    fig.tight_layout()
    return fig


def nms_steps_figure(
    image: Tensor | np.ndarray, boxes: Tensor, steps: list[tuple[int, list[int]]], max_steps: int = 4
) -> Figure:
    """Greedy NMS step by step: in panel t, the box kept at step t (solid) and the boxes it suppresses
    (dashed); boxes still in play are thin grey. `steps` is a list of `(kept index, [suppressed indices])`.
    Shown in 06_nms.ipynb."""
    steps = steps[:max_steps]
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.4), dpi=80, squeeze=False)
    alive = set(range(len(boxes)))
    for t, (ax, (kept, suppressed)) in enumerate(zip(axes[0], steps, strict=True)):
        show_image(ax, image)
        plot_boxes(ax, boxes[sorted(alive - {kept, *suppressed})], color="0.8", linewidth=0.7)
        plot_boxes(ax, boxes[suppressed], color="tab:red", linewidth=1.2, linestyle="--")
        plot_boxes(ax, boxes[[kept]], color="tab:green", linewidth=2.5)
        ax.set_title(f"step {t + 1}: keep 1, suppress {len(suppressed)}", fontsize=9)
        alive -= {kept, *suppressed}
    fig.tight_layout()
    return fig


def nms_figure(
    image: Tensor | np.ndarray, boxes: Tensor, scores: Tensor, keep: Tensor, names: list[str] | None = None
) -> Figure:
    """Detections before NMS (every candidate in `boxes`, line width by score) and after (those in `keep`,
    labelled with their score and, given `names` (one per box), their class). Shown in 06_nms.ipynb."""
    fig, (before, after) = plt.subplots(1, 2, figsize=(9, 4.8), dpi=80)
    show_image(before, image)
    for box, score in zip(boxes, scores.tolist(), strict=True):
        plot_boxes(before, box[None], color="tab:orange", linewidth=0.4 + 1.6 * score)
    before.set_title(f"before NMS: {len(boxes)} boxes", fontsize=10)
    show_image(after, image)
    texts = [f"{'' if names is None else names[i] + ' '}{scores[i]:.2f}" for i in keep.tolist()]
    plot_boxes(after, boxes[keep], color="tab:green", linewidth=2, labels=texts)
    after.set_title(f"after NMS: {len(keep)} boxes", fontsize=10)
    fig.tight_layout()
    return fig


def equation_figure(tex: str, fontsize: int = 16) -> Figure:
    """One equation rendered by matplotlib's mathtext (no LaTeX install), the figure cropped to it when
    saved with `bbox_inches="tight"`. Shown in 03_focal_loss.ipynb and the README."""
    fig = plt.figure(figsize=(0.01, 0.01))
    ax = fig.add_axes((0, 0, 1, 1))  # an axes, not fig.text: IPython does not display a figure without axes
    ax.axis("off")
    ax.text(0, 0, tex, fontsize=fontsize)
    return fig


def _readme_scene(seed: int = 3, size: int = 320) -> tuple[np.ndarray, Tensor]:
    """A shapes image and its boxes, drawn without any dataset on disk. The image is smoothed a little: its pixel
    noise would otherwise take most of each svg's bytes."""
    from PIL import Image, ImageFilter

    from retina.data.shapes import render_image  # only the svgs need it: keep `import retina.figures` light

    pixels, objects = render_image(size, np.random.default_rng(seed))
    smooth = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5)))
    boxes = torch.tensor([obj["box"] for obj in objects], dtype=torch.float32).reshape(-1, 4)
    return smooth, boxes


def _noisy_detections(boxes: Tensor, per_box: int = 6, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Candidates such as an untuned detector produces: jittered copies of each box with scores that fall
    with the jitter."""
    g = torch.Generator().manual_seed(seed)
    size = (boxes[:, 2:] - boxes[:, :2]).repeat_interleave(per_box, 0)  # [G * per_box, 2]
    jitter = 0.15 * torch.randn(len(size), 4, generator=g) * size.repeat(1, 2)
    candidates = boxes.repeat_interleave(per_box, 0) + jitter
    own = boxes.repeat_interleave(per_box, 0)
    iou = box_iou(candidates[:, None], own[:, None])[:, 0, 0]  # each candidate against its own box
    scores = (iou * (0.7 + 0.3 * torch.rand(len(candidates), generator=g))).clamp(0, 1)
    return candidates, scores


def write_svgs(out_dir: str | Path) -> list[Path]:
    """Write every README figure to `out_dir` as SVG, deterministically; returns the paths written."""
    from retina.postprocess import nms  # the teaching NMS: the figure shows what 06_nms.ipynb teaches

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, boxes = _readme_scene()
    candidates, scores = _noisy_detections(boxes)
    config = RetinaConfig()
    figures = {
        "anchors": anchors_figure(config, image, level=1),
        "matching": matching_figure(image, boxes, config.replace(anchor_sizes=(16, 32, 64, 128, 256))),
        "focal_loss": focal_loss_figure(),
        "fpn": fpn_diagram(),
        "nms": nms_figure(image, candidates, scores, nms(candidates, scores, 0.5)),
        **{f"eq_{name}": equation_figure(tex) for name, tex in EQUATIONS.items()},
    }
    written = []
    with plt.rc_context({"svg.hashsalt": "retina", "svg.fonttype": "path"}):
        for name, fig in figures.items():
            path = out / f"{name}.svg"
            fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.05)
            plt.close(fig)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retina.figures", description="Write the README's figures.")
    parser.add_argument("out_dir", nargs="?", default="svgs", help="directory for the .svg files (default: svgs)")
    args = parser.parse_args(argv)
    for path in write_svgs(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
