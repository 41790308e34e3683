"""The article's HTTP endpoint: the routes, and a runner for notebooks, tests and the CLI.

    GET    /                 200 a small HTML page: the routes, the users, links
    GET    /user?email=E     200 user | 304 | 404
    PUT    /user[?email=E]   201 created | 200 updated; body {"email": ..., "name": ...}
    DELETE /user?email=E     204 | 404
    GET    /users[?partition=N]  200 [users] | 304
    GET    /groupinfo        200 {partition: URL of the instance serving it}
    GET    /openapi.json     200 this API's OpenAPI 3.1 document
    GET    /readyz           200 once caught up with the topic, 503 before
    GET    /healthz          200 while the process serves

A 2xx on PUT or DELETE means Kafka acknowledged the write and this server's next GET sees it;
another instance's GET sees it when it carries ``Kafka-Min-Position`` with the write's position.
``PUT`` and ``DELETE`` take ``If-Match: <ETag>`` (412 when the user changed since) and
``Idempotency-Key`` (a retry answers as the first did, and writes nothing). ``GET`` takes
``If-None-Match`` (304) and ``Prefer: wait=N``. On an instance of a consumer group
(:mod:`kafka_crud.partitioned`) a request for a user of another instance's partition answers
307 to it. Every error is JSON ``{"error": "..."}``, its status the kit error's ``http_status``;
no traceback reaches a client. Framing, limits and error pages are :mod:`kafka_crud.httpserver`'s;
the document at ``/openapi.json`` is :mod:`kafka_crud.openapi`'s, the page at ``/``
:mod:`kafka_crud.page`'s (relative links only, so it works as well behind jupyter-server-proxy's
``<base>/proxy/<port>/`` as at ``http://127.0.0.1:<port>/``).
"""

from __future__ import annotations

import html
import logging
import threading
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar

from . import running
from .connection import DEFAULT_TOPIC, KafkaLike
from .errors import ConfigError, NotOwnerError, ValidationError
from .httpserver import HTTPError, JSONHandler, JSONServer, Reply, single
from .idempotency import parse_idempotency_key
from .openapi import openapi_document
from .page import index_page
from .positions import Positions, format_positions, parse_etags, parse_min_positions, parse_prefer_wait, users_etag
from .proxy import browser_url
from .records import Position, User
from .service import UserService, Written

__all__ = ["ServerHandle", "make_server", "serve_in_thread"]

log = logging.getLogger(__name__)


class _UserRoutes(JSONHandler):
    server: JSONServer
    routes: ClassVar[dict[str, dict[str, str]]] = {
        "/": {"GET": "get_index", "HEAD": "get_index"},
        "/user": {"GET": "get_user", "HEAD": "get_user", "PUT": "put_user", "DELETE": "delete_user"},
        "/users": {"GET": "get_users", "HEAD": "get_users"},
        "/groupinfo": {"GET": "get_groupinfo", "HEAD": "get_groupinfo"},
        "/openapi.json": {"GET": "get_openapi", "HEAD": "get_openapi"},
        "/readyz": {"GET": "get_ready", "HEAD": "get_ready"},
        "/healthz": {"GET": "get_health", "HEAD": "get_health"},
    }
    not_found_hint = ": try /user?email=..., /users, /readyz, /openapi.json"

    @property
    def service(self) -> UserService:
        service: UserService = self.server.app
        return service

    # -- headers: each parsed strictly, before anything is done (a 400 changes nothing) -------
    def _header(self, name: str) -> str | None:
        values = self.headers.get_all(name)
        return None if values is None else ",".join(values)

    def _min_positions(self) -> Positions | None:
        value = self._header("Kafka-Min-Position")
        if value is None:
            return None
        return parse_min_positions(value, topic=self.service.topic, partitions=self.service.partition_count)

    def _if_none_match(self) -> frozenset[str] | None:
        value = self._header("If-None-Match")
        return None if value is None else parse_etags(value)

    def _wait(self) -> int | None:
        return parse_prefer_wait(self.headers.get_all("Prefer") or [])

    def _to_owner(self, email: str) -> None:
        """Answer 307 to the owner when another instance of the group serves ``email``."""
        owner = self.service.route(email)
        if owner is not None:
            partition = self.service.partition_of(email)
            raise NotOwnerError(
                f"{email} is in partition {partition}, which {owner} serves: follow the redirect",
                location=owner.rstrip("/") + self.path,
            )

    @staticmethod
    def _read_headers(applied: Positions, wait: int | None) -> dict[str, str]:
        headers = {"Kafka-Position": format_positions(applied)} if applied else {}
        if wait is not None:
            headers["Preference-Applied"] = f"wait={wait}"
        return headers

    # -- routes -----------------------------------------------------------------------------------
    def get_index(self, query: dict[str, list[str]]) -> None:
        page = index_page(self.service)
        self.send_reply(HTTPStatus.OK, raw=page.encode(), content_type="text/html; charset=utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})

    def get_user(self, query: dict[str, list[str]]) -> Reply:
        email = _required_email(query)
        positions, tags, wait = self._min_positions(), self._if_none_match(), self._wait()
        self._to_owner(email)
        read = self.service.read(email, min_positions=positions, wait=wait, if_none_match=tags)
        headers = self._read_headers(read.applied or {}, wait)
        if read.stored is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"No user {email!r}", headers)
        headers["ETag"] = read.stored.position.etag
        if read.not_modified:
            return HTTPStatus.NOT_MODIFIED, None, headers
        return HTTPStatus.OK, read.stored.user.to_dict(), headers

    def put_user(self, query: dict[str, list[str]]) -> Reply:
        body = self.read_body()
        if not body.strip():
            raise ValidationError('Empty body: send a JSON user like {"email": "a@b.c", "name": "A"}')
        user = User.from_json(body, email=single(query, "email"))
        key = parse_idempotency_key(self.headers.get_all("Idempotency-Key") or [])
        self._to_owner(user.email)
        written = self.service.put_request(user, if_match=self.headers.get("If-Match"), idempotency_key=key)
        return written.status, user.to_dict(), _write_headers(written)

    def delete_user(self, query: dict[str, list[str]]) -> Reply:
        email = _required_email(query)
        key = parse_idempotency_key(self.headers.get_all("Idempotency-Key") or [])
        self._to_owner(email)
        written = self.service.delete_request(email, if_match=self.headers.get("If-Match"), idempotency_key=key)
        if written.position is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"No user {email!r}")
        return written.status, None, _write_headers(written)

    def get_users(self, query: dict[str, list[str]]) -> Reply:
        partition = _partition(query, self.service.partition_count)
        positions, tags, wait = self._min_positions(), self._if_none_match(), self._wait()
        owner = self.service.route_partition(partition) if partition is not None else None
        if owner is not None:
            raise NotOwnerError(f"Partition {partition} is served by {owner}: follow the redirect",
                                location=owner.rstrip("/") + self.path)
        users, applied = self.service.list_users(partition=partition, min_positions=positions, wait=wait)
        headers = {**self._read_headers(applied, wait), "ETag": users_etag(applied)}
        if tags is not None and ("*" in tags or headers["ETag"] in tags):
            return HTTPStatus.NOT_MODIFIED, None, headers
        return HTTPStatus.OK, users, headers

    def get_groupinfo(self, query: dict[str, list[str]]) -> Reply:
        return HTTPStatus.OK, self.service.groupinfo(), {}

    def get_openapi(self, query: dict[str, list[str]]) -> Reply:
        return HTTPStatus.OK, openapi_document(), {}

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


def _partition(query: dict[str, list[str]], partitions: int) -> int | None:
    value = single(query, "partition")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 10) or int(value) >= partitions:
        raise ValidationError(f"?partition= must be a partition of the topic, 0 to {partitions - 1}, not {value[:9]!r}")
    return int(value)


def _position_headers(position: Position) -> dict[str, str]:
    return {
        "ETag": position.etag,
        "Kafka-Partition": str(position.partition),
        "Kafka-Offset": str(position.offset),
    }


def _write_headers(written: Written) -> dict[str, str]:
    assert written.position is not None
    headers = _position_headers(written.position)
    if written.replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def make_server(service: UserService, host: str = "127.0.0.1", port: int = 8080) -> JSONServer:
    """An HTTP server for ``service``, bound but not yet serving; port 0 picks a free one."""
    return JSONServer((host, port), _UserRoutes, service)


class ServerHandle:
    """A running endpoint: ``.url``, ``.browser_url``, ``.service``, ``.stop()``; also a context manager.

    A notebook shows it as a link to :attr:`browser_url`.
    """

    def __init__(self, server: JSONServer, service: UserService, thread: threading.Thread) -> None:
        self._server = server
        self.service = service
        self._thread = thread
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        self.url = f"http://{self.host}:{self.port}"
        """Where the endpoint listens (for code on this machine: clients, curl)."""
        self.browser_url = browser_url(self.port, self.host)
        """Where a participant's browser reaches it: through Jupyter's proxy under Jupyter (see
        :mod:`kafka_crud.proxy`), else the direct address."""
        running.track(self, servers=service.kafka.bootstrap_servers, topic=service.topic)

    def stop(self) -> None:
        """Stop serving, then stop the service's consumer and producer."""
        running.untrack(self)
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
        browser = "" if self.browser_url.rstrip("/") == self.url else f" browser={self.browser_url}"
        return f"<ServerHandle {self.url}{browser} topic={self.service.topic!r} ready={self.service.ready}>"

    def _repr_html_(self) -> str:
        link = html.escape(self.browser_url, quote=True)
        state = "ready" if self.service.ready else "rebuilding"
        return (f'<div class="kafka-crud-server">Users from <code>{html.escape(self.service.topic)}</code> '
                f'served at <a href="{link}" target="_blank" rel="noopener">{link}</a> ({state})</div>')


def serve_in_thread(
    kafka: KafkaLike = None,
    *,
    topic: str = DEFAULT_TOPIC,
    host: str = "127.0.0.1",
    port: int = 0,
    wait_ready: float | None = 60.0,
    service: UserService | None = None,
    group: str | None = None,
    advertise: str | None = None,
    **service_options: Any,
) -> ServerHandle:
    """Start the endpoint in a background thread (notebooks, tests and ``kafka-crud serve``).

    Listens at once (``/readyz`` answers 503 while rebuilding); with ``wait_ready`` it returns
    only once caught up. ``port=0`` takes a free one. ``service_options`` go to
    :class:`~kafka_crud.UserService`, or with ``group`` to a
    :class:`~kafka_crud.PartitionedService` of that consumer group, which publishes
    ``advertise`` (default: the address it listens on) as its URL.
    """
    if service is None:
        if group is not None:
            from .partitioned import PartitionedService

            if service_options.get("state_dir") is not None:
                raise ConfigError("state_dir keeps a snapshot of the whole table: not with group= (an instance "
                                  "of a group holds only its partitions)")

            service = PartitionedService(kafka, group=group, url=advertise, topic=topic, **service_options)
        else:
            service = UserService(kafka, topic=topic, **service_options)
    server = make_server(service, host, port)  # bound, not serving yet: its address is known
    if service.url is None:
        bound_host, bound_port = server.server_address[:2]
        shown = "127.0.0.1" if str(bound_host) in ("0.0.0.0", "::", "") else str(bound_host)
        service.url = advertise or f"http://{shown}:{bound_port}"
    try:
        service.start()
    except BaseException:
        server.server_close()
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
