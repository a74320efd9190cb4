"""`python -m retina train`: a training run from the command line (`retina.train.train`).

Settings come from a preset (or, with --resume alone, the checkpoint's own), then the flags, then --set KEY=VALUE
for any TrainConfig field (model.<field> for the detector's RetinaConfig), checked against the field's type.

    torchrun --nproc_per_node 2 -m retina train --preset cpu    # the demo (make demo): one process per core
    python -m retina train --preset paper --data data/coco --train-split train2017 --val-split val2017
    torchrun --nproc_per_node 8 -m retina train --preset paper --data data/coco ...
    python -m retina train --resume runs/cpu/last.pt            # continue an interrupted run
    python -m retina train --preset cpu --set model.fpn_channels=32 lr=0.002   # any config field
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from retina.checkpoint import load_checkpoint
from retina.cli import device, int_at_least, output_dir
from retina.config import PRESETS, TrainConfig
from retina.data.layout import FORMATS
from retina.train import train

# command-line flag -> TrainConfig field
FLAGS = {
    "data": "data",
    "format": "data_format",
    "train_split": "train_split",
    "val_split": "val_split",
    "out": "out_dir",
    "epochs": "epochs",
    "time_budget": "time_budget",
    "batch_size": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "schedule": "schedule",
    "workers": "num_workers",
    "device": "device",
    "amp": "amp",
    "seed": "seed",
    "eval_every": "eval_every",
}


def parse_overrides(items: list[str]) -> dict:
    """["lr=2e-3", "model.fpn_channels=32", "data=foo"] -> {"lr": 0.002, ...}: Python literals, else strings."""
    changes = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            changes[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            changes[key.strip()] = text
    return changes


def auto_or_device(text: str) -> str:
    """The type of --device: "auto" (`retina.distributed.setup_distributed` picks), or a device of this machine."""
    return text if text == "auto" else device(text)


def main(argv: list[str] | None = None) -> int:
    """`python -m retina train`: returns 0 when training finished, 130 when stopped by Ctrl-C; a wrong argument exits
    with argparse's message (status 2); a failure in the data or a checkpoint raises, and `retina.__main__` turns
    it into one `error:` line."""
    parser = argparse.ArgumentParser(
        prog="python -m retina train",
        description="Train a RetinaNet. Settings: a preset, then the flags below, then --set KEY=VALUE for any "
        "TrainConfig field (model.<field> for the detector's RetinaConfig).",
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, help="default: cpu, or the checkpoint's settings")
    parser.add_argument("--resume", metavar="CKPT", default=None, help="continue the run saved in this checkpoint")
    parser.add_argument("--data", help="dataset root (COCO or VOC layout)")
    parser.add_argument("--format", choices=FORMATS)
    parser.add_argument("--train-split")
    parser.add_argument("--val-split", help='"" to skip evaluation')
    parser.add_argument("--out", type=output_dir, help="output directory (checkpoints, metrics.jsonl, loss_curve.png)")
    parser.add_argument("--epochs", type=int_at_least(1))
    parser.add_argument("--time-budget", type=float, help="seconds of training (0: run all epochs)")
    parser.add_argument("--batch-size", type=int_at_least(1), help="images per step over all processes (scales the lr)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"))
    parser.add_argument("--schedule", choices=("step", "cosine"))
    parser.add_argument("--workers", type=int_at_least(0), help="DataLoader worker processes")
    parser.add_argument("--device", type=auto_or_device, help="auto (a GPU if there is one), cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--eval-every", type=int_at_least(0), help="epochs between evaluations (0: at the end only)")
    parser.add_argument("--weights", help='backbone initialisation: "imagenet", a .pth path, or "none"')
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (needs --time-budget 0)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="any config field")
    args = parser.parse_args(argv)
    args.out = None if args.out is None else str(args.out)  # checked as a Path; TrainConfig.out_dir is a str

    # the run to resume: a checkpoint that cannot be read raises (retina.__main__ says which and why)
    saved = load_checkpoint(args.resume).get("train_config", {}) if args.resume and args.preset is None else None
    try:
        if saved is not None:
            cfg = TrainConfig.from_dict(saved).replace(out_dir=args.out or str(Path(args.resume).parent))
        else:
            cfg = TrainConfig.preset(args.preset or "cpu")
        changes = {name: getattr(args, flag) for flag, name in FLAGS.items() if getattr(args, flag) is not None}
        if args.batch_size is not None and args.lr is None:  # the linear scaling rule (Goyal et al. 2017)
            changes["lr"] = cfg.lr * args.batch_size / cfg.batch_size
        if args.weights is not None:
            changes["backbone_weights"] = None if args.weights.lower() == "none" else args.weights
        if args.deterministic:
            changes["deterministic"] = True
        if args.compile:
            changes["compile"] = True
        cfg = cfg.replace(**(changes | parse_overrides(args.set)))  # --set has the last word
        cfg.check()  # settings that are wrong together, e.g. --deterministic with a time budget
    except ValueError as error:  # a flag or --set value the config refuses: argparse's usage and one line, exit 2
        parser.error(str(error))
    summary = train(cfg, resume=args.resume)  # a failure the user can fix becomes one `error:` line in retina.__main__
    minutes = summary["elapsed"] / 60
    print(f"{summary['status']}: {summary['step']} steps in {minutes:.1f} min of training; {summary['checkpoint']}")
    if summary["metrics"]:
        print(f"validation AP {summary['metrics']['AP']:.3f}, AP50 {summary['metrics']['AP50']:.3f}")
    return 130 if summary["status"] == "interrupted" else 0
