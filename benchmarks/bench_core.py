"""Speed of the hot paths against torchvision, measured in the same run: `python benchmarks/bench_core.py`.

Each row times one step for a whole batch with retina (vectorised over the batch) and with torchvision's
RetinaNet pieces (a Python loop over images), and prints the ratio torchvision / retina (> 1: retina is
faster). Times are medians of several repeats; only the ratio means much on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.retinanet import retinanet_resnet50_fpn
from torchvision.ops import box_iou as tv_box_iou

from retina import RetinaConfig
from retina.anchors import anchors_per_level_counts, generate_anchors
from retina.losses import retina_loss
from retina.postprocess import postprocess_detections
from retina.targets import encode_targets, match_anchors, pad_targets


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_targets(batch: int, boxes_per_image: int, size: tuple[int, int], num_classes: int, g: torch.Generator):
    h, w = size
    targets = []
    for _ in range(batch):
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 8
        labels = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        targets.append({"boxes": torch.cat((xy, xy + wh), 1), "labels": labels})
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 640))
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    config = RetinaConfig(num_classes=args.classes)
    size = tuple(args.size)
    anchors = generate_anchors(config, size)
    counts = anchors_per_level_counts(config, size)
    targets = random_targets(args.batch, args.boxes, size, args.classes, g)
    reference = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.classes)
    matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)
    n = anchors.shape[0]
    print(f"batch {args.batch}, {size[0]}x{size[1]} px, {n} anchors, {args.boxes} boxes/image, {args.classes} classes")
    rows = []

    # 1. matching + target encoding (retina: in the collate_fn; torchvision: inside the model, per image)
    def ours_match():
        boxes, labels, valid, ignore = pad_targets(targets)
        matched = match_anchors(anchors, boxes, valid, ignore)
        return encode_targets(anchors, boxes, labels, matched)

    def theirs_match():
        return [matcher(tv_box_iou(t["boxes"], anchors)) for t in targets]

    rows.append(("matching", median_time(ours_match, args.repeats), median_time(theirs_match, args.repeats)))

    # 2. loss of a batch (retina: one batched call; torchvision: a loop over images inside the head)
    cls_logits = torch.randn(args.batch, n, args.classes, generator=g) - 4
    box_deltas = torch.randn(args.batch, n, 4, generator=g) * 0.1
    cls_targets, box_targets = ours_match()
    matched_idxs = theirs_match()
    head_outputs = {"cls_logits": cls_logits, "bbox_regression": box_deltas}
    loss_config = config.replace(box_loss="l1")

    def ours_loss():
        return retina_loss(cls_logits, box_deltas, cls_targets, box_targets, anchors, loss_config)

    def theirs_loss():
        return reference.head.compute_loss(targets, head_outputs, [anchors] * args.batch, matched_idxs)

    rows.append(("loss", median_time(ours_loss, args.repeats), median_time(theirs_loss, args.repeats)))

    # 3. post-processing (retina: batched top-k, decode and one NMS; torchvision: per image)
    image_sizes = torch.tensor([size] * args.batch)
    split = {"cls_logits": list(cls_logits.split(counts, 1)), "bbox_regression": list(box_deltas.split(counts, 1))}
    level_anchors = [list(anchors.split(counts))] * args.batch

    def ours_detect():
        return postprocess_detections(cls_logits, box_deltas, anchors, image_sizes, config, counts)

    def theirs_detect():
        return reference.postprocess_detections(split, level_anchors, [size] * args.batch)

    rows.append(("post-processing", median_time(ours_detect, args.repeats), median_time(theirs_detect, args.repeats)))

    print(f"{'step':<16} {'retina ms':>10} {'torchvision ms':>15} {'ratio':>7}")
    for name, ours, theirs in rows:
        print(f"{name:<16} {ours * 1e3:>10.1f} {theirs * 1e3:>15.1f} {theirs / ours:>6.2f}x")


if __name__ == "__main__":
    main()
