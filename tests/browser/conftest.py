"""Fixtures of the browser tests: `open_notebook`, which starts a JupyterLab server of the test's own on a copy of
a notebook and opens it in Chromium, and the failure artefacts (screenshots of each widget along the way, the
page, the console, the server's log) under test-artifacts/browser/<test>/, which git ignores.

Without Chromium or playwright the tests skip with one line saying how to get them; under CI (CI=true) they fail
instead, since a skipped browser test would let a widget that stopped redrawing pass.
"""

from __future__ import annotations

import os
import time

import pytest
from lab_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    LabServer,
    Notebook,
    chromium_missing,
    local_only,
    make_tree,
    save_artifacts,
)

ARTIFACTS = REPO / "test-artifacts" / "browser"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture's teardown knows whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, through playwright: one for the session (a second or two to start); each test
    opens its page in a context of its own, which shares no cookies, storage or cache with another test's."""
    reason = chromium_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def stopping_servers():
    """The servers of finished tests, shutting their kernels down beside the next test; all gone at the end."""
    servers: list[LabServer] = []
    yield servers
    for server in servers:
        server.wait()


@pytest.fixture
def open_notebook(request, tmp_path, browser, stopping_servers):
    """`open_notebook("01_anchors.ipynb", edit=None)` -> a `Notebook`: the copy of the notebook (changed by
    `edit(notebook)` if given) open in JupyterLab, its kernel idle and nothing run yet."""
    opened: list[tuple[LabServer, Notebook | None]] = []

    def open_(name: str, edit=None) -> Notebook:
        begun = time.monotonic()
        root = make_tree(tmp_path, name, edit)
        server = LabServer(root, tmp_path / "lab").start()
        print(f"JupyterLab on port {server.port} serving {root}")
        opened.append((server, None))
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.route("**/*", local_only)
        page = context.new_page()
        page.set_default_timeout(60_000)
        notebook = Notebook(page, server, name)
        notebook.mark(f"server up and page made in {time.monotonic() - begun:.1f} s")
        opened[-1] = (server, notebook)
        notebook.open()
        return notebook

    yield open_

    failed = any(getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))
    for server, notebook in opened:
        if failed:
            save_artifacts(ARTIFACTS / request.node.name, notebook, server)
        if notebook is not None:
            notebook.page.context.close()
        server.stop(wait=False)
        stopping_servers.append(server)
