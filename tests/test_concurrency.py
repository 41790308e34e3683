"""Concurrency: threads writing the same keys at once, on one server and on two.

The log orders the writes of a key (one key, one partition): whatever the threads interleave,
the state must end as the last acknowledged write of each key in log order, on every server and
after a rebuild. ``If-Match`` must turn read-modify-write races into 412s, never into lost updates.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from kafka_crud.connection import Kafka
from kafka_crud.server import serve_in_thread

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


def call(url: str, method: str, path: str, body: object = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def users_of(url: str) -> dict[str, str]:
    status, _, body = call(url, "GET", "/users")
    assert status == 200
    return {u["email"]: u["name"] for u in json.loads(body)}


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
                if rng.random() < 0.65:
                    name: str | None = f"t{n}-{i}"
                    status, headers, _ = call(url, "PUT", f"/user?email={quote(email)}", {"name": name})
                else:
                    name = None
                    status, headers, _ = call(url, "DELETE", f"/user?email={quote(email)}")
                with lock:
                    statuses[f"{'PUT' if name else 'DELETE'} {status}"] += 1
                    if status in (200, 201, 204):
                        partition, offset = int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"])
                        assert headers["ETag"] == f'"{partition}-{offset}"'
                        acks.append(Ack(email, name, status == 201, partition, offset))
                    else:
                        assert status == 404 and name is None, status  # DELETE of an absent user
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


def check_the_log(bootstrap_servers: str, topic: str, acks: list[Ack]) -> None:
    """The log holds exactly the acknowledged writes, once each, with what they wrote."""
    records = {(r.partition, r.offset): r for r in Kafka(bootstrap_servers).read_log(topic)}
    assert set(records) == {(a.partition, a.offset) for a in acks}
    for ack in acks:
        record = records[(ack.partition, ack.offset)]
        assert record.key == ack.email.encode()
        if ack.name is None:
            assert record.value is None
        else:
            assert json.loads(record.value or b"") == {"email": ack.email, "name": ack.name}


def test_racing_writes_on_one_server_end_as_the_last_write_in_log_order(
    bootstrap_servers: str, topic: str
) -> None:
    with serve_in_thread(bootstrap_servers, topic=topic) as server:
        acks, statuses = race([server.url], ops_per_thread=40)
        final = users_of(server.url)
    assert statuses["PUT 201"] and statuses["PUT 200"] and statuses["DELETE 204"] and statuses["DELETE 404"]
    assert final == last_write_per_key(acks)
    check_the_log(bootstrap_servers, topic, acks)

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

    with serve_in_thread(bootstrap_servers, topic=topic) as rebuilt:
        assert users_of(rebuilt.url) == final
    print(f"\nrace on one server: {THREADS} threads, {len(acks)} writes acknowledged, lost=0; {dict(statuses)}")


def test_racing_writes_through_two_servers_converge_on_the_log_order(bootstrap_servers: str, topic: str) -> None:
    with serve_in_thread(bootstrap_servers, topic=topic) as one, serve_in_thread(bootstrap_servers, topic=topic) as two:
        acks, _ = race([one.url, two.url], ops_per_thread=30)
        expected = last_write_per_key(acks)
        # Each server has applied its own writes; the other's arrive through its consumer.
        _wait_until(lambda: users_of(one.url) == expected and users_of(two.url) == expected)
    check_the_log(bootstrap_servers, topic, acks)
    print(f"\nrace on two servers: {THREADS} threads, {len(acks)} writes acknowledged, lost=0")


def test_if_match_turns_lost_updates_into_retries(bootstrap_servers: str, topic: str) -> None:
    increments_per_thread = 15
    with serve_in_thread(bootstrap_servers, topic=topic) as server:
        assert call(server.url, "PUT", "/user?email=counter@race.test", {"name": "0"})[0] == 201
        retries: Counter[int] = Counter()
        errors: list[BaseException] = []
        start = threading.Barrier(THREADS)

        def increment(n: int) -> None:
            try:
                start.wait()
                for _ in range(increments_per_thread):
                    while True:
                        status, headers, body = call(server.url, "GET", "/user?email=counter@race.test")
                        assert status == 200
                        value = int(json.loads(body)["name"])
                        status, _, _ = call(server.url, "PUT", "/user?email=counter@race.test",
                                            {"name": str(value + 1)}, {"If-Match": headers["ETag"]})
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
        status, _, body = call(server.url, "GET", "/user?email=counter@race.test")
    # Every increment counted once: none lost to a concurrent one, and there was contention.
    assert json.loads(body)["name"] == str(THREADS * increments_per_thread)
    assert sum(retries.values()) > 0
    print(f"\nIf-Match: {THREADS * increments_per_thread} increments by {THREADS} threads, none lost, "
          f"{sum(retries.values())} answered 412 and retried")


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the servers did not converge"
        time.sleep(0.1)
