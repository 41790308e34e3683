"""The kit's errors: what the endpoint answers for each, and what a stopped broker looks like.

Without a broker: every :class:`KafkaCrudError` has the HTTP status the endpoint promises, and
librdkafka's errors become kit errors in one place (:func:`map_kafka_errors`).

With a broker that was running and is stopped: every public function that reads from Kafka
fails with a :class:`KafkaUnavailableError` (never a raw ``KafkaException``, never a hang) whose
message names the address and says what to do, within a bounded time.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus

import pytest
from confluent_kafka import KafkaError, KafkaException
from helpers import call

from kafka_crud import cli
from kafka_crud.broker import LocalKafka
from kafka_crud.compaction import compact
from kafka_crud.connection import Kafka
from kafka_crud.errors import (
    BrokerError,
    BrokerStartError,
    CleanerTimeoutError,
    ConfigError,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    JarsUnavailableError,
    JavaNotFoundError,
    KafkaCrudError,
    KafkaOperationError,
    KafkaUnavailableError,
    NotOwnerError,
    NotReadyError,
    PartitionMovingError,
    PortInUseError,
    PreconditionFailedError,
    TopicNotCompactedError,
    TopicNotFoundError,
    TopicNotOwnedError,
    ValidationError,
    WriteError,
    map_kafka_errors,
)
from kafka_crud.httpserver import JSONHandler, JSONServer, Reply, single
from kafka_crud.producer import UserProducer
from kafka_crud.records import User
from kafka_crud.segments import list_segments, local_log_dir
from kafka_crud.service import UserService

# -- what the endpoint answers for each error -------------------------------------------------------
#: Every kit error and the status the endpoint answers when it ends a request.
PROMISED: dict[type[KafkaCrudError], HTTPStatus] = {
    ValidationError: HTTPStatus.BAD_REQUEST,  # the client's to fix; nothing was written
    PreconditionFailedError: HTTPStatus.PRECONDITION_FAILED,  # If-Match: someone changed it since
    NotReadyError: HTTPStatus.SERVICE_UNAVAILABLE,  # still rebuilding: retry
    WriteError: HTTPStatus.SERVICE_UNAVAILABLE,  # not acknowledged: retry
    KafkaUnavailableError: HTTPStatus.SERVICE_UNAVAILABLE,  # Kafka down: retry
    KafkaOperationError: HTTPStatus.BAD_GATEWAY,  # Kafka said no
    TopicNotOwnedError: HTTPStatus.CONFLICT,
    IdempotencyKeyInUseError: HTTPStatus.CONFLICT,  # the same key's first request still runs: retry
    IdempotencyKeyReusedError: HTTPStatus.UNPROCESSABLE_ENTITY,  # the key names another request
    NotOwnerError: HTTPStatus.TEMPORARY_REDIRECT,  # another instance of the group serves this user
    PartitionMovingError: HTTPStatus.SERVICE_UNAVAILABLE,  # being handed over or restored: retry
    # Set-up problems: the server's to fix, not the client's.
    KafkaCrudError: HTTPStatus.INTERNAL_SERVER_ERROR,
    BrokerError: HTTPStatus.INTERNAL_SERVER_ERROR,
    JavaNotFoundError: HTTPStatus.INTERNAL_SERVER_ERROR,
    JarsUnavailableError: HTTPStatus.INTERNAL_SERVER_ERROR,
    PortInUseError: HTTPStatus.INTERNAL_SERVER_ERROR,
    BrokerStartError: HTTPStatus.INTERNAL_SERVER_ERROR,
    ConfigError: HTTPStatus.INTERNAL_SERVER_ERROR,
    TopicNotCompactedError: HTTPStatus.INTERNAL_SERVER_ERROR,
    TopicNotFoundError: HTTPStatus.INTERNAL_SERVER_ERROR,
    CleanerTimeoutError: HTTPStatus.INTERNAL_SERVER_ERROR,
}
#: Errors that pass: the answer says when to try again.
RETRY_AFTER = {NotReadyError: 1, WriteError: 1, KafkaUnavailableError: 1, IdempotencyKeyInUseError: 1,
               PartitionMovingError: 1}


def _all_errors(cls: type[KafkaCrudError] = KafkaCrudError) -> set[type[KafkaCrudError]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _all_errors(sub)
    return found


def test_every_kit_error_has_a_promised_http_status() -> None:
    assert _all_errors() == set(PROMISED), "a new error: decide what the endpoint answers for it, and add it here"
    for error, status in PROMISED.items():
        assert error.http_status == status, error.__name__
        assert error.retry_after == RETRY_AFTER.get(error), error.__name__


class _Raising(JSONHandler):
    """A route that raises the kit error named in ?error=."""

    routes = {"/raise": {"GET": "get_raise"}}  # noqa: RUF012 - JSONHandler's table, as in kafka_crud.server

    def get_raise(self, query: dict[str, list[str]]) -> Reply:
        name = single(query, "error")
        error = next(e for e in PROMISED if e.__name__ == name)
        if error is NotOwnerError:
            raise NotOwnerError("what went wrong", location="http://127.0.0.1:9/user?email=a@b.c")
        raise error("what went wrong")


@pytest.fixture(scope="module")
def raising_url() -> Iterator[str]:
    server = JSONServer(("127.0.0.1", 0), _Raising, None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("error", list(PROMISED), ids=lambda e: e.__name__)
def test_the_endpoint_answers_a_kit_error_with_its_status_and_message(
    raising_url: str, error: type[KafkaCrudError]
) -> None:
    answer = call(raising_url, "GET", f"/raise?error={error.__name__}", timeout=10)

    assert answer.status == PROMISED[error]
    assert answer.json() == {"error": "what went wrong"}
    retry = RETRY_AFTER.get(error)
    assert answer.headers.get("Retry-After") == (None if retry is None else str(retry))
    if error is NotOwnerError:  # the redirect names the owner
        assert answer.headers.get("Location") == "http://127.0.0.1:9/user?email=a@b.c"


# -- librdkafka's errors, mapped in one place -----------------------------------------------------------
def _raised(exc: Exception, servers: str = "127.0.0.1:9") -> Exception:
    """What leaves map_kafka_errors when ``exc`` is raised in its block."""
    try:
        with map_kafka_errors("reading 'user'", servers):
            raise exc
    except Exception as out:  # noqa: BLE001 - whatever comes out is the answer
        return out
    raise AssertionError("map_kafka_errors swallowed the exception")


@pytest.mark.parametrize(
    ("code", "error", "advice"),
    [
        (KafkaError._TRANSPORT, KafkaUnavailableError, "is the broker running and the address right"),
        (KafkaError._TIMED_OUT, KafkaUnavailableError, "is the broker running and the address right"),
        (KafkaError._ALL_BROKERS_DOWN, KafkaUnavailableError, "Start one with `kafka-crud broker`"),
        (KafkaError._RESOLVE, KafkaUnavailableError, "set KAFKA_BOOTSTRAP_SERVERS"),
        (KafkaError.SASL_AUTHENTICATION_FAILED, KafkaUnavailableError, "credentials in KAFKA_CRUD_CLIENT_CONFIG"),
        (KafkaError._SSL, KafkaUnavailableError, "check the security settings"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaOperationError, "ask the cluster's admin for an ACL"),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, TopicNotFoundError, "create it first"),
        (KafkaError.POLICY_VIOLATION, KafkaOperationError, "answered an error while reading 'user'"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_map_kafka_errors_turns_librdkafka_errors_into_kit_errors_that_say_what_to_do(
    code: int, error: type[KafkaCrudError], advice: str
) -> None:
    raw = KafkaException(KafkaError(code))

    mapped = _raised(raw)

    assert type(mapped) is error
    assert "127.0.0.1:9" in str(mapped), mapped
    assert advice in str(mapped), mapped
    assert mapped.__cause__ is raw


def test_map_kafka_errors_maps_an_unanswered_admin_future_and_leaves_other_errors_alone() -> None:
    # An admin future's result(timeout=...) that ran out: Kafka did not answer.
    timed_out = _raised(TimeoutError())
    assert type(timed_out) is KafkaUnavailableError
    assert "127.0.0.1:9" in str(timed_out)
    # A KafkaException without a KafkaError in it still becomes a kit error.
    assert type(_raised(KafkaException("odd"))) is KafkaOperationError
    # Kit errors (a TimeoutError among them) and other exceptions pass through unchanged.
    cleaner = CleanerTimeoutError("the cleaner is late")
    assert _raised(cleaner) is cleaner
    bug = ValueError("a bug")
    assert _raised(bug) is bug


def test_a_connection_maps_errors_with_its_own_address() -> None:
    kafka = Kafka("127.0.0.1:9", environment=False)  # no client is created until one is used
    with pytest.raises(KafkaUnavailableError, match=r"at 127\.0\.0\.1:9 while pinging"), kafka.errors("pinging"):
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))


# -- a stopped broker -------------------------------------------------------------------------------
TOPIC = "users"
WHAT_TO_DO = "is the broker running and the address right? Start one with `kafka-crud broker`"
#: Seconds a reader may take to give up; its connection waits 2 s per request (10 s by default).
BOUND = 15.0


@pytest.fixture(scope="module")
def stopped() -> tuple[str, Kafka]:
    """The address of a broker that held a topic and a user and is now stopped, and the
    connection that was used while it ran."""
    broker = LocalKafka()
    broker.start()
    try:
        kafka = broker.connect()
        kafka.create_topic(TOPIC, partitions=3)
        with UserProducer(kafka, topic=TOPIC) as producer:
            producer.put(User("ada@example.com", "Ada"))
        assert len(kafka.read_log(TOPIC)) == 1
    finally:
        broker.stop()
    return broker.bootstrap_servers, kafka


def _fails_in_time(action: Callable[[], object], address: str) -> KafkaUnavailableError:
    started = time.monotonic()
    with pytest.raises(KafkaCrudError) as info:
        action()
    seconds = time.monotonic() - started
    assert isinstance(info.value, KafkaUnavailableError), repr(info.value)
    assert seconds < BOUND, f"gave up only after {seconds:.1f} s"
    message = str(info.value)
    assert address in message, message
    assert WHAT_TO_DO in message, message
    return info.value


READERS: dict[str, Callable[[Kafka], object]] = {
    "Kafka.partitions": lambda kafka: kafka.partitions(TOPIC),
    "Kafka.watermarks": lambda kafka: kafka.watermarks(TOPIC),
    "Kafka.topic_config": lambda kafka: kafka.topic_config(TOPIC),
    "Kafka.broker_configs": lambda kafka: kafka.broker_configs(),
    "Kafka.read_log": lambda kafka: kafka.read_log(TOPIC),
    "Kafka.iter_log": lambda kafka: next(kafka.iter_log(TOPIC)),
    "Kafka.ping": lambda kafka: kafka.ping(),
    "Kafka.group_offsets": lambda kafka: kafka.group_offsets(),
    "Kafka.group_offsets of a group": lambda kafka: kafka.group_offsets(["a-group"]),
    "Kafka.ensure_topic": lambda kafka: kafka.ensure_topic(TOPIC),
    "list_segments": lambda kafka: list_segments(kafka, TOPIC),
    "local_log_dir": lambda kafka: local_log_dir(kafka),
    "compact": lambda kafka: compact(kafka, TOPIC),
    "UserService.start": lambda kafka: UserService(kafka, topic=TOPIC).start(),
}


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_of_a_stopped_broker_fails_with_a_kit_error_naming_the_address(
    stopped: tuple[str, Kafka], reader: str
) -> None:
    address, _ = stopped
    _fails_in_time(lambda: READERS[reader](Kafka(address, timeout=2)), address)


@pytest.mark.broker
@pytest.mark.slow
def test_a_connection_that_worked_before_the_broker_stopped_fails_the_same_way(stopped: tuple[str, Kafka]) -> None:
    address, kafka = stopped  # its AdminClient had connected; it waits its default 10 s per request
    _fails_in_time(lambda: kafka.read_log(TOPIC), address)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """cli.main() sets up logging for a terminal; put it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    librdkafka = logging.getLogger("kafka_crud.librdkafka")
    librdkafka_level = librdkafka.level
    yield
    root.handlers[:], root.level = handlers, level
    librdkafka.setLevel(librdkafka_level)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.usefixtures("restore_logging")
def test_the_log_command_on_a_stopped_broker_prints_one_line_and_exits_1(
    stopped: tuple[str, Kafka], capsys: pytest.CaptureFixture[str]
) -> None:
    address, _ = stopped
    started = time.monotonic()

    code = cli.main(["log", "--bootstrap-servers", address])

    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1
    assert seconds < BOUND
    assert out == ""
    [line] = err.splitlines()
    # A new connection says at once that nothing listens; a used one, that Kafka stopped answering.
    assert re.match(rf"kafka-crud: (No answer from|Cannot reach) Kafka at {re.escape(address)} ", line), line
    assert WHAT_TO_DO in line
    assert "Traceback" not in err
