"""Fuzzing the new headers: Kafka-Min-Position, Prefer: wait, If-None-Match and Idempotency-Key.

Hypothesis draws requests with well-formed and malformed values of each header, and a model of
the contract (written here on its own terms) predicts every answer: a malformed header is a 400
that writes nothing, a retry with a key writes nothing and answers as the first, another request
with the key is a 422, a position not reached within wait=0 is a 503. After every batch the
users listed and the end offsets of the topic must be the model's.
"""

from __future__ import annotations

import http.client
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kafka_crud.connection import Kafka
from kafka_crud.server import ServerHandle, serve_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(400)]

EMAILS = ["ada@example.com", "bob@example.com", "eve@example.com", "zoé@example.com"]
NAMES = ["A", "B", "Ünïcode", ""]
PARTITIONS = 3

# -- the contract, restated ------------------------------------------------------------------
_POSITION = re.compile(r'(?:[A-Za-z0-9._-]+:)?("?)([0-9]+)-([0-9]+)\1')


def positions_valid(value: str, topic: str) -> bool:
    elements = [e.strip(" \t") for e in value.split(",") if e.strip(" \t")]
    if not elements or len(elements) > 1000:
        return False
    for element in elements:
        match = _POSITION.fullmatch(element)
        if match is None or (":" in element and element.split(":")[0] != topic):
            return False
        if int(match[2]) >= PARTITIONS or len(match[3]) > 19:
            return False
    return True


def prefer_valid(value: str) -> bool:
    waits = [p.strip() for p in value.split(",") if p.strip().lower().startswith("wait")]
    if not waits:
        return True
    name, _, seconds = waits[0].partition("=")
    return name.strip().lower() == "wait" and seconds.strip().isdigit() and int(seconds) <= 30


def etags_valid(value: str) -> bool:
    if value.strip() == "*":
        return True
    elements = [e.strip() for e in value.split(",") if e.strip()]
    return bool(elements) and all(re.fullmatch(r'(W/)?"[^"]*"', e) for e in elements)


def key_valid(value: str) -> bool:
    text = value.strip()
    if text.startswith('"'):
        return len(text) >= 3 and text.endswith('"') and len(text) - 2 <= 255 and '"' not in text[1:-1]
    return 0 < len(text) <= 255 and all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in text)


@dataclass
class Model:
    topic: str
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # email -> (name, ETag)
    ends: dict[int, int] = field(default_factory=dict)  # partition -> end offset
    keys: dict[str, tuple[tuple[str, str, str | None], int, dict[str, str]]] = field(default_factory=dict)

    def users_etag(self) -> str:
        return '"' + (".".join(f"{p}-{e - 1}" for p, e in sorted(self.ends.items())) or "none") + '"'


# -- requests ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Req:
    method: str
    email: str | None  # None: GET /users
    name: str
    position: str | None  # "REACHED", "UNREACHED" or a literal header value
    prefer: str | None
    inm: str | None  # "CURRENT", "USERS", "STALE" or a literal
    key: str | None  # "NEW", "SAME", "OTHER" or a literal


BAD_POSITIONS = ["", " , ", "x", "1-", "-1", "1--1", "1-1-1", '"1-2', "1-2x", 'W/"1-2"', "\xb2-1", "1 -2",
                 "other:1-2", "3-0", "99999999999-0", "0-" + "9" * 20, "0-1;1-2", ",".join(["0-0"] * 1001)]
BAD_PREFER = ["wait=31", "wait=-1", "wait=x", "wait=1.5", "wait=", "wait", "Wait=99"]
BAD_INM = ["9-9", '"x', "W/x", '"a" "b"', ""]
BAD_KEYS = ['""', "", "k" * 256, '"' + "k" * 256 + '"', "a b", '"unterminated', "caf\xe9", 'x"y']

positions = st.sampled_from([None] * 6 + ["REACHED"] * 3 + ["UNREACHED"] * 2 + BAD_POSITIONS)
prefers = st.sampled_from([None] * 6 + ["wait=0", "respond-async, wait=0", "respond-async", "handling=lenient"]
                          + BAD_PREFER)
inms = st.sampled_from([None] * 6 + ["CURRENT", "CURRENT", "USERS", "STALE", "*", 'W/"0-0", "1-1"'] + BAD_INM)
keys = st.sampled_from([None] * 4 + ["NEW"] * 3 + ["SAME"] * 3 + ["OTHER"] * 2 + BAD_KEYS)


@st.composite
def requests(draw: st.DrawFn) -> Req:
    method = draw(st.sampled_from(["GET"] * 3 + ["GET /users", "PUT", "PUT", "PUT", "DELETE"]))
    email = None if method == "GET /users" else draw(st.sampled_from(EMAILS))
    method = method.split()[0]
    reading = method == "GET"
    return Req(method, email, draw(st.sampled_from(NAMES)),
               draw(positions) if reading else None, draw(prefers) if reading else None,
               draw(inms) if reading else None, None if reading else draw(keys))


def send(
    port: int, method: str, target: str, headers: dict[str, str], body: bytes | None,
) -> tuple[int, Any, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, target)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders(body)
        answer = conn.getresponse()
        raw = answer.read()
        return answer.status, json.loads(raw) if raw else None, dict(answer.getheaders())
    finally:
        conn.close()


@dataclass
class Fuzz:
    server: ServerHandle
    model: Model
    kafka: Kafka
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    def exchange(self, req: Req) -> None:
        model, headers = self.model, {}
        bad = False
        if req.position is not None:
            given: str | None = {"REACHED": ",".join(f"{p}-{e - 1}" for p, e in model.ends.items()),
                                 "UNREACHED": "1-1000000000000"}.get(req.position, req.position)
            if given:  # REACHED before any write gives no position
                headers["Kafka-Min-Position"] = given
                bad |= not positions_valid(given, model.topic)
            elif given is not None and req.position != "REACHED":
                headers["Kafka-Min-Position"] = given
                bad = True
        unreached = req.position == "UNREACHED"
        prefer = "wait=0" if unreached else req.prefer  # an unreachable position: never the 5 s default wait
        if prefer is not None:
            headers["Prefer"] = prefer
            bad |= not prefer_valid(prefer)
        current = model.users.get(req.email or "")
        if req.inm is not None:
            value = {"CURRENT": current[1] if current else '"0-999"', "USERS": model.users_etag(),
                     "STALE": '"0-999999"'}.get(req.inm, req.inm)
            headers["If-None-Match"] = value
            bad |= not etags_valid(value)
            tags = {t.strip().removeprefix("W/") for t in value.split(",")}
        else:
            tags = set()
        request = (req.method, req.email or "", req.name if req.method == "PUT" else None)
        key = None
        if req.key is not None:
            if req.key in ("SAME", "OTHER") and model.keys:
                key = sorted(model.keys)[len(model.keys) // 2]
                if req.key == "SAME":
                    request = model.keys[key][0]
                elif model.keys[key][0] == request:
                    request = (request[0], request[1], (request[2] or "") + "!") if request[0] == "PUT" \
                        else ("PUT", request[1], "other")
            elif req.key in ("SAME", "OTHER", "NEW"):
                key = f"k-{uuid.uuid4().hex}"
            else:
                key = req.key
            headers["Idempotency-Key"] = f'"{key}"' if key.startswith("k-") else key
            bad |= not key_valid(headers["Idempotency-Key"])
        method, email, name = request
        target = "/users" if req.email is None else f"/user?email={quote(email, safe='@')}"
        body = json.dumps({"name": name}).encode() if method == "PUT" else None
        ends_before = dict(model.ends)

        status, answer, got = send(self.port, method, target, headers, body)
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        context = f"{method} {target} {headers} -> {status} {answer}"
        if bad:
            assert status == 400, context
            assert isinstance(answer, dict), context
            assert answer["error"], context
        elif method == "GET":
            self._check_read(req, status, answer, got, unreached, tags, context)
        else:
            self._check_write(method, email, name, key, request, status, got, context)
        if status >= 400 or got.get("Idempotent-Replayed"):
            assert self.kafka.end_offsets(model.topic, range(PARTITIONS)) == {p: ends_before.get(p, 0)
                                                                               for p in range(PARTITIONS)}, context

    def _check_read(self, req: Req, status: int, answer: Any, got: dict[str, str], unreached: bool,
                    tags: set[str], context: str) -> None:
        model = self.model
        if unreached:
            assert status == 503, context
            return
        if req.email is None:
            etag = model.users_etag()
            assert got["ETag"] == etag, context
            if "*" in tags or etag in tags:
                assert status == 304, context
            else:
                assert status == 200, context
                assert answer == [{"email": e, "name": n} for e, (n, _) in
                                  sorted(model.users.items(), key=lambda item: item[0].encode())], context
            return
        current = model.users.get(req.email)
        if current is None:
            assert status == 404, context
        elif "*" in tags or current[1] in tags:
            assert status == 304, context
            assert got["ETag"] == current[1], context
        else:
            assert status == 200, context
            assert answer == {"email": req.email, "name": current[0]}, context

    def _check_write(self, method: str, email: str, name: str | None, key: str | None,
                     request: tuple[str, str, str | None], status: int, got: dict[str, str], context: str) -> None:
        model = self.model
        if key is not None and key in model.keys:
            first, first_status, first_headers = model.keys[key]
            if first == request:
                assert status == first_status, context
                assert got["Idempotent-Replayed"] == "true", context
                assert {h: got[h] for h in first_headers} == first_headers, context
            else:
                assert status == 422, context
            return
        if method == "DELETE" and email not in model.users:
            assert status == 404, context
            return
        expected = 204 if method == "DELETE" else (200 if email in model.users else 201)
        assert status == expected, context
        partition, offset = int(got["Kafka-Partition"]), int(got["Kafka-Offset"])
        assert offset == model.ends.get(partition, 0), context
        model.ends[partition] = offset + 1
        if method == "DELETE":
            del model.users[email]
        else:
            model.users[email] = (name or "", got["ETag"])
        if key is not None:
            model.keys[key] = (request, status, {h: got[h] for h in ("ETag", "Kafka-Partition", "Kafka-Offset")})

    def check_state(self) -> None:
        status, listed, _ = send(self.port, "GET", "/users", {}, None)
        assert status == 200
        assert {u["email"]: u["name"] for u in listed} == {e: n for e, (n, _) in self.model.users.items()}
        ends = self.kafka.end_offsets(self.model.topic, range(PARTITIONS))
        assert ends == {p: self.model.ends.get(p, 0) for p in range(PARTITIONS)}


@pytest.fixture
def fuzz(bootstrap_servers: str, topic: str) -> Iterator[Fuzz]:
    kafka = Kafka(bootstrap_servers)
    with serve_in_thread(kafka, topic=topic) as server:
        yield Fuzz(server, Model(topic), kafka)


def test_fuzzed_headers_follow_the_model(fuzz: Fuzz) -> None:
    @settings(max_examples=200, deadline=None, derandomize=True, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.lists(requests(), min_size=5, max_size=15))
    def run(batch: list[Req]) -> None:
        for req in batch:
            fuzz.exchange(req)
        fuzz.check_state()

    run()
    print(f"\nheader fuzz: {fuzz.sent} requests, statuses {dict(sorted(fuzz.statuses.items()))}, "
          f"{len(fuzz.model.keys)} idempotency keys")
    assert fuzz.sent >= 800
    for status in (200, 201, 204, 304, 400, 404, 422, 503):
        assert fuzz.statuses.get(status, 0) > 5, fuzz.statuses
