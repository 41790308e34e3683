"""The article's HTTP endpoint: the routes, and a runner for notebooks, tests and the CLI.

    GET    /user?email=E     200 user | 404
    PUT    /user[?email=E]   201 created | 200 updated; body {"email": ..., "name": ...}
    DELETE /user?email=E     204 | 404
    GET    /users            200 [users]
    GET    /readyz           200 once caught up with the topic, 503 before
    GET    /healthz          200 while the process serves

A 2xx on PUT or DELETE means Kafka acknowledged the write and this server's next GET sees it.
``PUT`` and ``DELETE`` take ``If-Match: <ETag>`` (412 when the user changed since). Every error
is JSON ``{"error": "..."}``, its status the kit error's ``http_status``; no traceback reaches a
client. Framing, limits and error pages are :mod:`kafka_crud.httpserver`'s.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar

from .connection import DEFAULT_TOPIC, KafkaLike
from .errors import ValidationError
from .httpserver import HTTPError, JSONHandler, JSONServer, Reply, single
from .records import Position, User
from .service import UserService

__all__ = ["ServerHandle", "make_server", "serve_in_thread"]

log = logging.getLogger(__name__)


class _UserRoutes(JSONHandler):
    server: JSONServer
    routes: ClassVar[dict[str, dict[str, str]]] = {
        "/user": {"GET": "get_user", "HEAD": "get_user", "PUT": "put_user", "DELETE": "delete_user"},
        "/users": {"GET": "get_users", "HEAD": "get_users"},
        "/readyz": {"GET": "get_ready", "HEAD": "get_ready"},
        "/healthz": {"GET": "get_health", "HEAD": "get_health"},
    }
    not_found_hint = ": try /user?email=..., /users, /readyz"

    @property
    def service(self) -> UserService:
        service: UserService = self.server.app
        return service

    def get_user(self, query: dict[str, list[str]]) -> Reply:
        email = _required_email(query)
        stored = self.service.get(email)
        if stored is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"No user {email!r}")
        return HTTPStatus.OK, stored.user.to_dict(), {"ETag": stored.position.etag}

    def put_user(self, query: dict[str, list[str]]) -> Reply:
        body = self.read_body()
        if not body.strip():
            raise ValidationError('Empty body: send a JSON user like {"email": "a@b.c", "name": "A"}')
        user = User.from_json(body, email=single(query, "email"))
        stored, created = self.service.put(user, if_match=self.headers.get("If-Match"))
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        return status, user.to_dict(), _position_headers(stored.position)

    def delete_user(self, query: dict[str, list[str]]) -> Reply:
        email = _required_email(query)
        position = self.service.delete(email, if_match=self.headers.get("If-Match"))
        if position is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"No user {email!r}")
        return HTTPStatus.NO_CONTENT, None, _position_headers(position)

    def get_users(self, query: dict[str, list[str]]) -> Reply:
        return HTTPStatus.OK, [s.user.to_dict() for s in self.service.users()], {}

    def get_ready(self, query: dict[str, list[str]]) -> Reply:
        if self.service.ready:
            return HTTPStatus.OK, {"status": "ready"}, {}
        p = self.service.progress()
        detail = {"applied": p.applied, "total": p.total} if p else {}
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "rebuilding", **detail}, {"Retry-After": "1"}

    def get_health(self, query: dict[str, list[str]]) -> Reply:
        return HTTPStatus.OK, {"status": "ok"}, {}


def _required_email(query: dict[str, list[str]]) -> str:
    email = single(query, "email")
    if email is None:
        raise ValidationError("Missing ?email=")
    return email


def _position_headers(position: Position) -> dict[str, str]:
    return {
        "ETag": position.etag,
        "Kafka-Partition": str(position.partition),
        "Kafka-Offset": str(position.offset),
    }


def make_server(service: UserService, host: str = "127.0.0.1", port: int = 8080) -> JSONServer:
    """An HTTP server for ``service``, bound but not yet serving; port 0 picks a free one."""
    return JSONServer((host, port), _UserRoutes, service)


class ServerHandle:
    """A running endpoint: ``.url``, ``.service``, ``.stop()``; also a context manager."""

    def __init__(self, server: JSONServer, service: UserService, thread: threading.Thread) -> None:
        self._server = server
        self.service = service
        self._thread = thread
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        self.url = f"http://{self.host}:{self.port}"
        """Where the endpoint listens."""

    def stop(self) -> None:
        """Stop serving, then stop the service's consumer and producer."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.service.stop()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ServerHandle {self.url} topic={self.service.topic!r} ready={self.service.ready}>"


def serve_in_thread(
    kafka: KafkaLike = None,
    *,
    topic: str = DEFAULT_TOPIC,
    host: str = "127.0.0.1",
    port: int = 0,
    wait_ready: float | None = 60.0,
    service: UserService | None = None,
    **service_options: Any,
) -> ServerHandle:
    """Start the endpoint in a background thread (notebooks, tests and ``kafka-crud serve``).

    Listens at once (``/readyz`` answers 503 while rebuilding); with ``wait_ready`` it returns
    only once caught up. ``port=0`` takes a free one. ``service_options`` go to
    :class:`~kafka_crud.UserService`.
    """
    service = service or UserService(kafka, topic=topic, **service_options)
    service.start()
    try:
        server = make_server(service, host, port)
    except BaseException:
        service.stop()
        raise
    thread = threading.Thread(target=server.serve_forever, name="kafka-crud-http", daemon=True)
    thread.start()
    handle = ServerHandle(server, service, thread)
    if wait_ready is not None:
        try:
            service.wait_ready(wait_ready)
        except BaseException:
            handle.stop()
            raise
    return handle
