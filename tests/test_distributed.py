"""Several processes: they share the evaluation (no process waits through another's whole evaluation, which would
outlast NCCL's 10-minute timeout on a large validation set), and their metrics are one process's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retina.checkpoint import SHIPPED_MODEL, load_model
from retina.data import generate_shapes, open_dataset
from retina.distributed import evaluate_sharded
from retina.evaluate import evaluate_model


@pytest.fixture(scope="module")
def val_images(tmp_path_factory) -> Path:
    """5 validation images of the shapes set at the shipped detector's 256 px: an odd count, uneven shards."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=1, num_val=5, image_size=256, workers=1)


def evaluate_in_process(rank: int, world_size: int, data: str, init_file: str, out: str) -> None:
    """One of `world_size` gloo processes: the shipped detector (one view) on the validation set, shared out."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model, classes = load_model(SHIPPED_MODEL, tta="none")
        metrics = evaluate_sharded(model, open_dataset(data, "val"), classes, rank, world_size)
        Path(f"{out}.{rank}").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_evaluate_shares_and_the_main_one_scores_all(val_images, tmp_path):
    out = str(tmp_path / "metrics")
    # forked rather than spawned: a spawned process spends seconds importing torch again
    args = (2, str(val_images), str(tmp_path / "init"), out)
    mp.start_processes(evaluate_in_process, args=args, nprocs=2, start_method="fork")
    shared, other = (json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(2))
    assert other is None  # only the main process scores

    model, classes = load_model(SHIPPED_MODEL, tta="none")
    single, _ = evaluate_model(model, open_dataset(val_images, "val"), classes)
    assert shared["num_images"] == single["num_images"] == 5
    assert single["AP50"] > 0.1  # a measurable score: the comparison below means something
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert shared[name] == pytest.approx(single[name], abs=1e-9), name
    assert shared["per_class_AP"] == pytest.approx(single["per_class_AP"], abs=1e-9)
