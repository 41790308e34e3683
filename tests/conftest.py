"""Fixtures shared by the tests: the session's broker, a connection to it, fresh topics, and an
environment free of the developer's own kit settings.

A test that uses the broker (these fixtures, or a broker of its own) is marked ``broker``;
collection refuses one that uses a broker fixture without the mark.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from kafka_crud.config import BOOTSTRAP_ENV
from kafka_crud.connection import Kafka

#: The kit reads these; a developer's own must not change what a test sees.
KIT_ENV_PREFIX = "KAFKA_CRUD_"
BROKER_FIXTURES = frozenset({"bootstrap_servers", "kafka", "topic_factory", "topic"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid for item in items
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("broker") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "These tests use the session broker but are not marked broker (pytest.mark.broker): "
            + ", ".join(unmarked)
        )


def _drop_kit_settings(patch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(KIT_ENV_PREFIX):
            patch.delenv(name)


@pytest.fixture(scope="session", autouse=True)
def kit_environment_for_the_session() -> Iterator[None]:
    """No KAFKA_CRUD_* setting of the developer's (client config, cache, heap, ...) reaches a
    fixture or a test, module-scoped brokers included."""
    with pytest.MonkeyPatch.context() as patch:
        _drop_kit_settings(patch)
        yield


@pytest.fixture(autouse=True)
def kit_environment(monkeypatch: pytest.MonkeyPatch, session_broker: str | None) -> None:
    """Each test starts from the same environment: no KAFKA_CRUD_* setting, and
    KAFKA_BOOTSTRAP_SERVERS the session broker's once there is one."""
    _drop_kit_settings(monkeypatch)
    if session_broker is not None:
        monkeypatch.setenv(BOOTSTRAP_ENV, session_broker)


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    """The session's real broker (started by the root conftest unless KAFKA_BOOTSTRAP_SERVERS is set)."""
    servers = os.environ.get(BOOTSTRAP_ENV)
    assert servers, "the root conftest starts a broker before a test marked broker and exports KAFKA_BOOTSTRAP_SERVERS"
    return servers


@pytest.fixture(scope="session")
def kafka(bootstrap_servers: str) -> Kafka:
    """A connection to the session's broker: plain, with none of the developer's client settings."""
    return Kafka(bootstrap_servers, environment=False)


@pytest.fixture
def topic_factory(kafka: Kafka) -> Iterator[Callable[..., str]]:
    """Create fresh compacted topics named ``<prefix>-<uuid>``; deleted after the test."""
    created: list[str] = []

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
