"""Figures: the matplotlib pictures of the notebooks and of the README (`svgs/`), one builder each.

Every builder returns a `matplotlib.figure.Figure` and computes what it shows with the package itself
(anchors with `retina.anchors`, matching with `retina.targets`, losses with `retina.losses`), so a figure
cannot drift from the code. Which notebook shows which figure:

    box_formats_figure, iou_figure,
    deltas_figure, box_losses_figure          00_data.ipynb
    anchors_figure, grids_figure,
    anchor_recall_figure                      01_anchors.ipynb (the anchor tuner of retina.widgets)
    matching_figure                           02_target_encoding.ipynb
    focal_loss_figure, equation_figure        03_focal_loss.ipynb (and the README's equations)
    alpha_figure, focal_explorer_figure       03_focal_loss.ipynb (the focal-loss explorer of retina.widgets)
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
    "focal_loss": r"$\mathcal{L}_\mathrm{cls}^{(k,i,j,a)}(x, y) = -\sum_{c \in \mathcal{Y}} \alpha^{(y_c)}\,"
    r"\left(1 - p_\theta(y_c \mid x)\right)^\gamma\, \log p_\theta(y_c \mid x)$",
    "alpha": r"$\alpha^{(y_c)} = \alpha\,\mathbf{1}\{y_c = 1\} + (1 - \alpha)\,\mathbf{1}\{y_c = 0\}$",
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


def fpn_diagram(config: RetinaConfig | None = None) -> Figure:
    """RetinaNet's architecture: the ResNet stages C3-C5 (bottom-up), the top-down pathway with lateral 1x1
    connections giving P3-P5, P6 and P7 from strided 3x3 convolutions, and the two subnets shared by every
    level, as `config` builds them (default: the paper's, Sec. 4 and Fig. 3). Shown in 04_fpn.ipynb."""
    config = config or RetinaConfig.paper()
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
    hidden = f"{config.head_convs} x (3x3 conv{', GroupNorm' if config.head_norm == 'gn' else ''}, ReLU)"
    block(6.6, 3.6, 2.2, 0.9, f"class subnet\n{hidden}\n3x3 conv: A x C", "#fce5cd")
    block(6.6, 1.9, 2.2, 0.9, f"box subnet\n{hidden}\n3x3 conv: A x 4", "#fce5cd")
    for y, _ in levels:
        arrow(5.3, y + 0.3, 6.6, 4.05, color="0.6")
        arrow(5.3, y + 0.3, 6.6, 2.35, color="0.6")
    ax.text(7.7, 5.0, f"subnets shared\nby every level\n({config.fpn_channels} channels, A = {config.num_anchors})",
            ha="center", fontsize=10)
    ax.text(1.1, 5.9, f"{config.backbone}", ha="center", fontsize=10, weight="bold")
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
    image: Tensor | np.ndarray,
    boxes: Tensor,
    scores: Tensor,
    keep: Tensor,
    names: list[str] | None = None,
    gt_boxes: Tensor | None = None,
    correct: Tensor | None = None,
) -> Figure:
    """Detections before NMS (every candidate in `boxes`, line width by score) and after (those in `keep`,
    labelled with their score and, given `names` (one per box), their class). Given `gt_boxes`, the ground truth
    is drawn dashed white on the right; given `correct` (one bool per entry of `keep`: a true positive, see
    `retina.widgets.true_positives`), the kept boxes are green when right and red when wrong. The kept boxes are
    drawn from the lowest score up, so where labels overlap the best score is on top and readable.
    Shown in 06_nms.ipynb and by `retina.widgets.NMSExplorer`."""
    fig, (before, after) = plt.subplots(1, 2, figsize=(8, 4.2), dpi=72)
    show_image(before, image)
    for box, score in zip(boxes, scores.tolist(), strict=True):
        plot_boxes(before, box[None], color="tab:orange", linewidth=0.4 + 1.6 * score)
    before.set_title(f"before NMS: {len(boxes)} boxes", fontsize=10)
    show_image(after, image)
    if gt_boxes is not None:
        plot_boxes(after, gt_boxes, color="white", linewidth=1.2, linestyle="--")
    order = scores[keep].argsort(stable=True).tolist()  # lowest score first: the best label is drawn last, on top
    ranked = keep[order]
    texts = [f"{'' if names is None else names[i] + ' '}{scores[i]:.2f}" for i in ranked.tolist()]
    colors = "tab:green"
    title = f"after NMS: {len(keep)} boxes"
    if correct is not None:
        right = torch.as_tensor(correct, dtype=torch.bool)
        colors = ["tab:green" if right[j] else "tab:red" for j in order]
        title += f" ({int(right.sum())} right, {int((~right).sum())} wrong"
        title += ")" if gt_boxes is None else f"; {len(gt_boxes)} objects)"
    plot_boxes(after, boxes[ranked], color=colors, linewidth=2, labels=texts)
    after.set_title(title, fontsize=10)
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


def iou_figure(box_a: Tensor, box_b: Tensor) -> Figure:
    """Two xyxy boxes with their intersection (dark) and the rest of their union (light) shaded, and
    IoU = intersection / union written out. Shown in 00_data.ipynb."""
    a, b = torch.as_tensor(box_a, dtype=torch.float32), torch.as_tensor(box_b, dtype=torch.float32)
    inter = torch.cat((torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])))  # may be empty
    inter_area = float((inter[2:] - inter[:2]).clamp(min=0).prod())
    union_area = float((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod()) - inter_area
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=80)
    for box, color, name in ((a, "tab:blue", "A"), (b, "tab:orange", "B")):
        x1, y1, x2, y2 = box.tolist()
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, color="tab:green", alpha=0.2, lw=0))
        plot_boxes(ax, box[None], color=color, linewidth=2)
        ax.text(x1 + 2, y1 + 2, name, color=color, fontsize=12, va="top", fontweight="bold")
    if inter_area > 0:
        x1, y1, x2, y2 = inter.tolist()
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, color="tab:green", alpha=0.6, lw=0))
    both = torch.stack((a, b))
    ax.set_xlim(float(both[:, 0].min()) - 10, float(both[:, 2].max()) + 10)
    ax.set_ylim(float(both[:, 3].max()) + 10, float(both[:, 1].min()) - 10)  # y points down
    ax.set_aspect("equal")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(f"IoU = intersection / union = {inter_area:g} / {union_area:g} = {inter_area / union_area:.3f}\n"
                 "dark: intersection, dark + light: union", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def deltas_figure(anchor: Tensor, box: Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> Figure:
    """An anchor (dashed) and a box (solid) with the four deltas of `retina.boxes.encode_boxes` that move the
    one onto the other: the centre shift in anchor widths/heights (tx, ty) and the log size ratios (tw, th).
    Shown in 00_data.ipynb."""
    from retina.boxes import box_convert, encode_boxes

    anchor, box = torch.as_tensor(anchor, dtype=torch.float32), torch.as_tensor(box, dtype=torch.float32)
    tx, ty, tw, th = encode_boxes(box, anchor, weights).tolist()
    (ax_, ay, aw, ah), (bx, by, bw, bh) = box_convert(torch.stack((anchor, box)), "xyxy", "cxcywh").tolist()
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=80)
    plot_boxes(ax, anchor[None], color="tab:blue", linewidth=2, linestyle="--")
    plot_boxes(ax, box[None], color="tab:red", linewidth=2)
    ax.plot([ax_], [ay], "o", color="tab:blue")
    ax.plot([bx], [by], "o", color="tab:red")
    ax.annotate("", (bx, by), (ax_, ay), arrowprops={"arrowstyle": "->", "color": "k"})
    ax.text((ax_ + bx) / 2, (ay + by) / 2, f"  tx = ({bx:g} - {ax_:g}) / {aw:g} = {tx:.3f}\n"
            f"  ty = ({by:g} - {ay:g}) / {ah:g} = {ty:.3f}", fontsize=9, va="bottom",
            bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})  # fmt: skip
    both = torch.stack((anchor, box))
    x1, y1 = float(both[:, 0].min()), float(both[:, 1].min())
    x2, y2 = float(both[:, 2].max()), float(both[:, 3].max())
    ax.text(x1, y2 + 6, f"tw = log({bw:g} / {aw:g}) = {tw:.3f}     th = log({bh:g} / {ah:g}) = {th:.3f}",
            fontsize=9, va="top")  # fmt: skip
    ax.plot([], [], "--", color="tab:blue", label=f"anchor, centre ({ax_:g}, {ay:g}), {aw:g} x {ah:g}")
    ax.plot([], [], "-", color="tab:red", label=f"box, centre ({bx:g}, {by:g}), {bw:g} x {bh:g}")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_xlim(x1 - 10, x2 + 60)
    ax.set_ylim(y2 + 24, y1 - 40)  # y points down; room for the legend and the size line
    ax.set_aspect("equal")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title("the deltas (tx, ty, tw, th) from an anchor to a box", fontsize=10)
    fig.tight_layout()
    return fig


BOX_LOSSES = ("smooth_l1", "l1", "giou", "nll")


def box_loss_curves(
    anchor: Tensor, target: Tensor, offsets: Tensor, config: RetinaConfig | None = None
) -> dict[str, dict[str, Tensor]]:
    """Each box loss of `retina.losses.box_loss` for a prediction that is off from the target deltas by
    `offsets[n]` in one coordinate (tx, then tw), the others exact; minus the loss of a perfect prediction
    (the Gaussian NLL's constant). `{"tx": {loss: [n]}, "tw": {...}}`. Used by `box_losses_figure`."""
    from retina.boxes import encode_boxes
    from retina.losses import box_loss

    config = config or RetinaConfig()
    anchor, target = torch.as_tensor(anchor, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32)
    true = encode_boxes(target, anchor, config.box_weights)  # [4]
    curves = {}
    for coordinate, name in ((0, "tx"), (2, "tw")):
        pred = true.repeat(len(offsets), 1)  # [n, 4]
        pred[:, coordinate] += offsets
        curves[name] = {}
        for kind in BOX_LOSSES:
            cfg = config.replace(box_loss=kind)
            perfect = box_loss(true[None], true[None], anchor[None], cfg)
            curves[name][kind] = torch.stack(
                [box_loss(p[None], true[None], anchor[None], cfg) - perfect for p in pred]
            )
    return curves


def box_losses_figure(anchor: Tensor, target: Tensor, config: RetinaConfig | None = None) -> Figure:
    """The box losses against the error of one predicted delta, tx (left) and tw (right), the others exact
    (`box_loss_curves`). Shown in 00_data.ipynb."""
    config = config or RetinaConfig()
    offsets = torch.linspace(-1.5, 1.5, 121)
    curves = box_loss_curves(anchor, target, offsets, config)
    names = {"smooth_l1": f"smooth L1 (beta {config.smooth_l1_beta:g})", "l1": "L1", "giou": "1 - GIoU",
             "nll": "Gaussian NLL - const"}  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80, sharey=True)
    for ax, (coordinate, per_loss) in zip(axes, curves.items(), strict=True):
        for kind, values in per_loss.items():
            ax.plot(offsets.numpy(), values.numpy(), label=names[kind])
        ax.set_xlabel(f"error of the predicted {coordinate} (predicted - target)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss - loss of a perfect prediction")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _focal_curves(ax, gamma: float, alpha: float) -> None:
    """On `ax`: the cross-entropy (dashed) and the focal loss of a positive entry (weight alpha) and of a negative
    one (weight 1 - alpha) against the probability of the true label p_t, with axes labelled and a legend."""
    p_t = torch.linspace(0.001, 0.999, 400, dtype=torch.float64)
    logit = torch.log(p_t) - torch.log1p(-p_t)  # target 1 at this logit: probability p_t of the true label
    ones = torch.ones_like(logit)
    ax.plot(p_t.numpy(), sigmoid_focal_loss(logit, ones, -1, 0).numpy(), "--", color="0.5", label="cross-entropy")
    focal = sigmoid_focal_loss(logit, ones, alpha=-1, gamma=gamma)
    for kind, weight, color in (("positive", alpha, "tab:green"), ("negative", 1 - alpha, "tab:red")):
        ax.plot(p_t.numpy(), (weight * focal).numpy(), color=color, label=f"focal, {kind} entry (x {weight:g})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 3)
    ax.set_xlabel("probability of the true label $p_t$")
    ax.set_ylabel("loss of one entry")
    ax.legend(fontsize=8)


def alpha_figure(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Figure:
    """What alpha does (paper, Sec. 3.1 and 3.2, Table 1). Left: the loss of a positive entry (weight alpha) and
    of a negative one (weight 1 - alpha) against p_t, with cross-entropy dashed. Right: for the entries
    `logits[M, C]`, `targets[M, C]` (0/1) of a batch, the share of the summed loss that the positives carry as
    alpha goes from 0 to 1, under cross-entropy (gamma = 0) and the focal loss (`gamma`). Shown in
    03_focal_loss.ipynb."""
    fig, (curves, shares) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=72)
    _focal_curves(curves, gamma, alpha)
    curves.set_title(f"focal loss, $\\gamma = {gamma:g}$, $\\alpha = {alpha:g}$", fontsize=10)
    alphas = torch.linspace(0.02, 0.98, 49)
    positive = targets > 0
    for g, color in ((0.0, "0.5"), (gamma, "tab:blue")):
        pos = sigmoid_focal_loss(logits[positive], targets[positive], alpha=-1, gamma=g).sum()
        neg = sigmoid_focal_loss(logits[~positive], targets[~positive], alpha=-1, gamma=g).sum()
        share = alphas * pos / (alphas * pos + (1 - alphas) * neg)
        name = "cross-entropy" if g == 0 else f"focal, $\\gamma = {g:g}$"
        shares.plot(alphas.numpy(), share.numpy(), color=color, label=name)
    shares.axvline(alpha, color="tab:green", linestyle=":", label=f"$\\alpha = {alpha:g}$")
    shares.set_xlim(0, 1)
    shares.set_ylim(0, 1.03)
    shares.set_xlabel("$\\alpha$ (weight of the positive entries)")
    shares.set_ylabel("share of the loss on positives")
    shares.set_title(f"{int(positive.sum())} positive, {int((~positive).sum()):,} negative entries", fontsize=10)
    shares.legend(fontsize=8)
    fig.tight_layout()
    return fig


def focal_explorer_figure(
    gamma: float, alpha: float, prior: float, table: dict[tuple[float, str], float], easy: dict[str, float]
) -> Figure:
    """The focal-loss explorer's picture (`retina.widgets.FocalLossExplorer`, 03_focal_loss.ipynb). Left: the loss
    of a positive and of a negative entry against p_t for `gamma` and `alpha`, cross-entropy dashed, and where
    the negatives start at step 0 (p_t = 1 - prior). Right: `table`, the step-0 classification loss by
    (prior, "focal" / "cross-entropy"), as labelled bars. The title: `easy`, the share of the entries that are easy
    negatives and the share of the focal and of the cross-entropy loss they carry."""
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=72)
    _focal_curves(curves, gamma, alpha)
    curves.axvline(1 - prior, color="tab:red", linestyle=":", label=f"negatives at step 0: $p_t = {1 - prior:g}$")
    curves.set_title(f"$\\gamma = {gamma:g}$, $\\alpha = {alpha:g}$", fontsize=10)
    curves.legend(fontsize=7)
    names = [f"{name}\n$\\pi = {p:g}$" for p, name in table]
    values = list(table.values())
    colors = ["tab:green" if name == "focal" else "tab:orange" for _, name in table]
    drawn = bars.bar(names, values, color=colors)
    bars.bar_label(drawn, labels=[f"{v:.2f}" for v in values], fontsize=8)
    bars.set_yscale("log")
    bars.set_ylim(min(values) / 3, max(values) * 5)
    bars.set_ylabel("classification loss at step 0")
    bars.tick_params(axis="x", labelsize=8)
    bars.set_title("step 0 on the batch, divided by the foreground anchors", fontsize=10)
    fig.suptitle(
        f"easy negatives ($p_t \\geq 0.9$): {easy['entries']:.2%} of the entries, carrying {easy['focal']:.1%} of "
        f"the focal loss and {easy['cross-entropy']:.1%} of the cross-entropy",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
