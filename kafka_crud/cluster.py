"""A local multi-node Apache Kafka cluster: three KRaft nodes, each broker and controller.

    with LocalKafka(nodes=3) as cluster:          # a LocalCluster
        kafka = cluster.connect()                  # bootstrap.servers lists every node
        kafka.ensure_topic("user")                 # replication factor 3, min.insync.replicas 2
        leader = cluster.leader("user", 0)         # the node id leading partition 0
        cluster.node(leader).kill()                # kill -9 it; another replica takes over
        cluster.wait_for_isr("user", 0, size=2)    # the controller took it out of the ISR
        cluster.node(leader).start()               # back, catches up, rejoins the ISR

Every node is a :class:`~kafka_crud.LocalKafka` of its own (a JVM with its own watchdog,
ports and data dir ``node-<id>``) that :meth:`ClusterNode.stop`, :meth:`~ClusterNode.kill`,
:meth:`~ClusterNode.pause` and :meth:`~ClusterNode.start` act on alone. The controllers form a
static quorum (``controller.quorum.voters``): the cluster works while a majority (2 of 3) of
them runs.

Settings on top of :data:`~kafka_crud.broker.BROKER_SETTINGS`: topics get replication factor
3 (``default.replication.factor``; the kit creates topics with the broker's default) and
``min.insync.replicas`` 2, so that an ``acks=all`` write is acknowledged only once at least two
replicas have it; unclean leader election stays off; the internal topics (consumer offsets,
transactions) are replicated the same way. A node that stops heartbeating is fenced after
6 s (Kafka's default is 9 s), and then leaves the in-sync replicas of its partitions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .broker import BROKER_SETTINGS, LocalKafka
from .config import KAFKA_VERSION
from .errors import BrokerStartError, KafkaUnavailableError, TopicNotFoundError
from .process import HEAP_ENV, check_port, free_port, new_cluster_id, tail
from .replicas import PartitionState, ReplicaViews
from .security import listener_security

__all__ = ["CLUSTER_HEAP", "CLUSTER_SETTINGS", "ClusterNode", "LocalCluster", "PartitionState", "cluster_settings"]

log = logging.getLogger(__name__)

#: The heap cap of each node unless ``KAFKA_CRUD_HEAP`` says otherwise: three nodes, JupyterLab
#: and a few kernels fit a 2 GB pod.
CLUSTER_HEAP = "160m"

_STATE_FILE = "kafka-crud-cluster.json"


def cluster_settings(nodes: int) -> dict[str, str]:
    """Replication settings for a cluster of ``nodes`` nodes (3: RF 3, min.insync.replicas 2)."""
    replicas = min(3, nodes)
    min_isr = str(max(1, replicas - 1))
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": min_isr,
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        # Fence a node that stopped heartbeating after 6 s (default 9 s): failover a class can wait for.
        "broker.session.timeout.ms": "6000",
        "broker.heartbeat.interval.ms": "1000",
        "num.replica.fetchers": "1",
    }


#: The settings of a 3-node cluster, on top of the single broker's.
CLUSTER_SETTINGS: dict[str, str] = cluster_settings(3)


class ClusterNode(LocalKafka):
    """One node of a :class:`LocalCluster`: a broker and controller in its own JVM.

    ``start()``, ``stop()`` (a clean shutdown: its partitions' leadership moves first),
    ``kill()`` (SIGKILL), ``pause()``/``resume()`` (SIGSTOP/SIGCONT: a node that hangs).
    """

    _FORMAT_ARGS = ()  # the voters are in the config: no --standalone

    def __init__(self, cluster: LocalCluster, node_id: int, port: int, controller_port: int) -> None:
        super().__init__(
            data_dir=cluster.data_dir / f"node-{node_id}", settings=cluster.settings,
            start_timeout=cluster.start_timeout, version=cluster.version, cluster_id=cluster.cluster_id,
        )
        self._owns_dir = False  # the cluster's folder holds it
        self.node_id = node_id
        self._voters = cluster.voters
        self._assigned = (port, controller_port)
        self.paused = False
        """True between :meth:`pause` and :meth:`resume`."""

    def _choose_ports(self) -> None:
        self.port, self.controller_port = self._assigned
        check_port(self.port, f"node {self.node_id}'s broker")
        check_port(self.controller_port, f"node {self.node_id}'s controller")

    def _quorum_config(self) -> dict[str, str]:
        return {"node.id": str(self.node_id), "controller.quorum.voters": self._voters}

    def _heap(self) -> list[str]:
        heap = os.environ.get(HEAP_ENV, "").strip() or CLUSTER_HEAP
        return ["-Xms32m", f"-Xmx{heap}"] if heap[:-1].isdigit() else super()._heap()

    def _answered(self, metadata: Any) -> bool:
        return self.node_id in metadata.brokers  # registered and unfenced

    def pause(self) -> None:
        """SIGSTOP the JVM: it holds its connections and answers nothing, like a hung machine."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT a paused JVM."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 30.0) -> None:
        self.resume()  # a paused JVM would not see the SIGTERM
        super().stop(timeout)

    def kill(self) -> None:
        super().kill()
        self.paused = False

    def rss_bytes(self) -> int | None:
        """The JVM's resident memory (Linux), or None when it is not running."""
        pid = self.pid
        if pid is None:
            return None
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def __repr__(self) -> str:
        state = f"running at {self.bootstrap_servers}" if self.is_running() else "stopped"
        return f"<ClusterNode {self.node_id} {state}>"


class LocalCluster(ReplicaViews, LocalKafka):
    """A local Apache Kafka cluster of ``nodes`` KRaft nodes (broker + controller each), on 127.0.0.1.

    Create it as ``LocalKafka(nodes=3)`` (or ``LocalCluster()``). Args as for
    :class:`~kafka_crud.LocalKafka`; ``data_dir`` holds one folder per node, reused across starts.
    """

    def __init__(
        self,
        *,
        nodes: int = 3,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        settings: dict[str, str] | None = None,
        start_timeout: float = 120.0,
        version: str = KAFKA_VERSION,
        cluster_id: str | None = None,
        security: str = "PLAINTEXT",
        username: str = "kafka-crud",
        password: str | None = None,
    ) -> None:
        if nodes < 2:
            raise ValueError("A LocalCluster has 2 nodes or more: LocalKafka() is the single broker")
        if security.upper() != "PLAINTEXT":
            raise ValueError("The local cluster's listeners are plain TCP on loopback: security is for LocalKafka()")
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="kafka-crud-cluster-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = {**BROKER_SETTINGS, **cluster_settings(nodes), **(settings or {})}
        self.start_timeout = start_timeout
        self.version = version
        self.security = listener_security("PLAINTEXT", self.data_dir)
        state = self._state(nodes, port)
        self.cluster_id = state["cluster_id"] if "cluster_id" in state else (cluster_id or new_cluster_id())
        if cluster_id and cluster_id != self.cluster_id:
            raise ValueError(f"{self.data_dir} holds cluster {self.cluster_id}, not {cluster_id}")
        ports = state["nodes"]
        self.voters = ",".join(f"{n['id']}@127.0.0.1:{n['controller_port']}" for n in ports)
        self._nodes = [ClusterNode(self, n["id"], n["port"], n["controller_port"]) for n in ports]
        self._probe: tuple[str, Any] | None = None
        state["cluster_id"] = self.cluster_id
        (self.data_dir / _STATE_FILE).write_text(json.dumps(state))

    def _state(self, nodes: int, port: int | None) -> dict[str, Any]:
        # Ports and the cluster id are kept in the data dir: the voters' endpoints are part of
        # the cluster, and a restarted cluster must listen where it did.
        path = self.data_dir / _STATE_FILE
        if path.exists():
            state: dict[str, Any] = json.loads(path.read_text())
            if len(state["nodes"]) != nodes:
                raise ValueError(f"{self.data_dir} holds a cluster of {len(state['nodes'])} nodes, not {nodes}")
            return state
        taken: set[int] = set()

        def pick(wanted: int | None = None) -> int:
            chosen = wanted or free_port()
            while chosen in taken:
                chosen = free_port()
            taken.add(chosen)
            return chosen

        return {"nodes": [
            {"id": i, "port": pick(port + i - 1 if port else None), "controller_port": pick()}
            for i in range(1, nodes + 1)
        ]}

    # -- nodes -----------------------------------------------------------------------------
    @property
    def nodes(self) -> list[LocalKafka]:
        """The nodes, by node id (each a :class:`ClusterNode`)."""
        return list(self._nodes)

    def node(self, node_id: int) -> ClusterNode:
        """The node with id ``node_id`` (1, 2, 3, ...)."""
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"No node {node_id}: the nodes are {[n.node_id for n in self._nodes]}")

    def running(self) -> list[int]:
        """Ids of the nodes whose JVM runs now."""
        return [n.node_id for n in self._nodes if n.is_running()]

    def rss(self) -> dict[int, int]:
        """Resident memory of each running node's JVM, in bytes."""
        return {n.node_id: r for n in self._nodes if (r := n.rss_bytes()) is not None}

    # -- as one Kafka ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The first node's broker port."""
        return self._nodes[0].port

    @port.setter
    def port(self, value: int) -> None:
        pass  # chosen per node

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address: a client finds the cluster through any node that runs."""
        if not any(n.port for n in self._nodes):
            raise RuntimeError("The cluster is not started: call start() or use `with LocalKafka(nodes=3) as kafka:`")
        return ",".join(f"127.0.0.1:{n._assigned[0]}" for n in self._nodes)

    @property
    def log_dir(self) -> Path:
        """The first node's log dir (each node has its own: ``cluster.node(i).log_dir``)."""
        return self._nodes[0].log_dir

    @property
    def log_dirs(self) -> dict[int, Path]:
        """Every node's log dir, by node id."""
        return {n.node_id: n.log_dir for n in self._nodes}

    @property
    def broker_log(self) -> Path:
        return self._nodes[0].broker_log

    @property
    def pid(self) -> int | None:
        """The first running node's JVM (each node has its own: ``cluster.node(i).pid``)."""
        return next((n.pid for n in self._nodes if n.pid is not None), None)

    def is_running(self) -> bool:
        """True while every node runs."""
        return all(n.is_running() for n in self._nodes)

    @property
    def class_sharing(self) -> bool:
        return all(n.class_sharing for n in self._nodes if n.is_running())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- node {n.node_id} ---\n{n.log_tail(lines)}" for n in self._nodes)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Start every node that is not running; return once each answers and all are registered."""
        stopped = [n for n in self._nodes if not n.is_running()]
        deadline = time.monotonic() + self.start_timeout
        try:
            # All at once: a controller quorum needs a majority before any broker can register.
            for node in stopped:
                node._launch()
            for node in stopped:
                node._wait_ready(deadline)
            self._wait(lambda: self._registered() == len(self._nodes), "every node to register", deadline,
                       starting=True)
        except BaseException:
            self.stop()
            raise
        log.info("Kafka cluster of %d nodes ready at %s", len(self._nodes), self.bootstrap_servers)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node, all at once (one by one, the last would wait for a quorum that is gone);
        remove a temporary data dir."""
        try:
            running = [n for n in self._nodes if n.is_running()]
            for node in running:
                node.resume()
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
            for node in self._nodes:
                node.stop(timeout)
        finally:
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL every node."""
        for node in self._nodes:
            node.kill()

    # -- who leads, who is in sync -------------------------------------------------------------
    def _metadata(self, topic: str | None = None) -> Any:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # Ask only nodes that answer: a paused one holds its connections and would be asked again.
        servers = ",".join(f"127.0.0.1:{n.port}" for n in self._nodes if n.is_running() and not n.paused)
        if not servers:
            raise KafkaUnavailableError("No node of the cluster is running")
        if self._probe is None or self._probe[0] != servers:
            probe: dict[str, Any] = {"bootstrap.servers": servers, "log_level": 0,
                                     "logger": logging.getLogger("kafka_crud.cluster.probe"),
                                     "reconnect.backoff.max.ms": 1000}
            self._probe = (servers, AdminClient(probe))
        try:
            return self._probe[1].list_topics(topic=topic, timeout=5)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"The cluster at {servers} did not answer: {exc}") from None

    def _registered(self) -> int:
        try:
            return len(self._metadata().brokers)
        except KafkaUnavailableError:
            return 0

    def _wait(self, check: Callable[[], bool], what: str, deadline: float, *, starting: bool = False) -> None:
        while True:
            try:
                if check():
                    return
            except (KafkaUnavailableError, TopicNotFoundError):
                pass
            for node in self._nodes if starting else []:
                code = node.process.poll() if node.process is not None else None
                if code is not None:
                    raise BrokerStartError(
                        f"Node {node.node_id} exited with code {code}; its log is {node.broker_log}.",
                        log_tail=tail(node.broker_log),
                    )
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(f"Timed out waiting for {what} on {self.bootstrap_servers}")
            time.sleep(0.2)

    def __repr__(self) -> str:
        running = self.running()
        return f"<LocalCluster {self.version}: nodes {running} of {len(self._nodes)} running, data in {self.data_dir}>"
