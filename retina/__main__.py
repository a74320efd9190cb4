"""Command line: `python -m retina {data,train,evaluate,detect,export} ...` (or the `retina` script).

Each sub-command lives with its module; this file dispatches, importing the module it needs, and reports the
errors a user can cause: a sub-command's `main(argv)` raises them, and they end here as one line
`error: <message>` on stderr and exit status 1, without a traceback. Those are the errors whose message names the
file and the problem (bad data, a bad checkpoint or weights file, a run that cannot start, a failed download) and
`OSError` (a full disk, a path that cannot be written). Anything else is a bug and keeps its traceback. Mistakes
in the arguments themselves are argparse's: the usage and one `error:` line, exit status 2 (see `retina.cli`).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "data": ("retina.data.cli", "generate the embedded dataset, download VOC / COCO"),
    "train": ("retina.train_cli", "train a RetinaNet"),
    "evaluate": ("retina.evaluate", "COCO mAP of a checkpoint on a dataset"),
    "detect": ("retina.viz", "draw a checkpoint's detections on images"),
    "export": ("retina.checkpoint", "keep a checkpoint's weights, config and classes: a small model file"),
}


def user_errors() -> tuple[type[Exception], ...]:
    """The exception types a user's input causes, each raised with a message naming the file and the problem.
    Imported only when a command failed: a command does not pay for importing the others' modules."""
    from retina.checkpoint import CheckpointError
    from retina.data import DatasetError, DownloadError
    from retina.pretrained import WeightsError
    from retina.train import TrainingError

    return CheckpointError, DatasetError, DownloadError, WeightsError, TrainingError, OSError


def main(argv: list[str] | None = None) -> int:
    """Run `python -m retina COMMAND ARGS...`; returns the exit status (1 for an error in the input, 130 on Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m retina COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines), file=sys.stderr)
        if argv and argv[0] in ("-h", "--help"):
            return 0
        print(f"error: unknown command {argv[0]!r}" if argv else "error: no command given", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return module.main(argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise  # a bug: its traceback is what a report needs
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
