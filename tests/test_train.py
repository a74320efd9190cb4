"""Training: the loss falls, resume equals an uninterrupted run, Ctrl-C and NaN leave a usable checkpoint, DDP equals
one process, and bad input fails with a clear message. Tiny runs: a ResNet-18 with 16-channel FPN on 64 px images."""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from data_fixtures import coco_annotation, write_coco

import retina.model as model_module
import retina.train as train_module
from retina.__main__ import main as retina_main
from retina.checkpoint import CheckpointError, load_checkpoint
from retina.config import RetinaConfig, TrainConfig
from retina.data import DatasetError, generate_shapes
from retina.data.common import DetectionDataset
from retina.data.loader import EpochBatches
from retina.model import RetinaNet
from retina.pretrained import WeightsError
from retina.train import TrainingError, lr_factor, train
from retina.train_cli import main


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """8 training and 4 validation images of 64 px, generated (not data/shapes)."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=4, image_size=64, workers=1)


@pytest.fixture(autouse=True)
def restore_torch_state():
    """train() sets process-wide switches (threads, deterministic algorithms, cudnn.benchmark): put them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = benchmark


def tiny(data: Path, out: Path, **changes) -> TrainConfig:
    """A run of 2 epochs x 2 steps of 4 images, deterministic, without evaluation. Only the FPN and heads learn
    (fast steps), but the backbone's BatchNorm statistics move, so a resume must restore buffers too. Random
    flips and quarter turns: a resumed run and a DDP run must draw the same augmentations."""
    model = RetinaConfig(
        backbone="resnet18",
        backbone_norm="bn",
        trainable_stages=0,
        fpn_channels=16,
        head_convs=1,
        head_norm="gn",
        anchor_sizes=(16, 32, 64, 128, 256),
        min_size=64,
        max_size=64,
        size_divisible=32,
    )
    cfg = TrainConfig(
        model=model,
        data=str(data),
        out_dir=str(out),
        val_split="",
        batch_size=4,
        epochs=2,
        optimizer="sgd",
        lr=0.01,
        warmup_steps=2,
        rotate90=True,
        num_workers=0,
        deterministic=True,
        log_every=1,
    )
    return cfg.replace(**changes)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def signal_at_call(monkeypatch, name: str, call: int) -> None:
    """Send Ctrl-C (SIGINT) to this process during the `call`-th call of retina.train.<name>."""
    original, calls = getattr(train_module, name), itertools.count(1)

    def wrapped(*args, **kwargs):
        if next(calls) == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, name, wrapped)


# ---------------------------------------------------------------------------------------------------- pure parts


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, warmup_factor=0.1, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert lr_factor(cfg, 0, 0.0) == pytest.approx(0.1)  # warm-up starts at warmup_factor
    assert lr_factor(cfg, 5, 0.05) == pytest.approx(0.55)
    assert lr_factor(cfg, 10, 0.4) == 1.0
    assert lr_factor(cfg, 50, 0.5) == pytest.approx(0.1)
    assert lr_factor(cfg, 80, 0.8) == pytest.approx(0.01)
    cosine = cfg.replace(schedule="cosine", warmup_steps=0)
    assert [lr_factor(cosine, 0, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.5, 0.0])


def test_batches_of_processes_make_the_single_process_batch():
    dataset = list(range(20))
    single = EpochBatches(dataset, batch_size=4, seed=3)
    ranks = [EpochBatches(dataset, batch_size=2, seed=3, rank=r, world_size=2) for r in range(2)]
    for sampler in (single, *ranks):
        sampler.set_epoch(1)
    for k, batch in enumerate(single):
        together = sorted(key for r in ranks for key in list(r)[k])
        assert together == sorted(batch)  # same images, same augmentation seeds
    everything = list(single)
    single.set_epoch(1, skip=2)  # resuming after 2 of the epoch's 5 batches
    assert len(single) == 3 and list(single) == everything[2:]


def test_config_replace_and_round_trip():
    cfg = TrainConfig.preset("cpu").replace(
        lr=0.5, train_sizes=[224, 256], **{"model.anchor_sizes": [8, 16, 32, 64, 128]}
    )
    assert cfg.lr == 0.5 and cfg.train_sizes == (224, 256) and cfg.model.anchor_sizes == (8, 16, 32, 64, 128)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="model.fpn_chanels"):
        cfg.replace(**{"model.fpn_chanels": 8})


# --------------------------------------------------------------------------------------------------- training


def test_loss_falls(shapes, tmp_path):
    cfg = tiny(shapes, tmp_path, epochs=6, optimizer="adamw", lr=1e-2, schedule="cosine")
    summary = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert summary["status"] == "finished" and summary["step"] == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert (tmp_path / "loss_curve.png").stat().st_size > 0


@pytest.fixture(scope="module")
def uninterrupted(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert train(tiny(shapes, out))["step"] == 4
    return out / "last.pt"


@pytest.mark.parametrize("interrupt_call", [2, 3], ids=["epoch-boundary", "mid-epoch"])
def test_ctrl_c_then_resume_equals_uninterrupted(shapes, tmp_path, monkeypatch, uninterrupted, interrupt_call):
    # One worker process here, none in the uninterrupted run: the data must not depend on it.
    cfg = tiny(shapes, tmp_path, num_workers=1)
    signal_at_call(monkeypatch, "train_step", interrupt_call)
    first = train(cfg)
    assert first["status"] == "interrupted" and first["step"] == interrupt_call
    # its worker ended with it: a stale one would be inherited by the next run's forked workers
    assert multiprocessing.active_children() == []
    checkpoint = load_checkpoint(tmp_path / "last.pt")  # valid, and at the exact step
    assert checkpoint["progress"]["step"] == interrupt_call
    assert checkpoint["progress"]["batch"] == interrupt_call % 2
    monkeypatch.undo()

    second = train(cfg, resume=tmp_path / "last.pt")
    assert second["status"] == "finished" and second["step"] == 4
    expected, resumed = weights(uninterrupted), weights(tmp_path / "last.pt")
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


def test_nan_loss_stops_before_the_update_and_keeps_the_last_good_checkpoint(shapes, tmp_path, monkeypatch):
    original, calls = model_module.retina_loss, itertools.count(1)  # the one loss path: RetinaNet.loss

    def poisoned(*args, **kwargs):
        losses = original(*args, **kwargs)
        if next(calls) == 3:  # epoch 2, batch 1: after the epoch-1 checkpoint
            losses["bbox_regression"] = losses["bbox_regression"] * float("nan")
        return losses

    monkeypatch.setattr(model_module, "retina_loss", poisoned)
    with pytest.raises(TrainingError, match=r"bbox_regression loss is nan at step 3 \(epoch 2, batch 1\)"):
        train(tiny(shapes, tmp_path))
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["progress"] == {"epoch": 1, "batch": 0, "step": 2, "elapsed": checkpoint["progress"]["elapsed"]}
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    monkeypatch.undo()
    assert train(tiny(shapes, tmp_path), resume=tmp_path / "last.pt")["status"] == "finished"


def test_train_step_is_the_models_loss_then_one_update(shapes, tmp_path):
    """The trainer has one loss path: train_step's losses are RetinaNet.loss's on the same batch and weights."""
    from retina.data import shapes_dataset
    from retina.targets import DetectionCollate
    from retina.train import build_optimizer, train_step

    cfg = tiny(shapes, tmp_path)
    dataset = shapes_dataset(shapes, "train")
    config = cfg.model.replace(num_classes=len(dataset.classes))
    torch.manual_seed(0)
    model = RetinaNet(config=config).train()
    batch = DetectionCollate(config)([dataset[i] for i in range(4)])
    with torch.no_grad():
        expected = {name: value.item() for name, value in model.loss(batch).items()}
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = train_step(model, model, batch, optimizer, scaler, cfg, torch.device("cpu"))
    assert losses == pytest.approx(expected, rel=1e-6)
    assert losses["classification"] > 0 and losses["bbox_regression"] > 0
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert any(moved) and not all(moved)  # the heads and FPN learn; the frozen stages (trainable_stages=0) do not


def test_checkpoint_holds_the_whole_run_as_plain_data(uninterrupted):
    checkpoint = torch.load(uninterrupted, weights_only=True)  # no dataclasses, no numpy arrays
    assert {"model", "model_config", "train_config", "classes", "optimizer", "scaler", "progress", "rng"} <= set(
        checkpoint
    )
    assert set(checkpoint["rng"]) == {"torch", "cuda", "numpy", "python"}
    trained = TrainConfig.from_dict(checkpoint["train_config"]).model
    assert trained.fpn_channels == 16
    assert trained.to_dict() == checkpoint["model_config"]  # the recipe records the detector it built (8 classes)
    assert RetinaConfig.from_dict(checkpoint["model_config"]).num_classes == len(checkpoint["classes"]) == 8
    assert not list(uninterrupted.parent.glob("*.tmp"))  # the atomic write left no temporary file


def test_ddp_two_gloo_processes_equal_one_process(shapes, tmp_path):
    """One SGD step (no momentum, no decay, no warm-up) on the same global batch of 4: 2 processes x 2 images under
    torchrun / gloo, or 1 process x 4 images. Equal updates = equal gradients. Frozen BN: BatchNorm statistics
    of 2 images are not those of 4 (that needs SyncBatchNorm); the loss normaliser is the point here."""
    settings = dict(epochs=1, batch_size=4, lr=0.5, momentum=0.0, weight_decay=0.0, warmup_steps=0, num_threads=1)
    settings |= {"model.backbone_norm": "frozen_bn", "time_budget": 0.0}
    single = tiny(shapes, tmp_path / "single", **settings).replace(train_sizes=(64,))
    # One step only: a training set of 4 images is one batch.
    four = tmp_path / "four"
    generate_shapes(four, num_train=4, num_val=0, image_size=64, workers=1)
    single = single.replace(data=str(four), val_split="")
    train(single)

    args = [f"{k}={v!r}" for k, v in single.replace(out_dir=str(tmp_path / "ddp")).to_dict().items() if k != "model"]
    args += [f"model.{k}={v!r}" for k, v in single.model.to_dict().items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "retina", "train", "--preset", "cpu", "--set", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    torch.manual_seed(single.seed)
    initial = RetinaNet(config=single.model.replace(num_classes=8)).state_dict()  # both runs' start
    one, two = weights(tmp_path / "single" / "last.pt"), weights(tmp_path / "ddp" / "last.pt")
    moved = max((one[k] - initial[k]).abs().max().item() for k in one if one[k].is_floating_point())
    assert moved > 1e-3  # the step did something measurable
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=2e-6, msg=name)


# -------------------------------------------------------------------------------------------------- bad input


def test_checkpoint_of_another_detector_lists_the_differences(shapes, tmp_path, uninterrupted):
    checkpoint = torch.load(uninterrupted, weights_only=True)
    checkpoint["model_config"]["num_classes"] = 3
    checkpoint["classes"] = ["a", "b", "c"]
    torch.save(checkpoint, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as error:
        train(tiny(shapes, tmp_path, **{"model.fpn_channels": 32}), resume=tmp_path / "other.pt")
    message = str(error.value)
    assert "num_classes: checkpoint 3, this run 8" in message
    assert "fpn_channels: checkpoint 16, this run 32" in message
    assert "classes: checkpoint ['a', 'b', 'c']" in message


def test_truncated_checkpoint_names_the_file(shapes, tmp_path, capsys, uninterrupted):
    data = uninterrupted.read_bytes()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {broken}.*truncated"):
        train(tiny(shapes, tmp_path), resume=broken)
    assert retina_main(["train", "--resume", str(broken)]) == 1
    assert str(broken) in capsys.readouterr().err


def test_unwritable_output_directory(shapes, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(TrainingError, match="cannot write to the output directory"):
        train(tiny(shapes, blocker / "run"))


def test_empty_dataset(tmp_path):
    (tmp_path / "empty" / "images" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "annotations").mkdir()
    empty = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "empty" / "annotations" / "instances_train.json").write_text(json.dumps(empty))
    with pytest.raises(TrainingError, match="has no images"):
        train(tiny(tmp_path / "empty", tmp_path / "run"))


def test_batch_larger_than_dataset(shapes, tmp_path):
    with pytest.raises(TrainingError, match=r"batch_size 16 is larger than the training set \(8 images"):
        train(tiny(shapes, tmp_path, batch_size=16))


def test_backbone_weights_that_do_not_fit_stop_the_run_with_a_clear_error(shapes, tmp_path, capsys):
    # the loader itself is tested in tests/test_pretrained.py; here: the run stops before training, the CLI says why
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsError, match="does not hold resnet18 weights"):
        train(tiny(shapes, tmp_path / "run", backbone_weights=str(tmp_path / "resnet34.pth")))
    missing = tmp_path / "missing.pth"
    args = ["--data", str(shapes), "--out", str(tmp_path / "cli"), "--batch-size", "4", "--weights", str(missing)]
    assert retina_main(["train", *args, "--workers", "0", "--val-split", ""]) == 1
    assert f"error: cannot read backbone weights {missing}" in capsys.readouterr().err


def test_set_with_a_value_of_the_wrong_type_names_the_field_and_the_type(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--set"]
    wrong = {
        "lr=fast": "lr must be a float, got 'fast' (str)",
        "model.fpn_channels=1.5": "model.fpn_channels must be an int, got 1.5 (float)",
        "preload=yes": "preload must be a bool, got 'yes' (str)",
        "epochs=True": "epochs must be an int, got True (bool)",
        "milestones=(0.5,'x')": "milestones must be a tuple of floats, got (0.5, 'x') (tuple)",
        "model.box_weights=(1.0,1.0)": "model.box_weights must be a tuple of 4 floats, got (1.0, 1.0) (tuple)",
        "model.head_norm=3": "model.head_norm must be a str or None, got 3 (int)",
    }
    for item, message in wrong.items():
        with pytest.raises(SystemExit) as exit_:  # an argument error: argparse's usage, one line, status 2
            main([*args, item])
        assert exit_.value.code == 2, item
        assert capsys.readouterr().err.endswith(f"python -m retina train: error: {message}\n"), item
    # right types pass: ints where floats are due, lists for tuples, None for a None-able field
    cfg = TrainConfig.cpu().replace(lr=1, train_sizes=[224, 256], backbone_weights=None, **{"model.head_norm": None})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.train_sizes == (224, 256)
    assert cfg.model.head_norm is None


@pytest.mark.parametrize(
    ("flags", "difference"),
    [
        (["--amp", "fp16"], "amp: checkpoint 'none', this run 'fp16'"),
        (["--optimizer", "adamw"], "optimizer: checkpoint 'sgd', this run 'adamw'"),
        (["--set", "lr=0.02", "seed=1"], "lr: checkpoint 0.01, this run 0.02\n  seed: checkpoint 0, this run 1"),
    ],
    ids=["amp", "optimizer", "lr-and-seed"],
)
def test_resume_with_another_recipe_is_refused_naming_the_fields(tmp_path, capsys, uninterrupted, flags, difference):
    run = tmp_path / "last.pt"
    run.write_bytes(uninterrupted.read_bytes())
    assert retina_main(["train", "--resume", str(run), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume from {run}: this run differs from the one it saved:\n")
    assert f"  {difference}\n" in err
    assert load_checkpoint(run)["progress"]["step"] == 4  # untouched


def test_resume_may_change_where_and_how_long_the_run_goes_on(shapes, tmp_path, uninterrupted):
    run = tmp_path / "last.pt"
    run.write_bytes(uninterrupted.read_bytes())
    cfg = tiny(shapes, tmp_path, epochs=3, num_workers=1, eval_every=2, log_every=5)
    assert train(cfg, resume=run)["step"] == 6


def test_training_image_too_thin_to_resize_names_the_file(tmp_path, capsys):
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in range(4)]
    images.append({"id": 4, "file_name": "sliver.jpg", "width": 5000, "height": 1})
    write_coco(tmp_path / "data", images, [coco_annotation(1, 0, 1, [2, 2, 20, 20])], [{"id": 1, "name": "thing"}])
    with pytest.raises(DatasetError, match=r"image .*sliver\.jpg is 5000x1 \(w x h\).*px thin"):
        train(tiny(tmp_path / "data", tmp_path / "run"))


# -------------------------------------------------------------- the paths no CPU preset run takes, a few steps each


def short(shapes: Path, out: Path, **changes) -> TrainConfig:
    """One epoch of two steps of a quarter-width ResNet-10 (the cpu preset's backbone), without deterministic mode
    (some of these paths have no deterministic kernels)."""
    smaller = {"model.backbone": "resnet10", "model.backbone_width": 16, "model.trainable_stages": 5}
    return tiny(shapes, out, epochs=1, deterministic=False, **smaller).replace(**changes)


def moved_parameters(cfg: TrainConfig, path: Path) -> list[float]:
    """How far each parameter of the run's checkpoint moved from the run's initial weights (L2)."""
    torch.manual_seed(cfg.seed)  # train() builds its model right after seeding: the same initial weights
    initial = RetinaNet(config=cfg.model.replace(num_classes=8))
    trained = load_checkpoint(path)["model"]
    return [(trained[name] - p).norm().item() for name, p in initial.named_parameters()]


@pytest.fixture
def network_calls(monkeypatch) -> list[tuple[bool, torch.dtype]]:
    """What the detector's forward saw in each training step of `train()`: (its images in channels_last memory
    format, the dtype of its class logits)."""
    calls = []

    def record(module, inputs, outputs):
        calls.append((inputs[0].is_contiguous(memory_format=torch.channels_last), outputs[0].dtype))

    build = train_module.build_model

    def build_and_watch(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_hook(record)
        return model

    monkeypatch.setattr(train_module, "build_model", build_and_watch)
    return calls


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(shapes, tmp_path, amp, network_calls):
    cfg = short(shapes, tmp_path, amp=amp)
    summary = train(cfg)
    expected = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert [dtype for _, dtype in network_calls] == [expected, expected]  # both steps ran the network in autocast
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert summary["status"] == "finished" and summary["step"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert max(moved_parameters(cfg, tmp_path / "last.pt")) > 0
    if amp == "fp16":  # the gradient scaler ran, and its state is saved for a resume
        assert checkpoint["scaler"]["scale"] > 0 and "_growth_tracker" in checkpoint["scaler"]
    else:
        assert checkpoint["scaler"] == {}  # no scaler without fp16


def test_channels_last(shapes, tmp_path, network_calls):
    cfg = short(shapes, tmp_path, channels_last=True)
    assert train(cfg)["step"] == 2
    assert [channels_last for channels_last, _ in network_calls] == [True, True]
    assert max(moved_parameters(cfg, tmp_path / "last.pt")) > 0


def test_preload_trains_exactly_as_reading_from_disk(shapes, tmp_path, uninterrupted, monkeypatch):
    reads = []
    read = DetectionDataset.__getitem__
    monkeypatch.setattr(DetectionDataset, "__getitem__", lambda self, index: reads.append(index) or read(self, index))
    # JPEG pixels are uint8: keeping them as uint8 in memory loses nothing
    assert train(tiny(shapes, tmp_path, preload=True))["step"] == 4
    assert sorted(reads) == list(range(8))  # each of the 8 images decoded once, for 4 steps of 4 images
    expected, preloaded = weights(uninterrupted), weights(tmp_path / "last.pt")
    for name in expected:
        assert torch.equal(expected[name], preloaded[name]), name


def test_aspect_grouping_of_8_square_images_in_batches_of_4(shapes, tmp_path):
    # the shapes are square: one orientation, two full batches of 4 per epoch
    assert train(short(shapes, tmp_path, aspect_grouping=True))["step"] == 2


def test_clip_grad_norm_bounds_each_update(shapes, tmp_path):
    plain = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.01)
    cfg = short(shapes, tmp_path / "clipped", clip_grad_norm=1e-3, **plain)
    train(cfg)
    clipped = math.sqrt(sum(d**2 for d in moved_parameters(cfg, tmp_path / "clipped" / "last.pt")))
    assert 0 < clipped <= 2 * 0.01 * 1e-3 * (1 + 1e-4)  # two SGD steps of at most lr * clip_grad_norm
    free = short(shapes, tmp_path / "free", **plain)
    train(free)
    assert math.sqrt(sum(d**2 for d in moved_parameters(free, tmp_path / "free" / "last.pt"))) > 10 * clipped


def test_eval_every_epoch_then_at_the_end(shapes, tmp_path):
    summary = train(tiny(shapes, tmp_path, val_split="val", eval_every=1))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [2, 4]
    assert summary["metrics"] == load_checkpoint(tmp_path / "last.pt")["metrics"]
    assert summary["metrics"]["num_images"] == 4 and 0 <= summary["metrics"]["AR100"] <= 1


@pytest.mark.slow
def test_compile(shapes, tmp_path, monkeypatch):
    compiled = []
    compile_ = torch.compile
    spy = lambda module, **kwargs: compiled.append(module) or compile_(module, **kwargs)  # noqa: E731
    monkeypatch.setattr(torch, "compile", spy)
    cfg = short(shapes, tmp_path, compile=True)
    summary = train(cfg)
    assert len(compiled) == 1 and isinstance(compiled[0], RetinaNet)  # one process: the model itself, no DDP
    assert summary["status"] == "finished" and summary["step"] == 2
    assert max(moved_parameters(cfg, tmp_path / "last.pt")) > 0
