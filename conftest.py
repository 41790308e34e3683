"""One real Kafka broker for the whole test session, Python tests and nbval notebooks alike.

``KAFKA_BOOTSTRAP_SERVERS`` when set; else a Kafka container when a Docker daemon answers;
else the embedded broker (a Java subprocess).

The broker starts lazily, right before the first test that needs one runs: a test marked
``broker``, or a notebook cell (nbval starts a notebook's kernel when its first cell is set
up, after this; the kernel inherits ``KAFKA_BOOTSTRAP_SERVERS``). ``pytest -m "not broker"``
therefore starts none, and a test that is not marked ``broker`` may not start one either:
``LocalKafka.start`` refuses while it runs.

``KAFKA_CRUD_TEST_NODES=3`` runs the session on a local 3-node cluster instead
(``LocalKafka(nodes=3)``: replication factor 3, min.insync.replicas 2): the suite must pass
on it as it does on one broker (``make test-cluster``). It is read when pytest starts, before
the tests' own environment drops every ``KAFKA_CRUD_*`` setting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator

import pytest

from kafka_crud.config import BOOTSTRAP_ENV, CLIENT_CONFIG_ENV, KAFKA_VERSION

log = logging.getLogger("kafka_crud.tests")


class _SessionBroker:
    """The session's broker: configured from outside, started on first need, or none yet."""

    def __init__(self) -> None:
        self.servers: str | None = None
        self.external = False
        self.error: BaseException | None = None
        self._stop: Callable[[], None] | None = None
        self._saved_env: dict[str, str | None] = {}
        self.nodes = 1

    def configure(self) -> None:
        self.nodes = _nodes()
        servers = os.environ.get(BOOTSTRAP_ENV, "").strip()
        if servers:
            self.servers, self.external = servers, True

    def ensure(self, config: pytest.Config) -> str:
        if self.servers is not None:
            return self.servers
        if self.error is not None:  # failed once: fail every test that needs it, at once
            raise self.error
        try:
            if self.nodes > 1:
                servers, stop = _start_embedded(self.nodes)
                how = f"an embedded cluster of {self.nodes} nodes"
            else:
                try:
                    servers, stop = _start_container()
                    how = "a Kafka container"
                except Exception as exc:  # noqa: BLE001 - no Docker daemon: the embedded broker is there
                    log.info("No Kafka container (%s): using the embedded broker", exc)
                    servers, stop = _start_embedded()
                    how = "the embedded broker"
        except BaseException as exc:
            self.error = exc
            raise
        self.servers, self._stop = servers, stop
        # Notebook kernels started from now on use this broker, with no settings meant for
        # another cluster (its listener is plain TCP on loopback).
        self._saved_env = {name: os.environ.get(name) for name in (BOOTSTRAP_ENV, CLIENT_CONFIG_ENV)}
        os.environ[BOOTSTRAP_ENV] = servers
        os.environ.pop(CLIENT_CONFIG_ENV, None)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"kafka: Apache Kafka {KAFKA_VERSION} from {how} at {servers}")
        return servers

    def stop(self) -> None:
        stop, self._stop = self._stop, None
        if stop is None:
            return
        saved_servers = self._saved_env.get(BOOTSTRAP_ENV)
        if saved_servers is None:
            os.environ.pop(BOOTSTRAP_ENV, None)
        else:
            os.environ[BOOTSTRAP_ENV] = saved_servers
        saved_config = self._saved_env.get(CLIENT_CONFIG_ENV)
        if saved_config is not None:
            os.environ[CLIENT_CONFIG_ENV] = saved_config
        self.servers = None
        stop()


_broker = _SessionBroker()


def needs_broker(item: pytest.Item) -> bool:
    """A test marked ``broker``, or a notebook cell (every course notebook talks to Kafka)."""
    return item.get_closest_marker("broker") is not None or item.path.suffix == ".ipynb"

#: How many nodes the session's embedded Kafka has (1: the single broker).
NODES_ENV = "KAFKA_CRUD_TEST_NODES"


def _nodes() -> int:
    value = os.environ.get(NODES_ENV, "").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{NODES_ENV}={value!r}: give a number of nodes, 1 or 3")
    return int(value)


def _start_container() -> tuple[str, Callable[[], None]]:
    """Apache Kafka's own image with the embedded broker's teaching settings; raises without Docker."""
    # No daemon to ask: say so at once. Asking through docker's client without one leaves its
    # Unix socket unclosed, and the ResourceWarning would fail whichever test runs at the next GC.
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        raise RuntimeError("no Docker daemon (neither DOCKER_HOST nor /var/run/docker.sock)")
    from testcontainers.core.container import DockerContainer  # raises if no daemon answers

    from kafka_crud.broker import BROKER_SETTINGS, free_port

    port = free_port()
    container = DockerContainer(f"apache/kafka:{KAFKA_VERSION}")  # raises here without Docker
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
    }
    env.update({"KAFKA_" + k.upper().replace(".", "_"): v for k, v in BROKER_SETTINGS.items()})
    for key, value in env.items():
        container.with_env(key, value)
    container.with_bind_ports(9092, ("127.0.0.1", port))  # type: ignore[arg-type]  # docker-py takes (ip, port)
    container.start()
    servers = f"127.0.0.1:{port}"
    _wait_for_metadata(servers)
    return servers, container.stop


def _wait_for_metadata(servers: str, timeout: float = 120.0) -> None:
    import time

    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": servers})
    deadline = time.monotonic() + timeout
    while True:
        try:
            if admin.list_topics(timeout=2).brokers:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _start_embedded(nodes: int = 1) -> tuple[str, Callable[[], None]]:
    from kafka_crud.broker import LocalKafka
    from kafka_crud.cluster import LocalCluster

    kafka = LocalKafka(nodes=nodes)
    kafka.start()
    if not isinstance(kafka, LocalCluster):
        return kafka.bootstrap_servers, kafka.stop
    cluster = kafka

    def stop() -> None:
        # What three nodes took after the whole session: docs/reliability.md quotes it.
        rss = {node: f"{size / 2**20:.0f} MiB" for node, size in cluster.rss().items()}
        print(f"\nkafka: resident memory of the nodes at the end of the session: {rss}")
        cluster.stop()

    return cluster.bootstrap_servers, stop


def pytest_configure(config: pytest.Config) -> None:
    _broker.configure()


def _refuse_to_start(self: object) -> None:
    raise RuntimeError(
        "This test started a Kafka broker but is not marked broker: add @pytest.mark.broker "
        "(or pytestmark = pytest.mark.broker), so that `pytest -m 'not broker'` stays broker-free"
    )


def _phase(item: pytest.Item) -> Generator[None, object, object]:
    """Run a test's setup or call with the session broker up, or with brokers refused."""
    if needs_broker(item):
        _broker.ensure(item.config)  # before the fixtures, and before nbval starts a kernel
        return (yield)
    from kafka_crud.broker import LocalKafka

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalKafka, "start", _refuse_to_start)
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _phase(item))


#: The course's topics: every one a notebook creates starts with this.
COURSE_TOPICS = "user"
_notebooks_ran: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and ".ipynb" in report.nodeid:
        _notebooks_ran.append(report.nodeid)


def keys_in_more_than_one_partition(servers: str) -> dict[str, list[str]]:
    """Per course topic on ``servers``, the keys found in more than one partition."""
    from kafka_crud.connection import Kafka

    kafka = Kafka(servers, environment=False)
    found: dict[str, list[str]] = {}
    for topic in sorted(kafka.admin.list_topics(timeout=10).topics):
        if not topic.startswith(COURSE_TOPICS):
            continue
        partitions: dict[bytes, set[int]] = {}
        for record in kafka.iter_log(topic):
            if record.key is not None:
                partitions.setdefault(record.key, set()).add(record.partition)
        spread = sorted(k.decode("utf-8", "replace") for k, ps in partitions.items() if len(ps) > 1)
        if spread:
            found[topic] = spread
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        if _notebooks_ran and _broker.servers is not None and not _broker.external:
            # After the course: in every topic it wrote, each key lives in one partition (04's
            # mixed-partitioner demo breaks that on purpose, on a topic it deletes again).
            spread = keys_in_more_than_one_partition(_broker.servers)
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"kafka: after {len(_notebooks_ran)} notebook cells, keys in more than one partition: "
                    + (repr(spread) if spread else "none")
                )
            if spread:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
    finally:
        _broker.stop()


@pytest.fixture
def session_broker() -> str | None:
    """The session broker's address; None while no test that needs one has run."""
    return _broker.servers
