"""Where every part of the kit gets its Kafka client settings, and the pinned versions.

Resolution order for the bootstrap servers:

1. an explicit argument (``--bootstrap-servers`` on the CLI),
2. the ``KAFKA_BOOTSTRAP_SERVERS`` environment variable (used unchanged),
3. otherwise the caller starts an embedded broker (:class:`kafka_crud.LocalKafka`).

Extra librdkafka settings for a real cluster (SASL, SSL, ...) come from
``KAFKA_CRUD_CLIENT_CONFIG``: either a path to a Java-style ``.properties`` file, or
``key=value`` pairs separated by commas or newlines, e.g.
``security.protocol=SASL_SSL,sasl.mechanism=PLAIN,sasl.username=u,sasl.password=p``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "CLIENT_CONFIG_ENV",
    "BOOTSTRAP_ENV",
    "KAFKA_VERSION",
    "SCALA_VERSION",
    "bootstrap_servers_from_env",
    "client_config",
    "extra_client_config",
]

#: The one place the Apache Kafka version is pinned (jars, docker-compose, Binder).
KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
CLIENT_CONFIG_ENV = "KAFKA_CRUD_CLIENT_CONFIG"


def bootstrap_servers_from_env() -> str | None:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set and not blank, else None."""
    value = os.environ.get(BOOTSTRAP_ENV, "").strip()
    return value or None


def _parse_properties(text: str, *, separators: str) -> dict[str, str]:
    config: dict[str, str] = {}
    for raw in text.replace("\r", "").split("\n") if separators == "\n" else _split_pairs(text):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        for sep in ("=", ":"):
            if sep in line:
                key, value = line.split(sep, 1)
                config[key.strip()] = value.strip()
                break
        else:
            raise ConfigError(
                f"Cannot read {line!r} in {CLIENT_CONFIG_ENV}: write librdkafka settings as key=value."
            )
    return config


def _split_pairs(text: str) -> list[str]:
    return [part for chunk in text.splitlines() for part in chunk.split(",")]


def extra_client_config() -> dict[str, str]:
    """Extra librdkafka settings from ``KAFKA_CRUD_CLIENT_CONFIG`` (a file path or key=value pairs)."""
    value = os.environ.get(CLIENT_CONFIG_ENV, "").strip()
    if not value:
        return {}
    path = Path(value).expanduser()
    if "=" not in value and not path.is_file():
        raise ConfigError(
            f"{CLIENT_CONFIG_ENV}={value!r} is neither a file nor key=value pairs: "
            "point it at a .properties file or write e.g. security.protocol=SASL_SSL,sasl.mechanism=PLAIN"
        )
    if path.is_file():
        return _parse_properties(path.read_text(encoding="utf-8"), separators="\n")
    return _parse_properties(value, separators=",")


def client_config(bootstrap_servers: str | None = None, **overrides: object) -> dict[str, object]:
    """librdkafka settings for any client of the kit: bootstrap servers, extra settings, overrides.

    ``overrides`` use librdkafka's dotted names; pass them as ``**{"enable.idempotence": True}``.
    """
    servers = bootstrap_servers or bootstrap_servers_from_env()
    if not servers:
        raise ConfigError(
            f"No Kafka to connect to: set {BOOTSTRAP_ENV}=host:port, pass bootstrap_servers, "
            "or start the embedded broker with `kafka-crud broker` (or LocalKafka() in Python)."
        )
    config: dict[str, object] = {"bootstrap.servers": servers}
    config.update(extra_client_config())
    config.update(overrides)
    return config
