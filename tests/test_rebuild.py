"""The rebuild's fast path: the store a consumer rebuilds is the one the records, applied one by one, make."""

from __future__ import annotations

import gc
import time

import pytest

from kafka_crud import Kafka, StoreConsumer, UserStore
from kafka_crud.idempotency import record_headers
from kafka_crud.records import Position

pytestmark = pytest.mark.broker


def _state(store: UserStore) -> tuple[dict[str, tuple[str, Position]], dict[bytes, Position]]:
    users = {s.user.email: (s.user.name, s.position) for s in store.users()}
    return users, dict(store.invalid)


def _user(email: str, name: str) -> bytes:
    return f'{{"email":"{email}","name":"{name}"}}'.encode()


def _write_a_mixed_log(kafka: Kafka, topic: str) -> None:
    """The same ten records in each partition, with the partition number in every email.

    (No record without a key: a compacted topic refuses them.)
    """
    producer = kafka.producer(**{"linger.ms": 5})
    failed: list[object] = []
    for p in range(3):
        names = ("ada", "gone", "empty", "fixed", "keyed")
        ada, gone, empty, fixed, keyed = (f"{name}{p}@example.com" for name in names)
        records: list[tuple[str, bytes | None, list[tuple[str, str | bytes | None]] | None]] = [
            (ada, _user(ada, "Ada"), None),
            (ada, _user(ada, "Ada L"), None),
            (gone, _user(gone, "G"), None),
            (gone, None, None),  # a tombstone
            (empty, _user(empty, "E"), None),
            (empty, b"", None),  # an empty value: not a tombstone, not a user
            (fixed, b"not json", None),
            (fixed, _user(fixed, "F"), None),
            (keyed, _user(keyed, "K"), record_headers(f"retry-{p}", "fp", 201)),
            (f"broken{p}@example.com", b'{"email": broken', None),  # looks like JSON, is not
        ]
        for key, value, headers in records:
            producer.produce(topic, value, key, partition=p, headers=headers,
                             on_delivery=lambda err, _msg: failed.append(err) if err else None)
    assert producer.flush(30) == 0
    assert failed == []


def test_a_rebuild_applies_tombstones_empty_values_invalid_values_and_headers_in_log_order(
    kafka: Kafka, topic: str
) -> None:
    _write_a_mixed_log(kafka, topic)
    rebuilt = UserStore(topic)
    with StoreConsumer(rebuilt, kafka) as consumer:
        consumer.wait_ready(30)
        ends = {p: high for p, (_, high) in kafka.watermarks(topic).items()}
        assert rebuilt.applied() == ends == {0: 10, 1: 10, 2: 10}
    one_by_one = UserStore(topic)
    for record in kafka.read_log(topic):
        one_by_one.apply(record)
    assert _state(rebuilt) == _state(one_by_one)

    users, invalid = _state(rebuilt)
    for p in range(3):
        assert users[f"ada{p}@example.com"] == ("Ada L", Position(topic, p, 1))
        assert users[f"fixed{p}@example.com"] == ("F", Position(topic, p, 7))
        assert users[f"keyed{p}@example.com"] == ("K", Position(topic, p, 8))
        assert invalid[f"empty{p}@example.com".encode()] == Position(topic, p, 5)
        assert rebuilt.get(f"gone{p}@example.com") is None
        assert rebuilt.get(f"broken{p}@example.com") is None
        outcome = rebuilt.idempotency.lookup(f"retry-{p}")
        assert outcome is not None
        assert (outcome.status, outcome.position) == (201, Position(topic, p, 8))
    assert (len(users), len(invalid)) == (9, 3)


def _collector_on_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not gc.isenabled() and time.monotonic() < deadline:
        time.sleep(0.01)
    return gc.isenabled()


def test_the_garbage_collector_runs_again_once_caught_up_paused_or_stopped(kafka: Kafka, topic: str) -> None:
    _write_a_mixed_log(kafka, topic)
    assert gc.isenabled()
    consumer = StoreConsumer(UserStore(topic), kafka, paused=True).start()
    try:
        consumer.pause()  # returns once the thread is parked: it holds nothing while parked
        assert gc.isenabled()
        consumer.resume()
        consumer.wait_ready(30)
        assert _collector_on_within(10)
    finally:
        consumer.stop()
    assert gc.isenabled()
