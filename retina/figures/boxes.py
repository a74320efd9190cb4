"""Figures of 00_data.ipynb: a box in its three formats, IoU, the deltas from an anchor to a box, and the box
losses against the error of one delta (`retina.boxes`, `retina.losses.box_loss`)."""

from __future__ import annotations

import torch
from matplotlib import patches
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from retina.boxes import box_convert, encode_boxes
from retina.config import RetinaConfig
from retina.figures.common import plot_boxes
from retina.losses import box_loss


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
            curves[name][kind] = torch.stack([box_loss(p[None], true[None], anchor[None], cfg) - perfect for p in pred])
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
