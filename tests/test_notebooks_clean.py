"""The committed notebooks are clean: executed top to bottom without errors, no machine paths, small, and each
opens with the Colab badge and set-up cell stamped from pyproject.toml by notebooks/_header.py."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = [
    "00_data.ipynb",
    "01_anchors.ipynb",
    "02_target_encoding.ipynb",
    "03_focal_loss.ipynb",
    "04_fpn.ipynb",
    "05_training.ipynb",
    "06_nms.ipynb",
]
MACHINE_PATH = re.compile(r"(/work/|/root/|/tmp/|/home/|/Users/|[A-Za-z]:\\\\Users)")
MAX_BYTES = 1_000_000


def load_header():
    spec = importlib.util.spec_from_file_location("notebook_header", NOTEBOOKS / "_header.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def texts(value, key: str = ""):
    """Every string inside a notebook's JSON, except image data (base64 may contain anything)."""
    if key.startswith("image/"):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from texts(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from texts(v, key)


def test_the_notebooks_are_all_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("[0-9]*.ipynb")) == EXPECTED


@pytest.fixture(params=EXPECTED)
def notebook(request):
    path = NOTEBOOKS / request.param
    return path, nbformat.read(path, as_version=4)


def test_valid_and_small(notebook):
    path, nb = notebook
    nbformat.validate(nb)
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"


def test_executed_top_to_bottom_in_one_run(notebook):
    path, nb = notebook
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]
    assert None not in counts, f"{path.name}: a code cell was not executed"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts}"


def test_no_errors(notebook):
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{path.name} cell {i}: {output.get('ename')}: {output.get('evalue')}"
            if output.output_type == "stream":
                assert "Traceback (most recent call last)" not in output.text, f"{path.name} cell {i}"


def test_progress_bars_hold_their_last_state(notebook):
    """A committed output holds what a terminal would show, not every redraw of a progress bar (_tidy.py)."""
    path, nb = notebook
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                assert "\r" not in output.text, f"{path.name} cell {i}: run notebooks/_tidy.py"
        streams = [o.name if o.output_type == "stream" else None for o in cell.get("outputs", [])]
        repeated = [a for a, b in zip(streams, streams[1:], strict=False) if a is not None and a == b]
        assert not repeated, f"{path.name} cell {i}: consecutive {repeated[0]} outputs: run notebooks/_tidy.py"


def test_widgets_are_committed_as_their_pictures(notebook):
    """Without a kernel a live widget shows as "model not found": the committed output is its picture (_tidy.py)."""
    path, nb = notebook
    assert "widgets" not in nb.metadata, f"{path.name}: widget state in the metadata: run notebooks/_tidy.py"
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            widget_view = "application/vnd.jupyter.widget-view+json" in output.get("data", {})
            assert not widget_view, f"{path.name} cell {i}: a live widget's view: run notebooks/_tidy.py"


def test_tidy_reduces_a_widget_to_its_picture():
    spec = importlib.util.spec_from_file_location("notebook_tidy", NOTEBOOKS / "_tidy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    view = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    with_picture = nbformat.v4.new_output(
        "display_data", data={module.WIDGET_VIEW: view, "image/jpeg": "/9j/", "text/plain": "Tuner(...)"}
    )
    alone = nbformat.v4.new_output("display_data", data={module.WIDGET_VIEW: view, "text/plain": "VBox(...)"})
    kept = module.without_widget_views([with_picture, alone])
    assert set(kept[0].data) == {"image/jpeg", "text/plain"}
    assert module.WIDGET_VIEW in kept[1].data  # a widget with no picture keeps its view: there is nothing better


def test_tidy_keeps_the_last_state_of_each_line():
    spec = importlib.util.spec_from_file_location("notebook_tidy", NOTEBOOKS / "_tidy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.last_states("a 1%\ra 50%\ra 100%\nb\nc 1%\rc 2%") == "a 100%\nb\nc 2%"
    states = "epoch 1/9:   0%|   | 0/5 [00:00<?, ?it/s]epoch 1/9:  20%|█  | 1/5 [00:01<00:04, loss=0.5]"
    last = "epoch 1/9:  20%|█  | 1/5 [00:01<00:04, loss=0.5]"
    assert module.last_states(states + "\nvalidation [done]\n") == last + "\nvalidation [done]\n"


def test_no_machine_paths(notebook):
    path, nb = notebook
    for text in texts(json.loads(nbformat.writes(nb))):
        match = MACHINE_PATH.search(text)
        assert match is None, (
            f"{path.name}: machine path {match.group(0)!r} in {text[max(0, match.start() - 60) :][:160]!r}"
        )


def test_checked_outputs_are_stored(notebook):
    """nbval compares the cells marked NBVAL_CHECK_OUTPUT with their stored outputs: those must exist."""
    path, nb = notebook
    checked = [cell for cell in nb.cells if cell.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in cell.source]
    for cell in checked:
        assert cell.outputs, f"{path.name}: a checked cell has no stored output"


def test_opens_with_the_stamped_badge_and_setup(notebook):
    path, nb = notebook
    header = load_header()
    url = header.repo_url()
    expected = header.header_cells(url, path.name)
    assert [(c.cell_type, c.source) for c in nb.cells[:2]] == [(c.cell_type, c.source) for c in expected]
    assert "colab.research.google.com/assets/colab-badge.svg" in nb.cells[0].source
    assert f"blob/main/notebooks/{path.name})" in nb.cells[0].source
    assert f"!git clone --quiet --depth 1 {url}\n" in nb.cells[1].source
    assert not any(header.TAG in cell.metadata.get("tags", []) for cell in nb.cells[2:])


def test_every_notebook_takes_the_preset_from_the_setup_cell(notebook):
    """One switch picks the recipe (RETINA_PRESET, read in the set-up cell): no notebook decides it again."""
    path, nb = notebook
    body = "\n".join(cell.source for cell in nb.cells[2:] if cell.cell_type == "code")
    assert "PRESET =" not in body, f"{path.name} sets its own PRESET"
    assert "runs/cpu" not in body and "runs/colab" not in body, f"{path.name} names a run's path: use PRESET"


def test_every_notebook_reads_the_smoke_switch(notebook):
    """`make test` sets RETINA_SMOKE=1; each notebook that does long work must shrink it (SMOKE)."""
    path, nb = notebook
    body = "\n".join(cell.source for cell in nb.cells[2:] if cell.cell_type == "code")
    if any(word in body for word in ("generate_shapes(", "train(")):
        assert "SMOKE" in body, f"{path.name} does long work without a smoke branch"


def test_repo_url_is_read_from_pyproject(tmp_path):
    header = load_header()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\n\n[project.urls]\nHomepage = "https://a.b"\n'
        'Repository = "https://github.com/someone/fork/"\n\n[tool.x]\nRepository = "no"\n'
    )
    assert header.repo_url(pyproject) == "https://github.com/someone/fork"
    cells = header.header_cells("https://github.com/someone/fork", "01_anchors.ipynb")
    assert (
        "https://colab.research.google.com/github/someone/fork/blob/main/notebooks/01_anchors.ipynb" in cells[0].source
    )
    pyproject.write_text('[project]\nname = "x"\n[tool.x]\nRepository = "https://github.com/no/no"\n')
    with pytest.raises(SystemExit, match="add \\[project.urls\\]"):
        header.repo_url(pyproject)
