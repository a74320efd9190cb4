"""Download and extract Pascal VOC 2007 / 2012 and COCO 2017 into their real layouts (e.g. on Colab).

::

    download_dataset("voc2007", "data")   # -> data/VOCdevkit/VOC2007 (trainval + test, 0.9 GB)
    download_dataset("voc2012", "data")   # -> data/VOCdevkit/VOC2012 (trainval, 1.9 GB)
    download_dataset("coco2017", "data")  # -> data/coco/{train2017,val2017,annotations} (19 GB)

or ``python -m retina data download voc2007 --root data``. Archives are fetched with torchvision's
``download_url``, checked against their MD5, extracted, and then deleted unless ``keep_archives``. An archive whose
contents are already extracted is skipped, and an archive already in place with the right MD5 is not fetched
again, so a file downloaded by hand is used as is. ``mirror`` replaces the official hosts: the archive's file name
is appended to it (``{mirror}/VOCtrainval_06-Nov-2007.tar``), which also lets tests serve archives locally.

Without network, on a wrong checksum or on a damaged archive, :class:`DownloadError` says which URL failed,
where to put the file by hand and what its MD5 must be; no stack trace from the depths of ``urllib``.
"""

from __future__ import annotations

import tarfile
import urllib.error
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import check_integrity, download_url, extract_archive

__all__ = ["ARCHIVES", "DATASETS", "Archive", "DownloadError", "download_coco", "download_dataset", "download_voc"]


class DownloadError(RuntimeError):
    """A dataset could not be downloaded or extracted; the message says how to get it by hand."""


@dataclass(frozen=True)
class Archive:
    """One downloadable archive. ``provides`` is a path (relative to the extraction directory) that exists once
    the archive has been extracted."""

    filename: str
    url: str
    md5: str | None
    size: str
    provides: str


_VOC = "https://thor.robots.ox.ac.uk/pascal/VOC"
_COCO = "http://images.cocodataset.org"

ARCHIVES: dict[str, Archive] = {
    archive.filename: archive
    for archive in [
        Archive(
            "VOCtrainval_06-Nov-2007.tar", f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar",
            "c52e279531787c972589f7e41ab4ae64", "439 MB", "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt",
        ),
        Archive(
            "VOCtest_06-Nov-2007.tar", f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar",
            "b6e924de25625d8de591ea690078ad9f", "431 MB", "VOCdevkit/VOC2007/ImageSets/Main/test.txt",
        ),
        Archive(
            "VOCtrainval_11-May-2012.tar", f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar",
            "6cd6e144f989b92b3379bac3b3de84fd", "1.9 GB", "VOCdevkit/VOC2012/ImageSets/Main/trainval.txt",
        ),
        Archive(
            "train2017.zip", f"{_COCO}/zips/train2017.zip",
            "cced6f7f71b7629ddf16f17bbcfab6b2", "18 GB", "train2017",
        ),
        Archive(
            "val2017.zip", f"{_COCO}/zips/val2017.zip",
            "442b8da7639aecaf257c1dceb8ba8c80", "778 MB", "val2017",
        ),
        Archive(
            "annotations_trainval2017.zip", f"{_COCO}/annotations/annotations_trainval2017.zip",
            "f4bbac642086de4f52a3fdda2de5fa2c", "241 MB", "annotations/instances_val2017.json",
        ),
    ]
}  # fmt: skip

DATASETS = ("voc2007", "voc2012", "coco2017")


def _fetch(archive: Archive, dest: Path, mirror: str | None, keep_archive: bool) -> None:
    """Download ``archive`` into ``dest``, verify it and extract it there, unless that was already done."""
    if (dest / archive.provides).exists():
        print(f"{archive.filename}: already extracted in {dest}")
        return
    url = archive.url if mirror is None else f"{mirror.rstrip('/')}/{archive.filename}"
    path = dest / archive.filename
    by_hand = (
        f"download {url} by hand and put it at {path}"
        + (f" (its MD5 must be {archive.md5})" if archive.md5 else "")
        + ", then run this again: it will be verified and extracted."
    )
    if path.is_file() and archive.md5 and not check_integrity(str(path), archive.md5):
        # placed by hand, or a download that was killed: never overwrite or delete a file the user may have fetched
        raise DownloadError(
            f"{path} is there, but its MD5 is not {archive.md5}: it is incomplete or another file. Delete it to "
            f"download it again, or {by_hand}"
        )
    print(f"{archive.filename} ({archive.size}): downloading {url} to {dest}")
    try:
        download_url(url, str(dest), filename=archive.filename, md5=archive.md5)
    except (urllib.error.URLError, OSError, RecursionError, ValueError) as error:  # ValueError: not a URL
        path.unlink(missing_ok=True)  # a partial download is useless
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"Could not download {url} ({reason}). To get it, {by_hand}") from None
    except RuntimeError:  # torchvision's "File not found or corrupted.": the MD5 does not match
        path.unlink(missing_ok=True)
        raise DownloadError(f"{url} was downloaded but its MD5 is not {archive.md5}. To get it, {by_hand}") from None

    print(f"{archive.filename}: extracting into {dest}")
    try:
        extract_archive(str(path), str(dest))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise DownloadError(f"Could not extract {path} ({error}). Delete it; to get it again, {by_hand}") from None
    if not (dest / archive.provides).exists():
        raise DownloadError(f"{path} extracted, but {dest / archive.provides} is missing: is it the right archive?")
    if not keep_archive:
        path.unlink()


def download_voc(
    root: str | Path = "data", year: str = "2007", mirror: str | None = None, keep_archives: bool = False
) -> Path:
    """Pascal VOC ``year`` ("2007": trainval + test; "2012": trainval) into ``root/VOCdevkit/VOC{year}``."""
    names = {
        "2007": ["VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"],
        "2012": ["VOCtrainval_11-May-2012.tar"],
    }
    if str(year) not in names:
        raise ValueError(f"year must be '2007' or '2012', got {year!r}")
    root = Path(root).expanduser()
    for name in names[str(year)]:
        _fetch(ARCHIVES[name], root, mirror, keep_archives)
    return root / "VOCdevkit" / f"VOC{year}"


def download_coco(
    root: str | Path = "data",
    splits: Sequence[str] = ("train2017", "val2017"),
    mirror: str | None = None,
    keep_archives: bool = False,
) -> Path:
    """COCO 2017 images of ``splits`` and the train/val annotations into ``root/coco``."""
    unknown = set(splits) - {"train2017", "val2017"}
    if unknown:
        raise ValueError(f"splits must be among 'train2017', 'val2017', got {sorted(unknown)}")
    dest = Path(root).expanduser() / "coco"
    for name in ["annotations_trainval2017.zip", *(f"{split}.zip" for split in splits)]:
        _fetch(ARCHIVES[name], dest, mirror, keep_archives)
    return dest


def download_dataset(
    name: str, root: str | Path = "data", mirror: str | None = None, keep_archives: bool = False
) -> Path:
    """Download dataset ``name`` (one of :data:`DATASETS`) under ``root``; returns the dataset directory."""
    if name == "voc2007":
        return download_voc(root, "2007", mirror, keep_archives)
    if name == "voc2012":
        return download_voc(root, "2012", mirror, keep_archives)
    if name == "coco2017":
        return download_coco(root, mirror=mirror, keep_archives=keep_archives)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
