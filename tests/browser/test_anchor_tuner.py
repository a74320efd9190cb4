"""01_anchors' anchor tuner (`retina.widgets.AnchorTuner`) in a real browser: each kind of control, moved as a person
would (a slider by keyboard, a slider by mouse drag, the ratios list, the IoU sliders, the offset buttons),
redraws the picture, and the picture is the one the package draws for the settings the page shows, stating the
anchor recall that `retina.widgets.anchor_recall` computes for them."""

from __future__ import annotations

from lab_browser import expect_drawn, open_widget

from retina.widgets import anchor_recall


def shows_recall(tuner, text: str) -> None:
    """The picture states the anchor recall of the tuner's settings over the whole dataset."""
    recall = anchor_recall(tuner.boxes_per_image, tuner.image_size, tuner.current_config())["recall"]
    assert f"anchor recall {recall:.1%}" in text, f"expected anchor recall {recall:.1%}, the picture says:\n{text}"


def test_anchor_tuner(open_notebook):
    notebook, tuner, widget, base, shown = open_widget(open_notebook, "01_anchors.ipynb", "AnchorTuner", "base size",
                                                       shows_recall)  # fmt: skip

    notebook.press_on_slider(base, "ArrowRight")  # a slider by keyboard: the next base size
    shown = expect_drawn(notebook, widget, tuner, "base-size-by-keyboard", shows_recall, before=shown)

    notebook.drag_slider(notebook.control("scales/octave", within=widget), 0.0)  # a slider by mouse: to its minimum
    shown = expect_drawn(notebook, widget, tuner, "scales-by-mouse", shows_recall, before=shown)

    notebook.toggle_option(notebook.control("h/w ratios", within=widget), "3")  # Ctrl+click adds tall anchors
    shown = expect_drawn(notebook, widget, tuner, "ratios-by-ctrl-click", shows_recall, before=shown)

    notebook.drag_slider(notebook.control("fg IoU", within=widget), 0.8)  # the foreground threshold
    shown = expect_drawn(notebook, widget, tuner, "fg-iou-by-mouse", shows_recall, before=shown)

    notebook.press_on_slider(notebook.control("bg IoU", within=widget), "ArrowLeft")  # the background threshold
    shown = expect_drawn(notebook, widget, tuner, "bg-iou-by-keyboard", shows_recall, before=shown)

    notebook.choose(notebook.control("anchor offset", within=widget), "centre 0.5")
    expect_drawn(notebook, widget, tuner, "offset-by-click", shows_recall, before=shown)

    notebook.assert_no_errors()
