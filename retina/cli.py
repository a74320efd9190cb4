"""Argument types the `python -m retina` commands share: each checks a value when the command line is parsed.

A mistake in the arguments then stops the command at once, with argparse's usage line and one message naming the
argument (`python -m retina detect: error: argument --out: out.png is a file, not a directory`), before any model
is loaded or any output written: an unwritable output path must not cost a whole evaluation first.

    parser.add_argument("--out", type=output_file(), ...)           # a file the command writes
    parser.add_argument("--out", type=output_dir, ...)              # a directory the command writes into
    parser.add_argument("--score-thresh", type=probability, ...)    # 0..1
    parser.add_argument("--batch-size", type=int_at_least(1), ...)  # 1, 2, ...
    parser.add_argument("--device", type=device, ...)               # cpu, cuda, cuda:1, mps on this machine

Errors found later (bad data, a bad checkpoint, a full disk) are reported by the dispatcher, `retina.__main__`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["device", "int_at_least", "output_dir", "output_file", "probability"]


def _check_writable_directory(directory: Path, target: Path) -> None:
    """ArgumentTypeError unless `target` can be written in `directory`: it is a writable directory, or the nearest
    existing path above it is one (the command creates the rest)."""
    existing = next(path for path in (directory, *directory.parents) if path.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {target}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {target}: no permission to write in {existing}")


def output_file(suffixes: tuple[str, ...] = ()) -> Callable[[str], Path]:
    """The type of an argument naming a file to write (ending in one of `suffixes`, if given): not a directory, in a
    directory that exists and is writable, or can be created."""

    def check(text: str) -> Path:
        path = Path(text).expanduser()
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{path} is a directory; name the file to write")
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{path}: the file name must end in {' or '.join(suffixes)}")
        _check_writable_directory(path.parent, path)
        return path

    check.__name__ = "output file"  # argparse names the type by it in its "invalid ... value" message
    return check


def output_dir(text: str) -> Path:
    """The type of an argument naming a directory to write into: an existing writable directory, or one that can be
    created (no file in the way)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a directory")
    _check_writable_directory(path, path)
    return path


def probability(text: str) -> float:
    """A number in [0, 1], such as a score threshold."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """The type of an integer argument of at least `minimum`: a count, a batch size, an image side."""

    def check(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value

    check.__name__ = "integer"
    return check


def device(text: str) -> str:
    """A torch device that exists on this machine: cpu, cuda, cuda:<index>, mps."""
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda, cuda:1, mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine; use cpu")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine; use cpu")
    return text
