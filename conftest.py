"""One real Kafka broker for the whole test session, Python tests and nbval notebooks alike.

``KAFKA_BOOTSTRAP_SERVERS`` when set; else a Kafka container when a Docker daemon answers;
else the embedded broker (a Java subprocess). The chosen address is exported as
``KAFKA_BOOTSTRAP_SERVERS`` before any test runs, so notebook kernels started by nbval use it.

``KAFKA_CRUD_TEST_NODES=3`` runs the session on a local 3-node cluster instead
(``LocalKafka(nodes=3)``: replication factor 3, min.insync.replicas 2): the suite must pass
on it as it does on one broker (``make test-cluster``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest

from kafka_crud.config import BOOTSTRAP_ENV, KAFKA_VERSION

log = logging.getLogger("kafka_crud.tests")

_stop_session_broker: Callable[[], None] | None = None

#: How many nodes the session's embedded Kafka has (1: the single broker).
NODES_ENV = "KAFKA_CRUD_TEST_NODES"


def _nodes() -> int:
    value = os.environ.get(NODES_ENV, "").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{NODES_ENV}={value!r}: give a number of nodes, 1 or 3")
    return int(value)


def _start_container() -> tuple[str, Callable[[], None]]:
    """Apache Kafka's own image with the embedded broker's teaching settings; raises without Docker."""
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
    container.with_bind_ports(9092, ("127.0.0.1", port))
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
        except Exception:  # noqa: BLE001 - not up yet
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


def pytest_sessionstart(session: pytest.Session) -> None:
    global _stop_session_broker
    if os.environ.get(BOOTSTRAP_ENV) or session.config.option.collectonly:
        return
    nodes = _nodes()
    if nodes > 1:
        servers, stop = _start_embedded(nodes)
        how = f"an embedded cluster of {nodes} nodes"
    else:
        try:
            servers, stop = _start_container()
            how = "a Kafka container"
        except Exception as exc:  # noqa: BLE001 - no Docker daemon: the embedded broker is there
            log.info("No Kafka container (%s): using the embedded broker", exc)
            servers, stop = _start_embedded()
            how = "the embedded broker"
    os.environ[BOOTSTRAP_ENV] = servers
    _stop_session_broker = stop
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"kafka: Apache Kafka {KAFKA_VERSION} from {how} at {servers}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _stop_session_broker
    if _stop_session_broker is not None:
        stop, _stop_session_broker = _stop_session_broker, None
        os.environ.pop(BOOTSTRAP_ENV, None)
        stop()

