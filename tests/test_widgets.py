"""retina.widgets: the compute functions behind the notebook widgets, checked without a browser."""

from __future__ import annotations

import base64
import json
import math
import signal
import threading
import time

import pytest
import torch
import torchvision

from retina.anchors import anchors_per_level_counts, generate_anchors
from retina.config import RetinaConfig
from retina.widgets import (
    AnchorTuner,
    FocalLossExplorer,
    LiveLossCurve,
    NMSExplorer,
    anchor_config,
    anchor_recall,
    easy_negative_share,
    nms_filter,
    prior_bias,
    step0_loss,
    true_positives,
)


def small_config(**changes) -> RetinaConfig:
    """Three levels on a 32 px padding grid: few enough anchors for a pure-Python brute force."""
    base = RetinaConfig(
        anchor_sizes=(12, 24, 48), strides=(8, 16, 32), size_divisible=32, aspect_ratios=(0.5, 1.0, 2.0)
    )
    return base.replace(**changes)


def python_iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def brute_force(boxes_per_image, sizes, config):
    """Every box against every anchor of its padded image, in plain Python: (best IoU, level) per box."""
    result = []
    for boxes, (height, width) in zip(boxes_per_image, sizes, strict=True):
        padded = (math.ceil(height / config.size_divisible) * config.size_divisible,
                  math.ceil(width / config.size_divisible) * config.size_divisible)  # fmt: skip
        anchors = generate_anchors(config, padded).tolist()
        levels = [k for k, n in enumerate(anchors_per_level_counts(config, padded)) for _ in range(n)]
        for box in boxes.tolist():
            per_level = [0.0] * len(config.strides)
            for anchor, level in zip(anchors, levels, strict=True):
                per_level[level] = max(per_level[level], python_iou(box, anchor))
            result.append(per_level)
    return torch.tensor(result, dtype=torch.float64)  # [n, K]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"anchor_offset": 0.5},
        {"round_anchors": False, "anchor_scales": (1.0, 1.5)},
        {"aspect_ratios": (1 / 3, 3.0)},
    ],
)
def test_anchor_recall_equals_brute_force(make_boxes, changes):
    config = small_config(**changes)
    sizes = [(70, 100), (64, 64), (70, 100), (33, 90)]  # two share a padded size; none is a multiple of 32
    boxes = [make_boxes(n, size, min_size=3.0, max_size=60.0) for n, size in zip((9, 7, 0, 5), sizes, strict=True)]
    result = anchor_recall(boxes, sizes, config)
    expected = brute_force(boxes, sizes, config)  # [n, K]

    assert result["level_iou"].shape == (21, 3)
    torch.testing.assert_close(torch.as_tensor(result["level_iou"]).double(), expected, atol=1e-5, rtol=0)
    best = expected.max(dim=1).values
    torch.testing.assert_close(torch.as_tensor(result["best_iou"]).double(), best, atol=1e-5, rtol=0)
    # the level of the best anchor, wherever it is not a near tie
    top2 = expected.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4
    assert torch.equal(torch.as_tensor(result["best_level"])[clear], expected.argmax(dim=1)[clear])
    # the best anchor reported is a real anchor with that IoU
    all_boxes = torch.cat(boxes)
    for i in range(len(all_boxes)):
        assert python_iou(all_boxes[i].tolist(), result["best_anchor"][i].tolist()) == pytest.approx(
            float(best[i]), abs=1e-5
        )
    assert result["recall"] == pytest.approx(float((best >= config.fg_iou).double().mean()))
    assert sum(result["recall_per_level"].values()) == pytest.approx(result["recall"])
    assert list(result["recall_per_level"]) == ["P3", "P4", "P5"]


def test_anchor_recall_one_size_for_all_images(make_boxes):
    config = small_config()
    boxes = [make_boxes(4, (64, 64), max_size=40.0) for _ in range(3)]
    one = anchor_recall(boxes, (64, 64), config)
    each = anchor_recall(boxes, [(64, 64)] * 3, config)
    assert (one["best_iou"] == each["best_iou"]).all()


def test_small_anchors_catch_small_boxes():
    """12 px boxes on a 256 px image: IoU 0.14 at best with the paper's anchors (the smallest is 46 x 22 px),
    a perfect fit for a 12 px one."""
    boxes = [torch.tensor([[98.0, 98.0, 110.0, 110.0], [34.0, 50.0, 46.0, 62.0]])]  # centred on P3 grid points
    paper = anchor_recall(boxes, (256, 256), RetinaConfig())
    assert paper["recall"] == 0.0
    assert paper["best_iou"].max() == pytest.approx(144 / (46 * 22), abs=1e-6)  # inside the smallest anchor
    small = anchor_recall(boxes, (256, 256), anchor_config(12, scales_per_octave=1, aspect_ratios=(1.0,)))
    assert small["recall"] == 1.0
    assert small["recall_per_level"]["P3"] == 1.0
    assert (small["best_iou"] == 1.0).all()  # 12 px anchors centred on the boxes' centres: exact fits


def test_anchor_recall_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one box"):
        anchor_recall([torch.zeros(0, 4)], (64, 64), small_config())
    with pytest.raises(ValueError, match="2 images but 1 image sizes"):
        anchor_recall([torch.zeros(1, 4), torch.zeros(1, 4)], [(64, 64)], small_config())


def test_anchor_config():
    config = anchor_config(16, scales_per_octave=2, aspect_ratios=(1.0, 2.0), fg_iou=0.35)
    assert config.anchor_sizes == (16, 32, 64, 128, 256)
    assert config.anchor_scales == (1.0, pytest.approx(2**0.5))
    assert config.aspect_ratios == (1.0, 2.0)
    assert config.num_anchors == 4
    assert (config.fg_iou, config.bg_iou) == (0.35, 0.35)  # the background threshold follows a lower fg_iou
    assert anchor_config(32, fg_iou=0.6).bg_iou == 0.4
    kept = anchor_config(8, config=RetinaConfig(anchor_offset=0.5, num_classes=3))
    assert (kept.anchor_offset, kept.num_classes) == (0.5, 3)
    with pytest.raises(ValueError):
        anchor_config(16, aspect_ratios=())


@pytest.mark.parametrize("score_thresh, iou_thresh", [(0.0, 0.5), (0.3, 0.5), (0.5, 0.3), (0.2, 0.6)])
def test_nms_filter_equals_threshold_then_torchvision(make_boxes, gen, score_thresh, iou_thresh):
    boxes = make_boxes(300, (200, 200), min_size=10.0, max_size=80.0)
    scores = torch.rand(300, generator=gen)
    labels = torch.randint(0, 4, (300,), generator=gen)
    keep = nms_filter(boxes, scores, labels, score_thresh, iou_thresh)
    above = torch.nonzero(scores > score_thresh).squeeze(1)
    expected = above[torchvision.ops.batched_nms(boxes[above], scores[above], labels[above], iou_thresh)]
    assert torch.equal(keep, expected)
    assert len(keep) < len(above)  # something was suppressed: the test is not vacuous


def test_anchor_tuner_follows_its_sliders(make_boxes, gen):
    boxes = [make_boxes(5, (128, 128), min_size=6.0, max_size=20.0) for _ in range(4)]
    image = torch.rand(3, 128, 128, generator=gen)
    tuner = AnchorTuner(boxes, (128, 128), (image, boxes[0]), RetinaConfig())
    assert tuner.current_config().anchor_sizes == (32, 64, 128, 256, 512)
    tuner.base.value = 8
    tuner.scales.value = 2
    tuner.ratios.value = (1.0,)
    tuner.iou.value = 0.4
    config = tuner.current_config()
    assert config.anchor_sizes == (8, 16, 32, 64, 128) and config.num_anchors == 2 and config.fg_iou == 0.4
    fig = tuner.draw()
    recall = anchor_recall(boxes, (128, 128), config)["recall"]
    assert fig.axes[1].get_title() == f"20 boxes: anchor recall {recall:.1%}"
    tuner.ratios.value = ()  # nothing selected: squares
    assert tuner.current_config().aspect_ratios == (1.0,)


def test_nms_explorer_draws_what_nms_filter_keeps(make_boxes, gen):
    samples = []
    for _ in range(2):
        boxes = make_boxes(60, (100, 100), min_size=20.0, max_size=60.0)
        scores = torch.rand(60, generator=gen)
        labels = torch.randint(0, 3, (60,), generator=gen)
        gt = {"gt_boxes": boxes[:5] + 1.0, "gt_labels": labels[:5]}
        samples.append({"image": torch.rand(3, 100, 100, generator=gen), "boxes": boxes, "scores": scores,
                        "labels": labels, **gt})  # fmt: skip
    explorer = NMSExplorer(samples, ["a", "b", "c"])
    explorer.picker.value = 1
    explorer.score.value, explorer.iou.value = 0.5, 0.4
    assert explorer.boxes is samples[1]["boxes"]
    before, after = explorer.draw().axes
    boxes, scores, labels = samples[1]["boxes"], samples[1]["scores"], samples[1]["labels"]
    kept = nms_filter(boxes, scores, labels, 0.5, 0.4)
    right = true_positives(boxes[kept], scores[kept], labels[kept], samples[1]["gt_boxes"], samples[1]["gt_labels"])
    assert before.get_title() == f"before NMS: {int((scores > 0.5).sum())} boxes"
    assert after.get_title() == (
        f"after NMS: {len(kept)} boxes ({int(right.sum())} right, {int((~right).sum())} wrong; 5 objects)"
    )
    assert 0 < len(kept) < int((scores > 0.5).sum())
    # labels from the lowest score up: the best one is drawn last, on top of any it overlaps
    shown = [float(t.get_text().split()[-1]) for t in after.texts]
    assert shown == sorted(shown) and shown[-1] == round(float(scores[kept].max()), 2)
    bundle = explorer._repr_mimebundle_()
    assert "image/jpeg" in bundle  # the static picture for readers without a kernel


def test_true_positives_by_hand():
    gt_boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    gt_labels = torch.tensor([0, 1])
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [20, 20, 30, 30], [50, 50, 60, 60]])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.7, 0.95])
    labels = torch.tensor([0, 0, 0, 1, 1])
    # box 1 (0.9) claims object 0 first, so box 0 (0.6) is a duplicate; box 2 has the wrong class; box 3 is right;
    # box 4 overlaps nothing
    right = true_positives(boxes, scores, labels, gt_boxes, gt_labels)
    assert right.tolist() == [False, True, False, True, False]
    assert true_positives(boxes, scores, labels, gt_boxes, gt_labels, iou_thresh=0.95).tolist() == [
        True, False, False, True, False
    ]  # box 1 (IoU 0.9 with object 0) misses it, so box 0 (IoU 1) claims it  # fmt: skip
    assert true_positives(boxes[:0], scores[:0], labels[:0], gt_boxes, gt_labels).tolist() == []


def focal_batch(gen):
    """Step-0-like logits of a zero-bias classifier `[2, 300, 4]` and targets with background, ignored and
    foreground anchors."""
    logits = 0.5 * torch.randn(2, 300, 4, generator=gen)
    cls_targets = torch.full((2, 300), -1)
    cls_targets[:, :20] = -2
    cls_targets[:, 20:29] = torch.randint(0, 4, (2, 9), generator=gen)
    return logits, cls_targets


def torchvision_loss(logits, cls_targets, alpha, gamma):
    """The same loss written independently: torchvision's sigmoid_focal_loss over the one-hot targets of the
    anchors that are not ignored, divided by the foreground count."""
    keep = cls_targets != -2
    one_hot = torch.zeros(logits.shape, dtype=torch.float64)
    fg = cls_targets >= 0
    one_hot[fg.nonzero(as_tuple=True) + (cls_targets[fg],)] = 1.0
    loss = torchvision.ops.sigmoid_focal_loss(logits.double()[keep], one_hot[keep], alpha, gamma, reduction="sum")
    return float(loss) / int(fg.sum())


def test_step0_loss_equals_torchvision(gen):
    logits, cls_targets = focal_batch(gen)
    for prior, alpha, gamma in ((0.01, 0.25, 2.0), (0.5, -1.0, 0.0), (0.001, 0.75, 1.0)):
        expected = torchvision_loss(logits + math.log(prior / (1 - prior)), cls_targets, alpha, gamma)
        assert step0_loss(logits, cls_targets, prior, alpha, gamma) == pytest.approx(expected, rel=1e-9)
    assert prior_bias(0.01) == pytest.approx(-4.59512, abs=1e-5)


def test_easy_negative_share_by_hand():
    logits = torch.tensor([[[-3.0, 0.0], [3.0, -5.0]]])  # anchor 0 background, anchor 1 of class 0
    cls_targets = torch.tensor([[-1, 0]])
    entries, share = easy_negative_share(logits, cls_targets, alpha=-1.0, gamma=0.0)
    # easy negatives (1 - sigmoid(x) >= 0.9): logits -3 and -5, two of the four entries
    ce = torch.nn.functional.softplus(torch.tensor([-3.0, 0.0, -3.0, -5.0], dtype=torch.float64))  # -log p_t
    assert entries == 0.5
    assert share == pytest.approx(float((ce[0] + ce[3]) / ce.sum()))


def test_focal_loss_explorer_prints_the_numbers_of_its_sliders(gen):
    logits, cls_targets = focal_batch(gen)
    explorer = FocalLossExplorer(logits, cls_targets)
    explorer.gamma.value, explorer.alpha.value, explorer.prior.value = 1.5, 0.4, 0.001
    fig = explorer.draw()
    bars = fig.axes[1]
    shown = [float(t.get_text()) for t in bars.texts]
    expected = [
        torchvision_loss(logits + prior_bias(prior), cls_targets, alpha, gamma)
        for prior in (0.001, 0.5)
        for alpha, gamma in ((0.4, 1.5), (-1.0, 0.0))
    ]
    assert shown == [round(v, 2) for v in expected]
    assert [t.get_text() for t in bars.get_xticklabels()][0] == "focal\n$\\pi = 0.001$"
    shifted = logits + prior_bias(0.001)
    one_hot = torch.zeros(logits.shape, dtype=torch.bool)
    fg = cls_targets >= 0
    one_hot[fg.nonzero(as_tuple=True) + (cls_targets[fg],)] = True
    easy = (torch.sigmoid(-shifted) >= 0.9) & ~one_hot & (cls_targets != -2)[..., None]
    assert f"{float(easy.sum()) / (280 * 2 * 4):.2%} of the entries" in fig._suptitle.get_text()
    assert "image/jpeg" in explorer._repr_mimebundle_()


def write_metrics(path, steps):
    records = [
        {"step": s, "epoch": 0, "lr": 1e-3, "loss": 2.0 / s, "classification": 1.0 / s, "bbox_regression": 1.0 / s}
        for s in steps
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_live_loss_curve_redraws_from_the_metrics_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    live = LiveLossCurve(path, every=0.01)
    with live:
        time.sleep(0.05)
        assert live.draws == 0  # nothing logged yet: nothing drawn
        write_metrics(path, [10, 20, 30])
        deadline = time.monotonic() + 10
        while live.draws == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert live.draws >= 2  # at least once by the thread, once on leaving
    assert live.draw() == 30
    with open(path, "a") as f:
        f.write('{"step": 40, "lo')  # a record half written
    assert live.draw() == 0


def test_live_loss_curve_presses_interrupt_once(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_metrics(path, [10, 20])
    presses = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: presses.append(signum))
    try:
        with LiveLossCurve(path, every=0.01, interrupt_at_step=20) as live:
            deadline = time.monotonic() + 10
            while not presses and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # more redraws: no second press
        assert presses == [signal.SIGINT] and live.interrupted
        with LiveLossCurve(path, every=0.01, interrupt_at_step=25):
            time.sleep(0.1)
        assert presses == [signal.SIGINT]  # step 25 not reached: no press
    finally:
        signal.signal(signal.SIGINT, previous)


def test_live_loss_curve_does_not_interrupt_after_the_block(tmp_path, monkeypatch):
    """A run that ends while the thread is still redrawing (shorter than a redraw) must not get the "interrupt":
    it would land on whatever runs after the block."""
    path = tmp_path / "metrics.jsonl"
    write_metrics(path, [10, 20])
    presses = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: presses.append(signum))
    live = LiveLossCurve(path, every=0.01, interrupt_at_step=20)
    drawing = threading.Event()

    def slow_draw() -> int:  # the first redraw outlasts the block
        drawing.set()
        time.sleep(0.3)
        return 20

    monkeypatch.setattr(live, "draw", slow_draw)
    try:
        with live:
            assert drawing.wait(10)
        time.sleep(0.05)
        assert presses == [] and not live.interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("bg_iou, offset", [(0.4, 0.0), (0.3, 0.5), (0.45, 0.5)])
def test_anchor_tuner_thresholds_offset_and_counts(make_boxes, gen, bg_iou, offset):
    """The background-threshold and offset controls reach the config; the shares by threshold, A, N and the
    sample's anchor fates in the title agree with a plain-Python count over every anchor."""
    sizes = [(64, 64)] * 3
    boxes = [make_boxes(n, (64, 64), min_size=4.0, max_size=40.0) for n in (6, 4, 5)]
    image = torch.rand(3, 64, 64, generator=gen)
    tuner = AnchorTuner(boxes, sizes, (image, boxes[0]), small_config())
    tuner.bg_iou.value, tuner.offset.value = bg_iou, offset
    config = tuner.current_config()
    assert (config.fg_iou, config.bg_iou, config.anchor_offset) == (0.5, bg_iou, offset)

    best = brute_force(boxes, sizes, config).max(dim=1).values  # [n]
    result = anchor_recall(boxes, sizes, config)
    assert result["recall"] == pytest.approx(float((best >= 0.5).double().mean()))
    assert result["ignored_share"] == pytest.approx(float(((best >= bg_iou) & (best < 0.5)).double().mean()))
    assert result["background_share"] == pytest.approx(float((best < bg_iou).double().mean()))
    assert result["recall"] + result["ignored_share"] + result["background_share"] == pytest.approx(1.0)

    anchors = generate_anchors(config, (64, 64)).tolist()  # 64 is a multiple of 32: no padding
    assert len(anchors) == sum(anchors_per_level_counts(config, (64, 64))) == 9 * (8 * 8 + 4 * 4 + 2 * 2)
    iou = [[python_iou(box, anchor) for anchor in anchors] for box in boxes[0].tolist()]  # [G][N]
    per_anchor = [max(column) for column in zip(*iou, strict=True)]
    low_quality = {n for row in iou for n, v in enumerate(row) if v == max(row) and v > 0}
    foreground = {n for n, v in enumerate(per_anchor) if v >= 0.5} | low_quality
    ignored = sum(1 for n, v in enumerate(per_anchor) if n not in foreground and v >= bg_iou)
    background = len(anchors) - len(foreground) - ignored
    title = tuner.draw()._suptitle.get_text()
    assert title.startswith(f"A = 9 anchors per location, N = {len(anchors):,} per image. ")
    assert f"{len(foreground)} foreground, {ignored} ignored, {background:,} background anchors" in title
    assert f"bg IoU {bg_iou:g}, offset {offset:g}" in title


def test_anchor_tuner_background_threshold_capped_by_foreground(make_boxes):
    boxes = [make_boxes(3, (64, 64))]
    tuner = AnchorTuner(boxes, (64, 64), (torch.rand(3, 64, 64), boxes[0]), small_config())
    tuner.iou.value, tuner.bg_iou.value = 0.35, 0.6
    assert (tuner.current_config().fg_iou, tuner.current_config().bg_iou) == (0.35, 0.35)


def test_anchor_tuner_output_carries_a_static_picture(make_boxes):
    boxes = [make_boxes(3, (64, 64))]
    tuner = AnchorTuner(boxes, (64, 64), (torch.rand(3, 64, 64), boxes[0]), small_config())
    bundle = tuner._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    jpeg = base64.b64decode(bundle["image/jpeg"])
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) > 1000  # a JPEG file, not an empty one


def test_anchor_tuner_offset_buttons_fit_their_labels(make_boxes):
    """Each offset button is as wide as its label at JupyterLab's 13 px font (measured in DejaVu Sans, wider than
    most system fonts), plus ipywidgets' 10 px padding each side and 8 px to spare: at 80 px "centre 0.5" was cut."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    boxes = [make_boxes(3, (64, 64))]
    tuner = AnchorTuner(boxes, (64, 64), (torch.rand(3, 64, 64), boxes[0]), small_config())
    width = float(tuner.offset.style.button_width.removesuffix("px"))
    for label in tuner.offset._options_labels:
        text = TextPath((0, 0), label, size=13, prop=FontProperties(family="DejaVu Sans")).get_extents().width
        assert width >= text + 2 * 10 + 8, (label, text)
    assert "centre 0.5" in tuner.offset._options_labels


def test_widget_bundle_without_repr_mimebundle_is_the_widget_view(monkeypatch):
    """ipywidgets 7 (Colab's kernel) has no Widget._repr_mimebundle_: the bundle is built from the model id."""
    import ipywidgets

    from retina.widgets import widget_bundle

    slider = ipywidgets.IntSlider(3)
    assert widget_bundle(slider)["application/vnd.jupyter.widget-view+json"]["model_id"] == slider.model_id
    monkeypatch.delattr(ipywidgets.Widget, "_repr_mimebundle_")
    assert not hasattr(slider, "_repr_mimebundle_")
    bundle = widget_bundle(slider)
    assert bundle["application/vnd.jupyter.widget-view+json"] == {
        "version_major": 2,
        "version_minor": 0,
        "model_id": slider.model_id,
    }
    assert bundle["text/plain"].startswith("IntSlider(")
