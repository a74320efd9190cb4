"""retina.losses against torchvision.ops, torch.nn losses and torchvision's RetinaNetHead.compute_loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.retinanet import RetinaNetHead

from retina import losses
from retina.anchors import generate_anchors
from retina.config import RetinaConfig
from retina.losses import box_loss, gaussian_nll_loss, retina_loss, sigmoid_focal_loss
from retina.targets import encode_targets, match_anchors, pad_targets

BOX_LOSSES = ["smooth_l1", "l1", "giou", "nll"]


def _logits_and_targets(gen, shape=(300, 7)):
    logits = torch.randn(shape, generator=gen) * 4
    logits[0, :] = torch.tensor([-40.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 40.0])  # extremes and 0
    targets = (torch.rand(shape, generator=gen) < 0.3).float()
    targets[0, :] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    return logits, targets


# ---------------------------------------------------------------- elementwise losses


@pytest.mark.parametrize(
    "alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (-1.0, 2.0), (0.75, 1.5), (-1.0, 0.0), (0.1, 5.0), (0.0, 2.0), (1.0, 1.0)]
)
def test_focal_loss_equals_torchvision(gen, alpha, gamma):
    logits, targets = _logits_and_targets(gen)
    expected = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    out = sigmoid_focal_loss(logits, targets, alpha, gamma)
    assert out.shape == logits.shape and torch.isfinite(out).all()
    # atol 1e-6: for confident logits torchvision's cross-entropy computes log(1 + tiny) in float32, which
    # rounds at ~1e-7; ours uses softplus (log1p)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_focal_loss_known_values():
    # logit 0 (p = 0.5), positive: alpha * (1 - 0.5)^2 * log 2; negative: (1 - alpha) * 0.5^2 * log 2
    out = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), 0.25, 2.0)
    torch.testing.assert_close(out, torch.tensor([0.25, 0.75]) * 0.25 * math.log(2))
    # a confident correct prediction costs far less than under cross-entropy
    easy = sigmoid_focal_loss(torch.tensor([3.0]), torch.tensor([1.0]), -1, 2.0)
    ce = F.binary_cross_entropy_with_logits(torch.tensor([3.0]), torch.tensor([1.0]))
    torch.testing.assert_close(easy, ce * (1 - torch.sigmoid(torch.tensor([3.0]))) ** 2)
    assert easy < ce / 100


def test_focal_loss_half_alpha_zero_gamma_is_half_cross_entropy(gen):
    logits, targets = _logits_and_targets(gen)
    expected = 0.5 * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 0.5, 0.0), expected, rtol=1e-5, atol=1e-6)
    # and alpha = -1, gamma = 0 is the cross-entropy itself
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, -1, 0.0), expected, rtol=1e-5, atol=1e-6)


def test_gaussian_nll_equals_torch(gen):
    pred, target = torch.randn(50, 4, generator=gen), torch.randn(50, 4, generator=gen) * 3
    expected = torch.nn.GaussianNLLLoss(full=True, reduction="none")(pred, target, torch.ones(50, 4))
    torch.testing.assert_close(gaussian_nll_loss(pred, target), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        gaussian_nll_loss(torch.zeros(1), torch.zeros(1)), torch.tensor([0.5 * math.log(2 * math.pi)])
    )


def _pairs(gen, n=40):
    anchors = torch.tensor([10.0, 20.0, 60.0, 90.0]) + torch.rand(n, 4, generator=gen) * torch.tensor([20, 20, 80, 80])
    return torch.randn(n, 4, generator=gen) * 0.5, torch.randn(n, 4, generator=gen) * 0.5, anchors


def test_smooth_l1_with_beta_zero_is_l1(gen):
    pred, target, anchors = _pairs(gen)
    l1 = (pred - target).abs().sum()
    cfg = RetinaConfig(box_loss="smooth_l1", smooth_l1_beta=0.0)
    torch.testing.assert_close(box_loss(pred, target, anchors, cfg), l1)
    torch.testing.assert_close(box_loss(pred, target, anchors, cfg.replace(box_loss="l1")), l1)
    # beta = 0.1: 0.5 x^2 / beta below beta, |x| - beta / 2 above, and the test has both
    diff = (pred - target).abs()
    assert (diff < 0.1).any() and (diff > 0.1).any()
    expected = torch.where(diff < 0.1, 0.5 * diff**2 / 0.1, diff - 0.05).sum()
    torch.testing.assert_close(box_loss(pred, target, anchors, cfg.replace(smooth_l1_beta=0.1)), expected)
    assert box_loss(pred, target, anchors, cfg.replace(smooth_l1_beta=0.1)) < l1


def test_nll_box_loss_is_half_squared_error_plus_constant(gen):
    pred, target, anchors = _pairs(gen)
    expected = 0.5 * ((pred - target) ** 2).sum() + pred.numel() * 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(box_loss(pred, target, anchors, RetinaConfig(box_loss="nll")), expected)


def test_giou_loss(gen):
    pred, target, anchors = _pairs(gen)
    cfg = RetinaConfig(box_loss="giou")
    assert box_loss(target, target, anchors, cfg).abs() < 1e-4  # perfect predictions
    loss = box_loss(pred, target, anchors, cfg)
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    giou = torchvision.ops.generalized_box_iou(coder.decode_single(pred, anchors), coder.decode_single(target, anchors))
    torch.testing.assert_close(loss, (1 - giou.diagonal()).sum())
    assert loss > 1.0
    # every imperfect pair costs something; a single disjoint pair costs more than 1
    for i in range(5):
        assert box_loss(pred[i : i + 1], target[i : i + 1], anchors[i : i + 1], cfg) > 0
    far = target[:1].clone()
    far[0, 0] += 5.0  # shifted by 5 anchor widths: no overlap
    assert box_loss(far, target[:1], anchors[:1], cfg) > 1.0
    # GIoU is invariant to translating and to scaling each axis, so the loss does not depend on the anchors
    # (a wrong anchor would go unnoticed: the per-image tests check the anchors with the other losses)
    other_anchors = anchors.flip(0) * torch.tensor([0.5, 2.0, 0.5, 2.0]) + 7.0
    torch.testing.assert_close(box_loss(pred, target, other_anchors, cfg), loss, rtol=1e-5, atol=1e-5)
    # box weights are honoured when decoding
    w = (10.0, 10.0, 5.0, 5.0)
    coder = BoxCoder(w)
    giou = torchvision.ops.generalized_box_iou(coder.decode_single(pred, anchors), coder.decode_single(target, anchors))
    torch.testing.assert_close(box_loss(pred, target, anchors, cfg.replace(box_weights=w)), (1 - giou.diagonal()).sum())


def test_unknown_box_loss(gen):
    pred, target, anchors = _pairs(gen)
    with pytest.raises(ValueError, match="unknown box loss 'l2'"):
        box_loss(pred, target, anchors, RetinaConfig(box_loss="l2"))


# ---------------------------------------------------------------- the batch loss


def reference_loss(cls_logits, box_deltas, cls_targets, box_targets, anchors, config):
    """Image by image, from torchvision and torch.nn parts: one-hot rows, ignored anchors left out,
    divided by the foreground count of the whole batch (at least 1)."""
    cls_sum = box_sum = 0.0
    total_fg = 0
    coder = BoxCoder(config.box_weights)
    for logits, deltas, labels, targets in zip(cls_logits, box_deltas, cls_targets, box_targets, strict=True):
        fg = labels >= 0
        one_hot = torch.zeros_like(logits)
        one_hot[fg.nonzero()[:, 0], labels[fg]] = 1.0
        keep = labels != -2
        cls_sum += torchvision.ops.sigmoid_focal_loss(
            logits[keep], one_hot[keep], config.focal_alpha, config.focal_gamma, reduction="sum"
        )
        pred, target, anc = deltas[fg], targets[fg], anchors[fg]
        if config.box_loss == "l1":
            box_sum += (pred - target).abs().sum()
        elif config.box_loss == "smooth_l1":
            diff, beta = (pred - target).abs(), config.smooth_l1_beta
            box_sum += torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta).sum()
        elif config.box_loss == "nll":
            box_sum += torch.nn.GaussianNLLLoss(full=True, reduction="sum")(pred, target, torch.ones_like(pred))
        elif config.box_loss == "giou":
            giou = torchvision.ops.generalized_box_iou(coder.decode_single(pred, anc), coder.decode_single(target, anc))
            box_sum += (1 - giou.diagonal()).sum()
        total_fg += int(fg.sum())
    return cls_sum / max(total_fg, 1), box_sum / max(total_fg, 1)


def _random_batch(gen, batch=3, n=400, c=5):
    cls_targets = torch.randint(0, c, (batch, n), generator=gen)
    fate = torch.rand(batch, n, generator=gen)
    cls_targets[fate < 0.9] = -1  # background
    cls_targets[fate < 0.1] = -2  # ignored
    cls_targets[1] = torch.where(cls_targets[1] >= 0, -1, cls_targets[1])  # an image without foreground
    box_targets = torch.randn(batch, n, 4, generator=gen) * 0.5 * (cls_targets >= 0)[..., None]
    cls_logits = torch.randn(batch, n, c, generator=gen) * 3 - 2
    box_deltas = box_targets + torch.randn(batch, n, 4, generator=gen) * 0.3
    xy = torch.rand(n, 2, generator=gen) * 200
    anchors = torch.cat((xy, xy + 16 + torch.rand(n, 2, generator=gen) * 200), dim=1)
    return cls_logits, box_deltas, cls_targets, box_targets, anchors


@pytest.mark.parametrize("kind", BOX_LOSSES)
def test_retina_loss_equals_per_image_loop(gen, kind):
    config = RetinaConfig(num_classes=5, box_loss=kind)
    batch = _random_batch(gen)
    cls_targets = batch[2]
    assert {-2, -1} < set(cls_targets.unique().tolist()) and (cls_targets[1] < 0).all()
    out = retina_loss(*batch, config)
    expected_cls, expected_box = reference_loss(*batch, config)
    assert set(out) == {"classification", "bbox_regression"}
    torch.testing.assert_close(out["classification"], expected_cls, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["bbox_regression"], expected_box, rtol=1e-5, atol=1e-6)
    assert out["classification"] > 0 and out["bbox_regression"] > 0


def test_retina_loss_focal_settings_and_ignored_anchors(gen):
    config = RetinaConfig(num_classes=5, focal_alpha=-1.0, focal_gamma=0.5, box_loss="l1")
    cls_logits, box_deltas, cls_targets, box_targets, anchors = _random_batch(gen)
    out = retina_loss(cls_logits, box_deltas, cls_targets, box_targets, anchors, config)
    expected_cls, _ = reference_loss(cls_logits, box_deltas, cls_targets, box_targets, anchors, config)
    torch.testing.assert_close(out["classification"], expected_cls, rtol=1e-5, atol=1e-6)
    # whatever the logits of ignored anchors, the loss does not change
    changed = torch.where((cls_targets == -2)[..., None], torch.full_like(cls_logits, 30.0), cls_logits)
    again = retina_loss(changed, box_deltas, cls_targets, box_targets, anchors, config)
    torch.testing.assert_close(again["classification"], out["classification"], rtol=0, atol=0)
    # while those of background anchors do
    changed = torch.where((cls_targets == -1)[..., None], torch.full_like(cls_logits, 30.0), cls_logits)
    assert (
        retina_loss(changed, box_deltas, cls_targets, box_targets, anchors, config)["classification"]
        > 10 * (out["classification"])
    )


def test_retina_loss_without_foreground_divides_by_one(gen):
    config = RetinaConfig(num_classes=5)
    cls_logits, box_deltas, cls_targets, box_targets, anchors = _random_batch(gen)
    cls_targets = torch.where(cls_targets >= 0, -1, cls_targets)
    out = retina_loss(cls_logits, box_deltas, cls_targets, torch.zeros_like(box_targets), anchors, config)
    counted = cls_targets == -1
    expected = torchvision.ops.sigmoid_focal_loss(
        cls_logits[counted], torch.zeros_like(cls_logits[counted]), reduction="sum"
    )
    torch.testing.assert_close(out["classification"], expected, rtol=1e-5, atol=1e-6)
    assert out["bbox_regression"] == 0


@pytest.fixture(scope="module")
def matched_example():
    """One 256 x 256 image, its anchors, 6 boxes and our matching."""
    g = torch.Generator().manual_seed(1)
    anchors = generate_anchors(RetinaConfig(), (256, 256))
    xy = torch.rand(6, 2, generator=g) * 150
    boxes = torch.cat((xy, xy + 16 + torch.rand(6, 2, generator=g) * 90), dim=1)
    labels = torch.randint(0, 5, (6,), generator=g)
    gt, gt_labels, valid, ignore = pad_targets([{"boxes": boxes, "labels": labels}])
    return anchors, boxes, labels, gt, gt_labels, valid, ignore, g


@pytest.mark.parametrize("bg_iou", [0.5, 0.4])
def test_retina_loss_equals_torchvision_head(matched_example, bg_iou):
    """B = 1, L1 box loss: torchvision's RetinaNetHead.compute_loss with our matching as matched_idxs.
    bg_iou = 0.5 leaves no anchor ignored; 0.4 (the paper) ignores those in between, as torchvision does."""
    anchors, boxes, labels, gt, gt_labels, valid, ignore, g = matched_example
    matched = match_anchors(anchors, gt, valid, ignore, fg_iou=0.5, bg_iou=bg_iou)
    assert ((matched == -2).any()) == (bg_iou < 0.5) and (matched >= 0).sum() > 20
    cls_targets, box_targets = encode_targets(anchors, gt, gt_labels, matched)
    n = len(anchors)
    cls_logits = torch.randn(1, n, 5, generator=g) * 2 - 3
    box_deltas = box_targets + torch.randn(1, n, 4, generator=g) * 0.2

    head = RetinaNetHead(in_channels=8, num_anchors=9, num_classes=5)
    expected = head.compute_loss(
        [{"boxes": boxes, "labels": labels}],
        {"cls_logits": cls_logits, "bbox_regression": box_deltas},
        [anchors],
        [matched[0]],
    )
    out = retina_loss(
        cls_logits, box_deltas, cls_targets, box_targets, anchors, RetinaConfig(num_classes=5, box_loss="l1")
    )
    torch.testing.assert_close(out["classification"], expected["classification"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["bbox_regression"], expected["bbox_regression"], rtol=1e-5, atol=1e-6)

    # two copies of the image: torchvision averages per-image losses, we divide by the batch's count; equal here
    twice = [torch.cat((t, t)) for t in (cls_logits, box_deltas, cls_targets, box_targets)]
    out = retina_loss(*twice, anchors, RetinaConfig(num_classes=5, box_loss="l1"))
    torch.testing.assert_close(out["classification"], expected["classification"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["bbox_regression"], expected["bbox_regression"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", BOX_LOSSES)
def test_retina_loss_gradients_are_finite(gen, kind):
    config = RetinaConfig(num_classes=5, box_loss=kind)
    cls_logits, box_deltas, cls_targets, box_targets, anchors = _random_batch(gen)
    box_deltas[0, :50] = 50.0  # huge deltas (an untrained head): clamped when decoded
    box_deltas[2, :50] = -50.0
    for targets in (cls_targets, torch.where(cls_targets >= 0, -1, cls_targets)):  # with and without foreground
        logits = cls_logits.clone().requires_grad_(True)
        deltas = box_deltas.clone().requires_grad_(True)
        out = retina_loss(logits, deltas, targets, box_targets, anchors, config)
        (out["classification"] + out["bbox_regression"]).backward()
        assert torch.isfinite(logits.grad).all() and torch.isfinite(deltas.grad).all()
        assert (logits.grad[targets == -2] == 0).all() and (logits.grad[targets >= -1] != 0).any()
        assert (deltas.grad[targets < 0] == 0).all()
        assert ((deltas.grad[targets >= 0] != 0).any()) == bool((targets >= 0).any())


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 0.5), (0.75, 3.0)])
@pytest.mark.parametrize("block", [2**18, 7])
def test_retina_loss_gradients_equal_autograd_of_torchvision(gen, monkeypatch, alpha, gamma, block):
    """FocalLossSum's own backward pass against autograd through torchvision's sigmoid_focal_loss, with the batch
    in one block and in blocks of 7 logits (a block boundary inside most anchors' rows of C = 5)."""
    monkeypatch.setattr(losses, "BLOCK", block)
    config = RetinaConfig(num_classes=5, focal_alpha=alpha, focal_gamma=gamma, box_loss="l1")
    cls_logits, box_deltas, cls_targets, box_targets, anchors = _random_batch(gen)
    cls_logits[0, :2] = torch.tensor([-40.0, -20.0, 0.0, 20.0, 40.0])  # the extremes: finite, exact gradients
    ours = cls_logits.clone().requires_grad_(True)
    theirs = cls_logits.clone().requires_grad_(True)
    out = retina_loss(ours, box_deltas, cls_targets, box_targets, anchors, config)["classification"]
    expected, _ = reference_loss(theirs, box_deltas, cls_targets, box_targets, anchors, config)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    (3 * out).backward()
    (3 * expected).backward()
    # Autograd through (1 - p_t)^gamma gives NaN where 1 - p_t rounds to 0 and gamma < 1 (logit -40, target 0);
    # the closed-form derivative is finite there.
    finite = torch.isfinite(theirs.grad)
    assert torch.isfinite(ours.grad).all() and finite.float().mean() > 0.99
    torch.testing.assert_close(ours.grad[finite], theirs.grad[finite], rtol=1e-4, atol=1e-7)


def test_retina_loss_second_backward_through_one_graph_says_to_compute_the_loss_again(gen):
    """The focal term's gradient is made in the forward pass and handed over by the first backward pass."""
    config = RetinaConfig(num_classes=5)
    cls_logits, box_deltas, cls_targets, box_targets, anchors = _random_batch(gen)
    logits = cls_logits.requires_grad_(True)
    loss = retina_loss(logits, box_deltas, cls_targets, box_targets, anchors, config)["classification"]
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    with pytest.raises(RuntimeError, match="compute the loss again to backpropagate through it again"):
        loss.backward()
    logits.grad = None
    retina_loss(logits, box_deltas, cls_targets, box_targets, anchors, config)["classification"].backward()
    assert torch.equal(logits.grad, first)
