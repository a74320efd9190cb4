"""The NMS explorer of 06_nms.ipynb and the plain functions it shows, tested without a browser:

candidates_before_nms  every candidate detection of an image before NMS
nms_filter             score threshold, then class-wise greedy NMS: the detections that survive
true_positives         which detections are right (IoU >= 0.5 with an unclaimed ground-truth box of their class)
"""

from __future__ import annotations

import ipywidgets as widgets
import torch
from torch import Tensor

from retina.anchors import anchors_per_level_counts
from retina.boxes import box_iou
from retina.figures.nms import nms_figure
from retina.postprocess import batched_nms, postprocess_detections
from retina.widgets.common import Widget, widget_bundle, with_picture


def nms_filter(boxes: Tensor, scores: Tensor, labels: Tensor, score_thresh: float, iou_thresh: float) -> Tensor:
    """Indices of the detections kept by a score threshold (score > `score_thresh`) followed by greedy NMS
    within each class at `iou_thresh` (`retina.postprocess.batched_nms`), best first."""
    above = torch.nonzero(scores > score_thresh).squeeze(1)
    keep = batched_nms(boxes[above], scores[above], labels[above], iou_thresh)
    return above[keep]


def true_positives(
    boxes: Tensor, scores: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_thresh: float = 0.5
) -> Tensor:
    """Which detections are right, as AP50 counts them: going down the detections by score, each claims the
    not yet claimed ground-truth box of its own class that it overlaps most, if that IoU is >= `iou_thresh`.
    Returns a bool per detection (in the order given)."""
    right = torch.zeros(len(boxes), dtype=torch.bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return right
    iou = box_iou(boxes, gt_boxes)  # [D, G]
    iou[labels[:, None] != gt_labels[None, :]] = -1.0  # another class never matches
    claimed = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for i in scores.argsort(descending=True, stable=True).tolist():
        overlap = iou[i].masked_fill(claimed, -1.0)
        best = int(overlap.argmax())
        if overlap[best] >= iou_thresh:
            right[i], claimed[best] = True, True
    return right


@torch.no_grad()
def candidates_before_nms(model, image: Tensor) -> dict[str, Tensor]:
    """Every candidate detection of `image` before NMS, on the CPU: the network's outputs for every anchor and
    `postprocess_detections` with no score threshold and NMS switched off (IoU threshold 1), which leaves the best
    `topk_candidates` (anchor, class) scores of each level, decoded. 06_nms.ipynb does it by hand first."""
    device = next(model.parameters()).device
    batch, sizes = model.preprocess([image], resize=False)  # checked, and padded as `detect` pads
    size = tuple(batch.shape[-2:])
    cls_logits, box_deltas = model(batch)  # [1, N, C], [1, N, 4]
    no_nms = model.config.replace(nms_thresh=1.0, score_thresh=0.0, detections_per_img=100_000)
    counts = anchors_per_level_counts(model.config, size)
    raw = postprocess_detections(cls_logits, box_deltas, model.anchors(size), sizes.to(device), no_nms, counts)[0]
    return {key: value.cpu() for key, value in raw.items()}


class NMSExplorer(Widget):
    """Score and IoU threshold sliders and an image picker over the raw detections of a few images: draws the
    candidates above the score threshold and what class-wise NMS keeps of them, with the ground truth (dashed
    white) and each kept box green if right and red if wrong (`true_positives` at IoU 0.5), labels drawn so the
    best score is on top (06_nms.ipynb).

    Args:
        samples: one dict per image: "image" `[3, H, W]`, the candidates "boxes" `[K, 4]`, "scores" `[K]`,
            "labels" `[K]` (e.g. `candidates_before_nms`) and optionally the ground truth "gt_boxes" `[G, 4]`,
            "gt_labels" `[G]`.
        classes: the class names, for the labels.
    Besides the live widget, its output carries the picture as a JPEG, for readers without a kernel.
    """

    def __init__(self, samples: list[dict[str, Tensor]], classes: list[str] | None = None):
        self.samples, self.classes = samples, classes
        style = {"description_width": "initial"}
        self.picker = widgets.Dropdown(
            options=[(f"image {i + 1} of {len(samples)}", i) for i in range(len(samples))], value=0,
            description="image", style=style, layout={"width": "180px"},
        )  # fmt: skip
        self.score = widgets.FloatSlider(0.3, min=0.05, max=0.95, step=0.05, description="score >", style=style)
        self.iou = widgets.FloatSlider(0.5, min=0.1, max=1.0, step=0.05, description="NMS IoU", style=style)
        self._build([self.picker, self.score, self.iou])

    @property
    def sample(self) -> dict[str, Tensor]:
        return self.samples[self.picker.value]

    @property
    def boxes(self) -> Tensor:
        return self.sample["boxes"]

    @property
    def scores(self) -> Tensor:
        return self.sample["scores"]

    @property
    def labels(self) -> Tensor:
        return self.sample["labels"]

    def draw(self):
        above = torch.nonzero(self.scores > self.score.value).squeeze(1)
        boxes, scores, labels = self.boxes[above], self.scores[above], self.labels[above]
        keep = nms_filter(boxes, scores, labels, self.score.value, self.iou.value)
        names = None if self.classes is None else [self.classes[c] for c in labels.tolist()]
        gt_boxes, correct = self.sample.get("gt_boxes"), None
        if gt_boxes is not None:
            correct = true_positives(boxes[keep], scores[keep], labels[keep], gt_boxes, self.sample["gt_labels"])
        return nms_figure(self.sample["image"], boxes, scores, keep, names, gt_boxes, correct)

    def _repr_mimebundle_(self, **kwargs):
        return with_picture(widget_bundle(self.widget, **kwargs), self.draw())
