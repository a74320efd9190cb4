"""COCO evaluation: equal to torchmetrics' MeanAveragePrecision, the same through the COCO and the VOC path, ignored
boxes neither rewarded nor punished, and the `evaluate` command with its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pycocotools.cocoeval import Params
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import nms

from retina.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from retina.config import RetinaConfig
from retina.data import VOCDetection, generate_shapes, shapes_dataset
from retina.evaluate import (
    class_agnostic,
    coco_evaluate,
    coco_from_targets,
    dataset_ground_truth,
    evaluate_model,
    main,
)
from retina.model import RetinaNet

CLASSES = ["a", "b", "c", "d"]
COCO_PARAMS = Params(iouType="bbox")


def random_scene(gen: torch.Generator, make_boxes, num_images: int = 12) -> tuple[list[dict], list[dict]]:
    """Ground truth (0-6 boxes of 4 classes per image, ~10 % crowd, image 2 empty) and detections around it: jittered
    copies of the true boxes (80 % of them, 10 % with a wrong class) with random scores, plus random false
    positives; image 4 has no detection at all."""
    targets, detections = [], []
    for image_id in range(1, num_images + 1):
        n = 0 if image_id == 2 else int(torch.randint(1, 7, (1,), generator=gen))
        boxes = make_boxes(n, (200, 300), min_size=8, max_size=150)
        labels = torch.randint(0, len(CLASSES), (n,), generator=gen)
        ignore = torch.rand(n, generator=gen) < 0.1
        targets.append({"boxes": boxes, "labels": labels, "ignore": ignore, "image_id": image_id})

        found = torch.rand(n, generator=gen) < 0.8
        size = (boxes[found, 2:] - boxes[found, :2]).repeat(1, 2)
        jittered = boxes[found] + (torch.rand(len(size), 4, generator=gen) - 0.5) * 0.3 * size
        extra = make_boxes(int(torch.randint(0, 4, (1,), generator=gen)), (200, 300))
        det_boxes = torch.cat([jittered, extra])
        random_labels = torch.randint(0, len(CLASSES), (len(det_boxes),), generator=gen)
        det_labels = torch.cat([labels[found], random_labels[len(jittered) :]])
        det_labels = torch.where(torch.rand(len(det_boxes), generator=gen) < 0.1, random_labels, det_labels)
        scores = torch.rand(len(det_boxes), generator=gen)
        detections.append({"boxes": det_boxes, "scores": scores, "labels": det_labels})
    detections[3] = {key: value[:0] for key, value in detections[3].items()}
    return targets, detections


def test_equals_torchmetrics(gen, make_boxes):
    targets, detections = random_scene(gen, make_boxes)
    assert any(len(t["boxes"]) == 0 for t in targets) and any(t["ignore"].any() for t in targets)
    sizes = [(200, 300)] * len(targets)
    ours, _ = coco_evaluate(
        coco_from_targets(targets, sizes, CLASSES),
        [t["image_id"] for t in targets],
        detections,
        cat_ids=[1, 2, 3, 4],
        classes=CLASSES,
    )

    # COCOeval's own float64 thresholds: torchmetrics' defaults come from a float32 linspace (0.6 -> 0.60000002),
    # which moves a recall of exactly 3/5 to the other side of the 0.6 recall threshold.
    thresholds = {"iou_thresholds": COCO_PARAMS.iouThrs.tolist(), "rec_thresholds": COCO_PARAMS.recThrs.tolist()}
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=True, **thresholds)
    metric.update(
        detections,
        [{"boxes": t["boxes"], "labels": t["labels"], "iscrowd": t["ignore"].long()} for t in targets],
    )
    theirs = metric.compute()
    names = {"AP": "map", "AP50": "map_50", "AP75": "map_75", "APs": "map_small", "APm": "map_medium"}
    names |= {"APl": "map_large", "AR1": "mar_1", "AR10": "mar_10", "AR100": "mar_100"}
    for ours_name, their_name in names.items():
        assert ours[ours_name] == pytest.approx(theirs[their_name].item(), abs=1e-6), ours_name
    for label, ap in zip(theirs["classes"].tolist(), theirs["map_per_class"].tolist(), strict=True):
        assert ours["per_class_AP"][CLASSES[label]] == pytest.approx(ap, abs=1e-6), CLASSES[label]
    assert 0.1 < ours["AP"] < 0.9  # a real mix of hits and misses, not a degenerate case


def test_class_agnostic_equals_torchmetrics_micro_average(gen, make_boxes):
    targets, detections = random_scene(gen, make_boxes)
    # each detection also found once more, shifted by a pixel, as the next class with a lower score: duplicates
    # that only a merge over the classes removes
    detections = [
        {
            "boxes": torch.cat([d["boxes"], d["boxes"] + 1]),
            "scores": torch.cat([d["scores"], d["scores"] * 0.9]),
            "labels": torch.cat([d["labels"], (d["labels"] + 1) % len(CLASSES)]),
        }
        for d in detections
    ]
    gt = coco_from_targets(targets, [(200, 300)] * len(targets), CLASSES)
    image_ids = [t["image_id"] for t in targets]
    merged_gt, merged = class_agnostic(gt, detections, nms_thresh=0.5)
    ours = coco_evaluate(merged_gt, image_ids, merged, [1], ["object"])[0]

    # the reference: torchvision's NMS over all classes, then torchmetrics with every class pooled into one
    kept = [nms(d["boxes"], d["scores"], 0.5) for d in detections]
    assert sum(map(len, kept)) < sum(len(d["boxes"]) for d in detections)  # the merge removed duplicates
    thresholds = {"iou_thresholds": COCO_PARAMS.iouThrs.tolist(), "rec_thresholds": COCO_PARAMS.recThrs.tolist()}
    metric = MeanAveragePrecision(iou_type="bbox", average="micro", **thresholds)
    metric.update(
        [{key: d[key][k] for key in ("boxes", "scores", "labels")} for d, k in zip(detections, kept, strict=True)],
        [{"boxes": t["boxes"], "labels": t["labels"], "iscrowd": t["ignore"].long()} for t in targets],
    )
    theirs = metric.compute()
    for ours_name, their_name in {"AP": "map", "AP50": "map_50", "AP75": "map_75", "AR100": "mar_100"}.items():
        assert ours[ours_name] == pytest.approx(theirs[their_name].item(), abs=1e-6), ours_name
    with_classes = coco_evaluate(gt, image_ids, detections, [1, 2, 3, 4], CLASSES)[0]
    assert ours["AP"] > with_classes["AP"]  # the wrong-class detections now count


def test_class_agnostic_forgives_only_the_class():
    box = torch.tensor([[10.0, 10.0, 60.0, 60.0], [100.0, 100.0, 150.0, 150.0]])
    target = {"boxes": box, "labels": torch.tensor([0, 1]), "image_id": 1}
    gt = coco_from_targets([target], [(200, 200)], ["a", "b"])
    swapped = {"boxes": box, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 0])}
    assert coco_evaluate(gt, [1], [swapped], [1, 2], ["a", "b"])[0]["AP"] == pytest.approx(0.0)
    merged_gt, merged = class_agnostic(gt, [swapped], nms_thresh=0.5)
    assert coco_evaluate(merged_gt, [1], merged, [1], ["object"])[0]["AP"] == pytest.approx(1.0)
    misplaced = {**swapped, "boxes": box + 30}  # IoU 0.09 with their own boxes: no class makes these right
    merged_gt, merged = class_agnostic(gt, [misplaced], nms_thresh=0.5)
    assert coco_evaluate(merged_gt, [1], merged, [1], ["object"])[0]["AP"] == pytest.approx(0.0)


def test_ignored_boxes_neither_rewarded_nor_punished():
    box = torch.tensor([[10.0, 10.0, 60.0, 60.0], [100.0, 100.0, 150.0, 150.0]])
    target = {"boxes": box, "labels": torch.tensor([0, 0]), "ignore": torch.tensor([False, True]), "image_id": 1}
    gt = coco_from_targets([target], [(200, 200)], ["a"])
    hit = {"boxes": box[:1], "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    both = {"boxes": box, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}
    assert coco_evaluate(gt, [1], [hit], [1], ["a"])[0]["AP"] == pytest.approx(1.0)
    assert coco_evaluate(gt, [1], [both], [1], ["a"])[0]["AP"] == pytest.approx(1.0)  # not a false positive


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=6, image_size=64, workers=1)


def test_voc_layout_is_evaluated_like_coco(shapes):
    """The shapes set in both layouts: COCO through its own annotation file, VOC converted on the fly. Perfect
    detections score AP 1 on both, and a detector that misses half the objects scores the same on both."""
    coco = shapes_dataset(shapes, "val")
    voc = VOCDetection(shapes, "val", classes=coco.classes)
    assert not hasattr(voc, "coco")  # so it takes the conversion path
    half_ap = []
    for dataset in (coco, voc):
        targets = dataset.targets()
        ids = [t["image_id"] for t in targets]
        perfect = [{"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]} for t in targets]
        half = [{k: v[::2] for k, v in det.items()} for det in perfect]
        gt, cat_ids = dataset_ground_truth(dataset)
        assert coco_evaluate(gt, ids, perfect, cat_ids, dataset.classes)[0]["AP"] == pytest.approx(1.0)
        half_ap.append(coco_evaluate(gt, ids, half, cat_ids, dataset.classes)[0]["AP"])
    assert half_ap[0] == pytest.approx(half_ap[1]) and 0.2 < half_ap[0] < 0.8


def random_checkpoint(path: Path, classes: list[str], data: Path | None = None, **overrides) -> Path:
    """A checkpoint of an untrained tiny detector, in the format retina.train writes."""
    torch.manual_seed(0)
    config = RetinaConfig(
        backbone="resnet18", fpn_channels=16, head_convs=1, min_size=64, max_size=64, size_divisible=32
    ).replace(**overrides)
    model = RetinaNet(num_classes=len(classes), config=config)
    state = {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": classes}
    if data is not None:
        state["train_config"] = {"data": str(data), "val_split": "val", "data_format": "auto", "lr": 1.25e-5}
    save_checkpoint(path, state)
    return path


def test_evaluate_command(shapes, tmp_path):
    classes = shapes_dataset(shapes, "val").classes
    checkpoint = random_checkpoint(tmp_path / "model.pt", classes, data=shapes)
    out, png = tmp_path / "metrics.json", tmp_path / "pr.png"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--pr-curve", str(png), "--workers", "0"]
    assert main([*args, "--class-agnostic"]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics["class_agnostic"]) >= {"AP", "AP50", "AR100"}
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "per_class_AP"} <= set(metrics)
    assert set(metrics["per_class_AP"]) == set(classes) and metrics["num_images"] == 6
    assert metrics["train_config"]["lr"] == 1.25e-5  # the metrics are rounded, the recipe is copied as it is
    assert png.stat().st_size > 0
    assert metrics["tta"] == "none"


def test_evaluate_command_with_test_time_augmentation(shapes, tmp_path):
    classes = shapes_dataset(shapes, "val").classes
    checkpoint = random_checkpoint(tmp_path / "model.pt", classes, shapes, anchor_offset=0.5, size_divisible=128)
    for tta in ("none", "d4"):
        out = tmp_path / f"{tta}.json"
        assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--workers", "0", "--tta", tta]) == 0
        assert json.loads(out.read_text())["tta"] == tta
    # the same weights, other detections: the views are averaged
    image = shapes_dataset(shapes, "val")[0][0]
    plain, views = (load_model(checkpoint, tta=tta)[0] for tta in ("none", "d4"))
    assert views.config.tta == "d4" and plain.config.tta == "none"
    for model in (plain, views):  # an untrained detector scores every class near its prior, 0.01
        model.config = model.config.replace(score_thresh=0.0)
    assert not torch.equal(plain.detect([image])[0]["scores"], views.detect([image])[0]["scores"])


def test_evaluate_errors(shapes, tmp_path):
    wrong = random_checkpoint(tmp_path / "wrong.pt", ["x", "y"])
    model = RetinaNet(config=RetinaConfig.from_dict(load_checkpoint(wrong)["model_config"]))
    with pytest.raises(CheckpointError, match="knows 2 classes"):
        evaluate_model(model, shapes_dataset(shapes, "val"), ["x", "y"])
    # `main` raises what `python -m retina` prints as one line (tests/test_cli.py)
    with pytest.raises(CheckpointError, match="knows 2 classes"):
        main(["--checkpoint", str(wrong), "--data", str(shapes), "--workers", "0"])
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        main(["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(shapes)])
    # test-time augmentation needs cell-centred anchors; this checkpoint's sit at the cell corners
    with pytest.raises(CheckpointError, match="tta='flip' does not fit its detector"):
        main(["--checkpoint", str(wrong), "--data", str(shapes), "--tta", "flip"])
