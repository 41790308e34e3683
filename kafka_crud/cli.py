"""``kafka-crud``: the command line.

    kafka-crud broker [--port N] [--data-dir DIR] [--nodes 3]   a real Kafka broker (or cluster) in the foreground
    kafka-crud serve  [--host H] [--port N] [--bootstrap-servers S]   the CRUD HTTP endpoint
    kafka-crud log    [--topic user] [--format table|csv|json]        every record in the log
    kafka-crud lab    [JUPYTER ARGS...]               JupyterLab with a broker running
    kafka-crud with-broker -- COMMAND [ARGS...]       any command with a broker running
    kafka-crud fetch                                  fetch the broker's jars and check Java
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from .config import BOOTSTRAP_ENV, KAFKA_VERSION, bootstrap_servers_from_env
from .errors import KafkaCrudError

__all__ = ["main"]

log = logging.getLogger("kafka_crud.cli")


class _Stop(Exception):
    """Raised in the main thread by SIGTERM, so `finally` blocks run as for Ctrl-C."""


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_forever() -> None:
    with suppress(KeyboardInterrupt, _Stop):
        threading.Event().wait()


@contextmanager
def _broker_unless_configured(bootstrap_servers: str | None, *, quiet: bool = False, nodes: int = 1) -> Iterator[str]:
    """The given or configured bootstrap servers, else an embedded broker (or cluster) for the duration."""
    servers = bootstrap_servers or bootstrap_servers_from_env()
    if servers:
        yield servers
        return
    from .broker import LocalKafka

    if not quiet:
        what = "broker" if nodes == 1 else f"cluster of {nodes} nodes"
        print(f"Starting an embedded Apache Kafka {KAFKA_VERSION} {what}...", file=sys.stderr, flush=True)
    with LocalKafka(nodes=nodes) as kafka:
        if not quiet:
            print(f"Kafka ready at {kafka.bootstrap_servers}", file=sys.stderr, flush=True)
        yield kafka.bootstrap_servers


def cmd_fetch(args: argparse.Namespace) -> int:
    from .jvm import fetch_jars, find_java

    java = find_java()
    print(f"Java {java.version}: {java.executable}")
    if os.environ.get("KAFKA_HOME"):
        print(f"Using KAFKA_HOME={os.environ['KAFKA_HOME']}")
    else:
        print(f"Apache Kafka {KAFKA_VERSION} jars: {fetch_jars()}")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import LocalKafka

    kafka = LocalKafka(port=args.port, data_dir=args.data_dir, nodes=args.nodes)
    what = "" if args.nodes == 1 else f" ({args.nodes} nodes)"
    print(f"Starting Apache Kafka {KAFKA_VERSION}{what}...", file=sys.stderr, flush=True)
    with _stop_on_sigterm():
        try:
            kafka.start()
            print(f"Kafka ready at {kafka.bootstrap_servers} (data in {kafka.data_dir}); Ctrl-C stops it",
                  flush=True)
            _wait_forever()
        except (KeyboardInterrupt, _Stop):
            pass
        finally:
            kafka.stop()
    print("Kafka stopped", file=sys.stderr, flush=True)
    return 0


def _run_child(command: Sequence[str], env: dict[str, str]) -> int:
    """Run a command to its end; SIGTERM to us is passed on to it, Ctrl-C reaches it directly."""
    child = subprocess.Popen(list(command), env=env)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue  # the child got the same Ctrl-C and decides what to do with it
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.terminate()
            child.wait()


def _after_dashes(argv: list[str]) -> list[str]:
    """argparse.REMAINDER keeps a leading ``--``; the command starts after it."""
    return argv[1:] if argv[:1] == ["--"] else argv


def cmd_with_broker(args: argparse.Namespace) -> int:
    command = _after_dashes(args.command)
    if not command:
        print("kafka-crud with-broker: give a command to run, e.g. kafka-crud with-broker -- pytest", file=sys.stderr)
        return 2
    with _broker_unless_configured(None, nodes=args.nodes) as servers:
        env = {**os.environ, BOOTSTRAP_ENV: servers}
        return _run_child(command, env)


def cmd_lab(args: argparse.Namespace) -> int:
    notebooks = Path(args.notebook_dir)
    command = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebooks}", *_after_dashes(args.jupyter_args)]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in command:
        command.append("--allow-root")  # containers and CI run as root; JupyterLab refuses it otherwise
    with _broker_unless_configured(None, nodes=args.nodes) as servers:
        print(f"JupyterLab kernels get {BOOTSTRAP_ENV}={servers}; Ctrl-C twice stops JupyterLab and Kafka",
              file=sys.stderr, flush=True)
        return _run_child(command, {**os.environ, BOOTSTRAP_ENV: servers})


def cmd_serve(args: argparse.Namespace) -> int:
    from .connection import Kafka
    from .consumer import Progress
    from .server import serve_in_thread

    def progress(p: Progress) -> None:
        if p.fraction >= 1:
            message = f"Caught up with {args.topic!r}: {p.total} offsets in {p.elapsed:.1f} s"
        else:
            message = f"Rebuilding users from {args.topic!r}: {p.applied}/{p.total} offsets ({p.fraction:.0%})"
        print(message, file=sys.stderr, flush=True)

    with _stop_on_sigterm(), _broker_unless_configured(args.bootstrap_servers) as servers:
        handle = serve_in_thread(
            Kafka(servers), topic=args.topic, host=args.host, port=args.port, wait_ready=None,
            partitions=args.partitions, on_progress=progress,
        )
        try:
            print(f"Serving users from topic {args.topic!r} on {servers} at {handle.url} "
                  "(503 until caught up; Ctrl-C stops)", flush=True)
            _wait_forever()
        finally:
            handle.stop()
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    import csv
    import json

    from .connection import Kafka
    from .records import classify

    records = Kafka(args.bootstrap_servers).read_log(args.topic)
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


def _nodes(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of nodes, 1 (a single broker) or more, e.g. 3")
    return int(text)


def _nodes_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=_nodes, default=1,
                        help="nodes of the embedded Kafka: 1 (default) or e.g. 3, a replicated cluster "
                             "(replication factor 3, min.insync.replicas 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kafka-crud", description="Kafka as a database, on a real broker.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the kit does")
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("fetch", help="fetch the broker's jars once and check Java")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("broker", help="run a real Kafka broker in the foreground until Ctrl-C")
    p.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    p.add_argument("--data-dir", default=None,
                   help="keep topics and records here across restarts (default: a temporary dir)")
    _nodes_option(p)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("with-broker", help="run a command with KAFKA_BOOTSTRAP_SERVERS set to a broker")
    _nodes_option(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=cmd_with_broker)

    p = sub.add_parser("lab", help="JupyterLab with a broker running")
    p.add_argument("--notebook-dir", default="notebooks")
    _nodes_option(p)
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed on to jupyter lab")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("serve", help="the CRUD HTTP endpoint on a compacted topic")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 for a free one)")
    p.add_argument("--bootstrap-servers", default=None,
                   help=f"Kafka to use (default: ${BOOTSTRAP_ENV}, else an embedded broker)")
    p.add_argument("--topic", default="user")
    p.add_argument("--partitions", type=int, default=3, help="partitions when the topic is created")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("log", help="every record now in a topic, oldest first per partition")
    p.add_argument("--bootstrap-servers", default=None, help=f"default: ${BOOTSTRAP_ENV}")
    p.add_argument("--topic", default="user")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_log)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # librdkafka reports passing states (a coordinator still loading, a reconnect) as warnings,
        # and a refused connection as an error on every retry: the kit's own error says what to do.
        logging.getLogger("kafka_crud.librdkafka").setLevel(logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except KafkaCrudError as exc:
        print(f"kafka-crud: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
