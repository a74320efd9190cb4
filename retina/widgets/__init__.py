"""Notebook widgets: each a thin shell around plain functions that do the work, so the work is tested without a
browser (tests/test_widgets.py; tests/browser/ drives the widgets themselves in JupyterLab). One module per
notebook; this table of contents lists what each holds:

    common        Widget, widget_bundle, with_picture                      what every widget is built on
    anchor_tuner  AnchorTuner, anchor_config, anchor_recall                01_anchors.ipynb
    focal_loss    FocalLossExplorer, prior_bias, loss_entries,
                  step0_loss, easy_negative_share                          03_focal_loss.ipynb
    loss_curve    LiveLossCurve                                            05_training.ipynb
    nms_explorer  NMSExplorer, candidates_before_nms, nms_filter,
                  true_positives                                           06_nms.ipynb
"""

from retina.widgets.anchor_tuner import AnchorTuner, anchor_config, anchor_recall
from retina.widgets.common import widget_bundle
from retina.widgets.focal_loss import FocalLossExplorer, easy_negative_share, loss_entries, prior_bias, step0_loss
from retina.widgets.loss_curve import LiveLossCurve
from retina.widgets.nms_explorer import NMSExplorer, candidates_before_nms, nms_filter, true_positives

__all__ = [
    "AnchorTuner",
    "FocalLossExplorer",
    "LiveLossCurve",
    "NMSExplorer",
    "anchor_config",
    "anchor_recall",
    "candidates_before_nms",
    "easy_negative_share",
    "loss_entries",
    "nms_filter",
    "prior_bias",
    "step0_loss",
    "true_positives",
    "widget_bundle",
]
