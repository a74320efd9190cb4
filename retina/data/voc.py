"""Pascal VOC detection datasets (VOC2007, VOC2012 and the VOC copy of the synthetic shapes set).

``VOCDetection(root, image_set)`` reads the real VOC layout::

    VOC2007/                       <- root, or pass root=VOCdevkit/ and year="2007"
        JPEGImages/000005.jpg
        Annotations/000005.xml     <- <size>, <object><name>, <difficult>, <bndbox><xmin>...
        ImageSets/Main/{train,val,trainval,test}.txt

and follows the sample contract of :mod:`retina.data.common`:

- Coordinates: VOC numbers pixels from 1 and its boxes include both end pixels, so ``xmin=1, xmax=10`` covers the
  first ten pixels. The contract's pixel ``i`` spans ``[i, i + 1)`` counting from 0, so the box becomes
  ``(xmin - 1, ymin - 1, xmax, ymax)`` = ``(0, 0, 10, ...)``. The shapes generator writes the inverse, so its VOC
  and COCO copies read back identically.
- Labels are indices into ``classes`` (default :data:`VOC_CLASSES`, the 20 VOC classes).
- ``difficult`` objects are kept with ``ignore=True``.
- ``image_id``: the digits of the file stem as an int (``000005`` -> 5, ``2008_000008`` -> 2008000008,
  ``train_000001`` -> 1) when every stem has digits and they are unique in the image set, else the position in it.

Bad input raises :class:`~retina.data.common.DatasetError` naming the file: a missing root or image-set file
(listing the sets that exist), an image set listing an image twice, a missing, truncated or malformed annotation
XML (with the parser's message), an object without a numeric ``bndbox``, and a class name not in ``classes``
(naming the file and the name; pass ``unknown_classes="skip"`` to drop such objects instead, counted in one
warning). Boxes are clipped to the image or dropped, with one warning per load, as described in
:mod:`retina.data.common`.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

from .common import (
    BoxSanitizer,
    DatasetError,
    DatasetWarning,
    DetectionDataset,
    ImageRecord,
    read_image_size,
    require_path,
)

__all__ = ["VOC_CLASSES", "VOCDetection"]

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


def _find_voc_dir(root: Path, year: str | None) -> Path:
    """Resolve ``root`` (a ``VOC<year>``-like directory, or a ``VOCdevkit`` plus ``year``) to the directory that
    holds ``JPEGImages/``."""
    if (root / "JPEGImages").is_dir():
        return root
    if year is None:
        found = sorted(p.name for p in root.glob("VOC*") if p.is_dir())
        raise DatasetError(
            f"{root} has no JPEGImages/ directory; if it is a VOCdevkit, pass year= (found: {found or 'nothing'})"
        )
    voc_dir = root / f"VOC{year}"
    if not (voc_dir / "JPEGImages").is_dir():
        raise DatasetError(f"{voc_dir / 'JPEGImages'} does not exist")
    return voc_dir


def _image_ids(stems: list[str]) -> list[int]:
    digits = [re.sub(r"\D", "", stem) for stem in stems]
    if all(digits):
        ids = [int(d) for d in digits]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(len(stems)))


def _number(obj: ET.Element, tag: str, xml_path: Path) -> float:
    text = obj.findtext(f"bndbox/{tag}")
    try:
        return float(text)
    except (TypeError, ValueError):
        name = obj.findtext("name")
        raise DatasetError(f"{xml_path}: object {name!r} has no numeric <bndbox><{tag}> (got {text!r})") from None


class VOCDetection(DetectionDataset):
    """A Pascal VOC-layout detection dataset; see the module docstring for layout and conventions.

    Args:
        root: a ``VOC<year>`` directory (holding ``JPEGImages/``), or a ``VOCdevkit`` directory with ``year``.
        image_set: name of a list in ``ImageSets/Main/``: ``train``, ``val``, ``trainval`` or ``test``.
        year: ``"2007"`` or ``"2012"`` when ``root`` is a ``VOCdevkit``.
        classes: class names; ``classes[label]`` is the name.
        unknown_classes: ``"error"`` (default) raises on an object whose name is not in ``classes``; ``"skip"``
            drops those objects and counts them in one warning.
    """

    def __init__(
        self,
        root: str | Path,
        image_set: str = "train",
        year: str | None = None,
        classes: list[str] = VOC_CLASSES,
        transforms=None,
        unknown_classes: str = "error",
    ):
        if unknown_classes not in ("error", "skip"):
            raise ValueError(f"unknown_classes must be 'error' or 'skip', got {unknown_classes!r}")
        self.root = _find_voc_dir(require_path(root, "VOC dataset directory"), year)
        self.image_set = image_set
        list_file = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not list_file.is_file():
            found = sorted(p.stem for p in (self.root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
            raise DatasetError(f"{list_file} does not exist (image sets found: {found or 'none'})")
        self.ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        repeated = sorted(stem for stem, count in Counter(self.ids).items() if count > 1)
        if repeated:  # the image would be trained on twice as often, and count twice in the evaluation
            raise DatasetError(f"{list_file} lists image(s) {repeated[:5]} more than once")

        label_of = {name: label for label, name in enumerate(classes)}
        sanitizer = BoxSanitizer()
        self._skipped: dict[str, int] = {}
        records = [
            self._record(stem, image_id, label_of, unknown_classes, sanitizer)
            for stem, image_id in zip(self.ids, _image_ids(self.ids), strict=True)
        ]
        sanitizer.warn(list_file)
        if self._skipped:
            counts = ", ".join(f"{name}: {count}" for name, count in sorted(self._skipped.items()))
            warnings.warn(
                DatasetWarning(f"{list_file}: skipped objects of classes not in the class list ({counts})"),
                stacklevel=2,
            )
        super().__init__(records, classes, transforms)

    def _record(
        self, stem: str, image_id: int, label_of: dict, unknown_classes: str, sanitizer: BoxSanitizer
    ) -> ImageRecord:
        xml_path = self.root / "Annotations" / f"{stem}.xml"
        image_path = self.root / "JPEGImages" / f"{stem}.jpg"
        if not xml_path.is_file():
            raise DatasetError(
                f"annotation {xml_path} for image {stem!r} of image set {self.image_set!r} does not exist"
            )
        try:
            tree = ET.parse(xml_path)
        except ET.ParseError as error:
            raise DatasetError(f"{xml_path}: malformed XML ({error}); the file may be truncated") from None

        try:
            width, height = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
        except (TypeError, ValueError):
            width = height = 0
        if width <= 0 or height <= 0:  # a few real VOC files lack a usable <size>: ask the image itself
            height, width = read_image_size(image_path)

        boxes, labels, ignore = [], [], []
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in label_of:
                if unknown_classes == "error":
                    raise DatasetError(
                        f"{xml_path}: class {name!r} is not in the class list; pass classes= with it, "
                        "or unknown_classes='skip'"
                    )
                self._skipped[name] = self._skipped.get(name, 0) + 1
                continue
            x1, y1, x2, y2 = (_number(obj, tag, xml_path) for tag in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append((x1 - 1.0, y1 - 1.0, x2, y2))
            labels.append(label_of[name])
            ignore.append((obj.findtext("difficult") or "0").strip() == "1")

        clipped, keep = sanitizer(np.array(boxes, dtype=np.float64).reshape(-1, 4), width, height)
        return ImageRecord(
            image_path,
            width,
            height,
            image_id,
            clipped[keep],
            np.array(labels, dtype=np.int64)[keep],
            np.array(ignore, dtype=bool)[keep],
            str(xml_path),
        )
