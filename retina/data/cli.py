"""``python -m retina data ...``: generate the shapes set, download real datasets, print dataset statistics.

::

    python -m retina data shapes --out data/shapes [--train 2000 --val 500 --size 256 --seed 0 --workers N]
    python -m retina data shapes --out data/sample --train 4 --val 2     # the small sample committed in git
    python -m retina data download voc2007 [--root data] [--mirror URL] [--keep-archives]
    python -m retina data stats data/shapes [--split val]
    python -m retina data stats data/VOCdevkit/VOC2007 --split trainval
    python -m retina data stats data/coco --split val2017

Errors in the data or a failed download print one clear message and exit with status 1.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from retina.cli import int_at_least, output_dir

from .download import DATASETS, download_dataset
from .layout import FORMATS, open_dataset
from .shapes import generate_shapes, is_generated
from .stats import format_summary, summarize

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retina data", description="Datasets for retina.")
    commands = parser.add_subparsers(dest="command", required=True)

    shapes = commands.add_parser("shapes", help="generate the synthetic shapes dataset (COCO and VOC layouts)")
    shapes.add_argument("--out", type=output_dir, default=Path("data/shapes"), help="output directory")
    shapes.add_argument("--train", type=int_at_least(0), default=2000, help="number of training images")
    shapes.add_argument("--val", type=int_at_least(0), default=500, help="number of validation images")
    shapes.add_argument("--size", type=int_at_least(32), default=256, help="image side in pixels (32 or more)")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--workers", type=int_at_least(0), default=None, help="processes (default: every CPU)")
    shapes.add_argument("--force", action="store_true", help="regenerate even if an identical set exists")

    fetch = commands.add_parser("download", help="download and extract VOC or COCO")
    fetch.add_argument("dataset", choices=DATASETS)
    fetch.add_argument("--root", type=output_dir, default=Path("data"), help="where to extract (default: data)")
    fetch.add_argument("--mirror", default=None, help="base URL to fetch the archives from instead")
    fetch.add_argument("--keep-archives", action="store_true", help="keep the archives after extraction")

    stats = commands.add_parser("stats", help="print box statistics of a COCO- or VOC-layout dataset")
    stats.add_argument("root", type=Path, help="shapes, COCO (holding annotations/) or VOC<year> directory")
    stats.add_argument("--split", default="train", help="split / image set (e.g. train, val2017, trainval)")
    stats.add_argument("--format", choices=FORMATS, default="auto")
    stats.add_argument("--include-ignored", action="store_true", help="count crowd / difficult boxes too")
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "shapes":
        params = dict(num_train=args.train, num_val=args.val, image_size=args.size, seed=args.seed)
        if not args.force and is_generated(args.out, **params):
            print(f"{args.out} already holds this shapes dataset ({args.train} train + {args.val} val); use --force")
            return
        start = time.perf_counter()
        generate_shapes(args.out, workers=args.workers, force=args.force, progress=True, **params)
        print(f"wrote {args.train} train + {args.val} val images to {args.out} in {time.perf_counter() - start:.1f} s")
    elif args.command == "download":
        path = download_dataset(args.dataset, args.root, mirror=args.mirror, keep_archives=args.keep_archives)
        print(f"{args.dataset} is ready in {path}")
    elif args.command == "stats":
        dataset = open_dataset(args.root, args.split, args.format)
        print(format_summary(summarize(dataset, include_ignored=args.include_ignored)))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m retina data``: 0 when done. Bad data or a failed download raises; the dispatcher,
    ``retina.__main__``, turns it into one ``error:`` line."""
    _run(_parser().parse_args(argv))
    return 0
