"""From raw outputs to detections: decode, threshold, non-maximum suppression (paper Sec. 4, "Inference").

Taught in notebooks/06_nms.ipynb. Two versions of the same idea:
    nms, batched_nms        greedy NMS written to be read: keep the best box, drop every box that
                            overlaps it by IoU > threshold, repeat. Keeps exactly what
                            `torchvision.ops.nms` / `batched_nms` keep.
    postprocess_detections  the fast path the model uses, for the whole batch at once: per level keep
                            the top 1000 scores above 0.05, decode their boxes, clip them to the image,
                            run class-wise NMS (0.5) and keep the best 300 per image.
And before them, optionally, test-time augmentation (`average_views`, not in the paper): the network sees the
image turned and mirrored, and each anchor's class scores and box are averaged over the views.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from retina.anchors import generate_anchors, grid_sizes
from retina.boxes import box_iou, clip_boxes, decode_boxes, encode_boxes, turn_boxes
from retina.config import RetinaConfig

# The views of test-time augmentation, as (quarter turns k, mirrored): "d4" is the eight symmetries of the square.
TTA_VIEWS = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "d4": tuple((k, mirrored) for k in range(4) for mirrored in (False, True)),
}


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS, one box at a time. `boxes[K, 4]` xyxy, `scores[K]` -> kept indices, best first."""
    return batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within each group (class, or image and class): a box only suppresses its own group.

    Ties in score are broken by the lower index first, as torchvision's stable sort does.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes, boxes)  # [K, K]
    same_group = groups[:, None] == groups[None, :]
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= (iou[i] > iou_threshold) & same_group[i]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def grouped_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """The indices that `torchvision.ops.batched_nms` keeps (NMS within each group), best score first.

    On the GPU this is torchvision's own call: one NMS over all boxes, the groups shifted apart. On the CPU,
    torchvision runs one NMS per group but scans all K boxes for the members of each; with the thousands of
    (image, class) groups of a batch, that scan cost more than the NMS. Sorting the boxes by group once makes
    each group a slice of that order instead.
    """
    if boxes.device.type != "cpu":
        return torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)
    order = torch.sort(groups, stable=True).indices  # [K]
    sizes = torch.unique_consecutive(groups[order], return_counts=True)[1].tolist()
    kept = [
        members[torchvision.ops.nms(boxes[members], scores[members], iou_threshold)] for members in order.split(sizes)
    ]
    keep = torch.cat([order[:0], *kept])  # order[:0]: an empty start, for a batch without boxes
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def postprocess_detections(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    image_sizes: Tensor,
    config: RetinaConfig,
    level_counts: list[int],
) -> list[dict[str, Tensor]]:
    """Detections of a batch, without a loop over images.

    Args:
        cls_logits: `[B, N, C]`; box_deltas: `[B, N, 4]`; anchors: `[N, 4]`.
        image_sizes: `[B, 2]` (height, width) that boxes are clipped to.
        level_counts: N_k, the number of anchors of each level (`retina.anchors.anchors_per_level_counts`); the top-k is
            taken per level, so that the many small anchors of P3 cannot crowd out the large ones.
    Returns:
        one `{"boxes" [K, 4], "scores" [K], "labels" [K]}` per image, best first, K <= detections_per_img.
    """
    batch, _, num_classes = cls_logits.shape
    scores, boxes, labels = [], [], []
    for logits, deltas, level_anchors in zip(
        cls_logits.split(level_counts, dim=1),
        box_deltas.split(level_counts, dim=1),
        anchors.split(level_counts),
        strict=True,
    ):
        # The k best (anchor, class) pairs of a level all belong to the k anchors with the best class logits
        # (an anchor outside them is beaten by k pairs: their best ones). So the top-k runs over the N_k
        # anchors, then over the k * C pairs of the winners, not over all N_k * C pairs: on the CPU that
        # top-k took most of the post-processing time. sigmoid is increasing, so the best logits are the
        # best scores, and only those k need the sigmoid.
        k = min(config.topk_candidates, logits.shape[1] * num_classes)
        best_anchors = logits.amax(dim=2).topk(min(k, logits.shape[1]), dim=1).indices  # [B, k' <= k]
        candidates = logits.gather(1, best_anchors[..., None].expand(-1, -1, num_classes))  # [B, k', C]
        top_logits, top = candidates.flatten(1).topk(k, dim=1)  # [B, k]
        anchor_index = best_anchors.gather(1, top // num_classes)  # [B, k]
        top_deltas = deltas.gather(1, anchor_index[..., None].expand(-1, -1, 4))  # [B, k, 4]
        boxes.append(decode_boxes(top_deltas, level_anchors[anchor_index], config.box_weights, config.box_clip))
        scores.append(torch.sigmoid(top_logits))
        labels.append(top % num_classes)
    scores, boxes, labels = torch.cat(scores, 1), torch.cat(boxes, 1), torch.cat(labels, 1)  # [B, K(, 4)]

    boxes = clip_boxes(boxes, image_sizes[:, None, :])  # each image's own (height, width)

    # NMS for the whole batch at once: a box competes only with boxes of its own image and class.
    image_index = torch.arange(batch, device=scores.device)[:, None].expand_as(scores)
    above = scores > config.score_thresh
    scores, boxes, labels, image_index = scores[above], boxes[above], labels[above], image_index[above]
    keep = grouped_nms(boxes, scores, image_index * num_classes + labels, config.nms_thresh)

    # keep is sorted by score; a stable sort by image keeps that order within each image.
    keep = keep[torch.sort(image_index[keep], stable=True).indices]
    per_image = torch.bincount(image_index[keep], minlength=batch)
    rank = torch.arange(len(keep), device=keep.device) - (per_image.cumsum(0) - per_image)[image_index[keep]]
    keep = keep[rank < config.detections_per_img]
    sections = per_image.clamp(max=config.detections_per_img).tolist()
    boxes, scores, labels = boxes[keep].split(sections), scores[keep].split(sections), labels[keep].split(sections)
    return [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels, strict=True)]


# ------------------------------------------------------------------------------------- test-time augmentation


def view_images(images: Tensor, k: int, mirrored: bool) -> Tensor:
    """`images[B, 3, H, W]` turned by k quarter turns (`torch.rot90`, x towards -y), then mirrored left-right."""
    images = torch.rot90(images, k, dims=(-2, -1))
    return images.flip(-1) if mirrored else images


def unview_boxes(boxes: Tensor, k: int, mirrored: bool, image_size: tuple[int, int]) -> Tensor:
    """Boxes `[..., 4]` xyxy found in `view_images(images, k, mirrored)` moved back into `images`, whose
    (height, width) is `image_size`: mirrored back, then turned back."""
    height, width = image_size
    view_size = (height, width) if k % 2 == 0 else (width, height)
    if mirrored:
        x1, y1, x2, y2 = boxes.unbind(-1)
        boxes = torch.stack((view_size[1] - x2, y1, view_size[1] - x1, y2), dim=-1)
    return turn_boxes(boxes, -k, view_size)


def unview_anchors(
    per_anchor: Tensor, k: int, mirrored: bool, config: RetinaConfig, image_size: tuple[int, int]
) -> Tensor:
    """A per-anchor tensor `[B, N, ...]` of the view (k, mirrored) of images sized `image_size`, reordered to the
    images' own anchors: entry n is then about the anchor that the view's entry was about, seen unturned.

    With cell-centred anchors on exact grids, turning or mirroring the image moves every anchor onto another one;
    a quarter turn also swaps its width and height, so an anchor of aspect ratio r becomes one of 1 / r.
    """
    height, width = image_size
    view_size = (height, width) if k % 2 == 0 else (width, height)
    ratios, scales = config.aspect_ratios, len(config.anchor_scales)
    shape_of_view = torch.arange(config.num_anchors)  # ratio-major, as anchor_shapes
    if k % 2:
        inverse = [min(range(len(ratios)), key=lambda j: abs(ratios[j] * r - 1.0)) for r in ratios]
        shape_of_view = (torch.tensor(inverse)[:, None] * scales + torch.arange(scales)).flatten()
    grids = grid_sizes(view_size, config.strides)
    levels = []
    chunks = per_anchor.split([h * w * config.num_anchors for h, w in grids], dim=1)
    for chunk, (h, w) in zip(chunks, grids, strict=True):
        grid = chunk.reshape(chunk.shape[0], h, w, config.num_anchors, *chunk.shape[2:])  # [B, H_k, W_k, A, ...]
        if mirrored:
            grid = grid.flip(2)
        grid = torch.rot90(grid, -k, dims=(1, 2))[:, :, :, shape_of_view]
        levels.append(grid.reshape(chunk.shape[0], -1, *chunk.shape[2:]))
    return torch.cat(levels, dim=1)


def check_tta(config: RetinaConfig, views=None, image_size: tuple[int, int] | None = None) -> None:
    """Raise a ValueError if the views (default: `config.tta`'s) cannot be averaged for this config, on a padded
    batch of `image_size` if given."""
    if views is None:
        if config.tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {list(TTA_VIEWS)}, got {config.tta!r}")
        views = TTA_VIEWS[config.tta]
    if all(view == (0, False) for view in views):
        return
    if config.anchor_offset != 0.5:
        raise ValueError(
            f"test-time augmentation needs cell-centred anchors (anchor_offset=0.5, not {config.anchor_offset}): "
            "only then are the anchors of a mirrored or turned image the mirrored or turned anchors"
        )
    ratios = config.aspect_ratios
    if any(k % 2 for k, _ in views) and any(min(abs(r * q - 1.0) for q in ratios) > 1e-6 for r in ratios):
        raise ValueError(
            f"a quarter turn makes an anchor of aspect ratio r one of 1 / r, but aspect_ratios {ratios} lack some "
            "1 / r: use tta='flip', or ratios such as (0.5, 1.0, 2.0)"
        )
    if image_size is not None and any(side % stride for side in image_size for stride in config.strides):
        raise ValueError(
            f"test-time augmentation needs a padded size that every stride {config.strides} divides, got "
            f"{tuple(image_size)} (size_divisible=128 pads to one)"
        )


def average_views(forward, images: Tensor, config: RetinaConfig, views=None) -> tuple[Tensor, Tensor]:
    """Test-time augmentation: class logits `[B, N, C]` and box deltas `[B, N, 4]` of a padded batch
    `images[B, 3, H, W]`, averaged over views of it, for `postprocess_detections` as they come.

    `forward(images)` returns (class logits, box deltas), as `RetinaNet.forward`. Each view (k quarter turns,
    mirrored or not; default `TTA_VIEWS[config.tta]`) runs through it; its boxes are decoded, moved back into the
    image and re-ordered to the image's own anchors. Each anchor's class probabilities and box corners are then
    the mean over the views, and turned back into logits and deltas. With the one view (0, False) this is
    `forward(images)`. A detector that has not learnt that a shape is the same shape turned gets noisy class
    scores; the mean over views cancels part of that noise.
    """
    views = TTA_VIEWS[config.tta] if views is None else tuple(views)
    if views == ((0, False),):
        return forward(images)
    image_size = tuple(images.shape[-2:])
    check_tta(config, views, image_size)
    probabilities, boxes = 0.0, 0.0
    for k, mirrored in views:
        view = view_images(images, k, mirrored)
        logits, deltas = forward(view)
        view_anchors = generate_anchors(config, tuple(view.shape[-2:])).to(deltas.device)
        view_boxes = decode_boxes(deltas.float(), view_anchors, config.box_weights, config.box_clip)
        view_boxes = unview_boxes(view_boxes, k, mirrored, image_size)
        probabilities = probabilities + unview_anchors(logits.float().sigmoid(), k, mirrored, config, image_size)
        boxes = boxes + unview_anchors(view_boxes, k, mirrored, config, image_size)
    probabilities, boxes = probabilities / len(views), boxes / len(views)
    anchors = generate_anchors(config, image_size).to(boxes.device)
    # logit(p) at eps 1e-6 keeps the logits finite; 1e-6 is far below any score threshold
    return torch.logit(probabilities, eps=1e-6), encode_boxes(boxes, anchors, config.box_weights)
