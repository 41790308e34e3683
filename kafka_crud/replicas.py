"""Where a local cluster's partitions are: leaders, replicas, in-sync replicas, the active controller.

Part of :class:`kafka_crud.cluster.LocalCluster`, read from the cluster's own metadata (and, for
the controller, the nodes' quorum state), for tests and notebook 07.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import TopicNotFoundError

if TYPE_CHECKING:
    from .cluster import ClusterNode

__all__ = ["PartitionState", "ReplicaViews"]


@dataclass(frozen=True)
class PartitionState:
    """Who holds a partition, as the cluster's metadata says now."""

    partition: int
    leader: int | None
    """The node id of the leader; None while the partition has none (offline)."""
    replicas: tuple[int, ...]
    """Every node that holds a copy, in the assignment's order."""
    isr: tuple[int, ...]
    """The in-sync replicas: those the leader counts for ``acks=all`` (sorted)."""


class ReplicaViews:
    """The partition and replica reads of a :class:`~kafka_crud.cluster.LocalCluster`."""

    if TYPE_CHECKING:  # provided by LocalCluster
        _nodes: list[ClusterNode]

        def _metadata(self, topic: str | None = None) -> Any: ...
        def node(self, node_id: int) -> ClusterNode: ...
        def _wait(self, check: Callable[[], bool], what: str, deadline: float, *, starting: bool = False) -> None: ...

    def partitions(self, topic: str) -> dict[int, PartitionState]:
        """Leader, replicas and in-sync replicas of every partition of ``topic``."""
        info = self._metadata(topic).topics.get(topic)
        if info is None or (info.error is not None and not info.partitions):
            raise TopicNotFoundError(f"Topic {topic!r} does not exist on the cluster")
        return {
            p: PartitionState(p, m.leader if m.leader >= 0 else None, tuple(m.replicas), tuple(sorted(m.isrs)))
            for p, m in sorted(info.partitions.items())
        }

    def partition(self, topic: str, partition: int = 0) -> PartitionState:
        """Leader, replicas and in-sync replicas of one partition."""
        return self.partitions(topic)[partition]

    def leader(self, topic: str, partition: int = 0) -> int | None:
        """The node id leading ``partition`` of ``topic`` (None: no leader now)."""
        return self.partition(topic, partition).leader

    def isr(self, topic: str, partition: int = 0) -> tuple[int, ...]:
        """The in-sync replicas of ``partition`` (node ids, sorted)."""
        return self.partition(topic, partition).isr

    def controller(self) -> int | None:
        """The node id of the active controller (the quorum's leader), from the nodes' quorum state."""
        best: tuple[int, int] | None = None
        for node in self._nodes:
            if not node.is_running():
                continue
            path = node.log_dir / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            leader, epoch = state.get("leaderId", -1), state.get("leaderEpoch", -1)
            if leader >= 0 and self.node(leader).is_running() and (best is None or epoch > best[1]):
                best = (leader, epoch)
        return best[0] if best else None

    def wait_for_isr(
        self, topic: str, partition: int = 0, *, size: int | None = None, nodes: set[int] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, ...]:
        """Wait until the ISR of ``partition`` has ``size`` members (or is exactly ``nodes``); return it.

        Returns the ISR as the check saw it: each metadata request may be answered by another
        node, whose view may lag behind by a moment, so asking again could see an older one.
        """
        seen: list[tuple[int, ...]] = []

        def check() -> bool:
            isr = self.isr(topic, partition)
            seen[:] = [isr]
            return (size is None or len(isr) == size) and (nodes is None or set(isr) == nodes)

        self._wait(check, f"the ISR of {topic}-{partition} to be {nodes or size}", time.monotonic() + timeout)
        return seen[0]

    def wait_for_leader(
        self, topic: str, partition: int = 0, *, not_on: int | None = None, timeout: float = 60.0,
    ) -> int:
        """Wait until ``partition`` has a leader (other than ``not_on``); return its node id."""
        found: list[int] = []

        def check() -> bool:
            leader = self.leader(topic, partition)
            found[:] = [leader] if leader is not None else []
            return leader is not None and leader != not_on

        self._wait(check, f"a new leader for {topic}-{partition}", time.monotonic() + timeout)
        return found[0]  # as the check saw it (see wait_for_isr)
