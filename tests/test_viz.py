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
from retina.viz import draw_boxes, main, plot_loss_curve, plot_pr_curves


def test_draw_boxes_colours_the_box_outline_and_enlarges():
    image = torch.zeros(3, 40, 60)
    drawn = draw_boxes(
        image, torch.tensor([[5.0, 5.0, 30.0, 30.0]]), torch.tensor([1]), torch.tensor([0.9]), ["a", "b"], 2
    )
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 80, 120)
    assert drawn[:, 40, 10].sum() > 0  # the left edge of the box, at twice the scale
    assert drawn[:, 75, 115].sum() == 0  # far from the box: untouched
    assert draw_boxes(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)).shape == (3, 40, 60)


def test_plots(tmp_path, make_boxes):
    records = [
        {"step": s, "epoch": 0, "lr": 0.01, "loss": 2 / s, "classification": 1 / s, "bbox_regression": 1 / s}
        for s in range(1, 21)
    ]
    records.append({"step": 20, "epoch": 1, "eval": {"AP": 0.3, "AP50": 0.6}})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_loss_curve(tmp_path / "metrics.jsonl", tmp_path / "loss.png")
    assert Image.open(tmp_path / "loss.png").size[0] > 500

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
