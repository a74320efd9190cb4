"""Dataset statistics, e.g. for choosing anchors: box sizes and aspect ratios, objects per image, per-class summary.

Every function takes a ``source``: a dataset of this package (read through its ``targets()`` method, which parses
annotations only and decodes no image, so the shapes set takes milliseconds), any other dataset following the
sample contract (iterated, which decodes every image), or a list of target dicts. Sizes are in the dataset's own
pixels; multiply by the resize factor of your input transform to get input pixels. Boxes flagged ``ignore``
(crowd, difficult) are left out unless ``include_ignored=True``.

::

    stats = box_stats(dataset)        # {"width", "height", "size", "aspect", "label", "image"}: arrays [n]
    counts = objects_per_image(dataset)  # [num_images]
    print(format_summary(summarize(dataset)))
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = ["box_stats", "class_summary", "collect_targets", "format_summary", "objects_per_image", "summarize"]


def collect_targets(source) -> list[dict]:
    """The targets of ``source`` (see the module docstring), without decoding images where possible."""
    if hasattr(source, "targets"):
        return source.targets()
    if isinstance(source, Subset) and hasattr(source.dataset, "targets"):
        targets = source.dataset.targets()
        return [targets[i] for i in source.indices]
    if isinstance(source, Dataset):
        return [source[i][1] for i in range(len(source))]
    return list(source)


def _numpy(value) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _kept(target: dict, include_ignored: bool) -> np.ndarray:
    ignore = _numpy(target["ignore"]).astype(bool)
    return np.ones_like(ignore) if include_ignored else ~ignore


def box_stats(source, include_ignored: bool = False) -> dict[str, np.ndarray]:
    """One entry per box, all arrays ``[n]``: ``width``, ``height``, ``size`` = sqrt(width * height) (the scale
    anchors are sized by), ``aspect`` = height / width, ``label`` and ``image`` (index of the box's image)."""
    targets = collect_targets(source)
    boxes, labels, images = [np.zeros((0, 4))], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for index, target in enumerate(targets):
        kept = _kept(target, include_ignored)
        boxes.append(_numpy(target["boxes"]).reshape(-1, 4)[kept].astype(np.float64))
        labels.append(_numpy(target["labels"])[kept].astype(np.int64))
        images.append(np.full(int(kept.sum()), index, dtype=np.int64))
    xyxy = np.concatenate(boxes)
    width, height = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    return {
        "width": width,
        "height": height,
        "size": np.sqrt(width * height),
        "aspect": height / width,
        "label": np.concatenate(labels),
        "image": np.concatenate(images),
    }


def objects_per_image(source, include_ignored: bool = False) -> np.ndarray:
    """Number of boxes in each image, int64 ``[num_images]`` (zeros included)."""
    return np.array([int(_kept(t, include_ignored).sum()) for t in collect_targets(source)], dtype=np.int64)


def class_summary(stats: dict[str, np.ndarray], classes: list[str]) -> dict[str, dict[str, float]]:
    """Per class name: ``boxes``, ``images`` (containing the class), and the ``size_min``, ``size_median``,
    ``size_max`` and ``aspect_median`` of its boxes (NaN for a class without boxes); ``stats`` is from
    :func:`box_stats`."""
    summary = {}
    for label, name in enumerate(classes):
        mine = stats["label"] == label
        sizes, aspects = stats["size"][mine], stats["aspect"][mine]
        has_boxes = bool(mine.any())
        summary[name] = {
            "boxes": int(mine.sum()),
            "images": len(np.unique(stats["image"][mine])),
            "size_min": float(sizes.min()) if has_boxes else float("nan"),
            "size_median": float(np.median(sizes)) if has_boxes else float("nan"),
            "size_max": float(sizes.max()) if has_boxes else float("nan"),
            "aspect_median": float(np.median(aspects)) if has_boxes else float("nan"),
        }
    return summary


def summarize(source, classes: list[str] | None = None, include_ignored: bool = False) -> dict:
    """Whole-dataset summary: ``images``, ``boxes``, ``empty_images``, ``objects_per_image_mean`` and
    ``_max``, overall size percentiles ``size_p5``/``size_p50``/``size_p95``, and ``classes`` (from
    :func:`class_summary`; class names come from ``source.classes`` unless given)."""
    classes = list(classes if classes is not None else source.classes)
    targets = collect_targets(source)
    stats = box_stats(targets, include_ignored)
    counts = objects_per_image(targets, include_ignored)
    p5, p50, p95 = np.percentile(stats["size"], [5, 50, 95]) if len(stats["size"]) else (float("nan"),) * 3
    return {
        "images": len(targets),
        "boxes": len(stats["size"]),
        "empty_images": int((counts == 0).sum()),
        "objects_per_image_mean": float(counts.mean()) if len(counts) else 0.0,
        "objects_per_image_max": int(counts.max()) if len(counts) else 0,
        "size_p5": float(p5),
        "size_p50": float(p50),
        "size_p95": float(p95),
        "classes": class_summary(stats, classes),
    }


def format_summary(summary: dict) -> str:
    """A plain-text table of :func:`summarize`'s result."""
    lines = [
        f"{summary['images']} images, {summary['boxes']} boxes, {summary['empty_images']} images without boxes",
        f"boxes per image: {summary['objects_per_image_mean']:.2f} on average, "
        f"{summary['objects_per_image_max']} at most",
        f"box size sqrt(w*h): 5% {summary['size_p5']:.1f} px, median {summary['size_p50']:.1f} px, "
        f"95% {summary['size_p95']:.1f} px",
        "",
        f"{'class':<16}{'boxes':>8}{'images':>8}{'size min':>10}{'median':>8}{'max':>8}{'aspect h/w':>12}",
    ]
    for name, row in summary["classes"].items():
        lines.append(
            f"{name:<16}{row['boxes']:>8}{row['images']:>8}{row['size_min']:>10.1f}{row['size_median']:>8.1f}"
            f"{row['size_max']:>8.1f}{row['aspect_median']:>12.2f}"
        )
    return "\n".join(lines)
