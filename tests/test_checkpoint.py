"""Checkpoints: the model file `export_checkpoint` keeps, and which checkpoint the notebooks pick."""

from __future__ import annotations

import pytest
import torch

from retina.checkpoint import (
    MODEL_FILE_KEYS,
    SHIPPED_MODEL,
    CheckpointError,
    check_resumable,
    describe_checkpoint,
    export_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
    trained_checkpoint,
)
from retina.config import RetinaConfig, TrainConfig
from retina.model import RetinaNet

CONFIG = RetinaConfig(num_classes=2, backbone="resnet10", backbone_width=16, fpn_channels=16, head_convs=1,
                      head_norm="gn", min_size=64, max_size=64)  # fmt: skip


def run_checkpoint(path) -> RetinaNet:
    torch.manual_seed(0)
    model = RetinaNet(config=CONFIG)
    state = {
        "model": model.state_dict(),
        "model_config": CONFIG.to_dict(),
        "train_config": {"data": "data/shapes"},
        "classes": ["a", "b"],
        "optimizer": {"state": {}},
        "scaler": {},
        "progress": {"epoch": 1, "batch": 0, "step": 7, "elapsed": 1.0},
        "rng": {},
        "metrics": None,
    }
    save_checkpoint(path, state)
    return model


def test_export_keeps_the_model_and_drops_the_run_state(tmp_path):
    model = run_checkpoint(tmp_path / "last.pt")
    out = export_checkpoint(tmp_path / "last.pt", tmp_path / "sub" / "model.pt")
    exported = load_checkpoint(out)
    assert set(exported) == set(MODEL_FILE_KEYS)
    loaded, classes = load_model(out)
    assert classes == ["a", "b"]
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    with pytest.raises(CheckpointError, match="is a model file"):
        check_resumable(exported, out, TrainConfig(model=CONFIG), ["a", "b"])
    assert "7 steps on data/shapes" in describe_checkpoint(out) and "a local run" in describe_checkpoint(out)


def test_trained_checkpoint_prefers_this_machines_run(tmp_path):
    assert trained_checkpoint("colab", tmp_path) == tmp_path / SHIPPED_MODEL
    (tmp_path / "runs" / "colab").mkdir(parents=True)
    (tmp_path / "runs" / "colab" / "last.pt").write_bytes(b"")
    assert trained_checkpoint("colab", tmp_path) == tmp_path / "runs" / "colab" / "last.pt"
    assert trained_checkpoint("cpu", tmp_path) == tmp_path / SHIPPED_MODEL


def test_the_shipped_model_is_a_trained_cpu_preset_detector():
    model, classes = load_model(SHIPPED_MODEL)
    assert model.config == TrainConfig.cpu().model.replace(num_classes=len(classes))
    assert load_checkpoint(SHIPPED_MODEL)["progress"]["step"] > 1000
    assert "shipped with the repository" in describe_checkpoint(SHIPPED_MODEL)


def test_loading_a_run_directory_instead_of_its_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path} is a directory; name the file in it"):
        load_checkpoint(tmp_path)


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    (tmp_path / "last.pt").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"] and (tmp_path / "last.pt").is_dir()
