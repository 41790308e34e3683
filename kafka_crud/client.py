"""A small HTTP client for the endpoint, for notebooks and scripts (what curl does in the article).

It reads its own writes on any instance: it keeps the position of every write it made (from
the answer's ``Kafka-Partition`` and ``Kafka-Offset``) and sends them on its reads as
``Kafka-Min-Position``, so an instance answers only once it has applied them. Clients made with
:meth:`UserClient.at` share those positions: one session, several instances. It follows
redirects (307, 308) to the instance that owns a key, with the same method, body and headers.
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

__all__ = ["Response", "Session", "UserClient"]

_MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, headers and the body decoded from JSON (None when empty)."""

    status: int
    """The HTTP status code."""
    body: Any
    """The decoded JSON body, or the raw text if it is not JSON, or None if empty."""
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers (ETag, Kafka-Partition, Kafka-Offset, Retry-After, ...)."""
    url: str = ""
    """Where the answer came from (after redirects)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"<{self.status} {json.dumps(self.body, ensure_ascii=False) if self.body is not None else ''}>"


class Session:
    """The positions of a client's writes: the highest offset written per partition. Thread-safe."""

    def __init__(self) -> None:
        self._positions: dict[int, int] = {}
        self._lock = threading.Lock()

    def wrote(self, partition: int, offset: int) -> None:
        with self._lock:
            self._positions[partition] = max(offset, self._positions.get(partition, -1))

    @property
    def positions(self) -> dict[int, int]:
        with self._lock:
            return dict(sorted(self._positions.items()))

    def header(self) -> str | None:
        """The ``Kafka-Min-Position`` value, or None before any write."""
        positions = self.positions
        return ",".join(f"{p}-{o}" for p, o in positions.items()) or None

    def __repr__(self) -> str:
        return f"<Session {self.header() or 'no writes'}>"


class UserClient:
    """Calls ``/user`` on a kafka-crud endpoint: ``UserClient(server.url).put("ada@example.com", "Ada")``.

    Args:
        url: the instance to send requests to.
        session: the positions of the writes to read (shared with other clients); a new one by default.
        read_your_writes: send the session's positions on reads (``Kafka-Min-Position``).
        follow_redirects: follow 307 and 308 answers (up to 5 in a row).
    """

    def __init__(
        self, url: str, *, timeout: float = 30.0, session: Session | None = None,
        read_your_writes: bool = True, follow_redirects: bool = True,
    ) -> None:
        parts = urlsplit(url)
        self.url = f"{parts.scheme or 'http'}://{parts.netloc}"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.session = session if session is not None else Session()
        self.read_your_writes = read_your_writes
        self.follow_redirects = follow_redirects

    def at(self, url: str) -> UserClient:
        """A client for another instance that shares this one's session (its writes' positions)."""
        return UserClient(url, timeout=self.timeout, session=self.session, read_your_writes=self.read_your_writes,
                          follow_redirects=self.follow_redirects)

    @property
    def positions(self) -> dict[int, int]:
        """The positions of this session's writes: {partition: highest offset written}."""
        return self.session.positions

    def request(
        self, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request (following redirects); ``body`` may be a dict (sent as JSON) or raw bytes/text."""
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        if isinstance(payload, str):
            payload = payload.encode()
        send_headers = {"Content-Type": "application/json", **(headers or {})}
        url = urljoin(self.url, path)
        for _ in range(_MAX_REDIRECTS + 1):
            answer = self._send(method, url, payload, send_headers)
            location = answer.headers.get("Location")
            if not (self.follow_redirects and answer.status in (307, 308) and location):
                break
            url = urljoin(url, location)
        if answer.ok and method in ("PUT", "DELETE"):
            partition, offset = answer.headers.get("Kafka-Partition"), answer.headers.get("Kafka-Offset")
            if partition is not None and offset is not None and partition.isdigit() and offset.isdigit():
                self.session.wrote(int(partition), int(offset))
        return answer

    def _send(self, method: str, url: str, payload: bytes | None, headers: dict[str, str]) -> Response:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = http.client.HTTPConnection(parts.hostname or self.host, parts.port or 80, timeout=self.timeout)
        try:
            conn.request(method, target or "/", body=payload, headers=headers)
            answer = conn.getresponse()
            raw = answer.read()
            return Response(answer.status, _decode(raw), dict(answer.getheaders()), f"{parts.scheme}://{parts.netloc}")
        finally:
            conn.close()

    def _read_headers(self, if_none_match: str | None, wait: int | None) -> dict[str, str]:
        headers = {}
        position = self.session.header() if self.read_your_writes else None
        if position:
            headers["Kafka-Min-Position"] = position
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        if wait is not None:
            headers["Prefer"] = f"wait={wait}"
        return headers

    def get(self, email: str, *, if_none_match: str | None = None, wait: int | None = None) -> Response:
        """``GET /user``; ``if_none_match``: an ETag (304 while it matches); ``wait``: ``Prefer: wait=N``."""
        return self.request("GET", f"/user?email={quote(email)}", headers=self._read_headers(if_none_match, wait))

    def put(
        self, email: str, name: str = "", *, if_match: str | None = None, idempotency_key: str | None = None,
    ) -> Response:
        return self.request("PUT", f"/user?email={quote(email)}", {"email": email, "name": name},
                            _write_headers(if_match, idempotency_key))

    def delete(self, email: str, *, if_match: str | None = None, idempotency_key: str | None = None) -> Response:
        return self.request("DELETE", f"/user?email={quote(email)}", headers=_write_headers(if_match, idempotency_key))

    def users(self, *, if_none_match: str | None = None, wait: int | None = None) -> Response:
        return self.request("GET", "/users", headers=self._read_headers(if_none_match, wait))

    def groupinfo(self) -> Response:
        return self.request("GET", "/groupinfo")

    def ready(self) -> bool:
        return self.request("GET", "/readyz").status == 200

    def __repr__(self) -> str:
        return f"<UserClient {self.url} {self.session!r}>"


def _write_headers(if_match: str | None, idempotency_key: str | None) -> dict[str, str] | None:
    headers = {}
    if if_match:
        headers["If-Match"] = if_match
    if idempotency_key is not None:
        headers["Idempotency-Key"] = '"' + idempotency_key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return headers or None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
