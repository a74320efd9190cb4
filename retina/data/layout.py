"""Opening a dataset split by its directory: one set of rules for which layout a directory holds.

Used by training, evaluation and ``python -m retina data stats``:

    COCO layout   ``root/annotations/instances_{split}.json`` (the shapes set, COCO 2017)
    VOC layout    a ``VOC<year>`` directory: ``root/JPEGImages``, ``root/Annotations``, ``root/ImageSets/Main``

A generated shapes set holds both (its VOC copy beside the COCO files); "auto" reads it as COCO.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .coco import coco_dataset
from .common import DatasetError, require_path
from .shapes import SHAPES_CLASSES
from .voc import VOC_CLASSES, VOCDetection

__all__ = ["FORMATS", "dataset_format", "open_dataset"]

FORMATS = ("auto", "coco", "voc")


def dataset_format(root: Path) -> str:
    """The layout of ``root``: "coco" when ``root/annotations`` is a directory, else "voc" when ``root/JPEGImages``
    is; otherwise DatasetError naming ``root`` and what it lacks."""
    if (root / "annotations").is_dir():
        return "coco"
    if (root / "JPEGImages").is_dir():
        return "voc"
    raise DatasetError(
        f"{root} holds no dataset layout retina knows: neither annotations/ (COCO: annotations/instances_<split>.json) "
        "nor JPEGImages/ (a VOC<year> directory); point to such a directory or generate one with "
        "`python -m retina data shapes`"
    )


def open_dataset(root: str | Path, split: str, fmt: str = "auto", transforms=None) -> Dataset:
    """Split `split` of the dataset in `root`, read as `fmt` ("auto": `dataset_format`'s choice). The VOC copy of a
    shapes set (it has a meta.json) uses the shapes classes, any other VOC directory the 20 VOC ones."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")
    root = require_path(root, "dataset directory")
    if fmt == "auto":
        fmt = dataset_format(root)
    if fmt == "coco":
        return coco_dataset(root, split, transforms=transforms)
    classes = SHAPES_CLASSES if (root / "meta.json").is_file() else VOC_CLASSES
    return VOCDetection(root, split, classes=classes, transforms=transforms)
