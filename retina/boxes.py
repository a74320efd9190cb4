"""Box geometry: formats, areas, IoU, and boxes as deltas against anchors.

Everything else in `retina` builds on these pure functions. All of them broadcast over leading
dimensions, so one call handles a whole batch: `box_iou(a[B, G, 4], b[N, 4]) -> [B, G, N]`.

Formats (taught in notebooks/00_data.ipynb):
    xyxy    (x1, y1, x2, y2): corners; the format of every box that crosses a module boundary
    xywh    (x1, y1, w, h):   COCO's annotation format
    cxcywh  (cx, cy, w, h):   centre and size, the frame in which deltas are defined

Deltas (Girshick et al., Fast/Faster R-CNN; RetinaNet Sec. 4, taught in 02_target_encoding.ipynb):
a box b is stored relative to an anchor a as
    tx = wx (bx - ax) / aw,  ty = wy (by - ay) / ah,  tw = ww log(bw / aw),  th = wh log(bh / ah)
so that the regression targets are scale-free and roughly unit-sized.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
DEFAULT_BOX_CLIP = math.log(1000.0 / 16)  # exp(4.1) ~ 62: a delta can grow a box at most 62-fold


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert `boxes[..., 4]` between "xyxy", "xywh" and "cxcywh"."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; expected one of {BOX_FORMATS}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    # (a, b, c, d) is now xyxy
    if out_fmt == "xywh":
        return torch.stack((a, b, c - a, d - b), dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack(((a + c) / 2, (b + d) / 2, c - a, d - b), dim=-1)
    return torch.stack((a, b, c, d), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Areas of xyxy `boxes[..., 4]` -> `[...]`. Degenerate boxes have area <= 0."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersection_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    # One coordinate at a time, those of boxes2 made contiguous: every [..., N, M] op then runs along M in
    # memory order, several times faster than ops over a trailing (x, y) pair read with a stride of 4.
    x1a, y1a, x2a, y2a = (c[..., :, None] for c in boxes1.unbind(-1))  # [..., N, 1]
    x1b, y1b, x2b, y2b = (c.contiguous()[..., None, :] for c in boxes2.unbind(-1))  # [..., 1, M]
    width = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).clamp(min=0)  # [..., N, M]
    height = (torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)).clamp(min=0)
    inter = width * height
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes: `[..., N, 4] x [..., M, 4] -> [..., N, M]`.

    Leading dimensions broadcast. A pair whose union is empty (two degenerate boxes) has IoU 0,
    where a plain division gives NaN (0 / 0; a non-empty intersection implies a non-empty union).
    """
    inter, union = _intersection_union(boxes1, boxes2)
    return (inter / union).nan_to_num(0.0)


def box_giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of matched pairs: `[..., 4] x [..., 4] -> [...]`.

    GIoU = IoU - |C minus (A u B)| / |C|, C the smallest box enclosing both; it lies in (-1, 1] and,
    unlike IoU, still has a gradient when the boxes do not overlap.
    """
    inter, union = _intersection_union(boxes1[..., None, :], boxes2[..., None, :])
    inter, union = inter[..., 0, 0], union[..., 0, 0]
    iou = inter / union
    enclosing_wh = torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - torch.minimum(boxes1[..., :2], boxes2[..., :2])
    enclosing = enclosing_wh[..., 0] * enclosing_wh[..., 1]
    return iou - (enclosing - union) / enclosing


def clip_boxes(boxes: Tensor, image_size: tuple[int, int] | Tensor) -> Tensor:
    """Clip xyxy `boxes[..., 4]` to images of `image_size`: `(height, width)`, or a `[..., 2]` tensor of
    sizes whose leading dimensions broadcast against those of `boxes` (one size per image)."""
    size = torch.as_tensor(image_size, dtype=boxes.dtype, device=boxes.device)
    height, width = size[..., 0, None], size[..., 1, None]  # [..., 1]
    x = boxes[..., 0::2].clamp(min=0).minimum(width)  # [..., 2]: x1, x2
    y = boxes[..., 1::2].clamp(min=0).minimum(height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def turn_boxes(boxes: Tensor, k: int, image_size: tuple[int, int]) -> Tensor:
    """Boxes `[..., 4]` xyxy in an image of (height, width) `image_size`, moved with the image as
    `torch.rot90(image, k, dims=(-2, -1))` turns it: k quarter turns counter-clockwise (k < 0: clockwise).
    A quarter turn takes the point (x, y) to (y, width - x), and the image to (width, height)."""
    height, width = image_size
    x1, y1, x2, y2 = boxes.unbind(-1)
    for _ in range(k % 4):
        x1, y1, x2, y2 = y1, width - x2, y2, width - x1
        height, width = width, height
    return torch.stack((x1, y1, x2, y2), dim=-1)


def encode_boxes(
    boxes: Tensor, anchors: Tensor, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """Deltas (tx, ty, tw, th) that move each anchor onto its box: `[..., 4] x [..., 4] -> [..., 4]`.

    Both inputs are xyxy and broadcast; `decode_boxes(encode_boxes(b, a), a) == b`.
    """
    wx, wy, ww, wh = weights
    anchor_w = anchors[..., 2] - anchors[..., 0]
    anchor_h = anchors[..., 3] - anchors[..., 1]
    anchor_cx = anchors[..., 0] + 0.5 * anchor_w
    anchor_cy = anchors[..., 1] + 0.5 * anchor_h
    box_w = boxes[..., 2] - boxes[..., 0]
    box_h = boxes[..., 3] - boxes[..., 1]
    box_cx = boxes[..., 0] + 0.5 * box_w
    box_cy = boxes[..., 1] + 0.5 * box_h
    tx = wx * (box_cx - anchor_cx) / anchor_w
    ty = wy * (box_cy - anchor_cy) / anchor_h
    tw = ww * torch.log(box_w / anchor_w)
    th = wh * torch.log(box_h / anchor_h)
    return torch.stack((tx, ty, tw, th), dim=-1)


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = DEFAULT_BOX_CLIP,
) -> Tensor:
    """Boxes (xyxy) that `deltas[..., 4]` describe relative to `anchors[..., 4]`; the inverse of encode.

    tw and th are clamped at `clip` before exp(), so an untrained head cannot produce inf boxes.
    """
    wx, wy, ww, wh = weights
    anchor_w = anchors[..., 2] - anchors[..., 0]
    anchor_h = anchors[..., 3] - anchors[..., 1]
    anchor_cx = anchors[..., 0] + 0.5 * anchor_w
    anchor_cy = anchors[..., 1] + 0.5 * anchor_h
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=clip)
    dh = (deltas[..., 3] / wh).clamp(max=clip)
    cx = dx * anchor_w + anchor_cx
    cy = dy * anchor_h + anchor_cy
    half_w = 0.5 * (torch.exp(dw) * anchor_w)
    half_h = 0.5 * (torch.exp(dh) * anchor_h)
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)
