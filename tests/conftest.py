"""Fixtures shared by the tests: the session's broker address and a fresh topic per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from kafka_crud.config import BOOTSTRAP_ENV
from kafka_crud.connection import Kafka


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    """The session's real broker (started by the root conftest unless KAFKA_BOOTSTRAP_SERVERS is set)."""
    servers = os.environ.get(BOOTSTRAP_ENV)
    assert servers, "the root conftest starts a broker for the session and exports KAFKA_BOOTSTRAP_SERVERS"
    return servers


@pytest.fixture
def topic_factory(bootstrap_servers: str) -> Iterator[Callable[..., str]]:
    """Create fresh compacted topics named ``<prefix>-<uuid>``; deleted after the test."""
    created: list[str] = []
    kafka = Kafka(bootstrap_servers)

    def make(prefix: str = "test", *, partitions: int = 3, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka.create_topic(name, partitions=partitions, config=config)
        created.append(name)
        return name

    yield make
    for name in created:
        kafka.delete_topic(name)


@pytest.fixture
def topic(topic_factory: Callable[..., str]) -> str:
    """A fresh compacted topic with 3 partitions."""
    return topic_factory()
