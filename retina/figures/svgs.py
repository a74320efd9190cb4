"""The README's figures (`svgs/`), drawn by the notebooks' figure builders on a shapes scene made on the spot.

`python -m retina.figures svgs` (or `make svgs`) writes them, byte for byte the same on every run: fixed seeds, a
fixed `svg.hashsalt` and no date in the metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from matplotlib import pyplot as plt
from torch import Tensor

from retina.boxes import box_iou
from retina.config import RetinaConfig
from retina.figures.anchors import anchors_figure, matching_figure
from retina.figures.fpn import fpn_diagram
from retina.figures.losses import EQUATIONS, equation_figure, focal_loss_figure
from retina.figures.nms import nms_figure


def _readme_scene(seed: int = 3, size: int = 320) -> tuple[np.ndarray, Tensor]:
    """A shapes image and its boxes, drawn without any dataset on disk. The image is smoothed a little: its pixel
    noise would otherwise take most of each svg's bytes."""
    from PIL import Image, ImageFilter

    from retina.data.shapes_render import render_image  # only the svgs need it: keep `import retina.figures` light

    pixels, objects = render_image(size, np.random.default_rng(seed))
    smooth = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5)))
    boxes = torch.tensor([obj["box"] for obj in objects], dtype=torch.float32).reshape(-1, 4)
    return smooth, boxes


def _noisy_detections(boxes: Tensor, per_box: int = 6, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Candidates such as an untuned detector produces: jittered copies of each box with scores that fall
    with the jitter."""
    g = torch.Generator().manual_seed(seed)
    size = (boxes[:, 2:] - boxes[:, :2]).repeat_interleave(per_box, 0)  # [G * per_box, 2]
    jitter = 0.15 * torch.randn(len(size), 4, generator=g) * size.repeat(1, 2)
    candidates = boxes.repeat_interleave(per_box, 0) + jitter
    own = boxes.repeat_interleave(per_box, 0)
    iou = box_iou(candidates[:, None], own[:, None])[:, 0, 0]  # each candidate against its own box
    scores = (iou * (0.7 + 0.3 * torch.rand(len(candidates), generator=g))).clamp(0, 1)
    return candidates, scores


def write_svgs(out_dir: str | Path) -> list[Path]:
    """Write every README figure to `out_dir` as SVG, deterministically; returns the paths written."""
    from retina.postprocess import nms  # the teaching NMS: the figure shows what 06_nms.ipynb teaches

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, boxes = _readme_scene()
    candidates, scores = _noisy_detections(boxes)
    config = RetinaConfig()
    figures = {
        "anchors": anchors_figure(config, image, level=1),
        "matching": matching_figure(image, boxes, config.replace(anchor_sizes=(16, 32, 64, 128, 256))),
        "focal_loss": focal_loss_figure(),
        "fpn": fpn_diagram(),
        "nms": nms_figure(image, candidates, scores, nms(candidates, scores, 0.5)),
        **{f"eq_{name}": equation_figure(tex) for name, tex in EQUATIONS.items()},
    }
    written = []
    with plt.rc_context({"svg.hashsalt": "retina", "svg.fonttype": "path"}):
        for name, fig in figures.items():
            path = out / f"{name}.svg"
            fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.05)
            plt.close(fig)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retina.figures", description="Write the README's figures.")
    parser.add_argument("out_dir", nargs="?", default="svgs", help="directory for the .svg files (default: svgs)")
    args = parser.parse_args(argv)
    for path in write_svgs(args.out_dir):
        print(path)
    return 0
