"""06_nms's NMS explorer (`retina.widgets.NMSExplorer`) in a real browser: the score and IoU sliders, moved by
keyboard and by mouse, and the image picker redraw the picture, and it is the one the package draws for the
settings the page shows, with the box counts that the score threshold and `retina.postprocess.batched_nms`
(`retina.widgets.nms_filter`) keep."""

from __future__ import annotations

import re

from lab_browser import expect_drawn, open_widget

from retina.widgets import nms_filter


def shows_counts(explorer, text: str) -> None:
    """The picture states how many candidates pass the score threshold and how many of them NMS keeps."""
    score, iou = explorer.score.value, explorer.iou.value
    above = int((explorer.scores > score).sum())
    kept = len(nms_filter(explorer.boxes, explorer.scores, explorer.labels, score, iou))
    for name, count in (("before NMS", above), ("after NMS", kept)):
        assert re.search(rf"{name}\D*\b{count}\b", text), f"expected {name} {count} boxes, the picture says:\n{text}"


def test_nms_explorer(open_notebook):
    notebook, explorer, widget, score, shown = open_widget(open_notebook, "06_nms.ipynb", "NMSExplorer", "score >",
                                                           shows_counts)  # fmt: skip

    notebook.press_on_slider(score, "ArrowLeft")  # by keyboard: one step lower, more candidates
    shown = expect_drawn(notebook, widget, explorer, "score-by-keyboard", shows_counts, before=shown)

    notebook.drag_slider(notebook.control("NMS IoU", within=widget), 1.0)  # by mouse: IoU 1, NMS keeps every box
    shown = expect_drawn(notebook, widget, explorer, "iou-by-mouse", shows_counts, before=shown)

    picker = notebook.control("image", within=widget)
    notebook.choose(picker, " ".join(picker.locator("option").nth(1).inner_text().split()))  # the second image
    expect_drawn(notebook, widget, explorer, "image-picked", shows_counts, before=shown)

    notebook.assert_no_errors()
