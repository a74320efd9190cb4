"""Losses: focal loss for the classes, a box loss for the deltas, normalised by the foreground count.

Taught in notebooks/03_focal_loss.ipynb. Paper Sec. 3: with p_t the probability of the true label,
    CE(p_t) = -log(p_t)            FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)
The factor (1 - p_t)^gamma shrinks the loss of the ~100k easy background anchors of an image, so the
few hundred foreground anchors are not drowned out. alpha = 0.5, gamma = 0 gives CE / 2.

Box losses on the foreground deltas (p(b | x) in the original design):
    smooth_l1  Huber-like; beta = 0 is L1                    (Detectron's choice, beta = 0.1)
    l1         torchvision's choice
    giou       1 - GIoU of the decoded boxes                 (Rezatofighi et al. 2019)
    nll        -log Normal(t; delta, 1): a unit-variance Gaussian, i.e. 0.5 * squared error + const

The batch loss takes every image at once and divides by the number of foreground anchors in the batch
(at least 1), as in Sec. 3.3 ("normalized by the number of anchors assigned to a ground-truth box"). Its focal
term runs block by block over the `[B, N, C]` logits and writes its gradient on the way (`FocalLossSum`): no one-hot
target, no `[B, N, C]` intermediates, and each block stays in the CPU's cache through its elementwise passes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from retina.boxes import box_giou, decode_boxes
from retina.config import RetinaConfig


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise focal loss of independent sigmoids: `logits` and 0/1 `targets` of any equal shape.

    With s = x for a 0 target and s = -x for a 1 target, 1 - p_t = sigmoid(s) and -log(p_t) =
    softplus(s), so FL = alpha_t * sigmoid(s)^gamma * softplus(s) (`focal_term`): four passes over the
    [B, N, C] logits instead of a dozen, and no log of a probability that has underflowed to 0. `alpha < 0`
    turns the alpha-balancing off.
    """
    loss = focal_term(logits * (1 - 2 * targets), gamma)
    if alpha >= 0:
        loss = loss * torch.where(targets > 0, alpha, 1 - alpha)
    return loss


def focal_term(s: Tensor, gamma: float) -> Tensor:
    """sigmoid(s)^gamma * softplus(s): the focal loss, without alpha, of a 0 target at logit s (and of a 1
    target at logit -s)."""
    return F.softplus(s) * torch.sigmoid(s) ** gamma


def gaussian_nll_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Elementwise -log N(target; pred, 1) = 0.5 (target - pred)^2 + 0.5 log(2 pi)."""
    return 0.5 * (target - pred) ** 2 + 0.5 * math.log(2 * math.pi)


def box_loss(
    pred_deltas: Tensor, target_deltas: Tensor, anchors: Tensor, config: RetinaConfig
) -> Tensor:
    """Summed box loss over matched pairs: `pred_deltas[F, 4]`, `target_deltas[F, 4]`, `anchors[F, 4]`."""
    kind = config.box_loss
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred_deltas, target_deltas, beta=config.smooth_l1_beta, reduction="sum")
    if kind == "l1":
        return F.l1_loss(pred_deltas, target_deltas, reduction="sum")
    if kind == "nll":
        return gaussian_nll_loss(pred_deltas, target_deltas).sum()
    if kind == "giou":
        pred = decode_boxes(pred_deltas, anchors, config.box_weights, config.box_clip)
        target = decode_boxes(target_deltas, anchors, config.box_weights, config.box_clip)
        return (1 - box_giou(pred, target)).sum()
    raise ValueError(f"unknown box loss {kind!r}; expected smooth_l1, l1, giou or nll")


def retina_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    cls_targets: Tensor,
    box_targets: Tensor,
    anchors: Tensor,
    config: RetinaConfig,
) -> dict[str, Tensor]:
    """The RetinaNet loss of a whole batch, without a loop over images.

    Args:
        cls_logits: `[B, N, C]`; box_deltas: `[B, N, 4]` (the model's outputs).
        cls_targets: `[B, N]` int64 (class, -1 background, -2 ignore); box_targets: `[B, N, 4]`.
        anchors: `[N, 4]`, used by the GIoU loss to decode deltas into boxes.
    Returns:
        {"classification": scalar, "bbox_regression": scalar}, both divided by the foreground count.
    """
    foreground = cls_targets >= 0  # [B, N]
    num_foreground = foreground.sum().clamp(min=1).to(cls_logits.dtype)

    # Almost every (anchor, class) pair is a negative. Score every logit as a negative (target 0), then swap
    # in the positive loss (target 1) at the F pairs (foreground anchor, its class): no [B, N, C] one-hot target.
    alpha = config.focal_alpha
    alpha_positive, alpha_negative = (alpha, 1 - alpha) if alpha >= 0 else (1.0, 1.0)
    weight = (cls_targets >= -1).to(cls_logits.dtype) * alpha_negative  # [B, N]: ignored anchors drop out
    image_index, anchor_index = foreground.nonzero(as_tuple=True)  # [F] each
    positive = (image_index * cls_logits.shape[1] + anchor_index) * cls_logits.shape[2] + cls_targets[foreground]
    logits = cls_logits.contiguous()  # FocalLossSum reads it as [B N, C] rows; a no-op for the model's outputs
    needs_grad = torch.is_grad_enabled() and logits.requires_grad
    focal = (alpha_positive, alpha_negative, config.focal_gamma, needs_grad)
    cls_loss = FocalLossSum.apply(logits, weight, positive, *focal)

    fg_anchors = anchors[None].expand(cls_targets.shape[0], -1, -1)[foreground]  # [F, 4]
    reg_loss = box_loss(box_deltas[foreground], box_targets[foreground], fg_anchors, config)
    return {"classification": cls_loss / num_foreground, "bbox_regression": reg_loss / num_foreground}


# Elements of the [B, N, C] logits per block of FocalLossSum: a block (4 MiB of float32) stays in the CPU's cache from
# one elementwise pass to the next, where whole-batch passes stream hundreds of MiB each; and blocks this large keep
# the number of passes, each a parallel region whose threads wait for one another, low when the cores are shared.
BLOCK = 2**20


class FocalLossSum(torch.autograd.Function):
    """The summed focal loss of a batch, block by block, in its own memory and with its gradient made on the way.

    forward(logits `[B, N, C]`, weight `[B, N]`, positive `[F]`, alpha_positive, alpha_negative, gamma, needs_grad)
    -> scalar
        sum_{b, n, c} weight[b, n] FL(logits[b, n, c]; target 0)
        + sum_f (alpha_positive FL(logits[f]; target 1) - alpha_negative FL(logits[f]; target 0)),
    where `positive` holds the flat indices (into `logits.view(-1)`) of the F (foreground anchor, class) pairs and
    `weight` is alpha_negative for counted anchors, 0 for ignored ones.

    Autograd through the same expression keeps several `[B, N, C]` intermediates (softplus, sigmoid, powers) alive
    from the forward to the backward pass and builds a `[B, N, C]` gradient for the positives alone. Here, when
    `needs_grad`, the forward pass writes the gradient while each block's softplus and sigmoid are at hand, with
        d/dx [softplus(x) sigmoid(x)^gamma] = sigmoid(x)^gamma (sigmoid(x) + gamma (1 - sigmoid(x)) softplus(x)),
    so the exponentials and logarithms run once per logit, not again in the backward pass, which only scales the
    gradient by the loss's own (a scalar, e.g. 1 / the foreground count).
    """

    @staticmethod
    def forward(ctx, logits, weight, positive, alpha_positive, alpha_negative, gamma, needs_grad):
        grad = torch.empty_like(logits) if needs_grad else None
        rows, weights = _blocks(logits, weight)
        grads = _blocks(grad, weight)[0] if needs_grad else (None,) * len(rows)
        work = [torch.empty_like(rows[0]) for _ in range(3)]
        total = sum(_focal_block(*block, gamma, work).double() for block in zip(rows, weights, grads, strict=True))
        x = logits.view(-1)[positive]  # [F]
        swap = alpha_positive * focal_term(-x, gamma) - alpha_negative * focal_term(x, gamma)
        if needs_grad:
            grad.view(-1)[positive] -= alpha_positive * focal_slope(-x, gamma) + alpha_negative * focal_slope(x, gamma)
            ctx.grad = grad
        return (total + swap.double().sum()).to(logits.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        grad = ctx.__dict__.pop("grad", None)  # given away: the graph holds no [B, N, C] tensor after this
        if grad is None:
            raise RuntimeError(
                "the focal loss gives its gradient once (it was made in the forward pass): compute the loss again "
                "to backpropagate through it again"
            )
        return grad.mul_(grad_output), None, None, None, None, None, None


def _focal_block(x: Tensor, w: Tensor, grad: Tensor | None, gamma: float, work: list[Tensor]) -> Tensor:
    """sum_r w[r] sum_c FL(x[r, c]; target 0) of a block `x[R, C]`, `w[R]`; when `grad[R, C]` is given, its
    derivative with respect to x goes there. `work`: three scratch tensors of at least `[R, C]`, reused from block to
    block, because a fresh 4 MiB tensor costs the kernel a page fault per 4 KiB each time (half the run time on one
    thread)."""
    softplus, p, weighted = (t[: x.shape[0]] for t in work)
    torch.logaddexp(x, x.new_zeros(()), out=softplus)  # log(1 + e^x)
    torch.sigmoid(x, out=p)
    torch.pow(p, gamma, out=weighted).mul_(w[:, None])  # w sigmoid(x)^gamma
    if grad is not None:
        torch.neg(p, out=grad).add_(1)  # 1 - p
        torch.addcmul(p, grad, softplus, value=gamma, out=grad).mul_(weighted)
    return softplus.mul_(weighted).sum()  # torch's sum adds in a tree: a float32 dot of 2^20 terms is off by 1e-5


def _blocks(logits: Tensor, weight: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """`logits[B, N, C]` and `weight[B, N]` as matching blocks of rows: `[R, C]` and `[R]`, R C about BLOCK."""
    num_classes = logits.shape[-1]
    rows = max(1, BLOCK // num_classes)
    return logits.view(-1, num_classes).split(rows), weight.reshape(-1).split(rows)


def focal_slope(s: Tensor, gamma: float) -> Tensor:
    """The derivative of `focal_term(s, gamma)` with respect to s, in four passes."""
    p = torch.sigmoid(s)
    return torch.addcmul(p, F.softplus(s), 1 - p, value=gamma).mul_(p**gamma)
