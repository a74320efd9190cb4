"""What every dataset in ``retina.data`` shares: the sample contract, image loading and box sanitising.

The sample contract
-------------------
Every dataset is a ``torch.utils.data.Dataset`` whose ``__getitem__`` returns ``(image, target)``:

- ``image``: float32 tensor ``[3, H, W]``, RGB, values in [0, 1];
- ``target["boxes"]``: float32 ``[n, 4]``, ``(x1, y1, x2, y2)`` in pixels, where pixel ``i`` spans ``[i, i + 1)``;
- ``target["labels"]``: int64 ``[n]``, contiguous class indices ``0..C-1`` (there is no background class);
- ``target["ignore"]``: bool ``[n]``, boxes that must never be matched as foreground (COCO crowd, VOC difficult);
- ``target["image_id"]``: int.

Each dataset has ``.classes`` (``classes[label]`` is the name) and an optional ``transforms`` callable
``(image, target) -> (image, target)`` applied last. An image without boxes has ``boxes`` ``[0, 4]``.

Bad input
---------
Problems in the data raise :class:`DatasetError` (a ``ValueError``) whose message names the file, instead of a deep
stack trace or, worse, a silently wrong label:

- a missing, corrupt or truncated image, or an image whose size differs from its annotation;
- an annotation that names an image file that does not exist (the message names both);
- a missing dataset path, a malformed annotation file (see the loaders).

Images in other modes are converted, not rejected: grayscale ``L``, palette ``P``, ``RGBA`` (alpha dropped, as
torchvision's decoder does) and the other 8-bit modes through PIL's RGB conversion; 16-bit ``I;16*`` and 32-bit
integer ``I`` images are scaled by 65535 (they hold 16-bit data in practice, e.g. 16-bit PNG) and replicated to
three channels. EXIF orientation is not applied: pixels are used as stored, as torchvision's decoders do.

Boxes are sanitised once, when a dataset reads its annotations (:class:`BoxSanitizer`): boxes partly outside the
image are clipped to it; boxes with NaN/inf coordinates, or narrower or shorter than one pixel once clipped (zero or
negative size, wholly outside the image), are dropped together with their label. A single
:class:`DatasetWarning` per dataset load counts what was clipped and dropped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = [
    "BoxSanitizer",
    "DatasetError",
    "DatasetWarning",
    "DetectionDataset",
    "ImageRecord",
    "load_image",
    "pil_to_tensor",
    "read_image_size",
    "require_path",
]


class DatasetError(ValueError):
    """Bad dataset input: the message names the file and the problem."""


class DatasetWarning(UserWarning):
    """Something in the data was fixed up (e.g. boxes clipped or dropped); emitted once per dataset load."""


def require_path(path: str | Path, what: str) -> Path:
    """Return ``path`` as a ``Path``, raising a clear :class:`DatasetError` if it does not exist."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{what} {path} does not exist")
    return path


# 16-bit data comes in several PIL modes depending on the format and its byte order.
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Convert a PIL image of any common mode to a float32 RGB tensor ``[3, H, W]`` in [0, 1]."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(image, dtype=np.float32) / 65535.0
        return torch.from_numpy(np.clip(gray, 0.0, 1.0)).expand(3, -1, -1).contiguous()
    if image.mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return torch.from_numpy(gray).expand(3, -1, -1).contiguous()
    if image.mode == "P" and "transparency" in image.info:
        # Going through RGBA avoids PIL's warning about palette transparency; the alpha is dropped below.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def load_image(path: str | Path, referenced_by: str | None = None) -> torch.Tensor:
    """Read an image file as a float32 RGB tensor ``[3, H, W]`` in [0, 1].

    ``referenced_by`` names the annotation that points at ``path``, so a missing file is reported with both.
    Raises :class:`DatasetError` for a missing, unreadable, corrupt or truncated file.
    """
    path = Path(path)
    if not path.is_file():
        source = f" (referenced by {referenced_by})" if referenced_by else ""
        raise DatasetError(f"image file {path}{source} does not exist")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file only fails here
            return pil_to_tensor(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from None


def read_image_size(path: Path) -> tuple[int, int]:
    """Return ``(height, width)`` from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from None


class BoxSanitizer:
    """Clips boxes to their image and drops unusable ones, counting both for a single warning.

    Call it on every image's boxes while reading annotations, then call :meth:`warn` once.
    """

    def __init__(self, min_size: float = 1.0):
        self.min_size = min_size
        self.non_finite = 0
        self.too_small = 0  # zero, negative or sub-pixel size as annotated
        self.outside = 0  # a real box, but (almost) nothing of it lies inside the image
        self.clipped = 0

    def __call__(self, boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
        """Sanitise ``boxes`` ``[n, 4]`` xyxy of one ``width`` x ``height`` image.

        Returns the clipped boxes ``[n, 4]`` float32 and a keep mask ``[n]`` (bool) to apply to them and to every
        per-box array (labels, ignore) alike.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        finite = np.isfinite(boxes).all(axis=1)
        safe = np.where(finite[:, None], boxes, 0.0)
        sized = finite & (safe[:, 2] - safe[:, 0] >= self.min_size) & (safe[:, 3] - safe[:, 1] >= self.min_size)
        clipped = np.clip(safe, 0.0, [width, height, width, height])
        inside = (clipped[:, 2] - clipped[:, 0] >= self.min_size) & (clipped[:, 3] - clipped[:, 1] >= self.min_size)
        keep = sized & inside

        self.non_finite += int((~finite).sum())
        self.too_small += int((finite & ~sized).sum())
        self.outside += int((sized & ~inside).sum())
        self.clipped += int((keep & (clipped != safe).any(axis=1)).sum())
        return clipped.astype(np.float32), keep

    @property
    def dropped(self) -> int:
        return self.non_finite + self.too_small + self.outside

    def warn(self, source: str | Path) -> None:
        """Emit one :class:`DatasetWarning` summarising what was dropped and clipped, if anything was."""
        if not (self.dropped or self.clipped):
            return
        reasons = [
            f"{count} {reason}"
            for count, reason in (
                (self.non_finite, "with NaN/inf coordinates"),
                (self.too_small, f"smaller than {self.min_size:g} px (zero or negative size)"),
                (self.outside, "outside the image"),
            )
            if count
        ]
        message = f"{source}: "
        if self.dropped:
            message += f"dropped {self.dropped} box(es) ({', '.join(reasons)})"
        if self.clipped:
            message += "; " if self.dropped else ""
            message += f"clipped {self.clipped} box(es) that extended past the image border"
        warnings.warn(DatasetWarning(message), stacklevel=3)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its already sanitised annotations.

    ``boxes`` is float32 ``[n, 4]`` xyxy, ``labels`` int64 ``[n]``, ``ignore`` bool ``[n]``; ``source`` names the
    annotation (file, and id where useful) for error messages.
    """

    path: Path
    width: int
    height: int
    image_id: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    source: str

    def target(self) -> dict:
        return {
            "boxes": torch.from_numpy(self.boxes.copy()),
            "labels": torch.from_numpy(self.labels.copy()),
            "ignore": torch.from_numpy(self.ignore.copy()),
            "image_id": self.image_id,
        }


class DetectionDataset(Dataset):
    """Base of the loaders: holds one :class:`ImageRecord` per image and decodes images on demand.

    Subclasses parse their annotation format into records; everything else (the sample contract, the size check,
    reading targets without decoding images) lives here.
    """

    def __init__(self, records: list[ImageRecord], classes: list[str], transforms=None):
        self.records = records
        self.classes = list(classes)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        record = self.records[index]
        image = load_image(record.path, referenced_by=record.source)
        if tuple(image.shape[-2:]) != (record.height, record.width):
            raise DatasetError(
                f"image {record.path} is {image.shape[-1]}x{image.shape[-2]} (w x h) but {record.source} says "
                f"{record.width}x{record.height}"
            )
        target = record.target()
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def targets(self) -> list[dict]:
        """Every image's target (before ``transforms``), without decoding any image: fast, for statistics."""
        return [record.target() for record in self.records]

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of image ``index``, from its annotation."""
        record = self.records[index]
        return record.height, record.width

    def image_path(self, index: int) -> Path:
        return self.records[index].path

    def __repr__(self) -> str:
        num_boxes = sum(len(record.boxes) for record in self.records)
        return f"{type(self).__name__}({len(self)} images, {num_boxes} boxes, {len(self.classes)} classes)"
