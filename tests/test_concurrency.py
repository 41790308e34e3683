"""Concurrency: threads writing the same keys at once, on one server and on two.

The log orders the writes of a key (one key, one partition): whatever the threads interleave,
the state must end as the last acknowledged write of each key in log order, on every server and
after a rebuild. ``If-Match`` must turn read-modify-write races into 412s, never into lost updates.
Writers of different keys do not wait for each other, and each 2xx still means read-your-writes:
the next GET on that server sees the write, whatever the other writers are doing.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from helpers import Answer, call

from kafka_crud.connection import Kafka
from kafka_crud.errors import NotReadyError
from kafka_crud.records import Position
from kafka_crud.server import serve_in_thread
from kafka_crud.store import UserStore

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

THREADS = 8
KEYS = [f"k{i}@race.test" for i in range(5)]


@dataclass(frozen=True)
class Ack:
    """A write the server acknowledged, and where the answer says it landed."""

    email: str
    name: str | None
    """The name written, or None for a DELETE (a tombstone)."""
    created: bool
    partition: int
    offset: int


def users_of(url: str) -> dict[str, str]:
    answer = call(url, "GET", "/users")
    assert answer.status == 200
    return {u["email"]: u["name"] for u in answer.json()}


def race(urls: list[str], ops_per_thread: int) -> tuple[list[Ack], Counter[str]]:
    """THREADS threads PUT and DELETE random keys of KEYS through random servers of ``urls``."""
    acks: list[Ack] = []
    statuses: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def writer(n: int) -> None:
        rng = random.Random(n)
        try:
            start.wait()
            for i in range(ops_per_thread):
                email, url = rng.choice(KEYS), rng.choice(urls)
                answer: Answer
                if rng.random() < 0.65:
                    name: str | None = f"t{n}-{i}"
                    answer = call(url, "PUT", f"/user?email={quote(email)}", {"name": name})
                else:
                    name = None
                    answer = call(url, "DELETE", f"/user?email={quote(email)}")
                status, headers = answer.status, answer.headers
                with lock:
                    statuses[f"{'PUT' if name else 'DELETE'} {status}"] += 1
                    if status in (200, 201, 204):
                        partition, offset = int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"])
                        assert headers["ETag"] == f'"{partition}-{offset}"'
                        acks.append(Ack(email, name, status == 201, partition, offset))
                    else:
                        assert name is None, status  # only a DELETE, of an absent user, may fail
                        assert status == 404, status
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return acks, statuses


def last_write_per_key(acks: list[Ack]) -> dict[str, str]:
    """The state the log order implies: per key, the acknowledged write with the highest offset."""
    last: dict[str, Ack] = {}
    for ack in sorted(acks, key=lambda a: a.offset):
        last[ack.email] = ack
    return {email: ack.name for email, ack in last.items() if ack.name is not None}


def check_the_log(kafka: Kafka, topic: str, acks: list[Ack]) -> None:
    """The log holds exactly the acknowledged writes, once each, with what they wrote."""
    records = {(r.partition, r.offset): r for r in kafka.read_log(topic)}
    assert set(records) == {(a.partition, a.offset) for a in acks}
    for ack in acks:
        record = records[(ack.partition, ack.offset)]
        assert record.key == ack.email.encode()
        if ack.name is None:
            assert record.value is None
        else:
            assert json.loads(record.value or b"") == {"email": ack.email, "name": ack.name}


def test_racing_writes_on_one_server_end_as_the_last_write_in_log_order(kafka: Kafka, topic: str) -> None:
    with serve_in_thread(kafka, topic=topic) as server:
        acks, statuses = race([server.url], ops_per_thread=40)
        final = users_of(server.url)
    assert statuses["PUT 201"]
    assert statuses["PUT 200"]
    assert statuses["DELETE 204"]
    assert statuses["DELETE 404"]
    assert final == last_write_per_key(acks)
    check_the_log(kafka, topic, acks)

    # One server checks and writes a key under a lock: the answers agree with the log order.
    # A PUT answered 201 follows a DELETE of its key or nothing; a DELETE (204) follows a PUT.
    by_key: dict[str, list[Ack]] = {}
    for ack in sorted(acks, key=lambda a: a.offset):
        by_key.setdefault(ack.email, []).append(ack)
    for writes in by_key.values():
        previous: Ack | None = None
        for ack in writes:
            existed = previous is not None and previous.name is not None
            if ack.name is None:
                assert existed, f"{ack} deleted a user that was not there"
            else:
                assert ack.created == (not existed), f"{ack} after {previous}"
            previous = ack

    with serve_in_thread(kafka, topic=topic) as rebuilt:
        assert users_of(rebuilt.url) == final
    print(f"\nrace on one server: {THREADS} threads, {len(acks)} writes acknowledged, lost=0; {dict(statuses)}")


def test_racing_writes_through_two_servers_converge_on_the_log_order(kafka: Kafka, topic: str) -> None:
    with serve_in_thread(kafka, topic=topic) as one, serve_in_thread(kafka, topic=topic) as two:
        acks, _ = race([one.url, two.url], ops_per_thread=30)
        expected = last_write_per_key(acks)
        # Each server has applied its own writes; the other's arrive through its consumer.
        _wait_until(lambda: users_of(one.url) == expected and users_of(two.url) == expected)
    check_the_log(kafka, topic, acks)
    print(f"\nrace on two servers: {THREADS} threads, {len(acks)} writes acknowledged, lost=0")


def test_if_match_turns_lost_updates_into_retries(kafka: Kafka, topic: str) -> None:
    increments_per_thread = 15
    with serve_in_thread(kafka, topic=topic) as server:
        assert call(server.url, "PUT", "/user?email=counter@race.test", {"name": "0"}).status == 201
        retries: Counter[int] = Counter()
        errors: list[BaseException] = []
        start = threading.Barrier(THREADS)

        def increment(n: int) -> None:
            try:
                start.wait()
                for _ in range(increments_per_thread):
                    while True:
                        current = call(server.url, "GET", "/user?email=counter@race.test")
                        assert current.status == 200
                        value = int(current.json()["name"])
                        status = call(server.url, "PUT", "/user?email=counter@race.test",
                                      {"name": str(value + 1)}, {"If-Match": current.headers["ETag"]}).status
                        if status == 200:
                            break
                        assert status == 412, status
                        retries[n] += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=increment, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        final = call(server.url, "GET", "/user?email=counter@race.test")
    # Every increment counted once: none lost to a concurrent one, and there was contention.
    assert final.json()["name"] == str(THREADS * increments_per_thread)
    assert sum(retries.values()) > 0
    print(f"\nIf-Match: {THREADS * increments_per_thread} increments by {THREADS} threads, none lost, "
          f"{sum(retries.values())} answered 412 and retried")


def test_each_of_8_concurrent_writers_reads_its_own_writes(kafka: Kafka, topic: str) -> None:
    writes_per_thread = 25
    stale: list[tuple[str, str, Answer]] = []
    errors: list[BaseException] = []
    offsets: list[tuple[int, int]] = []
    lock = threading.Lock()
    with serve_in_thread(kafka, topic=topic) as server:
        start = threading.Barrier(THREADS)

        def writer(n: int) -> None:
            try:
                start.wait()
                for i in range(writes_per_thread):
                    email, name = f"w{n}-k{i % 4}@own.test", f"writer {n} write {i}"
                    put = call(server.url, "PUT", f"/user?email={quote(email)}", {"name": name})
                    assert put.status in (200, 201), put
                    got = call(server.url, "GET", f"/user?email={quote(email)}")  # right after the 2xx
                    etag = put.headers["ETag"]
                    seen = got.status == 200 and got.json()["name"] == name and got.headers["ETag"] == etag
                    with lock:
                        offsets.append((int(put.headers["Kafka-Partition"]), int(put.headers["Kafka-Offset"])))
                        if not seen:
                            stale.append((email, name, got))
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors, errors
    assert not stale, stale[:3]
    assert len(set(offsets)) == THREADS * writes_per_thread  # each 2xx its own record


def test_writes_waiting_for_their_offsets_return_once_each_is_applied() -> None:
    store = UserStore("t")
    done: list[int] = []
    errors: list[BaseException] = []

    def wait(offset: int) -> None:
        try:
            store.wait_for(Position("t", 0, offset), 30)
            done.append(offset)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [(offset, threading.Thread(target=wait, args=(offset,))) for offset in (7, 3, 5, 5)]
    for _, thread in threads:
        thread.start()
    store.advance(1, 100)  # another partition: nobody here
    store.advance(0, 4)  # offset 3 applied
    next(thread for offset, thread in threads if offset == 3).join(10)
    assert done == [3]
    store.advance(0, 8)
    for _, thread in threads:
        thread.join(10)
    assert not errors, errors
    assert sorted(done) == [3, 5, 5, 7]
    store.wait_for(Position("t", 0, 7), 0)  # applied already: returns at once


def test_a_write_whose_offset_is_not_applied_in_time_is_a_503_error() -> None:
    store = UserStore("t")
    with pytest.raises(NotReadyError, match="did not apply t-2@9"):
        store.wait_for(Position("t", 2, 9), 0.05)
    store.advance(2, 10)  # a late apply after the timeout finds no one to wake, and no error
    store.wait_for(Position("t", 2, 9), 0)


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the servers did not converge"
        time.sleep(0.1)
