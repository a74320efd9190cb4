"""05_training's live loss curve (`retina.widgets.LiveLossCurve`) in a real browser: the curve is drawn, and
redrawn, while the cell trains, and pressing Kernel > Interrupt Kernel stops the training cleanly: the cell
ends with the run's summary and the last curve, and no traceback.

The test's copy of the notebook stops after the first training cell, and a cell inserted before it trains for up
to two minutes instead of the smoke run's few steps (which end before anyone could press a button), without the
notebook's own interrupt at a given step."""

from __future__ import annotations

import re

import nbformat
from lab_browser import RUN_ALL_TIMEOUT, START_TIMEOUT, code_cell_index

LONGER = """\
# Added by tests/browser/test_live_loss_curve.py: train until the test presses the interrupt button (2 minutes at
# most), and leave the interrupting to it.
cfg = cfg.replace(epochs=10_000, time_budget=120.0, eval_every=0)
INTERRUPT_AT = None"""


def train_until_interrupted(notebook: nbformat.NotebookNode) -> None:
    index = code_cell_index(notebook, "LiveLossCurve(", "train(")
    notebook.cells = notebook.cells[: index + 1]
    notebook.cells.insert(index, nbformat.v4.new_code_cell(LONGER))


def test_live_loss_curve_interrupted(open_notebook, tmp_path):
    notebook = open_notebook("05_training.ipynb", edit=train_until_interrupted)
    copy = nbformat.read(notebook.server.root / "notebooks" / notebook.name, as_version=4)
    cell = notebook.cell(code_cell_index(copy, "LiveLossCurve(", "train("))
    prompt = cell.locator(".jp-InputPrompt")
    curve = ".jp-OutputArea-output img"

    notebook.menu("Run", "Run All Cells")
    notebook.wait_until("the first curve", lambda: notebook.picture(cell, curve) != b"", RUN_ALL_TIMEOUT)
    first = notebook.picture(cell, curve)
    notebook.shoot("first-curve", cell)
    notebook.wait_until("the curve redrawn", lambda: notebook.picture(cell, curve) not in (b"", first), START_TIMEOUT)
    assert prompt.text_content().strip() == "[*]:", "the training ended before the test could interrupt it"
    notebook.shoot("redrawn-while-training", cell)

    notebook.menu("Kernel", "Interrupt Kernel")
    notebook.wait_until("the training cell to end", lambda: re.fullmatch(r"\[\d+\]:", prompt.text_content().strip()),
                        START_TIMEOUT)  # fmt: skip
    notebook.wait_for_kernel("idle", START_TIMEOUT)
    notebook.shoot("after-interrupt", cell)
    text = notebook.outputs_text(cell)
    assert "interrupted" in text, f"the cell does not report an interrupted run:\n{text}"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, f"the interrupt left a traceback:\n{text}"
    assert notebook.picture(cell, curve) != b"", "the curve is gone after the interrupt"
    notebook.assert_no_errors()
