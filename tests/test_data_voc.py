"""The VOC loader on small trees in the real layout: coordinates, difficult, root forms, image ids, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from data_fixtures import voc_xml, write_voc

from retina.data import VOC_CLASSES, DatasetError, DatasetWarning, VOCDetection


@pytest.fixture
def devkit(tmp_path):
    annotations = {
        "000005": (40, 30, [("dog", 1, 1, 10, 20), ("person", 21, 5, 40, 30, True)]),
        "000007": (40, 30, [("car", 5, 6, 7, 8)]),
    }
    write_voc(tmp_path / "VOCdevkit" / "VOC2007", annotations, {"trainval": ["000005", "000007"], "test": ["000007"]})
    return tmp_path / "VOCdevkit"


def test_one_based_inclusive_coordinates_become_zero_based_xyxy(devkit):
    dataset = VOCDetection(devkit / "VOC2007", "trainval")
    assert len(VOC_CLASSES) == 20 and dataset.classes == VOC_CLASSES
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    # xmin=1..xmax=10 covers the first ten pixels: [0, 10) in the contract's coordinates.
    assert target["boxes"].tolist() == [[0.0, 0.0, 10.0, 20.0], [20.0, 4.0, 40.0, 30.0]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert target["ignore"].tolist() == [False, True]  # difficult
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["image_id"] == 5
    assert dataset.targets()[1]["boxes"].tolist() == [[4.0, 5.0, 7.0, 8.0]]


def test_devkit_root_with_year_equals_voc_dir(devkit):
    a = VOCDetection(devkit, "trainval", year="2007").targets()
    b = VOCDetection(devkit / "VOC2007", "trainval").targets()
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b, strict=True))
    assert len(VOCDetection(devkit, "test", year="2007")) == 1


def test_image_ids_fall_back_to_positions(tmp_path):
    annotations = {stem: (20, 20, [("cat", 2, 2, 9, 9)]) for stem in ("2008_000008", "2008_000123", "abc")}
    voc = write_voc(
        tmp_path / "VOC", annotations, {"digits": ["2008_000008", "2008_000123"], "mixed": ["abc", "2008_000008"]}
    )
    assert [t["image_id"] for t in VOCDetection(voc, "digits").targets()] == [2008000008, 2008000123]
    assert [t["image_id"] for t in VOCDetection(voc, "mixed").targets()] == [0, 1]


def test_custom_classes(tmp_path):
    voc = write_voc(tmp_path / "VOC", {"a": (20, 20, [("ring", 2, 2, 9, 9), ("star", 1, 1, 4, 4)])}, {"train": ["a"]})
    dataset = VOCDetection(voc, "train", classes=["star", "ring"])
    assert dataset.classes == ["star", "ring"]
    assert dataset.targets()[0]["labels"].tolist() == [1, 0]


def test_unknown_class_is_an_error_or_skipped_with_one_warning(tmp_path):
    objects = [("dog", 1, 1, 5, 5), ("unicorn", 2, 2, 6, 6), ("unicorn", 3, 3, 8, 8), ("gryphon", 1, 1, 9, 9)]
    voc = write_voc(tmp_path / "VOC", {"a": (20, 20, objects)}, {"train": ["a"]})
    with pytest.raises(DatasetError, match=r"a.xml: class 'unicorn' is not in the class list"):
        VOCDetection(voc, "train")
    with pytest.warns(DatasetWarning, match=r"skipped objects .*\(gryphon: 1, unicorn: 2\)") as caught:
        dataset = VOCDetection(voc, "train", unknown_classes="skip")
    assert len(caught) == 1
    assert dataset.targets()[0]["labels"].tolist() == [VOC_CLASSES.index("dog")]


def test_bad_boxes_are_clipped_or_dropped_with_one_warning(tmp_path):
    objects = [("dog", 5, 5, 5, 9), ("cat", 8, 8, 3, 12), ("car", 30, 2, 40, 9), ("bus", 15, 15, 30, 25)]
    voc = write_voc(tmp_path / "VOC", {"a": (20, 20, objects)}, {"train": ["a"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target = VOCDetection(voc, "train").targets()[0]
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(messages) == 1 and "dropped 2 box(es)" in messages[0] and "1 outside the image" in messages[0]
    # xmin=5..xmax=5 is one pixel wide, so it is kept: [4, 4, 5, 9].
    assert target["boxes"].tolist() == [[4.0, 4.0, 5.0, 9.0], [14.0, 14.0, 20.0, 20.0]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("bus")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><size><width>20</width>", r"a.xml: malformed XML \(no element found"),
        ("<annotation><object><name>dog</name></annotation>", r"a.xml: malformed XML \(mismatched tag"),
        (voc_xml(20, 20, [("dog", "one", 1, 5, 5)]), r"a.xml: object 'dog' has no numeric <bndbox><xmin>"),
    ],
)
def test_malformed_xml_names_file_and_problem(tmp_path, text, message):
    voc = write_voc(tmp_path / "VOC", {"a": (20, 20, [])}, {"train": ["a"]})
    (voc / "Annotations" / "a.xml").write_text(text)
    with pytest.raises(DatasetError, match=message):
        VOCDetection(voc, "train")


def test_missing_size_is_read_from_the_image(tmp_path):
    voc = write_voc(tmp_path / "VOC", {"a": (24, 16, [])}, {"train": ["a"]})
    xml = voc_xml(24, 16, [("dog", 1, 1, 30, 30)]).replace("<size><width>24</width><height>16</height>", "<size>")
    (voc / "Annotations" / "a.xml").write_text(xml)
    with pytest.warns(DatasetWarning, match="clipped 1"):
        dataset = VOCDetection(voc, "train")
    assert dataset.image_size(0) == (16, 24)
    assert dataset.targets()[0]["boxes"].tolist() == [[0.0, 0.0, 24.0, 16.0]]


def test_missing_files_and_paths(tmp_path, devkit):
    voc = devkit / "VOC2007"
    with pytest.raises(DatasetError, match=r"train.txt does not exist \(image sets found: \['test', 'trainval'\]\)"):
        VOCDetection(voc, "train")
    with pytest.raises(DatasetError, match="VOC dataset directory .*nowhere does not exist"):
        VOCDetection(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"pass year= \(found: \['VOC2007'\]\)"):
        VOCDetection(devkit, "trainval")
    with pytest.raises(DatasetError, match="VOC2012.*JPEGImages does not exist"):
        VOCDetection(devkit, "trainval", year="2012")

    (voc / "Annotations" / "000007.xml").unlink()
    with pytest.raises(DatasetError, match="annotation .*000007.xml for image '000007' of image set 'test'"):
        VOCDetection(voc, "test")


def test_missing_image_names_image_and_annotation(devkit):
    voc = devkit / "VOC2007"
    (voc / "JPEGImages" / "000005.jpg").unlink()
    dataset = VOCDetection(voc, "trainval")
    with pytest.raises(DatasetError, match=r"000005.jpg \(referenced by .*000005.xml\) does not exist"):
        dataset[0]


def test_image_set_listing_an_image_twice(tmp_path):
    # Read as two images, it would be trained on twice as often and counted twice by the evaluation.
    voc = write_voc(tmp_path / "VOC", {"a": (20, 20, []), "b": (20, 20, [])}, {"train": ["a", "b", "a"]})
    with pytest.raises(DatasetError, match=r"train.txt lists image\(s\) \['a'\] more than once"):
        VOCDetection(voc, "train")


def test_nan_and_infinite_coordinates_are_dropped_with_one_warning(tmp_path):
    objects = [("dog", "nan", 1, 5, 5), ("cat", 2, 2, "inf", 9), ("car", 3, 3, 8, 8)]
    voc = write_voc(tmp_path / "VOC", {"a": (20, 20, objects)}, {"train": ["a"]})
    with pytest.warns(DatasetWarning, match=r"dropped 2 box\(es\) \(2 with NaN/inf coordinates\)") as caught:
        target = VOCDetection(voc, "train").targets()[0]
    assert len(caught) == 1
    assert target["boxes"].tolist() == [[2.0, 2.0, 8.0, 8.0]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("car")]
