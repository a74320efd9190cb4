"""The COCO loader on small trees in the real layout: label mapping, crowd, empty images, image modes, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from data_fixtures import coco_annotation, write_coco, write_image
from PIL import Image

from retina.data import CocoDetection, DatasetError, DatasetWarning, coco_dataset, load_image
from retina.evaluate import coco_evaluate

# Category ids deliberately unsorted and with gaps, as in real COCO.
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 1, "name": "bird"}]


def _images(n: int = 3) -> list[dict]:
    return [{"id": 10 + i, "file_name": f"{i:03d}.jpg", "width": 40, "height": 30} for i in range(n)]


@pytest.fixture
def coco_tree(tmp_path):
    annotations = [
        coco_annotation(1, 10, 7, [2.0, 3.0, 10.0, 5.0]),
        coco_annotation(2, 10, 1, [20.0, 10.0, 8.0, 12.0]),
        coco_annotation(3, 10, 3, [0.0, 0.0, 40.0, 30.0], iscrowd=1),
        coco_annotation(4, 11, 3, [5.0, 5.0, 4.0, 4.0], iscrowd=1),  # image 11: crowd only; image 12: nothing
    ]
    return write_coco(tmp_path, _images(), annotations, CATEGORIES)


def test_labels_boxes_crowd_and_contract(coco_tree):
    dataset = CocoDetection(*coco_tree)
    assert dataset.cat_ids == [1, 3, 7]
    assert dataset.classes == ["bird", "cat", "dog"]
    assert len(dataset) == 3

    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["image_id"] == 10
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["ignore"].dtype == torch.bool
    assert target["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0], [20.0, 10.0, 28.0, 22.0], [0.0, 0.0, 40.0, 30.0]]
    assert target["labels"].tolist() == [2, 0, 1]  # dog, bird, cat
    assert target["ignore"].tolist() == [False, False, True]

    empty = dataset[2][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["ignore"].shape == (0,)
    assert empty["boxes"].dtype == torch.float32 and empty["labels"].dtype == torch.int64


def test_keep_empty_false_drops_images_without_foreground(coco_tree):
    dataset = CocoDetection(*coco_tree, keep_empty=False)
    assert [t["image_id"] for t in dataset.targets()] == [10]


def test_targets_match_getitem_and_transforms_run_last(coco_tree):
    calls = []

    def transform(image, target):
        calls.append(target["image_id"])
        return image * 0, {**target, "labels": target["labels"] + 100}

    dataset = CocoDetection(*coco_tree, transforms=transform)
    image, target = dataset[0]
    assert calls == [10] and image.max() == 0
    assert target["labels"].tolist() == [102, 100, 101]
    assert dataset.targets()[0]["labels"].tolist() == [2, 0, 1]  # targets() is before transforms
    assert dataset.image_size(0) == (30, 40)


def test_coco_dataset_finds_both_layouts(tmp_path, coco_tree):
    assert len(coco_dataset(tmp_path, "train")) == 3  # images/train/
    real = tmp_path / "real"
    write_coco(real, _images(1), [], CATEGORIES, split="val2017")
    (real / "images" / "val2017").rename(real / "val2017")  # the COCO zips' layout
    assert len(coco_dataset(real, "val2017")) == 1
    with pytest.raises(DatasetError, match="instances_test.json does not exist"):
        coco_dataset(tmp_path, "test")


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("L", 51, 0.2), ("RGBA", 102, 0.4), ("I;16", 13107, 0.2), ("RGB", 255, 1.0)],
)
def test_image_modes_become_rgb_in_unit_range(tmp_path, mode, value, expected):
    path = write_image(tmp_path / f"image_{mode.replace(';', '')}.png", 8, 6, mode, value)
    image = load_image(path)
    assert image.shape == (3, 6, 8) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full_like(image, expected), atol=1e-4)


def test_palette_image_uses_the_palette(tmp_path):
    palette = [0] * 768
    palette[3 * 7 : 3 * 7 + 3] = [255, 51, 0]
    image = Image.new("P", (5, 4), 7)
    image.putpalette(palette)
    image.save(tmp_path / "palette.png")
    loaded = load_image(tmp_path / "palette.png")
    assert loaded.shape == (3, 4, 5)
    assert torch.allclose(loaded[:, 2, 3], torch.tensor([1.0, 0.2, 0.0]))


def test_sixteen_bit_uses_the_full_range(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(path)
    assert load_image(path)[0].tolist() == [[0.0, 1.0]]


def test_corrupt_and_truncated_images_name_the_file(tmp_path, coco_tree):
    image_dir, ann_file = coco_tree
    (image_dir / "000.jpg").write_bytes(b"this is not an image")
    good = image_dir / "001.jpg"
    good.write_bytes(good.read_bytes()[:200])  # cut in the middle of the data
    dataset = CocoDetection(image_dir, ann_file)
    with pytest.raises(DatasetError, match="cannot read image .*000.jpg"):
        dataset[0]
    with pytest.raises(DatasetError, match="cannot read image .*001.jpg"):
        dataset[1]


def test_missing_image_names_image_and_annotation(tmp_path):
    images = _images(1)
    images[0]["write"] = False
    image_dir, ann_file = write_coco(tmp_path, images, [], CATEGORIES)
    dataset = CocoDetection(image_dir, ann_file)
    with pytest.raises(DatasetError, match=r"000.jpg \(referenced by .*instances_train.json \(image id 10\)\)"):
        dataset[0]


def test_image_size_mismatch_is_an_error(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, _images(1), [], CATEGORIES)
    write_image(image_dir / "000.jpg", 30, 40)  # transposed
    with pytest.raises(DatasetError, match="000.jpg is 30x40 .* says 40x30"):
        CocoDetection(image_dir, ann_file)[0]


def test_truncated_json_names_file_and_position(coco_tree):
    image_dir, ann_file = coco_tree
    ann_file.write_text(ann_file.read_text()[:-40])
    with pytest.raises(DatasetError, match=r"instances_train.json: not valid JSON \(.* at line 1, column \d+\)"):
        CocoDetection(image_dir, ann_file)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "no 'images' list"),
        ({"images": [], "annotations": []}, "no 'categories' list"),
        ({"images": [{"file_name": "a.jpg"}], "annotations": [], "categories": []}, "lacks the field 'id'"),
        (
            {"images": _images(1), "annotations": [coco_annotation(1, 10, 5, [1, 1, 2, 2])], "categories": CATEGORIES},
            "annotation 1 has category_id 5",
        ),
        (
            {"images": _images(1), "annotations": [coco_annotation(1, 99, 1, [1, 1, 2, 2])], "categories": CATEGORIES},
            r"image id\(s\) \[99\] missing",
        ),
        (
            {"images": _images(1), "annotations": [coco_annotation(1, 10, 1, [1, 2, 3])], "categories": CATEGORIES},
            "malformed 'bbox'",
        ),
        (
            {"images": [{"id": 10, "file_name": "000.jpg"}], "annotations": [], "categories": CATEGORIES},
            "lacks a valid 'file_name', 'width' or 'height'",
        ),
    ],
)
def test_malformed_coco_json(tmp_path, data, message):
    ann_file = tmp_path / "broken.json"
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=f"broken.json.*{message}"):
        CocoDetection(tmp_path, ann_file)


def test_bad_boxes_are_clipped_or_dropped_with_one_warning(tmp_path):
    annotations = [
        coco_annotation(1, 10, 1, [5.0, 5.0, 10.0, 10.0]),  # fine
        coco_annotation(2, 10, 3, [float("nan"), 5.0, 10.0, 10.0]),  # NaN: dropped
        coco_annotation(3, 10, 7, [5.0, 5.0, 0.0, 10.0]),  # zero width: dropped
        coco_annotation(4, 10, 7, [5.0, 5.0, -4.0, 10.0]),  # negative width: dropped
        coco_annotation(5, 10, 3, [50.0, 5.0, 10.0, 10.0]),  # wholly right of the 40 px image: dropped
        coco_annotation(6, 11, 7, [30.0, -5.0, 20.0, 20.0]),  # partly outside: clipped to [30, 0, 40, 15]
    ]
    image_dir, ann_file = write_coco(tmp_path, _images(2), annotations, CATEGORIES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetection(image_dir, ann_file)
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(messages) == 1
    assert "dropped 4 box(es) (1 with NaN/inf coordinates, 2 smaller than 1 px" in messages[0]
    assert "1 outside the image" in messages[0] and "clipped 1 box(es)" in messages[0]
    first, second = dataset.targets()
    assert first["boxes"].tolist() == [[5.0, 5.0, 15.0, 15.0]] and first["labels"].tolist() == [0]
    assert second["boxes"].tolist() == [[30.0, 0.0, 40.0, 15.0]] and second["labels"].tolist() == [2]


def test_clean_data_warns_nothing(coco_tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CocoDetection(*coco_tree)


def test_missing_paths_are_clear_errors(tmp_path, coco_tree):
    image_dir, ann_file = coco_tree
    with pytest.raises(DatasetError, match="COCO annotation file .*nope.json does not exist"):
        CocoDetection(image_dir, tmp_path / "nope.json")
    with pytest.raises(DatasetError, match="COCO image directory .*nowhere does not exist"):
        CocoDetection(tmp_path / "nowhere", ann_file)
    with pytest.raises(DatasetError, match="COCO dataset directory .*nowhere does not exist"):
        coco_dataset(tmp_path / "nowhere", "train")


def test_annotations_key_missing_or_misspelt(tmp_path):
    # Loaded as a set of 0 boxes, it would train on background only and evaluate to AP -1, without a word.
    data = {"images": _images(1), "annotation": [coco_annotation(1, 10, 1, [1, 1, 5, 5])], "categories": CATEGORIES}
    ann_file = tmp_path / "misspelt.json"
    ann_file.write_text(json.dumps(data))
    with pytest.raises(
        DatasetError, match=r"misspelt.json: no 'annotations' list .*\['annotation', 'categories', 'images'\]"
    ):
        CocoDetection(tmp_path, ann_file)


def test_an_empty_annotations_list_is_a_set_of_background_images(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, _images(2), [], CATEGORIES)
    assert [len(t["boxes"]) for t in CocoDetection(image_dir, ann_file).targets()] == [0, 0]


def test_duplicate_image_ids(tmp_path):
    # Two files under one id: pycocotools would keep the second image and give it both images' boxes.
    images = _images(2)
    images[1]["id"] = 10
    annotations = [coco_annotation(1, 10, 1, [1, 1, 5, 5]), coco_annotation(2, 10, 3, [9, 9, 5, 5])]
    image_dir, ann_file = write_coco(tmp_path, images, annotations, CATEGORIES)
    with pytest.raises(DatasetError, match=r"instances_train.json: id\(s\) \[10\] appear more than once in 'images'"):
        CocoDetection(image_dir, ann_file)


def test_duplicate_category_ids(tmp_path):
    categories = [*CATEGORIES, {"id": 3, "name": "lynx"}]  # "cat" and "lynx" would become one class
    image_dir, ann_file = write_coco(tmp_path, _images(1), [], categories)
    with pytest.raises(DatasetError, match=r"id\(s\) \[3\] appear more than once in 'categories'"):
        CocoDetection(image_dir, ann_file)


def test_one_category_name_for_two_ids(tmp_path):
    categories = [*CATEGORIES, {"id": 9, "name": "dog"}]
    image_dir, ann_file = write_coco(tmp_path, _images(1), [], categories)
    with pytest.raises(DatasetError, match=r"category name\(s\) \['dog'\] belong to more than one category id"):
        CocoDetection(image_dir, ann_file)


def test_image_ids_that_are_not_integers(tmp_path):
    images = _images(2)
    images[0]["id"] = "cat_001"
    image_dir, ann_file = write_coco(tmp_path, images, [], CATEGORIES)
    with pytest.raises(DatasetError, match=r"the ids in 'images' must be integers, got \['cat_001'\]"):
        CocoDetection(image_dir, ann_file)


@pytest.mark.parametrize("ann_ids", [[0, 1], [4, 4]], ids=["numbered-from-0", "repeated"])
def test_annotation_ids_numbered_from_0_or_repeated_are_renumbered(tmp_path, ann_ids):
    # COCOeval takes id 0 for "unmatched" and reads a repeated id's box twice: a perfect detector scored AP 0.25.
    boxes = [[2.0, 3.0, 10.0, 5.0], [20.0, 10.0, 8.0, 12.0]]
    annotations = [coco_annotation(ann_id, 10, 1, box) for ann_id, box in zip(ann_ids, boxes, strict=True)]
    image_dir, ann_file = write_coco(tmp_path, _images(1), annotations, CATEGORIES)
    with pytest.warns(DatasetWarning, match=r"instances_train.json: renumbered the annotation ids 1..2") as caught:
        dataset = CocoDetection(image_dir, ann_file)
    assert len(caught) == 1
    assert sorted(dataset.coco.anns) == [1, 2]
    assert dataset.targets()[0]["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0], [20.0, 10.0, 28.0, 22.0]]

    target = dataset.targets()[0]
    perfect = {"boxes": target["boxes"], "scores": torch.tensor([0.9, 0.8]), "labels": target["labels"]}
    metrics = coco_evaluate(dataset.coco, [10], [perfect], dataset.cat_ids, dataset.classes)[0]
    assert metrics["AP"] == pytest.approx(1.0)
