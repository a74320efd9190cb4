"""Notebook widgets: the anchor tuner (01_anchors.ipynb), the focal-loss explorer (03_focal_loss.ipynb), the live
loss curve (05_training.ipynb) and the NMS explorer (06_nms.ipynb).

Each widget is a thin shell around plain functions that do the work, so the work is tested without a browser
(tests/test_widgets.py):

    anchor_config   the RetinaConfig that a tuner setting (base size, scales per octave, ratios, IoU) means
    anchor_recall   each ground-truth box's best anchor (IoU, level, box) and the share of boxes that have
                    an anchor at IoU >= fg_iou ("anchor recall"), in total and per level
    nms_filter      score threshold, then class-wise greedy NMS: the detections that survive
    true_positives  which detections are right (IoU >= 0.5 with an unclaimed ground-truth box of their class)
    step0_loss      the classification loss at step 0 for a prior, alpha and gamma
    easy_negative_share  the share of entries that are easy negatives, and of the loss they carry
"""

from __future__ import annotations

import base64
import io
import math
import signal
import threading
from pathlib import Path

import ipywidgets as widgets
import torch
import torch.nn.functional as F
from IPython.display import Image, display
from matplotlib import pyplot as plt
from torch import Tensor

from retina.anchors import anchor_shapes, generate_anchors, grid_sizes
from retina.boxes import box_iou
from retina.config import RetinaConfig
from retina.figures import LEVEL_NAMES, anchor_recall_figure, focal_explorer_figure, nms_figure
from retina.losses import sigmoid_focal_loss
from retina.postprocess import batched_nms
from retina.targets import BACKGROUND, IGNORE, match_anchors
from retina.viz import plot_loss_curve, read_metrics

ASPECT_RATIOS = (1 / 3, 1 / 2, 1.0, 2.0, 3.0)  # the tuner's choices (height / width)


def anchor_config(
    base_size: float,
    scales_per_octave: int = 3,
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    fg_iou: float = 0.5,
    config: RetinaConfig | None = None,
) -> RetinaConfig:
    """`config` (default: the paper's) with anchor size `base_size * 2^k` on level k, scales
    `2^(i / scales_per_octave)`, i = 0..scales_per_octave-1, the given aspect ratios, and the foreground
    threshold `fg_iou` (the background threshold is lowered to it if it was higher)."""
    config = config or RetinaConfig()
    if base_size <= 0 or scales_per_octave < 1 or not aspect_ratios:
        raise ValueError("need base_size > 0, scales_per_octave >= 1 and at least one aspect ratio")
    return config.replace(
        anchor_sizes=tuple(base_size * 2**k for k in range(len(config.strides))),
        anchor_scales=tuple(2 ** (i / scales_per_octave) for i in range(scales_per_octave)),
        aspect_ratios=tuple(float(r) for r in aspect_ratios),
        fg_iou=fg_iou,
        bg_iou=min(config.bg_iou, fg_iou),
    )


def _padded(size: tuple[int, int], divisible: int) -> tuple[int, int]:
    return tuple(-(-int(s) // divisible) * divisible for s in size)


def _best_on_level(
    boxes: Tensor, shapes: Tensor, grid: tuple[int, int], stride: int, offset: float
) -> tuple[Tensor, Tensor]:
    """Each box's best IoU with the anchors of one level, and that anchor: `[n]`, `[n, 4]`.

    For two boxes of fixed shapes the overlap along x only shrinks as their centres move apart in x, and
    likewise in y; so the best anchor of each shape sits at the grid location nearest the box's centre,
    one of the 2 x 2 locations around it. Checking those 4 x A anchors instead of all H_k x W_k x A keeps
    the tuner interactive on a whole dataset; tests/test_widgets.py checks it against every anchor.
    """
    height, width = grid
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [n, 2] (x, y)
    below = torch.floor(centre / stride - offset)  # [n, 2]: the grid index at or before the centre
    steps = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # the 2 x 2 neighbours
    index = below[:, None, :] + steps[None]  # [n, 4, 2]
    index = torch.minimum(index.clamp(min=0), torch.tensor([width - 1.0, height - 1.0]))
    where = (index + offset) * stride  # [n, 4, 2]: anchor centres (x, y)
    candidates = where.repeat(1, 1, 2)[:, :, None, :] + shapes[None, None]  # [n, 4, A, 4]
    candidates = candidates.reshape(len(boxes), -1, 4)  # [n, 4A, 4]
    iou = box_iou(boxes[:, None, :], candidates)[:, 0, :]  # [n, 4A]
    best, which = iou.max(dim=1)
    return best, candidates[torch.arange(len(boxes)), which]


def anchor_recall(
    boxes_per_image: list[Tensor], image_size: tuple[int, int] | list[tuple[int, int]], config: RetinaConfig
) -> dict:
    """How well the anchors of `config` cover a set of ground-truth boxes.

    Args:
        boxes_per_image: one xyxy `[n_i, 4]` tensor per image, in input pixels (after any resize).
        image_size: the `(height, width)` of every image, or a list with one per image. The anchors are
            those `DetectionCollate` builds: for the image padded to a multiple of `config.size_divisible`.
    Returns a dict, one entry per box (images in order) for the arrays:
        best_iou `[n]`, best_level `[n]` (index of the level of the best anchor), level_iou `[n, K]` (the
        best IoU on each level), best_anchor `[n, 4]`, recall (share of boxes with best_iou >= fg_iou) and
        recall_per_level {"P3": share, ...}: the boxes whose best anchor is on that level and reaches
        fg_iou, as a share of all boxes (they add up to recall). By `config.bg_iou`: ignored_share (boxes
        whose best anchor is in [bg_iou, fg_iou): without low-quality matches it would be ignored) and
        background_share (best_iou < bg_iou: it would be background); the three shares add up to 1.
    """
    sizes = [tuple(image_size)] * len(boxes_per_image) if isinstance(image_size[0], int) else list(image_size)
    if len(sizes) != len(boxes_per_image):
        raise ValueError(f"{len(boxes_per_image)} images but {len(sizes)} image sizes")
    boxes = torch.cat([torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes_per_image])  # [n, 4]
    if len(boxes) == 0:
        raise ValueError("anchor_recall needs at least one box")
    padded = torch.tensor([_padded(size, config.size_divisible) for size in sizes])  # [images, 2]
    padded = padded.repeat_interleave(torch.tensor([len(b) for b in boxes_per_image]), dim=0)  # [n, 2]

    num_levels = len(config.strides)
    level_iou = torch.zeros(len(boxes), num_levels)
    level_best = torch.zeros(len(boxes), num_levels, 4)
    for size in padded.unique(dim=0).tolist():  # boxes of images with the same padded size share the grids
        rows = (padded == torch.tensor(size)).all(dim=1)
        for k, grid in enumerate(grid_sizes(tuple(size), config.strides)):
            shapes = anchor_shapes(
                config.anchor_sizes[k], config.anchor_scales, config.aspect_ratios, config.round_anchors
            )
            best, anchor = _best_on_level(boxes[rows], shapes, grid, config.strides[k], config.anchor_offset)
            level_iou[rows, k], level_best[rows, k] = best, anchor

    best_iou, best_level = level_iou.max(dim=1)  # ties go to the lower level
    covered = best_iou >= config.fg_iou
    return {
        "best_iou": best_iou.numpy(),
        "best_level": best_level.numpy(),
        "level_iou": level_iou.numpy(),
        "best_anchor": level_best[torch.arange(len(boxes)), best_level],
        "recall": float(covered.float().mean()),
        "ignored_share": float((~covered & (best_iou >= config.bg_iou)).float().mean()),
        "background_share": float((best_iou < config.bg_iou).float().mean()),
        "recall_per_level": {
            LEVEL_NAMES[k]: float((covered & (best_level == k)).float().mean()) for k in range(num_levels)
        },
    }


def nms_filter(boxes: Tensor, scores: Tensor, labels: Tensor, score_thresh: float, iou_thresh: float) -> Tensor:
    """Indices of the detections kept by a score threshold (score > `score_thresh`) followed by greedy NMS
    within each class at `iou_thresh` (`retina.postprocess.batched_nms`), best first."""
    above = torch.nonzero(scores > score_thresh).squeeze(1)
    keep = batched_nms(boxes[above], scores[above], labels[above], iou_thresh)
    return above[keep]


class _Widget:
    """A control panel above an output area that is redrawn by `draw()` whenever a control changes."""

    def _build(self, controls: list[widgets.Widget]) -> None:
        self.output = widgets.Output()
        for control in controls:
            control.observe(lambda _: self.redraw(), names="value")
        self.widget = widgets.VBox([widgets.HBox(controls), self.output])
        self.redraw()

    def redraw(self) -> None:
        with self.output:
            self.output.clear_output(wait=True)
            fig = self.draw()
            display(fig)
            plt.close(fig)

    def draw(self):
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)


def widget_bundle(widget: widgets.Widget, **kwargs) -> dict:
    """What displaying `widget` publishes. ipywidgets 8 says it itself; ipywidgets 7 (the one in Colab's kernel)
    only has `_ipython_display_`, which publishes this same widget-view bundle."""
    if hasattr(widget, "_repr_mimebundle_"):
        return widget._repr_mimebundle_(**kwargs)
    view = {"version_major": 2, "version_minor": 0, "model_id": widget._model_id}
    return {"text/plain": repr(widget)[:110], "application/vnd.jupyter.widget-view+json": view}


class AnchorTuner(_Widget):
    """Sliders for the anchor settings; redraws each box's best anchor on a sample image and the
    histogram of the best-anchor IoUs of a whole dataset, with the anchor recall per level (01_anchors).
    Its title counts A (anchors per location), N (anchors per image) and the sample's anchors by fate
    (foreground, ignored, background: `retina.targets.match_anchors` at the two thresholds).

    Args:
        boxes_per_image, image_size: the dataset's boxes and input size(s), as for `anchor_recall`.
        sample: an `(image[3, H, W], boxes[n, 4])` pair to draw the anchors on.
        config: the starting point (its base size, scales, ratios, fg_iou, bg_iou and anchor_offset set
            the controls).
    Besides the live widget, its output carries the picture as a JPEG, for readers without a kernel
    (GitHub does not render widgets).
    """

    def __init__(self, boxes_per_image, image_size, sample: tuple[Tensor, Tensor], config: RetinaConfig):
        self.boxes_per_image, self.image_size, self.sample, self.config = boxes_per_image, image_size, sample, config
        style = {"description_width": "initial"}
        self.base = widgets.SelectionSlider(
            options=[4, 6, 8, 12, 16, 24, 32, 48, 64], value=int(config.anchor_sizes[0]), description="base size",
            style=style,
        )  # fmt: skip
        self.scales = widgets.IntSlider(len(config.anchor_scales), 1, 5, description="scales/octave", style=style)
        self.ratios = widgets.SelectMultiple(
            options=[(f"{r:.2g}", r) for r in ASPECT_RATIOS],
            value=[r for r in ASPECT_RATIOS if any(abs(r - c) < 1e-6 for c in config.aspect_ratios)],
            rows=len(ASPECT_RATIOS),
            description="h/w ratios",
            style=style,
        )
        self.iou = widgets.FloatSlider(config.fg_iou, min=0.3, max=0.7, step=0.05, description="fg IoU", style=style)
        self.bg_iou = widgets.FloatSlider(
            config.bg_iou, min=0.1, max=0.7, step=0.05, description="bg IoU", style=style
        )  # fmt: skip
        self.offset = widgets.ToggleButtons(
            options=[("corner 0", 0.0), ("centre 0.5", 0.5)], value=float(config.anchor_offset),
            description="anchor offset", style={**style, "button_width": "80px"},
        )  # fmt: skip
        column = widgets.VBox([self.iou, self.bg_iou, self.offset])
        for control in (self.iou, self.bg_iou, self.offset):
            control.observe(lambda _: self.redraw(), names="value")
        self._build([self.base, self.scales, self.ratios])
        self.widget.children[0].children += (column,)

    def current_config(self) -> RetinaConfig:
        """The settings of the controls; the background threshold is capped at the foreground one."""
        ratios = self.ratios.value or (1.0,)  # an empty selection falls back to squares
        config = anchor_config(self.base.value, self.scales.value, ratios, self.iou.value, self.config)
        return config.replace(bg_iou=min(self.bg_iou.value, self.iou.value), anchor_offset=self.offset.value)

    def draw(self):
        config = self.current_config()
        image, boxes = self.sample
        size = tuple(image.shape[-2:])
        on_sample = anchor_recall([boxes], size, config)
        on_dataset = anchor_recall(self.boxes_per_image, self.image_size, config)
        fig = anchor_recall_figure(image, boxes, on_sample, on_dataset, config)
        anchors = generate_anchors(config, _padded(size, config.size_divisible))  # [N, 4]
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(1, -1, 4)
        fate = match_anchors(anchors, boxes, torch.ones(boxes.shape[:2], dtype=torch.bool), None,
                             config.fg_iou, config.bg_iou, config.low_quality_matches)[0]  # fmt: skip
        fig.axes[1].axvline(config.bg_iou, color="0.5", linestyle=":")
        fig.suptitle(
            f"A = {config.num_anchors} anchors per location, N = {len(anchors):,} per image. Sample image: "
            f"{int((fate >= 0).sum())} foreground, {int((fate == IGNORE).sum())} ignored, "
            f"{int((fate == BACKGROUND).sum()):,} background anchors\n(fg IoU {config.fg_iou:g}, bg IoU "
            f"{config.bg_iou:g}, offset {config.anchor_offset:g})",
            fontsize=10,
        )
        fig.tight_layout()
        return fig

    def _repr_mimebundle_(self, **kwargs):
        bundle = widget_bundle(self.widget, **kwargs)
        fig = self.draw()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="jpeg", dpi=fig.dpi, pil_kwargs={"quality": 70})
        plt.close(fig)
        bundle["image/jpeg"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        return bundle


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
    from retina.anchors import anchors_per_level_counts
    from retina.postprocess import postprocess_detections
    from retina.targets import pad_images

    device = next(model.parameters()).device
    batch, sizes = pad_images([image.to(device)], model.config.size_divisible)
    size = tuple(batch.shape[-2:])
    cls_logits, box_deltas = model(batch)  # [1, N, C], [1, N, 4]
    no_nms = model.config.replace(nms_thresh=1.0, score_thresh=0.0, detections_per_img=100_000)
    counts = anchors_per_level_counts(model.config, size)
    raw = postprocess_detections(cls_logits, box_deltas, model.anchors(size), sizes.to(device), no_nms, counts)[0]
    return {key: value.cpu() for key, value in raw.items()}


class NMSExplorer(_Widget):
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
        return _with_picture(widget_bundle(self.widget, **kwargs), self.draw())


def _with_picture(bundle: dict, fig) -> dict:
    """A widget's display bundle with `fig` added as a JPEG: GitHub and nbviewer, which do not render widgets,
    show the picture."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=fig.dpi)
    plt.close(fig)
    bundle["image/jpeg"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return bundle


def prior_bias(prior: float) -> float:
    """The bias of the last classification layer that makes every class start at probability `prior` (paper,
    Sec. 3.3 and 4.1): b = -log((1 - prior) / prior)."""
    return -math.log((1 - prior) / prior)


def loss_entries(logits: Tensor, cls_targets: Tensor) -> tuple[Tensor, Tensor]:
    """The (anchor, class) entries that carry loss: `logits[B, N, C]` and `cls_targets[B, N]` (class, -1 background,
    -2 ignore) -> `logits[M, C]` and 0/1 `targets[M, C]` of the M anchors that are not ignored."""
    counted = cls_targets >= -1  # [B, N]
    targets = F.one_hot(cls_targets.clamp(min=0), logits.shape[-1]).to(logits.dtype)  # [B, N, C]
    targets = targets * (cls_targets >= 0)[..., None]  # background anchors: all zeros
    return logits[counted], targets[counted]


def step0_loss(logits: Tensor, cls_targets: Tensor, prior: float, alpha: float, gamma: float) -> float:
    """The classification loss of `retina.losses.retina_loss` at step 0 for the prior `prior`, from the logits
    `[B, N, C]` of the same untrained network with a zero last bias (prior 0.5): the prior only adds
    `prior_bias(prior)` to every logit. Summed over the entries, divided by the foreground anchors (Sec. 4.1).
    `alpha < 0` turns alpha off; gamma = 0 and no alpha is the cross-entropy."""
    entries, targets = loss_entries(logits + prior_bias(prior), cls_targets)
    num_foreground = max(int((cls_targets >= 0).sum()), 1)
    return float(sigmoid_focal_loss(entries.double(), targets.double(), alpha, gamma).sum()) / num_foreground


def easy_negative_share(logits: Tensor, cls_targets: Tensor, alpha: float, gamma: float, easy: float = 0.9):
    """Easy negatives are the background entries the model already gets right with p_t >= `easy`. Returns (their
    share of the entries, their share of the summed loss) for the logits `[B, N, C]` and targets `[B, N]`."""
    entries, targets = loss_entries(logits, cls_targets)
    negative_easy = (targets == 0) & (torch.sigmoid(-entries) >= easy)  # p_t = 1 - p for a 0 target
    loss = sigmoid_focal_loss(entries.double(), targets.double(), alpha, gamma)
    return float(negative_easy.double().mean()), float(loss[negative_easy].sum() / loss.sum())


class FocalLossExplorer(_Widget):
    """Sliders for gamma, alpha and the prior pi over the step-0 outputs of a real network (03_focal_loss.ipynb):
    redraws the loss of one entry against p_t, the classification loss at step 0 with the chosen prior and without
    it (pi = 0.5), focal against cross-entropy (`step0_loss`), and the share of the entries that are easy negatives
    and of the loss they carry (`easy_negative_share`).

    Args:
        logits: `[B, N, C]` class logits of an untrained RetinaNet whose last bias is 0 (`prior=0.5`).
        cls_targets: `[B, N]` the batch's anchor targets (class, -1 background, -2 ignore).
    Besides the live widget, its output carries the picture as a JPEG, for readers without a kernel.
    """

    PRIORS = (0.5, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0001)

    def __init__(self, logits: Tensor, cls_targets: Tensor):
        self.logits, self.cls_targets = logits, cls_targets
        style = {"description_width": "initial"}
        self.gamma = widgets.FloatSlider(2.0, min=0.0, max=5.0, step=0.5, description="gamma", style=style)
        self.alpha = widgets.FloatSlider(0.25, min=0.05, max=0.95, step=0.05, description="alpha", style=style)
        self.prior = widgets.SelectionSlider(options=self.PRIORS, value=0.01, description="prior pi", style=style)
        self._build([self.gamma, self.alpha, self.prior])

    def table(self) -> dict[tuple[float, str], float]:
        """The step-0 loss by (prior, "focal" / "cross-entropy"): the slider's prior and no prior (0.5)."""
        return {
            (prior, name): step0_loss(self.logits, self.cls_targets, prior, alpha, gamma)
            for prior in dict.fromkeys((self.prior.value, 0.5))
            for name, alpha, gamma in (("focal", self.alpha.value, self.gamma.value), ("cross-entropy", -1.0, 0.0))
        }

    def easy(self) -> dict[str, float]:
        """At the slider's prior: the share of entries that are easy negatives, and of the focal and CE loss."""
        logits = self.logits + prior_bias(self.prior.value)
        entries, focal = easy_negative_share(logits, self.cls_targets, self.alpha.value, self.gamma.value)
        _, ce = easy_negative_share(logits, self.cls_targets, -1.0, 0.0)
        return {"entries": entries, "focal": focal, "cross-entropy": ce}

    def draw(self):
        return focal_explorer_figure(self.gamma.value, self.alpha.value, self.prior.value, self.table(), self.easy())

    def _repr_mimebundle_(self, **kwargs):
        return _with_picture(widget_bundle(self.widget, **kwargs), self.draw())


class LiveLossCurve:
    """Redraw a training run's loss curve while it trains, in the cell that runs it (05_training.ipynb)::

        with LiveLossCurve("runs/cpu/metrics.jsonl"):
            train(cfg)

    A background thread re-reads the metrics file that `retina.train` appends to every `every` seconds and
    redraws `retina.viz.plot_loss_curve` in one display area; leaving the block draws it a last time.
    `interrupt_at_step` presses the notebook's interrupt button (sends SIGINT, as Ctrl-C does) once the log
    reaches that step: `retina.train` then finishes the step, writes its checkpoint and returns, ready to resume.
    Never once the block has ended: a run shorter than the redraw interval is left alone (its "interrupt" would
    hit whatever the notebook runs next).
    """

    def __init__(self, metrics_path: str | Path, every: float = 10.0, interrupt_at_step: int | None = None):
        self.path, self.every, self.interrupt_at_step = Path(metrics_path), every, interrupt_at_step
        self.draws = 0
        self.interrupted = False
        self._stop = threading.Event()
        self._lock = threading.Lock()  # orders "press interrupt" against "the block has ended"
        self._ended = False

    def __enter__(self) -> LiveLossCurve:
        self.handle = display("waiting for the first logged steps ...", display_id=True)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._ended = True
        self._stop.set()
        self._thread.join()
        self.draw()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            step = self.draw()
            if self.interrupt_at_step is not None and not self.interrupted and step >= self.interrupt_at_step:
                with self._lock:
                    if not self._ended:
                        self.interrupted = True
                        signal.raise_signal(signal.SIGINT)

    def draw(self) -> int:
        """Redraw from the metrics file; returns the last logged step (0 if nothing is logged yet)."""
        try:
            records = read_metrics(self.path)[0] if self.path.is_file() else []
            if not records:
                return 0
            fig = plot_loss_curve(self.path)
        except ValueError:  # a line being written right now: try again next time
            return 0
        if self.handle is not None:  # None outside IPython, where there is no display to update
            png = io.BytesIO()  # rendered here, not by IPython: that needs pyplot's inline backend, maybe asleep
            fig.savefig(png, format="png", dpi=70)
            self.handle.update(Image(png.getvalue()))
        self.draws += 1
        return records[-1]["step"]
