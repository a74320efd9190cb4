"""retina.figures: each figure shows what the package computes, and the README's svgs are reproducible."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib import patches
from matplotlib import pyplot as plt

from retina import figures
from retina.anchors import anchor_shapes, anchors_per_level_counts, generate_anchors
from retina.boxes import box_convert
from retina.config import RetinaConfig
from retina.targets import BACKGROUND, IGNORE, match_anchors

matplotlib.use("Agg")
SVGS = Path(__file__).resolve().parent.parent / "svgs"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def rectangles(ax) -> list[tuple[float, float, float, float]]:
    """The xyxy boxes drawn on `ax` as Rectangle patches (the image's own patch aside)."""
    return [
        (p.get_x(), p.get_y(), p.get_x() + p.get_width(), p.get_y() + p.get_height())
        for p in ax.patches
        if isinstance(p, patches.Rectangle) and not p.get_fill()
    ]


def image(height: int = 128, width: int = 128) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))


def test_anchors_figure_draws_the_anchors_of_the_config():
    config = RetinaConfig()
    fig = figures.anchors_figure(config, image(256, 256), level=1)
    left, right = fig.axes[:2]
    # left: the 3 ratios of scale 0 of P4, at the first location (0, 0) and the last (240, 240)
    shapes = anchor_shapes(64, config.anchor_scales, config.aspect_ratios)[:: len(config.anchor_scales)]
    expected = sorted([tuple(s) for s in shapes.tolist()] + [tuple(s) for s in (shapes + 240).tolist()])
    assert sorted(rectangles(left)) == expected
    # right: 5 levels x 3 scales of squares at (0, 0), the largest 512 * 2^(2/3) ~ 812 px wide
    widths = sorted(x2 - x1 for x1, _, x2, _ in rectangles(right))
    assert len(widths) == 15
    assert widths[0] == 32 and widths[-1] == int(512 * 2 ** (2 / 3))
    assert right.get_xlim()[1] - right.get_xlim()[0] > 812  # the view widens to show every anchor


def test_grids_figure_counts_every_anchor():
    config = RetinaConfig()
    fig = figures.grids_figure(config, image(256, 384))
    counts = [int(ax.get_title().split("= ")[1]) for ax in fig.axes]
    assert counts == anchors_per_level_counts(config, (256, 384))
    assert sum(counts) == len(generate_anchors(config, (256, 384)))
    assert [len(ax.collections[0].get_offsets()) for ax in fig.axes] == [c // 9 for c in counts]  # one dot a cell


def test_matching_figure_counts_the_fates_of_match_anchors():
    config = RetinaConfig(anchor_sizes=(16, 32, 64, 128, 256))
    boxes = torch.tensor([[10.0, 20.0, 60.0, 50.0], [70.0, 70.0, 120.0, 126.0], [5.0, 90.0, 17.0, 101.0]])
    fig = figures.matching_figure(image(), boxes, config)
    anchors = generate_anchors(config, (128, 128))
    matched = match_anchors(anchors, boxes[None], torch.ones(1, 3, dtype=torch.bool))[0]
    fg, ignored, bg = (int(n) for n in re.findall(r"\d+", fig.axes[0].get_title()))
    assert (fg, ignored, bg) == (
        int((matched >= 0).sum()),
        int((matched == IGNORE).sum()),
        int((matched == BACKGROUND).sum()),
    )
    assert fg + ignored + bg == len(anchors) and fg > 0 and ignored > 0
    assert len(rectangles(fig.axes[0])) == fg + ignored + len(boxes)


def test_focal_loss_figure_starts_from_the_cross_entropy():
    fig = figures.focal_loss_figure(gammas=(0.0, 2.0))
    ce, fl = fig.axes[0].get_lines()
    p_t, loss = ce.get_data()
    np.testing.assert_allclose(loss, -np.log(p_t), rtol=1e-6)
    np.testing.assert_allclose(fl.get_data()[1], -((1 - p_t) ** 2) * np.log(p_t), rtol=1e-6, atol=1e-12)


def test_levels_figure_colours_each_box_by_its_main_level():
    config = RetinaConfig()
    counts = [6, 3, 2, 1, 1]
    matched = torch.tensor([0, 0, -1, 1, -1, -2, 1, 1, 0, -1, -1, -1, -1])  # box 0: P3 x2, P4 x1; box 1: P3 x1, P4 x2
    fig = figures.levels_figure(image(), torch.tensor([[0.0, 0, 20, 20], [30, 30, 60, 60]]), matched, counts, config)
    edges = [p.get_edgecolor() for p in fig.axes[0].patches if isinstance(p, patches.Rectangle) and not p.get_fill()]
    assert edges == [matplotlib.colors.to_rgba("tab:blue"), matplotlib.colors.to_rgba("tab:orange")]
    assert [t.get_text() for t in fig.axes[0].texts] == ["P3:2 P4:1", "P3:1 P4:2"]


def test_nms_figures_show_what_was_kept():
    boxes = torch.tensor([[0.0, 0, 40, 40], [2, 2, 42, 42], [60, 60, 100, 100], [1, 0, 41, 40]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    fig = figures.nms_figure(image(), boxes, scores, torch.tensor([0, 2]), names=["a", "b", "c", "d"])
    before, after = fig.axes
    assert before.get_title() == "before NMS: 4 boxes" and after.get_title() == "after NMS: 2 boxes"
    assert [t.get_text() for t in after.texts] == ["c 0.70", "a 0.90"]  # the best label drawn last, on top
    fig = figures.nms_figure(image(), boxes, scores, torch.tensor([0, 2]), gt_boxes=boxes[:1],
                             correct=torch.tensor([True, False]))  # fmt: skip
    after = fig.axes[1]
    assert after.get_title() == "after NMS: 2 boxes (1 right, 1 wrong; 1 objects)"
    kept = [p for p in after.patches if isinstance(p, patches.Rectangle) and not p.get_fill()]
    kept = [p for p in kept if p.get_linestyle() == "-"]  # the ground truth is dashed
    assert [matplotlib.colors.to_hex(r.get_edgecolor()) for r in kept] == ["#d62728", "#2ca02c"]  # c wrong, a right
    steps = [(0, [1, 3]), (2, [])]
    fig = figures.nms_steps_figure(image(), boxes, steps)
    assert [ax.get_title() for ax in fig.axes] == ["step 1: keep 1, suppress 2", "step 2: keep 1, suppress 0"]
    assert len(rectangles(fig.axes[0])) == 4 and len(rectangles(fig.axes[1])) == 1  # step 2: only box 2 is left


def test_feature_maps_figure_shows_each_level():
    features = [torch.rand(8, 32 // 2**k, 32 // 2**k) for k in range(5)]
    fig = figures.feature_maps_figure(image(256, 256), features)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["input", "P3: 32x32", "P4: 16x16", "P5: 8x8", "P6: 4x4", "P7: 2x2"]
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), features[0].norm(dim=0).numpy(), rtol=1e-6)


def test_box_formats_figure_writes_the_three_formats():
    box = torch.tensor([40.0, 20.0, 120.0, 80.0])
    title = figures.box_formats_figure(box).axes[0].get_title()
    for fmt in ("xyxy", "xywh", "cxcywh"):
        values = ", ".join(f"{v:g}" for v in box_convert(box, "xyxy", fmt).tolist())
        assert f"{fmt} ({values})" in title


def test_anchor_recall_figure_reports_the_recall():
    from retina.widgets import anchor_recall

    config = RetinaConfig(anchor_sizes=(16, 32, 64, 128, 256))
    boxes = torch.tensor([[10.0, 10.0, 26.0, 26.0], [50.0, 40.0, 120.0, 100.0]])
    result = anchor_recall([boxes], (128, 128), config)
    fig = figures.anchor_recall_figure(image(), boxes, result, result, config)
    left, right = fig.axes
    hits = int((result["best_iou"] >= 0.5).sum())
    assert left.get_title() == f"sample: {hits} of 2 boxes have an anchor at IoU >= 0.5"
    assert right.get_title() == f"2 boxes: anchor recall {result['recall']:.1%}"
    assert len(rectangles(left)) == 4  # the two boxes and their best anchors


@pytest.mark.parametrize("name", sorted(figures.EQUATIONS))
def test_every_equation_renders(name):
    svg = io.BytesIO()
    figures.equation_figure(figures.EQUATIONS[name]).savefig(svg, format="svg", bbox_inches="tight")
    assert b"<svg" in svg.getvalue() and len(svg.getvalue()) > 2000  # mathtext drew glyphs


def test_write_svgs_is_deterministic(tmp_path, capsys):
    from retina.figures.svgs import main  # what `python -m retina.figures svgs` (make svgs) runs

    first = figures.write_svgs(tmp_path / "a")
    assert main([str(tmp_path / "b")]) == 0
    second = sorted((tmp_path / "b").glob("*.svg"))
    assert capsys.readouterr().out.split() == [str(tmp_path / "b" / p.name) for p in first]  # each path written
    names = sorted(p.name for p in first)
    assert names == sorted(p.name for p in second)
    expected = {"anchors", "matching", "focal_loss", "fpn", "nms"} | {f"eq_{k}" for k in figures.EQUATIONS}
    assert names == sorted(f"{k}.svg" for k in expected)
    for a, b in zip(sorted(first), sorted(second), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"<dc:date>" not in first[0].read_bytes()
    # the committed svgs/ holds exactly these figures (`make svgs` regenerates them)
    assert sorted(p.name for p in SVGS.glob("*.svg")) == names


def test_iou_figure_shades_the_intersection_and_prints_the_iou():
    a, b = torch.tensor([20.0, 20.0, 100.0, 80.0]), torch.tensor([60.0, 40.0, 140.0, 120.0])
    fig = figures.iou_figure(a, b)
    ax = fig.axes[0]
    assert rectangles(ax) == [(20.0, 20.0, 100.0, 80.0), (60.0, 40.0, 140.0, 120.0)]
    filled = [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches if p.get_fill()]
    assert filled[-1] == (60.0, 40.0, 40.0, 40.0)  # the intersection, drawn last
    # 40 x 40 = 1600 shared; 80 x 60 + 80 x 80 - 1600 = 9600 covered
    assert ax.get_title().startswith("IoU = intersection / union = 1600 / 9600 = 0.167")
    assert ax.get_xlabel() == "x (px)" and ax.get_ylabel() == "y (px)"


def test_deltas_figure_writes_the_encoded_deltas():
    anchor, box = torch.tensor([40.0, 40.0, 104.0, 104.0]), torch.tensor([60.0, 50.0, 140.0, 100.0])
    ax = figures.deltas_figure(anchor, box).axes[0]
    text = "\n".join(t.get_text() for t in ax.texts)
    # centres (72, 72) and (100, 75), sizes 64 x 64 and 80 x 50
    assert f"tx = (100 - 72) / 64 = {28 / 64:.3f}" in text and f"ty = (75 - 72) / 64 = {3 / 64:.3f}" in text
    assert f"tw = log(80 / 64) = {math.log(80 / 64):.3f}" in text
    assert f"th = log(50 / 64) = {math.log(50 / 64):.3f}" in text
    assert rectangles(ax) == [(40.0, 40.0, 104.0, 104.0), (60.0, 50.0, 140.0, 100.0)]


def test_box_loss_curves_match_the_formulas():
    anchor, box = torch.tensor([40.0, 40.0, 104.0, 104.0]), torch.tensor([60.0, 50.0, 140.0, 100.0])
    offsets = torch.tensor([-1.0, -0.05, 0.0, 0.5])
    curves = figures.box_loss_curves(anchor, box, offsets, RetinaConfig(smooth_l1_beta=0.1))
    for coordinate in ("tx", "tw"):
        torch.testing.assert_close(curves[coordinate]["l1"], offsets.abs())
        torch.testing.assert_close(curves[coordinate]["nll"], 0.5 * offsets**2)  # the constant subtracted
        smooth = torch.where(offsets.abs() < 0.1, 0.5 * offsets**2 / 0.1, offsets.abs() - 0.05)
        torch.testing.assert_close(curves[coordinate]["smooth_l1"], smooth)
    # tx off by 0.5: the prediction is the 80 x 50 box moved right by 0.5 anchor widths = 32 px; 48 px overlap
    iou = 48 * 50 / (2 * 80 * 50 - 48 * 50)
    enclosing = 112 * 50
    giou = iou - (enclosing - (2 * 80 * 50 - 48 * 50)) / enclosing
    assert float(curves["tx"]["giou"][3]) == pytest.approx(1 - giou, abs=1e-5)
    assert float(curves["tx"]["giou"][2]) == 0.0
    fig = figures.box_losses_figure(anchor, box)
    assert [ax.get_xlabel() for ax in fig.axes] == [
        "error of the predicted tx (predicted - target)", "error of the predicted tw (predicted - target)"
    ]
    assert len(fig.axes[0].lines) == 4


def test_alpha_figure_shares_follow_alpha():
    logits = torch.tensor([[2.0, -4.0], [-4.0, -4.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    fig = figures.alpha_figure(logits, targets)
    curves, shares = fig.axes
    assert curves.get_xlabel() and curves.get_ylabel() and shares.get_xlabel() and shares.get_ylabel()
    assert shares.get_title() == "1 positive, 3 negative entries"
    ce = shares.lines[0].get_ydata()
    assert np.all(np.diff(ce) > 0)  # more weight on the positives: a larger share of the loss
    pos, neg = float(torch.nn.functional.softplus(torch.tensor(-2.0))), 3 * float(
        torch.nn.functional.softplus(torch.tensor(-4.0)))  # fmt: skip
    a = shares.lines[0].get_xdata()[0]
    assert ce[0] == pytest.approx(a * pos / (a * pos + (1 - a) * neg), rel=1e-5)


def test_focal_explorer_figure_labels_the_table():
    table = {(0.01, "focal"): 1.234, (0.01, "cross-entropy"): 26.0}
    table |= {(0.5, "focal"): 280.9, (0.5, "cross-entropy"): 1467.5}
    fig = figures.focal_explorer_figure(2.0, 0.25, 0.01, table, {"entries": 0.5, "focal": 0.002, "cross-entropy": 0.8})
    curves, bars = fig.axes
    assert [t.get_text() for t in bars.texts] == ["1.23", "26.00", "280.90", "1467.50"]
    assert bars.get_ylabel() == "classification loss at step 0" and curves.get_xlabel()
    assert "50.00% of the entries, carrying 0.2% of the focal loss and 80.0% of the cross-entropy" in (
        fig._suptitle.get_text()
    )


def test_fpn_diagram_draws_the_subnets_of_its_config():
    def texts(fig):
        return "\n".join(t.get_text() for t in fig.axes[0].texts)

    paper = texts(figures.fpn_diagram())
    assert "4 x (3x3 conv, ReLU)" in paper and "256 channels, A = 9" in paper
    small = RetinaConfig(backbone="resnet10", head_convs=1, head_norm="gn", fpn_channels=64, aspect_ratios=(1.0,))
    drawn = texts(figures.fpn_diagram(small))
    assert "1 x (3x3 conv, GroupNorm, ReLU)" in drawn and "64 channels, A = 3" in drawn and "resnet10" in drawn
    plt.close("all")
