"""Stamp the same two opening cells on every notebook: the "Open in Colab" badge and the set-up cell.

The repository's URL is written in one place, pyproject.toml's `[project.urls] Repository`; this script
copies it into the badge and into the set-up cell's `git clone`, which Colab needs before the repository is
there. `make notebooks` runs it before executing the notebooks, and tests/test_notebooks_clean.py checks
that every notebook carries exactly these cells, so a changed URL cannot be half applied.

    python notebooks/_header.py [NOTEBOOK.ipynb ...]     # default: every notebooks/[0-9]*.ipynb
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent
PYPROJECT = NOTEBOOKS.parent / "pyproject.toml"
TAG = "retina-header"  # the stamped cells carry this tag; stamping replaces them

SETUP = """\
# Set-up, the same in every notebook. Outside the repository (on Colab, or a notebook opened alone) it clones it:
# the notebooks need its data samples and the trained detector in out/. It installs retina where it is missing,
# without replacing what the kernel has (Colab's torch, torchvision and ipywidgets stay), runs from the repository
# root, and picks the training recipe: $RETINA_PRESET, else "colab" with a GPU and "cpu" without one.
import importlib.metadata
import os

if os.path.basename(os.getcwd()) == "notebooks":
    os.chdir("..")
if not os.path.isfile("retina/__init__.py"):
    if not os.path.isdir("{name}"):
        !git clone --quiet --depth 1 {url}
    os.chdir("{name}")
try:
    importlib.metadata.version("retina")
except importlib.metadata.PackageNotFoundError:
    %pip install --quiet -e .
# the figures are mostly photos: JPEG keeps the notebooks small
%config InlineBackend.figure_formats = ["jpeg"]

import torch

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PRESET = os.environ.get("RETINA_PRESET") or ("colab" if device.type == "cuda" else "cpu")
SMOKE = os.environ.get("RETINA_SMOKE") == "1"  # set by `make test`: a few images and steps instead of the real work
print(f"device: {{device}}, preset: {{PRESET}}, smoke run: {{SMOKE}}")"""


def repo_url(pyproject: Path = PYPROJECT) -> str:
    """The `Repository` entry of pyproject.toml's `[project.urls]` table."""
    text = pyproject.read_text(encoding="utf-8")
    table = re.search(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
    entry = table and re.search(r'^\s*Repository\s*=\s*"([^"]+)"', table.group(1), flags=re.M)
    if not entry:
        raise SystemExit(f'{pyproject}: add [project.urls] Repository = "https://github.com/OWNER/NAME"')
    return entry.group(1).rstrip("/")


def header_cells(url: str, name: str) -> list:
    """The badge (markdown) and set-up (code) cells for notebook file `name`."""
    colab = url.replace("https://github.com/", "https://colab.research.google.com/github/", 1)
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}/blob/main/notebooks/{name})"
    return [
        nbformat.v4.new_markdown_cell(badge, id="colab-badge", metadata={"tags": [TAG]}),
        nbformat.v4.new_code_cell(
            SETUP.format(url=url, name=url.rsplit("/", 1)[-1]), id="setup", metadata={"tags": [TAG]}
        ),
    ]


def stamp(path: Path, url: str) -> bool:
    """Put the header cells at the top of notebook `path` (replacing earlier ones); True if it changed."""
    notebook = nbformat.read(path, as_version=4)
    body = [cell for cell in notebook.cells if TAG not in cell.metadata.get("tags", [])]
    old = notebook.cells[: len(notebook.cells) - len(body)]
    new = header_cells(url, path.name)
    if [(c.cell_type, c.source) for c in old] == [(c.cell_type, c.source) for c in new]:
        return False  # already stamped: keep the cells, with their outputs
    notebook.cells = new + body
    nbformat.write(notebook, path)
    return True


def main(argv: list[str]) -> int:
    url = repo_url()
    paths = [Path(p) for p in argv] or sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    for path in paths:
        if stamp(path, url):
            print(f"stamped {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
