"""Figures of 04_fpn.ipynb: RetinaNet's architecture as `RetinaConfig` builds it, the feature maps of each
pyramid level, and which level each box's foreground anchors come from."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import patches
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from retina.config import RetinaConfig
from retina.figures.common import LEVEL_COLORS, LEVEL_NAMES, plot_boxes, show_image


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
    ax.text(
        7.7,
        5.0,
        f"subnets shared\nby every level\n({config.fpn_channels} channels, A = {config.num_anchors})",
        ha="center",
        fontsize=10,
    )
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
    ax.set_title("the level each box's foreground anchors come from", fontsize=10, pad=14)  # above the top labels
    fig.tight_layout()
    return fig
