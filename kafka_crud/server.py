"""The article's HTTP endpoint: the routes, and a runner for notebooks, tests and the CLI.

    GET    /                 200 a small HTML page: the routes, the users, links
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

The page at ``/`` links with relative URLs only, so it works as well behind
jupyter-server-proxy's ``<base>/proxy/<port>/`` as at ``http://127.0.0.1:<port>/``.
"""

from __future__ import annotations

import html
import logging
import threading
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import quote

from . import running
from .connection import DEFAULT_TOPIC, KafkaLike
from .errors import ValidationError
from .httpserver import HTTPError, JSONHandler, JSONServer, Reply, single
from .proxy import browser_url
from .records import Position, User
from .service import UserService

__all__ = ["ServerHandle", "make_server", "serve_in_thread"]

log = logging.getLogger(__name__)


class _UserRoutes(JSONHandler):
    server: JSONServer
    routes: ClassVar[dict[str, dict[str, str]]] = {
        "/": {"GET": "get_index", "HEAD": "get_index"},
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

    def get_index(self, query: dict[str, list[str]]) -> None:
        page = index_page(self.service)
        self.send_reply(HTTPStatus.OK, raw=page.encode(), content_type="text/html; charset=utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})

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


_INDEX_USERS = 100

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kafka-crud: users from {topic}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}code{{background:#f4f4f4}}</style></head>
<body><h1>Users from the compacted topic <code>{topic}</code></h1>
<p id="status">{status}</p>
<table id="users"><tr><th>email</th><th>name</th><th>ETag (partition-offset)</th></tr>
{rows}</table>{more}
<h2>Routes</h2><ul>
<li><a href="users">GET users</a>: every user, as JSON</li>
<li>GET user?email=E: one user; PUT user with a JSON body creates or updates; DELETE user?email=E writes a
tombstone</li>
<li><a href="readyz">GET readyz</a>: 200 once caught up with the topic, 503 before;
<a href="healthz">GET healthz</a>: 200 while serving</li></ul>
<p>This page: <code id="here"></code> (behind Jupyter, through its proxy:
<code>&lt;base&gt;/proxy/&lt;port&gt;/</code>)</p>
<script>document.getElementById("here").textContent = location.href</script>
</body></html>
"""


def index_page(service: UserService) -> str:
    """The HTML page at ``/``: the users (the first 100), the routes, relative links only."""
    users = service.users() if service.ready else []
    rows = "\n".join(
        f'<tr><td><a href="user?email={quote(s.user.email, safe="@")}">{html.escape(s.user.email)}</a></td>'
        f"<td>{html.escape(s.user.name)}</td><td>{html.escape(s.position.etag)}</td></tr>"
        for s in users[:_INDEX_USERS]
    )
    more = (f'<p>and {len(users) - _INDEX_USERS} more: <a href="users">GET users</a></p>'
            if len(users) > _INDEX_USERS else "")
    progress = service.progress()
    count = f"{len(users)} user" + ("" if len(users) == 1 else "s")
    status = (count if service.ready or progress is None
              else f"Rebuilding from the topic: {progress.applied} of {progress.total} offsets (reload)")
    return _PAGE.format(topic=html.escape(service.topic), status=status, rows=rows, more=more)


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
        running.track(self, servers=service.kafka.bootstrap_servers, topic=service.topic)
        """Where a participant's browser reaches it: through Jupyter's proxy under Jupyter (see
        :mod:`kafka_crud.proxy`), else the direct address."""

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
