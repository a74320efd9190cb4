"""Pictures: boxes drawn with their labels, loss and precision-recall plots, and the `detect` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from retina.checkpoint import CheckpointError, save_checkpoint
from retina.config import RetinaConfig
from retina.evaluate import coco_evaluate, coco_from_targets
from retina.model import RetinaNet
from retina.viz import PALETTE, draw_boxes, main, place_tags, plot_loss_curve, plot_pr_curves


def test_draw_boxes_colours_the_box_outline_and_enlarges():
    image = torch.zeros(3, 40, 60)
    drawn = draw_boxes(
        image, torch.tensor([[5.0, 5.0, 30.0, 30.0]]), torch.tensor([1]), torch.tensor([0.9]), ["a", "b"], 2
    )
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 80, 120)
    assert drawn[:, 40, 10].sum() > 0  # the left edge of the box, at twice the scale
    assert drawn[:, 75, 115].sum() == 0  # far from the box: untouched
    assert draw_boxes(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)).shape == (3, 40, 60)


def test_name_tags_of_overlapping_boxes_take_free_places_inside_the_image():
    boxes = torch.tensor([[10.0, 10, 60, 60], [12, 12, 58, 62], [100, 40, 127, 80], [0, 0, 128, 128]])
    corners = place_tags(boxes, [(40, 12)] * 4, (128, 128))
    # inside the top of its box; the top taken, above it would overlap too, so inside its bottom; moved left into
    # the image; the whole image's box: its top and bottom edges are taken or outside, so inside its bottom
    assert corners == [(10, 10), (12, 50), (88, 40), (0, 116)]
    tags = [(x, y, x + 40, y + 12) for x, y in corners]
    for i, (x0, y0, x1, y1) in enumerate(tags):
        assert 0 <= x0 and x1 <= 128 and 0 <= y0 and y1 <= 128
        assert all(x1 <= a or c <= x0 or y1 <= b or d <= y0 for a, b, c, d in tags[i + 1 :])
    # no free place left: the first place, inside the box's top
    assert place_tags(torch.tensor([[0.0, 0, 20, 20]] * 5), [(20, 10)] * 5, (30, 30))[3:] == [(0, 0), (0, 0)]
    assert place_tags(torch.tensor([[5.0, 5, 20, 20]]), [(40, 10)], (30, 30)) == [(0, 5)]  # wider than the image


def test_draw_boxes_gives_the_highest_score_the_first_place_for_its_tag():
    image = torch.full((3, 60, 60), 0.5)
    boxes = torch.tensor([[10.0, 10, 50, 50], [11, 11, 50, 50]])
    for scores, winner in ((torch.tensor([0.9, 0.3]), 0), (torch.tensor([0.3, 0.9]), 1)):
        drawn = draw_boxes(image, boxes, torch.tensor([0, 1]), scores, ["a", "b"])
        colour = tuple(int(PALETTE[winner][i : i + 2], 16) for i in (1, 3, 5))
        x0, y0 = int(boxes[winner, 0]), int(boxes[winner, 1])
        assert tuple(drawn[:, y0 + 1, x0 + 1].tolist()) == colour  # the tag's fill, at the box's top left


def test_plots(tmp_path, make_boxes):
    records = [
        {"step": s, "epoch": 0, "lr": 0.01, "loss": 2 / s, "classification": 1 / s, "bbox_regression": 1 / s}
        for s in range(1, 21)
    ]
    records.append({"step": 20, "epoch": 1, "eval": {"AP": 0.3, "AP50": 0.6}})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    fig = plot_loss_curve(tmp_path / "metrics.jsonl", tmp_path / "loss.png")
    assert Image.open(tmp_path / "loss.png").size[0] > 500
    loss_ax, lr_ax, ap_ax = fig.axes
    fig.canvas.draw()
    ticks = [t.get_text() for t in loss_ax.get_yticklabels() if t.get_text()]
    assert {"0.1", "0.2", "0.5", "1"} <= set(ticks), ticks  # plain numbers, at 1, 2 and 5 of each decade
    assert [t.get_text() for t in ap_ax.get_legend().get_texts()] == ["learning rate", "AP50", "AP"]
    legend = ap_ax.get_legend().get_window_extent()
    for line in lr_ax.get_lines() + ap_ax.get_lines():  # the legend covers no point of a curve
        points = line.get_transform().transform(line.get_xydata())
        assert not any(legend.contains(x, y) for x, y in points), line.get_label()
    records.pop()  # no evaluation: the panel is the schedule alone
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [ax.get_title() for ax in plot_loss_curve(tmp_path / "metrics.jsonl").axes] == [
        "training loss",
        "learning rate",
    ]

    boxes = make_boxes(6)
    target = {"boxes": boxes, "labels": torch.tensor([0, 1, 0, 1, 0, 1]), "image_id": 1}
    detections = {"boxes": boxes + 3, "scores": torch.linspace(1, 0.1, 6), "labels": target["labels"]}
    _, evaluator = coco_evaluate(
        coco_from_targets([target], [(256, 256)], ["a", "b"]), [1], [detections], [1, 2], ["a", "b"]
    )
    plot_pr_curves(evaluator, ["a", "b"], tmp_path / "pr.png")
    assert Image.open(tmp_path / "pr.png").size[0] > 500


def test_detect_command_writes_pngs_and_json(tmp_path):
    torch.manual_seed(0)
    # Untrained, every score sits near the prior 0.01, far below the detector's own threshold of 0.5:
    # --score-thresh 0 replaces that threshold and keeps detections to draw.
    config = RetinaConfig(backbone="resnet18", fpn_channels=16, head_convs=1, min_size=64, max_size=64)
    config = config.replace(score_thresh=0.5, detections_per_img=5)
    model = RetinaNet(num_classes=2, config=config)
    classes = ["disc", "block"]
    state = {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": classes}
    save_checkpoint(tmp_path / "model.pt", state)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("one.png", (64, 80)), ("two.jpg", (48, 48))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)

    out = tmp_path / "out"
    argv = ["--checkpoint", str(tmp_path / "model.pt"), str(folder), "--out", str(out), "--score-thresh", "0"]
    assert main(argv) == 0
    assert Image.open(out / "one.png").size == (80 * 7, 64 * 7)  # enlarged so the labels are legible
    results = json.loads((out / "detections.json").read_text())
    assert [r["image"].rsplit("/", 1)[-1] for r in results] == ["one.png", "two.jpg"]
    detection = results[0]["detections"][0]
    assert set(detection) == {"box", "score", "label", "class"} and detection["class"] in classes
    assert [len(r["detections"]) for r in results] == [5, 5]
    assert all(0 < d["score"] < 0.5 for r in results for d in r["detections"])

    with pytest.raises(CheckpointError, match="missing.pt does not exist"):  # `python -m retina` prints it
        main(["--checkpoint", str(tmp_path / "missing.pt"), str(folder), "--out", str(out)])
