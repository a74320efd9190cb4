"""Figures of 06_nms.ipynb: greedy NMS step by step, and detections before and after NMS (also the NMS
explorer's picture, `retina.widgets.nms_explorer`)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from retina.figures.common import plot_boxes, show_image


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
