"""Demo data: fixed users and a fixed history of writes, so every run of a notebook writes the
same records to the same partitions at the same offsets."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ..producer import UserProducer
from ..records import User

__all__ = ["DEMO_HISTORY", "DEMO_USERS", "write_history", "write_users"]

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
    rows: list[dict[str, object]] = []
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
    # object, not pandas' string dtype: a tombstone's value shows as None (not NaN).
    frame["value"] = pd.Series([row["value"] for row in rows], dtype=object)
    return frame
