"""From raw outputs to detections: decode, threshold, non-maximum suppression (paper Sec. 4, "Inference").

Taught in notebooks/06_nms.ipynb. Two versions of the same idea:
    nms, batched_nms        greedy NMS written to be read: keep the best box, drop every box that
                            overlaps it by IoU > threshold, repeat. Keeps exactly what
                            `torchvision.ops.nms` / `batched_nms` keep.
    postprocess_detections  the fast path the model uses, for the whole batch at once: per level keep
                            the top 1000 scores above 0.05, decode their boxes, clip them to the image,
                            run class-wise NMS (0.5) and keep the best 300 per image.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from retina.boxes import box_iou, clip_boxes, decode_boxes
from retina.config import RetinaConfig


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
    anchors_per_level: list[int],
) -> list[dict[str, Tensor]]:
    """Detections of a batch, without a loop over images.

    Args:
        cls_logits: `[B, N, C]`; box_deltas: `[B, N, 4]`; anchors: `[N, 4]`.
        image_sizes: `[B, 2]` (height, width) that boxes are clipped to.
        anchors_per_level: N_k for each level (`retina.anchors.anchors_per_level_counts`); the top-k is
            taken per level, so that the many small anchors of P3 cannot crowd out the large ones.
    Returns:
        one `{"boxes" [K, 4], "scores" [K], "labels" [K]}` per image, best first, K <= detections_per_img.
    """
    batch, _, num_classes = cls_logits.shape
    scores, boxes, labels = [], [], []
    for logits, deltas, level_anchors in zip(
        cls_logits.split(anchors_per_level, dim=1),
        box_deltas.split(anchors_per_level, dim=1),
        anchors.split(anchors_per_level),
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

