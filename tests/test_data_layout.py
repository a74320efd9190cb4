"""One dataset opener for training, evaluation and `python -m retina data stats`: which layout a directory holds."""

from __future__ import annotations

import pytest
from data_fixtures import coco_annotation, write_coco, write_voc

from retina.__main__ import main as retina_main
from retina.data import (
    SHAPES_CLASSES,
    VOC_CLASSES,
    CocoDetection,
    DatasetError,
    VOCDetection,
    generate_shapes,
    open_dataset,
)


def test_coco_directory_opens_as_coco(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}]
    write_coco(tmp_path, images, [coco_annotation(1, 1, 5, [2, 3, 10, 5])], [{"id": 5, "name": "cat"}], "val2017")
    dataset = open_dataset(tmp_path, "val2017")
    assert isinstance(dataset, CocoDetection) and dataset.classes == ["cat"] and len(dataset) == 1


def test_voc_directory_opens_as_voc_with_the_20_voc_classes(tmp_path):
    voc = write_voc(tmp_path / "VOC2007", {"000001": (40, 30, [("dog", 1, 1, 10, 20)])}, {"test": ["000001"]})
    dataset = open_dataset(voc, "test")
    assert isinstance(dataset, VOCDetection) and dataset.classes == VOC_CLASSES and len(dataset) == 1


def test_shapes_directory_opens_as_coco_and_its_voc_copy_with_the_shapes_classes(tmp_path):
    shapes = generate_shapes(tmp_path / "shapes", num_train=2, num_val=1, image_size=64, workers=1)
    as_coco, as_voc = open_dataset(shapes, "train"), open_dataset(shapes, "train", "voc")
    assert isinstance(as_coco, CocoDetection) and isinstance(as_voc, VOCDetection)
    assert as_coco.classes == as_voc.classes == SHAPES_CLASSES
    assert [t["boxes"].tolist() for t in as_coco.targets()] == [t["boxes"].tolist() for t in as_voc.targets()]


def test_directory_of_no_known_layout_names_the_directory(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match=f"{tmp_path / 'photos'} holds no dataset layout retina knows"):
        open_dataset(tmp_path / "photos", "train")


def test_missing_directory_and_unknown_format_name_what_is_wrong(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset directory {tmp_path / 'nowhere'} does not exist"):
        open_dataset(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="unknown dataset format 'yolo'"):
        open_dataset(tmp_path, "train", "yolo")


def test_data_stats_on_a_directory_of_no_known_layout_says_so(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert retina_main(["data", "stats", str(tmp_path / "photos")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'photos'} holds no dataset layout") and err.count("\n") == 1
