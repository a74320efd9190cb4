"""03_focal_loss's focal-loss explorer (`retina.widgets.FocalLossExplorer`) in a real browser: the gamma, alpha
and prior sliders, moved by keyboard and by mouse, redraw the picture, and it is the one the package draws for
the settings the page shows, with the step-0 losses (`retina.widgets.step0_loss`) and the easy negatives' share of
the loss (`retina.widgets.easy_negative_share`) computed for them."""

from __future__ import annotations

from lab_browser import expect_drawn, open_widget


def shows_losses(explorer, text: str) -> None:
    """The picture states the step-0 loss of each (prior, loss) bar and the easy negatives' share of the loss."""
    for (prior, name), loss in explorer.table().items():
        expected = f"expected the {name} loss at prior {prior:g}: {loss:.2f}"
        assert f"{loss:.2f}" in text, f"{expected}; the picture says:\n{text}"
    share = explorer.easy()["focal"]
    assert f"{share:.1%} of the focal loss" in text, f"expected easy negatives {share:.1%}; the picture says:\n{text}"


def test_focal_loss_explorer(open_notebook):
    notebook, explorer, widget, gamma, shown = open_widget(
        open_notebook, "03_focal_loss.ipynb", "FocalLossExplorer", "gamma", shows_losses
    )

    notebook.press_on_slider(gamma, "ArrowLeft")  # by keyboard
    shown = expect_drawn(notebook, widget, explorer, "gamma-by-keyboard", shows_losses, before=shown)

    notebook.drag_slider(notebook.control("alpha", within=widget), 0.75)  # by mouse
    shown = expect_drawn(notebook, widget, explorer, "alpha-by-mouse", shows_losses, before=shown)

    notebook.press_on_slider(notebook.control("prior pi", within=widget), "ArrowLeft")  # a larger prior
    expect_drawn(notebook, widget, explorer, "prior-by-keyboard", shows_losses, before=shown)

    notebook.assert_no_errors()
