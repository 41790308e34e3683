"""What workshops rely on, quickly: the lab's broker beside Jupyter, the browser URL, the page at /.

The image builds and the browser are in test_binder.py and test_browser.py; these need at most
the session's broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kafka_crud import cli
from kafka_crud.broker import free_port
from kafka_crud.client import UserClient
from kafka_crud.config import BOOTSTRAP_ENV
from kafka_crud.errors import ConfigError, KafkaCrudError
from kafka_crud.lab import STATE_ENV, LabBroker, lab_status, restart_broker
from kafka_crud.proxy import browser_url
from kafka_crud.server import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent


# -- kafka-crud lab: Jupyter's own options pass straight through ---------------------------------
@pytest.mark.parametrize(("argv", "jupyter_args", "notebook_dir"), [
    (["lab", "--no-browser", "--port", "8888"], ["--no-browser", "--port", "8888"], "notebooks"),
    (["lab", "--", "--no-browser", "--port=1"], ["--no-browser", "--port=1"], "notebooks"),
    (["lab", "--notebook-dir", "x", "--ServerApp.ip=0.0.0.0"], ["--ServerApp.ip=0.0.0.0"], "x"),
    (["lab"], [], "notebooks"),
])
def test_lab_passes_jupyters_options_through(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], jupyter_args: list[str], notebook_dir: str
) -> None:
    seen: dict[str, object] = {}

    def fake_lab(args: object) -> int:
        seen.update(vars(args))
        return 0

    monkeypatch.setattr(cli, "cmd_lab", fake_lab)
    assert cli.main(argv) == 0
    assert seen["jupyter_args"] == jupyter_args
    assert seen["notebook_dir"] == notebook_dir


def test_other_commands_still_reject_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["log", "--no-browser"])
    assert "unrecognized arguments: --no-browser" in capsys.readouterr().err


# -- the browser URL -----------------------------------------------------------------------------
def test_browser_url_goes_through_the_hubs_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert browser_url(8081) == "/user/ada/proxy/8081/"


def test_browser_url_goes_through_the_jupyter_server_that_runs_this(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    assert browser_url(8081) == "http://127.0.0.1:8081/"  # no Jupyter server above this process
    info = {"pid": os.getppid(), "url": "http://localhost:8888/lab-base/", "base_url": "/lab-base/"}
    (tmp_path / f"jpserver-{os.getppid()}.json").write_text(json.dumps(info))
    (tmp_path / "jpserver-1.json").write_text(json.dumps({**info, "pid": 1, "url": "http://other/"}))
    assert browser_url(8081) == "http://localhost:8888/lab-base/proxy/8081/"


# -- the page at / and the handle's reprs --------------------------------------------------------
@pytest.mark.broker
def test_the_page_lists_users_with_relative_links(
    bootstrap_servers: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    with serve_in_thread(bootstrap_servers, topic=topic) as server:
        UserClient(server.url).put("ada@example.com", "Ada <Lovelace>")
        with urllib.request.urlopen(server.url + "/", timeout=10) as response:
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            page = response.read().decode()
        assert "Ada &lt;Lovelace&gt;" in page
        assert '<p id="status">1 user</p>' in page
        assert 'href="user?email=ada@example.com"' in page
        assert 'href="users"' in page
        assert 'href="/' not in page
        assert "http" not in page.replace("<!doctype html>", "")
        assert server.browser_url == f"/user/ada/proxy/{server.port}/"
        assert f"browser=/user/ada/proxy/{server.port}/" in repr(server)
        assert f'<a href="/user/ada/proxy/{server.port}/"' in server._repr_html_()


# -- the lab's broker beside a command -----------------------------------------------------------
@pytest.mark.broker
@pytest.mark.slow
def test_lab_broker_reports_a_failure_and_restarts_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that cannot start (here: its port taken) fails without raising, then restarts when asked."""
    import socket

    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    broker = LabBroker(port, tmp_path / "lab").start()
    monkeypatch.setenv(STATE_ENV, str(broker.state_dir))
    try:
        deadline = time.monotonic() + 60
        while (status := lab_status()) is None or status.state in ("starting",):
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status.state == "failed", status
        assert f"Port {port}" in status.error, status
        assert "restart_broker()" in status.retry_hint()
        assert f"--port {port}" in status.retry_hint()
        with pytest.raises(KafkaCrudError, match=f"Port {port}"):
            restart_broker(timeout=60)
        blocker.close()
        ready = restart_broker(timeout=120)
        assert ready.state == "ready"
        assert ready.attempt == 3
        from kafka_crud.connection import Kafka

        Kafka(ready.bootstrap_servers).ping()
    finally:
        blocker.close()
        broker.stop()
    assert not broker.state_dir.exists()


def test_restart_broker_outside_a_kit_lab_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STATE_ENV, raising=False)
    with pytest.raises(ConfigError, match="kafka-crud broker"):
        restart_broker()


@pytest.mark.broker
@pytest.mark.slow
def test_with_broker_background_starts_the_command_at_once_and_cleans_up(tmp_path: Path) -> None:
    """The command runs before the broker is ready; it sees the address and the status folder; all goes at the end."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop(BOOTSTRAP_ENV, None)
    probe = (
        "import json, os, time\n"
        "from kafka_crud.lab import wait_for_lab_broker, lab_status\n"
        "first = lab_status().state\n"
        "status = wait_for_lab_broker(120)\n"
        f"print(json.dumps({{'first': first, 'state': status.state, 'servers': os.environ[{BOOTSTRAP_ENV!r}],"
        f" 'dir': os.environ[{STATE_ENV!r}]}}))\n"
    )
    out = subprocess.run([str(ROOT / "binder" / "start"), sys.executable, "-c", probe],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["first"] == "starting", seen
    assert seen["state"] == "ready", seen
    assert not Path(seen["dir"]).exists(), "the status folder and the broker's data outlived the lab"
    assert "Kafka ready at " + seen["servers"] in out.stderr


@pytest.mark.slow
def test_with_broker_background_runs_the_command_even_when_the_broker_cannot_start(tmp_path: Path) -> None:
    """No Java at all: the command still runs, with the failure in the status it can read."""
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "PATH": str(Path(sys.executable).parent)}
    env.pop(BOOTSTRAP_ENV, None)
    probe = (
        "from kafka_crud.lab import wait_for_lab_broker\n"
        "s = wait_for_lab_broker(60)\n"
        "print(s.state, '|', s.error, '|', s.retry_hint())\n"
    )
    process = subprocess.Popen([sys.executable, "-m", "kafka_crud.cli", "with-broker", "--background", "--",
                                sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    assert process.returncode == 0, stderr
    state, error, hint = (part.strip() for part in stdout.split("|"))
    assert state == "failed", stdout
    assert "No Java 17+" in error, stdout
    assert "restart_broker()" in hint
    assert "the broker did not start: No Java 17+" in stderr


@pytest.mark.broker
def test_serve_under_jupyterhub_prints_the_address_through_its_proxy(bootstrap_servers: str, topic: str) -> None:
    env = {**os.environ, "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}
    command = [sys.executable, "-m", "kafka_crud.cli", "serve", "--port", "0", "--topic", topic,
               "--bootstrap-servers", bootstrap_servers]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            assert process.stdout is not None
            serving = process.stdout.readline()
            browser = process.stdout.readline()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    port = serving.split("http://127.0.0.1:")[1].split()[0]
    assert browser.strip() == f"In your browser, through Jupyter: /user/ada/proxy/{port}/"
