"""Figures of 03_focal_loss.ipynb: the paper's equations (also the README's), the focal loss against the
cross-entropy, what alpha does, and the focal-loss explorer's picture (`retina.widgets.focal_loss`)."""

from __future__ import annotations

import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from retina.losses import sigmoid_focal_loss

# The README's equations, written for matplotlib's mathtext (no LaTeX install needed).
EQUATIONS = {
    "loss": r"$\mathcal{L}(x, y, b) = \mathcal{L}_\mathrm{cls}(x, y) + \mathcal{L}_\mathrm{reg}(x, b)\,"
    r"\mathbf{1}\{y \neq 0\}$",
    "cls_likelihood": r"$\mathcal{L}_\mathrm{cls}^{(k,i,j,a)}(x, y) = -\log p_\theta(y \mid x),\quad "
    r"p_\theta(y \mid x) = \mathrm{Bernoulli},\ y \in \{0, 1\}^{|\mathcal{Y}|}$",
    "reg_likelihood": r"$\mathcal{L}_\mathrm{reg}^{(k,i,j,a)}(x, b) = -\log p_\theta(b \mid x),\quad "
    r"p_\theta(b \mid x) = \mathrm{Normal},\ b \in \mathbb{R}^4$",
    "targets": r"$(x, y, b) \mapsto \left(\mathrm{cls\ target} \in \{0, 1\}^{K \times M \times N \times A "
    r"\times |\mathcal{Y}|},\ \mathrm{reg\ target} \in \mathbb{R}^{K \times M \times N \times A \times 4}\right)$",
    "focal_loss": r"$\mathcal{L}_\mathrm{cls}^{(k,i,j,a)}(x, y) = -\sum_{c \in \mathcal{Y}} \alpha^{(y_c)}\,"
    r"\left(1 - p_\theta(y_c \mid x)\right)^\gamma\, \log p_\theta(y_c \mid x)$",
    "alpha": r"$\alpha^{(y_c)} = \alpha\,\mathbf{1}\{y_c = 1\} + (1 - \alpha)\,\mathbf{1}\{y_c = 0\}$",
    "prior": r"$b = -\log\frac{1 - \pi}{\pi},\quad \pi = 0.01$",
}


def equation_figure(tex: str, fontsize: int = 16) -> Figure:
    """One equation rendered by matplotlib's mathtext (no LaTeX install), the figure cropped to it when
    saved with `bbox_inches="tight"`. Shown in 03_focal_loss.ipynb and the README."""
    fig = plt.figure(figsize=(0.01, 0.01))
    ax = fig.add_axes((0, 0, 1, 1))  # an axes, not fig.text: IPython does not display a figure without axes
    ax.axis("off")
    ax.text(0, 0, tex, fontsize=fontsize)
    return fig


def focal_loss_figure(gammas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)) -> Figure:
    """Loss of one prediction against the probability of its true label p_t, for several gamma (gamma = 0 is
    the cross-entropy), with `retina.losses.sigmoid_focal_loss` (no alpha). Shown in 03_focal_loss.ipynb."""
    p_t = torch.linspace(0.001, 1.0, 500, dtype=torch.float64)
    logits = torch.log(p_t) - torch.log1p(-p_t)  # sigmoid(logit) = p_t, target 1
    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    for gamma in gammas:
        loss = sigmoid_focal_loss(logits, torch.ones_like(logits), alpha=-1, gamma=gamma)
        label = f"$\\gamma = {gamma:g}$" + (" (cross-entropy)" if gamma == 0 else "")
        ax.plot(p_t.numpy(), loss.numpy(), label=label)
    ax.axvspan(0.6, 1.0, color="0.9", zorder=0)
    ax.text(0.8, 4.6, "well-classified\nexamples", ha="center", va="top", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 5)
    ax.set_xlabel("probability of the true label $p_t$")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return fig


def _focal_curves(ax, gamma: float, alpha: float) -> None:
    """On `ax`: the cross-entropy (dashed) and the focal loss of a positive entry (weight alpha) and of a negative
    one (weight 1 - alpha) against the probability of the true label p_t, with axes labelled and a legend."""
    p_t = torch.linspace(0.001, 0.999, 400, dtype=torch.float64)
    logit = torch.log(p_t) - torch.log1p(-p_t)  # target 1 at this logit: probability p_t of the true label
    ones = torch.ones_like(logit)
    ax.plot(p_t.numpy(), sigmoid_focal_loss(logit, ones, -1, 0).numpy(), "--", color="0.5", label="cross-entropy")
    focal = sigmoid_focal_loss(logit, ones, alpha=-1, gamma=gamma)
    for kind, weight, color in (("positive", alpha, "tab:green"), ("negative", 1 - alpha, "tab:red")):
        ax.plot(p_t.numpy(), (weight * focal).numpy(), color=color, label=f"focal, {kind} entry (x {weight:g})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 3)
    ax.set_xlabel("probability of the true label $p_t$")
    ax.set_ylabel("loss of one entry")
    ax.legend(fontsize=8)


def alpha_figure(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Figure:
    """What alpha does (paper, Sec. 3.1 and 3.2, Table 1). Left: the loss of a positive entry (weight alpha) and
    of a negative one (weight 1 - alpha) against p_t, with cross-entropy dashed. Right: for the entries
    `logits[M, C]`, `targets[M, C]` (0/1) of a batch, the share of the summed loss that the positives carry as
    alpha goes from 0 to 1, under cross-entropy (gamma = 0) and the focal loss (`gamma`). Shown in
    03_focal_loss.ipynb."""
    fig, (curves, shares) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=72)
    _focal_curves(curves, gamma, alpha)
    curves.set_title(f"focal loss, $\\gamma = {gamma:g}$, $\\alpha = {alpha:g}$", fontsize=10)
    alphas = torch.linspace(0.02, 0.98, 49)
    positive = targets > 0
    for g, color in ((0.0, "0.5"), (gamma, "tab:blue")):
        pos = sigmoid_focal_loss(logits[positive], targets[positive], alpha=-1, gamma=g).sum()
        neg = sigmoid_focal_loss(logits[~positive], targets[~positive], alpha=-1, gamma=g).sum()
        share = alphas * pos / (alphas * pos + (1 - alphas) * neg)
        name = "cross-entropy" if g == 0 else f"focal, $\\gamma = {g:g}$"
        shares.plot(alphas.numpy(), share.numpy(), color=color, label=name)
    shares.axvline(alpha, color="tab:green", linestyle=":", label=f"$\\alpha = {alpha:g}$")
    shares.set_xlim(0, 1)
    shares.set_ylim(0, 1.03)
    shares.set_xlabel("$\\alpha$ (weight of the positive entries)")
    shares.set_ylabel("share of the loss on positives")
    shares.set_title(f"{int(positive.sum())} positive, {int((~positive).sum()):,} negative entries", fontsize=10)
    shares.legend(fontsize=8)
    fig.tight_layout()
    return fig


def focal_explorer_figure(
    gamma: float, alpha: float, prior: float, table: dict[tuple[float, str], float], easy: dict[str, float]
) -> Figure:
    """The focal-loss explorer's picture (`retina.widgets.FocalLossExplorer`, 03_focal_loss.ipynb). Left: the loss
    of a positive and of a negative entry against p_t for `gamma` and `alpha`, cross-entropy dashed, and where
    the negatives start at step 0 (p_t = 1 - prior). Right: `table`, the step-0 classification loss by
    (prior, "focal" / "cross-entropy"), as labelled bars. The title: `easy`, the share of the entries that are easy
    negatives and the share of the focal and of the cross-entropy loss they carry."""
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=72)
    _focal_curves(curves, gamma, alpha)
    curves.axvline(1 - prior, color="tab:red", linestyle=":", label=f"negatives at step 0: $p_t = {1 - prior:g}$")
    curves.set_title(f"$\\gamma = {gamma:g}$, $\\alpha = {alpha:g}$", fontsize=10)
    curves.legend(fontsize=7)
    names = [f"{name}\n$\\pi = {p:g}$" for p, name in table]
    values = list(table.values())
    colors = ["tab:green" if name == "focal" else "tab:orange" for _, name in table]
    drawn = bars.bar(names, values, color=colors)
    bars.bar_label(drawn, labels=[f"{v:.2f}" for v in values], fontsize=8)
    bars.set_yscale("log")
    bars.set_ylim(min(values) / 3, max(values) * 5)
    bars.set_ylabel("classification loss at step 0")
    bars.tick_params(axis="x", labelsize=8)
    bars.set_title("step 0 on the batch, divided by the foreground anchors", fontsize=10)
    fig.suptitle(
        f"easy negatives ($p_t \\geq 0.9$): {easy['entries']:.2%} of the entries, carrying {easy['focal']:.1%} of "
        f"the focal loss and {easy['cross-entropy']:.1%} of the cross-entropy",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
