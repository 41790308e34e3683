"""Tables the course shows that are not views of the log: answers per instance, keys to partitions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..client import Response
from ..partitioning import crc32_partition, partition_for

__all__ = ["answers_frame", "partitions_frame"]


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


def partitions_frame(written: pd.DataFrame, partitions: int) -> pd.DataFrame:
    """For each written key: where it landed, where murmur2 says, and where CRC32 would have put it.

    ``written`` is a table from :func:`write_users` or :func:`write_history` (``key`` and
    ``partition`` columns).
    """
    frame = written[["key", "partition"]].rename(columns={"partition": "landed in"})
    frame["murmur2"] = [partition_for(k, partitions) for k in frame["key"]]
    frame["CRC32 (librdkafka default)"] = [crc32_partition(k, partitions) for k in frame["key"]]
    return frame.reset_index(drop=True)
