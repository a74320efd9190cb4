"""COCO-style evaluation: AP, AP50, AP75, AP of small / medium / large objects and AP per class (pycocotools).

The metric of the paper's results (Sec. 5, Tables 1-2): precision averaged over recall, then over the IoU
thresholds 0.50:0.05:0.95 (AP), at IoU 0.5 alone (AP50, the PASCAL VOC metric) and 0.75 (AP75), and over objects
of area < 32^2 px (APs), 32^2..96^2 (APm) and > 96^2 (APl); recall at 1, 10 and 100 detections per image (AR1,
AR10, AR100). pycocotools' `COCOeval` computes all of it; this module feeds it:

    ground truth  a COCO-format dataset's own COCO index (its official annotations, crowd boxes included), or any
                  other dataset (VOC) converted on the fly into an in-memory COCO index, where boxes flagged
                  `ignore` (VOC "difficult") become `iscrowd`: a detection on them is neither rewarded nor punished
    detections    `model.detect`'s {"boxes" xyxy, "scores", "labels"} per image, as COCO results (xywh, category id)

Where the errors are: `class_agnostic` takes the classes away (every box one class "object", detections merged over
classes by NMS). Its AP measures how well the detector finds and places objects; the gap down to the ordinary AP
is what telling the classes apart still costs.

Datasets are opened by `retina.data.open_dataset`, checkpoints read by `retina.checkpoint`.
The command line:

    python -m retina evaluate --checkpoint runs/cpu/last.pt [--data data/shapes --split val] [--out metrics.json]
                              [--class-agnostic]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import nms
from tqdm import tqdm

from retina.checkpoint import CheckpointError, load_checkpoint, load_model
from retina.cli import device, int_at_least, output_file
from retina.data import DatasetError, open_dataset
from retina.data.layout import FORMATS
from retina.data.loader import IntactErrorsLoader
from retina.model import RetinaNet
from retina.postprocess import TTA_VIEWS
from retina.viz import plot_pr_curves

# The order of COCOeval.stats.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# ----------------------------------------------------------------------------------------- ground truth, results


def coco_from_targets(targets: list[dict], image_sizes: list[tuple[int, int]], classes: list[str]) -> COCO:
    """An in-memory COCO ground-truth index from targets in our sample format (`boxes` xyxy, `labels`, `ignore`,
    `image_id`) and each image's (height, width). Category id = label + 1; ignored boxes become iscrowd."""
    images, annotations = [], []
    for target, (height, width) in zip(targets, image_sizes, strict=True):
        images.append({"id": int(target["image_id"]), "width": int(width), "height": int(height)})
        ignore = target.get("ignore", torch.zeros(len(target["boxes"]), dtype=torch.bool))
        for box, label, crowd in zip(target["boxes"].tolist(), target["labels"].tolist(), ignore.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched": ids start at 1
                    "image_id": int(target["image_id"]),
                    "category_id": int(label) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": label + 1, "name": name} for label, name in enumerate(classes)]
    return _coco_index({"images": images, "annotations": annotations, "categories": categories})


def dataset_ground_truth(dataset: Dataset) -> tuple[COCO, list[int]]:
    """The COCO ground truth of a dataset and the COCO category id of each label (`cat_ids[label]`).

    A COCO-format dataset (`.coco`, `.cat_ids`) is evaluated against its own annotation file, as the official
    evaluation does; any other is converted with `coco_from_targets`.
    """
    if isinstance(getattr(dataset, "coco", None), COCO) and hasattr(dataset, "cat_ids"):
        return dataset.coco, list(dataset.cat_ids)
    sizes = [dataset.image_size(i) for i in range(len(dataset))]
    return coco_from_targets(dataset.targets(), sizes, dataset.classes), list(range(1, len(dataset.classes) + 1))


def coco_results(
    ground_truth: COCO, image_ids: list[int], detections: list[dict[str, Tensor]], cat_ids: list[int]
) -> COCO:
    """Detections (one dict per image id, boxes xyxy) as a COCO results index next to `ground_truth`.

    Built directly rather than with `COCO.loadRes`, which cannot take an empty list (a model that detects nothing).
    """
    annotations = []
    for image_id, det in zip(image_ids, detections, strict=True):
        boxes = det["boxes"].detach().cpu().double()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()  # [K, 4]
        for box, score, label in zip(xywh, det["scores"].tolist(), det["labels"].tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": int(image_id),
                    "category_id": cat_ids[int(label)],
                    "bbox": box,
                    "score": float(score),
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    dataset = {k: ground_truth.dataset[k] for k in ("images", "categories")}
    return _coco_index({**dataset, "annotations": annotations})


def _coco_index(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


# ------------------------------------------------------------------------------------------------------ metrics


def coco_evaluate(
    ground_truth: COCO,
    image_ids: list[int],
    detections: list[dict[str, Tensor]],
    cat_ids: list[int],
    classes: list[str],
) -> tuple[dict, COCOeval]:
    """COCO mAP of `detections` (one dict per image of `image_ids`) against `ground_truth`.

    Returns the metrics {"AP", "AP50", ..., "AR100", ..., "per_class_AP": {name: AP or None}} (None: a class
    without ground truth in these images) and the evaluated `COCOeval`, whose `eval["precision"]`
    `[T=10 IoUs, R=101 recalls, K classes, 4 areas, 3 maxDets]` gives the precision-recall curves.
    """
    evaluator = COCOeval(ground_truth, coco_results(ground_truth, image_ids, detections, cat_ids), "bbox")
    # COCOeval orders classes by sorted category id, and so do the labels (CocoDetection sorts the ids; converted
    # datasets use label + 1): class index k of eval["precision"] is label k.
    if list(evaluator.params.catIds) != list(cat_ids):
        raise ValueError(
            f"category ids {cat_ids} of the labels differ from the ground truth's {evaluator.params.catIds}"
        )
    evaluator.params.imgIds = sorted(int(i) for i in image_ids)  # only the images evaluated
    evaluator.params.maxDets = [1, 10, 100]
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints as it goes
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats, strict=True)}
    metrics["per_class_AP"] = per_class_ap(evaluator, classes)
    return metrics, evaluator


def class_agnostic(
    ground_truth: COCO, detections: list[dict[str, Tensor]], nms_thresh: float
) -> tuple[COCO, list[dict[str, Tensor]]]:
    """The same evaluation without classes: the ground truth with every box in one category "object" (id 1), and
    the detections of each image merged over classes by NMS at `nms_thresh` (a box found as two classes is one
    detection), all labelled 0. Evaluate them with `coco_evaluate(gt, image_ids, merged, [1], ["object"])`."""
    gt = ground_truth.dataset
    annotations = [{**annotation, "category_id": 1} for annotation in gt["annotations"]]
    merged_gt = _coco_index(
        {"images": gt["images"], "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    )
    merged = []
    for det in detections:
        keep = nms(det["boxes"].float(), det["scores"].float(), nms_thresh)
        merged.append({"boxes": det["boxes"][keep], "scores": det["scores"][keep], "labels": torch.zeros_like(keep)})
    return merged_gt, merged


def per_class_ap(evaluator: COCOeval, classes: list[str]) -> dict[str, float | None]:
    """AP (IoU 0.50:0.95, all areas, 100 detections) of each class; None for a class without ground truth."""
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]; -1 where a class has no ground truth
    result = {}
    for label, name in enumerate(classes):
        p = precision[:, :, label, 0, -1]  # [T, R]
        result[name] = float(p[p > -1].mean()) if (p > -1).any() else None
    return result


@torch.no_grad()
def predict(
    model: RetinaNet, dataset: Dataset, batch_size: int = 8, num_workers: int = 0, show_progress: bool = False
) -> tuple[list[int], list[dict[str, Tensor]]]:
    """Run `model.detect` over a dataset without transforms (boxes come back in the original image pixels).
    Returns the image ids and, per image, {"boxes" [K, 4] xyxy, "scores" [K], "labels" [K]} on the CPU."""
    loader = IntactErrorsLoader(dataset, collate_fn=list, batch_size=batch_size, num_workers=num_workers)
    image_ids, detections = [], []
    for samples in tqdm(loader, desc="detect", unit="batch", disable=not show_progress, leave=False):
        images = [image for image, _ in samples]
        for (_, target), det in zip(samples, model.detect(images), strict=True):
            image_ids.append(int(target["image_id"]))
            detections.append({key: value.cpu() for key, value in det.items()})
    return image_ids, detections


def evaluate_model(
    model: RetinaNet,
    dataset: Dataset,
    classes: list[str] | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    show_progress: bool = False,
    with_class_agnostic: bool = False,
) -> tuple[dict, COCOeval]:
    """COCO mAP of `model` on `dataset` (built without transforms); see `coco_evaluate` for what is returned.

    `classes` are the model's class names; they must equal the dataset's (a label means the same class).
    `with_class_agnostic` adds `metrics["class_agnostic"]`: the metrics of the same detections without classes.
    """
    classes = list(dataset.classes) if classes is None else list(classes)
    if classes != list(dataset.classes):
        raise CheckpointError(
            f"the model knows {len(classes)} classes {classes}, but the dataset has {len(dataset.classes)} "
            f"{list(dataset.classes)}: evaluate on the data the model was trained for"
        )
    start = time.perf_counter()
    image_ids, detections = predict(model, dataset, batch_size, num_workers, show_progress)
    seconds = time.perf_counter() - start
    ground_truth, cat_ids = dataset_ground_truth(dataset)
    metrics, evaluator = coco_evaluate(ground_truth, image_ids, detections, cat_ids, classes)
    metrics["num_images"] = len(image_ids)
    metrics["images_per_second"] = len(image_ids) / max(seconds, 1e-9)
    if with_class_agnostic:
        merged_gt, merged = class_agnostic(ground_truth, detections, model.config.nms_thresh)
        agnostic = coco_evaluate(merged_gt, image_ids, merged, [1], ["object"])[0]
        metrics["class_agnostic"] = {name: agnostic[name] for name in METRIC_NAMES}
    return metrics, evaluator


def format_metrics(metrics: dict) -> str:
    """A short human-readable table of the metrics."""
    head = "  ".join(f"{name} {metrics[name]:.3f}" for name in METRIC_NAMES[:6])
    recall = "  ".join(f"{name} {metrics[name]:.3f}" for name in METRIC_NAMES[6:9])
    width = max((len(name) for name in metrics["per_class_AP"]), default=0)
    rows = [
        f"  {name:<{width}}  {'n/a' if ap is None else f'{ap:.3f}'}" for name, ap in metrics["per_class_AP"].items()
    ]
    return "\n".join([head, recall, "AP per class:", *rows])


# ---------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """`python -m retina evaluate`: COCO mAP of a checkpoint on a dataset split; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m retina evaluate", description="COCO mAP (pycocotools) of a checkpoint on a dataset split."
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `python -m retina train`")
    parser.add_argument("--data", default=None, help="dataset root (default: the checkpoint's training data)")
    parser.add_argument("--split", default=None, help="split / image set (default: the checkpoint's val split)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="dataset layout")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8)
    parser.add_argument("--workers", type=int_at_least(0), default=1, help="DataLoader processes decoding images")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", type=output_file(), default=None, help="write the metrics to this JSON file")
    parser.add_argument(
        "--pr-curve",
        type=output_file((".png", ".pdf", ".svg")),
        default=None,
        help="plot the precision-recall curves to this PNG (or PDF, SVG)",
    )
    parser.add_argument(
        "--class-agnostic", action="store_true", help="also evaluate without classes: how well objects are found"
    )
    parser.add_argument("--tta", choices=tuple(TTA_VIEWS), help="test-time augmentation (default: the checkpoint's)")
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    trained_on = checkpoint.get("train_config", {})
    data = args.data or trained_on.get("data")
    split = args.split or trained_on.get("val_split") or "val"
    fmt = args.format or trained_on.get("data_format", "auto")
    if data is None:
        raise CheckpointError(f"{args.checkpoint} does not say which data it was trained on: pass --data")
    dataset = open_dataset(data, split, fmt)
    if len(dataset) == 0:  # COCOeval would report -1 for every metric
        raise DatasetError(f"split {split!r} of {data} has no images to evaluate on")
    model, classes = load_model(checkpoint, args.device, args.tta)
    metrics, evaluator = evaluate_model(
        model,
        dataset,
        classes,
        args.batch_size,
        args.workers,
        show_progress=True,
        with_class_agnostic=args.class_agnostic,
    )
    views = "" if model.config.tta == "none" else f", test-time augmentation {model.config.tta}"
    print(
        f"{args.checkpoint} on {data} ({split}, {len(dataset)} images{views}, "
        f"{metrics['images_per_second']:.1f} img/s)"
    )
    print(format_metrics(metrics))
    if args.class_agnostic:
        agnostic = metrics["class_agnostic"]
        print(
            "without classes: " + "  ".join(f"{name} {agnostic[name]:.3f}" for name in ("AP", "AP50", "AP75", "AR100"))
        )
    report = {"checkpoint": str(args.checkpoint), "data": str(data), "split": split, "tta": model.config.tta}
    report |= _rounded(metrics)
    for key in ("progress", "train_config"):  # how the model was trained: steps, seconds, the recipe
        if key in checkpoint:
            report[key] = checkpoint[key]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.pr_curve:
        plot_pr_curves(evaluator, classes, args.pr_curve)
        print(f"wrote {args.pr_curve}")
    return 0


def _rounded(value):
    """Round floats for a readable JSON file (4 decimals is far below the run-to-run noise of AP)."""
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
