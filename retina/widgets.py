"""Notebook widgets: the anchor tuner (01_anchors.ipynb), the live loss curve (05_training.ipynb) and the NMS
sliders (06_nms.ipynb).

Each widget is a thin shell around plain functions that do the work, so the work is tested without a browser
(tests/test_widgets.py):

    anchor_config   the RetinaConfig that a tuner setting (base size, scales per octave, ratios, IoU) means
    anchor_recall   each ground-truth box's best anchor (IoU, level, box) and the share of boxes that have
                    an anchor at IoU >= fg_iou ("anchor recall"), in total and per level
    nms_filter      score threshold, then class-wise greedy NMS: the detections that survive
"""

from __future__ import annotations

import io
import signal
import threading
from pathlib import Path

import ipywidgets as widgets
import torch
from IPython.display import Image, display
from matplotlib import pyplot as plt
from torch import Tensor

from retina.anchors import anchor_shapes, grid_sizes
from retina.boxes import box_iou
from retina.config import RetinaConfig
from retina.figures import LEVEL_NAMES, anchor_recall_figure, nms_figure
from retina.postprocess import batched_nms
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
        fg_iou, as a share of all boxes (they add up to recall).
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
        return self.widget._repr_mimebundle_(**kwargs)


class AnchorTuner(_Widget):
    """Sliders for the anchor settings; redraws each box's best anchor on a sample image and the
    histogram of the best-anchor IoUs of a whole dataset, with the anchor recall per level (01_anchors).

    Args:
        boxes_per_image, image_size: the dataset's boxes and input size(s), as for `anchor_recall`.
        sample: an `(image[3, H, W], boxes[n, 4])` pair to draw the anchors on.
        config: the starting point (its base size, scales, ratios and fg_iou set the sliders).
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
        self.iou = widgets.FloatSlider(config.fg_iou, min=0.3, max=0.7, step=0.05, description="IoU", style=style)
        self._build([self.base, self.scales, self.ratios, self.iou])

    def current_config(self) -> RetinaConfig:
        ratios = self.ratios.value or (1.0,)  # an empty selection falls back to squares
        return anchor_config(self.base.value, self.scales.value, ratios, self.iou.value, self.config)

    def draw(self):
        config = self.current_config()
        image, boxes = self.sample
        on_sample = anchor_recall([boxes], tuple(image.shape[-2:]), config)
        on_dataset = anchor_recall(self.boxes_per_image, self.image_size, config)
        return anchor_recall_figure(image, boxes, on_sample, on_dataset, config)


class NMSExplorer(_Widget):
    """Score and IoU threshold sliders over one image's raw detections: draws the candidates above the
    score threshold and what class-wise NMS keeps of them (06_nms.ipynb)."""

    def __init__(self, image: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor, classes: list[str] | None = None):
        self.image, self.boxes, self.scores, self.labels, self.classes = image, boxes, scores, labels, classes
        style = {"description_width": "initial"}
        self.score = widgets.FloatSlider(0.3, min=0.05, max=0.95, step=0.05, description="score >", style=style)
        self.iou = widgets.FloatSlider(0.5, min=0.1, max=1.0, step=0.05, description="NMS IoU", style=style)
        self._build([self.score, self.iou])

    def draw(self):
        above = torch.nonzero(self.scores > self.score.value).squeeze(1)
        boxes, scores, labels = self.boxes[above], self.scores[above], self.labels[above]
        keep = nms_filter(boxes, scores, labels, self.score.value, self.iou.value)
        names = None if self.classes is None else [self.classes[c] for c in labels.tolist()]
        return nms_figure(self.image, boxes, scores, keep, names=names)


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
