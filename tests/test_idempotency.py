"""Idempotency-Key on PUT and DELETE: a retry writes nothing, here, after a restart and on another instance.

What landed on the topic is checked with kcat, an independent client.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from kafka_crud.client import UserClient
from kafka_crud.connection import Kafka
from kafka_crud.server import ServerHandle, serve_in_thread

pytestmark = pytest.mark.broker


def kcat_records(servers: str, topic: str) -> list[tuple[str, str, str]]:
    """(key, value or NULL, headers) of every record in ``topic``, read by kcat."""
    out = subprocess.run(
        ["kcat", "-b", servers, "-C", "-t", topic, "-e", "-q", "-f", "%k\t%s\t%h\n", "-Z"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [tuple(line.split("\t")) for line in out.splitlines()]  # type: ignore[misc]


@pytest.fixture
def server(bootstrap_servers: str, topic: str) -> Iterator[ServerHandle]:
    with serve_in_thread(Kafka(bootstrap_servers), topic=topic) as handle:
        yield handle


def test_a_retried_put_leaves_exactly_one_record(server: ServerHandle, bootstrap_servers: str, topic: str) -> None:
    client = UserClient(server.url)
    first = client.put("ada@example.com", "Ada", idempotency_key="put-ada-1")
    retry = client.put("ada@example.com", "Ada", idempotency_key="put-ada-1")
    assert first.status == retry.status == 201
    assert retry.body == first.body
    for header in ("ETag", "Kafka-Partition", "Kafka-Offset"):
        assert retry.headers[header] == first.headers[header]
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"

    records = kcat_records(bootstrap_servers, topic)
    assert len(records) == 1, records
    key, value, headers = records[0]
    assert key == "ada@example.com"
    assert '"name":"Ada"' in value
    assert "idempotency-key=put-ada-1" in headers
    assert "http-status=201" in headers


def test_the_same_key_for_another_request_is_422_and_writes_nothing(
    server: ServerHandle, bootstrap_servers: str, topic: str,
) -> None:
    client = UserClient(server.url)
    assert client.put("ada@example.com", "Ada", idempotency_key="k").status == 201
    others = [client.put("ada@example.com", "Eve", idempotency_key="k"),
              client.put("bob@example.com", "Ada", idempotency_key="k"),
              client.delete("ada@example.com", idempotency_key="k"),
              client.put("ada@example.com", "Ada", idempotency_key="k", if_match="*")]
    assert [answer.status for answer in others] == [422] * 4, others
    assert len(kcat_records(bootstrap_servers, topic)) == 1
    assert client.get("ada@example.com").body["name"] == "Ada"


def test_a_retry_while_the_first_is_in_flight_is_409(server: ServerHandle, bootstrap_servers: str, topic: str) -> None:
    client = UserClient(server.url)
    server.service.consumer.pause()  # the first PUT waits to be applied (read-your-writes): in flight
    answers: list[int] = []
    first = threading.Thread(target=lambda: answers.append(client.put("ada@example.com", "Ada",
                                                                       idempotency_key="slow").status))
    first.start()
    time.sleep(0.5)
    second = client.put("ada@example.com", "Ada", idempotency_key="slow")
    assert second.status == 409, second
    assert second.headers["Retry-After"] == "1"
    assert client.put("ada@example.com", "Eve", idempotency_key="slow").status == 422
    server.service.consumer.resume()
    first.join()
    assert answers == [201]
    assert client.put("ada@example.com", "Ada", idempotency_key="slow").headers["Idempotent-Replayed"] == "true"
    assert len(kcat_records(bootstrap_servers, topic)) == 1


def test_a_retry_after_an_unconfirmed_write_does_not_write_again(
    bootstrap_servers: str, topic: str,
) -> None:
    with serve_in_thread(Kafka(bootstrap_servers), topic=topic, write_timeout=1.0) as server:
        client = UserClient(server.url)
        server.service.consumer.pause()
        lost = client.put("ada@example.com", "Ada", idempotency_key="uncertain")
        assert lost.status == 503  # Kafka has it; this instance could not confirm it in time
        server.service.consumer.resume()
        retry = client.put("ada@example.com", "Ada", idempotency_key="uncertain")
        assert retry.status == 201
        assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(kcat_records(bootstrap_servers, topic)) == 1


def test_the_key_survives_a_restart_and_holds_on_another_instance(bootstrap_servers: str, topic: str) -> None:
    kafka = Kafka(bootstrap_servers)
    with serve_in_thread(kafka, topic=topic) as first:
        put = UserClient(first.url).put("ada@example.com", "Ada", idempotency_key="durable")
        deleted = UserClient(first.url).delete("ada@example.com", idempotency_key="durable-delete")
        assert (put.status, deleted.status) == (201, 204)
        with serve_in_thread(kafka, topic=topic) as other:  # another instance, no position given
            again = UserClient(other.url).put("ada@example.com", "Ada", idempotency_key="durable")
            assert again.status == 201
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.headers["ETag"] == put.headers["ETag"]
    with serve_in_thread(kafka, topic=topic) as rebuilt:  # rebuilt from the log alone
        client = UserClient(rebuilt.url)
        assert client.put("ada@example.com", "Ada", idempotency_key="durable").headers["ETag"] == put.headers["ETag"]
        gone = client.delete("ada@example.com", idempotency_key="durable-delete")
        assert gone.status == 204
        assert gone.headers["Idempotent-Replayed"] == "true"
        assert client.get("ada@example.com").status == 404  # the replay wrote nothing: still deleted
    records = kcat_records(bootstrap_servers, topic)
    assert [(k, v) for k, v, _ in records] == [("ada@example.com", '{"email":"ada@example.com","name":"Ada"}'),
                                               ("ada@example.com", "NULL")], records


def test_a_retry_on_another_instance_right_after_the_write_finds_it(bootstrap_servers: str, topic: str) -> None:
    kafka = Kafka(bootstrap_servers)
    with serve_in_thread(kafka, topic=topic) as a, serve_in_thread(kafka, topic=topic) as b:
        for i in range(30):
            key = f"retry-{i}"
            first = UserClient(a.url).put(f"u{i}@example.com", "U", idempotency_key=key)
            # The answer was lost: the client retries at once, through another instance.
            retry = UserClient(b.url).put(f"u{i}@example.com", "U", idempotency_key=key)
            assert retry.headers.get("Idempotent-Replayed") == "true", (first, retry)
    assert len(kcat_records(bootstrap_servers, topic)) == 30
