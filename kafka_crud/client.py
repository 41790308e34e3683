"""A small HTTP client for the endpoint, for notebooks and scripts (what curl does in the article)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["Response", "UserClient"]


@dataclass(frozen=True)
class Response:
    """An HTTP answer: status, headers and the body decoded from JSON (None when empty)."""

    status: int
    """The HTTP status code."""
    body: Any
    """The decoded JSON body, or the raw text if it is not JSON, or None if empty."""
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers (ETag, Kafka-Partition, Kafka-Offset, Retry-After, ...)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"<{self.status} {json.dumps(self.body, ensure_ascii=False) if self.body is not None else ''}>"


class UserClient:
    """Calls ``/user`` on a kafka-crud endpoint: ``UserClient(server.url).put("ada@example.com", "Ada")``."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request; ``body`` may be a dict (sent as JSON) or raw bytes/text."""
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        if isinstance(payload, str):
            payload = payload.encode()
        send_headers = {"Content-Type": "application/json", **(headers or {})}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=payload, headers=send_headers)
            answer = conn.getresponse()
            raw = answer.read()
            return Response(answer.status, _decode(raw), dict(answer.getheaders()))
        finally:
            conn.close()

    def get(self, email: str) -> Response:
        return self.request("GET", f"/user?email={quote(email)}")

    def put(self, email: str, name: str = "", *, if_match: str | None = None) -> Response:
        headers = {"If-Match": if_match} if if_match else None
        return self.request("PUT", f"/user?email={quote(email)}", {"email": email, "name": name}, headers)

    def delete(self, email: str, *, if_match: str | None = None) -> Response:
        headers = {"If-Match": if_match} if if_match else None
        return self.request("DELETE", f"/user?email={quote(email)}", headers=headers)

    def users(self) -> Response:
        return self.request("GET", "/users")

    def ready(self) -> bool:
        return self.request("GET", "/readyz").status == 200


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
