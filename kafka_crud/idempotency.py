"""Safe retries: ``Idempotency-Key`` on ``PUT`` and ``DELETE``.

A client that sent a ``PUT`` and got no answer (a timeout, a dropped connection) cannot tell
whether it was written. Retrying it appends a second record: at best a duplicate version, at
worst one that overwrites what someone else wrote in between. With a key, the retry is safe
(the IETF HTTPAPI draft "The Idempotency-Key HTTP Header Field"):

    Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"    (an sf-string; a bare token works too)

- the first request with a key is carried out, and its record carries the key, a fingerprint of
  the request and the status it answered, as **record headers**;
- a retry with the same key and the same request (method, email, body, If-Match) answers what
  the first answered, marked ``Idempotent-Replayed: true``, and writes nothing;
- the same key with a different request: 422; while the first is still in flight: 409.

Because the key is in the log, an instance rebuilt from the topic knows it again, and so does
every other instance once it has applied the first write. An instance that does not know a key
first catches up with the end of the key's partition, so that a retry after a lost answer
finds the first write even when it lands on another instance than the first attempt.

The window is bounded: a key is remembered for :data:`WINDOW_SECONDS` (24 h) after its record
was written, and at most :data:`WINDOW_KEYS` (10,000) keys are held per instance, the most
recently applied ones. A rebuild also knows only the keys whose records are still in the log:
compaction removes a superseded version, with its headers, once ``min.compaction.lag.ms`` has
passed (0 with the kit's teaching settings: set it to the window on a real topic). Requests that
wrote nothing (4xx) are not remembered: a retry is checked afresh.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import IdempotencyKeyInUseError, IdempotencyKeyReusedError, ValidationError
from .records import Position

__all__ = [
    "MAX_KEY_LENGTH",
    "RECORD_FINGERPRINT",
    "RECORD_KEY",
    "RECORD_STATUS",
    "WINDOW_KEYS",
    "WINDOW_SECONDS",
    "IdempotencyIndex",
    "Outcome",
    "fingerprint",
    "outcome_from_headers",
    "parse_idempotency_key",
    "record_headers",
]

#: Record header names.
RECORD_KEY = "idempotency-key"
RECORD_FINGERPRINT = "idempotency-fingerprint"
RECORD_STATUS = "http-status"

#: The longest key accepted, in characters.
MAX_KEY_LENGTH = 255
#: How long a key is remembered after its record was written.
WINDOW_SECONDS = 24 * 3600.0
#: How many keys an instance holds at most.
WINDOW_KEYS = 10_000


def parse_idempotency_key(values: list[str]) -> str | None:
    """The ``Idempotency-Key`` header's key, None without one; :class:`ValidationError` when malformed.

    An sf-string (RFC 8941: ``"..."``, printable ASCII, ``\\"`` and ``\\\\`` escaped), or a bare
    token of visible ASCII; 1 to :data:`MAX_KEY_LENGTH` characters.
    """
    if not values:
        return None
    if len(values) > 1:
        raise ValidationError(f"Give Idempotency-Key once, not {len(values)} times")
    text = values[0].strip(" \t")
    if text.startswith('"'):
        key = _sf_string(text)
    else:
        key = text
        if any(not 0x21 <= ord(c) <= 0x7E or c in '"\\' for c in key):
            raise ValidationError(
                'Idempotency-Key must be a quoted string like "8e03978e-40d5" or a token of visible '
                "ASCII characters (no spaces, quotes or backslashes)"
            )
    if not key:
        raise ValidationError('Idempotency-Key is empty: send a unique string, like a UUID: "8e03978e-40d5-43e8"')
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationError(f"Idempotency-Key is {len(key)} characters long: at most {MAX_KEY_LENGTH}")
    return key


def _sf_string(text: str) -> str:
    bad = ValidationError('Idempotency-Key: a quoted key must be one string of printable ASCII, like "a-1"')
    if len(text) < 2 or not text.endswith('"'):
        raise bad
    out: list[str] = []
    chars = iter(text[1:-1])
    for char in chars:
        if not 0x20 <= ord(char) <= 0x7E or char == '"':
            raise bad
        if char == "\\":
            escaped = next(chars, "")
            if escaped not in ('"', "\\"):
                raise bad
            char = escaped
        out.append(char)
    return "".join(out)


def fingerprint(method: str, email: str, body: bytes | None, if_match: str | None) -> str:
    """What makes two requests "the same request": method, email, canonical body and If-Match."""
    canonical = json.dumps([method, email, None if body is None else body.decode(), if_match])
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a request with a key answered: enough to answer a retry the same way."""

    fingerprint: str
    """The :func:`fingerprint` of the request."""
    status: int
    """The status it answered: 201 or 200 for a PUT, 204 for a DELETE."""
    position: Position
    """Where its record is: the answer's ETag, Kafka-Partition and Kafka-Offset."""
    written: float
    """When the record was written (seconds since the epoch), for the window."""


def record_headers(key: str, outcome_fingerprint: str, status: int) -> list[tuple[str, str | bytes | None]]:
    """The record headers a write with ``key`` carries."""
    return [(RECORD_KEY, key), (RECORD_FINGERPRINT, outcome_fingerprint), (RECORD_STATUS, str(status))]


def outcome_from_headers(
    headers: list[tuple[str, bytes | None]], position: Position, timestamp_ms: int
) -> tuple[str, Outcome] | None:
    """The key and outcome a record's headers carry, or None when it carries no (valid) key."""
    found = {name: value for name, value in headers if name in (RECORD_KEY, RECORD_FINGERPRINT, RECORD_STATUS)}
    key, fp, status = found.get(RECORD_KEY), found.get(RECORD_FINGERPRINT), found.get(RECORD_STATUS)
    if not key or not fp or not status or not status.isdigit():
        return None
    return key.decode("utf-8", "replace"), Outcome(fp.decode("ascii", "replace"), int(status), position,
                                                   timestamp_ms / 1000)


class IdempotencyIndex:
    """The keys an instance knows (from the log it applied and its own writes), and those in flight.

    Thread-safe. Bounded by ``window`` seconds and ``max_keys`` keys (see the module's doc).
    """

    def __init__(
        self, *, window: float = WINDOW_SECONDS, max_keys: int = WINDOW_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._known: OrderedDict[str, Outcome] = OrderedDict()
        self._in_flight: dict[str, str] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._known)

    def remember(self, key: str, outcome: Outcome) -> None:
        """Record ``key``'s outcome; the first record of a key wins over a later one."""
        if self._clock() - outcome.written > self.window:
            return
        with self._lock:
            known = self._known.get(key)
            if known is not None and known.position != outcome.position:
                return  # a second record with this key (written where the first was not known yet)
            self._known[key] = outcome
            self._known.move_to_end(key)
            while len(self._known) > self.max_keys:
                self._known.popitem(last=False)

    def outcomes(self) -> list[tuple[str, Outcome]]:
        """Every key known and its outcome, the least recently applied first (a snapshot's copy)."""
        with self._lock:
            return list(self._known.items())

    def lookup(self, key: str) -> Outcome | None:
        """The outcome of ``key`` within the window, or None."""
        with self._lock:
            outcome = self._known.get(key)
            if outcome is not None and self._clock() - outcome.written > self.window:
                del self._known[key]
                return None
            return outcome

    def drop_partition(self, partition: int) -> None:
        """Forget the keys of a partition this instance no longer holds (partitioned design)."""
        with self._lock:
            for key in [k for k, o in self._known.items() if o.position.partition == partition]:
                del self._known[key]

    @contextmanager
    def in_flight(self, key: str, request_fingerprint: str) -> Iterator[None]:
        """Hold ``key`` while its request is carried out: another request with it gets 409 (or 422)."""
        with self._lock:
            current = self._in_flight.get(key)
            if current is not None:
                if current != request_fingerprint:
                    raise IdempotencyKeyReusedError(
                        "This Idempotency-Key is in use by another request (a different method, user, "
                        "body or If-Match): use a new key for a new request"
                    )
                raise IdempotencyKeyInUseError(
                    "A request with this Idempotency-Key is still being carried out: retry once it has answered"
                )
            self._in_flight[key] = request_fingerprint
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def check(self, key: str, request_fingerprint: str) -> Outcome | None:
        """The outcome to replay for a retry of this request, None for a new key; 422 for another request's key."""
        outcome = self.lookup(key)
        if outcome is not None and outcome.fingerprint != request_fingerprint:
            raise IdempotencyKeyReusedError(
                f"This Idempotency-Key was used for a different request (answered {outcome.status}, "
                f"record {outcome.position.partition}-{outcome.position.offset}): use a new key for a new request"
            )
        return outcome
