"""The broker's JVM as a process: its options, the class-data-sharing archive and the watchdog.

- **Options** for a small teaching broker: the serial collector, the quick JIT only, small
  metaspace and code cache. The heap is capped at 384 MB; ``KAFKA_CRUD_HEAP`` (e.g. ``256m``)
  sets another cap, for a pod with little memory.
- **Class-data sharing**: loading and verifying the broker's classes is most of the CPU a JVM
  start costs. The first broker on a machine writes an archive of them when it stops; later
  brokers map it and start in about half the CPU time.
- **The watchdog**: a small Python process beside the JVM that ends it when the Python process
  that owns the broker dies, even by SIGKILL (a notebook kernel restarted, a test runner
  killed), so no orphan JVM keeps the port; it then removes the broker's temporary data dir.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .errors import ConfigError, PortInUseError
from .jvm import Java, cache_dir

__all__ = [
    "HEAP_ENV", "JVM_OPTS", "LOG4J", "LOG4J2", "ClassArchive", "Watchdog", "check_port", "free_port", "new_cluster_id",
    "heap_options", "tail",
]

log = logging.getLogger(__name__)

HEAP_ENV = "KAFKA_CRUD_HEAP"
_DEFAULT_HEAP = "384m"

JVM_OPTS = [
    "-XX:+UseSerialGC",
    # The quick (C1) JIT only: the optimizing compiler spent half of the ~11 CPU seconds the
    # broker took to get ready (and more in the storage format), for no gain a teaching broker's
    # load can see; it also keeps ~35 MB less resident.
    "-XX:TieredStopAtLevel=1",
    "-XX:MaxMetaspaceSize=96m",
    "-XX:ReservedCodeCacheSize=48m",
    "-XX:MaxDirectMemorySize=64m",
    "-Xss512k",
    "-Djava.awt.headless=true",
]


#: The broker's log configuration (reload4j and log4j2 both), ``{log}`` its file.
LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.kafka.log.LogCleaner=INFO
"""

LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
"""


def heap_options() -> list[str]:
    """``-Xms``/``-Xmx`` for the broker: 384 MB at most, or ``KAFKA_CRUD_HEAP``."""
    heap = os.environ.get(HEAP_ENV, "").strip() or _DEFAULT_HEAP
    if not re.fullmatch(r"\d+[mMgG]", heap):
        raise ConfigError(f"{HEAP_ENV}={heap!r} is not a heap size: write it like 256m or 1g")
    return ["-Xms64m", f"-Xmx{heap}"]


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (of its last 64 KiB)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no broker log was written)"
    return "\n".join(text.splitlines()[-lines:])


class ClassArchive:
    """The class-data-sharing archive for one Java and one set of jars.

    :attr:`options` map it when it exists; otherwise :attr:`dump_options` have the JVM write it
    at exit, and :meth:`keep` puts it in place (atomically) after a clean exit. The file is
    named by a hash of the Java executable, the JVM options and the jars, so that no JVM maps
    an archive made for another.
    """

    def __init__(self, java: Java, classpath: str) -> None:
        self.options: list[str] = []
        self.dump_options: list[str] = []
        self._path: Path | None = None
        self._tmp: Path | None = None
        try:
            path = self.path_for(java, classpath)
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(path.parent)
        except OSError as exc:
            log.debug("No class-data-sharing archive: %s", exc)
            return
        if path.exists():
            self.options = [f"-XX:SharedArchiveFile={path}"]
        else:
            self._path = path
            self._tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            self.dump_options = [f"-XX:ArchiveClassesAtExit={self._tmp}"]

    @staticmethod
    def path_for(java: Java, classpath: str) -> Path:
        """Where the archive for this Java and these jars lives (it may not exist yet)."""
        executable = Path(java.executable).resolve()
        key = hashlib.sha256(f"{executable}:{executable.stat().st_mtime_ns}:{classpath}:{JVM_OPTS}".encode())
        libs = Path(classpath[:-1]) if classpath.endswith("*") else None
        if libs is not None and libs.is_dir():
            for jar in sorted(libs.glob("*.jar")):
                key.update(f"{jar.name}:{jar.stat().st_size}".encode())
        return cache_dir() / "cds" / f"kafka-broker-{key.hexdigest()[:16]}.jsa"

    @property
    def mapped(self) -> bool:
        """True when a JVM started with :attr:`options` maps an existing archive."""
        return bool(self.options)

    def keep(self, *, clean_exit: bool) -> None:
        """Put the archive the JVM wrote at exit in place, or drop a partial one."""
        tmp, self._tmp = self._tmp, None
        self.dump_options = []
        if tmp is None or self._path is None:
            return
        try:
            if clean_exit and tmp.exists() and tmp.stat().st_size > 0:
                os.replace(tmp, self._path)
            else:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("Could not keep the class-data-sharing archive: %s", exc)


def _remove_stale(folder: Path, max_age: float = 3600.0) -> None:
    # Archives a broker was writing when its owner died without renaming them.
    for tmp in folder.glob("*.jsa.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > max_age:
                tmp.unlink()
        except OSError:
            pass


# Runs beside the JVM; ends it when its stdin closes without "done", i.e. when the Python
# process that owns the broker is gone, however it died; then removes the folder it was given.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
pid = int(sys.argv[1])
signal.signal(signal.SIGINT, signal.SIG_IGN)


def gone():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


if sys.stdin.read().strip() != "done":
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not gone():
            time.sleep(0.1)
        if gone():
            break
    if len(sys.argv) > 2 and gone():
        shutil.rmtree(sys.argv[2], ignore_errors=True)
"""


class Watchdog:
    """Ends process ``pid`` when this Python process dies before :meth:`release`, then removes ``remove``."""

    def __init__(self, pid: int, remove: Path | None = None) -> None:
        extra = [] if remove is None else [str(remove)]
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(pid), *extra], stdin=subprocess.PIPE, start_new_session=True,
        )

    def release(self) -> None:
        """The owner stopped the process itself: the watchdog leaves without acting."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write(b"done\n")
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


# -- the ports and the identity of a broker's process ------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_port(port: int, what: str) -> None:
    """Raise :class:`~kafka_crud.PortInUseError` when something listens on ``port`` of 127.0.0.1."""
    # Ask whether something *listens*: a broker restarted right after a crash finds its old
    # connections in TIME_WAIT on the port, which the JVM (binding with SO_REUSEADDR) ignores.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise PortInUseError(
                f"Port {port} ({what}) on 127.0.0.1 is already in use. "
                "Stop whatever listens there (a broker still running?) or choose another port "
                "with --port, or leave it out to take a free one."
            )


def new_cluster_id() -> str:
    """A new cluster id that marks a broker as the kit's (see :mod:`kafka_crud.topics`)."""
    # A Kafka Uuid: URL-safe base64 of 16 bytes. Ours start with b"kafkacrud", so that a
    # connection can tell a broker the kit started (see kafka_crud.topics).
    from .topics import EMBEDDED_CLUSTER_PREFIX

    text = base64.urlsafe_b64encode(b"kafkacrud" + os.urandom(7)).decode().rstrip("=")
    assert text.startswith(EMBEDDED_CLUSTER_PREFIX)
    return text
