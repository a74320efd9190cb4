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
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from retina.anchors import generate_anchors, grid_sizes
from retina.boxes import box_iou, encode_boxes
from retina.config import RetinaConfig

BACKGROUND = -1
IGNORE = -2


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    gt_ignore: Tensor | None = None,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    low_quality_matches: bool = True,
) -> Tensor:
    """Match anchors to ground-truth boxes, all images at once.

    Args:
        anchors: `[N, 4]` xyxy, shared by the batch.
        gt_boxes: `[B, G, 4]` xyxy, padded to the batch's largest box count G.
        gt_valid: `[B, G]` bool, False for padding and for degenerate boxes (they can match nothing).
        gt_ignore: `[B, G]` bool, True for boxes that must not make foreground (crowd, difficult).
    Returns:
        `[B, N]` int64: the index g of the matched box for foreground anchors, BACKGROUND or IGNORE.

    The boxes are taken one slot g at a time, for every image and anchor at once: the whole `[B, G, N]` IoU
    tensor of a COCO batch at 800 px (8 x 50 x 236k floats) is 380 MB, and allocating and streaming through
    that much memory costs more than computing the IoUs; a `[B, N]` slice is 7.5 MB.
    """
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
    foreground = matched >= 0  # [B, N]
    box_targets = anchors.new_zeros(*matched.shape, 4)
    if gt_boxes.shape[1] == 0:  # no box in the whole batch: nothing to gather
        return matched.clone(), box_targets
    labels = torch.gather(gt_labels, 1, matched.clamp(min=0))  # [B, N]
    cls_targets = torch.where(foreground, labels, matched)
    # Only the F foreground anchors (a few hundred per image among ~100k) have deltas; the rest stay 0.
    image_index, anchor_index = foreground.nonzero(as_tuple=True)  # [F] each
    boxes = gt_boxes[image_index, matched[image_index, anchor_index]]  # [F, 4]
    box_targets[image_index, anchor_index] = encode_boxes(boxes, anchors[anchor_index], weights).to(box_targets.dtype)
    return cls_targets, box_targets


def as_image_tensor(image: Tensor, where: str = "image") -> Tensor:
    """Check one image and return it as float32 `[3, H, W]` in [0, 1].

    uint8 images are divided by 255, other floats cast to float32; anything not `[3, H, W]` is an error.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor [3, H, W], got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{where}: expected an RGB image of shape [3, H, W], got {list(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float().div_(255)  # in place on the new float copy: one pass less
    if not image.is_floating_point():
        raise TypeError(f"{where}: expected float values in [0, 1] or uint8, got {image.dtype}")
    return image.float()  # one dtype for the batch, whatever the first image was


def pad_images(
    images: list[Tensor], size_divisible: int, colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> tuple[Tensor, Tensor]:
    """Stack images of different sizes into `[B, 3, H, W]`, padded at the bottom and right to a multiple of
    `size_divisible` with `colour` (black by default). Returns the batch and the `[B, 2]` (height, width) of
    each image."""
    sizes = torch.tensor([img.shape[-2:] for img in images], dtype=torch.long)  # [B, 2]
    height, width = (-(-sizes.max(dim=0).values // size_divisible) * size_divisible).tolist()
    if all(tuple(img.shape[-2:]) == (height, width) for img in images):  # nothing to pad (a 256 px shapes batch)
        return torch.stack(images), sizes
    batch = images[0].new_tensor(colour)[None, :, None, None].repeat(len(images), 1, height, width)
    for img, canvas in zip(images, batch, strict=True):
        canvas[:, : img.shape[1], : img.shape[2]].copy_(img)
    return batch, sizes


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
def cached_anchors(config: RetinaConfig, image_size: tuple[int, int]) -> Tensor:
    """`generate_anchors`, remembered: the batches of a run share a few padded sizes (one, for the shapes set)."""
    return generate_anchors(config, image_size)


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
        images, targets = zip(*batch, strict=True)
        images = [as_image_tensor(img, f"image {t.get('image_id', i)}") for i, (img, t) in enumerate(batch)]
        for i, t in enumerate(targets):
            check_targets(t, self.config.num_classes, f"image {t.get('image_id', i)}")
        cfg = self.config
        padded, sizes = pad_images(images, cfg.size_divisible, cfg.pad_colour)
        boxes, labels, valid, ignore = pad_targets(list(targets))
        anchors = cached_anchors(cfg, tuple(padded.shape[-2:]))
        matched = match_anchors(anchors, boxes, valid, ignore, cfg.fg_iou, cfg.bg_iou, cfg.low_quality_matches)
        cls_targets, box_targets = encode_targets(anchors, boxes, labels, matched, cfg.box_weights)
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
