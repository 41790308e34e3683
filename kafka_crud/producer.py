"""Writing users: every write returns only once Kafka acknowledged it (acks=all, idempotent).

``put`` writes a new version of a user; ``delete`` writes a tombstone, a record whose value is
null. The article's DELETE sent an empty byte value instead, which compaction keeps forever:
:meth:`UserProducer.send` can still write one, on purpose, to show the difference.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from .connection import DEFAULT_TOPIC, Kafka, KafkaLike
from .errors import WriteError
from .records import Position, User, validate_email

__all__ = ["UserProducer"]

log = logging.getLogger(__name__)


class UserProducer:
    """Writes users to a compacted topic, synchronously and safely.

    Args:
        kafka: the :class:`~kafka_crud.Kafka` connection (or an address; None: the environment's).
        topic: the topic to write to.
        timeout: seconds Kafka has to acknowledge a write (librdkafka's ``message.timeout.ms``);
            after that the write raises :class:`WriteError`.

    Thread-safe: many threads may write at once; each waits only for its own record.
    """

    def __init__(
        self,
        kafka: KafkaLike = None,
        *,
        topic: str = DEFAULT_TOPIC,
        timeout: float = 10.0,
        config: dict[str, object] | None = None,
    ) -> None:
        self.topic = topic
        self.timeout = timeout
        self.kafka = Kafka.of(kafka)
        self._settings: dict[str, object] = {
            "enable.idempotence": True,
            # A write waits for its acknowledgement: do not hold it back for batching.
            "linger.ms": 0,
            "message.timeout.ms": int(timeout * 1000),
            **(config or {}),
        }
        self._lock = threading.Lock()
        self._producer = self._new_producer()
        # Producers replaced after a fatal error, polled until they have answered every write
        # they held: else those writes would wait out the whole timeout + 5 s for nothing.
        self._retired: list[Producer] = []
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-crud-producer", daemon=True)
        self._poller.start()

    def _new_producer(self) -> Producer:
        producer: Producer | None = None

        def on_error(err: KafkaError) -> None:  # tells _on_error which producer the error is from
            self._on_error(err, producer)

        producer = self.kafka.producer(**self._settings, error_cb=on_error)
        return producer

    def _on_error(self, err: KafkaError, source: Producer | None) -> None:
        if not err.fatal():
            log.debug("Producer: %s", err)
            return
        with self._lock:
            if source is not self._producer:
                return  # from a producer already replaced
            log.error("Producer fatal error, starting a new producer: %s", err)
            self._retired.append(self._producer)
            self._producer = self._new_producer()

    def _poll(self) -> None:
        # Delivery callbacks run only inside poll(): this thread keeps them flowing.
        while not self._closed.is_set():
            with self._lock:
                producer = self._producer
                retired = list(self._retired)
            for old in retired:
                old.poll(0)
                if len(old) == 0:  # nothing left in flight: every write it held has its answer
                    with self._lock:
                        self._retired.remove(old)
            producer.poll(0.05)

    def put(self, user: User) -> Position:
        """Write ``user`` (key = email, value = JSON) and return where it landed, once acknowledged."""
        return self.send(user.email, user.to_json())

    def delete(self, email: str) -> Position:
        """Write a tombstone (null value) for ``email`` and return where it landed, once acknowledged."""
        return self.send(validate_email(email), None)

    def send(
        self, key: str | bytes, value: bytes | None, *,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> Position:
        """Write one raw record and wait for its acknowledgement.

        ``value=None`` is a tombstone; ``value=b""`` is an ordinary, empty record.
        ``headers``: (name, value) pairs stored with the record.
        Raises :class:`WriteError` when Kafka did not acknowledge it within ``timeout`` s.
        """
        if self._closed.is_set():
            raise WriteError("This producer is closed: create a new UserProducer")
        # The delivery report releases ``answered``, held until then: one lock and one wake-up
        # per write (a Future's condition costs several, under the GIL, with 8 writers at once).
        answered = threading.Lock()
        answered.acquire()
        report: list[tuple[KafkaError | None, Message]] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            report.append((err, msg))
            answered.release()

        producer = self._producer  # replaced whole by _on_error: reading it needs no lock
        try:
            producer.produce(self.topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        except BufferError:
            raise WriteError(
                "The producer's queue is full: Kafka is not keeping up or not reachable; retry later"
            ) from None
        except KafkaException as exc:
            raise WriteError(f"Kafka refused the write: {exc.args[0].str()}") from None
        if not answered.acquire(timeout=self.timeout + 5):
            raise WriteError(
                f"No acknowledgement from Kafka within {self.timeout + 5:.0f} s: the write may or may not have landed"
            )
        err, msg = report[0]
        if err is not None:
            if err.code() == KafkaError._MSG_TIMED_OUT:
                raise WriteError(
                    f"Kafka did not acknowledge the write within {self.timeout:.0f} s "
                    "(is the broker reachable?); retry later"
                )
            raise WriteError(f"Kafka did not acknowledge the write: {err.str()}")
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None
        assert offset is not None
        return Position(self.topic, partition, offset)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is in flight (up to ``timeout`` s), then stop."""
        if self._closed.is_set():
            return
        with self._lock:
            for producer in [*self._retired, self._producer]:
                producer.flush(timeout)
        self._closed.set()
        self._poller.join()

    def __enter__(self) -> UserProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
