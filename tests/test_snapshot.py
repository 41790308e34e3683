"""Restarting from a snapshot (``--state-dir``): only the tail is replayed, every change is visible,
and a snapshot that may not reflect this log is discarded with its reason, never loaded."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewPartitions

from kafka_crud.cli import main
from kafka_crud.client import UserClient
from kafka_crud.connection import Kafka
from kafka_crud.errors import ConfigError
from kafka_crud.partitioning import partition_for
from kafka_crud.producer import UserProducer
from kafka_crud.records import User
from kafka_crud.server import serve_in_thread
from kafka_crud.service import UserService
from kafka_crud.snapshot import FORMAT, MAGIC, UnusableSnapshotError, read_snapshot, snapshot_path
from kafka_crud.state_dir import StateDir

pytestmark = pytest.mark.broker


def _table(service: UserService) -> list[tuple[str, str, int, int]]:
    return [(s.user.email, s.user.name, s.position.partition, s.position.offset) for s in service.users()]


def _run(kafka: Kafka, topic: str, state_dir: Path | None) -> UserService:
    return UserService(kafka, topic=topic, state_dir=state_dir).start().wait_ready(30)


def _with_snapshot(kafka: Kafka, topic: str, state_dir: Path, users: int = 20) -> list[tuple[str, str, int, int]]:
    """Write ``users`` users and a delete through a service with ``state_dir``; stop it (the last snapshot)."""
    service = _run(kafka, topic, state_dir)
    try:
        for i in range(users):
            service.put(User(f"user{i}@example.com", f"User {i}"))
        service.delete("user0@example.com")
        return _table(service)
    finally:
        service.stop()


def _rewrite_header(path: Path, **changes: Any) -> None:
    """Change fields of a snapshot's header, with a valid header checksum (a snapshot from elsewhere)."""
    data = path.read_bytes()
    start = len(MAGIC) + 8
    size, _ = struct.unpack_from(">II", data, len(MAGIC))
    fields = {**json.loads(data[start:start + size]), **changes}
    header = json.dumps(fields).encode()
    path.write_bytes(MAGIC + struct.pack(">II", len(header), zlib.crc32(header)) + header + data[start + size:])


def test_a_restart_replays_only_the_changes_since_the_snapshot_and_sees_every_one(
    kafka: Kafka, topic: str, tmp_path: Path
) -> None:
    _with_snapshot(kafka, topic, tmp_path)
    with UserProducer(kafka, topic=topic) as other:  # changes while the service is down
        other.put(User("new@example.com", "New"))
        other.put(User("user1@example.com", "User 1, renamed"))
        other.delete("user2@example.com")
        other.delete("user3@example.com")
    restarted = _run(kafka, topic, tmp_path)
    try:
        assert restarted.state_dir is not None
        assert restarted.state_dir.restored is not None
        assert restarted.state_dir.restored.loaded, restarted.state_dir.restored.reason
        assert restarted.consumer.progress().total == 4  # the tail only
        assert restarted.get("new@example.com") is not None
        renamed = restarted.get("user1@example.com")
        assert renamed is not None
        assert renamed.user.name == "User 1, renamed"
        for deleted in ("user0@example.com", "user2@example.com", "user3@example.com"):
            assert restarted.get(deleted) is None
        table = _table(restarted)
    finally:
        restarted.stop()
    rebuilt = _run(kafka, topic, None)
    try:
        assert table == _table(rebuilt)  # the same users at the same positions (ETags) as a full rebuild
    finally:
        rebuilt.stop()


def test_an_idempotency_key_written_before_the_snapshot_is_known_after_a_restart(
    kafka: Kafka, topic: str, tmp_path: Path
) -> None:
    service = _run(kafka, topic, tmp_path)
    try:
        first = service.put_request(User("ada@example.com", "Ada"), idempotency_key="k-1")
    finally:
        service.stop()
    restarted = _run(kafka, topic, tmp_path)
    try:
        assert restarted.consumer.progress().total == 0  # its record is not replayed: the snapshot knows the key
        end = kafka.end_offsets(topic, range(3))
        retry = restarted.put_request(User("ada@example.com", "Ada"), idempotency_key="k-1")
        assert retry.replayed
        assert retry.position == first.position
        assert kafka.end_offsets(topic, range(3)) == end
    finally:
        restarted.stop()


def _other_topic(kafka: Kafka, topic: str, path: Path, make: Callable[..., str]) -> str:
    other = make("other")
    snapshot_path(path, topic).rename(snapshot_path(path, other))
    return other


@pytest.mark.parametrize(("change", "reason"), [
    ("other topic", "it is of topic"),
    ("other cluster", "it is of another cluster"),
    ("format", f"it has format {FORMAT + 1}: this version reads format {FORMAT}"),
    ("marshal", "marshal format"),
    ("too old", "older than the topic's delete.retention.ms"),
    ("ahead of the log", "before the snapshot's"),
    ("corrupt", "its users are corrupt"),
    ("truncated", "truncated"),
    ("not a snapshot", "not a kafka-crud snapshot"),
])
def test_a_snapshot_that_may_not_reflect_this_log_is_discarded_with_its_reason(
    kafka: Kafka, topic_factory: Callable[..., str], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    change: str, reason: str,
) -> None:
    topic = topic_factory()
    before = _with_snapshot(kafka, topic, tmp_path)
    path = snapshot_path(tmp_path, topic)
    if change == "other topic":
        topic = _other_topic(kafka, topic, tmp_path, topic_factory)
    elif change == "other cluster":
        _rewrite_header(path, cluster_id="AAAAAAAAAAAAAAAAAAAAAA")
    elif change == "format":
        _rewrite_header(path, format=FORMAT + 1)
    elif change == "marshal":
        _rewrite_header(path, marshal=1)
    elif change == "too old":
        _rewrite_header(path, caught_up_at=time.time() - 86_400)
    elif change == "ahead of the log":
        _rewrite_header(path, offsets={"0": 10_000, "1": 10_000, "2": 10_000})
    elif change == "corrupt":
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    elif change == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    else:
        path.write_bytes(b"\0" * 4096)  # what a write cut short before its header was filled in looks like
    restarted = _run(kafka, topic, tmp_path)
    try:
        assert restarted.state_dir is not None
        assert restarted.state_dir.restored is not None
        assert not restarted.state_dir.restored.loaded
        assert reason in restarted.state_dir.restored.reason
        assert any("Discarding the snapshot" in r.message and reason in r.message for r in caplog.records)
        if change != "other topic":
            assert _table(restarted) == before  # rebuilt from the beginning, correctly
    finally:
        restarted.stop()


def test_a_snapshot_of_a_topic_deleted_and_re_created_or_grown_is_discarded(
    kafka: Kafka, topic: str, tmp_path: Path
) -> None:
    _with_snapshot(kafka, topic, tmp_path)
    with kafka.errors("adding a partition"):
        kafka.admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
    deadline = time.monotonic() + 30
    while kafka.partition_count(topic) != 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    grown = _run(kafka, topic, tmp_path)
    try:
        assert grown.state_dir is not None
        assert grown.state_dir.restored is not None
        assert "it is of 3 partitions, the topic has 4 now" in grown.state_dir.restored.reason
    finally:
        grown.stop()
    kafka.delete_topic(topic)
    kafka.create_topic(topic, partitions=4)
    recreated = _run(kafka, topic, tmp_path)
    try:
        assert recreated.state_dir is not None
        assert recreated.state_dir.restored is not None
        assert "the topic was deleted and re-created since" in recreated.state_dir.restored.reason
        assert recreated.users() == []
    finally:
        recreated.stop()


def test_a_snapshot_whose_records_were_deleted_from_the_log_is_discarded(
    kafka: Kafka, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    from confluent_kafka import TopicPartition

    topic = topic_factory(config={"cleanup.policy": "compact,delete"})
    _with_snapshot(kafka, topic, tmp_path, users=3)
    offsets = read_snapshot(snapshot_path(tmp_path, topic)).header.offsets
    with UserProducer(kafka, topic=topic) as other:
        for i in range(30):
            other.put(User(f"later{i}@example.com", "Later"))
    ends = kafka.end_offsets(topic, range(3))
    partition = next(p for p in ends if ends[p] > offsets.get(p, 0) + 1)
    with kafka.errors("deleting records"):
        (future,) = kafka.admin.delete_records([TopicPartition(topic, partition, ends[partition] - 1)]).values()
        future.result(30)
    restarted = _run(kafka, topic, tmp_path)
    try:
        assert restarted.state_dir is not None
        assert restarted.state_dir.restored is not None
        assert f"partition {partition} starts at offset" in restarted.state_dir.restored.reason
        assert "records it has not seen were deleted" in restarted.state_dir.restored.reason
    finally:
        restarted.stop()


_CRASHING_WRITER = """
import dataclasses, os, sys, time
from pathlib import Path
from kafka_crud import snapshot
from kafka_crud.idempotency import Outcome
from kafka_crud.store import StoreState
values = {f"u{i}@example.com".encode(): (b'{"name":"x"}', 0, i) for i in range(200_000)}
header = dataclasses.replace(snapshot.read_snapshot(Path(sys.argv[1])).header, users=len(values))
def crash(fd):  # everything written, not yet flushed to disk nor renamed: the process dies here
    print("writing", flush=True)
    time.sleep(60)
os.fsync = crash
snapshot.write_snapshot(Path(sys.argv[1]), header, StoreState({0: 1}, values, {}, []))
"""


def test_a_crash_in_the_middle_of_a_snapshot_write_leaves_the_previous_one_which_still_loads(
    kafka: Kafka, topic: str, tmp_path: Path
) -> None:
    before = _with_snapshot(kafka, topic, tmp_path)
    path = snapshot_path(tmp_path, topic)
    old = path.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", _CRASHING_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert path.read_bytes() == old
    (torn,) = tmp_path.glob(f"{topic}.snapshot.tmp-*")
    for cut in (0, 16, 200, torn.stat().st_size // 2, torn.stat().st_size - 1):
        with torn.open("r+b") as f:
            f.truncate(cut)
        with pytest.raises(UnusableSnapshotError):
            read_snapshot(torn)
    restarted = _run(kafka, topic, tmp_path)
    try:
        assert restarted.state_dir is not None
        assert restarted.state_dir.restored is not None
        assert restarted.state_dir.restored.loaded
        assert _table(restarted) == before
        assert not list(tmp_path.glob(f"{topic}.snapshot.tmp-*"))  # the torn file is cleaned away
    finally:
        restarted.stop()


def test_a_state_dir_serves_one_instance_at_a_time(kafka: Kafka, topic: str, tmp_path: Path) -> None:
    first = _run(kafka, topic, tmp_path)
    try:
        second = UserService(kafka, topic=topic, state_dir=tmp_path)
        try:
            with pytest.raises(ConfigError, match="in use by another instance"):
                second.start()
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_snapshot_older_than_delete_retention_is_discarded_and_no_deleted_user_comes_back(
    kafka: Kafka, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    from kafka_crud.compaction import compact

    topic = topic_factory(config={"delete.retention.ms": "1000"})
    _with_snapshot(kafka, topic, tmp_path, users=3)
    snapshot = read_snapshot(snapshot_path(tmp_path, topic))
    assert snapshot.state.values.get(b"user1@example.com") is not None
    with UserProducer(kafka, topic=topic) as other:
        other.delete("user1@example.com")
    compact(kafka, topic)  # the put of user1 is removed, its tombstone stamped to go in 1 s
    time.sleep(1.5)
    partition = partition_for("user1@example.com", 3)
    neighbour = next(f"n{i}@example.com" for i in range(100) if partition_for(f"n{i}@example.com", 3) == partition)
    with UserProducer(kafka, topic=topic) as other:  # a write makes the partition dirty: the cleaner runs again
        compact(kafka, topic, write=lambda: other.put(User(neighbour, "Neighbour")))
    tail = [r for r in kafka.read_log(topic) if r.offset >= snapshot.header.offsets.get(r.partition, 0)]
    assert not [r for r in kafka.read_log(topic) if r.key == b"user1@example.com"]
    assert b"user1@example.com" not in {r.key for r in tail}  # replaying the tail alone would keep user1
    restarted = _run(kafka, topic, tmp_path)
    try:
        assert restarted.state_dir is not None
        assert restarted.state_dir.restored is not None
        assert "older than the topic's delete.retention.ms" in restarted.state_dir.restored.reason
        assert restarted.get("user1@example.com") is None
    finally:
        restarted.stop()


def test_state_dir_does_not_go_with_a_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--group", "g", "--state-dir", os.devnull]) == 2
    assert "--state-dir keeps the whole table, without --group" in capsys.readouterr().err


def test_state_dir_does_not_go_with_a_group_in_python_either(kafka: Kafka, topic: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not with group="):
        serve_in_thread(kafka, topic=topic, group="g", state_dir=tmp_path)


def test_state_dir_of_accepts_a_path_or_a_state_dir(tmp_path: Path) -> None:
    kept = StateDir(tmp_path, interval=5)
    assert StateDir.of(kept) is kept
    assert StateDir.of(None) is None
    made = StateDir.of(tmp_path)
    assert made is not None
    assert made.path == tmp_path


def _serve(bootstrap_servers: str, topic: str, state_dir: Path) -> tuple[subprocess.Popen[str], UserClient]:
    cli = str(Path(sys.executable).with_name("kafka-crud"))
    proc = subprocess.Popen([cli, "serve", "--port", "0", "--bootstrap-servers", bootstrap_servers, "--topic", topic,
                             "--state-dir", str(state_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, line
    client = UserClient("http://" + line.split("http://")[1].split()[0])
    deadline = time.monotonic() + 30
    while not client.ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, client


def test_cli_serve_with_a_state_dir_writes_its_snapshot_on_sigterm_and_restarts_from_it(
    bootstrap_servers: str, kafka: Kafka, topic: str, tmp_path: Path
) -> None:
    proc, client = _serve(bootstrap_servers, topic, tmp_path)
    try:
        assert client.put("ada@example.com", "Ada").status == 201
        assert client.put("bob@example.com", "Bob").status == 201
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
    snapshot = read_snapshot(snapshot_path(tmp_path, topic))
    assert set(snapshot.state.values) == {b"ada@example.com", b"bob@example.com"}
    with UserProducer(kafka, topic=topic) as other:
        other.delete("bob@example.com")
    proc, client = _serve(bootstrap_servers, topic, tmp_path)
    try:
        assert client.get("ada@example.com").status == 200
        assert client.get("bob@example.com").status == 404
        assert client.request("GET", "/readyz").status == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
    assert read_snapshot(snapshot_path(tmp_path, topic)).header.offsets != snapshot.header.offsets
