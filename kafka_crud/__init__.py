"""kafka_crud: Kafka as a database, on a real broker.

    from kafka_crud import connect, serve_in_thread, UserClient
    kafka = connect()                        # KAFKA_BOOTSTRAP_SERVERS
    kafka.ensure_topic("user")
    server = serve_in_thread(kafka, topic="user")
    UserClient(server.url).put("ada@example.com", "Ada Lovelace")
    kafka.read_log("user")
"""

from __future__ import annotations

import logging as _logging

from .broker import LocalKafka
from .client import Response, Session, UserClient
from .cluster import LocalCluster
from .compaction import CompactionResult, TombstoneRemoval, compact, remove_tombstones, wait_for_cleaner
from .config import KAFKA_VERSION
from .connection import DEFAULT_TOPIC, TEACHING_TOPIC_CONFIG, GroupOffset, Kafka, Watermarks, connect
from .consumer import Progress, StoreConsumer
from .diagrams import (
    plot_compaction_story,
    plot_group_vs_assign,
    plot_overview,
    plot_partition_segments,
    plot_partitions,
)
from .errors import (
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
)
from .group_consumer import GroupStoreConsumer, start_group, stop_all
from .partitioned import PartitionedService, Rebalance
from .partitioning import crc32_partition, murmur2, partition_for
from .plots import plot_compaction, plot_log
from .producer import UserProducer
from .records import LogRecord, Position, User
from .rolling import roll_segments, rolling
from .routing import wait_settled
from .scan import log_frame
from .segments import Segment, list_segments, local_log_dir
from .server import ServerHandle, serve_in_thread
from .service import UserService
from .store import StoredUser, UserStore
from .styled import StyledTable
from .summary import PartitionSummary, summarize, summary_frame
from .views import (
    compare_frame,
    groups_frame,
    hidden_markers,
    records_frame,
    segments_frame,
    style_log,
    users_frame,
    watermarks_frame,
)


def __getattr__(name: str) -> str:
    # The version is read when asked for: importlib.metadata costs every process start ~50 ms.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("kafka-crud")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found


# A library logs; the application (CLI, notebook) decides what to show.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    # brokers and connections
    "KAFKA_VERSION",
    "Kafka",
    "LocalCluster",
    "LocalKafka",
    "connect",
    # topics and offsets
    "DEFAULT_TOPIC",
    "TEACHING_TOPIC_CONFIG",
    "GroupOffset",
    "Watermarks",
    # records
    "LogRecord",
    "Position",
    "StoredUser",
    "User",
    # keys to partitions
    "crc32_partition",
    "murmur2",
    "partition_for",
    # clients: write, read, store, serve
    "GroupStoreConsumer",
    "PartitionedService",
    "Progress",
    "Rebalance",
    "Response",
    "ServerHandle",
    "Session",
    "StoreConsumer",
    "UserClient",
    "UserProducer",
    "UserService",
    "UserStore",
    "serve_in_thread",
    "start_group",
    "stop_all",
    "wait_settled",
    # compaction and segments
    "CompactionResult",
    "Segment",
    "TombstoneRemoval",
    "compact",
    "list_segments",
    "local_log_dir",
    "remove_tombstones",
    "roll_segments",
    "rolling",
    "wait_for_cleaner",
    # views (pandas and matplotlib imported on use)
    "PartitionSummary",
    "StyledTable",
    "compare_frame",
    "groups_frame",
    "hidden_markers",
    "log_frame",
    "plot_compaction",
    "plot_compaction_story",
    "plot_group_vs_assign",
    "plot_log",
    "plot_overview",
    "plot_partition_segments",
    "plot_partitions",
    "records_frame",
    "segments_frame",
    "style_log",
    "summarize",
    "summary_frame",
    "users_frame",
    "watermarks_frame",
    # errors
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
]
