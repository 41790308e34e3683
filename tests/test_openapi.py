"""/openapi.json: a valid OpenAPI 3.1 document that every live answer agrees with."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from kafka_crud.client import Response, UserClient
from kafka_crud.connection import Kafka
from kafka_crud.group_consumer import stop_all
from kafka_crud.openapi import openapi_document
from kafka_crud.partitioning import partition_for
from kafka_crud.server import ServerHandle, _UserRoutes, serve_in_thread

DOC = openapi_document()
REGISTRY: Registry[Any] = Registry().with_resource("urn:api", Resource.from_contents(DOC, DRAFT202012))
# The headers the kit sets on purpose: each one an answer carries must be in the document.
KIT_HEADERS = ["ETag", "Kafka-Partition", "Kafka-Offset", "Kafka-Position", "Retry-After", "Location",
               "Preference-Applied", "Idempotent-Replayed", "Allow"]


def _lookup(ref: str) -> Any:
    node: Any = DOC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


class Checker:
    """Checks answers against the document and records which (operation, status) were seen."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], set[int]] = defaultdict(set)

    def __call__(self, method: str, target: str, answer: Response, sent: dict[str, str] | None = None) -> Response:
        path = urlsplit(target).path
        operation = DOC["paths"][path][method.lower()]
        self.seen[(method, path)].add(answer.status)
        assert str(answer.status) in operation["responses"], (method, target, answer)
        response = operation["responses"][str(answer.status)]
        response = _lookup(response["$ref"]) if "$ref" in response else response
        declared = set(response.get("headers", {}))
        for name in KIT_HEADERS:
            if name in answer.headers:
                assert name in declared, f"{method} {path} {answer.status}: {name} is not documented"
                schema = _lookup(response["headers"][name]["$ref"])["schema"]
                Draft202012Validator(schema).validate(answer.headers[name])
        params = {_lookup(p["$ref"])["name"] for p in operation.get("parameters", [])}
        for name in sent or {}:
            if name != "Content-Type":
                assert name in params, f"{method} {path}: the request header {name} is not documented"
        content = response.get("content")
        if method == "HEAD" or answer.status in (204, 304):
            assert answer.body is None
        else:
            assert content is not None, (method, path, answer.status)
            schema = content["application/json"]["schema"]
            Draft202012Validator({"$ref": "urn:api" + schema["$ref"]}, registry=REGISTRY).validate(answer.body)
        return answer


def test_the_document_is_valid_openapi_3_1_and_covers_every_route() -> None:
    validate(DOC)
    for path, methods in _UserRoutes.routes.items():
        for method in methods:
            assert method.lower() in DOC["paths"][path], (method, path)
    assert "text/html" in DOC["paths"]["/"]["get"]["responses"]["200"]["content"]
    for header in ("Kafka-Min-Position", "Prefer", "If-None-Match", "If-Match", "Idempotency-Key"):
        assert header in DOC["components"]["parameters"]


@pytest.fixture
def server(bootstrap_servers: str, topic: str) -> Iterator[ServerHandle]:
    with serve_in_thread(Kafka(bootstrap_servers), topic=topic) as handle:
        yield handle


@pytest.mark.broker
def test_live_answers_agree_with_the_document(server: ServerHandle) -> None:
    check = Checker()
    client = UserClient(server.url, read_your_writes=False)

    def ask(method: str, target: str, body: Any = None, headers: dict[str, str] | None = None) -> Response:
        return check(method, target, client.request(method, target, body, headers), headers)

    served = UserClient(server.url).request("GET", "/openapi.json")
    assert served.body == DOC
    check("GET", "/openapi.json", served)
    ada = "/user?email=ada@example.com"
    put = ask("PUT", ada, {"name": "Ada"}, {"Idempotency-Key": '"k-1"'})
    assert put.status == 201
    assert ask("PUT", ada, {"name": "Ada"}, {"Idempotency-Key": '"k-1"'}).headers["Idempotent-Replayed"] == "true"
    assert ask("PUT", ada, {"name": "Eve"}, {"Idempotency-Key": '"k-1"'}).status == 422
    assert ask("PUT", "/user", {"email": "ada@example.com", "name": "Ada L"}).status == 200
    assert ask("PUT", ada, {"name": "x"}, {"If-Match": put.headers["ETag"]}).status == 412
    assert ask("PUT", ada, b"{bad").status == 400
    assert ask("PUT", ada, {"name": "x"}, {"Idempotency-Key": '""'}).status == 400
    etag = ask("GET", ada).headers["ETag"]
    assert ask("HEAD", ada).status == 200
    assert ask("GET", ada, headers={"If-None-Match": etag}).status == 304
    assert ask("GET", ada, headers={"If-None-Match": etag, "Prefer": "wait=1"}).status == 304
    assert ask("GET", ada, headers={"Kafka-Min-Position": "0-0,1-0", "Prefer": "wait=0"}).status in (200, 503)
    assert ask("GET", ada, headers={"Kafka-Min-Position": "9-0"}).status == 400
    assert ask("GET", "/user?email=nobody@example.com").status == 404
    assert ask("GET", "/user").status == 400
    listed = ask("GET", "/users")
    assert ask("GET", "/users", headers={"If-None-Match": listed.headers["ETag"]}).status == 304
    assert ask("HEAD", "/users").status == 200
    assert ask("GET", "/users?partition=1").status == 200
    assert ask("GET", "/users?partition=7").status == 400
    for path in ("/groupinfo", "/readyz", "/healthz"):
        assert ask("GET", path).status == 200
    assert ask("HEAD", "/readyz").status == 200

    server.service.consumer.pause()  # a write in flight: a retry is 409; a position not reached is 503
    slow: list[Response] = []
    thread = threading.Thread(target=lambda: slow.append(client.request("PUT", ada, {"name": "Slow"},
                                                                         {"Idempotency-Key": '"k-2"'})))
    thread.start()
    time.sleep(0.5)
    assert ask("PUT", ada, {"name": "Slow"}, {"Idempotency-Key": '"k-2"'}).status == 409
    behind = UserClient(server.url).at(server.url)
    behind.session.wrote(0, 10**9)
    assert check("GET", ada, behind.get("ada@example.com", wait=0)).status == 503
    server.service.consumer.resume()
    thread.join()
    check("PUT", ada, slow[0])
    assert ask("DELETE", ada, headers={"Idempotency-Key": "del-1"}).status == 204
    assert ask("DELETE", ada, headers={"Idempotency-Key": "del-1"}).headers["Idempotent-Replayed"] == "true"
    assert ask("DELETE", ada).status == 404
    assert ask("GET", ada, headers={"Kafka-Min-Position": "x"}).status == 400

    expected = {
        ("GET", "/user"): {200, 304, 400, 404, 503}, ("PUT", "/user"): {200, 201, 400, 409, 412, 422},
        ("DELETE", "/user"): {204, 404}, ("GET", "/users"): {200, 304, 400},
    }
    for operation, statuses in expected.items():
        assert statuses <= check.seen[operation], (operation, check.seen[operation])


@pytest.mark.broker
@pytest.mark.slow
def test_a_group_instances_redirects_and_groupinfo_agree_with_the_document(bootstrap_servers: str, topic: str) -> None:
    kafka = Kafka(bootstrap_servers)
    group = f"openapi-{uuid.uuid4().hex[:8]}"
    handles = [serve_in_thread(kafka, topic=topic, group=group, instance=name, wait_ready=30) for name in "ab"]
    try:
        deadline = time.monotonic() + 60
        while sorted(p for h in handles for p in h.service.owned) != [0, 1, 2]:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        check = Checker()
        email = next(f"u{i}@example.com" for i in range(100)
                     if partition_for(f"u{i}@example.com", 3) in handles[1].service.owned)  # type: ignore[attr-defined]
        direct = UserClient(handles[0].url, follow_redirects=False)
        for method, body in (("GET", None), ("PUT", {"name": "U"}), ("DELETE", None)):
            answer = check(method, f"/user?email={email}", direct.request(method, f"/user?email={email}", body))
            assert answer.status == 307
            assert answer.headers["Location"] == f"{handles[1].url}/user?email={email}"
        partition = handles[1].service.owned[0]  # type: ignore[attr-defined]
        assert check("GET", "/users", direct.request("GET", f"/users?partition={partition}")).status == 307
        info = check("GET", "/groupinfo", direct.groupinfo())
        assert info.body["group"] == group
        assert check("GET", "/users", direct.users()).status == 200
    finally:
        stop_all(handles)
