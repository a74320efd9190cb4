"""Small dataset trees in the real COCO and VOC layouts, written by the data tests into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, width: int = 40, height: int = 30, mode: str = "RGB", value: int = 128) -> Path:
    """A flat image of ``mode`` (RGB, L, RGBA, P or I;16) filled with ``value``; JPEG unless the suffix says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        image = Image.fromarray(np.full((height, width), value, dtype=np.uint16))
    elif mode == "RGB":
        image = Image.new("RGB", (width, height), (value, value, value))
    elif mode == "RGBA":
        image = Image.new("RGBA", (width, height), (value, value, value, 60))
    else:
        image = Image.new(mode, (width, height), value)
    image.save(path)
    return path


def write_coco(
    root: Path, images: list[dict], annotations: list[dict], categories: list[dict], split: str = "train"
) -> tuple[Path, Path]:
    """``root/images/{split}/`` with one flat JPEG per image entry (unless ``"write": False`` or a ``"mode"``)
    and ``root/annotations/instances_{split}.json``. Returns ``(image_dir, ann_file)``."""
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for image in images:
        image = dict(image)
        mode, write = image.pop("mode", "RGB"), image.pop("write", True)
        if write:
            write_image(image_dir / image["file_name"], image["width"], image["height"], mode)
        entries.append(image)
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": entries, "annotations": annotations, "categories": categories}
    ann_file.write_text(json.dumps(data, allow_nan=True))
    return image_dir, ann_file


def coco_annotation(ann_id: int, image_id: int, category_id: int, bbox: list[float], iscrowd: int = 0) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": 1.0,  # unused by the loader
        "iscrowd": iscrowd,
    }


def voc_xml(width: int, height: int, objects: list[tuple]) -> str:
    """VOC annotation text; each object is ``(name, xmin, ymin, xmax, ymax)`` or with a 6th ``difficult`` flag."""
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, x1, y1, x2, y2, *difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{int(bool(difficult and difficult[0]))}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def write_voc(voc_dir: Path, annotations: dict[str, tuple], image_sets: dict[str, list[str]]) -> Path:
    """A ``VOC<year>``-like tree: ``annotations[stem] = (width, height, objects)`` (objects as in
    :func:`voc_xml`), one flat JPEG per stem, and ``ImageSets/Main/{name}.txt`` per image set."""
    for stem, (width, height, objects) in annotations.items():
        write_image(voc_dir / "JPEGImages" / f"{stem}.jpg", width, height)
        (voc_dir / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc_dir / "Annotations" / f"{stem}.xml").write_text(voc_xml(width, height, objects))
    (voc_dir / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name, stems in image_sets.items():
        (voc_dir / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    return voc_dir
