"""Mechanics for the course notebooks that belong to no other module.

- **The setup check**: :func:`preflight` and the one line of notebook 00.
- **Demo data**: fixed users and a fixed history of writes, so every run of a notebook writes
  the same records to the same partitions at the same offsets.
- **Tables**: small DataFrames of writes, records and users, without timestamps.
- **Keys to partitions**: Kafka's murmur2 in Python, the partition a key goes to, and the one
  librdkafka's default partitioner (CRC32) would choose instead.
- **The consumer-group store**: :class:`GroupStoreConsumer`, the wrong way to rebuild the table
  (each instance of a group sees only its share of the partitions), beside
  :class:`kafka_crud.StoreConsumer`, the fix (every instance reads every partition).
- **Exercise checks**: functions that look at the topic or an answer and return a
  :class:`Check`, shown as one line: ✅, ❌ with a hint, or ✏️ while the answer is still ``...``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from . import views
from .client import Response, UserClient
from .compaction import compact
from .config import KAFKA_VERSION, bootstrap_servers_from_env, client_config
from .consumer import end_offsets, read_log
from .errors import KafkaCrudError, NotReadyError
from .producer import UserProducer
from .records import LogRecord, Position, User, classify
from .service import UserService
from .store import StoredUser, UserStore
from .topics import DEFAULT_TOPIC, admin_client, delete_topic, partition_count, reset_topic

__all__ = [
    # the setup check
    "preflight",
    "success_line",
    # demo data
    "DEMO_HISTORY",
    "DEMO_USERS",
    "write_history",
    "write_users",
    # tables
    "answers_frame",
    "records_frame",
    "users_frame",
    # keys to partitions
    "crc32_partition",
    "murmur2",
    "partition_for",
    "partitions_frame",
    # consumer groups
    "GroupStoreConsumer",
    "start_group",
    # instances
    "stop_all",
    "wait_caught_up",
    # exercise checks
    "Check",
    "check_compaction",
    "check_counts",
    "check_group_owner",
    "check_if_match",
    "check_partition",
    "check_tombstone",
]

log = logging.getLogger(__name__)

# -- the setup check ----------------------------------------------------------------------------

_PREFLIGHT_TOPIC = "setup-check"


def preflight(bootstrap_servers: str | None = None, *, topic: str = _PREFLIGHT_TOPIC) -> pd.DataFrame:
    """Check the Python side and a round trip through the broker; one row per check, stopping at the first failure.

    The broker part creates ``topic``, writes a user, reads it back and deletes the topic.
    """
    rows: list[tuple[str, str]] = []

    def record(check: str, ok: bool, hint: str = "") -> bool:
        rows.append((check, "✅" if ok else f"❌ {hint}"))
        return ok

    def frame() -> pd.DataFrame:
        return pd.DataFrame(rows, columns=["check", "result"])

    record("Python 3.11 or newer", sys.version_info >= (3, 11), "install Python 3.11+ and `make setup` again")
    servers = bootstrap_servers or bootstrap_servers_from_env()
    if not record(
        "KAFKA_BOOTSTRAP_SERVERS is set", servers is not None,
        "start JupyterLab with `kafka-crud lab` (or `make lab`), or set it to your broker's host:port",
    ):
        return frame()
    try:
        brokers = admin_client(servers).list_topics(timeout=15).brokers
    except KafkaException as exc:
        brokers = {}
        log.warning("No answer from %s: %s", servers, exc)
    if not record(
        "a broker answers", bool(brokers), "no broker answered within 15 s: is it running, and is the address right?"
    ):
        return frame()
    try:
        reset_topic(servers, topic, partitions=1)
        record("create a compacted topic", True)
        with UserProducer(servers, topic=topic) as producer:
            position = producer.put(User("setup@example.com", "Setup Check"))
        records = read_log(servers, topic)
        back = [User.from_json(r.value) for r in records if r.offset == position.offset and r.value]
        record("write a user and read it back", back == [User("setup@example.com", "Setup Check")],
               "the record read back differs from the one written")
        delete_topic(servers, topic)
        record("delete the topic", True)
    except (KafkaCrudError, KafkaException) as exc:
        record("round trip through the broker", False, str(exc))
    return frame()


def success_line(checks: pd.DataFrame) -> str:
    """Notebook 00's verdict on :func:`preflight`'s table."""
    failed = checks[checks["result"] != "✅"]
    if len(failed):
        return f"❌ {failed.iloc[0]['check']}: {failed.iloc[0]['result'][2:]}"
    from . import __version__

    return f"✅ kafka_crud {__version__}, Apache Kafka {KAFKA_VERSION} broker reachable"


# -- demo data ---------------------------------------------------------------------------------

#: Twelve users. With 3 partitions their keys hash to partitions 0, 1 and 2 (6, 2 and 4 users).
DEMO_USERS: tuple[User, ...] = (
    User("ada@example.com", "Ada Lovelace"),
    User("alan@example.com", "Alan Turing"),
    User("grace@example.com", "Grace Hopper"),
    User("edsger@example.com", "Edsger Dijkstra"),
    User("barbara@example.com", "Barbara Liskov"),
    User("donald@example.com", "Donald Knuth"),
    User("margaret@example.com", "Margaret Hamilton"),
    User("ken@example.com", "Ken Thompson"),
    User("frances@example.com", "Frances Allen"),
    User("john@example.com", "John McCarthy"),
    User("radia@example.com", "Radia Perlman"),
    User("tim@example.com", "Tim Berners-Lee"),
)

#: The article's first session as writes: (email, name), where a name of None deletes the user.
#: Seven records, four users at the end: Ada updated once, Alan deleted.
DEMO_HISTORY: tuple[tuple[str, str | None], ...] = (
    ("ada@example.com", "Ada"),
    ("alan@example.com", "Alan Turing"),
    ("grace@example.com", "Grace Hopper"),
    ("ada@example.com", "Ada Lovelace"),
    ("edsger@example.com", "Edsger Dijkstra"),
    ("alan@example.com", None),
    ("barbara@example.com", "Barbara Liskov"),
)


def write_users(producer: UserProducer, users: Iterable[User] = DEMO_USERS) -> pd.DataFrame:
    """Write each user, one at a time, and show where each landed."""
    return write_history(producer, [(u.email, u.name) for u in users])


def write_history(
    producer: UserProducer, history: Iterable[tuple[str, str | None]] = DEMO_HISTORY
) -> pd.DataFrame:
    """Write (email, name) pairs in order; a name of None writes a tombstone. One row per write.

    Each write waits for its acknowledgement, so on a fresh topic the offsets are the same on
    every run.
    """
    rows = []
    for email, name in history:
        if name is None:
            position = producer.delete(email)
            rows.append({"write": "delete", "key": email, "value": None})
        else:
            user = User(email, name)
            position = producer.put(user)
            rows.append({"write": "put", "key": email, "value": user.to_json().decode()})
        rows[-1].update(partition=position.partition, offset=position.offset)
    frame = pd.DataFrame(rows, columns=["write", "key", "value", "partition", "offset"])
    frame["value"] = _object(row["value"] for row in rows)
    return frame


# -- tables ------------------------------------------------------------------------------------


def _object(values: Iterable[str | None]) -> pd.Series:
    # object, not pandas' string dtype: a tombstone's value shows as None (not NaN), an empty value as "".
    return pd.Series(list(values), dtype=object)


def records_frame(records: Sequence[LogRecord]) -> pd.DataFrame:
    """The log as a table, one row per record, by partition then offset, with the columns a
    first lesson needs (:func:`kafka_crud.views.records_frame` has them all).

    ``kind`` tells a put, a tombstone (null value) and an empty value (``b""``) apart;
    ``status`` says whether the record is live, superseded or a tombstone.
    """
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    return views.records_frame(ordered, timestamps=False)[["partition", "offset", "key", "value", "kind", "status"]]


def users_frame(users: Iterable[StoredUser]) -> pd.DataFrame:
    """Users as a store holds them, by email: name, and where the latest version is (its ETag)."""
    return views.users_frame(sorted(users, key=lambda s: s.user.email))


def answers_frame(emails: Iterable[str], partitions: int, instances: dict[str, Any]) -> pd.DataFrame:
    """What each instance answers to ``GET /user?email=`` for each email: 200 or 404.

    ``instances`` maps a name to anything with ``get(email)``: a :class:`UserClient` (its HTTP
    status is shown) or a store-like object (a user is 200, None is 404).
    """
    rows = []
    for email in emails:
        row: dict[str, Any] = {"email": email, "partition": partition_for(email, partitions)}
        for name, instance in instances.items():
            answer = instance.get(email)
            row[name] = answer.status if isinstance(answer, Response) else (404 if answer is None else 200)
        rows.append(row)
    return pd.DataFrame(rows).set_index("email")


# -- keys to partitions -------------------------------------------------------------------------

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: the 32-bit MurmurHash2 of ``data``, as a signed Java int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = data[length - length % 4 :]
    if tail:  # Java's switch falls through: byte i of the tail goes to bits 8*i
        for shift, byte in enumerate(tail):
            h ^= byte << (8 * shift)
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's Java producer (and the kit's, ``murmur2_random``) sends ``key`` to.

    ``murmur2(key)`` made positive (top bit cleared), modulo the partition count.
    """
    return (murmur2(_key_bytes(key)) & 0x7FFFFFFF) % partitions


def crc32_partition(key: str | bytes, partitions: int) -> int:
    """The partition librdkafka's *default* partitioner (``consistent_random``) would choose: CRC32."""
    return zlib.crc32(_key_bytes(key)) % partitions


def partitions_frame(written: pd.DataFrame, partitions: int) -> pd.DataFrame:
    """For each written key: where it landed, where murmur2 says, and where CRC32 would have put it.

    ``written`` is a table from :func:`write_users` or :func:`write_history` (``key`` and
    ``partition`` columns).
    """
    frame = written[["key", "partition"]].rename(columns={"partition": "landed in"})
    frame["murmur2"] = [partition_for(k, partitions) for k in frame["key"]]
    frame["CRC32 (librdkafka default)"] = [crc32_partition(k, partitions) for k in frame["key"]]
    return frame.reset_index(drop=True)


# -- the consumer-group store (the wrong way) ---------------------------------------------------


class GroupStoreConsumer:
    """One instance of a deployment that rebuilds its store through a consumer group: the wrong way.

    It *subscribes* to the topic with a ``group.id``, as a worker that must process each record
    once would. The group coordinator then splits the partitions between the group's members,
    so each instance rebuilds only the users whose keys hash to its partitions and answers
    "no such user" for the others. :class:`kafka_crud.StoreConsumer` is the fix: it *assigns*
    itself every partition and belongs to no group.

    On every rebalance the instance starts a fresh store from the beginning of the partitions it
    was given (it commits no offsets), so what it knows is exactly its share.

    ``name`` is also the member's ``group.instance.id`` (static membership). With the range
    assignor, members are ordered by that id: two instances named ``A`` and ``B`` on three
    partitions always get [0, 1] and [2]. A static member leaves no LeaveGroup on close: the
    group hands its partitions on only after ``session.timeout.ms``.
    """

    def __init__(
        self,
        name: str,
        bootstrap_servers: str | None = None,
        *,
        topic: str = DEFAULT_TOPIC,
        group_id: str,
    ) -> None:
        self.name = name
        self.topic = topic
        self.group_id = group_id
        self._servers = bootstrap_servers
        self._lock = threading.Lock()
        self._store = UserStore(topic)
        self._assignment: list[int] = []
        self._at_end: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """The exception that ended the consumer thread, if any."""

    @property
    def store(self) -> UserStore:
        """The users this instance knows: those of its partitions only."""
        with self._lock:
            return self._store

    @property
    def assignment(self) -> list[int]:
        """The partitions the group gave this instance."""
        with self._lock:
            return list(self._assignment)

    @property
    def caught_up(self) -> bool:
        """True once every partition of the current assignment has been read to its end."""
        with self._lock:
            return bool(self._assignment) and self._at_end >= set(self._assignment)

    def get(self, email: str) -> StoredUser | None:
        """What this instance's ``GET /user?email=`` would answer: the user, or None (a 404)."""
        return self.store.get(email)

    def start(self) -> GroupStoreConsumer:
        consumer = Consumer(
            client_config(
                self._servers,
                **{
                    "group.id": self.group_id,
                    "group.instance.id": self.name,
                    "group.protocol": "classic",
                    "partition.assignment.strategy": "range",
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 500,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 100,
                    "logger": logging.getLogger("kafka_crud.librdkafka"),
                },
            )
        )
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), name=f"kafka-crud-group-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._store = UserStore(self.topic)
            self._assignment = sorted(tp.partition for tp in partitions)
            self._at_end = set()
        consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assignment = []
            self._at_end = set()

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                err = msg.error()
                if err is None:
                    self.store.apply_batch(msg.partition(), [(msg.key(), msg.value(), msg.offset())])
                elif err.code() == KafkaError._PARTITION_EOF:
                    self.store.advance(msg.partition(), msg.offset())
                    with self._lock:
                        self._at_end.add(msg.partition())
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    log.warning("Group consumer %s: %s", self.name, err.str())
        except BaseException as exc:  # noqa: BLE001 - kept for start_group() to report
            self.error = exc
            log.exception("Group consumer %s stopped", self.name)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> GroupStoreConsumer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<GroupStoreConsumer {self.name} partitions={self.assignment} users={len(self.store)}>"


def start_group(
    names: Sequence[str] = ("A", "B"),
    bootstrap_servers: str | None = None,
    *,
    topic: str = DEFAULT_TOPIC,
    timeout: float = 60.0,
) -> list[GroupStoreConsumer]:
    """Start one :class:`GroupStoreConsumer` per name in a new consumer group; return them settled.

    Settled: the group's assignment covers every partition exactly once, every instance has
    partitions, and every instance has read its partitions to their end.
    """
    partitions = partition_count(bootstrap_servers, topic)
    if partitions is None:
        raise NotReadyError(f"Topic {topic!r} does not exist: create it first")
    group_id = f"user-service-{uuid.uuid4().hex[:8]}"
    instances = [GroupStoreConsumer(n, bootstrap_servers, topic=topic, group_id=group_id) for n in names]
    for instance in instances:
        instance.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            failed = [i for i in instances if i.error is not None]
            if failed:
                raise NotReadyError(f"Instance {failed[0].name} failed: {failed[0].error}")
            owned = [p for i in instances for p in i.assignment]
            if (
                sorted(owned) == list(range(partitions))
                and all(i.assignment or len(instances) > partitions for i in instances)
                and all(i.caught_up or not i.assignment for i in instances)
            ):
                return instances
            if time.monotonic() > deadline:
                raise NotReadyError(
                    f"The consumer group did not settle within {timeout:.0f} s: "
                    + ", ".join(f"{i.name} has {i.assignment}" for i in instances)
                )
            time.sleep(0.1)
    except BaseException:
        stop_all(instances)
        raise


def stop_all(things: Iterable[Any]) -> None:
    """Stop every consumer, service or server handle given (anything with ``stop()``)."""
    for thing in things:
        thing.stop()


def wait_caught_up(service: UserService, timeout: float = 30.0) -> dict[int, int]:
    """Wait until ``service``'s store has applied every record now in its topic; return its applied offsets.

    For records written by someone else (another instance, a plain producer): a write through
    ``service`` itself is applied before it returns.
    """
    probe = Consumer(client_config(service.bootstrap_servers, **{
        "group.id": f"kafka-crud-probe-{uuid.uuid4().hex[:8]}",
        "logger": logging.getLogger("kafka_crud.librdkafka"),
    }))
    try:
        targets = end_offsets(probe, service.topic)
    finally:
        probe.close()
    deadline = time.monotonic() + timeout
    for partition, (_, end) in targets.items():
        if end > 0:
            service.store.wait_for(Position(service.topic, partition, end - 1), max(0.0, deadline - time.monotonic()))
    return service.store.applied()


# -- exercise checks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The verdict on an exercise: ``ok`` is None while the answer is still ``...``."""

    ok: bool | None
    """True: right; False: wrong (the message says why); None: not answered yet."""
    message: str
    """One line for the learner."""

    def __repr__(self) -> str:
        mark = {True: "✅", False: "❌", None: "✏️"}[self.ok]
        return f"{mark} {self.message}"

    def __bool__(self) -> bool:
        return bool(self.ok)


def _unanswered(*answers: object) -> bool:
    return any(a is ... for a in answers)


_NOT_YET = "Not answered yet: replace the ... with your answer and run the cell again."


def check_tombstone(topic: str, email: str, bootstrap_servers: str | None = None) -> Check:
    """Exercise: delete ``email`` the Kafka way. Looks at the latest record of that key in the log."""
    latest = [r for r in read_log(bootstrap_servers, topic) if r.key == email.encode()]
    if not latest:
        return Check(False, f"There is no record with key {email!r} in {topic!r}: was the key spelled right?")
    record = latest[-1]
    if record.kind == "tombstone":
        return Check(
            True, f"The latest record of {email} (offset {record.offset}) is a tombstone: the key is deleted."
        )
    if record.kind == "empty value":
        return Check(
            False,
            f"Offset {record.offset} is an empty value (b''), not a tombstone: compaction keeps it for ever. "
            "Send None as the value.",
        )
    return Check(None, f"The latest record of {email} is still a user (offset {record.offset}). {_NOT_YET}")


def check_partition(prediction: object, email: str, topic: str, producer: UserProducer) -> Check:
    """Exercise: predict the partition of ``email``; the check writes the user and compares."""
    if _unanswered(prediction):
        return Check(None, _NOT_YET)
    position = producer.put(User(email, email.split("@")[0].title()))
    if prediction == position.partition:
        return Check(True, f"{email} landed in partition {position.partition}, as you predicted.")
    return Check(
        False,
        f"{email} landed in partition {position.partition}, not {prediction!r}: "
        "positive murmur2 of the key bytes, modulo the partition count.",
    )


def check_counts(answer: object, service: UserService) -> Check:
    """Exercise: (records in the log, users in the table) of ``service``'s topic, against the real numbers."""
    if _unanswered(answer) or (isinstance(answer, tuple) and _unanswered(*answer)):
        return Check(None, _NOT_YET)
    wait_caught_up(service)
    records, users = len(read_log(service.bootstrap_servers, service.topic)), len(service.store)
    if answer == (records, users):
        return Check(True, f"{records} records in the log, {users} users in the table.")
    return Check(
        False,
        f"Not {answer!r}: count every record read_log returns (tombstones and old versions too), "
        "and, for the table, only the latest record of each key that is not a tombstone.",
    )


def check_if_match(answer: object, client: UserClient, email: str, their_name: str) -> Check:
    """Exercise: a PUT that must not overwrite someone else's change (a lost update)."""
    if _unanswered(answer):
        return Check(None, _NOT_YET)
    if not isinstance(answer, Response):
        return Check(False, f"Expected the Response of client.put(...), got {type(answer).__name__}.")
    now = client.get(email).body
    if answer.status == 412:
        kept = isinstance(now, dict) and now.get("name") == their_name
        if kept:
            return Check(True, f"412 Precondition Failed: their change ({their_name!r}) is kept.")
        return Check(False, "412, but their change is gone: did another write overwrite it?")
    if answer.ok:
        return Check(
            False,
            f"{answer.status}: your PUT overwrote {their_name!r}, a lost update. Send the ETag you read as if_match.",
        )
    return Check(False, f"{answer.status} {answer.body}: send a PUT with if_match=<the ETag you read>.")


def check_group_owner(answer: object, email: str, assignment: dict[str, Sequence[int]]) -> Check:
    """Exercise: which instance of a consumer group (``{name: partitions}``) knows ``email``?"""
    if _unanswered(answer):
        return Check(None, _NOT_YET)
    partitions = 1 + max(p for owned in assignment.values() for p in owned)
    partition = partition_for(email, partitions)
    owner = next(name for name, owned in assignment.items() if partition in owned)
    if answer == owner:
        return Check(True, f"{email} is in partition {partition}: only {owner} knows it.")
    return Check(
        False, f"Not {answer!r}: find the partition of {email} with partition_for, then who owns it."
    )


def check_compaction(answer: object, topic: str, bootstrap_servers: str | None = None) -> Check:
    """Exercise: which records, as (partition, offset) pairs, will the next cleaner pass remove?

    A wrong answer gets a hint and leaves the topic as it is, for another try. A right one is
    put to the test: the check runs that pass (:func:`kafka_crud.compact`) and reports what the
    cleaner removed.
    """
    if _unanswered(answer):
        return Check(None, _NOT_YET)
    try:
        guess = {(int(partition), int(offset)) for partition, offset in answer}  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return Check(False, "Answer with a set of (partition, offset) pairs, like {(0, 1), (2, 0)}.")
    records = read_log(bootstrap_servers, topic)
    status = {(r.partition, r.offset): s for r, (s, _) in zip(records, classify(records))}
    superseded = {position for position, s in status.items() if s == "superseded"}
    if guess != superseded:
        tombstones = sorted(p for p in guess if status.get(p) == "tombstone")
        if tombstones:
            hint = (f"{tombstones} hold tombstones: the pass that first sees a tombstone keeps it "
                    "(for delete.retention.ms), so that readers see the delete.")
        elif guess - status.keys():
            hint = f"There are no records at {sorted(guess - status.keys())}: read the log again."
        elif guess - superseded:
            hint = f"{sorted(guess - superseded)} are the latest records of their keys: compaction keeps those."
        else:
            hint = (f"{sorted(superseded - guess)} are missing: each has a later record with the same key "
                    "in its partition.")
        return Check(False, f"Not quite. {hint}")
    removed = sorted((r.partition, r.offset) for r in compact(bootstrap_servers, topic).removed)
    if set(removed) == guess:
        return Check(True, f"The cleaner just removed {removed}: the superseded records, and nothing else.")
    return Check(
        True,
        f"Right for a first pass; the cleaner just removed {removed}: also tombstones an earlier pass had "
        "kept, their delete.retention.ms over.",
    )
