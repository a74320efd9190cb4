"""Pictures: boxes and detections drawn on images, the training loss curve, precision-recall curves; `detect`.

Plots are built on `matplotlib.figure.Figure` (not pyplot), so they work without a display and leave a notebook's
pyplot state alone; every function returns its Figure and, given a path, also writes a PNG.

    python -m retina detect --checkpoint runs/cpu/last.pt IMAGE_OR_DIR ... --out out/detections

writes one PNG per image, each box drawn in its class colour with "class score" on it, and `detections.json`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from PIL import Image, ImageDraw, ImageFont
from pycocotools.cocoeval import COCOeval
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from retina.checkpoint import load_model
from retina.cli import device, int_at_least, output_dir, probability
from retina.data import DatasetError, load_image
from retina.images import as_image_tensor
from retina.postprocess import TTA_VIEWS

# matplotlib's tab10: one colour per class, repeating after ten.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def draw_boxes(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None = None,
    classes: list[str] | None = None,
    scale: int = 1,
    width: int = 2,
) -> Tensor:
    """Draw boxes on an image: ground truth (no `scores`) or detections ("class 0.93" on each box).

    Each box is outlined in its class colour and carries its name on a tag of that colour, placed by `place_tags`
    so that no tag covers another (where the image leaves room) and none is cut off at the image's edge; the
    highest scores choose their places first.

    Args:
        image: `[3, H, W]`, float in [0, 1] or uint8. boxes: `[K, 4]` xyxy in its pixels. labels: `[K]`.
        scores: `[K]` or None. classes: `classes[label]` is the name written on the box (default: the label).
        scale: enlarge the image this many times first (nearest neighbour), so that labels stay legible on
            small images.
    Returns:
        uint8 `[3, H * scale, W * scale]`.
    """
    image = (as_image_tensor(image).clamp(0, 1) * 255).round().to(torch.uint8)
    if scale != 1:
        image = F.interpolate(image[None], scale_factor=scale, mode="nearest")[0]
    boxes = boxes.detach().cpu().float().reshape(-1, 4) * scale
    if len(boxes) == 0:
        return image
    labels = labels.detach().cpu().tolist()
    names = [classes[label] if classes else str(label) for label in labels]
    if scores is not None:
        names = [f"{name} {score:.2f}" for name, score in zip(names, scores.tolist(), strict=True)]
    colors = [PALETTE[label % len(PALETTE)] for label in labels]
    canvas = Image.fromarray(draw_bounding_boxes(image, boxes, colors=colors, width=width).permute(1, 2, 0).numpy())
    pen, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    order = list(range(len(names))) if scores is None else scores.detach().cpu().argsort(descending=True).tolist()
    inks = [pen.textbbox((0, 0), names[k], font=font) for k in order]  # (left, top, right, bottom) of the letters
    sizes = [(right - left + 2 * TAG_PADDING, bottom - top + 2 * TAG_PADDING) for left, top, right, bottom in inks]
    corners = place_tags(boxes[order], sizes, (canvas.height, canvas.width))
    for k, (x, y), (w, h), (left, top, _, _) in zip(order, corners, sizes, inks, strict=True):
        pen.rectangle((x, y, x + w - 1, y + h - 1), fill=colors[k])
        pen.text((x + TAG_PADDING - left, y + TAG_PADDING - top), names[k], fill=text_colour(colors[k]), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


TAG_PADDING = 2  # pixels between a tag's edge and its letters


def place_tags(boxes: Tensor, sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The top-left corner of each box's name tag, in the order given (the first chooses first).

    A tag of `sizes[k]` = (width, height) goes to the first of four places along the box's left edge: inside its
    top, above it, inside its bottom, below it; moved into the image where it would stick out (`image_size` =
    (H, W)). The first place that overlaps no tag placed before it wins; if all do, the first place.
    Args: boxes `[K, 4]` xyxy. Returns K (x, y) in pixels.
    """
    height, width = image_size
    placed: list[tuple[int, int, int, int]] = []
    for (x0, y0, _, y1), (w, h) in zip(boxes.round().int().tolist(), sizes, strict=True):
        places = [(x0, y0), (x0, y0 - h), (x0, y1 - h), (x0, y1)]
        # into the image; a tag wider than the image starts at its left edge, where the class name is
        places = [(max(min(x, width - w), 0), max(min(y, height - h), 0)) for x, y in places]
        x, y = next(((x, y) for x, y in places if not _overlaps((x, y, x + w, y + h), placed)), places[0])
        placed.append((x, y, x + w, y + h))
    return [(x, y) for x, y, _, _ in placed]


def _overlaps(tag: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    """Whether the rectangle `tag` (x0, y0, x1, y1; x1, y1 exclusive) shares a pixel with any of `others`."""
    x0, y0, x1, y1 = tag
    return any(x0 < right and left < x1 and y0 < bottom and top < y1 for left, top, right, bottom in others)


def text_colour(fill: str) -> str:
    """Black or white, whichever reads better on the colour `fill` ("#rrggbb"): by its luma (ITU-R BT.601)."""
    red, green, blue = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "white"


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a uint8 `[3, H, W]` image as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)
    return path


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """The training records (with "loss") and the evaluation records (with "eval") of a metrics.jsonl file."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if "loss" in r], [r for r in records if "eval" in r]


def plot_loss_curve(metrics_path: str | Path, out_path: str | Path | None = None) -> Figure:
    """The losses (total, focal classification, box regression) and the learning rate against the step, from the
    metrics.jsonl `retina.train` writes; the evaluations' AP and AP50, if any, on the right axis of the lr panel."""
    train, evals = read_metrics(metrics_path)
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, lr_ax = fig.subplots(1, 2)
    steps = [r["step"] for r in train]
    for key, label in (("loss", "total"), ("classification", "classification (focal)"), ("bbox_regression", "box")):
        loss_ax.plot(steps, [r[key] for r in train], label=label, linewidth=1.2)
    loss_ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    # a loss falls by a decade or two: ticks at 1, 2 and 5 of each decade, written 0.2 rather than 2 x 10^-1
    loss_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    loss_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    loss_ax.yaxis.set_minor_formatter(NullFormatter())
    loss_ax.grid(True, which="both", alpha=0.3)
    loss_ax.legend()
    lrs = [r["lr"] for r in train]
    lr_ax.plot(steps, lrs, color="gray", label="learning rate")
    lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate" + (" and validation AP" if evals else ""))
    lr_ax.grid(True, alpha=0.3)
    if evals:
        # headroom above both curves (AP <= 1, the lr below its peak) for the legend, so it covers no point
        lr_ax.set_ylim(0, 1.35 * max(lrs) if max(lrs) > 0 else None)
        ap_ax = lr_ax.twinx()
        eval_steps = [r["step"] for r in evals]
        ap_ax.plot(eval_steps, [r["eval"]["AP50"] for r in evals], "o-", color="tab:green", label="AP50")
        ap_ax.plot(eval_steps, [r["eval"]["AP"] for r in evals], "s-", color="tab:blue", label="AP")
        ap_ax.set(ylabel="validation AP", ylim=(0, 1.35), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
        lines = lr_ax.get_lines() + ap_ax.get_lines()
        ap_ax.legend(lines, [line.get_label() for line in lines], loc="upper right", ncols=3)
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_path, dpi=100)
    return fig


def plot_pr_curves(
    evaluator: COCOeval, classes: list[str], out_path: str | Path | None = None, ious: tuple[float, ...] = (0.5, 0.75)
) -> Figure:
    """Precision against recall of every class at each IoU threshold of `ious` (all areas, 100 detections), from an
    evaluated COCOeval (`retina.evaluate.coco_evaluate`); the legend gives each class's AP at that threshold."""
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]; -1 where a class has no ground truth
    recall = evaluator.params.recThrs  # [R]: 0, 0.01, ..., 1
    fig = Figure(figsize=(4.6 * len(ious), 3.8), layout="constrained")
    for ax, iou in zip(np.atleast_1d(fig.subplots(1, len(ious))), ious, strict=True):
        t = int(np.argmin(np.abs(evaluator.params.iouThrs - iou)))
        for label, name in enumerate(classes):
            p = precision[t, :, label, 0, -1]  # [R]
            if (p > -1).any():
                ax.plot(recall, p, color=PALETTE[label % len(PALETTE)], label=f"{name} ({p[p > -1].mean():.2f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"IoU {iou:.2f}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="lower left", title="class (AP)")
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_path, dpi=100)
    return fig


# ---------------------------------------------------------------------------------------------------------- CLI


def image_files(paths: list[str | Path]) -> list[Path]:
    """Image files named directly, plus the images inside named directories (sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def main(argv: list[str] | None = None) -> int:
    """`python -m retina detect`: draw a checkpoint's detections on images; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m retina detect",
        description="Detect objects in images with a trained checkpoint: one PNG per image and detections.json.",
    )
    parser.add_argument("images", nargs="+", help="image files or directories of images")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `python -m retina train`")
    parser.add_argument("--out", type=output_dir, required=True, help="output directory")
    parser.add_argument(
        "--score-thresh", type=probability, default=0.3, help="keep detections more confident than this (0..1)"
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=8)
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--tta", choices=tuple(TTA_VIEWS), help="test-time augmentation (default: the checkpoint's)")
    args = parser.parse_args(argv)
    files = image_files(args.images)
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(args.images)}")
    pngs = [args.out / f"{path.stem}.png" for path in files]
    inputs = {path.resolve(): path for path in files}
    drawn = {}
    for path, png in zip(files, pngs, strict=True):
        if png.resolve() in inputs:  # --out is the images' own directory
            parser.error(f"{png} would overwrite the input image {inputs[png.resolve()]}; choose another --out")
        if drawn.setdefault(png, path) != path:  # a.jpg and a.png, or two directories with the same names
            parser.error(f"{drawn[png]} and {path} would both be drawn to {png}; detect them in separate runs")
    model, classes = load_model(args.checkpoint, args.device, args.tta)
    # the detector's own score_thresh (0.05 by default) would hide the detections below it: --score-thresh rules
    model.config = model.config.replace(score_thresh=args.score_thresh)
    images = [load_image(path) for path in files]

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        for path, png, image, det in zip(files[start:], pngs[start:], chunk, model.detect(chunk), strict=False):
            boxes, scores, labels = det["boxes"].cpu(), det["scores"].cpu(), det["labels"].cpu()
            scale = max(1, math.ceil(512 / max(image.shape[-2:])))  # small images: enlarge so labels are legible
            save_png(draw_boxes(image, boxes, labels, scores, classes, scale=scale), png)
            results.append(
                {
                    "image": str(path),
                    "png": str(png),
                    "height": image.shape[-2],
                    "width": image.shape[-1],
                    "detections": [
                        {
                            "box": [round(v, 2) for v in box],
                            "score": round(score, 4),
                            "label": label,
                            "class": classes[label],
                        }
                        for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)
                    ],
                }
            )
    (args.out / "detections.json").write_text(json.dumps(results, indent=2) + "\n")
    count = sum(len(r["detections"]) for r in results)
    print(f"{count} detections (score > {args.score_thresh}) in {len(files)} images; wrote {args.out}")
    return 0
