"""Security defaults: nothing listens beyond this machine unless asked, and nothing answers for free.

- the HTTP endpoint binds to loopback by default, caps bodies at 1 MiB, and answers errors as
  JSON that says nothing about its insides;
- ``make lab`` (``kafka-crud lab``) keeps JupyterLab's token (Binder puts its own auth in front
  of its own server, which is not ours to test);
- ``docker-compose.yml`` publishes ports on 127.0.0.1 only, and its JupyterLab keeps its token;
- the embedded broker listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import call, send_raw

from kafka_crud import cli
from kafka_crud.broker import LocalKafka, free_port
from kafka_crud.connection import Kafka
from kafka_crud.httpserver import MAX_BODY
from kafka_crud.server import ServerHandle, make_server, serve_in_thread

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::1"}
#: Jupyter options and settings that would let anyone in without the token.
TOKEN_OFF = re.compile(
    r"""(token|password)\s*=\s*(''|""|\s|$)|disable_check_xsrf|allow_unauthenticated|allow_origin\s*=\s*['"]?\*"""
    r"""|JUPYTER_TOKEN\s*[=:]\s*(''|""|$)""",
    re.I | re.M,
)


@pytest.fixture
def server(kafka: Kafka, topic: str) -> Iterator[ServerHandle]:
    with serve_in_thread(kafka, topic=topic) as handle:
        yield handle


# -- the HTTP endpoint ---------------------------------------------------------------------------------
def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (none on an isolated machine)."""
    found: set[str] = set()
    with contextlib.suppress(socket.gaierror):
        found.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


@pytest.mark.broker
def test_the_endpoint_listens_on_loopback_unless_told_otherwise(server: ServerHandle) -> None:
    for function in (make_server, serve_in_thread):
        assert inspect.signature(function).parameters["host"].default == "127.0.0.1"
    assert cli.build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")
    port = int(server.url.rsplit(":", 1)[1])
    for address in _other_addresses():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            assert sock.connect_ex((address, port)) != 0, f"the endpoint answers on {address}"


@pytest.mark.broker
def test_a_body_over_1_mib_is_refused_before_it_is_read(server: ServerHandle) -> None:
    assert MAX_BODY == 1024 * 1024
    for method in ("PUT", "GET", "DELETE"):
        # Announce 1 GiB and send none of it, nor the end of the request: the answer comes at
        # once, from the headers alone, and the server closes the connection after a 413.
        head = f"{method} /user?email=a@b.c HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n\r\n"
        started = time.monotonic()
        answer = send_raw(server.url, head.encode(), half_close=False, timeout=10)
        assert time.monotonic() - started < 5
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": f"The body is over {MAX_BODY} bytes"}
    # Exactly 1 MiB is allowed: a user padded with spaces to the limit is written.
    user = json.dumps({"email": "big@b.c", "name": "big"}).encode()
    assert call(server.url, "PUT", "/user", user + b" " * (MAX_BODY - len(user))).status == 201


@pytest.mark.broker
def test_a_client_sending_a_body_over_the_limit_reads_the_413(server: ServerHandle) -> None:
    # The server answers before the body is in, then reads and drops the rest for a moment:
    # closed at once, the kernel would reset the connection under a client still sending.
    for size in [MAX_BODY + 1, 2 * MAX_BODY, 3 * MAX_BODY] * 10:
        answer = call(server.url, "PUT", "/user", b"x" * size, timeout=30)
        assert (answer.status, answer.json()) == (413, {"error": f"The body is over {MAX_BODY} bytes"})


@pytest.mark.broker
def test_errors_are_json_and_say_nothing_about_the_servers_insides(
    server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = [
        ("PUT", "/user", b'{"email": "a@b.c", "name": 1' + b"0" * 5000 + b"}"),
        ("PUT", "/user", b"[" * 100_000),
        ("PUT", "/user", b"\xff\xfe{}"),
        ("PUT", "/user", b'{"email": "a@b.c", "email": "a@b.c"}'),
        ("GET", "/user?email=%00", None),
        ("POST", "/user", None),
        ("GET", "/etc/passwd", None),
    ]
    for method, path, body in bad:
        answer = call(server.url, method, path, body, timeout=30)
        assert 400 <= answer.status < 500
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        error = answer.json()
        assert list(error) == ["error"]
        assert isinstance(error["error"], str)
        assert not re.search(r"Traceback|File \"|\.py\b|kafka_crud|/work|/home|/tmp", error["error"]), error

    # An unexpected failure inside: a 500 whose body tells the client nothing of it.
    def explode(email: str, **options: object) -> None:
        raise RuntimeError(f"secret detail from {__file__}")

    monkeypatch.setattr(server.service, "read", explode)
    answer = call(server.url, "GET", "/user?email=a@b.c", timeout=30)
    assert answer.status == 500
    assert answer.json() == {"error": "Internal error; see the server log"}
    assert b"secret" not in answer.body
    assert b"Traceback" not in answer.body
    # Neither the Python version nor the stdlib server's name in the headers.
    assert answer.headers["Server"] == "kafka-crud"
    assert not any("Python" in value or "BaseHTTP" in value for value in answer.headers.values())


# -- JupyterLab ---------------------------------------------------------------------------------------
def test_make_lab_runs_kafka_crud_lab_without_opening_jupyter(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = re.search(r"^lab:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "the Makefile has no lab target"
    assert re.search(r"kafka-crud lab( \$\(LAB_ARGS\))?\s*$", recipe[1], re.M), recipe[1]
    assert not TOKEN_OFF.search(recipe[1])

    # What `kafka-crud lab` runs: jupyter lab with nothing that turns its token off.
    ran: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")  # no broker is started for this
    def run_child(command: list[str], env: dict[str, str]) -> int:
        ran.append((list(command), env))
        return 0

    monkeypatch.setattr(cli, "_run_child", run_child)
    assert cli.main(["lab"]) == 0
    (command, env), = ran
    assert command[1:4] == ["-m", "jupyter", "lab"]
    # No token or password setting, and no --ip: JupyterLab's default is localhost.
    assert not [arg for arg in command[4:] if re.search(r"token|password|--ip|ServerApp|IdentityProvider", arg, re.I)]
    assert env.get("JUPYTER_TOKEN", "unset") != ""


def test_no_jupyter_config_in_the_repository_turns_the_token_off() -> None:
    names = ("jupyter_server_config", "jupyter_lab_config", "jupyter_notebook_config")
    configs: list[Path] = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "node_modules"]
        configs.extend(Path(folder, f) for f in files if Path(f).stem in names)
    for path in [*configs, ROOT / "Dockerfile", ROOT / "docker-compose.yml"]:
        if path.exists():
            assert not TOKEN_OFF.search(path.read_text(encoding="utf-8")), path


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)
            # /proc prints the address as 32-bit words in host byte order.
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
            address = socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words)
            found.add((address.removeprefix("::ffff:"), int(hex_port, 16)))
    return found


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_kafka_crud_lab_asks_for_the_token(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    env.pop("JUPYTER_TOKEN", None)
    args = ["--no-browser", f"--port={port}", "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # JupyterLab refuses root otherwise; it does not touch the token
    log_path = tmp_path / "lab.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "kafka_crud.cli", "lab", "--notebook-dir", str(tmp_path), "--", *args],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    jupyter: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not (token := re.search(rf"127\.0\.0\.1:{port}/lab\?token=(\w+)", log_path.read_text(errors="replace"))):
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        jupyter = _children(process.pid)
        base = f"http://127.0.0.1:{port}"
        for path in ("/api/contents", "/api/kernels", "/api/sessions", "/api/terminals"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=10)
            refused.value.close()
            assert refused.value.code == 403, path
        with urllib.request.urlopen(f"{base}/api/contents?token={token[1]}", timeout=10) as response:
            assert response.status == 200
        # And only this machine can ask: JupyterLab listens on loopback alone.
        listening = {a for pid in jupyter for a, p in _listening_addresses(pid) if p == port}
        assert listening, "JupyterLab listens nowhere?"
        assert listening <= LOOPBACK, listening
    finally:
        process.send_signal(signal.SIGTERM)  # kafka-crud passes it on to JupyterLab
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in jupyter:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # still there only if it ignored SIGTERM


# -- docker-compose.yml ------------------------------------------------------------------------------
def _host_ip(port: Any) -> str | None:
    """The host address a compose port mapping publishes on; None when it publishes on all."""
    if isinstance(port, dict):  # long syntax
        return port.get("host_ip")
    text = str(port)
    if text.startswith("["):  # [::1]:8080:80
        return text[1:text.index("]")]
    parts = text.split(":")
    return parts[0] if len(parts) == 3 else None


def test_compose_publishes_ports_on_localhost_only() -> None:
    path = ROOT / "docker-compose.yml"
    assert path.exists(), "docker-compose.yml is part of the kit: the test reads it"
    compose = yaml.safe_load(path.read_text(encoding="utf-8"))
    published = 0
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network: everything it opens is public"
        for port in service.get("ports", []):
            assert _host_ip(port) in LOOPBACK, f"{name} publishes {port!r} beyond localhost"
            published += 1
        command = " ".join(map(str, service.get("command") or []))
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) if "=" in e else (e, "") for e in environment)
        assert not TOKEN_OFF.search(command), f"{name}: {command}"
        assert environment.get("JUPYTER_TOKEN", "unset") != "", f"{name} sets an empty JUPYTER_TOKEN"
    assert published, "the compose file publishes no port: then what is it for?"


def test_host_ip_reads_every_port_syntax() -> None:
    assert _host_ip("127.0.0.1:9092:9092") == "127.0.0.1"
    assert _host_ip("[::1]:8888:8888/tcp") == "::1"
    assert _host_ip("9092:9092") is None
    assert _host_ip("9092") is None
    assert _host_ip({"target": 80, "published": 8080, "host_ip": "0.0.0.0"}) == "0.0.0.0"
    assert _host_ip({"target": 80, "published": 8080}) is None


# -- the embedded broker -------------------------------------------------------------------------------
@pytest.mark.broker
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_the_embedded_broker_listens_on_loopback_only(tmp_path: Path) -> None:
    with LocalKafka(data_dir=tmp_path / "kafka") as kafka:
        lines = (kafka.data_dir / "server.properties").read_text().splitlines()
        properties = dict(line.split("=", 1) for line in lines if "=" in line)
        for key in ("listeners", "advertised.listeners", "controller.quorum.bootstrap.servers"):
            hosts = re.findall(r"(?://|^|,)([^:/,]+):\d+", properties[key])
            assert hosts, (key, properties[key])
            assert set(hosts) == {"127.0.0.1"}, (key, properties[key])
        assert kafka.pid is not None
        listening = _listening_addresses(kafka.pid)
    # The broker's and the controller's listeners, and nothing else (no JMX, no debugger).
    assert {port for _, port in listening} == {kafka.port, kafka.controller_port}
    assert {address for address, _ in listening} == {"127.0.0.1"}
