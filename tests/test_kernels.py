"""A participant's kernel: closed, restarted or killed without stopping anything, and notebooks re-run.

Kernels are started and stopped with jupyter_client, as JupyterLab does it: "Shut Down Kernel" and
closing a notebook send a shutdown request, "Restart Kernel" a shutdown request then a new kernel.
Whatever the cells started (an embedded broker, a server, consumer-group instances) must go with
the kernel: no JVM, no listening port, no temporary folder left. And a notebook run again from the
top in the same kernel must work, without a second server beside the first.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from kafka_crud.config import BOOTSTRAP_ENV

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

# A notebook's cells, as the course writes them: its own broker, a server, a consumer group.
_OWN_BROKER = """
import json
from kafka_crud import LocalKafka, UserClient, serve_in_thread, start_group
broker = LocalKafka().start()
server = serve_in_thread(broker.bootstrap_servers, topic="kernel-check")
UserClient(server.url).put("ada@example.com", "Ada")
group = start_group(["A", "B"], broker.bootstrap_servers, topic="kernel-check")
print(json.dumps({"ports": [broker.port, broker.controller_port, server.port], "jvm": broker.pid,
                  "data_dir": str(broker.data_dir)}))
"""

# A notebook run from the top: reset its topic, write, serve, a group (the session's broker).
_NOTEBOOK = """
import json
from kafka_crud import UserClient, connect, serve_in_thread, start_group
kafka = connect()
kafka.reset_topic("rerun-check")
server = serve_in_thread(kafka, topic="rerun-check")
UserClient(server.url).put("ada@example.com", "Ada")
UserClient(server.url).put("alan@example.com", "Alan")
group = start_group(["A", "B"], kafka, topic="rerun-check")
print(json.dumps({"port": server.port, "users": len(server.service.users()),
                  "group": sorted(len(i.store) for i in group)}))
"""


class Kernel:
    """A kernel started as JupyterLab starts one, and its cells' output."""

    def __init__(self) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel()
        self._connect()

    def _connect(self) -> None:
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        process = self.manager.provisioner.process  # type: ignore[union-attr]
        return int(process.pid)

    def run(self, code: str, timeout: float = 120) -> tuple[str, str]:
        """Run a cell; its stdout and its stderr (warnings land there), failing on an error."""
        out: list[str] = []
        err: list[str] = []

        def collect(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif message["msg_type"] == "error":
                err.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=collect)
        assert reply["content"]["status"] == "ok", "".join(err)[-4000:]
        return "".join(out), "".join(err)

    def restart(self) -> None:
        self.client.stop_channels()
        self.manager.restart_kernel(now=False)
        self._connect()

    def shutdown(self) -> None:
        self.client.stop_channels()
        if self.manager.is_alive():
            self.manager.shutdown_kernel(now=False)
        self.manager.context.destroy(linger=0)


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    started = Kernel()
    try:
        yield started
    finally:
        started.shutdown()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_until_gone(started: dict[str, Any], within: float) -> list[str]:
    """What of a cell's broker and server is still there after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = [f"port {p} listens" for p in started["ports"] if _listening(p)]
        if _alive(started["jvm"]):
            left.append(f"the broker's JVM {started['jvm']} runs")
        if Path(started["data_dir"]).exists():
            left.append(f"the broker's folder {started['data_dir']} is there")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_shutting_down_a_kernel_stops_what_its_cells_started(kernel: Kernel) -> None:
    started = json.loads(kernel.run(_OWN_BROKER)[0])
    kernel.shutdown()
    assert not _wait_until_gone(started, within=10)


def test_restarting_a_kernel_stops_what_its_cells_started_and_they_run_again(kernel: Kernel) -> None:
    started = json.loads(kernel.run(_OWN_BROKER)[0])
    kernel.restart()
    assert not _wait_until_gone(started, within=10)
    again = json.loads(kernel.run(_OWN_BROKER)[0])
    assert again["jvm"] != started["jvm"]


def test_a_killed_kernel_leaves_its_broker_to_the_watchdog(kernel: Kernel) -> None:
    started = json.loads(kernel.run(_OWN_BROKER)[0])
    os.kill(kernel.pid, signal.SIGKILL)
    assert not _wait_until_gone(started, within=30)


def test_a_notebook_runs_again_from_the_top_without_restarting_anything(kernel: Kernel) -> None:
    assert os.environ.get(BOOTSTRAP_ENV), "the kernel uses the session's broker"
    first, _ = kernel.run(_NOTEBOOK)
    second, warnings = kernel.run(_NOTEBOOK)
    before, after = json.loads(first), json.loads(second)
    assert after["users"] == 2
    assert after["group"] == before["group"]
    assert sum(after["group"]) == 2
    assert not _listening(before["port"]), "the first run's server still serves beside the second"
    assert not warnings.strip(), f"the second run printed: {warnings[-2000:]}"
    code = "from kafka_crud import running\nprint(sorted(type(t).__name__ for t, _, _ in running._running.values()))"
    running, _ = kernel.run(code)
    assert running.strip() == str(["GroupStoreConsumer", "GroupStoreConsumer", "ServerHandle", "StoreConsumer",
                                   "UserService"]), "only the second run's server and group should run"
