"""kafka_crud: Kafka as a database, on a real broker."""

from __future__ import annotations

from .broker import LocalKafka
from .config import KAFKA_VERSION, client_config
from .errors import (
    BrokerError,
    BrokerStartError,
    ConfigError,
    JarsUnavailableError,
    JavaNotFoundError,
    KafkaCrudError,
    NotReadyError,
    PortInUseError,
    TopicNotCompactedError,
    ValidationError,
    WriteError,
)

__version__ = "0.1.0"

__all__ = [
    # brokers and connections
    "KAFKA_VERSION",
    "LocalKafka",
    "client_config",
    # errors
    "BrokerError",
    "BrokerStartError",
    "ConfigError",
    "JarsUnavailableError",
    "JavaNotFoundError",
    "KafkaCrudError",
    "NotReadyError",
    "PortInUseError",
    "TopicNotCompactedError",
    "ValidationError",
    "WriteError",
]
