"""The synthetic "shapes" detection dataset on disk: generated, deterministic, no download.

It is the default dataset of the demo, the notebooks and the tests. What its images hold (eight classes told apart
by shape alone, objects of every scale, occlusion, textured backgrounds) is described and drawn by
:mod:`retina.data.shapes_render`; this module writes them, with their annotations, and reads them back.

Same seed, same bytes: every image is drawn from its own random generator seeded by ``(seed, split, index)``, so
the work splits over processes without changing the result, and the JSON/XML writers are deterministic.

Output layout (``generate_shapes(out_dir)`` or ``python -m retina data shapes --out DIR``), both the real COCO
and the real Pascal VOC layouts, so that the ordinary loaders read it; each JPEG is written once and hard-linked
(copied if links are impossible) into the other layout::

    DIR/meta.json                               generation parameters; "complete": true once finished
    DIR/images/{train,val}/train_000001.jpg     COCO layout: read with shapes_dataset(DIR, "train")
    DIR/annotations/instances_{train,val}.json  category ids 1..8, xywh bbox, area = visible pixels, iscrowd 0
    DIR/JPEGImages/train_000001.jpg             VOC layout: VOCDetection(DIR, "train", classes=SHAPES_CLASSES)
    DIR/Annotations/train_000001.xml            1-based inclusive VOC coordinates (see retina.data.voc)
    DIR/ImageSets/Main/{train,val}.txt

The COCO image id of ``train_000001`` is 1; the VOC loader derives the same id from the file name.
Re-running with the same parameters on a complete dataset does nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .coco import CocoDetection, coco_dataset
from .common import DatasetError
from .shapes_render import GENERATOR_VERSION, SHAPES_CLASSES, render_image

__all__ = ["generate_shapes", "is_generated", "shapes_dataset"]

_OWNED = ("images", "annotations", "JPEGImages", "Annotations", "ImageSets")  # what a regeneration may delete


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _file_stem(split: str, index: int) -> str:
    return f"{split}_{index + 1:06d}"


def _voc_xml(stem: str, size: int, objects: list[dict]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "shapes"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "retina synthetic shapes"
    size_el = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = SHAPES_CLASSES[obj["label"]]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(int(obj["truncated"]))
        ET.SubElement(el, "difficult").text = "0"
        box = ET.SubElement(el, "bndbox")
        # VOC pixels are 1-based and inclusive: our [x1, x2) becomes x1 + 1 .. x2.
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_image(task: tuple[str, str, int, int, int]) -> list[dict]:
    """Render, write and link one image with its VOC annotation; return its objects for the COCO file."""
    out, split, index, size, seed = task
    out = Path(out)
    pixels, objects = render_image(size, _image_rng(seed, split, index))
    stem = _file_stem(split, index)
    coco_path = out / "images" / split / f"{stem}.jpg"
    Image.fromarray(pixels).save(coco_path, format="JPEG", quality=90, subsampling=0)
    _link_or_copy(coco_path, out / "JPEGImages" / f"{stem}.jpg")
    (out / "Annotations" / f"{stem}.xml").write_bytes(_voc_xml(stem, size, objects))
    return objects


def _coco_json(split: str, size: int, per_image: list[list[dict]]) -> str:
    images, annotations = [], []
    for index, objects in enumerate(per_image):
        image_id = index + 1
        images.append({"id": image_id, "file_name": f"{_file_stem(split, index)}.jpg", "width": size, "height": size})
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["label"] + 1,
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {"description": f"retina synthetic shapes, {split} split", "version": str(GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES_CLASSES)],
    }
    return json.dumps(data, sort_keys=True)


def _meta(num_train: int, num_val: int, image_size: int, seed: int, complete: bool) -> dict:
    return {
        "generator": "retina.data.shapes",
        "version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "seed": seed,
        "classes": SHAPES_CLASSES,
        "complete": complete,
    }


def _read_meta(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def is_generated(
    out_dir: str | Path, num_train: int = 2000, num_val: int = 500, image_size: int = 256, seed: int = 0
) -> bool:
    """Whether ``out_dir`` holds a complete shapes dataset generated with these parameters."""
    out_dir = Path(out_dir)
    splits = [split for split, n in (("train", num_train), ("val", num_val)) if n > 0]
    return _read_meta(out_dir) == _meta(num_train, num_val, image_size, seed, complete=True) and all(
        (out_dir / "annotations" / f"instances_{split}.json").is_file()
        and (out_dir / "ImageSets" / "Main" / f"{split}.txt").is_file()
        for split in splits
    )


def generate_shapes(
    out_dir: str | Path,
    num_train: int = 2000,
    num_val: int = 500,
    image_size: int = 256,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Write the shapes dataset to ``out_dir`` in both COCO and VOC layouts (see the module docstring).

    Does nothing if ``out_dir`` already holds a complete dataset with the same parameters, unless ``force``. A
    previous shapes dataset in ``out_dir`` is replaced; a directory holding other data in the layouts' folders is
    refused. ``workers`` processes render the images (default: every CPU). Returns ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir).expanduser()
    if num_train < 0 or num_val < 0 or image_size < 32:
        raise ValueError("num_train and num_val must be >= 0 and image_size >= 32")
    if not force and is_generated(out, num_train, num_val, image_size, seed):
        return out
    if _read_meta(out) is not None:
        for name in _OWNED:
            shutil.rmtree(out / name, ignore_errors=True)
    elif any((out / name).exists() for name in _OWNED):
        raise DatasetError(f"{out} already holds data that the shapes generator did not write; choose another --out")

    splits = {"train": num_train, "val": num_val}
    for folder in ["JPEGImages", "Annotations", "ImageSets/Main", "annotations"] + [f"images/{s}" for s in splits]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(_meta(num_train, num_val, image_size, seed, False), indent=2) + "\n")

    tasks = [(str(out), split, i, image_size, seed) for split, n in splits.items() for i in range(n)]
    workers = min(workers or os.cpu_count() or 1, max(1, len(tasks) // 8))
    if workers > 1:
        chunksize = max(1, min(16, len(tasks) // (4 * workers)))  # big enough to amortise, small enough to balance
        with multiprocessing.Pool(workers) as pool:
            results = list(_progress(pool.imap(_write_image, tasks, chunksize), len(tasks), progress))
    else:
        results = list(_progress(map(_write_image, tasks), len(tasks), progress))

    start = 0
    for split, n in splits.items():
        per_image = results[start : start + n]
        start += n
        (out / "annotations" / f"instances_{split}.json").write_text(_coco_json(split, image_size, per_image))
        stems = "".join(f"{_file_stem(split, i)}\n" for i in range(n))
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text(stems)
    (out / "meta.json").write_text(json.dumps(_meta(num_train, num_val, image_size, seed, True), indent=2) + "\n")
    return out


def _progress(iterable, total: int, enabled: bool):
    return tqdm(iterable, total=total, desc="shapes", unit="img") if enabled else iterable


def shapes_dataset(root: str | Path, split: str = "train", transforms=None) -> CocoDetection:
    """Read split ``split`` of a generated shapes dataset through the COCO loader."""
    return coco_dataset(root, split, transforms=transforms)
