"""Two replicated instances: read your writes on either (Kafka-Min-Position), conditional reads, bad headers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from kafka_crud.client import UserClient
from kafka_crud.connection import Kafka
from kafka_crud.server import ServerHandle, serve_in_thread

pytestmark = pytest.mark.broker

PAIRS = 300


@pytest.fixture
def pair(bootstrap_servers: str, topic: str) -> Iterator[tuple[ServerHandle, ServerHandle]]:
    kafka = Kafka(bootstrap_servers)
    with serve_in_thread(kafka, topic=topic) as a, serve_in_thread(kafka, topic=topic) as b:
        yield a, b


def test_a_write_on_a_is_read_on_b_with_its_position(pair: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = pair
    writer = UserClient(a.url)
    b.service.consumer.pause()  # B is behind: deterministically
    put = writer.put("ada@example.com", "Ada")
    assert put.status == 201
    assert writer.positions == {int(put.headers["Kafka-Partition"]): int(put.headers["Kafka-Offset"])}

    assert UserClient(b.url).get("ada@example.com").status == 404  # a client without the position: stale
    reader = writer.at(b.url)  # the same session, another instance
    started = time.monotonic()
    late = reader.get("ada@example.com", wait=1)
    assert late.status == 503, late
    assert late.headers["Retry-After"] == "1"
    assert 0.9 < time.monotonic() - started < 3
    assert "has not applied" in late.body["error"]

    threading.Timer(0.3, b.service.consumer.resume).start()
    fresh = reader.get("ada@example.com")  # waits up to the write timeout: B applies it meanwhile
    assert fresh.status == 200
    assert fresh.body["name"] == "Ada"
    assert fresh.headers["ETag"] == put.headers["ETag"]
    partition, offset = put.headers["Kafka-Partition"], put.headers["Kafka-Offset"]
    assert f"{partition}-{offset}" in fresh.headers["Kafka-Position"].split(",")


def test_300_put_on_a_then_get_on_b_pairs_are_never_stale_with_positions(
    pair: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = pair
    writer = UserClient(a.url)
    with_positions, without = writer.at(b.url), UserClient(b.url, read_your_writes=False)
    stale_with, stale_without = 0, 0
    for i in range(PAIRS):
        email = f"pair{i % 20}@example.com"
        assert writer.put(email, f"v{i}").ok
        stale_with += with_positions.get(email).body != {"email": email, "name": f"v{i}"}
    for i in range(PAIRS):
        email = f"pair{i % 20}@example.com"
        assert writer.put(email, f"w{i}").ok
        stale_without += without.get(email).body != {"email": email, "name": f"w{i}"}
    print(f"\nstale reads across instances: {stale_with} of {PAIRS} with Kafka-Min-Position, "
          f"{stale_without} of {PAIRS} without")
    assert stale_with == 0


def test_a_read_waits_for_every_position_given(pair: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = pair
    writer = UserClient(a.url)
    b.service.consumer.pause()
    writer.put("grace@example.com", "Grace")
    # Another user (perhaps of another partition): the instance still answers only once it has
    # applied the session's positions, so the session's reads are consistent with its writes.
    answer = writer.at(b.url).request("GET", "/user?email=nobody@example.com",
                                      headers={"Kafka-Min-Position": writer.session.header() or "", "Prefer": "wait=0"})
    assert answer.status == 503
    b.service.consumer.resume()
    assert writer.at(b.url).get("nobody@example.com").status == 404


def test_if_none_match_answers_304_and_waits_for_a_change(pair: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = pair
    client = UserClient(a.url)
    etag = client.put("alan@example.com", "Alan").headers["ETag"]
    watcher = client.at(b.url)

    same = watcher.get("alan@example.com", if_none_match=etag)
    assert same.status == 304
    assert same.body is None
    assert same.headers["ETag"] == etag
    assert "Content-Length" not in same.headers
    assert watcher.get("alan@example.com", if_none_match=f'W/{etag}').status == 304  # weak comparison
    assert watcher.get("alan@example.com", if_none_match='"0-999999"').status == 200
    assert watcher.get("alan@example.com", if_none_match="*").status == 304

    started = time.monotonic()
    assert watcher.get("alan@example.com", if_none_match=etag, wait=1).status == 304
    assert 0.9 < time.monotonic() - started < 3

    threading.Timer(0.3, lambda: client.put("alan@example.com", "Alan Turing")).start()
    started = time.monotonic()
    changed = watcher.get("alan@example.com", if_none_match=etag, wait=10)
    assert changed.status == 200
    assert changed.body["name"] == "Alan Turing"
    assert changed.headers["Preference-Applied"] == "wait=10"
    assert time.monotonic() - started < 5

    threading.Timer(0.3, lambda: client.delete("alan@example.com")).start()
    gone = watcher.get("alan@example.com", if_none_match=changed.headers["ETag"], wait=10)
    assert gone.status == 404
    assert watcher.get("alan@example.com", if_none_match="*").status == 404


def test_users_has_an_etag_of_the_positions_applied(pair: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = pair
    client = UserClient(a.url)
    client.put("u1@example.com", "One")
    listed = client.at(b.url).users()
    assert listed.status == 200
    assert [u["email"] for u in listed.body] == ["u1@example.com"]
    etag = listed.headers["ETag"]
    assert client.at(b.url).users(if_none_match=etag).status == 304
    client.put("u2@example.com", "Two")
    again = client.at(b.url).users(if_none_match=etag)
    assert again.status == 200
    assert len(again.body) == 2
    assert again.headers["ETag"] != etag
    by_partition = {p: client.request("GET", f"/users?partition={p}").body for p in range(3)}
    assert sorted(u["email"] for users in by_partition.values() for u in users) == ["u1@example.com", "u2@example.com"]


BAD_HEADERS = [
    ("GET", "/user?email=ada@example.com", {"Kafka-Min-Position": "two-five"}),
    ("GET", "/user?email=ada@example.com", {"Kafka-Min-Position": ""}),
    ("GET", "/user?email=ada@example.com", {"Kafka-Min-Position": "7-0"}),
    ("GET", "/user?email=ada@example.com", {"Kafka-Min-Position": "another.topic:0-0"}),
    ("GET", "/users", {"Kafka-Min-Position": "0-1,x"}),
    ("GET", "/user?email=ada@example.com", {"Prefer": "wait=31"}),
    ("GET", "/user?email=ada@example.com", {"Prefer": "wait=soon"}),
    ("GET", "/users", {"Prefer": "wait=-3"}),
    ("GET", "/user?email=ada@example.com", {"If-None-Match": "2-0"}),
    ("GET", "/users", {"If-None-Match": '"x'}),
    ("GET", "/users?partition=3", {}),
    ("GET", "/users?partition=one", {}),
    ("PUT", "/user?email=ada@example.com", {"Idempotency-Key": '""'}),
    ("PUT", "/user?email=ada@example.com", {"Idempotency-Key": "k" * 256}),
    ("PUT", "/user?email=ada@example.com", {"Idempotency-Key": "two words"}),
    ("DELETE", "/user?email=ada@example.com", {"Idempotency-Key": ""}),
    ("DELETE", "/user?email=ada@example.com", {"Idempotency-Key": '"unterminated'}),
]


@pytest.mark.parametrize(("method", "path", "headers"), BAD_HEADERS)
def test_bad_headers_get_a_clear_400_and_change_nothing(
    pair: tuple[ServerHandle, ServerHandle], bootstrap_servers: str, topic: str,
    method: str, path: str, headers: dict[str, str],
) -> None:
    a, _ = pair
    client = UserClient(a.url)
    client.put("ada@example.com", "Ada")
    kafka = Kafka(bootstrap_servers)
    before = kafka.watermarks(topic)
    body = {"email": "ada@example.com", "name": "Changed"} if method == "PUT" else None
    answer = client.request(method, path, body, headers)
    assert answer.status == 400, answer
    assert answer.body["error"]
    assert "Traceback" not in answer.body["error"]
    assert kafka.watermarks(topic) == before
    assert client.get("ada@example.com").body["name"] == "Ada"


def test_the_articles_instance_ignores_positions(bootstrap_servers: str, topic: str) -> None:
    kafka = Kafka(bootstrap_servers)
    with serve_in_thread(kafka, topic=topic) as a, serve_in_thread(kafka, topic=topic, read_your_writes=False) as b:
        writer = UserClient(a.url)
        b.service.consumer.pause()
        writer.put("ada@example.com", "Ada")
        assert writer.at(b.url).get("ada@example.com").status == 404  # the article's stale read, kept to show it
        b.service.consumer.resume()
