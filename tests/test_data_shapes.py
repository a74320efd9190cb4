"""The synthetic shapes set: layouts, COCO == VOC, determinism, the statistics it promises, tight boxes."""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch

from retina.data import SHAPES_CLASSES, DatasetError, VOCDetection, box_stats, generate_shapes, shapes_dataset
from retina.data import shapes as shapes_module
from retina.data.cli import main
from retina.data.shapes_render import rasterize, shape_outline


def _hashes(root) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("small") / "shapes", 12, 4, image_size=128, seed=3, workers=1)


@pytest.fixture(scope="module")
def moderate(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("moderate"), 200, 0, image_size=256, seed=0, workers=2)


def test_real_coco_and_voc_layouts(small):
    coco = json.loads((small / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(SHAPES_CLASSES) + 1))
    assert [c["name"] for c in coco["categories"]] == SHAPES_CLASSES
    assert len(coco["images"]) == 12 and coco["images"][0] == {
        "id": 1,
        "file_name": "train_000001.jpg",
        "width": 128,
        "height": 128,
    }
    assert {a["iscrowd"] for a in coco["annotations"]} == {0}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w >= 2 and h >= 2 and x + w <= 128 and y + h <= 128 and x >= 0 and y >= 0
        assert 0 < ann["area"] <= w * h  # visible pixels of the shape, inside its box

    assert (small / "ImageSets" / "Main" / "val.txt").read_text().split() == [f"val_{i:06d}" for i in range(1, 5)]
    assert len(list((small / "JPEGImages").glob("*.jpg"))) == 16
    xml = (small / "Annotations" / "train_000001.xml").read_text()
    assert "<difficult>0</difficult>" in xml and "<width>128</width>" in xml and "<xmin>" in xml


def test_images_are_written_once_and_linked(small):
    coco_image, voc_image = small / "images" / "val" / "val_000002.jpg", small / "JPEGImages" / "val_000002.jpg"
    assert os.path.samefile(coco_image, voc_image)


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_and_voc_loaders_read_identical_targets(small, split):
    coco = shapes_dataset(small, split)
    voc = VOCDetection(small, split, classes=SHAPES_CLASSES)
    assert coco.classes == voc.classes == SHAPES_CLASSES and len(coco) == len(voc) == {"train": 12, "val": 4}[split]
    total = 0
    for a, b in zip(coco.targets(), voc.targets(), strict=True):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["ignore"], b["ignore"]) and a["image_id"] == b["image_id"]
        total += len(a["boxes"])
    assert total > len(coco)  # not vacuous
    image, _ = coco[0]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32 and 0 <= image.min() < image.max() <= 1


def test_same_seed_same_bytes_whatever_the_workers(small, tmp_path):
    again = generate_shapes(tmp_path / "again", 12, 4, image_size=128, seed=3, workers=2)
    assert _hashes(again) == _hashes(small)
    other = generate_shapes(tmp_path / "other", 12, 4, image_size=128, seed=4, workers=1)
    assert _hashes(other)["images/train/train_000001.jpg"] != _hashes(small)["images/train/train_000001.jpg"]


def test_complete_dataset_is_not_regenerated(tmp_path, monkeypatch):
    out = generate_shapes(tmp_path / "s", 6, 2, image_size=64, workers=1)
    assert json.loads((out / "meta.json").read_text())["complete"] is True

    def fail(task):
        raise AssertionError("regenerated")

    monkeypatch.setattr(shapes_module, "_write_image", fail)
    generate_shapes(out, 6, 2, image_size=64, workers=1)  # same parameters: nothing to do
    monkeypatch.undo()

    generate_shapes(out, 3, 1, image_size=64, workers=1)  # new parameters: replaced, old files gone
    assert len(list((out / "JPEGImages").iterdir())) == 4
    assert len(shapes_dataset(out, "train")) == 3


def test_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="did not write"):
        generate_shapes(tmp_path, 2, 1, image_size=64, workers=1)


def test_cli_generates_then_skips(tmp_path, capsys):
    args = ["shapes", "--out", str(tmp_path / "c"), "--train", "2", "--val", "1", "--size", "64", "--workers", "1"]
    assert main(args) == 0
    assert "wrote 2 train + 1 val images" in capsys.readouterr().out
    assert main(args) == 0
    assert "already holds this shapes dataset" in capsys.readouterr().out


def test_a_real_detection_problem(moderate):
    dataset = shapes_dataset(moderate, "train")
    targets = dataset.targets()
    stats = box_stats(targets)
    counts = np.array([len(t["boxes"]) for t in targets])

    assert len(SHAPES_CLASSES) >= 6 and set(stats["label"].tolist()) == set(range(len(SHAPES_CLASSES)))
    assert stats["size"].min() < 20 and stats["size"].max() > 100  # from P3-sized to P6/P7-sized objects
    assert 2 <= (counts == 0).sum() <= 30  # about 5 % empty
    assert counts.max() <= 10 and counts.mean() > 3
    assert (stats["aspect"] > 1.5).any() and (stats["aspect"] < 1 / 1.5).any()
    boxes = torch.cat([t["boxes"] for t in targets])
    assert torch.equal(boxes, boxes.round()) and boxes.min() >= 0 and boxes.max() <= 256
    # Objects overlap: some pair of boxes in one image intersects.
    assert any(_overlaps(t["boxes"]) for t in targets)


def _overlaps(boxes: torch.Tensor) -> bool:
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]):
                return True
    return False


@pytest.mark.parametrize("label", range(len(SHAPES_CLASSES)))
def test_boxes_are_tight_around_the_drawn_shape(label):
    rng = np.random.default_rng(label)
    for _ in range(20):
        width, height = rng.uniform(12, 80, 2)
        polygons = shape_outline(label, *rng.uniform(30, 98, 2), width, height, rng.uniform(0, 2 * math.pi))
        outer = polygons[0][0]
        box = np.clip(np.concatenate([outer.min(0), outer.max(0)]), 0, 128)
        coverage, (x0, y0) = rasterize(polygons, 128)
        ys, xs = np.nonzero(coverage > 0)
        drawn = np.array([xs.min() + x0, ys.min() + y0, xs.max() + x0 + 1, ys.max() + y0 + 1])
        # Whole pixels touched by the shape vs its exact box: at most one pixel of rounding outwards, and a
        # quarter pixel (one supersample) inwards, plus a little for needle-sharp tips that miss every sample.
        outward, inward = (box - drawn) * [1, 1, -1, -1], (drawn - box) * [1, 1, -1, -1]
        assert outward.max() <= 1.0 and inward.max() <= 1.25, (SHAPES_CLASSES[label], drawn, box)
