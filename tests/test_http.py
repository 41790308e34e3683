"""The article's endpoint on a real broker: its curl session, bad input, read-your-writes, rebuilds."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kafka_crud.client import UserClient
from kafka_crud.connection import Kafka
from kafka_crud.errors import TopicNotCompactedError
from kafka_crud.producer import UserProducer
from kafka_crud.server import ServerHandle, make_server, serve_in_thread
from kafka_crud.service import UserService

pytestmark = pytest.mark.broker


@pytest.fixture
def server(bootstrap_servers: str, topic: str) -> Iterator[ServerHandle]:
    with serve_in_thread(bootstrap_servers, topic=topic) as handle:
        yield handle


@pytest.fixture
def client(server: ServerHandle) -> UserClient:
    return UserClient(server.url)


def _end_offsets(servers: str, topic: str) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": servers, "group.id": "offsets-probe"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)]
    finally:
        consumer.close()


def test_the_articles_curl_session(client: UserClient) -> None:
    created = client.put("ada@example.com", "Ada")
    assert created.status == 201
    assert client.get("ada@example.com").body == {"email": "ada@example.com", "name": "Ada"}
    assert client.put("ada@example.com", "Ada Lovelace").status == 200
    assert client.get("ada@example.com").body == {"email": "ada@example.com", "name": "Ada Lovelace"}
    assert client.delete("ada@example.com").status == 204
    missing = client.get("ada@example.com")
    assert missing.status == 404
    assert "ada@example.com" in missing.body["error"]


def test_put_takes_the_key_from_the_body_when_the_query_has_none(client: UserClient) -> None:
    answer = client.request("PUT", "/user", {"email": "bob@example.com", "name": "Bob"})
    assert answer.status == 201
    assert client.get("bob@example.com").body["name"] == "Bob"


def test_responses_name_the_records_position(client: UserClient, bootstrap_servers: str, topic: str) -> None:
    put = client.put("pos@example.com", "P")
    partition, offset = int(put.headers["Kafka-Partition"]), int(put.headers["Kafka-Offset"])
    assert put.headers["ETag"] == f'"{partition}-{offset}"'
    assert client.get("pos@example.com").headers["ETag"] == put.headers["ETag"]
    [record] = [r for r in Kafka(bootstrap_servers).read_log(topic) if r.key == b"pos@example.com"]
    assert (record.partition, record.offset) == (partition, offset)


def test_delete_writes_a_null_tombstone(client: UserClient, bootstrap_servers: str, topic: str) -> None:
    client.put("gone@example.com", "G")
    client.delete("gone@example.com")
    records = [r for r in Kafka(bootstrap_servers).read_log(topic) if r.key == b"gone@example.com"]
    assert [r.kind for r in records] == ["put", "tombstone"]
    assert records[-1].value is None


def test_delete_then_recreate_the_same_key(client: UserClient, bootstrap_servers: str, topic: str) -> None:
    client.put("phoenix@example.com", "First")
    assert client.delete("phoenix@example.com").status == 204
    assert client.put("phoenix@example.com", "Second").status == 201
    assert client.get("phoenix@example.com").body["name"] == "Second"
    kinds = [r.kind for r in Kafka(bootstrap_servers).read_log(topic) if r.key == b"phoenix@example.com"]
    assert kinds == ["put", "tombstone", "put"]


def test_get_after_put_sees_the_new_user_every_time(client: UserClient) -> None:
    for i in range(150):
        email = f"ryw{i % 10}@example.com"
        assert client.put(email, f"version {i}").ok
        assert client.get(email).body["name"] == f"version {i}", f"stale read after write {i}"


def test_if_match_rejects_a_stale_version(client: UserClient) -> None:
    first = client.put("cas@example.com", "v1")
    second = client.put("cas@example.com", "v2", if_match=first.headers["ETag"])
    assert second.status == 200
    stale = client.put("cas@example.com", "lost update", if_match=first.headers["ETag"])
    assert stale.status == 412
    assert client.delete("cas@example.com", if_match=first.headers["ETag"]).status == 412
    assert client.get("cas@example.com").body["name"] == "v2"
    assert client.delete("cas@example.com", if_match=second.headers["ETag"]).status == 204


BAD_REQUESTS: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
    ("PUT", "/user", b"{not json", {}, 400),
    ("PUT", "/user", b"[1, 2]", {}, 400),
    ("PUT", "/user", b'"ada@example.com"', {}, 400),
    ("PUT", "/user", b"", {}, 400),
    ("PUT", "/user", b'{"name": "no email"}', {}, 400),
    ("PUT", "/user", b'{"email": "", "name": "empty"}', {}, 400),
    ("PUT", "/user?email=", b'{"name": "empty query"}', {}, 400),
    ("PUT", "/user", b'{"email": 42, "name": "x"}', {}, 400),
    ("PUT", "/user", b'{"email": "ada@example.com", "name": 7}', {}, 400),
    ("PUT", "/user", b'{"email": "ada@example.com", "name": "A", "age": 3}', {}, 400),
    ("PUT", "/user", b'{"email": "ada@example.com", "email": "eve@example.com"}', {}, 400),
    ("PUT", "/user?email=eve@example.com", b'{"email": "ada@example.com", "name": "A"}', {}, 400),
    ("PUT", "/user", b'{"email": "no-at-sign", "name": "x"}', {}, 400),
    ("PUT", "/user", b'{"email": "ada@example.com", "name": "bell\\u0007"}', {}, 400),
    ("PUT", "/user", b"\xff\xfe not utf-8", {}, 400),
    ("PUT", "/user", b'{"email": "big@example.com", "name": "' + b"x" * (1024 * 1024) + b'"}', {}, 413),
    ("GET", "/user", None, {}, 400),
    ("GET", "/user?email=a@example.com&email=b@example.com", None, {}, 400),
    ("DELETE", "/user", None, {}, 400),
    ("DELETE", "/user?email=nobody@example.com", None, {}, 404),
    ("POST", "/user", b'{"email": "ada@example.com"}', {}, 405),
    ("PATCH", "/user?email=ada@example.com", b"{}", {}, 405),
    ("BREW", "/user", None, {}, 405),
    ("DELETE", "/users", None, {}, 405),
    ("GET", "/nowhere", None, {}, 404),
    ("GET", "/user/ada@example.com", None, {}, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), BAD_REQUESTS)
def test_bad_input_gets_a_clear_json_error_and_changes_nothing(
    client: UserClient, bootstrap_servers: str, topic: str,
    method: str, path: str, body: bytes | None, headers: dict[str, str], status: int,
) -> None:
    assert client.put("ada@example.com", "Ada").status == 201
    users_before = client.users().body
    offsets_before = _end_offsets(bootstrap_servers, topic)

    answer = client.request(method, path, body, headers)

    assert answer.status == status
    assert answer.headers["Content-Type"].startswith("application/json")
    assert isinstance(answer.body, dict) and answer.body["error"]
    assert "Traceback" not in json.dumps(answer.body)
    assert client.users().body == users_before
    assert _end_offsets(bootstrap_servers, topic) == offsets_before, "a rejected request wrote to Kafka"


def test_a_connection_stays_usable_after_errors(server: ServerHandle) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for method, path, body in [("GET", "/nowhere", b"ignored body"), ("PUT", "/user", b"{bad"),
                                   ("POST", "/user", b"{}"), ("GET", "/healthz", None)]:
            conn.request(method, path, body=body)
            answer = conn.getresponse()
            answer.read()
        assert answer.status == 200
    finally:
        conn.close()


def test_a_restarted_server_rebuilds_the_same_state(bootstrap_servers: str, topic: str) -> None:
    with serve_in_thread(bootstrap_servers, topic=topic) as first:
        client = UserClient(first.url)
        for i in range(30):
            client.put(f"u{i}@example.com", f"name {i}")
        for i in range(0, 30, 3):
            client.delete(f"u{i}@example.com")
        client.put("u0@example.com", "back again")
        before = client.users().body
    with serve_in_thread(bootstrap_servers, topic=topic) as second:
        assert UserClient(second.url).users().body == before
    assert len(before) == 21


def test_the_server_answers_503_until_it_has_caught_up(bootstrap_servers: str, topic: str) -> None:
    service = UserService(bootstrap_servers, topic=topic)
    server = make_server(service, "127.0.0.1", 0)
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handle = ServerHandle(server, service, thread)
    try:
        client = UserClient(handle.url)
        for answer in (client.get("ada@example.com"), client.put("ada@example.com", "A"), client.users()):
            assert answer.status == 503
            assert answer.headers["Retry-After"] == "1"
        assert not client.ready()
        service.start().wait_ready(30)
        assert client.ready()
        assert client.put("ada@example.com", "A").status == 201
    finally:
        handle.stop()


def test_an_empty_value_is_not_a_tombstone_on_the_topic(bootstrap_servers: str, topic: str) -> None:
    with UserProducer(bootstrap_servers, topic=topic) as producer:
        producer.send("empty@example.com", b"")
        producer.delete("null@example.com")
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap_servers, "-t", topic, "-e", "-q", "-Z", "-f", "%k %S\n"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    sizes = dict(line.split() for line in out.splitlines())
    assert sizes == {"empty@example.com": "0", "null@example.com": "-1"}, out


def test_an_existing_topic_that_is_not_compacted_is_reported_not_changed(
    bootstrap_servers: str, topic_factory: Callable[..., str]
) -> None:
    name = topic_factory("deleting", config={"cleanup.policy": "delete"})
    with pytest.raises(TopicNotCompactedError, match="cleanup.policy='delete'"):
        Kafka(bootstrap_servers).ensure_topic(name)
    assert Kafka(bootstrap_servers).topic_config(name)["cleanup.policy"] == "delete"


def _cli() -> str:
    return str(Path(sys.executable).with_name("kafka-crud"))


def test_cli_serve_prints_its_url_and_the_log_command_shows_statuses(bootstrap_servers: str, topic: str) -> None:
    proc = subprocess.Popen(
        [_cli(), "serve", "--port", "0", "--bootstrap-servers", bootstrap_servers, "--topic", topic],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line
        url = "http://" + line.split("http://")[1].split()[0]
        client = UserClient(url)
        import time

        deadline = time.monotonic() + 30
        while not client.ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        client.put("ada@example.com", "Ada")
        client.put("ada@example.com", "Ada L.")
        client.put("bob@example.com", "Bob")
        client.delete("bob@example.com")
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        proc.stdout.close()  # type: ignore[union-attr]
    out = subprocess.run(
        [_cli(), "log", "--bootstrap-servers", bootstrap_servers, "--topic", topic, "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    by_key: dict[str, list[tuple[str, object]]] = {}
    for row in rows:
        assert {"partition", "offset", "timestamp", "key", "value", "status"} <= row.keys()
        by_key.setdefault(row["key"], []).append((row["status"], row["value"]))
    assert by_key["ada@example.com"] == [
        ("superseded", '{"email":"ada@example.com","name":"Ada"}'),
        ("live", '{"email":"ada@example.com","name":"Ada L."}'),
    ]
    assert by_key["bob@example.com"] == [("superseded", '{"email":"bob@example.com","name":"Bob"}'),
                                         ("tombstone", None)]
