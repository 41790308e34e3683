"""Exercise checks: each looks at the topic or an answer and returns a :class:`Check`, shown as
one line: ✅, ❌ with a hint, or ✏️ while the answer is still ``...``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..client import Response, UserClient
from ..compaction import compact
from ..connection import Kafka, KafkaLike
from ..partitioning import partition_for
from ..producer import UserProducer
from ..records import User, classify
from ..service import UserService

__all__ = [
    "Check",
    "check_compaction",
    "check_counts",
    "check_group_owner",
    "check_if_match",
    "check_partition",
    "check_tombstone",
]


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


def check_tombstone(kafka: KafkaLike, topic: str, email: str) -> Check:
    """Exercise: delete ``email`` the Kafka way. Looks at the latest record of that key in the log."""
    latest = [r for r in Kafka.of(kafka).read_log(topic) if r.key == email.encode()]
    if not latest:
        return Check(False, f"There is no record with key {email!r} in {topic!r}: was the key spelled right?")
    record = latest[-1]
    if record.kind == "tombstone":
        return Check(
            True,
            f"The latest record of {email} (offset {record.offset}) is a tombstone: every consumer that applies "
            "it drops the key from its table. The log still holds the key's earlier records, and the tombstone "
            "carries the key, until the cleaner removes them.",
        )
    if record.kind == "empty value":
        return Check(
            False,
            f"Offset {record.offset} is an empty value (b''), not a tombstone: compaction keeps it, as the "
            "key's latest record, for ever. Send None as the value.",
        )
    return Check(None, f"The latest record of {email} is still a user (offset {record.offset}). {_NOT_YET}")


def check_partition(prediction: object, email: str, producer: UserProducer) -> Check:
    """Exercise: predict the partition of ``email``; the check writes the user to ``producer``'s
    topic and compares with where Kafka put it."""
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
    service.wait_caught_up()
    records, users = len(service.kafka.read_log(service.topic)), len(service.store)
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


def check_compaction(answer: object, kafka: KafkaLike, topic: str) -> Check:
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
    kafka = Kafka.of(kafka)
    records = kafka.read_log(topic)
    status = {(r.partition, r.offset): s for r, (s, _) in zip(records, classify(records), strict=True)}
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
    removed = sorted((r.partition, r.offset) for r in compact(kafka, topic).removed)
    if set(removed) == guess:
        return Check(True, f"The cleaner just removed {removed}: the superseded records, and nothing else.")
    return Check(
        True,
        f"Right for a first pass; the cleaner just removed {removed}: also tombstones an earlier pass had "
        "kept, their delete.retention.ms over.",
    )
