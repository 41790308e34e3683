"""`make bench`, many instances: what Kafka-Min-Position costs, and how long a rebalance pauses a partition.

Every instance is a `kafka-crud serve` process, as in production; all traffic is on 127.0.0.1,
every loop is bounded in count and time.

1. Read your writes across instances: PUT on A, then at once GET the same user on B, N pairs,
   without a position (how many reads are stale, and their latency) and with the write's
   position in Kafka-Min-Position (0 stale; the latency the wait adds). Also GET on A with a
   position it has already applied: the cost of the header alone.
2. The partitioned design: two instances of a group, a third joins. A prober reads one user of
   each partition through the first instance every 10 ms and records how long each partition
   answered 503; the instances report their own pauses (/groupinfo). Then one instance is
   killed (kill -9): how long its partitions are unavailable (the session timeout, 6 s, plus
   the restore).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


class Conn:
    """A keep-alive HTTP connection to one instance."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        self.conn.request(method, path, body=body, headers=headers or {})
        answer = self.conn.getresponse()
        raw = answer.read()
        return answer.status, json.loads(raw) if raw else None, dict(answer.getheaders())

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def serve(servers: str, topic: str, workdir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    from kafka_crud.broker import free_port

    port = free_port()
    log = (workdir / f"serve-{port}.log").open("wb")
    process = subprocess.Popen([str(VENV_BIN / "kafka-crud"), "serve", "--port", str(port), "--bootstrap-servers",
                                servers, "--topic", topic, *extra], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = Conn(url)
            try:
                if conn.call("GET", "/readyz")[0] == 200:
                    return
            finally:
                conn.close()
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready within {timeout:.0f} s")


def min_position_latency(servers: str, workdir: Path, pairs: int) -> dict[str, Any]:
    """PUT on A, GET on B: stale reads and GET latency without and with Kafka-Min-Position."""
    from kafka_crud.connection import Kafka

    topic = f"bench-positions-{uuid.uuid4().hex[:6]}"
    Kafka(servers).create_topic(topic, partitions=3)
    out: dict[str, Any] = {"pairs": pairs}
    with serve(servers, topic, workdir) as (_, url_a), serve(servers, topic, workdir) as (_, url_b):
        wait_ready(url_a)
        wait_ready(url_b)
        a, b = Conn(url_a), Conn(url_b)
        try:
            for mode in ("without", "with", "with, already applied"):
                stale, latencies = 0, []
                for i in range(pairs):
                    email = f"pair{i % 50}@example.com"
                    name = f"{mode} {i}"
                    body = json.dumps({"email": email, "name": name}).encode()
                    status, _, headers = a.call("PUT", f"/user?email={email}", body)
                    assert status in (200, 201), status
                    position = f"{headers['Kafka-Partition']}-{headers['Kafka-Offset']}"
                    reader = a if mode == "with, already applied" else b
                    sent = {} if mode == "without" else {"Kafka-Min-Position": position}
                    started = time.perf_counter()
                    status, got, _ = reader.call("GET", f"/user?email={email}", headers=sent)
                    latencies.append(time.perf_counter() - started)
                    stale += status != 200 or got != {"email": email, "name": name}
                out[mode] = {"stale": stale, "p50_ms": _pct(latencies, 0.5), "p99_ms": _pct(latencies, 0.99),
                             "mean_ms": round(statistics.fmean(latencies) * 1000, 3)}
                _log(f"PUT on A, GET on B {mode} Kafka-Min-Position: {stale} stale of {pairs}, GET p50/p99 "
                     f"{out[mode]['p50_ms']}/{out[mode]['p99_ms']} ms")
        finally:
            a.close()
            b.close()
    out["added_p50_ms"] = round(out["with"]["p50_ms"] - out["without"]["p50_ms"], 2)
    out["added_p99_ms"] = round(out["with"]["p99_ms"] - out["without"]["p99_ms"], 2)
    return out


def _users_by_partition(count: int) -> dict[int, str]:
    from kafka_crud.partitioning import partition_for

    user = "user{:07d}@example.com"
    found: dict[int, str] = {}
    for i in range(count):
        found.setdefault(partition_for(user.format(i), 3), user.format(i))
        if len(found) == 3:
            break
    return found


class Prober:
    """Reads one user per partition through one instance every 10 ms; records each partition's 503 spans."""

    def __init__(self, url: str, users: dict[int, str]) -> None:
        self.url, self.users = url, users
        self.spans: dict[int, list[tuple[float, float]]] = {p: [] for p in users}
        self.counts: dict[str, int] = {}
        self._down: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from kafka_crud.client import UserClient

        client = UserClient(self.url, timeout=10)
        while not self._stop.is_set():
            for partition, email in self.users.items():
                try:
                    status = client.get(email).status
                except OSError:
                    status = 0  # a redirect to an instance that just died
                self.counts[str(status)] = self.counts.get(str(status), 0) + 1
                now = time.monotonic()
                if status == 200 and partition in self._down:
                    self.spans[partition].append((self._down.pop(partition), now))
                elif status != 200:
                    self._down.setdefault(partition, now)
            self._stop.wait(0.01)

    def longest(self) -> dict[str, float]:
        return {str(p): round(max((b - a for a, b in spans), default=0.0) * 1000, 1) for p, spans in self.spans.items()}


def rebalance_pause(servers: str, workdir: Path, users: int, load_users: Callable[[str, str, int], Any]) -> dict[str, Any]:
    """Two instances of a group, a third joins, then one is killed: how long partitions answer 503."""
    from kafka_crud.client import UserClient

    topic = f"bench-group-{uuid.uuid4().hex[:6]}"
    load_users(servers, topic, users)
    group = f"bench-{uuid.uuid4().hex[:6]}"
    probe_users = _users_by_partition(users)
    out: dict[str, Any] = {"users": users}

    def stable(urls: list[str], count: int) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, KeyError, TypeError):
                info = UserClient(urls[0]).groupinfo().body
                owners = info["partitions"]
                if (info["state"] == "Stable" and None not in owners.values() and len(set(owners.values())) == count
                        and all(UserClient(u).ready() for u in urls)):
                    return dict(info)
            time.sleep(0.05)
        raise TimeoutError(f"the group did not settle on {count} instances")

    with serve(servers, topic, workdir, "--group", group, "--instance", "a") as (_, url_a), \
            serve(servers, topic, workdir, "--group", group, "--instance", "b") as (_, url_b):
        started = time.monotonic()
        stable([url_a, url_b], 2)
        out["two_ready_s"] = round(time.monotonic() - started, 2)
        with Prober(url_a, probe_users) as prober:
            time.sleep(0.5)
            joined = time.monotonic()
            with serve(servers, topic, workdir, "--group", group, "--instance", "c") as (process_c, url_c):
                info = stable([url_a, url_b, url_c], 3)
                out["join_to_stable_s"] = round(time.monotonic() - joined, 2)
                time.sleep(0.5)
                out["join_unavailable_ms"] = prober.longest()
                out["join_answers"] = dict(prober.counts)
                out["instance_pauses_ms"] = {
                    url: [r["pause_ms"] for r in UserClient(url).groupinfo().body["here"]["rebalances"]]
                    for url in (url_a, url_b, url_c)}
                _log(f"a third instance joined: longest 503 per partition {out['join_unavailable_ms']} ms; "
                     f"instances' own pauses {out['instance_pauses_ms']} ms")
                out["moved_to_the_third"] = [int(p) for p, u in info["partitions"].items() if u == url_c]
                prober.spans = {p: [] for p in probe_users}
                prober.counts = {}
                killed = time.monotonic()
                process_c.send_signal(signal.SIGKILL)
                process_c.wait()
                stable([url_a, url_b], 2)
                time.sleep(0.5)
                out["kill_to_stable_s"] = round(time.monotonic() - killed, 2)
                out["kill_unavailable_ms"] = prober.longest()
                out["kill_answers"] = dict(prober.counts)
                _log(f"kill -9 of an instance: longest 503 per partition {out['kill_unavailable_ms']} ms")
    return out


def bench_instances(servers: str, quick: bool, workdir: Path, load_users: Callable[[str, str, int], Any]) -> dict[str, Any]:
    """Both measurements; ``load_users`` (from run.py) writes the users the group serves."""
    out: dict[str, Any] = {}
    users = 10_000 if quick else 100_000
    runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("min_position", lambda: min_position_latency(servers, workdir, 200 if quick else 1000)),
        ("rebalance", lambda: rebalance_pause(servers, workdir, users, load_users)),
    ]
    for name, run in runs:
        try:
            out[name] = run()
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            _log(f"instances {name}: {out[name]['error']}")
    return out


def render(block: dict[str, Any]) -> list[str]:
    lines = ["### Many instances", ""]
    mp = block.get("min_position", {})
    if "error" in mp:
        lines += [f"Kafka-Min-Position: {mp['error']}", ""]
    elif mp:
        lines += [f"PUT on instance A, then at once GET of the same user on instance B ({mp['pairs']:,} pairs "
                  "each, `kafka-crud serve` processes):", "",
                  "| GET on B | stale reads | GET p50 ms | GET p99 ms |", "|---|---:|---:|---:|"]
        for mode, label in (("without", "without a position"), ("with", "with Kafka-Min-Position"),
                            ("with, already applied", "on A, with a position it has applied")):
            row = mp[mode]
            lines.append(f"| {label} | {row['stale']} of {mp['pairs']:,} | {row['p50_ms']} | {row['p99_ms']} |")
        lines += ["", f"With Kafka-Min-Position the GET on B takes {mp['added_p50_ms']:+.2f} ms at p50 and "
                  f"{mp['added_p99_ms']:+.2f} ms at p99 against without: the wait for B to apply the write "
                  "(a few tenths of a millisecond either way is run-to-run noise).", ""]
    rb = block.get("rebalance", {})
    if "error" in rb:
        lines += [f"Rebalance: {rb['error']}", ""]
    elif rb:
        lines += [f"The partitioned design ({rb['users']:,} users, `kafka-crud serve --group`): the longest span "
                  "during which a partition answered 503, read through the first instance every 10 ms:", "",
                  "| event | partition 0 ms | partition 1 ms | partition 2 ms | until stable s |",
                  "|---|---:|---:|---:|---:|"]
        for event, key, until in (("a third instance joins", "join_unavailable_ms", "join_to_stable_s"),
                                  ("kill -9 of an instance", "kill_unavailable_ms", "kill_to_stable_s")):
            spans = rb[key]
            lines.append(f"| {event} | {spans.get('0')} | {spans.get('1')} | {spans.get('2')} | {rb[until]} |")
        pauses = ", ".join(f"{ms} ms" for series in rb["instance_pauses_ms"].values() for ms in series[1:])
        lines += ["", f"The instances' own pauses at the join (revoke to restored): {pauses}.", ""]
    return lines
