"""Figures: the matplotlib pictures of the notebooks and of the README (`svgs/`), one builder each.

Every builder returns a `matplotlib.figure.Figure` and computes what it shows with the package itself (anchors
with `retina.anchors`, matching with `retina.targets`, losses with `retina.losses`), so a figure cannot drift from
the code. One module per notebook; this table of contents lists what each shows:

    common    show_image, plot_boxes, fit_boxes, LEVEL_NAMES, LEVEL_COLORS   what every figure draws with
    boxes     box_formats_figure, iou_figure, deltas_figure,
              box_loss_curves, box_losses_figure                      00_data.ipynb
    anchors   anchors_figure, grids_figure, anchor_recall_figure      01_anchors.ipynb (and the anchor tuner)
              matching_figure                                         02_target_encoding.ipynb
    losses    EQUATIONS, equation_figure, focal_loss_figure,
              alpha_figure, focal_explorer_figure                     03_focal_loss.ipynb (and the focal-loss explorer)
    fpn       fpn_diagram, feature_maps_figure, levels_figure         04_fpn.ipynb
    nms       nms_steps_figure, nms_figure                            06_nms.ipynb (and the NMS explorer)
    svgs      write_svgs                                              the README's figures

`python -m retina.figures svgs` (or `make svgs`) writes the README's figures, byte for byte the same on every run.
"""

from retina.figures.anchors import anchor_recall_figure, anchors_figure, grids_figure, matching_figure
from retina.figures.boxes import box_formats_figure, box_loss_curves, box_losses_figure, deltas_figure, iou_figure
from retina.figures.common import LEVEL_COLORS, LEVEL_NAMES, fit_boxes, plot_boxes, show_image
from retina.figures.fpn import feature_maps_figure, fpn_diagram, levels_figure
from retina.figures.losses import EQUATIONS, alpha_figure, equation_figure, focal_explorer_figure, focal_loss_figure
from retina.figures.nms import nms_figure, nms_steps_figure
from retina.figures.svgs import write_svgs

__all__ = [
    "EQUATIONS",
    "LEVEL_COLORS",
    "LEVEL_NAMES",
    "alpha_figure",
    "anchor_recall_figure",
    "anchors_figure",
    "box_formats_figure",
    "box_loss_curves",
    "box_losses_figure",
    "deltas_figure",
    "equation_figure",
    "feature_maps_figure",
    "fit_boxes",
    "focal_explorer_figure",
    "focal_loss_figure",
    "fpn_diagram",
    "grids_figure",
    "iou_figure",
    "levels_figure",
    "matching_figure",
    "nms_figure",
    "nms_steps_figure",
    "plot_boxes",
    "show_image",
    "write_svgs",
]
