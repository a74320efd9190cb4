"""The focal-loss explorer of 03_focal_loss.ipynb and the plain functions it shows, tested without a browser:

prior_bias           the last classification bias that starts every class at probability pi (Sec. 3.3)
loss_entries         the (anchor, class) entries of a batch that carry loss
step0_loss           the classification loss at step 0 for a prior, alpha and gamma
easy_negative_share  the share of entries that are easy negatives, and of the loss they carry
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import torch
import torch.nn.functional as F
from torch import Tensor

from retina.figures.losses import focal_explorer_figure
from retina.losses import sigmoid_focal_loss
from retina.widgets.common import Widget, widget_bundle, with_picture


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


class FocalLossExplorer(Widget):
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
        return with_picture(widget_bundle(self.widget, **kwargs), self.draw())
