"""Failover on a 3-node cluster: kill -9 a partition's leader, or the controller, under a stream of PUTs.

Replication factor 3, min.insync.replicas 2, acks=all: a write is acknowledged only once two
replicas or more have it, and the new leader is chosen from the in-sync replicas, so no
acknowledged write may be lost. Every write either got a 2xx or a 503 within the write
timeout; the HTTP server is never restarted; the killed node comes back and rejoins the ISR.
Checked on the same server, on a server rebuilt from the topic, and in the log itself: each
acknowledged write at least once, usually exactly once; a repeat, which librdkafka's idempotent
producer can write when a leader dies while a write times out (see ``helpers.copies_in_log``),
must be the same record again.

The test runs its own cluster (``LocalKafka(nodes=3)``), so it works the same whether the
session's Kafka is one broker or a cluster, and killing its nodes leaves the session's alone.
``pytest -s`` prints the figures docs/reliability.md quotes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import call, copies_in_log
from test_faults import users_of

from kafka_crud.cluster import LocalCluster
from kafka_crud.connection import Kafka
from kafka_crud.partitioning import partition_for
from kafka_crud.server import serve_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

WRITE_TIMEOUT = 3.0
WRITERS = 4
PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of this module's own, on data dirs that outlive a kill."""
    nodes = LocalCluster(nodes=3, data_dir=tmp_path_factory.mktemp("failover-cluster"))
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@dataclass(frozen=True)
class Write:
    email: str
    partition: int
    started: float
    ended: float
    status: int
    retry_after: str | None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Stream:
    """Writer threads PUTting users with keys never used before, until told to stop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.writes: list[Write] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(WRITERS)]
        self.run = uuid.uuid4().hex[:6]

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, writer: int) -> None:
        for i in range(1_000_000):
            if self._stop.is_set():
                return
            email = f"w{writer}-{i}-{self.run}@failover.test"
            started = time.monotonic()
            try:
                answer = call(self.url, "PUT", "/user", {"email": email, "name": f"name {writer}-{i}"})
            except Exception as exc:  # noqa: BLE001 - no answer at all is a failure the test reports
                self.errors.append(exc)
                return
            with self._lock:
                self.writes.append(Write(email, partition_for(email, PARTITIONS), started, time.monotonic(),
                                         answer.status, answer.headers.get("Retry-After")))

    def acknowledged(self, *, after: float = 0.0, partition: int | None = None) -> list[Write]:
        with self._lock:
            return [w for w in self.writes if 200 <= w.status < 300 and w.started >= after
                    and partition in (None, w.partition)]

    def wait_for_acks(self, count: int, timeout: float, *, after: float = 0.0, partition: int | None = None) -> float:
        """Wait until ``count`` writes started after ``after`` are acknowledged; return when the first was."""
        deadline = time.monotonic() + timeout
        while len(acks := self.acknowledged(after=after, partition=partition)) < count:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"fewer than {count} writes acknowledged (partition {partition})"
            time.sleep(0.05)
        return min(w.ended for w in acks)


def failover_during_stream(cluster: LocalCluster, choose: Callable[[str], int]) -> dict[str, object]:
    """PUT a stream of new users, kill -9 the node ``choose(topic)`` names, and carry on.

    Returns the figures: writes acknowledged and answered 503, the time to a new leader for
    each partition the node led, until writes on them were acknowledged again, and until the
    restarted node was back in every ISR.
    """
    topic = f"failover-{uuid.uuid4().hex[:10]}"
    kafka = cluster.connect()
    kafka.create_topic(topic, partitions=PARTITIONS)
    with serve_in_thread(cluster.connect(), topic=topic, write_timeout=WRITE_TIMEOUT) as server:
        with Stream(server.url) as stream:
            for partition in range(PARTITIONS):
                stream.wait_for_acks(10, timeout=30, partition=partition)
            victim = choose(topic)
            led = [p for p, state in cluster.partitions(topic).items() if state.leader == victim]
            killed = time.monotonic()
            cluster.node(victim).kill()
            # While a leader is missing the server still answers: health, and reads from memory.
            assert call(server.url, "GET", "/healthz").status == 200
            some = stream.acknowledged()[0]
            answer = call(server.url, "GET", f"/user?email={quote(some.email)}")
            assert answer.status == 200
            elected = {p: cluster.wait_for_leader(topic, p, not_on=victim) for p in led}
            to_leader = time.monotonic() - killed
            # The same server, never restarted, acknowledges writes to those partitions again.
            first_acks = [stream.wait_for_acks(20, timeout=60, after=killed, partition=p) for p in led]
            to_writes = max(first_acks, default=killed) - killed
            isr_shrunk = {p: cluster.isr(topic, p) for p in range(PARTITIONS)}
            restarted = time.monotonic()
            cluster.node(victim).start()
            for p in range(PARTITIONS):
                cluster.wait_for_isr(topic, p, size=3, timeout=60)
            to_isr = time.monotonic() - restarted
            stream.wait_for_acks(20, timeout=30, after=time.monotonic())
        assert not stream.errors, stream.errors

        bound = WRITE_TIMEOUT + 3.0  # slack for a loaded machine
        for w in stream.writes:
            assert w.status in (201, 503), w
            assert w.seconds <= bound, f"{w.email} answered {w.status} after {w.seconds:.1f} s"
            if w.status == 503:
                # Any partition: one the node led, and one it followed, whose acks=all writes wait
                # for it until the controller fences it and takes it out of the ISR.
                assert w.retry_after is not None

        expected = {w.email for w in stream.acknowledged()}
        seen = users_of(server.url)
        assert expected <= set(seen), f"lost on the live server: {sorted(expected - set(seen))[:5]}"

    with serve_in_thread(cluster.connect(), topic=topic) as rebuilt:
        rebuilt_users = users_of(rebuilt.url)
    assert expected <= set(rebuilt_users), f"lost after a rebuild: {sorted(expected - set(rebuilt_users))[:5]}"
    log = Kafka(cluster.bootstrap_servers).read_log(topic)
    copies = copies_in_log(log, expected)
    keys = Counter(r.key.decode() for r in log if r.key)
    assert set(keys) - expected <= {w.email for w in stream.writes if w.status == 503}
    statuses = Counter(w.status for w in stream.writes)
    return {
        "killed": victim, "led": led, "new_leaders": elected, "acknowledged": statuses[201], "lost": 0,
        "answered_503": statuses[503],
        "503_by_partition": dict(sorted(Counter(w.partition for w in stream.writes if w.status == 503).items())),
        "landed_though_503": len(set(keys) - expected),
        "acknowledged_twice_in_log": sum(1 for n in copies.values() if n > 1),
        "slowest": max(w.seconds for w in stream.writes), "to_new_leader": to_leader,
        "to_acknowledged_writes": to_writes, "isr_without_it": isr_shrunk, "back_in_every_isr": to_isr,
    }


def test_killing_a_partitions_leader_loses_no_acknowledged_write(cluster: LocalCluster) -> None:
    def leader_of_partition_0(topic: str) -> int:
        leader = cluster.leader(topic, 0)
        assert leader is not None
        return leader

    figures = failover_during_stream(cluster, leader_of_partition_0)
    assert figures["answered_503"], "no write saw the leader gone: the kill came too late"
    _report("leader of partition 0 killed", figures)


def test_killing_the_active_controller_loses_no_acknowledged_write(cluster: LocalCluster) -> None:
    def controller(topic: str) -> int:
        node = cluster.controller()
        assert node is not None
        return node

    figures = failover_during_stream(cluster, controller)
    assert cluster.controller() is not None
    _report("active controller killed", figures)


def test_each_node_can_be_stopped_killed_paused_and_restarted(cluster: LocalCluster) -> None:
    topic = f"nodes-{uuid.uuid4().hex[:10]}"
    kafka = cluster.connect()
    kafka.create_topic(topic, partitions=1)
    assert kafka.topic_config(topic)["min.insync.replicas"] == "2"
    assert kafka.topic_config(topic)["unclean.leader.election.enable"] == "false"
    state = cluster.partition(topic)
    assert len(state.replicas) == 3
    assert state.isr == (1, 2, 3)
    for node in (cluster.node(1), cluster.node(3)):
        pid = node.pid
        node.stop()  # a clean shutdown: its leadership moves first
        assert not node.is_running()
        assert node.node_id not in cluster.wait_for_isr(topic, size=2)
        node.start()
        assert node.pid != pid
        assert cluster.wait_for_isr(topic, size=3) == (1, 2, 3)
    node = cluster.node(2)
    node.pause()
    try:
        assert node.is_running()
        assert 2 not in cluster.wait_for_isr(topic, size=2, timeout=60)  # fenced: no heartbeats
    finally:
        node.resume()
    assert cluster.wait_for_isr(topic, size=3, timeout=60) == (1, 2, 3)


def test_no_node_outlives_a_killed_owner(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from test_broker import _alive, _wait_dead

    script = (
        "import time\n"
        "from kafka_crud import LocalKafka\n"
        f"c = LocalKafka(nodes=3, data_dir={str(tmp_path)!r}).start()\n"
        "print(*[n.pid for n in c.nodes], flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 3
        assert all(_alive(p) for p in pids)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert all(_wait_dead(p, 30) for p in pids), "a node's JVM outlived the process that started it"
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]


def _report(what: str, figures: dict[str, object]) -> None:
    # Shown with `pytest -s`; the figures in docs/reliability.md come from these lines.
    text = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"\n{what}: {text}")
    print(json.dumps({"what": what, **{k: str(v) for k, v in figures.items()}}))


def test_cli_broker_runs_a_cluster_of_three_nodes_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys

    cli = Path(sys.executable).with_name("kafka-crud")
    proc = subprocess.Popen([str(cli), "broker", "--nodes", "3", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        servers = line.split("Kafka ready at ")[1].split()[0]
        ports = [int(address.rsplit(":", 1)[1]) for address in servers.split(",")]
        assert len(ports) == 3, line
        assert Kafka(servers).ping() == 3  # three brokers answer
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        for port in ports:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
