"""The API describes itself: the OpenAPI 3.1 document served at ``/openapi.json``.

Hand-written, route by route, beside :mod:`kafka_crud.server`; the tests send requests to a live
server and check every answer (status, headers, body) against it. Schemas are JSON Schema
2020-12, the dialect of OpenAPI 3.1.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from .idempotency import MAX_KEY_LENGTH, WINDOW_KEYS, WINDOW_SECONDS
from .positions import MAX_POSITIONS, MAX_WAIT
from .records import MAX_EMAIL_LENGTH, MAX_NAME_LENGTH

__all__ = ["openapi_document"]

_POSITION = r'([A-Za-z0-9._-]+:)?"?[0-9]+-[0-9]+"?'
_JSON = "application/json"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _answer(description: str, schema: str | None = "Error", headers: tuple[str, ...] = ()) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {_JSON: {"schema": _ref("schemas", schema)}}
    if headers:
        answer["headers"] = {name: _ref("headers", name) for name in headers}
    return answer


_SCHEMAS: dict[str, Any] = {
    "User": {
        "type": "object", "required": ["email", "name"], "additionalProperties": False,
        "properties": {
            "email": {"type": "string", "minLength": 1, "maxLength": MAX_EMAIL_LENGTH,
                      "description": "The record's key: no spaces or control characters, name@domain."},
            "name": {"type": "string", "maxLength": MAX_NAME_LENGTH},
        },
    },
    "UserInput": {
        "type": "object", "additionalProperties": False,
        "description": "A user to write: the email may be given here, as ?email=, or both (the same).",
        "properties": {"email": {"type": "string"}, "name": {"type": "string", "maxLength": MAX_NAME_LENGTH}},
    },
    "Users": {"type": "array", "items": _ref("schemas", "User"), "description": "Sorted by email."},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string", "minLength": 1}}},
    "Status": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"enum": ["ready", "rebuilding", "ok"]},
                       "applied": {"type": "integer"}, "total": {"type": "integer"}},
    },
    "GroupInfo": {
        "type": "object", "required": ["group", "topic", "state", "partitions", "instances", "here"],
        "properties": {
            "group": {"type": ["string", "null"], "description": "The consumer group; null for a replicated instance."},
            "topic": {"type": "string"},
            "state": {"type": "string", "description": "The group's state (Stable, PreparingRebalance, ...), "
                                                      "or Replicated for an instance outside any group."},
            "partitions": {"type": "object", "additionalProperties": {"type": ["string", "null"]},
                           "description": "Partition -> the URL of the instance serving it (null while it moves)."},
            "instances": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"url": {"type": ["string", "null"]},
                                                 "partitions": {"type": "array", "items": {"type": "integer"}}}}},
            "here": {"type": "object"},
        },
    },
    "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
}

_PARAMETERS: dict[str, Any] = {
    "email": {"name": "email", "in": "query", "required": True, "schema": {"type": "string"},
              "description": "The user's email: the record's key."},
    "emailInBodyOrQuery": {"name": "email", "in": "query", "required": False, "schema": {"type": "string"},
                           "description": "The user's email; else the body's."},
    "partition": {"name": "partition", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                  "description": "Only the users of this partition (on a group instance: answered by its owner)."},
    "Kafka-Min-Position": {
        "name": "Kafka-Min-Position", "in": "header", "required": False,
        "schema": {"type": "string", "pattern": rf"^\s*{_POSITION}(\s*,\s*{_POSITION})*\s*$"},
        "description": "Answer only once this instance has applied these positions: P-O[,P-O...], "
                       "partition and offset of a record (a write's ETag form \"P-O\" too; topic:P-O names the "
                       f"topic). Waits up to the write timeout (5 s), or Prefer: wait=N; else 503. At most "
                       f"{MAX_POSITIONS} positions; another topic's, or a partition the topic lacks: 400.",
    },
    "Prefer": {
        "name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
        "description": f"RFC 7240 wait=N (0 to {MAX_WAIT} whole seconds): how long to wait for "
                       "Kafka-Min-Position, and with If-None-Match for the user to change. Other preferences "
                       "are ignored; a wait that is malformed or over the limit: 400.",
    },
    "If-None-Match": {
        "name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
        "description": "* or ETags (weak comparison): 304 while the ETag matches. With Prefer: wait=N, "
                       "GET /user answers as soon as the user changes (200, or 404 once deleted), else 304 "
                       "after N s.",
    },
    "If-Match": {
        "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
        "description": "* or ETags: write only if the user's current version is one of them, else 412.",
    },
    "Idempotency-Key": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "minLength": 1},
        "description": f"A unique key (an sf-string or a token, 1 to {MAX_KEY_LENGTH} characters). A retry with "
                       "the same key and request answers what the first answered (Idempotent-Replayed: true) "
                       "and writes nothing; another request with the key: 422; while the first is in flight: "
                       "409. The key is a header of the record, so it holds after a restart and on other "
                       f"instances once applied, within a window of {WINDOW_SECONDS / 3600:.0f} h and the "
                       f"{WINDOW_KEYS} most recent keys (and while its record is in the log).",
    },
}

_HEADERS: dict[str, Any] = {
    "ETag": {"schema": {"type": "string"}, "description": 'A user\'s version, "partition-offset" of its '
                                                        'record; for /users the positions applied.'},
    "Kafka-Partition": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "Kafka-Offset": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "Kafka-Position": {"schema": {"type": "string"},
                       "description": "The positions this instance had applied: usable as Kafka-Min-Position."},
    "Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "Location": {"schema": {"type": "string"}, "description": "The same request at the owning instance."},
    "Preference-Applied": {"schema": {"type": "string"}},
    "Idempotent-Replayed": {"schema": {"const": "true"}, "description": "A retry's answer: nothing was written."},
    "Allow": {"schema": {"type": "string"}},
}

_READ = ("ETag", "Kafka-Position", "Preference-Applied")
_WRITE = ("ETag", "Kafka-Partition", "Kafka-Offset", "Idempotent-Replayed")

_RESPONSES: dict[str, Any] = {
    "BadRequest": _answer("Malformed input (a body, query or header): nothing was done."),
    "NotFound": _answer("No such user, or no such path.", headers=("Kafka-Position", "Preference-Applied")),
    "MethodNotAllowed": _answer("Not a method of this path.", headers=("Allow",)),
    "RequestTimeout": _answer("The body did not arrive in time."),
    "LengthRequired": _answer("A chunked body: send a Content-Length."),
    "PayloadTooLarge": _answer("A body over 1 MiB."),
    "Redirect": _answer("On an instance of a consumer group: another instance owns the key's partition; "
                        "the same request there (307 keeps the method, body and headers).", headers=("Location",)),
    "Unavailable": _answer("Not now: rebuilding, a partition moving in a rebalance or being restored, "
                           "Kafka-Min-Position not reached in time, or Kafka unreachable.", headers=("Retry-After",)),
    "BadGateway": _answer("Kafka answered an error."),
}


def _standard(*extra: str) -> dict[str, Any]:
    codes = {"400": "BadRequest", "404": "NotFound", "405": "MethodNotAllowed", "408": "RequestTimeout",
             "411": "LengthRequired", "413": "PayloadTooLarge", "502": "BadGateway", "503": "Unavailable"}
    for code, _, name in (e.partition(":") for e in extra):
        codes[code] = name
    return {code: _ref("responses", name) for code, name in sorted(codes.items())}


def _params(*names: str) -> list[dict[str, str]]:
    return [_ref("parameters", n) for n in names]


def _get_user() -> dict[str, Any]:
    return {
        "summary": "A user, when this instance has applied the client's positions",
        "parameters": _params("email", "Kafka-Min-Position", "Prefer", "If-None-Match"),
        "responses": {
            "200": _answer("The user.", "User", _READ),
            "304": _answer("Not modified: the user's ETag still matches If-None-Match.", None, _READ),
            **_standard("307:Redirect"),
        },
    }


def _get_users() -> dict[str, Any]:
    return {
        "summary": "Every user (on a group instance: gathered from the owner of every partition)",
        "parameters": _params("partition", "Kafka-Min-Position", "Prefer", "If-None-Match"),
        "responses": {
            "200": _answer("Every user, sorted by email.", "Users", _READ),
            "304": _answer("Not modified: the positions applied still match If-None-Match.", None, _READ),
            **_standard("307:Redirect"),
        },
    }


def _status(summary: str) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": _answer("Yes.", "Status"), **_standard()}}


def _write(summary: str, ok: dict[str, Any], body: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": _params("emailInBodyOrQuery" if body else "email", "If-Match", "Idempotency-Key"),
        "responses": {**ok, **_standard("307:Redirect", "409:Conflict", "412:PreconditionFailed",
                                        "422:Unprocessable")},
    }
    if body:
        operation["requestBody"] = {"required": True, "content": {_JSON: {"schema": _ref("schemas", "UserInput")}}}
    return operation


def _get_and_head(summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    get = {"summary": summary, "responses": {"200": ok, **_standard()}}
    return {"get": get, "head": {**get, "summary": f"{summary} (the headers only)"}}


@cache
def _document() -> dict[str, Any]:
    from . import __version__

    responses = {
        **_RESPONSES,
        "Conflict": _answer("A request with the same Idempotency-Key is still in flight.", headers=("Retry-After",)),
        "PreconditionFailed": _answer("If-Match: the user changed since (or is absent)."),
        "Unprocessable": _answer("The Idempotency-Key was used for a different request."),
    }
    user_get, users_get = _get_user(), _get_users()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kafka-crud users",
            "version": __version__,
            "description": "CRUD on users stored in a compacted Kafka topic (key = email, value = JSON): "
                           "PUT appends a version, DELETE a tombstone, reads come from an instance's copy "
                           "rebuilt from the topic. Every error is JSON {\"error\": ...}.",
        },
        "paths": {
            "/": {method: {"summary": "An HTML page: the users and the routes, with relative links"
                                      + (" (without the body)" if method == "head" else ""),
                           "responses": {"200": {"description": "The page.",
                                                 "content": {"text/html": {"schema": {"type": "string"}}}}}}
                  for method in ("get", "head")},
            "/user": {
                "get": user_get, "head": {**user_get, "summary": "GET /user without the body"},
                "put": _write("Create (201) or update (200) a user: a new record", {
                    "200": _answer("Updated: a new version.", "User", _WRITE),
                    "201": _answer("Created.", "User", _WRITE)}, body=True),
                "delete": _write("Delete a user: a tombstone (null value)", {
                    "204": _answer("Deleted.", None, _WRITE)}, body=False),
            },
            "/users": {"get": users_get, "head": {**users_get, "summary": "GET /users without the body"}},
            "/groupinfo": _get_and_head("Which instance serves each partition",
                                        _answer("Partition -> instance URL.", "GroupInfo")),
            "/openapi.json": _get_and_head("This document", _answer("OpenAPI 3.1.", "OpenAPI")),
            "/readyz": {"get": _status("Ready: caught up with the topic (503 with Retry-After before)"),
                        "head": _status("GET /readyz without the body")},
            "/healthz": {"get": _status("Alive: 200 while the process serves"),
                         "head": _status("GET /healthz without the body")},
        },
        "components": {"schemas": _SCHEMAS, "parameters": _PARAMETERS, "headers": _HEADERS, "responses": responses},
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the endpoint (a fresh copy)."""
    return copy.deepcopy(_document())
