"""``kafka-crud log`` and ``kafka-crud compact``: what is in a topic, and one cleaner pass over it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

__all__ = ["cmd_compact", "cmd_log"]


def cmd_log(args: argparse.Namespace) -> int:
    import csv
    import json

    from .connection import Kafka
    from .records import classify

    records = Kafka(args.bootstrap_servers).read_log(args.topic)
    if not args.markers:
        records = [r for r in records if not r.is_marker]
    rows = [
        {
            "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
            "key": _text(r.key), "value": _text(r.value), "status": status, "superseded_by": newer,
        }
        for r, (status, newer) in zip(records, classify(records), strict=True)
    ]
    if args.format == "json":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["partition"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_table(rows)
    return 0


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


def _print_table(rows: Sequence[Mapping[str, object]]) -> None:
    columns = ["partition", "offset", "status", "key", "value"]
    cells = [[("null" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [min(60, max([len(c)] + [len(r[i]) for r in cells])) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row_cells in cells:
        print("  ".join(v[:w].ljust(w) for v, w in zip(row_cells, widths, strict=True)).rstrip())
    print(f"({len(rows)} records)")
