"""Notebook 00's setup check: the Python side, the lab's broker, then a round trip through it.

In a lab the kit started (``kafka-crud lab``, Binder), the broker starts beside Jupyter: the
check waits for it while it starts, and when it failed says why and how to retry
(:func:`restart_broker` in a cell, or ``kafka-crud broker`` in a terminal).
"""

from __future__ import annotations

import logging
import sys

import pandas as pd

from ..config import KAFKA_VERSION
from ..connection import Kafka, KafkaLike
from ..errors import KafkaCrudError
from ..lab import restart_broker, wait_for_lab_broker
from ..producer import UserProducer
from ..records import User

__all__ = ["preflight", "restart_broker", "success_line"]

log = logging.getLogger(__name__)

_PREFLIGHT_TOPIC = "setup-check"


def preflight(kafka: KafkaLike = None, *, topic: str = _PREFLIGHT_TOPIC, lab_timeout: float = 120.0) -> pd.DataFrame:
    """Check the Python side and a round trip through the broker; one row per check, stopping at the first failure.

    In a kit lab, waits up to ``lab_timeout`` s for its broker to start. The broker part creates
    ``topic``, writes a user, reads it back and deletes the topic.
    """
    rows: list[tuple[str, str]] = []

    def record(check: str, ok: bool, hint: str = "") -> bool:
        rows.append((check, "✅" if ok else f"❌ {hint}"))
        return ok

    def frame() -> pd.DataFrame:
        return pd.DataFrame(rows, columns=["check", "result"])

    record("Python 3.11 or newer", sys.version_info >= (3, 11), "install Python 3.11+ and `make setup` again")
    try:
        connection = Kafka.of(kafka)
    except KafkaCrudError as exc:
        record("KAFKA_BOOTSTRAP_SERVERS is set", False, str(exc))
        return frame()
    record("KAFKA_BOOTSTRAP_SERVERS is set", True)
    lab = wait_for_lab_broker(lab_timeout) if kafka is None else None
    try:
        connection.ping()
    except KafkaCrudError as exc:
        if lab is not None and lab.state == "failed":
            record("the lab's broker started", False, f"{lab.error} {lab.retry_hint()}")
        elif lab is not None and lab.state == "starting":
            record("the lab's broker started", False,
                   f"still starting after {lab_timeout:.0f} s: run this cell again in a minute. {lab.retry_hint()}")
        else:
            record("a broker answers", False, str(exc))
        return frame()
    if lab is not None:
        record("the lab's broker started", True)
    record("a broker answers", True)
    try:
        connection.reset_topic(topic, partitions=1)
        record("create a compacted topic", True)
        with UserProducer(connection, topic=topic) as producer:
            position = producer.put(User("setup@example.com", "Setup Check"))
        records = connection.read_log(topic)
        back = [User.from_json(r.value) for r in records if r.offset == position.offset and r.value]
        record("write a user and read it back", back == [User("setup@example.com", "Setup Check")],
               "the record read back differs from the one written")
        connection.delete_topic(topic)
        record("delete the topic", True)
    except KafkaCrudError as exc:
        record("round trip through the broker", False, str(exc))
    return frame()


def success_line(checks: pd.DataFrame) -> str:
    """Notebook 00's verdict on :func:`preflight`'s table."""
    failed = checks[checks["result"] != "✅"]
    if len(failed):
        return f"❌ {failed.iloc[0]['check']}: {failed.iloc[0]['result'][2:]}"
    from .. import __version__

    return f"✅ kafka_crud {__version__}, Apache Kafka {KAFKA_VERSION} broker reachable"
