"""The live loss curve of 05_training.ipynb: a training run's loss redrawn while it trains."""

from __future__ import annotations

import io
import signal
import threading
from pathlib import Path

from IPython.display import Image, display

from retina.viz import plot_loss_curve, read_metrics


class LiveLossCurve:
    """Redraw a training run's loss curve while it trains, in the cell that runs it (05_training.ipynb)::

        with LiveLossCurve("runs/cpu/metrics.jsonl"):
            train(cfg)

    A background thread re-reads the metrics file that `retina.train` appends to every `every` seconds and
    redraws `retina.viz.plot_loss_curve` in one display area; leaving the block draws it a last time.
    `interrupt_at_step` presses the notebook's interrupt button (sends SIGINT, as Ctrl-C does) once the log
    reaches that step: `retina.train` then finishes the step, writes its checkpoint and returns, ready to resume.
    Never once the block has ended: a run shorter than the redraw interval is left alone (its "interrupt" would
    hit whatever the notebook runs next).
    """

    def __init__(self, metrics_path: str | Path, every: float = 10.0, interrupt_at_step: int | None = None):
        self.path, self.every, self.interrupt_at_step = Path(metrics_path), every, interrupt_at_step
        self.draws = 0
        self.interrupted = False
        self._stop = threading.Event()
        self._lock = threading.Lock()  # orders "press interrupt" against "the block has ended"
        self._ended = False

    def __enter__(self) -> LiveLossCurve:
        self.handle = display("waiting for the first logged steps ...", display_id=True)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._ended = True
        self._stop.set()
        self._thread.join()
        self.draw()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            step = self.draw()
            if self.interrupt_at_step is not None and not self.interrupted and step >= self.interrupt_at_step:
                with self._lock:
                    if not self._ended:
                        self.interrupted = True
                        signal.raise_signal(signal.SIGINT)

    def draw(self) -> int:
        """Redraw from the metrics file; returns the last logged step (0 if nothing is logged yet)."""
        try:
            records = read_metrics(self.path)[0] if self.path.is_file() else []
            if not records:
                return 0
            fig = plot_loss_curve(self.path)
        except ValueError:  # a line being written right now: try again next time
            return 0
        if self.handle is not None:  # None outside IPython, where there is no display to update
            png = io.BytesIO()  # rendered here, not by IPython: that needs pyplot's inline backend, maybe asleep
            fig.savefig(png, format="png", dpi=70)
            self.handle.update(Image(png.getvalue()))
        self.draws += 1
        return records[-1]["step"]
