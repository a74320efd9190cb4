"""COCO-format detection datasets (real COCO 2017 and the synthetic shapes set), read with pycocotools.

``CocoDetection(image_dir, ann_file)`` follows the sample contract of :mod:`retina.data.common`:

- COCO ``bbox`` ``[x, y, w, h]`` becomes xyxy ``[x, y, x + w, y + h]``;
- category ids (arbitrary, e.g. COCO's 1..90 with gaps) map to contiguous labels ``0..C-1`` in sorted id order;
  ``.cat_ids[label]`` is the COCO category id and ``.classes[label]`` its name;
- ``iscrowd`` boxes are kept with ``ignore=True``: never foreground, but they should not count as background;
- images without annotations are kept (as background-only images) unless ``keep_empty=False``, which drops every
  image without at least one non-crowd box;
- ``image_id`` is the COCO image id, and ``.coco`` is the pycocotools ``COCO`` index, for ``COCOeval``.

Bad input raises :class:`~retina.data.common.DatasetError` naming the file: a missing path, a truncated or
malformed JSON file (with the parser's line and column), a file without an ``annotations`` list (COCO's test-dev
``image_info`` files have none: neither training nor evaluation can use them, so a missing or misspelt key is an
error, while ``"annotations": []`` is a valid set of background images), an image entry or annotation lacking a
required field, an image or category id that is not an integer or appears twice (two images' boxes would merge
onto one file), a category name given to two ids, a ``category_id`` missing from ``categories``, an annotation
whose ``image_id`` is not among the images, and (when the sample is read) a missing or corrupt image file.
Degenerate boxes are clipped or dropped with one warning per load, as described in :mod:`retina.data.common`.

Annotation ids only name the boxes, but pycocotools' ``COCOeval`` needs them unique and positive: it takes id 0
for "unmatched" (a detection of that box counts as a false positive) and reads a repeated id's box in place of
the other. A file whose annotation ids are not unique positive integers has them renumbered ``1..N`` in file
order, with one :class:`~retina.data.common.DatasetWarning`.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from .common import BoxSanitizer, DatasetError, DatasetWarning, DetectionDataset, ImageRecord, require_path

__all__ = ["CocoDetection", "coco_dataset", "load_coco_json"]


def load_coco_json(ann_file: str | Path) -> COCO:
    """Parse a COCO annotation file into a pycocotools ``COCO`` index, with clear errors for bad files."""
    ann_file = require_path(ann_file, "COCO annotation file")
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{ann_file}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            "the file may be truncated"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{ann_file}: cannot read it ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{ann_file}: not a COCO annotation file (no 'images' list at the top level)")
    if not isinstance(data.get("categories"), list):
        raise DatasetError(f"{ann_file}: not a COCO detection file (no 'categories' list at the top level)")
    if not isinstance(data.get("annotations"), list):
        raise DatasetError(
            f"{ann_file}: no 'annotations' list at the top level (its keys: {sorted(data)}); a file without "
            "annotations, such as COCO's test-dev image_info, can be neither trained nor evaluated on "
            "(`python -m retina detect` draws detections on its images)"
        )
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress messages
            coco.createIndex()
    except (KeyError, TypeError) as error:
        raise DatasetError(f"{ann_file}: an image, annotation or category lacks the field {error}") from None
    for key in ("images", "categories"):  # an id names one image (one file), one category (one class)
        ids = [entry["id"] for entry in data[key]]
        odd = [i for i in ids if type(i) is not int]
        if odd:
            raise DatasetError(f"{ann_file}: the ids in '{key}' must be integers, got {odd[:5]}")
        repeated = [i for i, count in Counter(ids).items() if count > 1]
        if repeated:
            raise DatasetError(f"{ann_file}: id(s) {repeated[:5]} appear more than once in '{key}'")
    ann_ids = [ann["id"] for ann in data["annotations"]]
    if len(set(ann_ids)) < len(ann_ids) or not all(type(i) is int and i > 0 for i in ann_ids):
        for new_id, ann in enumerate(data["annotations"], start=1):
            ann["id"] = new_id
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        warnings.warn(
            DatasetWarning(
                f"{ann_file}: renumbered the annotation ids 1..{len(ann_ids)}: they were not unique positive "
                "integers, which pycocotools' COCOeval needs"
            ),
            stacklevel=2,
        )
    return coco


class CocoDetection(DetectionDataset):
    """A COCO-format detection dataset: images in ``image_dir``, annotations in the JSON ``ann_file``.

    Annotations are read and sanitised once, here; ``__getitem__`` only decodes the image.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transforms=None, keep_empty: bool = True):
        self.image_dir = require_path(image_dir, "COCO image directory")
        self.ann_file = require_path(ann_file, "COCO annotation file")
        self.coco = load_coco_json(self.ann_file)

        unknown = sorted(set(self.coco.imgToAnns) - set(self.coco.imgs), key=str)
        if unknown:
            raise DatasetError(f"{self.ann_file}: annotations refer to image id(s) {unknown[:5]} missing from 'images'")
        self.cat_ids: list[int] = sorted(self.coco.cats)
        classes = [str(self.coco.cats[cat_id].get("name", cat_id)) for cat_id in self.cat_ids]
        repeated = sorted(name for name, count in Counter(classes).items() if count > 1)
        if repeated:  # the classes would be told apart by their index alone, and merge in every per-class report
            raise DatasetError(f"{self.ann_file}: category name(s) {repeated[:5]} belong to more than one category id")
        label_of = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}

        sanitizer = BoxSanitizer()
        records = []
        for image_id in sorted(self.coco.imgs):
            record = self._record(self.coco.imgs[image_id], self.coco.imgToAnns.get(image_id, []), label_of, sanitizer)
            if keep_empty or not record.ignore.all():
                records.append(record)
        sanitizer.warn(self.ann_file)
        super().__init__(records, classes, transforms)

    def _record(self, info: dict, anns: list[dict], label_of: dict, sanitizer: BoxSanitizer) -> ImageRecord:
        source = f"{self.ann_file} (image id {info['id']})"
        try:
            path = self.image_dir / info["file_name"]
            width, height = int(info["width"]), int(info["height"])
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(
                f"{source}: image entry lacks a valid 'file_name', 'width' or 'height' ({error})"
            ) from None

        for ann in anns:
            if ann["category_id"] not in label_of:
                raise DatasetError(
                    f"{source}: annotation {ann.get('id')} has category_id {ann['category_id']}, "
                    "which is not in 'categories'"
                )
        try:
            xywh = np.array([ann["bbox"] for ann in anns], dtype=np.float64).reshape(len(anns), 4)
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{source}: an annotation has a missing or malformed 'bbox' ({error})") from None
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = np.array([label_of[ann["category_id"]] for ann in anns], dtype=np.int64)
        ignore = np.array([bool(ann.get("iscrowd", 0)) for ann in anns], dtype=bool)

        boxes, keep = sanitizer(xyxy, width, height)
        return ImageRecord(path, width, height, int(info["id"]), boxes[keep], labels[keep], ignore[keep], source)


def coco_dataset(root: str | Path, split: str, transforms=None, keep_empty: bool = True) -> CocoDetection:
    """Open split ``split`` of a COCO-layout directory ``root``.

    Annotations are ``root/annotations/instances_{split}.json``; images are in ``root/images/{split}`` (the layout
    the shapes generator writes) or ``root/{split}`` (the layout of the COCO 2017 zips, e.g. split
    ``"val2017"``).
    """
    root = require_path(root, "COCO dataset directory")
    ann_file = root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        found = sorted(p.name for p in (root / "annotations").glob("instances_*.json"))
        raise DatasetError(f"{ann_file} does not exist (annotation files found: {found or 'none'})")
    image_dir = root / "images" / split
    if not image_dir.is_dir():
        image_dir = root / split
    if not image_dir.is_dir():
        raise DatasetError(f"no image directory for split {split!r}: neither {root / 'images' / split} nor {image_dir}")
    return CocoDetection(image_dir, ann_file, transforms=transforms, keep_empty=keep_empty)
