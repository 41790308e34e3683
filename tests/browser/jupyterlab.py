"""JupyterLab started as `make lab` starts it, and driven in headless Chromium as a person would.

    with start_lab(notebook_dir, work_dir) as lab:           # kafka-crud lab: broker + JupyterLab
        browser = launch_chromium(playwright)               # Debian's Chromium, via Playwright
        open_notebook(page, lab, "02-producing.ipynb")
        run_all_cells(page)                                  # Run > Run All Cells
        wait_for_widget(page, ".kafka-crud-email")
        wait_until_all_cells_ran(page, lab, "02-producing.ipynb")

Every wait is bounded and fails with what a person would need to see: the cell's traceback,
the widget error, or the end of kafka-crud's output. Stopping the lab checks that nothing it
started (JupyterLab, kernels, the broker's JVM) is left running.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Locator, Page, Playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from processes import cmdline as _cmdline
from processes import descendants as _descendants
from processes import identity as _identity

from kafka_crud.broker import free_port
from kafka_crud.config import BOOTSTRAP_ENV

__all__ = [
    "ARTIFACTS",
    "Lab",
    "chromium_executable",
    "launch_chromium",
    "open_notebook",
    "page_problems",
    "run_all_cells",
    "start_lab",
    "wait_for_widget",
    "wait_until_all_cells_ran",
]

ROOT = Path(__file__).resolve().parents[2]
#: Screenshots and logs a person can look at after a run (git-ignored).
ARTIFACTS = ROOT / "test-artifacts"

# Chromium's own traffic (updates, sync, field trials, QUIC) is of no use to a test that only talks
# to a JupyterLab on 127.0.0.1; on a machine without internet access it only fails and slows the
# page down. --no-sandbox: containers and root rarely allow Chromium's user-namespace sandbox.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-proxy-server",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
)

# JupyterLab settings for an unattended run: no update check. The "Jupyter news?" question is off
# by the kit's own setting default (jupyter-config/kafka-crud.json), which the tests check.
_LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"checkForUpdates": false}',
}

# What a failed cell shows (IPython's traceback header), and what JupyterLab shows in place of a
# widget whose front end and kernel package do not match or whose lab extension is missing.
_TRACEBACK = "Traceback (most recent call last)"
_WIDGET_ERROR = "Error displaying widget"

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- Chromium ------------------------------------------------------------------------------------
def _find_chromium() -> str | None:
    return shutil.which("chromium")


def chromium_executable() -> str:
    """Debian's Chromium (``/usr/bin/chromium``); installed with ``scripts/system-deps`` when missing."""
    found = _find_chromium()
    if found:
        return found
    script = ROOT / "scripts" / "system-deps"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, check=False)
    found = _find_chromium()
    if found:
        return found
    pytest.fail(
        "The browser test needs Chromium, and `bash scripts/system-deps` could not install it "
        f"(exit {result.returncode}). Install it as root with `apt-get install chromium` (Debian/Ubuntu), "
        f"or run `make setup` with sudo rights. Its output:\n{(result.stdout + result.stderr).strip()[-2000:]}",
        pytrace=False,
    )


def launch_chromium(playwright: Playwright) -> Browser:
    """Headless Chromium driven by Playwright; the system's Chromium, as Playwright may not download its own."""
    return playwright.chromium.launch(
        executable_path=chromium_executable(), headless=True, args=list(CHROMIUM_ARGS), timeout=90_000
    )


# -- processes (Linux /proc; elsewhere the checks that need it are skipped) ----------------------
def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        return sock.connect_ex((host, int(port))) == 0


# -- JupyterLab ----------------------------------------------------------------------------------
@dataclass
class Lab:
    """A running ``kafka-crud lab``: JupyterLab on 127.0.0.1 with an embedded broker."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    log_path: Path
    broker_address: str | None = None
    """The embedded broker's ``host:port``, as kafka-crud printed it."""
    broker_pid: int | None = None
    """The broker's JVM (Linux only)."""
    _family: dict[int, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        # reset: open only this notebook. Otherwise JupyterLab restores the tabs a previous test left
        # open, and ".first" of a selector can land on a hidden notebook's cell or widget.
        return f"{self.base_url}/lab/tree/{quote(name)}?reset&token={self.token}"

    def output(self) -> str:
        """Everything kafka-crud, JupyterLab and its kernels printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:]) or "(no output)"

    def _get(self, path: str) -> object | None:
        """GET a JupyterLab REST endpoint; its JSON, or None while the server does not answer."""
        request = urllib.request.Request(f"{self.base_url}{path}", headers={"Authorization": f"token {self.token}"})
        try:
            with _NO_PROXY.open(request, timeout=5) as response:
                data: object = json.load(response)
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def kernel_state(self, notebook: str) -> str | None:
        """The execution state (starting, idle, busy) of ``notebook``'s kernel; None without one."""
        sessions = self._get("/api/sessions")
        for session in sessions if isinstance(sessions, list) else []:
            if session.get("path") == notebook and session.get("kernel"):
                return str(session["kernel"].get("execution_state"))
        return None

    def wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._get("/api/status") is None:
            code = self.process.poll()
            if code is not None:
                pytest.fail(f"kafka-crud lab exited with code {code} before JupyterLab answered. "
                            f"Its output ends with:\n{self.output_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {self.base_url} within {timeout:.0f} s of "
                            f"`kafka-crud lab`. Its output ends with:\n{self.output_tail()}", pytrace=False)
            time.sleep(0.5)
        # The broker starts beside JupyterLab: it may be ready a few seconds after JupyterLab answers.
        found = re.search(r"Kafka ready at (\S+)", self.output())
        while found is None and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.5)
            found = re.search(r"Kafka ready at (\S+)", self.output())
        if found is None:
            pytest.fail("kafka-crud lab serves JupyterLab but its embedded broker did not get ready. "
                        f"Its output ends with:\n{self.output_tail()}", pytrace=False)
        self.broker_address = found.group(1)
        self._family = _descendants(self.process.pid)
        jvms = [pid for pid in self._family if "kafka.Kafka" in _cmdline(pid)]
        self.broker_pid = jvms[0] if jvms else None

    def stop(self, timeout: float = 60.0) -> list[str]:
        """SIGTERM to kafka-crud, which passes it on to JupyterLab and then stops its broker.

        Returns what did not go as it should; whatever is left running is killed.
        """
        problems: list[str] = []
        family = {**self._family, **_descendants(self.process.pid)}
        code = self.process.poll()
        if code is not None:
            problems.append(f"kafka-crud lab had already exited (code {code}) before the test stopped it")
        else:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"kafka-crud lab did not stop within {timeout:.0f} s of SIGTERM; killed it")
                self.process.kill()
                self.process.wait()
        # An orphaned broker is ended by its watchdog within ~20 s; give it that long.
        deadline = time.monotonic() + 30
        left = family
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {pid: ident for pid, ident in left.items() if _identity(pid) == ident}
        for pid in left:
            what = "the embedded broker's JVM" if pid == self.broker_pid else "a process it started"
            problems.append(f"{what} (pid {pid}) still ran after kafka-crud lab stopped: {_cmdline(pid)[:200]}")
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.broker_address and _listening(self.broker_address):
            problems.append(f"something still listens on the embedded broker's address {self.broker_address}")
        return problems


@contextmanager
def start_lab(notebook_dir: Path, work_dir: Path, *, timeout: float = 150.0) -> Iterator[Lab]:
    """``kafka-crud lab`` on ``notebook_dir``, on a free port with a random token, until the block ends.

    As ``make lab`` on a fresh machine: no ``KAFKA_BOOTSTRAP_SERVERS``, so it starts its own broker
    and hands it to the kernels. Jupyter's settings, workspaces, runtime and data files live in
    ``work_dir``, so neither a person's JupyterLab nor another run changes what the test sees.
    """
    config_dir = work_dir / "jupyter-config"
    for name, text in _LAB_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_RUNTIME_DIR": str(work_dir / "jupyter-runtime"),
        "JUPYTER_DATA_DIR": str(work_dir / "jupyter-data"),
        "IPYTHONDIR": str(work_dir / "ipython"),
    }
    env.pop(BOOTSTRAP_ENV, None)
    script = Path(sys.executable).with_name("kafka-crud")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "kafka_crud.cli"]
    port, token = free_port(), secrets.token_hex(16)
    jupyter_args = [
        "--no-browser", f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        jupyter_args.append("--allow-root")  # JupyterLab refuses root otherwise (CI containers run as root)
    command = [*cli, "lab", "--notebook-dir", str(notebook_dir), "--", *jupyter_args]
    log_path = work_dir / "kafka-crud-lab.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=env, cwd=work_dir)
    lab = Lab(process, port, token, log_path)
    try:
        lab.wait_until_serving(timeout)
        yield lab
    finally:
        problems = lab.stop()
    if problems:
        raise AssertionError("Stopping `kafka-crud lab` left things behind:\n  " + "\n  ".join(problems)
                             + f"\nIts output ends with:\n{lab.output_tail()}")


# -- the page ------------------------------------------------------------------------------------
def page_problems(page: Page) -> list[str]:
    """Tracebacks in cell outputs and widgets JupyterLab could not display, as their text."""
    texts: list[str] = page.locator(".jp-OutputArea-output").evaluate_all("outputs => outputs.map(o => o.innerText)")
    return [text.strip()[-3000:] for text in texts if _TRACEBACK in text or _WIDGET_ERROR in text]


def _fail(page: Page, message: str) -> NoReturn:
    problems = page_problems(page)
    if problems:
        message += "\nThe notebook shows:\n" + "\n---\n".join(problems)
    pytest.fail(message, pytrace=False)


def _click_menu(page: Page, menu: str, item: str) -> None:
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
    page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()


def _answer_kernel_dialog(page: Page, name: str) -> None:
    """Accept JupyterLab's "Select Kernel" (its preferred kernel), as a person would; fail on any other question."""
    dialog = page.locator(".jp-Dialog")
    if not dialog.is_visible():
        return
    text = dialog.inner_text()
    if "Select Kernel" not in text:
        _fail(page, f"JupyterLab asked something unexpected about {name}: {text!r}")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="hidden", timeout=10_000)


def open_notebook(page: Page, lab: Lab, name: str, *, timeout: float = 90.0) -> None:
    """Open ``name`` in JupyterLab and wait until its kernel is idle (choosing the preferred kernel if asked)."""
    page.goto(lab.notebook_url(name), wait_until="domcontentloaded", timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    while lab.kernel_state(name) != "idle":
        _answer_kernel_dialog(page, name)
        if time.monotonic() > deadline:
            _fail(page, f"{name} did not open with an idle kernel within {timeout:.0f} s "
                        f"(kernel: {lab.kernel_state(name)}). kafka-crud lab's output ends with:\n{lab.output_tail()}")
        page.wait_for_timeout(250)
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(state="visible", timeout=timeout * 1000)


def run_all_cells(page: Page) -> None:
    """Run > Run All Cells, as a person would."""
    _click_menu(page, "Run", "Run All Cells")


def _scroll_notebook(page: Page) -> None:
    """Scroll the open notebook down by most of a screen, or back to the top once at the bottom."""
    page.evaluate("""() => {
        const outer = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer");
        if (!outer) return;
        const atEnd = outer.scrollTop + outer.clientHeight >= outer.scrollHeight - 2;
        outer.scrollTop = atEnd ? 0 : outer.scrollTop + outer.clientHeight * 0.8;
    }""")


def wait_for_widget(page: Page, selector: str, *, timeout: float = 120.0) -> Locator:
    """The first widget matching ``selector`` once visible; fails early on a traceback or a widget error."""
    widget = page.locator(selector).first
    deadline = time.monotonic() + timeout
    while True:
        try:
            widget.wait_for(state="visible", timeout=1000)
            return widget
        except PlaywrightTimeout:
            _scroll_notebook(page)  # JupyterLab renders only the cells near the view: look, as a person would
        _answer_kernel_dialog(page, "the notebook")
        if page_problems(page):
            _fail(page, f"The notebook failed before showing {selector!r}.")
        if time.monotonic() > deadline:
            _fail(page, f"No {selector!r} widget appeared within {timeout:.0f} s of Run All Cells.")


def wait_until_all_cells_ran(page: Page, lab: Lab, name: str, *, timeout: float = 120.0) -> None:
    """Wait until no cell is queued or running ("[*]") and the kernel is idle; fail early on a traceback.

    A widget's clicks are handled by the kernel after the cells queued before them: typing into a
    widget shown by an early cell while later cells still run would only wait longer.
    """
    running = page.locator(".jp-NotebookPanel .jp-InputPrompt", has_text="*")
    deadline = time.monotonic() + timeout
    while running.count() or lab.kernel_state(name) != "idle":
        if page_problems(page):
            _fail(page, f"A cell of {name} failed.")
        if time.monotonic() > deadline:
            _fail(page, f"The cells of {name} were still running {timeout:.0f} s after Run All Cells "
                        f"({running.count()} queued or running; kernel {lab.kernel_state(name)}).")
        page.wait_for_timeout(250)
    if page_problems(page):
        _fail(page, f"A cell of {name} failed.")
