"""Tidy executed notebooks: a progress bar keeps its last state, a widget keeps its static picture.

tqdm redraws its line with carriage returns; a notebook executed by nbconvert stores every one of those updates
(thousands for a training run), each as its own stream output. `make notebooks` runs this after executing the
notebooks: consecutive outputs of one stream are joined, and each line keeps only the text after its last
carriage return.

A widget's output carries a reference to its live model and, beside it, a picture of it (`retina.widgets`
draws one). Without a kernel the live model cannot be shown: JupyterLab prints "Error displaying widget: model
not found", GitHub shows nothing. Saving every model's state in the notebook's metadata would fix that at the
price of a second copy of each picture. So the committed output keeps only the picture, and the metadata no
widget state: a reader who does not run the notebook sees the picture everywhere; running the cell brings the
live widget back. tests/test_notebooks_clean.py checks both.

    python notebooks/_tidy.py [NOTEBOOK.ipynb ...]     # default: every notebooks/[0-9]*.ipynb
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent


# Where one tqdm state ends ("...]") and the next begins ("epoch 2/9:  15%|"): the kernel may deliver the states
# with their carriage returns already dropped, run together on one line.
NEXT_STATE = re.compile(r"(?<=\])(?=[^\[\]\n|]*:\s*\d+%\|)")


def last_states(text: str) -> str:
    """Each line of `text` as a terminal leaves it: the part after its last carriage return, or after the last
    of several progress-bar states run together."""
    return "\n".join(NEXT_STATE.split(line.rsplit("\r", 1)[-1])[-1] for line in text.split("\n"))


def merged_streams(outputs: list) -> list:
    """The outputs with each run of consecutive stream outputs of one stream (stdout, stderr) joined into one, and
    each of its lines at its last state. (The kernel sends every progress update as its own stream message.)"""
    merged = []
    for output in outputs:
        if output.output_type == "stream" and merged and merged[-1].output_type == "stream" and (
            merged[-1].name == output.name
        ):
            merged[-1].text += output.text
        else:
            merged.append(output)
    for output in merged:
        if output.output_type == "stream":
            output.text = last_states(output.text)
    return merged


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_widget_views(outputs: list) -> list:
    """The outputs with each widget that has a picture beside it reduced to that picture."""
    for output in outputs:
        data = output.get("data", {})
        if WIDGET_VIEW in data and any(key.startswith("image/") for key in data):
            del data[WIDGET_VIEW]
    return outputs


def tidy(path: Path) -> bool:
    """Collapse the progress updates and reduce the widgets to pictures in notebook `path`; True if it changed."""
    notebook = nbformat.read(path, as_version=4)
    before = nbformat.writes(notebook)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = without_widget_views(merged_streams(cell.outputs))
    changed = nbformat.writes(notebook) != before
    if changed:
        nbformat.write(notebook, path)
    return changed


def main(argv: list[str]) -> int:
    for path in [Path(p) for p in argv] or sorted(NOTEBOOKS.glob("[0-9]*.ipynb")):
        if tidy(path):
            print(f"tidied {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
