"""The anchor tuner of 01_anchors.ipynb and the plain functions it shows, tested without a browser:

anchor_config   the RetinaConfig that a tuner setting (base size, scales per octave, ratios, IoU) means
anchor_recall   each ground-truth box's best anchor (IoU, level, box) and the share of boxes that have
                an anchor at IoU >= fg_iou ("anchor recall"), in total and per level
"""

from __future__ import annotations

import ipywidgets as widgets
import torch
from torch import Tensor

from retina.anchors import anchor_shapes, generate_anchors, grid_sizes
from retina.boxes import box_iou
from retina.config import RetinaConfig
from retina.figures.anchors import anchor_recall_figure
from retina.figures.common import LEVEL_NAMES
from retina.targets import BACKGROUND, IGNORE, match_anchors
from retina.widgets.common import Widget, widget_bundle, with_picture

ASPECT_RATIOS = (1 / 3, 1 / 2, 1.0, 2.0, 3.0)  # the tuner's choices (height / width)
# wide enough for "centre 0.5" in JupyterLab's 13 px font with the buttons' padding (80 px cut it off)
OFFSET_BUTTON_WIDTH = "104px"


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


class AnchorTuner(Widget):
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
            description="anchor offset", style={**style, "button_width": OFFSET_BUTTON_WIDTH},
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
        return with_picture(widget_bundle(self.widget, **kwargs), self.draw(), quality=70)
