"""The course's own helpers: notebook 00's setup check, demo data, tables and exercise checks.

What the course teaches lives in the package proper; this holds only what exists for the
notebooks (fixed demo data so that outputs are the same on every run, and the checks).
"""

from __future__ import annotations

from .data import DEMO_HISTORY, DEMO_USERS, write_history, write_users
from .exercises import (
    Check,
    check_compaction,
    check_counts,
    check_group_owner,
    check_if_match,
    check_partition,
    check_tombstone,
)
from .setup import preflight, restart_broker, success_line
from .tables import answers_frame, partitions_frame

__all__ = [
    # the setup check
    "preflight",
    "restart_broker",
    "success_line",
    # demo data
    "DEMO_HISTORY",
    "DEMO_USERS",
    "write_history",
    "write_users",
    # tables
    "answers_frame",
    "partitions_frame",
    # exercise checks
    "Check",
    "check_compaction",
    "check_counts",
    "check_group_owner",
    "check_if_match",
    "check_partition",
    "check_tombstone",
]
