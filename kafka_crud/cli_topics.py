"""``kafka-crud log`` and ``kafka-crud compact``: what is in a topic, and one cleaner pass over it.

``log`` streams: it writes each batch of records as it reads them, classified by a scan
(:mod:`kafka_crud.scan`: two passes per partition, memory sized by the keys), so a topic of
millions of records is printed without holding them. ``--summary`` counts instead
(:mod:`kafka_crud.summary`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from json.encoder import encode_basestring
from typing import Any, TextIO

from .config import BOOTSTRAP_ENV
from .values import all_text, schema_id, shown, value_kind

__all__ = ["add_log_command", "cmd_compact", "cmd_log"]

#: Rows the table reads before it fixes its column widths (later rows keep them, or overflow).
TABLE_SAMPLE = 1000
MAX_CELL = 60
TABLE_COLUMNS = ("partition", "offset", "status", "key", "value")
CSV_COLUMNS = ("partition", "offset", "timestamp", "key", "value", "status", "superseded_by", "key_kind", "value_kind")


def add_log_command(sub: Any) -> None:
    """The ``log`` subcommand and its options (``sub``: the parser's subparsers)."""
    p = sub.add_parser("log", help="every record now in a topic (or a range of it), oldest first per partition")
    p.add_argument("--bootstrap-servers", default=None, help=f"default: ${BOOTSTRAP_ENV}")
    p.add_argument("--topic", default="user")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="json: one object per line, written as the records are read")
    p.add_argument("--markers", action="store_true", help="also show the kit's own roll markers")
    p.add_argument("--partition", type=_offset, action="append", default=None, metavar="N",
                   help="only this partition (repeat for more)")
    p.add_argument("--from-offset", type=_offset, default=None, metavar="N", help="from this offset on")
    p.add_argument("--to-offset", type=_offset, default=None, metavar="N",
                   help="only offsets below this one (an end offset: N itself is left out)")
    p.add_argument("--last", type=_count, default=None, metavar="N",
                   help="only the last N records of each partition (with --key: the last N of that key)")
    p.add_argument("--key", default=None, help="only the records of this key (UTF-8)")
    p.add_argument("--summary", action="store_true",
                   help="per partition: records, live keys, superseded, tombstones, markers and watermarks")
    p.set_defaults(func=cmd_log)


def _offset(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def cmd_log(args: argparse.Namespace) -> int:
    from .connection import Kafka
    from .scan import scan_batches

    kafka = Kafka(args.bootstrap_servers)
    try:
        if args.summary:
            if args.from_offset is not None or args.to_offset is not None or args.last or args.key is not None:
                print("kafka-crud: --summary counts whole partitions: leave out --from-offset, --to-offset, "
                      "--last and --key (--partition narrows it)", file=sys.stderr)
                return 2
            _write_summary(kafka, args)
            return 0
        batches = scan_batches(kafka, args.topic, partitions=args.partition, from_offset=args.from_offset,
                               to_offset=args.to_offset, last=args.last, key=args.key, markers=args.markers)
        lines = _json_lines(batches) if args.format == "json" else _csv_lines(batches) if args.format == "csv" \
            else _table_lines(batches)
        out = sys.stdout
        for chunk in lines:
            out.write(chunk)
        out.flush()
    except BrokenPipeError:  # `kafka-crud log | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _json_lines(batches: Iterator[Any]) -> Iterator[str]:
    """One JSON object per record and line, a batch at a time (json.dumps' spacing, not ASCII-only)."""
    from confluent_kafka import Message

    for batch in batches:
        messages = batch.messages
        keys, values = list(map(Message.key, messages)), list(map(Message.value, messages))
        offsets = list(map(Message.offset, messages))
        newest = list(map(batch.latest.get, keys))  # None for a record without a key: never superseded
        stamps = [ts for _, ts in map(Message.timestamp, messages)]
        texts = _escaped(all_text(keys)), _escaped(all_text(values))
        head = f'{{"partition": {batch.partition}, "offset": '
        if texts[0] is not None and texts[1] is not None:
            # The usual batch: every key and value is text; one decode for all of them.
            live = '"status": "live", "superseded_by": null, "key_kind": "text", "value_kind": "text"}\n'
            older = '"status": "superseded", "superseded_by": %d, "key_kind": "text", "value_kind": "text"}\n'
            yield "".join([
                f'{head}{o}, "timestamp": {ts}, "key": {k}, "value": {v}, {live if n is None or n == o else older % n}'
                for o, ts, k, v, n in zip(offsets, stamps, texts[0], texts[1], newest, strict=True)
            ])
            continue
        lines = []
        for k, v, o, n, ts in zip(keys, values, offsets, newest, stamps, strict=True):
            if n is not None and n != o:
                status, newer = "superseded", n
            else:
                status, newer = ("tombstone" if v is None else "live"), "null"
            ks, kk, ki = _json_bytes(k, "key")
            vs, vk, vi = _json_bytes(v, "value")
            lines.append(f'{head}{o}, "timestamp": {ts}, "key": {ks}, "value": {vs}, "status": "{status}", '
                         f'"superseded_by": {newer}, "key_kind": "{kk}", "value_kind": "{vk}"{ki}{vi}}}\n')
        yield "".join(lines)


def _escaped(texts: list[str] | None) -> list[str] | None:
    return None if texts is None else list(map(encode_basestring, texts))


def _json_bytes(raw: bytes | None, name: str) -> tuple[str, str, str]:
    """A key or value as JSON, its kind, and its schema id field (text as text; other bytes in hex)."""
    kind = value_kind(raw)
    if raw is None:
        return "null", kind, ""
    if kind in ("text", "empty"):
        return encode_basestring(raw.decode()), kind, ""
    found = schema_id(raw)
    return f'"{raw.hex()}"', kind, (f', "{name}_schema_id": {found}' if found is not None else "")


def _cells(batches: Iterator[Any], *, table: bool) -> Iterator[list[list[Any]]]:
    from .scan import status_of

    for batch in batches:
        latest, rows = batch.latest, []
        msg: Any
        for msg in batch.messages:
            k, v, o = msg.key(), msg.value(), msg.offset()
            status, newer = status_of(k, o, v, latest)
            if table:
                rows.append([batch.partition, o, status, shown(k), shown(v)])
            else:
                kk, vk = value_kind(k), value_kind(v)
                rows.append([batch.partition, o, msg.timestamp()[1], _csv_text(k, kk), _csv_text(v, vk), status,
                             newer, kk, vk])
        yield rows


def _csv_text(raw: bytes | None, kind: str) -> str | None:
    if raw is None:
        return None
    return raw.decode() if kind in ("text", "empty") else raw.hex()


def _csv_lines(batches: Iterator[Any]) -> Iterator[str]:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # as csv.DictWriter wrote it before
    writer.writerow(CSV_COLUMNS)
    for rows in _cells(batches, table=False):
        writer.writerows(rows)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _table_lines(batches: Iterator[Any]) -> Iterator[str]:
    """The table: widths from the first rows (at most 60 characters), later rows stream with them."""
    sample: list[list[str]] = []
    rows = (row for chunk in _cells(batches, table=True) for row in chunk)
    count = 0
    widths: list[int] | None = None
    for row in rows:
        cells = ["null" if c is None else str(c) for c in row]
        count += 1
        if widths is None:
            sample.append(cells)
            if len(sample) < TABLE_SAMPLE:
                continue
            widths = _widths(sample)
            yield _header(widths)
            yield "".join(_line(c, widths) for c in sample)
            sample = []
            continue
        yield _line(cells, widths)
    if widths is None:
        widths = _widths(sample)
        yield _header(widths)
        yield "".join(_line(c, widths) for c in sample)
    yield f"({count} records)\n"


def _widths(sample: Sequence[Sequence[str]]) -> list[int]:
    return [min(MAX_CELL, max([len(c)] + [len(r[i]) for r in sample])) for i, c in enumerate(TABLE_COLUMNS)]


def _header(widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(TABLE_COLUMNS, widths, strict=True)).rstrip() + "\n"


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    # A cell is cut at 60 characters; a later row's longer cell widens its line, not the table.
    return "  ".join(v[:MAX_CELL].ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip() + "\n"


def _write_summary(kafka: Any, args: argparse.Namespace) -> None:
    import json

    from .summary import summarize
    from .views import WATERMARK_COLUMNS

    parts = summarize(kafka, args.topic, partitions=args.partition)
    rows = [[getattr(s, c) for c in WATERMARK_COLUMNS] for s in parts]
    out: TextIO = sys.stdout
    if args.format == "json":
        for row in rows:
            out.write(json.dumps(dict(zip(WATERMARK_COLUMNS, row, strict=True))) + "\n")
        return
    if args.format == "csv":
        out.write(",".join(WATERMARK_COLUMNS) + "\r\n")
        out.writelines(",".join(map(str, row)) + "\r\n" for row in rows)
        return
    total = ["all"] + [sum(row[i] for row in rows) for i in range(1, len(WATERMARK_COLUMNS))]
    total[1] = total[2] = ""  # watermarks do not add up across partitions
    cells = [[str(c) for c in row] for row in [*rows, total]]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(WATERMARK_COLUMNS)]
    out.write("  ".join(c.rjust(w) for c, w in zip(WATERMARK_COLUMNS, widths, strict=True)) + "\n")
    for row_cells in cells:
        out.write("  ".join(v.rjust(w) for v, w in zip(row_cells, widths, strict=True)) + "\n")
    out.write(f"({len(parts)} partitions of {args.topic!r}; live_keys is what a table rebuilt from it holds)\n")


def cmd_compact(args: argparse.Namespace) -> int:
    from .compaction import compact
    from .connection import Kafka

    kafka = Kafka(args.bootstrap_servers)
    print(f"Rolling the segments of {args.topic!r} and waiting for the log cleaner...", file=sys.stderr, flush=True)
    result = compact(kafka, args.topic, timeout=args.timeout, force=args.force)
    removed = [r for r in result.removed if not r.is_marker]
    before = [r for r in result.before if not r.is_marker]
    print(f"One cleaner pass over {args.topic!r} in {result.seconds:.1f} s: {len(removed)} of {len(before)} "
          f"records removed (superseded), rolled partitions {sorted(result.rolled)}")
    for r in removed:
        print(f"  removed partition {r.partition} offset {r.offset} key {_text(r.key)}")
    return 0


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")
