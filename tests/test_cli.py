"""`python -m retina ...` given what users plausibly get wrong: each mistake ends in one `error:` line and an exit
status != 0, before any expensive work, without a traceback; a bug still shows its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_fixtures import coco_annotation, write_coco, write_image

import retina.viz
from retina.__main__ import main
from retina.checkpoint import CheckpointError, save_checkpoint
from retina.config import RetinaConfig
from retina.data import DatasetError, DownloadError
from retina.model import RetinaNet
from retina.pretrained import WeightsError
from retina.train import TrainingError

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = [{"id": 1, "name": "disc"}, {"id": 2, "name": "block"}]


def run(capsys, *argv) -> tuple[int, str]:
    """`python -m retina ARGV...` in this process: the exit status and what it printed on stderr."""
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    return status, capsys.readouterr().err


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """An untrained tiny detector of the two CATEGORIES."""
    torch.manual_seed(0)
    config = RetinaConfig(backbone="resnet18", fpn_channels=16, head_convs=1, min_size=64, max_size=64)
    model = RetinaNet(num_classes=2, config=config)
    state = {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": ["disc", "block"]}
    save_checkpoint(tmp_path / "model.pt", state)
    return tmp_path / "model.pt"


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    write_image(folder / "a.jpg")
    write_image(folder / "b.png")
    return folder


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A COCO-layout set: split "val", four 40x30 images with a box each."""
    images = [{"id": i, "file_name": f"{i:03d}.jpg", "width": 40, "height": 30} for i in range(1, 5)]
    annotations = [coco_annotation(i, i, 1 + i % 2, [5.0, 5.0, 20.0, 15.0]) for i in range(1, 5)]
    write_coco(tmp_path / "set", images, annotations, CATEGORIES, split="val")
    return tmp_path / "set"


# ------------------------------------------------------------------------------------------- the dispatcher


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(retina.viz, "main", lambda argv: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        main(["detect"])


@pytest.mark.parametrize(
    "error",
    [
        CheckpointError("out/model.pt is not a retina checkpoint"),
        DatasetError("cannot read image a.jpg"),
        DownloadError("Could not download x.tar"),
        WeightsError("no ImageNet weights at x.pth"),
        TrainingError("the loss is NaN at step 3"),
        OSError(28, "No space left on device", "out/a.png"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_in_the_input_is_one_line(monkeypatch, capsys, error):
    def fails(argv):
        raise error

    monkeypatch.setattr(retina.viz, "main", fails)
    assert run(capsys, "detect") == (1, f"error: {error}\n")


def test_ctrl_c_is_a_short_message_and_status_130(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(retina.viz, "main", interrupted)
    assert run(capsys, "detect") == (130, "interrupted\n")


def test_unknown_command(capsys):
    status, err = run(capsys, "detcet", "images/")
    assert status == 2 and last_line(err) == "error: unknown command 'detcet'"
    assert "detect" in err  # the usage lists the commands


def test_train_with_a_data_directory_that_does_not_exist(tmp_path):
    """Through a real process: the training errors reach the dispatcher as one line too."""
    result = subprocess.run(
        [sys.executable, "-m", "retina", "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr == f"error: dataset directory {tmp_path / 'nowhere'} does not exist\n"


def test_data_stats_of_a_directory_that_does_not_exist(tmp_path, capsys):
    status, err = run(capsys, "data", "stats", tmp_path / "nowhere")
    assert (status, err) == (1, f"error: dataset directory {tmp_path / 'nowhere'} does not exist\n")


# ----------------------------------------------------------------------------------------- output paths
# Every check runs before the checkpoint is read: the checkpoint named here does not even exist.


def test_detect_out_is_an_existing_file(tmp_path, images, capsys):
    (tmp_path / "taken").write_text("notes")
    status, err = run(capsys, "detect", images, "--checkpoint", tmp_path / "no.pt", "--out", tmp_path / "taken")
    assert status == 2
    assert (
        last_line(err)
        == f"python -m retina detect: error: argument --out: {tmp_path / 'taken'} is a file, not a directory"
    )


def test_detect_out_in_an_unwritable_place(tmp_path, images, capsys, monkeypatch):
    # Tests run as root, who may write in a chmod 0o555 directory: a path under a regular file is one place where
    # nobody can write, and os.access answering "no" stands for a directory without write permission.
    (tmp_path / "taken").write_text("notes")
    out = tmp_path / "taken" / "detections"
    status, err = run(capsys, "detect", images, "--checkpoint", tmp_path / "no.pt", "--out", out)
    assert status == 2
    assert last_line(err).endswith(
        f"argument --out: cannot write {out}: {tmp_path / 'taken'} is a file, not a directory"
    )

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    status, err = run(capsys, "detect", images, "--checkpoint", tmp_path / "no.pt", "--out", tmp_path / "new" / "dir")
    assert status == 2
    assert last_line(err).endswith(f"cannot write {tmp_path / 'new' / 'dir'}: no permission to write in {tmp_path}")
    assert not (tmp_path / "new").exists()


def test_evaluate_out_is_a_directory(tmp_path, dataset, capsys):
    args = ["evaluate", "--checkpoint", tmp_path / "no.pt", "--data", dataset, "--split", "val"]
    status, err = run(capsys, *args, "--out", tmp_path)
    assert status == 2
    assert (
        last_line(err)
        == f"python -m retina evaluate: error: argument --out: {tmp_path} is a directory; name the file to write"
    )


def test_evaluate_pr_curve_without_a_picture_suffix(tmp_path, dataset, capsys):
    # matplotlib would have written pr.png and the command printed "wrote pr"
    status, err = run(capsys, "evaluate", "--checkpoint", tmp_path / "no.pt", "--pr-curve", tmp_path / "pr")
    assert status == 2 and last_line(err).endswith("the file name must end in .png or .pdf or .svg")


def test_export_out_is_a_directory_leaves_nothing_behind(tmp_path, checkpoint, capsys):
    (tmp_path / "models").mkdir()
    status, err = run(capsys, "export", checkpoint, tmp_path / "models")
    assert status == 2
    assert (
        last_line(err)
        == f"python -m retina export: error: argument out: {tmp_path / 'models'} is a directory; name the file to write"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "models"]  # no models.tmp


# ------------------------------------------------------------------------------------------- other arguments


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--score-thresh", "2", "argument --score-thresh: 2 is not between 0 and 1"),
        ("--score-thresh", "high", "argument --score-thresh: invalid probability value: 'high'"),
        ("--batch-size", "0", "argument --batch-size: 0 must be at least 1"),
        ("--device", "gpu", "argument --device: 'gpu' is not a device; use cpu, cuda, cuda:1, mps"),
    ],
)
def test_detect_argument_out_of_range(tmp_path, images, capsys, flag, value, message):
    status, err = run(
        capsys, "detect", images, "--checkpoint", tmp_path / "no.pt", "--out", tmp_path / "o", flag, value
    )
    assert status == 2 and last_line(err) == f"python -m retina detect: error: {message}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_detect_on_cuda_without_a_gpu(tmp_path, images, capsys):
    status, err = run(
        capsys, "detect", images, "--checkpoint", tmp_path / "no.pt", "--out", tmp_path, "--device", "cuda"
    )
    assert status == 2 and last_line(err).endswith(
        "argument --device: cuda: CUDA is not available on this machine; use cpu"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "argument --epochs: 0 must be at least 1"),
        (["--workers", "-1"], "argument --workers: -1 must be at least 0"),
        (["--out", ROOT / "README.md"], f"argument --out: {ROOT / 'README.md'} is a file, not a directory"),
        (["--device", "gpu"], "argument --device: 'gpu' is not a device; use cpu, cuda, cuda:1, mps"),
        # settings wrong only together, found by TrainConfig.check: the cpu preset trains on a time budget
        (["--deterministic"], "deterministic training needs a step-based schedule: set time_budget=0 (and epochs)"),
    ],
)
def test_train_arguments_that_cannot_work(tmp_path, capsys, args, message):
    status, err = run(capsys, "train", "--preset", "cpu", "--data", tmp_path / "nowhere", *args)
    assert status == 2 and last_line(err) == f"python -m retina train: error: {message}"


def test_evaluate_negative_workers(tmp_path, capsys):
    status, err = run(capsys, "evaluate", "--checkpoint", tmp_path / "no.pt", "--workers", "-1")
    assert status == 2 and last_line(err).endswith("argument --workers: -1 must be at least 0")


# ------------------------------------------------------------------------------------------ detect's inputs


def test_detect_with_a_checkpoint_that_is_not_one(tmp_path, images, capsys):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    status, err = run(capsys, "detect", images, "--checkpoint", tmp_path / "notes.pt", "--out", tmp_path / "o")
    assert status == 1
    assert err.startswith(f"error: cannot read checkpoint {tmp_path / 'notes.pt'}: the file is truncated, corrupt or")
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_detect_a_directory_without_images(tmp_path, checkpoint, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no pictures here")
    status, err = run(capsys, "detect", tmp_path / "docs", "--checkpoint", checkpoint, "--out", tmp_path / "o")
    assert (status, err) == (1, f"error: no images (.jpg, .jpeg, .png, .bmp, .webp) found in {tmp_path / 'docs'}\n")


def test_detect_a_non_image_file_among_images(tmp_path, images, checkpoint, capsys):
    (images / "c.jpg").write_text("a text file with an image's name")
    status, err = run(capsys, "detect", images, "--checkpoint", checkpoint, "--out", tmp_path / "o")
    assert status == 1
    assert err.startswith(f"error: cannot read image {images / 'c.jpg'}: cannot identify image file")
    assert not (tmp_path / "o").exists()  # nothing written: every image is read before the first is drawn


def test_detect_out_is_the_images_own_directory(tmp_path, images, checkpoint, capsys):
    status, err = run(capsys, "detect", images, "--checkpoint", checkpoint, "--out", images)
    assert status == 2
    assert last_line(err).endswith(
        f"{images / 'b.png'} would overwrite the input image {images / 'b.png'}; choose another --out"
    )


def test_detect_two_images_with_the_same_name(tmp_path, images, checkpoint, capsys):
    write_image(images / "a.png")
    status, err = run(capsys, "detect", images, "--checkpoint", checkpoint, "--out", tmp_path / "o")
    assert status == 2
    assert last_line(err).endswith(
        f"{images / 'a.jpg'} and {images / 'a.png'} would both be drawn to {tmp_path / 'o' / 'a.png'}; "
        "detect them in separate runs"
    )


# ---------------------------------------------------------------------------------------- evaluate's inputs


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluate_with_a_truncated_image(tmp_path, dataset, checkpoint, capsys, workers):
    image = dataset / "images" / "val" / "003.jpg"
    image.write_bytes(image.read_bytes()[:200])
    args = ["--checkpoint", checkpoint, "--data", dataset, "--split", "val", "--workers", workers]
    status, err = run(capsys, "evaluate", *args, "--batch-size", 1, "--out", tmp_path / "metrics.json")
    assert status == 1
    # the dataset's own message, not "Caught DatasetError in DataLoader worker process 0 ... Original Traceback"
    assert last_line(err) == f"error: cannot read image {image}: Truncated File Read"
    assert "Traceback" not in err and not (tmp_path / "metrics.json").exists()


def test_evaluate_a_split_that_does_not_exist(tmp_path, dataset, checkpoint, capsys):
    status, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--data", dataset, "--split", "valid")
    assert status == 1
    assert err == (
        f"error: {dataset / 'annotations' / 'instances_valid.json'} does not exist "
        "(annotation files found: ['instances_val.json'])\n"
    )


def test_evaluate_a_split_without_images(tmp_path, checkpoint, capsys):
    write_coco(tmp_path / "set", [], [], CATEGORIES, split="val")
    status, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--data", tmp_path / "set", "--split", "val")
    assert (status, err) == (1, f"error: split 'val' of {tmp_path / 'set'} has no images to evaluate on\n")


# -------------------------------------------------------------------------------------------- data's inputs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train", "-2"], "argument --train: -2 must be at least 0"),
        (["--size", "16"], "argument --size: 16 must be at least 32"),
        (["--size", "big"], "argument --size: invalid integer value: 'big'"),
    ],
)
def test_data_shapes_with_an_impossible_size(tmp_path, capsys, args, message):
    status, err = run(capsys, "data", "shapes", "--out", tmp_path / "shapes", *args)
    assert status == 2 and last_line(err) == f"python -m retina data shapes: error: {message}"
    assert not (tmp_path / "shapes").exists()


def test_data_shapes_out_is_an_existing_file(tmp_path, capsys):
    (tmp_path / "shapes").write_text("notes")
    status, err = run(capsys, "data", "shapes", "--out", tmp_path / "shapes", "--train", 2, "--val", 1)
    assert status == 2
    assert last_line(err).endswith(f"argument --out: {tmp_path / 'shapes'} is a file, not a directory")
