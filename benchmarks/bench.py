"""retina against torchvision's RetinaNet, side by side in one run: `python benchmarks/bench.py [--smoke]`.

Both sides get the same architecture (torchvision's v1 layout: ResNet-FPN, P6 from P5), the same random weights
(copied into ours with `from_torchvision`), the same anchors, boxes, thresholds and inputs. Before timing a case,
the benchmark asserts that both sides compute the same thing, so that a speed-up can never come from doing less.
The rows, for each device and input size:

    target encoding        retina: the DetectionCollate collate_fn (pad the images, match and encode the batch at
                           once). torchvision: pad the images (its transform's batch_images), then per image
                           box_iou, Matcher, and the labels and BoxCoder deltas of the foreground anchors, as
                           RetinaNet.compute_loss does them
    loss                   from given head outputs, forward only, the matching done beforehand on both sides:
                           retina_loss against RetinaNetHead.compute_loss (its one-hot targets and box encoding)
    loss + backward        the same, with the backward pass to the head outputs, as in training
    post-processing        decode, top-k, NMS for the batch: postprocess_detections against
                           RetinaNet.postprocess_detections, with few scores above the threshold (as a trained
                           model gives: 2% of them) and with many (49%, as random outputs can give)
    training step          forward, loss, backward on the same batch. retina matches in the collate_fn, that is in
                           the DataLoader's worker processes, so its in-process step is model.loss + backward;
                           torchvision matches inside its forward
    training step + collate  retina's step with DetectionCollate added, for the total work of both sides
    network forward + backward  the limit of a training step: the network alone (normalisation, backbone, FPN,
                           subnets) and its backward pass from the sum of its outputs, with no matching, loss or
                           post-processing. The training step rows can come close to it, not below it
    inference              images to detections: model.detect against torchvision's model in eval mode

Every case runs with each of --threads CPU threads (1: as in a DataLoader worker, which torch gives one thread; 2:
the cores of a small machine or of Colab). After one warm-up of each side, the --repeats runs alternate between the
two sides (retina first in even runs, torchvision first in odd ones), so that a change in the machine's load hits
both alike. The table gives each side's median time with the range of its runs, and the speed-up, torchvision's
time / retina's (> 1: retina is faster), as the median of the per-run ratios with their range. Peak memory comes
from one more run of each side (`peak_memory_mib`).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retina import DetectionCollate, RetinaConfig, RetinaNet
from retina.anchors import anchors_per_level_counts, generate_anchors
from retina.losses import retina_loss
from retina.postprocess import postprocess_detections
from retina.pretrained import from_torchvision, torchvision_config

# torchvision's v1 RetinaNet (P6 from P5, L1 box loss, batches padded with the mean colour), padded to our multiple
# of 128 on both sides: its default, 32, would give it other anchors and fewer pixels (800 x 1344, not 896 x 1408).
BENCH_CONFIG = torchvision_config("v1", num_classes=80, size_divisible=128)
SMOKE_CONFIG = BENCH_CONFIG.replace(num_classes=5, backbone="resnet18")

# The class logits that post-processing gets: (mean, std) of a normal distribution, giving few scores above the
# 0.05 threshold (2%), as a trained model does, or many (49%), as an untrained one can.
SCORE_LOGITS = {"few scores": (-5.0, 1.0), "many scores": (-3.0, 1.5)}

STEPS = (
    "target encoding",
    "loss",
    "loss + backward",
    *(f"post-processing, {scores}" for scores in SCORE_LOGITS),
    "training step",
    "training step + collate",
    "network forward + backward",
    "inference",
)


@dataclass
class Row:
    device: str
    size: str  # "H×W (padded H'×W'), batch B"
    step: str
    threads: int  # torch.get_num_threads() while it ran
    ours_runs: list[float]  # seconds, one per repeat, interleaved with torchvision's
    theirs_runs: list[float]
    ours_mib: float  # peak memory
    theirs_mib: float

    @property
    def ours(self) -> float:
        return statistics.median(self.ours_runs)

    @property
    def theirs(self) -> float:
        return statistics.median(self.theirs_runs)

    @property
    def ratios(self) -> list[float]:
        """torchvision's time / retina's, run by run: the two sides of a run shared the machine's load."""
        return [t / o for o, t in zip(self.ours_runs, self.theirs_runs, strict=True)]

    @property
    def speedup(self) -> float:
        return statistics.median(self.ratios)


# ---------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_seconds(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """`repeats` timings of each side, alternating which side goes first, after one warm-up of each (lazy
    initialisation, allocator caches, cuDNN/oneDNN kernel choice)."""
    seconds(ours, device)
    seconds(theirs, device)
    ours_runs, theirs_runs = [], []
    for run in range(repeats):
        if run % 2 == 0:
            ours_runs.append(seconds(ours, device))
            theirs_runs.append(seconds(theirs, device))
        else:
            theirs_runs.append(seconds(theirs, device))
            ours_runs.append(seconds(ours, device))
    return ours_runs, theirs_runs


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """The peak of the tensor memory that `fn` allocates on `device`, above what was allocated before it ran.

    CUDA keeps a peak counter. On the CPU torch has none: tracemalloc does not see torch's allocations, and the
    process's peak resident size (ru_maxrss) mixes the case with everything the process did before and with
    malloc's own caching. So the profiler records every allocation and free of torch's CPU allocator, and the
    peak is the highest point of their running sum. Memory that a library allocates without torch's allocator
    (some oneDNN scratch space, Python objects) is not counted, on either side.
    """
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda e: e.start_ns())
    return max(itertools.accumulate(e.nbytes() for e in events), default=0) / 2**20


def measure(step: str, ours: Callable, theirs: Callable, device: torch.device, size: str, args) -> list[Row]:
    """One row per thread count of `args.threads`; printed as soon as it is measured (a full run takes a while)."""
    rows = []
    before = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            ours_runs, theirs_runs = interleaved_seconds(ours, theirs, args.repeats, device)
            mib = peak_memory_mib(ours, device), peak_memory_mib(theirs, device)
            rows.append(Row(device.type, size, step, threads, ours_runs, theirs_runs, *mib))
            print(markdown_row(rows[-1]), flush=True)
    finally:
        torch.set_num_threads(before)
    return rows


# ---------------------------------------------------------------- inputs and models


def random_samples(
    count: int, size: tuple[int, int], boxes_per_image: int, num_classes: int, g: torch.Generator
) -> list[tuple[Tensor, dict]]:
    """`count` (image [3, H, W] in [0, 1], {"boxes" [n, 4] xyxy, "labels" [n]}) pairs, the dataset's format."""
    height, width = size
    samples = []
    for _ in range(count):
        image = torch.rand(3, height, width, generator=g)
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
        wh = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3]) + 8
        labels = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        samples.append((image, {"boxes": torch.cat((xy, xy + wh), 1), "labels": labels}))
    return samples


def padded(size: tuple[int, int], config: RetinaConfig) -> tuple[int, int]:
    """The size a batch of `size` images is padded to."""
    return tuple(-(-s // config.size_divisible) * config.size_divisible for s in size)


def torchvision_model(config: RetinaConfig, size: tuple[int, int]) -> TorchvisionRetinaNet:
    """torchvision's RetinaNet, built as `retinanet_resnet50_fpn` builds it for fine-tuning (frozen BatchNorm, the
    trainable stages of `config`), with our backbone, thresholds and padding, for images of `size`."""
    backbone = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=FrozenBatchNorm2d)
    channels = config.fpn_channels
    backbone = _resnet_fpn_extractor(
        backbone, config.trainable_stages, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(channels, channels)
    )
    return TorchvisionRetinaNet(
        backbone,
        config.num_classes,
        min_size=min(size),  # images of `size` need no resize in eval mode
        max_size=max(size),
        score_thresh=config.score_thresh,
        nms_thresh=config.nms_thresh,
        detections_per_img=config.detections_per_img,
        fg_iou_thresh=config.fg_iou,
        bg_iou_thresh=config.bg_iou,
        topk_candidates=config.topk_candidates,
        size_divisible=config.size_divisible,
        # No resize in training mode either, as in torchvision's reference training scripts: the data pipeline
        # resizes, there as in retina (before the collate_fn).
        _skip_resize=True,
    )


def model_pair(
    config: RetinaConfig, size: tuple[int, int], device: torch.device
) -> tuple[RetinaNet, TorchvisionRetinaNet]:
    """torchvision's model with random weights, and ours with the same weights, both on `device`."""
    torch.manual_seed(0)
    theirs = torchvision_model(config, size)
    with torch.no_grad():  # spread the class scores (one class in seven above 0.05), so that NMS has work to do
        theirs.head.classification_head.cls_logits.bias.normal_(-4.0, 1.0)
    ours = from_torchvision(theirs, "v1", **config.replace(min_size=min(size), max_size=max(size)).to_dict())
    return ours.to(device), theirs.to(device)


# ---------------------------------------------------------------- the cases


def torchvision_targets(model: TorchvisionRetinaNet, targets: list[dict], anchors: Tensor) -> list[tuple[Tensor, ...]]:
    """What torchvision's RetinaNet.compute_loss derives from the boxes before any loss, image by image: the
    matched box of every anchor `[N]`, and the labels `[F]` and BoxCoder deltas `[F, 4]` of the foreground."""
    encoded = []
    for target in targets:
        matched = model.proposal_matcher(torchvision.ops.box_iou(target["boxes"], anchors))  # [N]
        foreground = matched >= 0
        boxes = target["boxes"][matched[foreground]]
        deltas = model.box_coder.encode_single(boxes, anchors[foreground])
        encoded.append((matched, target["labels"][matched[foreground]], deltas))
    return encoded


def assert_same_detections(ours: list[dict], theirs: list[dict]) -> None:
    """The same detections, image by image. Near-tied scores may come out in another order, so every detection
    of ours must have a torchvision detection of the same class and the same box (up to float rounding)."""
    for o, t in zip(ours, theirs, strict=True):
        assert len(o["scores"]) == len(t["scores"]), f"{len(o['scores'])} detections against {len(t['scores'])}"
        torch.testing.assert_close(o["scores"], t["scores"], rtol=1e-4, atol=1e-5)
        same_class = o["labels"][:, None] == t["labels"][None, :]  # [K, K]
        same_box = (o["boxes"][:, None, :] - t["boxes"][None, :, :]).abs().amax(dim=-1) < 1e-2
        assert (same_class & same_box).any(dim=1).all(), "a detection has no torchvision counterpart"


def assert_same_loss(ours: Callable[[int], dict[str, Tensor]], theirs: dict[str, Tensor], batch: int) -> None:
    """torchvision divides each image's loss by that image's foreground count and averages over the images;
    retina divides the batch's sum by the batch's count, as the paper does. Image by image they agree:
    `ours(b)` is our loss of image b alone."""
    per_image = [ours(b) for b in range(batch)]
    for key, value in theirs.items():
        mean = torch.stack([loss[key] for loss in per_image]).mean()
        torch.testing.assert_close(mean, value, rtol=1e-4, atol=1e-5)


def head_rows(config: RetinaConfig, size: tuple[int, int], device: torch.device, args, g) -> list[Row]:
    """Target encoding, loss and post-processing of a batch of `args.batch` images."""
    samples = random_samples(args.batch, size, args.boxes, config.num_classes, g)
    images = [image for image, _ in samples]
    targets = [target for _, target in samples]
    full = padded(size, config)
    label = f"{size[0]}×{size[1]} (padded {full[0]}×{full[1]}), batch {args.batch}"
    reference = torchvision_model(config, size).to(device)
    anchors = generate_anchors(config, full)  # equal to torchvision's AnchorGenerator's (tests/test_targets.py)
    device_anchors = anchors.to(device)
    device_targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    rows = []

    # Target encoding. Ours runs on the CPU, as in the DataLoader's workers, whatever the device.
    collate = DetectionCollate(config)
    batch = collate(samples)
    expected = torchvision_targets(reference, targets, anchors)
    for b, (matched, labels, deltas) in enumerate(expected):
        foreground = matched >= 0
        assert torch.equal(batch["cls_targets"][b][~foreground], matched[~foreground])  # background, ignored
        assert torch.equal(batch["cls_targets"][b][foreground], labels)
        torch.testing.assert_close(batch["box_targets"][b][foreground], deltas, rtol=1e-5, atol=1e-5)

    def theirs_encoding():
        reference.transform.batch_images([image.to(device) for image in images], config.size_divisible)
        return torchvision_targets(reference, device_targets, device_anchors)

    rows += measure("target encoding", lambda: collate(samples), theirs_encoding, device, label, args)

    # The loss from given head outputs, and its backward pass.
    n = anchors.shape[0]
    cls_logits = (torch.randn(args.batch, n, config.num_classes, generator=g) - 4).to(device).requires_grad_()
    box_deltas = (torch.randn(args.batch, n, 4, generator=g) * 0.1).to(device).requires_grad_()
    cls_targets, box_targets = batch["cls_targets"].to(device), batch["box_targets"].to(device)
    matched_idxs = [matched.to(device) for matched, _, _ in expected]

    def ours_loss(images=slice(None)):
        targets = (cls_targets[images], box_targets[images], device_anchors, config)
        return retina_loss(cls_logits[images], box_deltas[images], *targets)

    def theirs_loss():
        head_outputs = {"cls_logits": cls_logits, "bbox_regression": box_deltas}
        return reference.head.compute_loss(device_targets, head_outputs, [device_anchors] * args.batch, matched_idxs)

    def backward(loss: Callable[[], dict[str, Tensor]]) -> None:
        sum(loss().values()).backward()
        cls_logits.grad = box_deltas.grad = None  # every run starts without gradients

    with torch.no_grad():
        assert_same_loss(lambda b: ours_loss(slice(b, b + 1)), theirs_loss(), args.batch)
        rows += measure("loss", ours_loss, theirs_loss, device, label, args)
    ours_backward, theirs_backward = (lambda: backward(ours_loss)), (lambda: backward(theirs_loss))
    rows += measure("loss + backward", ours_backward, theirs_backward, device, label, args)

    # Post-processing, with few and with many scores above the threshold: torchvision keeps those before its
    # top-k, so its work grows with their number.
    counts = anchors_per_level_counts(config, full)
    image_sizes = torch.tensor([size] * args.batch, device=device)
    box_deltas = box_deltas.detach()
    for scores, (mean, std) in SCORE_LOGITS.items():
        logits = (torch.randn(args.batch, n, config.num_classes, generator=g) * std + mean).to(device)
        split = {"cls_logits": list(logits.split(counts, 1)), "bbox_regression": list(box_deltas.split(counts, 1))}
        level_anchors = [list(device_anchors.split(counts))] * args.batch

        def ours_detect(logits=logits):
            return postprocess_detections(logits, box_deltas, device_anchors, image_sizes, config, counts)

        def theirs_detect(split=split, level_anchors=level_anchors):
            return reference.postprocess_detections(split, level_anchors, [size] * args.batch)

        assert_same_detections(ours_detect(), theirs_detect())
        rows += measure(f"post-processing, {scores}", ours_detect, theirs_detect, device, label, args)
    return rows


def model_rows(config: RetinaConfig, size: tuple[int, int], device: torch.device, args, g) -> list[Row]:
    """A training step and inference with the whole model, on a batch of `args.model_batch` images."""
    batch_size = args.model_batch or (8 if device.type == "cuda" else 2)
    samples = random_samples(batch_size, size, args.boxes, config.num_classes, g)
    images = [image for image, _ in samples]
    targets = [target for _, target in samples]
    full = padded(size, config)
    label = f"{size[0]}×{size[1]} (padded {full[0]}×{full[1]}), batch {batch_size}"
    ours, theirs = model_pair(config, size, device)
    collate = DetectionCollate(config)
    batch = collate(samples)
    rows = []

    # Each side moves its inputs to the device inside the step, as a training loop does. There is no optimiser:
    # the gradients are dropped, so that every step (and its peak memory) starts from the same state.
    def ours_step(batch: dict) -> None:
        sum(ours.loss(batch).values()).backward()
        ours.zero_grad(set_to_none=True)

    def theirs_losses() -> dict[str, Tensor]:
        on_device = [{k: v.to(device) for k, v in t.items()} for t in targets]
        return theirs([image.to(device) for image in images], on_device)

    def theirs_step() -> None:
        sum(theirs_losses().values()).backward()
        theirs.zero_grad(set_to_none=True)

    ours.train()
    theirs.train()
    with torch.no_grad():
        cls_logits, box_deltas = ours(batch["images"].to(device))
        cls_targets, box_targets = batch["cls_targets"].to(device), batch["box_targets"].to(device)
        anchors = ours.anchors(full)

        def ours_loss(b: int) -> dict[str, Tensor]:
            one = slice(b, b + 1)
            targets = (cls_targets[one], box_targets[one], anchors, ours.config)
            return retina_loss(cls_logits[one], box_deltas[one], *targets)

        assert_same_loss(ours_loss, theirs_losses(), batch_size)
    rows += measure("training step", lambda: ours_step(batch), theirs_step, device, label, args)
    ours_step_with_collate = lambda: ours_step(collate(samples))
    rows += measure("training step + collate", ours_step_with_collate, theirs_step, device, label, args)

    # The limit: the networks alone, forward and backward, from the sum of their outputs.
    def ours_network() -> None:
        cls_logits, box_deltas = ours(batch["images"].to(device))
        (cls_logits.sum() + box_deltas.sum()).backward()
        ours.zero_grad(set_to_none=True)

    def theirs_network() -> None:
        image_list, _ = theirs.transform([image.to(device) for image in images])
        outputs = theirs.head(list(theirs.backbone(image_list.tensors).values()))
        (outputs["cls_logits"].sum() + outputs["bbox_regression"].sum()).backward()
        theirs.zero_grad(set_to_none=True)

    rows += measure("network forward + backward", ours_network, theirs_network, device, label, args)

    ours.eval()
    theirs.eval()

    def theirs_detect() -> list[dict[str, Tensor]]:
        with torch.no_grad():
            return theirs([image.to(device) for image in images])

    assert_same_detections(ours.detect(images), theirs_detect())
    rows += measure("inference", lambda: ours.detect(images), theirs_detect, device, label, args)
    return rows


# ---------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = (
        f"{cpu}, {torch.multiprocessing.cpu_count()} cores; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}"
    )
    if torch.cuda.is_available():
        text += f"; {torch.cuda.get_device_name()}"
    return text


TABLE_HEADER = (
    "| device | input | step | threads | retina ms | torchvision ms | speed-up "
    "| retina peak MiB | torchvision peak MiB |\n"
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
)

# The goals of the speed issue: (step, least speed-up), each with every thread count and at every size; the loss
# must also peak at no more memory than torchvision's.
GOALS = (("target encoding", 5.0), ("loss", 3.0), ("loss + backward", 2.0))


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """The median and, after more than one run, the range: "12.3 (11.9–13.0)"."""
    text = f"{statistics.median(values) * scale:.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f})"
    return text


def markdown_row(r: Row) -> str:
    return (
        f"| {r.device} | {r.size} | {r.step} | {r.threads} | {spread(r.ours_runs, 1e3)} | "
        f"{spread(r.theirs_runs, 1e3)} | {spread(r.ratios, digits=2)}× | {r.ours_mib:.1f} | {r.theirs_mib:.1f} |"
    )


def goal_lines(rows: list[Row]) -> list[str]:
    """One line per goal: met or not, with the lowest median speed-up over sizes and thread counts."""
    lines = []
    for step, least in GOALS:
        measured = [r for r in rows if r.step == step]
        if not measured:
            continue
        worst = min(measured, key=lambda r: r.speedup)
        met = worst.speedup >= least
        lines.append(
            f"{step} ≥ {least:g}×: {'met' if met else 'NOT met'}, lowest {worst.speedup:.2f}× "
            f"({worst.size}, {worst.threads} thread{'s' if worst.threads > 1 else ''})"
        )
    losses = [r for r in rows if r.step == "loss"]
    if losses:
        over = [r for r in losses if r.ours_mib > r.theirs_mib]
        lines.append(
            "loss peak memory ≤ torchvision's: "
            + ("met" if not over else f"NOT met ({len(over)} of {len(losses)} rows above)")
            + f", highest ratio {max(r.ours_mib / max(r.theirs_mib, 1e-9) for r in losses):.2f}"
        )
    return lines


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and model, 1 repeat: checks that it runs")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(512, 512), (800, 1333)], metavar="HxW")
    parser.add_argument(
        "--model-sizes", type=parse_size, nargs="+", metavar="HxW", help="sizes of the model rows (default: --sizes)"
    )
    parser.add_argument("--batch", type=int, default=8, help="images per batch for encoding, loss, post-processing")
    parser.add_argument("--model-batch", type=int, help="images per training step and inference (2 on CPU, 8 on CUDA)")
    parser.add_argument("--boxes", type=int, default=30, help="ground-truth boxes per image")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU threads to run each case with")
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda when there is one")
    parser.add_argument(
        "--parts",
        choices=("head", "model"),
        nargs="+",
        default=["head", "model"],
        help="head: encoding, loss, post-processing; model: training step and inference (minutes on a CPU)",
    )
    args = parser.parse_args(argv)
    config = BENCH_CONFIG
    if args.smoke:
        config = SMOKE_CONFIG
        args.sizes, args.batch, args.model_batch, args.boxes, args.repeats = [(128, 128), (96, 160)], 2, 1, 3, 2
        args.model_sizes, args.threads = None, [1]
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    print(f"Machine: {machine()}")
    print(
        f"Model: {config.backbone}-FPN, {config.num_classes} classes; {args.boxes} boxes per image; "
        f"{args.repeats} runs per case and thread count, retina's and torchvision's interleaved; median (range); "
        "speed-up = torchvision's time / retina's, run by run\n"
    )
    print(TABLE_HEADER)
    rows = []
    # Every size's encoding, loss and post-processing first, the (much slower) whole-model rows after them.
    for device, part, size in itertools.product(devices, args.parts, args.sizes):
        if part == "model" and args.model_sizes and size not in args.model_sizes:
            continue
        g = torch.Generator().manual_seed(0)
        rows += (head_rows if part == "head" else model_rows)(config, size, torch.device(device), args, g)
    print()
    for line in goal_lines(rows):
        print(f"- {line}")
    for r in rows:
        if r.step == "inference":
            images = int(r.size.rsplit(" ", 1)[1])
            print(
                f"- inference, {r.device}, {r.size}, {r.threads} thread{'s' if r.threads > 1 else ''}: "
                f"retina {images / r.ours:.2f} images/s, torchvision {images / r.theirs:.2f} images/s"
            )
    return rows


if __name__ == "__main__":
    main()
