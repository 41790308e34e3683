"""Every error kafka_crud raises on purpose, each with a message that says what to do next.

    KafkaCrudError
    ├── BrokerError                 the embedded broker could not be set up or started
    │   ├── JavaNotFoundError       no Java 17+ to run it
    │   ├── JarsUnavailableError    the broker's jars could not be fetched
    │   ├── PortInUseError          the requested port is taken
    │   └── BrokerStartError        the JVM died or never became ready (carries the log tail)
    ├── ConfigError                 bad connection settings or an unusable topic
    │   └── TopicNotCompactedError  the topic exists but is not cleanup.policy=compact
    ├── ValidationError             a user record that must not be written
    ├── WriteError                  Kafka did not acknowledge a write (nothing may be assumed)
    ├── PreconditionFailedError     If-Match named a version that is no longer the latest
    ├── NotReadyError               the store has not caught up with the topic yet
    └── CleanerTimeoutError         the log cleaner did not get as far as expected in time
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerStartError",
    "CleanerTimeoutError",
    "ConfigError",
    "JarsUnavailableError",
    "JavaNotFoundError",
    "KafkaCrudError",
    "NotReadyError",
    "PortInUseError",
    "PreconditionFailedError",
    "TopicNotCompactedError",
    "ValidationError",
    "WriteError",
]


class KafkaCrudError(Exception):
    """Base class of every error kafka_crud raises on purpose."""


class BrokerError(KafkaCrudError):
    """The embedded broker could not be set up or started."""


class JavaNotFoundError(BrokerError):
    """No Java 17 or newer was found to run the embedded broker."""


class JarsUnavailableError(BrokerError):
    """The broker's jars are neither cached nor fetchable."""


class PortInUseError(BrokerError):
    """A port the embedded broker was told to use is already taken."""


class BrokerStartError(BrokerError):
    """The broker process died during start or never answered a metadata request."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        if log_tail:
            message = f"{message}\n--- last lines of the broker log ---\n{log_tail}"
        super().__init__(message)
        self.log_tail = log_tail


class ConfigError(KafkaCrudError):
    """Connection settings or a topic that the kit cannot work with."""


class TopicNotCompactedError(ConfigError):
    """The topic exists but its cleanup.policy does not include compact."""


class ValidationError(KafkaCrudError, ValueError):
    """A user record that must not be written; nothing was sent to Kafka."""


class WriteError(KafkaCrudError):
    """Kafka did not acknowledge a write in time; it may or may not have landed."""


class PreconditionFailedError(KafkaCrudError):
    """An ``If-Match`` ETag that is not the user's current version; nothing was written."""


class NotReadyError(KafkaCrudError):
    """The store has not yet applied the topic up to the end offsets taken at start."""


class CleanerTimeoutError(KafkaCrudError, TimeoutError):
    """The log cleaner did not get as far as expected within the timeout."""
