"""What every figure of `retina.figures` draws with: level names and colours, an image in pixel coordinates
(y down), boxes on it, and axes limits that fit them."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import patches
from torch import Tensor

LEVEL_NAMES = ("P3", "P4", "P5", "P6", "P7")
LEVEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def image_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """`[3, H, W]` float tensor in [0, 1] (the datasets' format) or `[H, W, 3]` uint8 array -> `[H, W, 3]`."""
    if isinstance(image, Tensor):
        return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    return np.asarray(image)


def show_image(ax, image: Tensor | np.ndarray, margin: float = 0.0) -> None:
    """Draw `image` in pixel coordinates (y down) on `ax`, with `margin` px of grey canvas around it."""
    pixels = image_hwc(image)
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
