"""The article's HTTP endpoint, on the standard library's threaded HTTP server.

Why the standard library: no dependency to install or pin for workshops, one thread per
connection is plenty for a teaching kit, and we control every status code and body (a
framework's default HTML error pages and 500s would leak into the fuzzing contract).

    GET    /user?email=E     200 user | 404
    PUT    /user[?email=E]   201 created | 200 updated; body {"email": ..., "name": ...}
    DELETE /user?email=E     204 | 404
    GET    /users            200 [users]
    GET    /readyz           200 once caught up with the topic, 503 before
    GET    /healthz          200 while the process serves

A 2xx on PUT or DELETE means Kafka acknowledged the write and this server's next GET sees it.
Every error is JSON ``{"error": "..."}``; no traceback reaches a client.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import NotReadyError, PreconditionFailedError, ValidationError, WriteError
from .records import User
from .service import UserService

__all__ = ["MAX_BODY", "ServerHandle", "make_server", "serve_in_thread"]

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
# After an error that closes the connection: how long, and how much, to keep reading.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 4 * MAX_BODY
_ROUTES: dict[str, tuple[str, ...]] = {
    "/user": ("GET", "HEAD", "PUT", "DELETE"),
    "/users": ("GET", "HEAD"),
    "/readyz": ("GET", "HEAD"),
    "/healthz": ("GET", "HEAD"),
}


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "kafka-crud"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request
    # The stdlib sends the headers and the body separately: with Nagle's algorithm on, the body
    # waits for the client to acknowledge the headers, up to 40 ms (delayed ACK) per response.
    disable_nagle_algorithm = True

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
    def _send(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
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
        self._send(code, {"error": reason})

    # -- requests -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        try:
            status, body, headers = self._route()
        except _HTTPError as exc:
            status, body, headers = exc.status, {"error": str(exc)}, exc.headers
        except ValidationError as exc:
            status, body, headers = HTTPStatus.BAD_REQUEST, {"error": str(exc)}, {}
        except PreconditionFailedError as exc:
            status, body, headers = HTTPStatus.PRECONDITION_FAILED, {"error": str(exc)}, {}
        except NotReadyError as exc:
            status, body, headers = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}, {"Retry-After": "1"}
        except WriteError as exc:
            status, body, headers = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}, {"Retry-After": "1"}
        except Exception:
            log.exception("Unexpected error on %s %s", self.command, self.path)
            status, body, headers = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "Internal error; see the server log"}, {}
        self._send(status, body, headers)

    def _route(self) -> tuple[int, object, dict[str, str]]:
        url = urlsplit(self.path)
        if self.command != "PUT":
            self._discard_body()  # keep the connection usable for the next request
        allowed = _ROUTES.get(url.path)
        if allowed is None:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"No such path {url.path!r}: try /user?email=..., /users, /readyz")
        if self.command not in allowed:
            raise _HTTPError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed on {url.path}",
                {"Allow": ", ".join(allowed)},
            )
        query = parse_qs(url.query, keep_blank_values=True)
        service = self.server.service
        if url.path == "/healthz":
            return HTTPStatus.OK, {"status": "ok"}, {}
        if url.path == "/readyz":
            if service.ready:
                return HTTPStatus.OK, {"status": "ready"}, {}
            p = service.progress()
            detail = {"applied": p.applied, "total": p.total} if p else {}
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "rebuilding", **detail}, {"Retry-After": "1"}
        if url.path == "/users":
            return HTTPStatus.OK, [s.user.to_dict() for s in service.users()], {}
        email = _single(query, "email")
        if self.command in ("GET", "HEAD"):
            if email is None:
                raise ValidationError("Missing ?email=")
            stored = service.get(email)
            if stored is None:
                raise _HTTPError(HTTPStatus.NOT_FOUND, f"No user {email!r}")
            return HTTPStatus.OK, stored.user.to_dict(), {"ETag": stored.position.etag}
        if_match = self.headers.get("If-Match")
        if self.command == "PUT":
            body = self._read_body()
            user = User.from_json(body, email=email)
            stored, created = service.put(user, if_match=if_match)
            status = HTTPStatus.CREATED if created else HTTPStatus.OK
            return status, user.to_dict(), _position_headers(stored.position)
        # DELETE
        if email is None:
            raise ValidationError("Missing ?email=")
        position = service.delete(email, if_match=if_match)
        if position is None:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"No user {email!r}")
        return HTTPStatus.NO_CONTENT, None, _position_headers(position)

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise _HTTPError(HTTPStatus.LENGTH_REQUIRED, "Send the body with a Content-Length, not chunked")
        values = [v.strip(" \t") for v in self.headers.get_all("Content-Length", [])]
        if not values:
            return 0
        # 1*DIGIT and nothing else (RFC 9112): int() would also take "+5", "5_0" or Arabic digits,
        # two different lengths leave the end of the body to guesswork.
        if len(set(values)) > 1 or not (values[0].isascii() and values[0].isdigit()):
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"Invalid Content-Length {', '.join(values)!r}")
        length = int(values[0])
        if length > MAX_BODY:
            self.close_connection = True  # the unread body would be taken for the next request
            raise _HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"The body is over {MAX_BODY} bytes")
        return length

    def _read_body(self) -> bytes:
        length = self._content_length()
        body = self._read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "The body ended before its Content-Length")
        if not body.strip():
            raise ValidationError('Empty body: send a JSON user like {"email": "a@b.c", "name": "A"}')
        return body

    def _discard_body(self) -> None:
        length = self._content_length()
        if length:
            self._read(length)

    def _read(self, length: int) -> bytes:
        try:
            return self.rfile.read(length)
        except TimeoutError:  # a client that announced more than it sends: its fault, not ours
            self.close_connection = True
            raise _HTTPError(HTTPStatus.REQUEST_TIMEOUT, f"The body did not arrive within {self.timeout} s") from None


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValidationError(f"Give ?{name}= once, not {len(values)} times")
    return values[0]


def _position_headers(position: Any) -> dict[str, str]:
    return {
        "ETag": position.etag,
        "Kafka-Partition": str(position.partition),
        "Kafka-Offset": str(position.offset),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: UserService) -> None:
        self.service = service
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer was written is no error of ours: no traceback
        # on stderr (the stdlib's default), which would land in a notebook's output.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("%s hung up before its answer was written", client_address)
            return
        super().handle_error(request, client_address)


def make_server(service: UserService, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """An HTTP server for ``service``, bound but not yet serving; port 0 picks a free one."""
    return _Server((host, port), service)


class ServerHandle:
    """A running endpoint: ``.url``, ``.service``, ``.stop()``; also a context manager."""

    def __init__(self, server: ThreadingHTTPServer, service: UserService, thread: threading.Thread) -> None:
        self._server = server
        self.service = service
        self._thread = thread
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

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
    bootstrap_servers: str | None = None,
    *,
    topic: str = "user",
    host: str = "127.0.0.1",
    port: int = 0,
    wait_ready: float | None = 60.0,
    service: UserService | None = None,
    **service_options: Any,
) -> ServerHandle:
    """Start the endpoint in a background thread (for notebooks and tests).

    Listens at once (``/readyz`` answers 503 while rebuilding); with ``wait_ready`` it returns
    only once caught up. ``port=0`` takes a free port.
    """
    service = service or UserService(bootstrap_servers, topic=topic, **service_options)
    service.start()
    server = make_server(service, host, port)
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
