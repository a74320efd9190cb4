"""Command line: `python -m retina {data,train,evaluate,detect,export} ...` (or the `retina` script).

Each sub-command lives with its module; this file only dispatches, importing the module it needs.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "data": ("retina.data.cli", "generate the embedded dataset, download VOC / COCO"),
    "train": ("retina.train", "train a RetinaNet"),
    "evaluate": ("retina.evaluate", "COCO mAP of a checkpoint on a dataset"),
    "detect": ("retina.viz", "draw a checkpoint's detections on images"),
    "export": ("retina.checkpoint", "keep a checkpoint's weights, config and classes: a small model file"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m retina COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
