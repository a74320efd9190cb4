"""Checkpoints: written atomically, read with `weights_only=True`, turned back into a trained model.

A checkpoint holds tensors, numbers, strings, lists and dicts only, so `torch.load(..., weights_only=True)` reads
it and no code from the file ever runs. There are two kinds:

    a run's last.pt    what `retina.train` writes every epoch, at the end and on Ctrl-C: the weights, the detector's
                       RetinaConfig, the class names, the TrainConfig, and what a resume needs (the optimiser's and
                       the gradient scaler's state, the random generators, the progress)
    a model file       what `export_checkpoint` keeps of a run for inference: the weights, the detector's config,
                       the class names, and how it was trained. `make demo` writes out/model.pt this way: the
                       `cpu` preset's detector, a few MB, shipped with the repository so that every notebook has a
                       trained network on a fresh clone or a fresh Colab runtime

    python -m retina export runs/demo/last.pt out/model.pt
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import numpy as np
import torch

from retina.cli import output_file
from retina.config import RetinaConfig, TrainConfig
from retina.model import RetinaNet

CHECKPOINT_KEYS = ("model", "model_config", "classes")  # what every checkpoint has
MODEL_FILE_KEYS = (*CHECKPOINT_KEYS, "train_config", "progress", "metrics")  # what export_checkpoint keeps
RUN_STATE_KEYS = ("optimizer", "scaler", "progress", "rng")  # what a resume needs besides the weights
# TrainConfig fields a resume may change: where and how fast the run goes on, and when it stops or is evaluated.
# Everything else (optimiser, schedule, precision, batch, data, seed, augmentation) makes another run.
RESUMABLE_CHANGES = ("out_dir", "time_budget", "epochs", "val_split", "eval_every", "log_every", "num_workers",
                     "preload", "device", "num_threads", "compile", "channels_last", "deterministic",
                     "backbone_weights")  # fmt: skip
# The trained `cpu`-preset detector that ships with the repository (`make demo` writes it), relative to its root.
SHIPPED_MODEL = Path("out/model.pt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and the problem."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` to `path` atomically: into a temporary file of the same directory, flushed to the disk, then
    renamed over `path` (os.replace is atomic). A crash during the write leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, `path` a directory, Ctrl-C: no half-written file stays behind
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (`weights_only=True`: no code from the file runs). Raises CheckpointError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; name the file in it (e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated zip, a pickle of foreign objects, ...: torch raises many kinds
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a retina checkpoint: it lacks {missing}")
    try:
        RetinaConfig.from_dict(checkpoint["model_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its model_config is not a RetinaConfig of this version ({error})") from None
    return checkpoint


def load_model(
    checkpoint: str | Path | dict, device: str | torch.device = "cpu", tta: str | None = None
) -> tuple[RetinaNet, list[str]]:
    """The trained model of a checkpoint (a path, or a dict from `load_checkpoint`), in eval mode, and its class
    names (`classes[label]`). `tta` replaces the checkpoint's test-time augmentation (none | flip | d4)."""
    source = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    name = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    config = RetinaConfig.from_dict(source["model_config"])
    try:
        model = RetinaNet(config=config if tta is None else config.replace(tta=tta))
    except ValueError as error:
        raise CheckpointError(f"{name}: tta={tta!r} does not fit its detector: {error}") from None
    try:
        model.load_state_dict(source["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{name}: its weights do not fit its own model_config ({error})") from None
    return model.to(device).eval(), list(source["classes"])


def export_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Write the model file of checkpoint `source` to `out` (atomically): its weights, detector config, class names
    and how it was trained (`MODEL_FILE_KEYS`), without the optimiser, scaler and RNG states a resume needs.
    The file loads with `load_model`; `train --resume` refuses it (there is nothing to resume)."""
    checkpoint = load_checkpoint(source)
    load_model(checkpoint)  # refuse to export weights that do not fit their own config
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {key: checkpoint[key] for key in MODEL_FILE_KEYS if key in checkpoint})
    return out


def trained_checkpoint(preset: str = "cpu", root: str | Path = ".") -> Path:
    """The checkpoint a notebook shows: this machine's own run of `preset` (`runs/<preset>/last.pt`, written by
    notebook 05 or `python -m retina train --preset <preset>`) when there is one, else the detector shipped with
    the repository (`out/model.pt`, the `cpu` preset trained by `make demo`). Paths are relative to `root`."""
    own = Path(root) / "runs" / preset / "last.pt"
    return own if own.is_file() else Path(root) / SHIPPED_MODEL


def describe_checkpoint(path: str | Path) -> str:
    """One line for a reader: which checkpoint, which detector, how long it was trained, on what."""
    checkpoint = load_checkpoint(path)
    config = RetinaConfig.from_dict(checkpoint["model_config"])
    trained = checkpoint.get("train_config", {})
    steps = checkpoint.get("progress", {}).get("step")
    shipped = Path(path).resolve() == SHIPPED_MODEL.resolve()
    origin = "the detector shipped with the repository" if shipped else "a local run"
    return (
        f"{path} ({origin}): {config.backbone} (width {config.backbone_width}), "
        f"{steps if steps is not None else 'an unknown number of'} steps on {trained.get('data', 'unknown data')}"
    )


def check_resumable(checkpoint: dict, path: str | Path, cfg: TrainConfig, classes: list[str]) -> None:
    """Can run `cfg` (its `model` with the training set's num_classes) continue the run saved in `checkpoint`?

    It must be a run's checkpoint (not a model file), hold the same detector and classes, and have been trained by
    the same recipe: any TrainConfig field but `RESUMABLE_CHANGES` must be unchanged. A changed optimiser or
    mixed precision would load a foreign optimiser or scaler state; a changed learning rate, schedule, batch, seed
    or augmentation would be another run, not the continuation of this one. Otherwise CheckpointError lists every
    difference, old and new value.
    """
    missing = [key for key in RUN_STATE_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"cannot resume from {path}: it is a model file (weights only, as `python -m retina export` writes), "
            f"without the run's state {missing}; start a new run from its weights instead"
        )
    saved = RetinaConfig.from_dict(checkpoint["model_config"]).to_dict()
    differences = [
        f"  model.{name}: checkpoint {saved[name]!r}, this run {value!r}"
        for name, value in cfg.model.to_dict().items()
        if saved[name] != value
    ]
    if list(checkpoint["classes"]) != list(classes):
        differences.append(f"  classes: checkpoint {list(checkpoint['classes'])}, this run's data {list(classes)}")
    if "train_config" in checkpoint:
        recipe = TrainConfig.from_dict(checkpoint["train_config"]).to_dict()
        differences += [
            f"  {name}: checkpoint {recipe[name]!r}, this run {value!r}"
            for name, value in cfg.to_dict().items()
            if name not in ("model", *RESUMABLE_CHANGES) and recipe[name] != value
        ]
    if differences:
        raise CheckpointError(
            f"cannot resume from {path}: this run differs from the one it saved:\n"
            + "\n".join(differences)
            + f"\na resume may change only {', '.join(RESUMABLE_CHANGES)}; resume with the checkpoint's own "
            "settings (--resume without --preset, overrides of other fields) or start a new run in another --out"
        )


def rng_state() -> dict:
    """Every global RNG as tensors, lists and numbers, so the checkpoint loads with weights_only=True."""
    numpy_state = np.random.get_state()  # ("MT19937", keys uint32[624], pos, has_gauss, cached_gaussian)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def main(argv: list[str] | None = None) -> int:
    """`python -m retina export CHECKPOINT OUT`: the model file of a run's checkpoint; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m retina export",
        description="Keep what inference needs of a checkpoint (weights, detector config, class names, how it was "
        "trained): a small file for `evaluate`, `detect` and the notebooks.",
    )
    parser.add_argument("checkpoint", help="a checkpoint written by `python -m retina train`")
    parser.add_argument("out", type=output_file(), help="the model file to write, e.g. out/model.pt")
    args = parser.parse_args(argv)
    out = export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0
