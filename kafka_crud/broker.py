"""The embedded broker: a real Apache Kafka 4.x (KRaft, broker + controller) in a Java subprocess.

    with LocalKafka() as broker:
        print(broker.bootstrap_servers)     # 127.0.0.1:<free port>
        kafka = broker.connect()            # a kafka_crud.Kafka connection to it

    LocalKafka(nodes=3)                     # a 3-node cluster: kafka_crud.cluster.LocalCluster
    LocalKafka(security="SASL_PLAINTEXT")   # a login to pass (kafka_crud.security); or "SSL"

Settings are tuned for teaching and small machines: the log cleaner looks for work every
200 ms and removed segments are deleted at once. The JVM's options, its class-data-sharing
archive and the watchdog that ends it when its owner dies are :mod:`kafka_crud.process`'s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from . import running
from .config import KAFKA_VERSION
from .connection import Kafka
from .errors import BrokerStartError
from .jvm import Java, find_java, kafka_classpath
from .process import (
    JVM_OPTS,
    LOG4J,
    LOG4J2,
    ClassArchive,
    Watchdog,
    check_port,
    free_port,
    heap_options,
    new_cluster_id,
    tail,
)
from .security import ListenerSecurity, listener_security
from .topics import note_started_here

__all__ = ["LocalKafka", "BROKER_SETTINGS", "free_port"]

log = logging.getLogger(__name__)

#: Broker settings for teaching: compaction visible within seconds, a small footprint.
BROKER_SETTINGS: dict[str, str] = {
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "background.threads": "2",
    # The cleaner: look for work every 200 ms (default 15 s), one thread, a small dedupe buffer.
    "log.cleaner.threads": "1",
    "log.cleaner.backoff.ms": "200",
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    "log.segment.delete.delay.ms": "0",
    "log.initial.task.delay.ms": "0",
    "log.retention.check.interval.ms": "1000",
}

_STATE_FILE = "kafka-crud-broker.json"

class LocalKafka:
    """A single-node Apache Kafka broker in a Java subprocess, on 127.0.0.1 only.

    ``LocalKafka(nodes=3)`` is a :class:`~kafka_crud.cluster.LocalCluster` instead: three
    nodes, each broker and controller, with replicated topics.

    Args:
        port: broker port; a free one when omitted (or the one used last time on ``data_dir``).
        data_dir: where the log and metadata live. Reused across starts, so topics and records
            survive a stop or a crash. Omitted: a temporary folder removed by :meth:`stop`.
        settings: broker settings on top of :data:`BROKER_SETTINGS`.
        start_timeout: seconds to wait for the broker to answer a metadata request.
        cluster_id: the id to format new storage with. By default one that marks the broker as
            the kit's own (see :mod:`kafka_crud.topics`); another makes it behave like someone
            else's cluster, to try the rules that protect their topics.
        nodes: 1; more returns a :class:`~kafka_crud.cluster.LocalCluster` of that many nodes.
        security: the client listener's protocol: ``"PLAINTEXT"``, ``"SASL_PLAINTEXT"`` (SASL
            PLAIN, user ``username``) or ``"SSL"`` (a throwaway CA made with keytool); clients
            need :attr:`client_config` (see :mod:`kafka_crud.security`).
    """

    def __new__(cls, *args: Any, nodes: int = 1, **kwargs: Any) -> LocalKafka:
        if nodes != 1 and cls is LocalKafka:
            from .cluster import LocalCluster

            return super().__new__(LocalCluster)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        settings: dict[str, str] | None = None,
        start_timeout: float = 90.0,
        version: str = KAFKA_VERSION,
        cluster_id: str | None = None,
        nodes: int = 1,
        security: str = "PLAINTEXT",
        username: str = "kafka-crud",
        password: str | None = None,
    ) -> None:
        if nodes != 1:
            raise ValueError(f"LocalKafka(nodes={nodes}) is a LocalCluster: create it as LocalKafka(nodes=...)")
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="kafka-crud-"))
        self._requested_port = port
        self.settings = {**BROKER_SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.version = version
        self.cluster_id = cluster_id or new_cluster_id()
        self._theirs = cluster_id is not None  # stands for someone else's cluster: never noted as the kit's
        self.port = 0
        self.controller_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._watchdog: Watchdog | None = None
        self.java: Java | None = None
        self._archive: ClassArchive | None = None
        self.security: ListenerSecurity = listener_security(
            security, self.data_dir / "security", username=username, password=password,
        )

    @property
    def nodes(self) -> list[LocalKafka]:
        """The cluster's nodes: this broker alone (a :class:`LocalCluster` has several)."""
        return [self]

    @property
    def client_config(self) -> dict[str, str]:
        """librdkafka settings a client needs besides the address (security), e.g. for
        ``KAFKA_CRUD_CLIENT_CONFIG``; empty for the default plain listener."""
        return dict(self.security.client_config)

    @property
    def client_properties(self) -> str:
        """:attr:`client_config` as ``key=value`` lines: write them to a file and point
        ``KAFKA_CRUD_CLIENT_CONFIG`` at it."""
        return self.security.client_properties

    # -- paths ---------------------------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        """The broker's ``log.dirs``: one folder per partition, holding the segment files."""
        return self.data_dir / "logs"

    @property
    def broker_log(self) -> Path:
        """The broker's own log file (server and log-cleaner messages)."""
        return self.data_dir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``, for ``bootstrap.servers``."""
        if not self.port:
            raise RuntimeError("The broker is not started: call start() or use `with LocalKafka() as kafka:`")
        return f"127.0.0.1:{self.port}"

    def connect(self, **config: object) -> Kafka:
        """A :class:`~kafka_crud.Kafka` connection to this broker (``config``: extra librdkafka settings)."""
        return Kafka(self.bootstrap_servers, config={**self.client_config, **config}, environment=False)

    @property
    def pid(self) -> int | None:
        """Process id of the JVM, while it runs."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _choose_ports(self) -> None:
        state_path = self.data_dir / _STATE_FILE
        saved = json.loads(state_path.read_text()) if state_path.exists() else {}
        self.port = self._requested_port or saved.get("port") or free_port()
        # The controller's endpoint is written into the metadata log by `format --standalone`:
        # a restarted broker must listen on the same one.
        self.controller_port = saved.get("controller_port") or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        check_port(self.port, "broker")
        check_port(self.controller_port, "controller")
        state_path.write_text(json.dumps({"port": self.port, "controller_port": self.controller_port}))

    def _quorum_config(self) -> dict[str, str]:
        return {"node.id": "1", "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}

    def _write_config(self) -> Path:
        name, protocol = self.security.listener, self.security.protocol
        props = {
            "process.roles": "broker,controller",
            **self._quorum_config(),
            "listeners": f"{name}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"{name}://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": name,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{name}:{protocol}",
            "log.dirs": str(self.log_dir),
            **self.security.broker_config,
            **self.settings,
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()), encoding="utf-8")
        (self.data_dir / "log4j.properties").write_text(LOG4J.format(log=self.broker_log))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.format(log=self.broker_log))
        return path

    def _java_command(self, main: str, *args: str, heap: list[str] | None = None, dump: bool = False) -> list[str]:
        assert self.java is not None
        archive = self._archive
        share = [] if archive is None else [*archive.options, *(archive.dump_options if dump else [])]
        return [
            str(self.java.executable), *(heap or heap_options()), *JVM_OPTS, *share,
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp", kafka_classpath(self.version), main, *args,
        ]

    _FORMAT_ARGS: tuple[str, ...] = ("--standalone",)

    def _format(self, config: Path) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        command = self._java_command(
            "kafka.tools.StorageTool", "format", *self._FORMAT_ARGS, "--ignore-formatted",
            "-t", self.cluster_id, "-c", str(config), heap=["-Xmx128m"],
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise BrokerStartError(
                f"Formatting the broker's storage in {self.log_dir} failed (exit {result.returncode}).",
                log_tail=(result.stdout + result.stderr)[-4000:],
            )

    @property
    def class_sharing(self) -> bool:
        """True when the running JVM mapped a class-data-sharing archive (see :meth:`start`)."""
        return self._archive is not None and self._archive.mapped

    def start(self) -> LocalKafka:
        """Start the JVM and return once the broker answers a metadata request."""
        if self.is_running():
            return self
        self._launch()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        if not self._theirs:
            note_started_here(self._formatted_cluster_id())
        log.info("Kafka ready at %s", self.bootstrap_servers)
        running.track(self, servers=self.bootstrap_servers, topic=None)
        return self

    def _heap(self) -> list[str]:
        return heap_options()

    def _launch(self) -> None:
        """Start the JVM without waiting for it to be ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.java = find_java()
        self._archive = ClassArchive(self.java, kafka_classpath(self.version))
        self._choose_ports()
        self.security.prepare(self.java)
        config = self._write_config()
        self._format(config)
        command = self._java_command("kafka.Kafka", str(config), heap=self._heap(), dump=True)
        log.info("Starting Apache Kafka %s on 127.0.0.1:%d (data in %s)", self.version, self.port, self.data_dir)
        stdout = (self.data_dir / "broker.stdout").open("ab")
        try:
            # A session of its own: Ctrl-C in a terminal reaches us, and we stop the broker in order.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.data_dir,
            )
        finally:
            stdout.close()
        self._watchdog = Watchdog(self.process.pid, self.data_dir if self._owns_dir else None)

    def _wait_ready(self, deadline: float | None = None) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        probe: dict[str, Any] = {"bootstrap.servers": f"127.0.0.1:{self.port}", "log_level": 0,
                                 "logger": logging.getLogger("kafka_crud.broker.probe"), **self.client_config}
        admin = AdminClient(probe)
        deadline = deadline or time.monotonic() + self.start_timeout
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise BrokerStartError(
                    f"The Kafka broker exited with code {code} while starting. "
                    f"Its log is {self.broker_log}.",
                    log_tail=tail(self.broker_log) + "\n" + tail(self.data_dir / "broker.stdout", 20),
                )
            try:
                if self._answered(admin.list_topics(timeout=1.0)):
                    return
            except KafkaException:
                pass  # until the listener is up
            if time.monotonic() > deadline:
                raise BrokerStartError(
                    f"The Kafka broker did not answer a metadata request within {self.start_timeout:.0f} s. "
                    f"Its log is {self.broker_log}.",
                    log_tail=tail(self.broker_log),
                )
            time.sleep(0.2)

    def _formatted_cluster_id(self) -> str:
        """The cluster id in the storage's meta.properties (an older data dir keeps its own)."""
        for line in (self.log_dir / "meta.properties").read_text(encoding="utf-8").splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return self.cluster_id

    def _answered(self, metadata: Any) -> bool:
        return bool(metadata.brokers)

    def kill(self) -> None:
        """SIGKILL the JVM (a crash, for fault-injection demos); the data dir stays as it was."""
        running.untrack(self)
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._keep_archive(clean_exit=False)
        self._release_watchdog()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM), kill after ``timeout`` s; remove a temporary data dir."""
        running.untrack(self)
        clean_exit = False
        try:
            if self.process and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                    clean_exit = True
                except subprocess.TimeoutExpired:
                    log.warning("Kafka did not stop within %.0f s: killing it", timeout)
                    self.process.kill()
                    self.process.wait()
        finally:
            self._keep_archive(clean_exit=clean_exit)
            self._release_watchdog()
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def _keep_archive(self, *, clean_exit: bool) -> None:
        if self._archive is not None:
            self._archive.keep(clean_exit=clean_exit)

    def _release_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.release()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's own log."""
        return tail(self.broker_log, lines)

    def __repr__(self) -> str:
        state = f"running at {self.bootstrap_servers}" if self.is_running() else "stopped"
        return f"<LocalKafka {self.version} {state}, data in {self.data_dir}>"
