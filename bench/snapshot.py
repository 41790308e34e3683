"""`make bench`, restart from a snapshot: `kafka-crud serve --state-dir` beside a full rebuild.

N users are loaded (the topic's delete.retention.ms set to Kafka's default, 1 day, so that the
snapshot stays usable for the run); an instance with --state-dir rebuilds, stops (writing its
snapshot), and the snapshot is put aside. Then CHANGES changes are written (a tenth of them
deletes), and, interleaved, each repetition starts a full rebuild (no --state-dir) and a restart
from a copy of that snapshot, each measured from process start to the first 200 on /readyz.
After each restart every change is checked over HTTP: the new names, and 404 for the deleted.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
USER_EMAIL = "user{:07d}@example.com"
#: The target: ready from a snapshot within this fraction of a full rebuild.
SNAPSHOT_VS_REBUILD = 0.25


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def _serve(servers: str, topic: str, workdir: Path, *extra: str) -> Iterator[tuple[int, float]]:
    """`kafka-crud serve` in a subprocess; yields its port and the seconds from process start to ready."""
    from kafka_crud.broker import free_port

    port = free_port()
    with (workdir / f"serve-{port}.log").open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen([str(VENV_BIN / "kafka-crud"), "serve", "--port", str(port),
                                    "--bootstrap-servers", servers, "--topic", topic, *extra],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = started + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"kafka-crud serve exited with {process.returncode}")
            with contextlib.suppress(OSError):
                if _get(port, "/readyz")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("kafka-crud serve not ready within 300 s")
            time.sleep(0.01)
        yield port, time.monotonic() - started
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # a clean stop: with --state-dir, it writes its snapshot
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _changes(servers: str, topic: str, n: int, changes: int) -> dict[str, str | None]:
    """Write ``changes`` changes to users spread over the table, every tenth a delete; return what each user is now."""
    from kafka_crud.producer import UserProducer
    from kafka_crud.records import User

    expected: dict[str, str | None] = {}
    with UserProducer(servers, topic=topic) as producer:
        for i in range(changes):
            email = USER_EMAIL.format(i * (n // changes))
            if i % 10 == 0:
                producer.delete(email)
                expected[email] = None
            else:
                producer.put(User(email, f"Changed {i}"))
                expected[email] = f"Changed {i}"
    return expected


def _check(port: int, expected: dict[str, str | None]) -> int:
    """How many of the expected changes the instance does not show (0 when every change is visible)."""
    missed = 0
    for email, name in expected.items():
        status, body = _get(port, f"/user?email={email}")
        if (name is None and status != 404) or (name is not None and (status != 200 or name.encode() not in body)):
            missed += 1
    return missed


def bench_snapshot(servers: str, quick: bool, workdir: Path, load_users: Callable[[str, str, int], Any],
                   *, users: int | None = None, changes: int = 1000, repeats: int | None = None) -> dict[str, Any]:
    from kafka_crud.connection import Kafka
    from kafka_crud.snapshot import snapshot_path

    load_at_start = _loadavg()
    n = users or (10_000 if quick else 1_000_000)
    repeats = repeats or (1 if quick else 3)
    topic = f"bench-snapshot-{n}-{uuid.uuid4().hex[:6]}"
    _log(f"snapshot: loading {n:,} users into {topic}")
    load_users(servers, topic, n)
    Kafka(servers).alter_topic_config(topic, {"delete.retention.ms": "86400000"})
    state = workdir / "state"
    with _serve(servers, topic, workdir, "--state-dir", str(state), "--snapshot-interval", "3600") as (_, first):
        _log(f"snapshot: first rebuild with --state-dir ready in {first:.2f} s")
    stopped_at = time.monotonic()
    snapshot = snapshot_path(state, topic)
    aside = workdir / "snapshot-aside"
    shutil.copy(snapshot, aside)
    expected = _changes(servers, topic, n, changes)
    rows: dict[str, list[float]] = {"full rebuild": [], "from the snapshot": []}
    missed: list[int] = []
    for r in range(repeats):
        for kind in (("full rebuild", "from the snapshot") if r % 2 == 0 else ("from the snapshot", "full rebuild")):
            extra: tuple[str, ...] = ()
            if kind == "from the snapshot":
                shutil.copy(aside, snapshot)  # the same snapshot each time: CHANGES changes behind the log
                extra = ("--state-dir", str(state), "--snapshot-interval", "3600")
            with _serve(servers, topic, workdir, *extra) as (port, seconds):
                rows[kind].append(seconds)
                missed.append(_check(port, expected))
            _log(f"snapshot N={n:,} {kind}: ready in {seconds:.2f} s, {missed[-1]} changes not visible")
    full, fast = (statistics.median(rows[k]) for k in ("full rebuild", "from the snapshot"))
    return {"users": n, "changes": changes, "deletes": sum(v is None for v in expected.values()),
            "snapshot_mb": round(aside.stat().st_size / 1e6, 1), "snapshot_age_s": round(time.monotonic() - stopped_at),
            "full_rebuild_s": round(full, 3), "from_snapshot_s": round(fast, 3), "ratio": round(fast / full, 3),
            "samples": {k: [round(s, 3) for s in v] for k, v in rows.items()}, "changes_not_visible": max(missed),
            "loadavg": [load_at_start, _loadavg()]}


def _loadavg() -> float | None:
    try:
        return round(float(Path("/proc/loadavg").read_text().split()[0]), 2)
    except (OSError, ValueError, IndexError):
        return None


def render(block: dict[str, Any]) -> list[str]:
    if "error" in block:
        return ["### Restart from a snapshot (--state-dir)", "", f"Not measured: {block['error']}", ""]
    return [
        "### Restart from a snapshot (--state-dir)", "",
        f"{block['users']:,} users, {block['changes']:,} changes since the snapshot ({block['deletes']} of them "
        f"deletes); snapshot {block['snapshot_mb']} MB. Process start to ready, medians, interleaved; "
        f"load average {block['loadavg'][0]} at the start, {block['loadavg'][1]} at the end:", "",
        "| start | seconds (median) | runs (s) |", "|---|---:|---|",
        *(f"| {kind} | {statistics.median(s):.3f} | {', '.join(f'{x:.2f}' for x in s)} |"
          for kind, s in block["samples"].items()),
        "", f"From the snapshot: {block['ratio']:.2f} of a full rebuild; changes not visible after a restart: "
        f"{block['changes_not_visible']}.", "",
    ]


def targets(block: dict[str, Any]) -> list[dict[str, Any]]:
    if "ratio" not in block:
        return []
    return [{"target": f"ready from a snapshot ({block['changes']:,} changes since) within "
                       f"{SNAPSHOT_VS_REBUILD:g} of a full rebuild, N={block['users']:,}",
             "measured": f"{block['from_snapshot_s']:.2f} s vs {block['full_rebuild_s']:.2f} s ({block['ratio']:.2f})",
             "met": block["ratio"] <= SNAPSHOT_VS_REBUILD},
            {"target": "every change since the snapshot visible after the restart",
             "measured": f"{block['changes_not_visible']} not visible", "met": block["changes_not_visible"] == 0}]
