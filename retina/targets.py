"""Target encoding: which anchor learns which box, done in the DataLoader's `collate_fn`.

Taught in notebooks/02_target_encoding.ipynb. Every anchor gets one of three fates (paper Sec. 4,
"Anchors"), from its best IoU with the ground-truth boxes of its image:
    IoU >= 0.5         foreground: learn that box's class and its deltas
    IoU <  0.4         background: learn "no object" for every class
    0.4 <= IoU < 0.5   ignored: no loss at all
Each ground-truth box's best anchors are also foreground ("low-quality matches"), so that no box is
left without an anchor. Boxes flagged `ignore` (COCO crowds, VOC "difficult") never make foreground;
anchors that overlap them (IoU >= 0.4) and are not foreground for another box are ignored, so the
model is not punished for firing on them.

The class target is one integer per anchor: the class index (0..C-1), BACKGROUND (-1) or IGNORE (-2).
The one-hot `{0, 1}^(K, M, N, A, |Y|)` tensor of the original design holds the same information but
takes C times the memory (notebook 02 measures both); the loss (`retina.losses`) needs no one-hot at all.

Why in the collate_fn: matching is pure geometry that depends only on the data, so DataLoader worker
processes can do it in parallel with the training step, and the training process never waits for it.

Two ways to the same matching: `match_anchors(anchors[N, 4], ...)` compares every anchor with every box, as
torchvision's Matcher does (the version notebook 02 teaches); `match_anchors(anchor_grid(anchors, sizes), ...)`,
which the collate_fn uses, compares each box only with the few anchors whose IoU with it can change a fate: on
each level they form a small sub-grid around the box, known in closed form (`match_grid`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from retina.anchors import generate_anchors, grid_sizes
from retina.boxes import box_iou, encode_boxes
from retina.config import RetinaConfig
from retina.images import as_image_tensor, pad_images

BACKGROUND = -1
IGNORE = -2


class AnchorGrid(NamedTuple):
    """The anchors of one padded image size together with their grid layout, which lets `match_anchors` find the
    few anchors near a box in closed form instead of comparing the box with all N of them.

    Anchor (k, i, j, a) (level k, row i, column j, shape a) sits at index `first[s] + i * row_step[s] + j * A` of
    `anchors`, where s = k * A + a numbers the L * A "kinds" (a level and a shape). Its x coordinates depend only on
    (s, j), its y coordinates only on (s, i): `anchor_grid` checks that. Built by `anchor_grid`.
    """

    anchors: Tensor  # [N, 4] xyxy, level-major, each level laid out [H_k, W_k, A]
    centre_x: Tensor  # [S, W_max] float64: x centre of column j of kind s, +inf beyond the level's W_k columns
    centre_y: Tensor  # [S, H_max] float64: y centre of row i of kind s, +inf beyond H_k
    size: Tensor  # [S, 2] float64: (width, height) of kind s
    first: Tensor  # [S] int64: index of the kind's anchor at row 0, column 0
    row_step: Tensor  # [S] int64: W_k * A, the index distance between two rows
    num_shapes: int  # A: the index distance between two columns


def anchor_grid(anchors: Tensor, sizes: list[tuple[int, int]]) -> AnchorGrid:
    """Describe `anchors[N, 4]` (level-major, each level `[H_k, W_k, A]`, as `generate_anchors` makes them) as a
    grid of `sizes` = [(H_k, W_k), ...] (`retina.anchors.grid_sizes`). Raises ValueError if they are not one."""
    cells = sum(h * w for h, w in sizes)
    if cells == 0 or anchors.shape[0] % cells:
        raise ValueError(f"{anchors.shape[0]} anchors do not fill grids of {sizes} with the same shapes per cell")
    num_shapes = anchors.shape[0] // cells
    width_max, height_max = max(w for _, w in sizes), max(h for h, _ in sizes)
    centre_x, centre_y, size, first, row_step = [], [], [], [], []
    offset = 0
    for h, w in sizes:
        level = anchors[offset : offset + h * w * num_shapes].view(h, w, num_shapes, 4)
        xs, ys = level[0, :, :, 0::2], level[:, 0, :, 1::2]  # [W, A, 2], [H, A, 2]: one row, one column
        same_x = torch.equal(level[..., 0::2], xs.expand(h, -1, -1, -1))
        same_y = torch.equal(level[..., 1::2], ys[:, None].expand(-1, w, -1, -1))
        if not (same_x and same_y):
            raise ValueError(f"the anchors of the {h} x {w} level are not a grid: x must depend on the column only")
        cx, cy = xs.double().mean(-1).T, ys.double().mean(-1).T  # [A, W], [A, H]
        if (cx.diff(dim=1) < 0).any() or (cy.diff(dim=1) < 0).any():
            raise ValueError(f"the anchors of the {h} x {w} level do not move right and down with the grid")
        centre_x.append(torch.nn.functional.pad(cx, (0, width_max - w), value=torch.inf))
        centre_y.append(torch.nn.functional.pad(cy, (0, height_max - h), value=torch.inf))
        size.append(torch.stack((xs[0, :, 1] - xs[0, :, 0], ys[0, :, 1] - ys[0, :, 0]), dim=1).double())  # [A, 2]
        first.append(offset + torch.arange(num_shapes))
        row_step.append(torch.full((num_shapes,), w * num_shapes))
        offset += h * w * num_shapes
    lists = (centre_x, centre_y, size, first, row_step)
    return AnchorGrid(anchors, *(torch.cat(parts).to(anchors.device) for parts in lists), num_shapes)


def match_anchors(
    anchors: Tensor | AnchorGrid,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    gt_ignore: Tensor | None = None,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    low_quality_matches: bool = True,
) -> Tensor:
    """Match anchors to ground-truth boxes, all images at once.

    Args:
        anchors: `[N, 4]` xyxy, shared by the batch; or an `AnchorGrid` of them (the fast path, same result).
        gt_boxes: `[B, G, 4]` xyxy, padded to the batch's largest box count G.
        gt_valid: `[B, G]` bool, False for padding and for degenerate boxes (they can match nothing).
        gt_ignore: `[B, G]` bool, True for boxes that must not make foreground (crowd, difficult).
    Returns:
        `[B, N]` int64: the index g of the matched box for foreground anchors, BACKGROUND or IGNORE.

    With `[N, 4]` anchors every anchor is compared with every box, one slot g at a time for every image and anchor
    at once: the whole `[B, G, N]` IoU tensor of a COCO batch at 800 px (8 x 50 x 236k floats) is 380 MB, and
    allocating and streaming through that much memory costs more than computing the IoUs; a `[B, N]` slice is
    7.5 MB. With an `AnchorGrid`, `match_grid` compares each box only with the anchors that can matter.
    """
    if isinstance(anchors, AnchorGrid):
        if fg_iou > 0 and bg_iou > 0:  # else every anchor, however far from a box, can change its fate
            return match_grid(anchors, gt_boxes, gt_valid, gt_ignore, fg_iou, bg_iou, low_quality_matches)
        anchors = anchors.anchors
    batch, num_gt = gt_valid.shape
    num_anchors = anchors.shape[0]
    if gt_ignore is None:
        gt_ignore = torch.zeros_like(gt_valid)
    # A box that cannot make foreground (padding, degenerate, ignored) becomes the empty box (0, 0, 0, 0),
    # whose IoU with every anchor is 0; ignored boxes get their own IoU, for their neighbourhood.
    object_boxes = torch.where((gt_valid & ~gt_ignore)[..., None], gt_boxes, 0.0)  # [B, G, 4]
    is_ignored = gt_valid & gt_ignore  # [B, G]

    best_iou = anchors.new_zeros(batch, num_anchors)  # [B, N]: each anchor's best IoU with an object so far
    best_box = torch.zeros(batch, num_anchors, dtype=torch.long, device=anchors.device)  # [B, N]: and its slot g
    is_best = torch.zeros(batch, num_anchors, dtype=torch.bool, device=anchors.device)  # [B, N]: low-quality match
    near_ignored = torch.zeros_like(is_best)  # [B, N]: IoU >= bg_iou with an ignored box
    for g in range(num_gt):
        iou = box_iou(object_boxes[:, g, None, :], anchors)[:, 0]  # [B, N]
        better = iou > best_iou  # strictly: of tied boxes the first keeps the anchor, as in torchvision
        best_box.masked_fill_(better, g)
        best_iou = torch.maximum(best_iou, iou)
        if low_quality_matches:
            # Every anchor that ties for this box's best IoU becomes foreground, matched (as torchvision's
            # Matcher does) to its own best box. A box that overlaps no anchor at all (best IoU 0, as the
            # empty box) has no best anchor: its best becomes NaN, which equals nothing; else every anchor
            # would tie at 0.
            box_best = iou.amax(dim=1, keepdim=True)  # [B, 1]
            is_best |= iou == torch.where(box_best > 0, box_best, torch.nan)
        if is_ignored[:, g].any():
            ignored_box = torch.where(is_ignored[:, g, None], gt_boxes[:, g], 0.0)  # [B, 4]
            near_ignored |= box_iou(ignored_box[:, None, :], anchors)[:, 0] >= bg_iou

    matched = torch.where(best_iou < fg_iou, IGNORE, best_box)  # an anchor that overlaps nothing has best_iou 0
    matched = torch.where(best_iou < bg_iou, BACKGROUND, matched)
    if low_quality_matches:
        matched = torch.where(is_best, best_box, matched)
    return torch.where(near_ignored & (matched == BACKGROUND), IGNORE, matched)


def match_grid(
    grid: AnchorGrid,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    gt_ignore: Tensor | None = None,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    low_quality_matches: bool = True,
) -> Tensor:
    """`match_anchors` on an `AnchorGrid`, comparing each box only with the anchors whose IoU with it can matter.

    Same arguments and result as `match_anchors` (fg_iou and bg_iou > 0). An anchor's fate depends only on
      - its IoUs >= bg_iou (below, it is background unless it is a low-quality match), and
      - for each object box, the box's best IoU and the anchors that reach it (its low-quality matches).
    So each box needs only the anchors with IoU >= tau, tau = bg_iou, or for an object box with low-quality
    matches min(bg_iou, a lower bound of its best IoU: its IoU with the anchor of each kind nearest its centre).
    On each kind (a level and an anchor shape of w_a x h_a), those anchors are a sub-grid in closed form: the
    intersection is at most min(w, w_a) min(h, h_a), IoU >= tau needs an intersection of at least
    I = tau (w h + w_a h_a) / (1 + tau), so an overlap in x of at least I / min(h, h_a), and the x overlap of two
    boxes whose centres are d apart is at most (w + w_a) / 2 - d: the anchor's centre lies within
    (w + w_a) / 2 - I / min(h, h_a) of the box's (and the same in y). The IoUs of those pairs are computed exactly
    as box_iou does, so ties and thresholds come out as in the dense path. Only the few low-quality matches are
    then compared with every box of their image: each goes to its own best box, whose IoU with it may be lower
    than that box's tau.
    """
    anchors, num_anchors = grid.anchors, grid.anchors.shape[0]
    batch, num_gt = gt_valid.shape
    if gt_ignore is None:
        gt_ignore = torch.zeros_like(gt_valid)
    matched = torch.full((batch, num_anchors), BACKGROUND, dtype=torch.long, device=anchors.device)  # [B, N]
    image, slot = gt_valid.nonzero(as_tuple=True)  # [P] each: the valid boxes of the batch
    if len(image) == 0:
        return matched
    boxes = gt_boxes[image, slot]  # [P, 4]
    is_object = ~gt_ignore[image, slot]  # [P]
    box = boxes.double()
    centre = (box[:, :2] + box[:, 2:]) / 2  # [P, 2] (x, y)
    wh = box[:, 2:] - box[:, :2]  # [P, 2]

    # tau per box: bg_iou, or below it for boxes whose low-quality matches may have a lower IoU.
    tau = torch.full_like(box[:, 0], bg_iou)  # [P]
    if low_quality_matches:
        nearest = _anchor_index(grid, _nearest(grid.centre_x, centre[:, 0]), _nearest(grid.centre_y, centre[:, 1]))
        lower = _pair_iou(boxes[:, None, :].expand(-1, len(grid.first), -1), anchors[nearest]).amax(dim=1)  # [P]
        tau = torch.where(is_object, torch.minimum(tau, lower.double()), tau)
    # A margin for float32 rounding: a pair whose IoU computes as tau may be a hair below it in exact arithmetic.
    tau = (tau * (1 - 1e-4))[:, None]  # [P, 1]

    # The sub-grid of each (box p, kind s) pair: [P, S] ranges of columns [j0, j1) and rows [i0, i1).
    size = grid.size[None]  # [1, S, 2]
    overlap = torch.minimum(wh[:, None, :], size)  # [P, S, 2]: the largest overlap in x and y
    need = tau * (wh.prod(dim=1, keepdim=True) + size.prod(dim=2)) / (1 + tau)  # [P, S]: the least intersection
    least = torch.where(need[..., None] > 0, need[..., None] / overlap.flip(-1), 0.0)  # [P, S, 2]: least x, y overlap
    radius = (wh[:, None, :] + size) / 2 - least  # [P, S, 2]: the farthest anchor centre
    radius = radius + 1e-6 * (radius.abs() + centre.abs()[:, None, :]) + 1e-6  # the margin, in pixels
    radius = torch.where((least <= overlap).all(dim=-1, keepdim=True), radius, -torch.inf)  # else out of reach
    j0, j1 = _window(grid.centre_x, centre[:, 0], radius[..., 0])
    i0, i1 = _window(grid.centre_y, centre[:, 1], radius[..., 1])
    columns, count = j1 - j0, ((i1 - i0) * (j1 - j0)).flatten()  # [P, S], [P S]

    # Every (box, anchor) pair of the sub-grids, flattened: [T] each.
    segment = torch.repeat_interleave(count)  # [T]: the (box, kind) pair of each
    step = torch.arange(len(segment), device=anchors.device) - (count.cumsum(0) - count)[segment]
    columns = columns.flatten()[segment]
    row, column = step // columns, step % columns
    kind = segment % len(grid.first)
    anchor = _anchor_index(grid, j0.flatten()[segment] + column, i0.flatten()[segment] + row, kind)  # [T]
    pair_box = segment // len(grid.first)  # [T]: p
    iou = _pair_iou(boxes[pair_box], anchors[anchor])  # [T]
    key = image[pair_box] * num_anchors + anchor  # [T]: the anchor's place in matched.view(-1)

    # Anchors with IoU >= bg_iou with an object box: every such pair is among the T, so their best IoU and the
    # first box that has it (the dense path's tie-break) come from the pairs.
    strong = is_object[pair_box] & (iou >= bg_iou)  # [T]
    keys, inverse = key[strong].unique(return_inverse=True)  # [Q], [T_strong]
    strong_iou, strong_slot = iou[strong], slot[pair_box[strong]]
    best_iou = strong_iou.new_zeros(len(keys)).scatter_reduce(0, inverse, strong_iou, "amax")  # [Q]
    tied = strong_iou == best_iou[inverse]
    best_box = torch.full_like(keys, num_gt).scatter_reduce(0, inverse[tied], strong_slot[tied], "amin")  # [Q]
    matched.view(-1)[keys] = torch.where(best_iou < fg_iou, IGNORE, best_box)

    if low_quality_matches:
        # Each box's best anchors (every tie) are foreground, matched to their own best box. That box may have a
        # lower IoU with them than its own tau (for a small box's best anchor, inside a large box), so these few
        # anchors are compared with every box of their image, as the dense path does.
        object_iou = torch.where(is_object[pair_box], iou, 0.0)  # [T]
        box_best = object_iou.new_zeros(len(boxes)).scatter_reduce(0, pair_box, object_iou, "amax")  # [P]
        keys = key[(object_iou == box_best[pair_box]) & (object_iou > 0)].unique()  # [L]
        image_l, anchor_l = keys // num_anchors, keys % num_anchors
        iou_l = _pair_iou(gt_boxes[image_l], anchors[anchor_l, None, :])  # [L, G]
        iou_l = torch.where((gt_valid & ~gt_ignore)[image_l], iou_l, -1.0)
        tied = iou_l == iou_l.amax(dim=1, keepdim=True)
        slots = torch.arange(num_gt, device=anchors.device)
        matched.view(-1)[keys] = torch.where(tied, slots, num_gt).amin(dim=1)  # of tied boxes, the first

    # Background anchors with IoU >= bg_iou with an ignored box are ignored.
    near = key[~is_object[pair_box] & (iou >= bg_iou)]
    fate = matched.view(-1)[near]
    matched.view(-1)[near] = torch.where(fate == BACKGROUND, IGNORE, fate)
    return matched


def _pair_iou(boxes: Tensor, anchors: Tensor) -> Tensor:
    """IoU of `boxes[..., 4]` with `anchors[..., 4]` pair by pair (broadcast): `-> [...]`, as box_iou computes it."""
    return box_iou(boxes[..., None, :], anchors[..., None, :])[..., 0, 0]


def _nearest(centres: Tensor, values: Tensor) -> Tensor:
    """`[S, M]` sorted centres, `[P]` values -> `[P, S]`: an index (the first centre at or after the value, or the
    last) whose centre is within one grid step of the value."""
    index = torch.searchsorted(centres, values[None, :].expand(len(centres), -1).contiguous()).T  # [P, S]
    last = torch.isfinite(centres).sum(dim=1) - 1  # [S]
    return torch.minimum(index, last)


def _window(centres: Tensor, values: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
    """`[S, M]` sorted centres, `[P]` values, `[P, S]` radii -> `[P, S]` each: the index range [lo, hi) of the
    centres within `radius` of the value (empty when the radius is -inf)."""
    lo = torch.searchsorted(centres, (values[:, None] - radius).T.contiguous()).T
    hi = torch.searchsorted(centres, (values[:, None] + radius).T.contiguous(), right=True).T
    return lo, torch.maximum(hi, lo)


def _anchor_index(grid: AnchorGrid, column: Tensor, row: Tensor, kind: Tensor | None = None) -> Tensor:
    """The index in `grid.anchors` of the anchor at `column`, `row` of `kind` (default: the kind is the last
    dimension, `[..., S]`)."""
    if kind is None:
        return grid.first + row * grid.row_step + column * grid.num_shapes
    return grid.first[kind] + row * grid.row_step[kind] + column * grid.num_shapes


def encode_targets(
    anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, matched: Tensor, weights=(1.0, 1.0, 1.0, 1.0)
) -> tuple[Tensor, Tensor]:
    """Per-anchor targets from a matching.

    Args:
        anchors: `[N, 4]`; gt_boxes: `[B, G, 4]`; gt_labels: `[B, G]`; matched: `[B, N]` from match_anchors.
    Returns:
        cls_targets `[B, N]` int64 (class index, BACKGROUND or IGNORE) and box_targets `[B, N, 4]`
        (deltas for foreground anchors, 0 elsewhere).
    """
    box_targets = anchors.new_zeros(*matched.shape, 4)
    if gt_boxes.shape[1] == 0:  # no box in the whole batch: nothing to gather
        return matched.clone(), box_targets
    # Only the F foreground anchors (a few hundred per image among ~100k) have a class and deltas; the rest keep
    # their fate (BACKGROUND or IGNORE) and zero deltas.
    image_index, anchor_index = (matched >= 0).nonzero(as_tuple=True)  # [F] each
    box_index = matched[image_index, anchor_index]  # [F]
    cls_targets = matched.clone()
    cls_targets[image_index, anchor_index] = gt_labels[image_index, box_index]
    boxes = gt_boxes[image_index, box_index]  # [F, 4]
    box_targets[image_index, anchor_index] = encode_boxes(boxes, anchors[anchor_index], weights).to(box_targets.dtype)
    return cls_targets, box_targets


def pad_targets(targets: list[dict]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pad the per-image boxes to `[B, G, 4]`, labels and flags to `[B, G]`; returns
    (boxes, labels, valid, ignore). Degenerate boxes (width or height <= 0) are marked not valid."""
    boxes = pad_sequence([t["boxes"].float().reshape(-1, 4) for t in targets], batch_first=True)
    labels = pad_sequence([t["labels"].long().reshape(-1) for t in targets], batch_first=True)
    counts = torch.tensor([len(t["boxes"]) for t in targets])
    present = torch.arange(boxes.shape[1])[None, :] < counts[:, None]  # [B, G]
    ignore = pad_sequence(
        [t.get("ignore", torch.zeros(len(t["boxes"]), dtype=torch.bool)).bool().reshape(-1) for t in targets],
        batch_first=True,
    )
    if ignore.shape != present.shape:  # every image without boxes
        ignore = torch.zeros_like(present)
    valid = present & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    return boxes, labels, valid, ignore & present


def check_targets(target: dict, num_classes: int, where: str) -> None:
    """Clear errors for targets the matcher cannot use: wrong shapes, NaN/inf, labels out of range."""
    boxes, labels = target.get("boxes"), target.get("labels")
    if boxes is None or labels is None:
        raise ValueError(f"{where}: a target needs 'boxes' [n, 4] and 'labels' [n]; got keys {sorted(target)}")
    if boxes.numel() and (boxes.ndim != 2 or boxes.shape[1] != 4):
        raise ValueError(f"{where}: 'boxes' must be [n, 4] xyxy, got shape {list(boxes.shape)}")
    if len(boxes) != len(labels):
        raise ValueError(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
    if boxes.numel() and not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{where}: 'boxes' contain NaN or inf: {boxes[~torch.isfinite(boxes).all(1)].tolist()}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{where}: labels must be in 0..{num_classes - 1}, got {sorted(set(labels.tolist()))}")


@functools.lru_cache(maxsize=16)
def cached_grid(config: RetinaConfig, image_size: tuple[int, int]) -> AnchorGrid:
    """The `AnchorGrid` of `generate_anchors`, remembered: the batches of a run share a few padded sizes (one, for
    the shapes set)."""
    return anchor_grid(generate_anchors(config, image_size), grid_sizes(image_size, config.strides))


class DetectionCollate:
    """`collate_fn` that pads a batch, builds its anchors and encodes every anchor's targets.

    `DataLoader(dataset, batch_size=B, collate_fn=DetectionCollate(config), num_workers=W)` yields:
        images       `[B, 3, H, W]` float in [0, 1], H and W multiples of `config.size_divisible`
        cls_targets  `[B, N]` int64: class index, BACKGROUND (-1) or IGNORE (-2)
        box_targets  `[B, N, 4]` float: deltas for foreground anchors
        image_sizes  `[B, 2]` (height, width) of each image before padding
        targets      the input targets, for evaluation
    """

    def __init__(self, config: RetinaConfig):
        self.config = config

    def __call__(self, batch: list[tuple[Tensor, dict]]) -> dict:
        if len(batch) == 0:
            raise ValueError("cannot collate an empty batch")
        targets = [t for _, t in batch]
        images = [as_image_tensor(img, f"image {t.get('image_id', i)}") for i, (img, t) in enumerate(batch)]
        for i, t in enumerate(targets):
            check_targets(t, self.config.num_classes, f"image {t.get('image_id', i)}")
        cfg = self.config
        padded, sizes = pad_images(images, cfg.size_divisible, cfg.pad_colour)
        boxes, labels, valid, ignore = pad_targets(targets)
        grid = cached_grid(cfg, tuple(padded.shape[-2:]))
        matched = match_anchors(grid, boxes, valid, ignore, cfg.fg_iou, cfg.bg_iou, cfg.low_quality_matches)
        cls_targets, box_targets = encode_targets(grid.anchors, boxes, labels, matched, cfg.box_weights)
        return {
            "images": padded,
            "cls_targets": cls_targets,
            "box_targets": box_targets,
            "image_sizes": sizes,
            "targets": list(targets),
        }


def split_levels(per_anchor: Tensor, config: RetinaConfig, image_size: tuple[int, int]) -> list[Tensor]:
    """The per-level view of a per-anchor tensor, for teaching and plotting.

    `[B, N, ...]` -> a list over levels of `[B, H_k, W_k, A, ...]` (the anchors' own layout).
    """
    grids = grid_sizes(image_size, config.strides)
    counts = [h * w * config.num_anchors for h, w in grids]
    chunks = per_anchor.split(counts, dim=1)
    return [
        chunk.reshape(per_anchor.shape[0], h, w, config.num_anchors, *per_anchor.shape[2:])
        for chunk, (h, w) in zip(chunks, grids, strict=True)
    ]
