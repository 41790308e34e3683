"""The snapshot file, its users table, and a store that starts from one and changes above it (no broker)."""

from __future__ import annotations

import random
from http import HTTPStatus
from pathlib import Path

import pytest

from kafka_crud.idempotency import Outcome
from kafka_crud.records import LogRecord, Position
from kafka_crud.snapshot import SnapshotHeader, read_snapshot, write_snapshot
from kafka_crud.store import MergedUsers, StoreState, UserStore, sorted_users
from kafka_crud.table import SortedTable, pack_table


def _entry(i: int) -> tuple[bytes, int, int]:
    return (b'{"email":"u%d@x","name":"N%d"}' % (i, i), i % 3, i)


def _table(keys: range) -> SortedTable:
    items = sorted((b"u%d@x" % i, _entry(i)) for i in keys)
    return SortedTable(b"".join(pack_table(items)))


def test_a_table_finds_every_key_it_holds_and_no_other() -> None:
    table = _table(range(0, 2000, 2))
    assert len(table) == 1000
    for i in range(2000):
        assert table.get(b"u%d@x" % i) == (_entry(i) if i % 2 == 0 else None)
    assert table.get(b"") is None
    assert table.get(b"\xff" * 300) is None
    assert list(table) == sorted(b"u%d@x" % i for i in range(0, 2000, 2))
    empty = SortedTable(b"".join(pack_table([])))
    assert len(empty) == 0
    assert empty.get(b"u1@x") is None


def test_a_table_refuses_items_out_of_order_and_a_buffer_cut_short() -> None:
    with pytest.raises(ValueError, match="increasing key order"):
        pack_table([(b"b", _entry(1)), (b"a", _entry(2))])
    packed = b"".join(pack_table(sorted((b"u%d@x" % i, _entry(i)) for i in range(10))))
    for cut in (0, 7, 8, 40, len(packed) - 1):
        with pytest.raises(ValueError, match="table"):
            SortedTable(packed[:cut])


def _apply(store: UserStore, partition: int, offset: int, key: bytes, value: bytes | None) -> None:
    store.apply(LogRecord(store.topic, partition, offset, 0, key, value))


def test_a_store_on_a_table_reads_as_if_every_record_had_been_applied_to_an_empty_one() -> None:
    # The same records: the first 300 to both stores (one of them through a table), then changes to both.
    rng = random.Random(7)
    reference, layered = UserStore("t"), UserStore("t")
    for i in range(300):
        _apply(reference, i % 3, i, b"u%d@x" % i, _entry(i)[0])
    layered_state = reference.export_state()
    table = SortedTable(b"".join(pack_table(sorted_users(layered_state.values))))
    layered.load_state(type(layered_state)(layered_state.applied, table, layered_state.invalid, []))
    assert len(layered) == 300
    offset = 1000
    for _ in range(600):
        i = rng.randrange(400)  # keys of the table and new ones
        key, value = b"u%d@x" % i, rng.choice([None, b"", b"not json", _entry(i)[0] + b" "])
        for store in (reference, layered):
            _apply(store, i % 3, offset, key, value)
        offset += 1
    assert len(layered) == len(reference)
    assert layered.users() == reference.users()
    assert layered.invalid == reference.invalid
    for i in range(400):
        email = f"u{i}@x"
        assert layered.get(email) == reference.get(email)
        assert (email in layered) == (email in reference)
    # What it writes to its next snapshot is the same too: the table and the changes, merged in key order.
    merged = layered.export_state().values
    assert isinstance(merged, MergedUsers)
    assert list(sorted_users(merged)) == list(sorted_users(reference.export_state().values))
    assert len(merged) == len(reference)


def test_a_store_on_a_table_keeps_every_partition() -> None:
    store = UserStore("t")
    state = store.export_state()
    store.load_state(type(state)({0: 1}, _table(range(3)), {}, []))
    with pytest.raises(RuntimeError, match="snapshot"):
        store.drop_partition(0)


def test_a_snapshot_keeps_the_outcome_of_this_instances_own_write(tmp_path: Path) -> None:
    # The service remembers its own writes' outcomes before the consumer reads them back, with
    # the status as an HTTPStatus: the snapshot written at a stop right after must hold it.
    outcome = Outcome("fp", HTTPStatus.CREATED, Position("t", 1, 7), 1_700_000_000.5)
    state = StoreState({0: 0, 1: 8}, {b"ada@x": _entry(7)}, {}, [("k-1", outcome)])
    path = tmp_path / "t.snapshot"
    write_snapshot(path, SnapshotHeader("t", "id", "cluster", 2, state.applied, 1.0, 1), state)
    read = read_snapshot(path).state
    assert read.outcomes == [("k-1", outcome)]
    assert dict(read.values.items()) == {b"ada@x": _entry(7)}
