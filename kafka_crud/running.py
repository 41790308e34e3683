"""What this process runs (servers, services, consumers, brokers), so that nothing outlives its use.

A notebook is re-run from the top, or closed without stopping what its cells started. So:

- resetting or deleting a topic (:meth:`kafka_crud.Kafka.reset_topic`) first stops what this
  process runs on that topic: servers, services, consumers and consumer-group instances, whose
  state would be that of a topic that no longer exists. Re-running a notebook from the top then
  starts clean instead of adding a second server beside the first.
- when the process ends normally (a kernel shut down or restarted), everything still running is
  stopped in order: the servers and consumers, then the brokers, whose temporary data dirs go.
  A process killed outright leaves the broker to its watchdog (:mod:`kafka_crud.process`).
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Protocol

__all__ = ["stop_everything", "stop_on_topic", "track", "untrack"]

log = logging.getLogger(__name__)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_lock = threading.Lock()
# id -> (the thing, its cluster's bootstrap servers, its topic or None for a broker), oldest first.
_running: dict[int, tuple[_Stoppable, str, str | None]] = {}


def track(thing: _Stoppable, *, servers: str, topic: str | None) -> None:
    """Note that ``thing`` runs against ``topic`` on ``servers`` (``topic=None``: a broker)."""
    with _lock:
        _running[id(thing)] = (thing, servers, topic)


def untrack(thing: object) -> None:
    """``thing`` has stopped."""
    with _lock:
        _running.pop(id(thing), None)


def _stop(things: list[_Stoppable]) -> list[str]:
    stopped = []
    for thing in things:
        try:
            thing.stop()
            stopped.append(repr(thing))
        except Exception:  # one that fails to stop must not keep the others running
            log.exception("Could not stop %r", thing)
        untrack(thing)
    return stopped


def stop_on_topic(servers: str, topic: str) -> list[str]:
    """Stop what this process runs on ``topic`` of ``servers``, newest first; what was stopped."""
    with _lock:
        things = [t for t, s, name in _running.values() if name == topic and s == servers]
    stopped = _stop(things[::-1])
    if stopped:
        log.info("Stopped what ran on topic %r before deleting it: %s", topic, ", ".join(stopped))
    return stopped


def stop_everything() -> None:
    """Stop everything still running: clients first (newest first), then brokers."""
    with _lock:
        entries = list(_running.values())[::-1]
    _stop([t for t, _, topic in entries if topic is not None] + [t for t, _, topic in entries if topic is None])


atexit.register(stop_everything)
