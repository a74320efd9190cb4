"""What every notebook widget of `retina.widgets` is built on: a row of controls above an output area redrawn
when a control changes, and the display bundle that also carries the picture for readers without a kernel."""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
from IPython.display import display
from matplotlib import pyplot as plt


class Widget:
    """A control panel above an output area that is redrawn by `draw()` whenever a control changes."""

    def _build(self, controls: list[widgets.Widget]) -> None:
        self.output = widgets.Output()
        for control in controls:
            control.observe(lambda _: self.redraw(), names="value")
        self.widget = widgets.VBox([widgets.HBox(controls), self.output])
        self.redraw()

    def redraw(self) -> None:
        with self.output:
            self.output.clear_output(wait=True)
            fig = self.draw()
            display(fig)
            plt.close(fig)

    def draw(self):
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)


def widget_bundle(widget: widgets.Widget, **kwargs) -> dict:
    """What displaying `widget` publishes. ipywidgets 8 says it itself; ipywidgets 7 (the one in Colab's kernel)
    only has `_ipython_display_`, which publishes this same widget-view bundle."""
    if hasattr(widget, "_repr_mimebundle_"):
        return widget._repr_mimebundle_(**kwargs)
    view = {"version_major": 2, "version_minor": 0, "model_id": widget._model_id}
    return {"text/plain": repr(widget)[:110], "application/vnd.jupyter.widget-view+json": view}


def with_picture(bundle: dict, fig, quality: int | None = None) -> dict:
    """A widget's display bundle with `fig` added as a JPEG (of `quality`, default PIL's): GitHub and nbviewer,
    which do not render widgets, show the picture. Closes `fig`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=fig.dpi, pil_kwargs=None if quality is None else {"quality": quality})
    plt.close(fig)
    bundle["image/jpeg"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return bundle
