"""Data for retina: the synthetic shapes set, COCO and VOC loaders, transforms, downloads and statistics.

Every dataset returns ``(image, target)`` as described in :mod:`retina.data.common`; bad input raises
:class:`DatasetError` naming the file.
"""

from .coco import CocoDetection, coco_dataset
from .common import DatasetError, DatasetWarning, load_image
from .download import DownloadError, download_coco, download_dataset, download_voc
from .layout import open_dataset
from .shapes import generate_shapes, shapes_dataset
from .shapes_render import SHAPES_CLASSES
from .stats import box_stats, class_summary, objects_per_image, summarize
from .transforms import eval_transforms, train_transforms
from .voc import VOC_CLASSES, VOCDetection

__all__ = [
    "SHAPES_CLASSES",
    "VOC_CLASSES",
    "CocoDetection",
    "DatasetError",
    "DatasetWarning",
    "DownloadError",
    "VOCDetection",
    "box_stats",
    "class_summary",
    "coco_dataset",
    "download_coco",
    "download_dataset",
    "download_voc",
    "eval_transforms",
    "generate_shapes",
    "load_image",
    "objects_per_image",
    "open_dataset",
    "shapes_dataset",
    "summarize",
    "train_transforms",
]
