"""JupyterLab in a real browser: the user editor's widgets, and the endpoint through Jupyter's proxy.

nbval proves a notebook's kernel runs; only a browser shows "Error displaying widget" (an
ipywidgets front end that does not match the kernel's package, a missing lab extension). These
tests start JupyterLab as `make lab` does (``kafka-crud lab``, embedded broker included), open a
notebook in headless Chromium, run all cells, type a user into the editor, click Create, and
wait for the user in the state view and for its record in the log view.

A third test runs a notebook cell that starts the endpoint and creates a user, follows the link
the cell shows (``<lab>/proxy/<port>/``, jupyter-server-proxy) in the same logged-in browser, and
finds the user on the endpoint's page; a browser without Jupyter's login does not.

Screenshots go to test-artifacts/browser/: after the click on success, for a person to look at;
the page and JupyterLab's output on failure. The endpoint's page is also saved to the system's
temporary folder (kafka-crud-endpoint-through-proxy.png).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser.jupyterlab import (
    ARTIFACTS,
    Lab,
    launch_chromium,
    open_notebook,
    page_problems,
    run_all_cells,
    start_lab,
    wait_for_widget,
    wait_until_all_cells_ran,
)
from playwright.sync_api import Browser, Locator, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

# Each step has its own bounded wait (JupyterLab up 150 s, notebook open 90 s, cells run 120 s,
# the click's result 60 s); the timeout is the backstop, with room for installing Chromium on a
# fresh machine. The two tests share one JupyterLab and take one to two minutes together.
pytestmark = [pytest.mark.browser, pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "browser" / "widget-smoke.ipynb"
PROXY_FIXTURE = Path(__file__).parent / "browser" / "proxy-smoke.ipynb"
NOTEBOOK_02 = ROOT / "notebooks" / "02-producing.ipynb"
SCREENSHOTS = ARTIFACTS / "browser"

EDITOR = (".kafka-crud-email", ".kafka-crud-name", ".kafka-crud-create", ".kafka-crud-state", ".kafka-crud-log")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """``kafka-crud lab`` on a copy of notebooks/ plus the fixture notebook (a run saves what it opens)."""
    work = tmp_path_factory.mktemp("lab")
    notebooks = work / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(FIXTURE, notebooks / FIXTURE.name)
    shutil.copy(PROXY_FIXTURE, notebooks / PROXY_FIXTURE.name)
    with start_lab(notebooks, work) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
    finally:
        context.close()


def _texts(page: Page, selector: str) -> str:
    return " | ".join(t.strip()[:500] for t in page.locator(selector).all_inner_texts()) or "(none)"


def _wait_for_text(page: Page, selector: str, text: str, what: str, *, timeout: float = 60.0) -> Locator:
    """The first ``selector`` element whose text contains ``text``; fails saying what the views show."""
    found = page.locator(selector, has_text=text).first
    try:
        found.wait_for(state="visible", timeout=timeout * 1000)
    except PlaywrightTimeout:
        pytest.fail(
            f"{text!r} did not appear in {what} ({selector}) within {timeout:.0f} s of clicking Create.\n"
            f"status: {_texts(page, '.kafka-crud-status')}\nstate: {_texts(page, '.kafka-crud-state')}\n"
            f"log: {_texts(page, '.kafka-crud-log')}\n" + "\n".join(page_problems(page)),
            pytrace=False,
        )
    return found


def _save_failure(page: Page, lab: Lab, name: str, console_errors: list[str]) -> str:
    """Screenshot and JupyterLab's output into the artifacts; what to tell the person reading the failure."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / f"{name}-failure-lab-output.log").write_text(lab.output())
    details = f"Screenshot and JupyterLab's output: {SCREENSHOTS.relative_to(ROOT)}/{name}-failure*"
    try:
        page.screenshot(path=SCREENSHOTS / f"{name}-failure.png", timeout=15_000)
    except PlaywrightError as exc:
        details += f" (the screenshot failed: {exc.message.splitlines()[0]})"
    if console_errors:
        details += "\nBrowser console errors:\n  " + "\n  ".join(e[:500] for e in console_errors[-20:])
    return details


def _create_a_user_in_the_editor(page: Page, lab: Lab, notebook: str, name: str) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    try:
        open_notebook(page, lab, notebook)
        run_all_cells(page)
        editor = wait_for_widget(page, ".kafka-crud-email")
        wait_until_all_cells_ran(page, lab, notebook)
        for selector in EDITOR:
            wait_for_widget(page, selector, timeout=30)
        before = _texts(page, ".kafka-crud-state") + _texts(page, ".kafka-crud-log")
        assert email not in before, f"{email} is in the views before it was created: {before}"

        # The class is on the widget's element; the text box a person types into is inside it.
        editor.locator("input, textarea").first.fill(email)
        page.locator(".kafka-crud-name").first.locator("input, textarea").first.fill("Ada Lovelace")
        page.locator(".kafka-crud-create").first.click()

        _wait_for_text(page, ".kafka-crud-state", email, "the state view")
        log = _wait_for_text(page, ".kafka-crud-log", email, "the log view")
        if log.locator("tr").count():  # a table: one create, one record
            rows = log.locator("tr", has_text=email).count()
            assert rows == 1, f"the log view shows {rows} records of {email}: {_texts(page, '.kafka-crud-log')}"
        assert page.get_by_text("Error displaying widget").count() == 0, "\n---\n".join(page_problems(page))
        assert not page_problems(page), "\n---\n".join(page_problems(page))

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        output = page.locator(".jp-OutputArea-output", has=page.locator(".kafka-crud-create")).first
        output.evaluate("element => element.scrollIntoView({block: 'start'})")
        page.screenshot(path=SCREENSHOTS / f"{name}-after-create.png")
        output.screenshot(path=SCREENSHOTS / f"{name}-after-create-widget.png")
    except (Exception, pytest.fail.Exception) as exc:
        details = _save_failure(page, lab, name, console_errors)
        if isinstance(exc, pytest.fail.Exception):
            pytest.fail(f"{notebook}: {exc.msg}\n{details}", pytrace=False)
        raise AssertionError(f"{notebook}: {exc}\n{details}") from exc


def test_widget_smoke_notebook_creates_a_user_seen_in_state_and_log(lab: Lab, page: Page) -> None:
    """Plain ipywidgets with the editor's CSS classes: JupyterLab, ipywidgets and the broker work together."""
    _create_a_user_in_the_editor(page, lab, FIXTURE.name, "widget-smoke")


def test_notebook_02_user_editor_creates_a_user_seen_in_state_and_log(lab: Lab, page: Page) -> None:
    """The course's user editor, as a learner meets it in notebook 02."""
    _create_a_user_in_the_editor(page, lab, NOTEBOOK_02.name, "02-producing")


def test_the_endpoint_opens_through_jupyters_proxy_with_the_user_a_cell_created(
    lab: Lab, page: Page, browser: Browser
) -> None:
    """The link a notebook shows for its server, followed as a participant on Binder would."""
    name = PROXY_FIXTURE.name
    open_notebook(page, lab, name)
    assert page.get_by_text("official Jupyter news").count() == 0, "JupyterLab asks about Jupyter news"
    run_all_cells(page)
    link = wait_for_widget(page, ".kafka-crud-server a")
    wait_until_all_cells_ran(page, lab, name)
    href = link.get_attribute("href") or ""
    assert href.startswith(f"{lab.base_url}/proxy/"), f"the notebook links to {href!r}, not through Jupyter"
    with page.expect_popup() as popup:
        link.click()
    endpoint = popup.value
    endpoint.wait_for_load_state()
    row = endpoint.locator("#users tr", has_text="grace@example.com")
    row.wait_for(state="visible", timeout=30_000)
    assert "Grace Hopper" in row.inner_text()
    assert endpoint.url == href
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    endpoint.screenshot(path=SCREENSHOTS / "endpoint-through-proxy.png", full_page=True)
    endpoint.screenshot(path=Path(tempfile.gettempdir()) / "kafka-crud-endpoint-through-proxy.png", full_page=True)
    # The page's links are relative: they stay behind the proxy's prefix.
    endpoint.locator("a", has_text="GET users").first.click()
    endpoint.wait_for_url(href + "users")
    assert "grace@example.com" in endpoint.inner_text("body")
    # Behind Jupyter's login: a browser without the lab's cookie does not see the users.
    stranger = browser.new_context()
    try:
        other = stranger.new_page()
        other.goto(href)
        assert "grace@example.com" not in other.content()
        assert "/login" in other.url, other.url
    finally:
        stranger.close()
