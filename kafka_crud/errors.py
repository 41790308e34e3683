"""Every error kafka_crud raises on purpose, each with a message that says what to do next.

    KafkaCrudError                    (http_status: what the HTTP endpoint answers for it)
    ├── BrokerError                   the embedded broker could not be set up or started
    │   ├── JavaNotFoundError         no Java 17+ to run it
    │   ├── JarsUnavailableError      the broker's jars could not be fetched
    │   ├── PortInUseError            the requested port is taken
    │   └── BrokerStartError          the JVM died or never became ready (carries the log tail)
    ├── ConfigError                   bad connection settings or an unusable topic
    │   ├── TopicNotCompactedError    the topic exists but is not cleanup.policy=compact
    │   ├── TopicNotFoundError        the topic does not exist
    │   └── TopicNotOwnedError        the kit did not create the topic: it will not delete or change it
    ├── KafkaUnavailableError         Kafka did not answer in time (down, wrong address, refused login)
    ├── KafkaOperationError           Kafka answered with an error the kit has no better name for
    ├── ValidationError               a user record that must not be written (400)
    ├── PreconditionFailedError       If-Match named a version that is no longer the latest (412)
    ├── IdempotencyKeyInUseError      a request with this Idempotency-Key is still in flight (409)
    ├── IdempotencyKeyReusedError     an Idempotency-Key already used for another request (422)
    ├── NotOwnerError                 another instance of the group owns the key's partition (307 to it)
    ├── WriteError                    Kafka did not acknowledge a write (503; nothing may be assumed)
    ├── NotReadyError                 the store has not caught up with the topic yet (503)
    │   └── PartitionMovingError      the key's partition is moving between instances of a group (503)
    └── CleanerTimeoutError           the log cleaner did not get as far as expected in time

:func:`map_kafka_errors` is the one place where confluent-kafka's ``KafkaException`` becomes a
kit error: every public function that talks to Kafka runs inside it, so no raw librdkafka
exception reaches a notebook or the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from typing import ClassVar

from confluent_kafka import KafkaError, KafkaException

__all__ = [
    "BrokerError",
    "BrokerStartError",
    "CleanerTimeoutError",
    "ConfigError",
    "IdempotencyKeyInUseError",
    "IdempotencyKeyReusedError",
    "JarsUnavailableError",
    "JavaNotFoundError",
    "KafkaCrudError",
    "KafkaOperationError",
    "KafkaUnavailableError",
    "NotOwnerError",
    "NotReadyError",
    "PartitionMovingError",
    "PortInUseError",
    "PreconditionFailedError",
    "TopicNotCompactedError",
    "TopicNotFoundError",
    "TopicNotOwnedError",
    "ValidationError",
    "WriteError",
    "CONTACT_ERRORS",
    "CONTACT_TIMEOUT",
    "contact_problem",
    "map_kafka_errors",
]


class KafkaCrudError(Exception):
    """Base class of every error kafka_crud raises on purpose."""

    http_status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    """What the HTTP endpoint answers when this error ends a request."""
    retry_after: ClassVar[int | None] = None
    """Seconds for a ``Retry-After`` header, for errors that pass."""


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


class TopicNotFoundError(ConfigError):
    """The topic does not exist."""


class TopicNotOwnedError(ConfigError):
    """The topic is not the kit's (another cluster's, not created by the kit): nothing was changed."""

    http_status = HTTPStatus.CONFLICT


class KafkaUnavailableError(KafkaCrudError):
    """Kafka did not answer in time: not running, a wrong address, or refused credentials."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    retry_after = 1


class KafkaOperationError(KafkaCrudError):
    """Kafka answered a request with an error; the message carries librdkafka's reason."""

    http_status = HTTPStatus.BAD_GATEWAY


class ValidationError(KafkaCrudError, ValueError):
    """A user record that must not be written; nothing was sent to Kafka."""

    http_status = HTTPStatus.BAD_REQUEST


class PreconditionFailedError(KafkaCrudError):
    """An ``If-Match`` ETag that is not the user's current version; nothing was written."""

    http_status = HTTPStatus.PRECONDITION_FAILED


class IdempotencyKeyInUseError(KafkaCrudError):
    """A request with the same ``Idempotency-Key`` is still being carried out; nothing was written.

    Retry once the first has been answered (as the IETF draft "The Idempotency-Key HTTP Header
    Field" specifies: 409 Conflict).
    """

    http_status = HTTPStatus.CONFLICT
    retry_after = 1


class IdempotencyKeyReusedError(KafkaCrudError):
    """An ``Idempotency-Key`` already used for a different request; nothing was written (422)."""

    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class NotOwnerError(KafkaCrudError):
    """Another instance of the consumer group owns the key's partition: the answer is a 307 to it.

    Not a failure: a client that follows redirects gets its answer from the owner, with the same
    method, body and headers (307 keeps them all, unlike 302).
    """

    http_status = HTTPStatus.TEMPORARY_REDIRECT

    def __init__(self, message: str, *, location: str) -> None:
        super().__init__(message)
        self.location = location
        self.headers = {"Location": location}


class WriteError(KafkaCrudError):
    """Kafka did not acknowledge a write in time; it may or may not have landed."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    retry_after = 1


class NotReadyError(KafkaCrudError):
    """The store has not yet applied the topic up to the end offsets taken at start."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    retry_after = 1


class PartitionMovingError(NotReadyError):
    """The key's partition is being handed between instances of a group, or restored from the log."""


class CleanerTimeoutError(KafkaCrudError, TimeoutError):
    """The log cleaner did not get as far as expected within the timeout."""


#: librdkafka codes that mean "no usable answer from the cluster", not "the cluster said no".
_UNAVAILABLE = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._WAIT_COORD,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.BROKER_NOT_AVAILABLE,
}
_AUTHENTICATION = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._SSL,
    KafkaError.ILLEGAL_SASL_STATE,
    KafkaError.UNSUPPORTED_SASL_MECHANISM,
}
_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


def kafka_error(err: KafkaError, doing: str, servers: str = "") -> KafkaCrudError:
    """The kit error for a librdkafka error met while ``doing`` something, with what to do next."""
    code = err.code()
    where = f" at {servers}" if servers else ""
    reason = err.str()
    if code in _AUTHENTICATION:
        return KafkaUnavailableError(
            f"Kafka{where} refused the connection while {doing} ({reason}): check the security "
            "settings and credentials in KAFKA_CRUD_CLIENT_CONFIG (security.protocol, sasl.*, ssl.*)"
        )
    if code in _AUTHORIZATION:
        return KafkaOperationError(
            f"Kafka{where} did not allow {doing} ({reason}): ask the cluster's admin for an ACL, "
            "or use a topic you may use"
        )
    if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return TopicNotFoundError(
            f"The topic does not exist{where} ({doing}): create it first "
            "(kafka.ensure_topic(...), or `kafka-crud serve`, which creates it)"
        )
    if code in _UNAVAILABLE:
        return KafkaUnavailableError(
            f"No answer from Kafka{where} while {doing} ({reason}): is the broker running and the "
            "address right? Start one with `kafka-crud broker`, or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return KafkaOperationError(f"Kafka{where} answered an error while {doing}: {reason}")


@contextmanager
def map_kafka_errors(doing: str, servers: str = "") -> Iterator[None]:
    """Turn a ``KafkaException`` raised in the block into the kit error that says what to do;
    so too the ``TimeoutError`` of an admin future's ``result(timeout=...)`` that Kafka never answered."""
    try:
        yield
    except KafkaException as exc:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None:
            raise KafkaOperationError(f"Kafka failed while {doing}: {exc}") from exc
        raise kafka_error(err, doing, servers) from exc
    except TimeoutError as exc:
        if isinstance(exc, KafkaCrudError):  # CleanerTimeoutError: already the kit's
            raise
        raise kafka_error(KafkaError(KafkaError._TIMED_OUT, "no answer in time"), doing, servers) from exc


#: Seconds a new connection has to get the cluster's metadata before it says why it did not.
CONTACT_TIMEOUT = 8.0
#: Seconds of nothing but refused or broken connections before a connection gives up.
UNREACHABLE_AFTER = 4.0

#: What librdkafka reports (to ``error_cb``) when it cannot talk to a broker at all.
CONTACT_ERRORS = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.UNSUPPORTED_SASL_MECHANISM,
    KafkaError.ILLEGAL_SASL_STATE,
    KafkaError._SSL,
}
_LOGIN = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.UNSUPPORTED_SASL_MECHANISM,
    KafkaError.ILLEGAL_SASL_STATE,
}


def _reason(err: KafkaError) -> str:
    text = " ".join(err.str().split())
    text = re.sub(r"\s*\(after \d+ms in state \w+[^)]*\)", "", text)  # librdkafka's timing detail
    return re.sub(r"^(\S+:\d+/[\w-]+: )+", "", text)  # the broker prefix: the message names the address


def contact_problem(
    errors: Sequence[tuple[float, KafkaError]], servers: str, waited: float, timed_out: bool,
    protocol: str = "PLAINTEXT",
) -> KafkaUnavailableError | None:
    """Why a new connection to ``servers`` got no metadata, as one line, once that is clear.

    A refused login or a failed TLS handshake is clear at once; refused or broken connections
    after :data:`UNREACHABLE_AFTER` s of nothing else; otherwise the error comes at the deadline.
    """
    codes = [err for _, err in errors]
    login = next((e for e in codes if e.code() in _LOGIN), None)
    if login is not None:
        return KafkaUnavailableError(
            f"Kafka at {servers} refused the login ({_reason(login)}): check sasl.mechanism, sasl.username and "
            "sasl.password in KAFKA_CRUD_CLIENT_CONFIG"
        )
    tls = next((e for e in codes if e.code() == KafkaError._SSL), None)
    if tls is not None:
        return KafkaUnavailableError(
            f"The TLS handshake with Kafka at {servers} failed ({_reason(tls)}): check ssl.ca.location (the CA "
            "that signed the broker's certificate) and security.protocol in KAFKA_CRUD_CLIENT_CONFIG"
        )
    broken = [e for e in codes if e.code() != KafkaError._ALL_BROKERS_DOWN]
    if broken and (waited >= UNREACHABLE_AFTER or timed_out):
        reason = _reason(broken[-1])
        hint = ("is the broker running and the address right? Start one with `kafka-crud broker`, "
                "or set KAFKA_BOOTSTRAP_SERVERS")
        if "security.protocol" in reason or "SSL" in reason:
            hint = "does security.protocol in KAFKA_CRUD_CLIENT_CONFIG match the broker's listener?"
        return KafkaUnavailableError(f"Cannot reach Kafka at {servers} ({reason}): {hint}")
    if timed_out:
        return KafkaUnavailableError(
            f"No answer from Kafka at {servers} within {waited:.0f} s (security.protocol={protocol}): is the "
            f"broker running, the address right, and does its listener speak {protocol}? A plaintext client on "
            "a TLS port waits like this. Check KAFKA_BOOTSTRAP_SERVERS and KAFKA_CRUD_CLIENT_CONFIG"
        )
    return None
