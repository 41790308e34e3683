"""HTTP plumbing for the endpoint, on the standard library's threaded HTTP server.

Why the standard library: no dependency to install or pin for workshops, one thread per
connection is plenty for a teaching kit, and we control every status code and body (a
framework's default HTML error pages and 500s would leak into the fuzzing contract).

This module knows nothing of users: it frames requests and responses (Content-Length only,
no chunked bodies), reads bodies within limits, answers every error as JSON
``{"error": "..."}`` and lingers after an error that closes the connection, so the client reads
the answer. A kit error's ``http_status`` decides the status: one lookup, no ``except`` ladder.
The routes are in :mod:`kafka_crud.server`.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from .errors import KafkaCrudError, ValidationError

__all__ = ["MAX_BODY", "HTTPError", "JSONHandler", "JSONServer", "Reply", "single"]

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
# After an error that closes the connection: how long, and how much, to keep reading.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 4 * MAX_BODY

#: (status, JSON body or None, extra headers): what a route returns.
Reply = tuple[int, object, dict[str, str]]


class HTTPError(Exception):
    """An error answer decided by the HTTP layer or a route (404, 405, 411, 413, ...)."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.headers = headers or {}


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler whose subclass maps paths to routes: ``routes = {path: {method: name}}``."""

    server: JSONServer
    protocol_version = "HTTP/1.1"
    server_version = "kafka-crud"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request
    # The stdlib sends the headers and the body separately: with Nagle's algorithm on, the body
    # waits for the client to acknowledge the headers, up to 40 ms (delayed ACK) per response.
    disable_nagle_algorithm = True
    routes: ClassVar[dict[str, dict[str, str]]] = {}
    not_found_hint = ""

    # Every method, known or not, lands in _dispatch: unknown ones get 405, not the stdlib's 501.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- responses ---------------------------------------------------------------------------
    def send_reply(
        self, status: int, body: object = None, headers: dict[str, str] | None = None, *,
        raw: bytes | None = None, content_type: str = "application/json; charset=utf-8",
    ) -> None:
        """Send a JSON body (or ``raw`` bytes of ``content_type``) with its framing headers."""
        if raw is None:
            raw_json = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        payload = raw if raw is not None else raw_json
        self.send_response(status)
        if payload or raw is not None:
            self.send_header("Content-Type", content_type)
        if status not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):  # RFC 9110 8.6: never for these
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)
        if self.close_connection and status >= 400:
            self._linger()

    def _linger(self) -> None:
        """Drop what the client still sends, briefly, before closing, so that it reads our error.

        Closing a socket with unread data makes the kernel reset the connection: a client still
        sending its too-large (or unframed) body would get a broken pipe instead of the 413.
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)  # the answer is complete: the client sees EOF
            self.connection.settimeout(_LINGER_SECONDS)
            deadline = time.monotonic() + _LINGER_SECONDS
            budget = _LINGER_BYTES
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(budget, 65536))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass  # reset or timed out: nothing more to do for this client

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, headers too long, ...) as JSON too."""
        self.close_connection = True
        try:
            reason = message or HTTPStatus(code).phrase
        except ValueError:
            reason = "error"
        self.send_reply(code, {"error": reason})

    # -- requests -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        try:
            reply = self._route()
            if reply is None:  # the route sent its own answer
                return
            status, body, headers = reply
        except (HTTPError, KafkaCrudError) as exc:
            status = exc.http_status
            body = {"error": str(exc)}
            headers = dict(getattr(exc, "headers", {}))
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                headers["Retry-After"] = str(retry_after)
            if status >= 500 and isinstance(exc, KafkaCrudError):
                log.warning("%s %s: %s", self.command, self.path, exc)
        except Exception:
            log.exception("Unexpected error on %s %s", self.command, self.path)
            status, headers = HTTPStatus.INTERNAL_SERVER_ERROR, {}
            body = {"error": "Internal error; see the server log"}
        self.send_reply(status, body, headers)

    def _route(self) -> Reply | None:
        url = urlsplit(self.path)
        path = url.path
        if self.command != "PUT":
            self.discard_body()  # keep the connection usable for the next request
        methods = self.routes.get(path)
        if methods is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"No such path {path!r}{self.not_found_hint}")
        name = methods.get(self.command)
        if name is None:
            raise HTTPError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed on {path}",
                {"Allow": ", ".join(methods)},
            )
        handler: Callable[[dict[str, list[str]]], Reply | None] = getattr(self, name)
        return handler(parse_qs(url.query, keep_blank_values=True))

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "Send the body with a Content-Length, not chunked")
        values = [v.strip(" \t") for v in self.headers.get_all("Content-Length", [])]
        if not values:
            return 0
        # 1*DIGIT and nothing else (RFC 9112): int() would also take "+5", "5_0" or Arabic digits,
        # two different lengths leave the end of the body to guesswork.
        if len(set(values)) > 1 or not (values[0].isascii() and values[0].isdigit()):
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"Invalid Content-Length {', '.join(values)!r}")
        length = int(values[0])
        if length > MAX_BODY:
            self.close_connection = True  # the unread body would be taken for the next request
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"The body is over {MAX_BODY} bytes")
        return length

    def read_body(self) -> bytes:
        """The request body, whole; a clear 4xx when it is missing, too large or cut short."""
        length = self._content_length()
        body = self._read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "The body ended before its Content-Length")
        return body

    def discard_body(self) -> None:
        length = self._content_length()
        if length:
            self._read(length)

    def _read(self, length: int) -> bytes:
        try:
            return self.rfile.read(length)
        except TimeoutError:  # a client that announced more than it sends: its fault, not ours
            self.close_connection = True
            raise HTTPError(HTTPStatus.REQUEST_TIMEOUT, f"The body did not arrive within {self.timeout} s") from None


def single(query: dict[str, list[str]], name: str) -> str | None:
    """The one value of a query parameter, None when absent; a 400 when given twice."""
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValidationError(f"Give ?{name}= once, not {len(values)} times")
    return values[0]


class JSONServer(ThreadingHTTPServer):
    """A threaded server whose handler threads die with it; ``app`` is what the routes serve."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[JSONHandler], app: Any) -> None:
        self.app = app
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer was written is no error of ours: no traceback
        # on stderr (the stdlib's default), which would land in a notebook's output.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("%s hung up before its answer was written", client_address)
            return
        super().handle_error(request, client_address)
