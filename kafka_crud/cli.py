"""``kafka-crud``: the command line.

    kafka-crud broker [--port N] [--data-dir DIR] [--nodes 3]   a real Kafka broker (or cluster) in the foreground
    kafka-crud serve  [--host H] [--port N] [--bootstrap-servers S]   the CRUD HTTP endpoint
    kafka-crud serve  --group NAME [--advertise URL] [--instance ID]   one instance of the partitioned design
    kafka-crud serve  --state-dir DIR [--snapshot-interval S]   restart from a local snapshot
    kafka-crud log    [--topic user] [--format table|csv|json] [--summary]   every record in the log (or a range)
    kafka-crud compact [--topic user] [--force]       one log-cleaner pass, now
    kafka-crud lab    [JUPYTER OPTIONS...]            JupyterLab with a broker beside it
    kafka-crud with-broker [--background] -- COMMAND [ARGS...]    any command with a broker
    kafka-crud fetch  [--class-archive]               fetch the broker's jars and check Java
    kafka-crud notebooks [--to DIR]                   copy the course's notebooks (never over edits)

``lab`` and ``with-broker --background`` start the broker *beside* the command
(:mod:`kafka_crud.lab`): the command starts at once, and a broker that cannot start is reported,
not fatal. Plain ``with-broker`` starts it first and fails when it cannot (tests, scripts).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from .cli_topics import add_log_command, cmd_compact
from .config import BOOTSTRAP_ENV, KAFKA_VERSION, bootstrap_servers_from_env
from .errors import ConfigError, KafkaCrudError

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
    from .jvm import cache_dir, fetch_jars, find_java

    java = find_java()
    print(f"Java {java.version}: {java.executable}")
    if os.environ.get("KAFKA_HOME"):
        print(f"Using KAFKA_HOME={os.environ['KAFKA_HOME']}")
    else:
        print(f"Apache Kafka {KAFKA_VERSION} jars: {fetch_jars()}")
    if args.class_archive:
        import time

        from .broker import LocalKafka

        # The archive is written when a first broker stops: start one and stop it, for an image.
        for _ in range(2):
            began = time.monotonic()
            with LocalKafka() as kafka:
                mapped, took = kafka.class_sharing, time.monotonic() - began
            if mapped:
                print(f"Class-data-sharing archive in {cache_dir() / 'cds'}: a broker starts in {took:.1f} s")
                break
        else:
            print("No class-data-sharing archive could be written for this Java", file=sys.stderr)
            return 1
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import LocalKafka
    from .lab import lab_status

    port = args.port
    status = lab_status()
    if port is None and status is not None and args.nodes == 1:
        port = status.port  # a terminal of a kit lab: where its notebooks look for the broker
        print(f"In a kafka-crud lab: the broker takes the lab's port {port} ({BOOTSTRAP_ENV})", file=sys.stderr)
    kafka = LocalKafka(port=port, data_dir=args.data_dir, nodes=args.nodes)
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


def _kit_jupyter_config(env: dict[str, str]) -> dict[str, str]:
    """The kit's Jupyter settings (kafka_crud/jupyter_config) ahead of the others, for its labs only."""
    ours = str(Path(__file__).with_name("jupyter_config"))
    others = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p != ours]
    return {**env, "JUPYTER_CONFIG_PATH": os.pathsep.join([ours, *others])}


def _run_beside_broker(command: Sequence[str]) -> int:
    """Run ``command`` at once, with the lab's broker starting beside it (or the configured Kafka)."""
    env = _kit_jupyter_config(dict(os.environ))
    if bootstrap_servers_from_env():
        return _run_child(command, env)
    from .broker import free_port
    from .lab import LabBroker, print_status

    broker = LabBroker(free_port(), on_change=print_status)
    print(f"Starting an embedded Apache Kafka {KAFKA_VERSION} broker beside the command; "
          f"it gets {BOOTSTRAP_ENV}={broker.bootstrap_servers}", file=sys.stderr, flush=True)
    broker.start()
    try:
        return _run_child(command, {**env, **broker.environment})
    finally:
        broker.stop()


def cmd_with_broker(args: argparse.Namespace) -> int:
    command = _after_dashes(args.command)
    if not command:
        print("kafka-crud with-broker: give a command to run, e.g. kafka-crud with-broker -- pytest", file=sys.stderr)
        return 2
    if args.background and args.nodes == 1:
        return _run_beside_broker(command)
    # A local cluster starts before the command: the lab's broker thread runs one broker only.
    with _broker_unless_configured(None, nodes=args.nodes) as servers:
        env = {**os.environ, BOOTSTRAP_ENV: servers}
        return _run_child(command, env)


def cmd_lab(args: argparse.Namespace) -> int:
    notebooks = Path(args.notebook_dir)
    command = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebooks}", *args.jupyter_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in command:
        command.append("--allow-root")  # containers and CI run as root; JupyterLab refuses it otherwise
    print("Ctrl-C twice stops JupyterLab and Kafka", file=sys.stderr, flush=True)
    if args.nodes > 1 and not bootstrap_servers_from_env():
        # A local cluster starts before JupyterLab: the lab's broker thread runs one broker only.
        with _broker_unless_configured(None, nodes=args.nodes) as servers:
            print(f"JupyterLab kernels get {BOOTSTRAP_ENV}={servers}", file=sys.stderr, flush=True)
            return _run_child(command, {**_kit_jupyter_config(dict(os.environ)), BOOTSTRAP_ENV: servers})
    return _run_beside_broker(command)


def cmd_notebooks(args: argparse.Namespace) -> int:
    from .jvm import system_cache_dir

    sources = [system_cache_dir() / "notebooks", Path(__file__).resolve().parent.parent / "notebooks"]
    source = next((s for s in sources if any(s.glob("*.ipynb"))), None)
    if source is None:
        raise ConfigError("The course's notebooks are not installed here: clone the repository to get them.")
    target = Path(args.to).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for notebook in sorted(source.rglob("*.ipynb")):  # the solutions/ folder too
        name = notebook.relative_to(source)
        if ".ipynb_checkpoints" in name.parts or (target / name).exists():  # edits are never overwritten
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, target / name)
        copied.append(str(name))
    print(f"{len(copied)} notebooks copied to {target}" + (f": {', '.join(copied)}" if copied else ""))
    return 0


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

    group = {"group": args.group, "advertise": args.advertise, "instance": args.instance} if args.group else {}
    if not args.group and (args.advertise or args.instance):
        print("kafka-crud serve: --advertise and --instance go with --group NAME", file=sys.stderr)
        return 2
    if args.group and args.state_dir:
        print("kafka-crud serve: --state-dir keeps the whole table, without --group (an instance of a group "
              "holds only its partitions)", file=sys.stderr)
        return 2
    if args.state_dir:
        from .state_dir import StateDir

        group = {"state_dir": StateDir(args.state_dir, interval=args.snapshot_interval)}
    with _stop_on_sigterm(), _broker_unless_configured(args.bootstrap_servers) as servers:
        handle = serve_in_thread(
            Kafka(servers), topic=args.topic, host=args.host, port=args.port, wait_ready=None,
            partitions=args.partitions, on_progress=progress, **group,
        )
        try:
            how = f" as {handle.service.url} in group {args.group!r}" if args.group else ""
            print(f"Serving users from topic {args.topic!r} on {servers} at {handle.url}{how} "
                  "(503 until caught up; Ctrl-C stops)", flush=True)
            if handle.browser_url != handle.url:
                print(f"In your browser, through Jupyter: {handle.browser_url}", flush=True)
            _wait_forever()
        finally:
            handle.stop()
    return 0


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
    p.add_argument("--class-archive", action="store_true",
                   help="also start and stop a broker once, so that its class-data-sharing archive is written "
                        "(an image's build: later brokers start in about half the time)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("notebooks", help="copy the course's notebooks into a folder, never over an existing one")
    p.add_argument("--to", default="notebooks", help="the folder (default: ./notebooks)")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("broker", help="run a real Kafka broker in the foreground until Ctrl-C")
    p.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    p.add_argument("--data-dir", default=None,
                   help="keep topics and records here across restarts (default: a temporary dir)")
    _nodes_option(p)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("with-broker", help="run a command with KAFKA_BOOTSTRAP_SERVERS set to a broker")
    p.add_argument("--background", action="store_true",
                   help="start the command at once and the broker beside it; a broker failure is reported, "
                        "not fatal (Binder's start script)")
    _nodes_option(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=cmd_with_broker)

    p = sub.add_parser("lab", help="JupyterLab with a broker beside it; other options go to jupyter lab",
                       allow_abbrev=False)
    p.add_argument("--notebook-dir", default="notebooks")
    _nodes_option(p)
    p.set_defaults(func=cmd_lab, jupyter_args=[])

    p = sub.add_parser("serve", help="the CRUD HTTP endpoint on a compacted topic")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 for a free one)")
    p.add_argument("--bootstrap-servers", default=None,
                   help=f"Kafka to use (default: ${BOOTSTRAP_ENV}, else an embedded broker)")
    p.add_argument("--topic", default="user")
    p.add_argument("--partitions", type=int, default=3, help="partitions when the topic is created")
    p.add_argument("--group", default=None,
                   help="join this consumer group and serve only its partitions' users; 307 to the others' owners")
    p.add_argument("--advertise", default=None,
                   help="with --group: the URL other instances redirect to (default: http://HOST:PORT)")
    p.add_argument("--instance", default=None,
                   help="with --group: the group.instance.id, the same after a restart (default: from the URL)")
    p.add_argument("--state-dir", default=None,
                   help="keep a snapshot of the users here and restart from it, replaying only what changed since")
    p.add_argument("--snapshot-interval", type=float, default=60.0,
                   help="with --state-dir: seconds between snapshots (default 60; at most half of delete.retention.ms)")
    p.set_defaults(func=cmd_serve)

    add_log_command(sub)

    p = sub.add_parser("compact", help="one log-cleaner pass over a compacted topic, now (rolls its segments)")
    p.add_argument("--bootstrap-servers", default=None, help=f"default: ${BOOTSTRAP_ENV}")
    p.add_argument("--topic", default="user")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the cleaner")
    p.add_argument("--force", action="store_true",
                   help="also on a topic the kit did not create (it appends roll markers and changes settings briefly)")
    p.set_defaults(func=cmd_compact)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command_name != "lab":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if "--" in extra:
            extra.remove("--")  # the first one only: the separator, not an argument of Jupyter's
        args.jupyter_args = extra
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
