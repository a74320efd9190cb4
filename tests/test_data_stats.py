"""Dataset statistics on hand-made targets and on a COCO tree whose images are never decoded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from data_fixtures import coco_annotation, write_coco
from torch.utils.data import Subset

from retina.__main__ import main as retina_main
from retina.data import CocoDetection, box_stats, class_summary, objects_per_image, summarize
from retina.data.cli import main
from retina.data.stats import collect_targets, format_summary


def _target(boxes, labels, ignore=None, image_id=0) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "ignore": torch.tensor(ignore if ignore is not None else [False] * len(labels), dtype=torch.bool),
        "image_id": image_id,
    }


TARGETS = [
    _target([[0, 0, 10, 40], [5, 5, 25, 10]], [0, 1]),  # 10x40 and 20x5
    _target([], []),
    _target([[0, 0, 30, 30], [0, 0, 100, 100], [1, 1, 5, 5]], [1, 0, 1], ignore=[False, True, False]),
]


def test_box_stats_values():
    stats = box_stats(TARGETS)
    assert stats["width"].tolist() == [10.0, 20.0, 30.0, 4.0]
    assert stats["height"].tolist() == [40.0, 5.0, 30.0, 4.0]
    assert stats["size"].tolist() == [20.0, 10.0, 30.0, 4.0]
    assert stats["aspect"].tolist() == [4.0, 0.25, 1.0, 1.0]
    assert stats["label"].tolist() == [0, 1, 1, 1]
    assert stats["image"].tolist() == [0, 0, 2, 2]

    with_ignored = box_stats(TARGETS, include_ignored=True)
    assert with_ignored["size"].tolist() == [20.0, 10.0, 30.0, 100.0, 4.0]


def test_objects_per_image_counts_empty_images():
    assert objects_per_image(TARGETS).tolist() == [2, 0, 2]
    assert objects_per_image(TARGETS, include_ignored=True).tolist() == [2, 0, 3]


def test_class_summary():
    summary = class_summary(box_stats(TARGETS), ["a", "b", "c"])
    assert summary["a"] == {
        "boxes": 1,
        "images": 1,
        "size_min": 20.0,
        "size_median": 20.0,
        "size_max": 20.0,
        "aspect_median": 4.0,
    }
    assert summary["b"]["boxes"] == 3 and summary["b"]["images"] == 2
    assert (summary["b"]["size_min"], summary["b"]["size_median"], summary["b"]["size_max"]) == (4.0, 10.0, 30.0)
    assert summary["b"]["aspect_median"] == 1.0
    assert summary["c"]["boxes"] == 0 and math.isnan(summary["c"]["size_median"])


def test_summarize_and_format():
    summary = summarize(TARGETS, classes=["a", "b", "c"])
    assert (summary["images"], summary["boxes"], summary["empty_images"]) == (3, 4, 1)
    assert summary["objects_per_image_mean"] == pytest.approx(4 / 3) and summary["objects_per_image_max"] == 2
    assert summary["size_p50"] == pytest.approx(float(np.median([20.0, 10.0, 30.0, 4.0])))
    text = format_summary(summary)
    assert "3 images, 4 boxes, 1 images without boxes" in text
    assert text.splitlines()[-3].split() == ["a", "1", "1", "20.0", "20.0", "20.0", "4.00"]


@pytest.fixture
def coco_without_images(tmp_path):
    """A COCO tree whose image files do not exist: statistics must come from the annotations alone."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 80, "write": False} for i in (1, 2)]
    annotations = [coco_annotation(1, 1, 5, [0, 0, 10, 20]), coco_annotation(2, 2, 9, [10, 10, 30, 30], iscrowd=1)]
    return CocoDetection(*write_coco(tmp_path, images, annotations, [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]))


def test_datasets_are_read_without_decoding_images(coco_without_images):
    stats = box_stats(coco_without_images)
    assert stats["width"].tolist() == [10.0] and stats["height"].tolist() == [20.0]
    summary = summarize(coco_without_images)
    assert list(summary["classes"]) == ["a", "b"] and summary["empty_images"] == 1
    subset = collect_targets(Subset(coco_without_images, [1]))
    assert [t["image_id"] for t in subset] == [2]


def test_generic_datasets_are_iterated():
    class Tiny(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return torch.zeros(3, 4, 4), _target([[0, 0, 2, 3]], [0])

    assert box_stats(Tiny())["size"].tolist() == [pytest.approx(math.sqrt(6))]


def test_cli_stats_on_shapes(tmp_path, capsys):
    assert main(["shapes", "--out", str(tmp_path / "s"), "--train", "3", "--val", "0", "--size", "64"]) == 0
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "s")]) == 0
    coco_out = capsys.readouterr().out
    assert coco_out.startswith("3 images,") and "crescent" in coco_out
    assert main(["stats", str(tmp_path / "s"), "--format", "voc"]) == 0
    assert capsys.readouterr().out == coco_out  # the VOC copy has the same boxes
    assert retina_main(["data", "stats", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
