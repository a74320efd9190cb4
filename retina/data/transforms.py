"""Detection transforms: ``(image, target) -> (image, target)`` callables built on ``torchvision.transforms.v2``.

Boxes are wrapped as ``tv_tensors.BoundingBoxes`` for the duration of the transform, so torchvision moves them
with every geometric change (flip, resize); the one hand-written move is :class:`RandomQuarterTurn`'s
(`retina.boxes.turn_boxes`), tested against torchvision's ``RandomRotation``. Inputs and outputs
follow the sample contract of :mod:`retina.data.common`: plain tensors, boxes float32 xyxy in pixels of the
transformed image, and ``labels``/``ignore`` kept aligned with the boxes. Boxes that a transform shrinks below
one pixel are dropped by ``SanitizeBoundingBoxes`` together with their ``labels`` and ``ignore`` entries;
``image_id`` and any other target keys pass through untouched.

Presets (defaults follow the RetinaNet paper's COCO setting: shorter side 800, longer side at most 1333, with the
multi-scale 640-800 training of its longer schedules):

- :func:`train_transforms`: random shorter-side size from ``min_size``, horizontal flip, optional quarter turns
  (for objects that have no "up", such as the shapes set's) and colour jitter; for the 256 px shapes set, e.g.
  ``train_transforms(min_size=(224, 256, 288), max_size=None, rotate90=True)``;
- :func:`eval_transforms`: deterministic resize only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from retina.boxes import turn_boxes

__all__ = ["DetectionTransform", "RandomQuarterTurn", "eval_transforms", "train_transforms"]


class DetectionTransform:
    """Adapts a ``torchvision.transforms.v2`` transform to our ``(image, target)`` sample contract."""

    def __init__(self, transform: v2.Transform):
        self.transform = transform

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        sample = {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:])),
            "labels": target["labels"],
            "ignore": target["ignore"],
        }
        out = self.transform(sample)
        target = {
            **target,
            "boxes": out["boxes"].as_subclass(torch.Tensor).to(torch.float32),
            "labels": out["labels"],
            "ignore": out["ignore"],
        }
        return out["image"].as_subclass(torch.Tensor), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"


class RandomQuarterTurn(v2.Transform):
    """Turn by 0, 90, 180 or 270 degrees counter-clockwise, equally likely; the image grows to fit (a landscape
    image turns portrait). What ``v2.RandomChoice`` over ``v2.RandomRotation((a, a), expand=True)`` does at these
    four angles, pixel for pixel and box for box, but with ``torch.rot90``, which moves pixels instead of
    resampling them through an affine grid: a tenth of the time (0.05 instead of 0.55 ms for 256 px)."""

    def make_params(self, flat_inputs: list) -> dict:
        return {"k": int(torch.randint(4, ()))}

    def transform(self, inpt, params: dict):
        k = params["k"]
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            if inpt.format != tv_tensors.BoundingBoxFormat.XYXY:
                raise ValueError(f"RandomQuarterTurn turns XYXY boxes, got {inpt.format}")
            height, width = inpt.canvas_size
            boxes = turn_boxes(inpt.as_subclass(torch.Tensor), k, (height, width))
            return tv_tensors.wrap(boxes, like=inpt, canvas_size=(height, width) if k % 2 == 0 else (width, height))
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(torch.rot90(inpt.as_subclass(torch.Tensor), k, dims=(-2, -1)), like=inpt)
        return inpt  # labels, ignore flags


def _sanitize() -> v2.Transform:
    # Drop labels and ignore flags together with their boxes: the two must stay aligned.
    return v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=lambda sample: (sample["labels"], sample["ignore"]))


def _resize(min_size: int, max_size: int | None) -> v2.Transform:
    """Shorter side to ``min_size``, unless the longer side would then exceed ``max_size``: then longer side to
    ``max_size``."""
    if max_size is not None and max_size <= min_size:
        # v2.Resize wants max_size above the shorter side; at or below it the cap binds for every image anyway.
        return v2.Resize(size=None, max_size=max_size)
    return v2.Resize(size=min_size, max_size=max_size)


def train_transforms(
    min_size: int | Sequence[int] = (640, 672, 704, 736, 768, 800),
    max_size: int | None = 1333,
    flip_p: float = 0.5,
    photometric: bool = False,
    rotate90: bool = False,
) -> DetectionTransform:
    """Training augmentation: resize the shorter side to a size drawn from ``min_size`` (the longer side capped
    at ``max_size``), flip horizontally with probability ``flip_p``, if ``rotate90`` turn by 0, 90, 180 or 270
    degrees (equally likely; the image grows to fit, so a landscape image turns portrait), and, if
    ``photometric``, jitter brightness, contrast, saturation and hue.

    Quarter turns and the flip together give all eight symmetries of a square: eight times the distinct
    training images, for data without an up and a down (shapes, aerial or microscope images), not for photos.
    A quarter turn moves every pixel and box corner exactly (no interpolation)."""
    sizes = [min_size] if isinstance(min_size, int) else list(min_size)
    # A random choice among exact resizes rather than v2.RandomShortestSize, whose float rounding sometimes
    # yields 799 for 800: with a single size, training and evaluation then see identical image sizes.
    steps = [v2.RandomChoice([_resize(size, max_size) for size in sizes])]
    if flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=flip_p))
    if rotate90:
        steps.append(RandomQuarterTurn())
    if photometric:
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    steps.append(_sanitize())
    return DetectionTransform(v2.Compose(steps))


def eval_transforms(min_size: int = 800, max_size: int | None = 1333) -> DetectionTransform:
    """Evaluation preprocessing: resize the shorter side to exactly ``min_size`` unless that would make the longer
    side exceed ``max_size``, in which case the longer side becomes ``max_size`` (``None``: no cap)."""
    return DetectionTransform(v2.Compose([_resize(min_size, max_size), _sanitize()]))
