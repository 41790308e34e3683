"""kafka_crud: Kafka as a database, on a real broker."""

from __future__ import annotations

import logging as _logging

from .broker import LocalKafka
from .client import Response, UserClient
from .compaction import (
    CompactionResult,
    TombstoneRemoval,
    compact,
    remove_tombstones,
    roll_segments,
    wait_for_cleaner,
)
from .config import KAFKA_VERSION, client_config
from .consumer import Progress, StoreConsumer, read_log
from .errors import (
    BrokerError,
    BrokerStartError,
    CleanerTimeoutError,
    ConfigError,
    JarsUnavailableError,
    JavaNotFoundError,
    KafkaCrudError,
    NotReadyError,
    PortInUseError,
    PreconditionFailedError,
    TopicNotCompactedError,
    ValidationError,
    WriteError,
)
from .producer import UserProducer
from .records import LogRecord, Position, User
from .segments import Segment, list_segments, local_log_dir, segments_frame
from .server import ServerHandle, serve_in_thread
from .service import UserService
from .store import StoredUser, UserStore
from .topics import create_topic, delete_topic, ensure_topic, reset_topic
from .views import (
    compare_frame,
    groups_frame,
    log_frame,
    plot_compaction,
    plot_log,
    records_frame,
    style_log,
    users_frame,
    watermarks_frame,
)

__version__ = "0.1.0"

# A library logs; the application (CLI, notebook) decides what to show.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    # brokers and connections
    "KAFKA_VERSION",
    "LocalKafka",
    "client_config",
    # topics
    "create_topic",
    "delete_topic",
    "ensure_topic",
    "reset_topic",
    # records
    "LogRecord",
    "Position",
    "StoredUser",
    "User",
    # clients: write, read, store, serve
    "Progress",
    "Response",
    "ServerHandle",
    "StoreConsumer",
    "UserClient",
    "UserProducer",
    "UserService",
    "UserStore",
    "read_log",
    "serve_in_thread",
    # views: the log, compaction step by step, segments (pandas and matplotlib on use)
    "CompactionResult",
    "Segment",
    "TombstoneRemoval",
    "compact",
    "compare_frame",
    "groups_frame",
    "list_segments",
    "local_log_dir",
    "log_frame",
    "plot_compaction",
    "plot_log",
    "records_frame",
    "remove_tombstones",
    "roll_segments",
    "segments_frame",
    "style_log",
    "users_frame",
    "wait_for_cleaner",
    "watermarks_frame",
    # errors
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
