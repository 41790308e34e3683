"""What the test modules share: raw HTTP to the endpoint, without the kit's own client.

    call(url, "PUT", "/user", {"email": "a@b.c", "name": "A"})    # a body other than bytes is JSON
    exchange(url, "PUT", "/user", [("Content-Length", b"5")], b"{}")  # these headers and no others
    send_raw(url, b"GET / HTTP/1.1\\r\\n\\r\\n")                     # bytes over a bare socket

``call`` and ``exchange`` open a connection per request unless given one: ``keep_alive(url)``
is a connection that raises ``http.client.NotConnected`` instead of reconnecting when the
server closed it, for tests that must see the same connection answer again.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka_crud.records import LogRecord

__all__ = ["Answer", "address", "call", "copies_in_log", "exchange", "keep_alive", "send_raw"]


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as it came over the wire."""

    status: int
    headers: dict[str, str]
    """As the server spelled them (it sends one of each)."""
    body: bytes
    seconds: float
    """From sending the request to the end of the body."""

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return f"Answer({self.status}, {self.headers}, {body!r}, {self.seconds:.2f} s)"


def address(url: str) -> tuple[str, int]:
    """(host, port) of ``http://host:port``."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


def keep_alive(url: str, timeout: float = 30.0) -> http.client.HTTPConnection:
    """A connected HTTPConnection that never reconnects on its own: a request after the server
    closed it raises ``http.client.NotConnected``."""
    conn = http.client.HTTPConnection(*address(url), timeout=timeout)
    conn.connect()
    conn.auto_open = 0
    return conn


def exchange(
    url: str,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str | bytes]] = (),
    body: bytes = b"",
    *,
    half_close: bool = False,
    timeout: float = 30.0,
    connection: http.client.HTTPConnection | None = None,
) -> Answer:
    """Send ``method target`` with exactly ``headers`` (no Host, no Content-Length added) and ``body``.

    ``half_close``: shut the sending side once the body is out, as a client that sends less
    than it announced and waits. An error while sending (the server answered early and closed)
    is ignored: the answer is read anyway.
    """
    conn = connection or http.client.HTTPConnection(*address(url), timeout=timeout)
    started = time.monotonic()
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        try:
            conn.endheaders(body or None)
            if half_close:
                assert conn.sock is not None
                conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (413, 431) and closed before reading everything: read its answer
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, dict(response.getheaders()), data, time.monotonic() - started)
    finally:
        if connection is None:
            conn.close()


def call(
    url: str,
    method: str,
    path: str,
    body: object = None,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 60.0,
    connection: http.client.HTTPConnection | None = None,
) -> Answer:
    """A request as an ordinary client sends it: Host and Content-Length set, ``body`` sent as is
    when bytes, as JSON otherwise (None: no body)."""
    payload = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    host, port = address(url)
    framing: list[tuple[str, str | bytes]] = [("Host", f"{host}:{port}")]
    if payload is not None or method in ("PUT", "POST", "PATCH"):
        framing.append(("Content-Length", str(len(payload or b""))))
    return exchange(url, method, path, [*framing, *(headers or {}).items()], payload or b"",
                    timeout=timeout, connection=connection)


def send_raw(url: str, data: bytes, *, half_close: bool = True, timeout: float = 30.0) -> bytes:
    """``data`` over a bare socket, then (``half_close``) the end of what we send; everything
    the server answers until it closes the connection."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # answered and closed before reading everything
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def small_log() -> list[LogRecord]:
    """Five records on two partitions: a superseded put, a tombstone, an empty value (for view tests)."""
    rows = [
        (0, 0, b"ada@x", b'{"email":"ada@x","name":"A"}'),
        (0, 1, b"bob@x", b'{"email":"bob@x","name":"B"}'),
        (0, 2, b"ada@x", b'{"email":"ada@x","name":"A2"}'),
        (0, 3, b"bob@x", None),
        (1, 0, b"cy@x", b""),
    ]
    return [LogRecord("t", p, o, 1_700_000_000_000 + o, k, v) for p, o, k, v in rows]


def copies_in_log(records: Iterable[LogRecord], expected: Iterable[str]) -> dict[str, int]:
    """How many times each ``expected`` key is in the log; fails if a repeat could change a reader.

    librdkafka's idempotent producer deduplicates its resends, except in a corner it documents
    (INTRODUCTION.md, "Message timeout considerations"): when a write times out in its queue it
    drains the partition, bumps the producer epoch and resends what was in flight under new
    sequence numbers, so a batch the old leader had already appended can land a second time.
    A repeat is then the same record again: the same value, with no other version of its key in
    between, so every reader of the topic ends with the same user. Anything else fails here.
    """
    by_key: dict[str, list[LogRecord]] = defaultdict(list)
    for record in records:
        if record.key is not None:
            by_key[record.key.decode()].append(record)
    counts = {}
    for key in expected:
        found = by_key.get(key, [])
        assert found, f"acknowledged but not in the log: {key}"
        assert len({r.partition for r in found}) == 1, [(r.partition, r.offset) for r in found]
        assert len({r.value for r in found}) == 1, f"{key}: different values {[(r.offset, r.value) for r in found]}"
        counts[key] = len(found)
    return counts
