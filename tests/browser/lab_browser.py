"""JupyterLab in a real browser, for the widget tests of tests/browser/ (issue 20).

Each test gets a JupyterLab server of its own (a fresh server per test: JupyterLab reuses one kernel per notebook
path) on a free 127.0.0.1 port with a token, and Debian's Chromium driven by playwright, which may reach nothing
but that server. The notebook runs as a copy in a temporary tree that looks like the repository:

    <tmp>/repo/notebooks/01_anchors.ipynb   the copy (with a probe cell appended, see `PROBE`)
    <tmp>/repo/retina -> the package         (a scratch copy when RETINA_BROWSER_PACKAGE says so)
    <tmp>/repo/out, pyproject.toml, ... -> the repository's own
    <tmp>/repo/data/sample -> the repository's; generated sets (data/shapes*) are made afresh in the tree
    <tmp>/repo/runs/                         empty: what the notebook trains stays in the tree

so the set-up cell's `chdir("..")` lands where the notebook expects the repository, and nothing the notebook
writes reaches the working tree.

The tests assert on what the page shows. A widget draws its picture in the kernel; to know what it *should*
show, the probe cell hands each retina widget's constructor arguments (the data it draws from) to the test,
which rebuilds the widget in its own process, sets its controls to the values the page shows and renders the
picture the way the kernel does (`expect_drawn`). The page must then show exactly those bytes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import nbformat

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RETINA_CHROMIUM", "/usr/bin/chromium"))
# headless as root in a container; no calls home, no QUIC (every request but the server's is blocked anyway)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Generous: two CPU cores shared with whatever else runs. A healthy run is far below each.
START_TIMEOUT = 120.0  # the server, then the kernel
RUN_ALL_TIMEOUT = 300.0  # Run All of a notebook at smoke size
REDRAW_TIMEOUT = 60.0  # a widget's picture after one interaction

# Appended to the notebook copy. It prints nothing, so it cannot hide a problem of the cells above.
PROBE_TAG = "browser-test-probe"
PROBE = """\
# Added by tests/browser to its copy of the notebook: hands the retina widgets above, with the arguments they were
# built from, to the test, which computes what each should show for the settings on the page.
import gc as _gc, inspect as _inspect, os as _os, torch as _torch

# The widgets live in retina.widgets.<module>; str(): the __module__ of some C types is a descriptor.
_torch.save(
    [(type(_o).__name__, {_p: getattr(_o, _p) for _p in _inspect.signature(type(_o)).parameters})
     for _o in _gc.get_objects() if str(type(_o).__module__).startswith("retina.widgets.") and hasattr(_o, "widget")],
    _os.environ["RETINA_BROWSER_PROBE"],
)"""

# Settings of the test's own JupyterLab: every cell in the DOM (JupyterLab otherwise leaves cells out of view
# unrendered), and no news or update pop-ups (they would also ask the internet).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

# Text that means a widget failed: JupyterLab's error placeholder, or a widget printed as its Python repr
# because no widget manager rendered it.
WIDGET_FAILURE = re.compile(
    r"Error displaying widget|Error rendering widget|"
    r"\b(VBox|HBox|Box|Output|IntSlider|FloatSlider|SelectionSlider|SelectMultiple|Dropdown|Button)\((children|value|layout|description)="
)


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, in one line, or None when they can."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return 'the browser tests need playwright: pip install -e ".[dev]"'
    if not CHROMIUM.is_file():
        return f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium (Debian/Ubuntu, as root)"
    return None


# ----------------------------------------------------------------------------------------------- the temporary tree


def make_tree(tmp: Path, notebook: str, edit: Callable[[nbformat.NotebookNode], None] | None = None) -> Path:
    """The temporary repository of the module docstring, holding a copy of `notebooks/<notebook>`; `edit`
    changes the copy first (the probe is appended after it). Returns the tree's root."""
    root = tmp / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "runs").mkdir()
    package = Path(os.environ.get("RETINA_BROWSER_PACKAGE", REPO / "retina")).resolve()
    (root / "retina").symlink_to(package, target_is_directory=True)
    for entry in REPO.iterdir():
        if entry.name not in {"notebooks", "data", "runs", "retina"} and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    for entry in (REPO / "data").iterdir():
        if not entry.name.startswith("shapes"):  # generated sets: a notebook may regenerate them, so never shared
            (root / "data" / entry.name).symlink_to(entry)
    for entry in (REPO / "notebooks").iterdir():
        if entry.suffix != ".ipynb":
            (root / "notebooks" / entry.name).symlink_to(entry)

    copy = nbformat.read(REPO / "notebooks" / notebook, as_version=4)
    if edit is not None:
        edit(copy)
    copy.cells.append(nbformat.v4.new_code_cell(PROBE, metadata={"tags": [PROBE_TAG]}))
    # start from a clean page: no committed widget or output can pass for a fresh one
    copy.metadata.pop("widgets", None)
    for cell in copy.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(copy, root / "notebooks" / notebook)
    return root


def stop_after(*needles: str) -> Callable[[nbformat.NotebookNode], None]:
    """An `edit` for `make_tree`: the copy ends with the first code cell that contains every one of `needles` (the
    widget under test; the cells after it are nbval's to run, and would only cost time here)."""

    def edit(notebook: nbformat.NotebookNode) -> None:
        notebook.cells = notebook.cells[: code_cell_index(notebook, *needles) + 1]

    return edit


def code_cell_index(notebook: nbformat.NotebookNode, *needles: str) -> int:
    """The index of the first code cell whose source contains every one of `needles`."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and all(needle in cell.source for needle in needles):
            return index
    raise AssertionError(f"no code cell contains {needles}: has the notebook changed? update the test")


# ------------------------------------------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab` on 127.0.0.1 serving `root`, with its own settings, workspaces and runtime files under
    `state`. The kernel inherits the environment: RETINA_SMOKE=1, and the tree first on PYTHONPATH, so it imports
    the tree's `retina`."""

    def __init__(self, root: Path, state: Path):
        self.root, self.state, self.token = root, state, secrets.token_hex(16)
        # the server without what the tests do not use: the search for language servers at start, terminals
        config = {"LanguageServerManager": {"autodetect": False}, "ServerApp": {"terminals_enabled": False}}
        (state / "config").mkdir(parents=True, exist_ok=True)
        (state / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        for name, values in LAB_SETTINGS.items():
            path = state / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.probe = state / "probe.pt"
        self.env = {
            **os.environ,
            "RETINA_SMOKE": "1",
            "RETINA_BROWSER_PROBE": str(self.probe),
            "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTER_CONFIG_DIR": str(state / "config"),  # nobody's personal jupyter config
            "OMP_WAIT_POLICY": "PASSIVE",  # see the Makefile: spinning threads on shared cores
        }
        self.log_path = state / "jupyterlab.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> LabServer:
        for _ in range(3):  # another process may take the free port between asking and binding
            self.port = _free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                     f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                     f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                     *(["--allow-root"] if os.geteuid() == 0 else [])],  # root: containers, CI
                    cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5):
                        return self
                except OSError:
                    time.sleep(0.3)  # the server is still starting: nothing to wait on but its port
            self.stop()
            if "already in use" not in self.log():
                break
        raise RuntimeError(f"JupyterLab did not start; its log: {self.log_path}\n{self.log()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self, wait: bool = True) -> None:
        """SIGTERM, on which JupyterLab shuts its kernels down (a few seconds); `wait=False` leaves that to run
        beside the next test, and `wait()` to collect it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            if wait:
                self.wait()

    def wait(self) -> None:
        """Wait for the stopped server to exit; kill it if it has not within 20 s."""
        if self.process is not None:
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def widget_args(self) -> dict[str, dict]:
        """What the probe cell saved: {widget class name: its constructor arguments}. One widget per class."""
        import torch

        assert self.probe.is_file(), "the probe cell at the end of the notebook copy did not run"
        found = torch.load(self.probe, weights_only=False)
        names = [name for name, _ in found]
        assert len(names) == len(set(names)), f"two widgets of one class in the notebook {names}: extend the test"
        return dict(found)


# -------------------------------------------------------------------------------------------------------- the page


def local_only(route) -> None:
    """Playwright route handler: requests to the test's own server pass, everything else is blocked (the Colab
    badge image would otherwise send Chromium to the internet)."""
    if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort("blockedbyclient")


class Notebook:
    """One notebook open in JupyterLab: run it, wait for it, find its widgets and read what they show."""

    def __init__(self, page, server: LabServer, name: str):
        self.page, self.server, self.name = page, server, name
        self.console_errors: list[str] = []
        self.blocked: list[str] = []
        self.shots: list[tuple[str, bytes]] = []  # (name, png) of widgets along the way, saved if the test fails
        self.started = time.monotonic()
        self.timeline: list[str] = []  # "12.3 s  what happened", printed by pytest for a failed test
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))
        page.on("requestfailed", self._on_request_failed)

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def _on_request_failed(self, request) -> None:
        if urlsplit(request.url).hostname not in ("127.0.0.1", "localhost"):
            self.blocked.append(request.url)

    def mark(self, what: str) -> None:
        """Note the time of a step: where a slow or failed test spent its time."""
        self.timeline.append(f"{time.monotonic() - self.started:6.1f} s  {what}")
        print(self.timeline[-1])

    # --- opening, running, waiting

    def open(self) -> None:
        self.page.goto(f"{self.server.url}/lab/tree/notebooks/{self.name}?token={self.server.token}")
        self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=START_TIMEOUT * 1000)
        self.mark("page shows the notebook")
        self.dismiss_popups()
        self.wait_for_kernel("idle", START_TIMEOUT)
        self.mark("opened, kernel idle")

    def dismiss_popups(self) -> None:
        """Close JupyterLab's toasts (the news question, update notices) if any is up: they can cover widgets. A
        kernel choice dialog (the settings should prevent it) is answered with the notebook's own kernel."""
        dialog = self.page.locator(".jp-Dialog").filter(has_text="Select Kernel")
        if dialog.count() and dialog.first.is_visible():
            dialog.first.locator("button.jp-mod-accept").click()
        for button in self.page.locator(".jp-Notification-Toast-Close, .Toastify__close-button").all():
            if button.is_visible():
                button.click()

    def kernel_status(self) -> str:
        """The notebook toolbar's kernel status, lower case: idle, busy, connecting, ... ('' while there is no
        kernel: the toolbar reads "idle" then too, before the kernel has even started)."""
        indicator = self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator")
        if indicator.count() == 0 or "No Kernel" in (self.page.locator("#jp-main-statusbar").text_content() or ""):
            return ""
        return (indicator.first.get_attribute("data-status") or "").lower()

    def wait_for_kernel(self, status: str, timeout: float) -> None:
        self.wait_until(f"the kernel to be {status}", lambda: self.kernel_status() == status, timeout)

    def wait_until(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        """Poll `condition` until it holds (playwright's own timer between polls); fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.page.wait_for_timeout(400)

    def menu(self, *path: str) -> None:
        """Click through the main menu, e.g. menu("Run", "Run All Cells")."""
        self.page.locator("#jp-MainMenu .lm-MenuBar-itemLabel").get_by_text(path[0], exact=True).click()
        for label in path[1:]:
            self.page.locator(".lm-Menu:visible .lm-Menu-itemLabel").get_by_text(label, exact=True).click()

    def prompts(self) -> list[str]:
        """The input prompt of every code cell, in order: '[3]:' ran, '[*]:' running or queued, '[ ]:' not run."""
        # textContent, not innerText: polled often, and innerText makes the browser lay the page out each time
        return [p.strip() for p in self.page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()]

    def cell(self, index: int):
        """Cell `index` of the notebook (markdown cells count), as a playwright locator."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def run_all(self, timeout: float = RUN_ALL_TIMEOUT) -> None:
        """Run > Run All Cells, and wait until every code cell has run (or one failed). If the kernel restarts
        meanwhile (seen on a crowded machine: the server interrupts a kernel it restarts, and the queued cells
        are dropped), Run All once more, in the new kernel."""
        for attempt in (1, 2):
            self.wait_for_kernel("idle", START_TIMEOUT)
            self.menu("Run", "Run All Cells")
            # A kernel that reads idle may not have received the cells yet: first see them queued or running.
            self.wait_until("Run All to start", lambda: any(p != "[ ]:" for p in self.prompts()), START_TIMEOUT)
            self.wait_until("the notebook to stop running", lambda: "[*]:" not in self.prompts(), timeout)
            if all(re.fullmatch(r"\[\d+\]:", p) for p in self.prompts()) or self.has_error():
                break
            self.mark(f"Run All stopped short, cells left unrun: {self.prompts()} (attempt {attempt})")
        else:
            raise AssertionError(f"Run All stopped short twice, cells left unrun: {self.prompts()}")
        self.wait_for_kernel("idle", START_TIMEOUT)
        self.mark("ran")
        self.assert_no_errors()

    def has_error(self) -> bool:
        """Whether an output shows an exception (a traceback, or IPython's short form of a SyntaxError)."""
        stderr = self.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        return stderr.filter(has_text=re.compile(r"Traceback|^\w*(Error|Exception|Interrupt)\b", re.M)).count() > 0

    def outputs_text(self, scope=None) -> str:
        return "\n".join((scope or self.page).locator(".jp-OutputArea-output").all_inner_texts())

    def assert_no_errors(self) -> None:
        """No traceback in any output, no widget that failed to render or was printed as its repr, no JavaScript
        error in the console (but for the requests this test blocked on purpose)."""
        text = self.outputs_text()
        assert "Traceback" not in text and not self.has_error(), f"an output shows an error:\n{text[-3000:]}"
        failed = WIDGET_FAILURE.search(text)
        assert failed is None, f"a widget did not render: {text[max(failed.start() - 200, 0) : failed.end() + 200]}"
        errors = [e for e in self.console_errors if not any(url in e for url in self.blocked)]
        errors = [e for e in errors if not ("Failed to load resource" in e and "blockedbyclient" in e.lower())]
        assert not errors, "JavaScript errors in the console:\n" + "\n".join(errors)

    # --- widgets

    def control(self, description: str, within=None):
        """The ipywidgets control whose description label reads exactly `description` (on the page, or `within`
        one widget): the element whose own label it is, whatever the kind of control."""
        assert "'" not in description, "a description with a quote: quote it differently below"
        scope = within or self.page
        label = f"label[contains(@class, 'widget-label')][normalize-space(.)='{description}']"
        found = scope.locator(f"xpath=.//{label}/..")
        assert found.count() == 1, f"{found.count()} controls labelled {description!r} on the page (want one)"
        return found

    def widget_of(self, control):
        """The whole widget a control belongs to: its nearest enclosing box that also holds an output area."""
        return control.locator(
            "xpath=ancestor::div[contains(@class, 'widget-box')][.//div[contains(@class, 'widget-output')]][1]"
        )

    def shown_value(self, control) -> str | tuple[str, ...]:
        """What a control shows: a slider's readout, the selected option(s) of a list, a dropdown's choice."""
        return control.evaluate(
            """el => {
                const norm = t => t.replace(/\\s+/g, ' ').trim();  // ipywidgets pads labels with no-break spaces
                const readout = el.querySelector('.widget-readout');
                if (readout) return norm(readout.innerText);
                const select = el.querySelector('select');
                if (select && select.multiple) return [...select.selectedOptions].map(o => norm(o.text));
                if (select) return norm(select.selectedOptions[0].text);
                if (el.classList.contains('widget-toggle-buttons'))
                    return norm(el.querySelector('.widget-toggle-button.mod-active')?.innerText ?? '');
                throw new Error('unknown control: ' + el.className);
            }"""
        )

    def picture(self, scope, images: str = ".widget-output img") -> bytes:
        """The bytes of the first image in `scope` (a widget's output area by default; b'' while there is none)."""
        images = scope.locator(images)
        if images.count() == 0:
            return b""
        src = images.first.get_attribute("src") or ""
        return base64.b64decode(src.split(",", 1)[1]) if src.startswith("data:") else b""

    def shoot(self, name: str, locator) -> None:
        """Keep a screenshot of `locator` (saved only if the test fails)."""
        try:
            self.shots.append((name, locator.screenshot(timeout=10_000)))
        except Exception as error:  # a screenshot is evidence, never the reason a test fails
            self.shots.append((f"{name}-failed", str(error).encode()))

    def drag_slider(self, control, fraction: float) -> None:
        """Drag a slider's handle with the mouse to `fraction` (0..1) of its track."""
        handle = control.locator(".noUi-handle").first
        track = control.locator(".noUi-target").first
        handle.scroll_into_view_if_needed()
        hbox, tbox = handle.bounding_box(), track.bounding_box()
        x, y = hbox["x"] + hbox["width"] / 2, hbox["y"] + hbox["height"] / 2
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(tbox["x"] + fraction * tbox["width"], y, steps=8)
        self.page.mouse.up()

    def toggle_option(self, control, option: str) -> None:
        """Ctrl+click the option labelled `option` of a multiple-selection list: adds it to the selection, or
        takes it out."""
        self.page.keyboard.down("Control")
        control.locator("option").filter(has_text=re.compile(rf"^\s*{re.escape(option)}\s*$")).click()
        self.page.keyboard.up("Control")

    def choose(self, control, option: str) -> None:
        """Pick `option` of a dropdown, or click the toggle button labelled `option`."""
        select = control.locator("select")
        if select.count():
            labels = [" ".join(text.split()) for text in select.locator("option").all_inner_texts()]
            select.select_option(index=labels.index(option))
        else:
            control.locator("button").filter(has_text=re.compile(rf"^\s*{re.escape(option)}\s*$")).click()

    def press_on_slider(self, control, key: str) -> None:
        """Focus a slider's handle, as a click or Tab would, and press `key` (ArrowRight, ArrowLeft, ...)."""
        handle = control.locator(".noUi-handle").first
        handle.focus()
        handle.press(key)


# ------------------------------------------------------------------------------------- what a widget should show


def rebuild(widget_class: str, args: dict):
    """The retina widget `widget_class` built in this process from the arguments the probe saved, with its redraw
    switched off: here it only answers `draw()` for the control values set on it, and displays nothing."""
    import retina.widgets

    quiet = type(widget_class, (getattr(retina.widgets, widget_class),), {"redraw": lambda self: None})
    return quiet(**args)


def controls_of(widget) -> dict[str, object]:
    """The ipywidgets controls of a rebuilt widget, by description."""
    import ipywidgets

    return {
        value.description: value
        for value in vars(widget).values()
        if isinstance(value, ipywidgets.DOMWidget) and getattr(value, "description", "")
    }


def set_shown(control, shown: str | list[str]) -> None:
    """Set a control of a rebuilt widget to what the page shows for it (see `Notebook.shown_value`)."""
    if hasattr(control, "label"):  # a selection: set by the label(s) the page shows
        labels = {" ".join(label.split()): label for label in control._options_labels}
        control.label = tuple(labels[s] for s in shown) if isinstance(shown, list) else labels[shown]
    elif isinstance(control.value, bool):
        control.value = shown == "true"
    elif isinstance(control.value, int):
        control.value = int(shown)
    else:
        control.value = float(shown)


def render(fig) -> bytes:
    """A figure's image as the kernel displays it: IPython's JPEG formatter (the set-up cell asks for JPEG),
    which crops it as the inline backend does."""
    from IPython.core.pylabtools import print_figure
    from matplotlib import pyplot as plt

    data = print_figure(fig, "jpeg", bbox_inches="tight")
    plt.close(fig)
    return data


def figure_text(fig) -> str:
    """Every title, label and legend entry of a figure (not the tick labels), one a line: what the picture says
    in words."""
    from matplotlib.text import Text

    ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()}
    return "\n".join(t.get_text() for t in fig.findobj(Text) if t.get_text() and id(t) not in ticks)


def expect_drawn(notebook: Notebook, widget, rebuilt, step: str, check=None, before: bytes | None = None) -> bytes:
    """Wait until `widget` on the page shows exactly the picture `rebuilt` (see `rebuild`) draws for the control
    values the page shows, and return it. `check(rebuilt, text)` asserts on the numbers that picture states (its
    titles and labels, `text`); `before`, the picture before an interaction, must differ from it: an interaction
    that changes nothing visible proves nothing."""
    values = {}
    for description, control in controls_of(rebuilt).items():
        values[description] = notebook.shown_value(notebook.control(description, within=widget))
        set_shown(control, values[description])
    fig = rebuilt.draw()
    text = figure_text(fig)
    expected = render(fig)
    if check is not None:
        check(rebuilt, text)
    assert expected != before, f"{step}: the page shows {values}, which draw the same picture as before"
    try:
        notebook.wait_until(f"{step}: the picture for {values}", lambda: notebook.picture(widget) == expected,
                            REDRAW_TIMEOUT)  # fmt: skip
        notebook.wait_for_kernel("idle", START_TIMEOUT)
        assert notebook.picture(widget) == expected, f"{step}: a later redraw replaced the picture for {values}"
    except AssertionError as error:
        notebook.shoot(f"{step}-failed", widget)
        shown = notebook.picture(widget)
        stale = " (still the picture from before)" if shown == before else ""
        raise AssertionError(f"{error}{stale}; the picture should say:\n{text}") from None
    notebook.shoot(step, widget)
    notebook.mark(f"{step}: shows the picture for {values}")
    return expected


def open_widget(open_notebook, name: str, widget_class: str, first_control: str, check):
    """Open a copy of notebook `name` cut after the cell that shows `widget_class`, Run All, rebuild the widget in
    this process from the arguments the kernel used, and wait for its first picture. Returns (notebook, rebuilt
    widget, the widget's element on the page, its control labelled `first_control`, the picture shown)."""
    notebook = open_notebook(name, edit=stop_after(f"{widget_class}("))
    notebook.run_all()
    rebuilt = rebuild(widget_class, notebook.server.widget_args()[widget_class])
    control = notebook.control(first_control)
    widget = notebook.widget_of(control)
    return notebook, rebuilt, widget, control, expect_drawn(notebook, widget, rebuilt, "after-run-all", check)


def save_artifacts(directory: Path, notebook: Notebook | None, server: LabServer | None) -> None:
    """A failed test's evidence: its widget screenshots, the whole page, the console and the server's log."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if notebook is not None:
        for i, (name, data) in enumerate(notebook.shots):
            (directory / f"{i:02d}-{name}.png").write_bytes(data)
        try:
            notebook.page.screenshot(path=directory / "page.png", full_page=True, timeout=10_000)
        except Exception as error:
            (directory / "page-screenshot-failed.txt").write_text(str(error))
        (directory / "console.txt").write_text("\n".join(notebook.console_errors + ["blocked:"] + notebook.blocked))
        (directory / "timeline.txt").write_text("\n".join(notebook.timeline))
    if server is not None:
        (directory / "jupyterlab.log").write_text(server.log())
