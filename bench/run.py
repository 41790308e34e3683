#!/usr/bin/env python3
"""`make bench`: the kit beside its peers, on one broker and the same data, in one run.

    python bench/run.py            # the full run: N = 100,000 and 1,000,000 users
    python bench/run.py --quick    # N = 10,000, one repetition, short bounds: a smoke run

Measures, and writes to bench/results/results.{json,md}:

1. Rebuild: process start to ready for N users (~60-byte JSON values, 3 partitions), for
   ``kafka-crud serve`` beside kcat (librdkafka reading to the end), the Go/franz-go peer in
   bench/go-user-service and ktables (aiokafka). Records per second and the ratio to kcat.
2. Writes: PUT latency (acks=all, read-your-writes included) and PUT-to-visible latency on a
   second instance, sequential and with 8 concurrent clients, for the kit and the Go peer; PUT
   with 1 and 8 clients alternates over 3 rounds, medians, for the scaling targets.
3. Reads: GET throughput for the kit and the Go peer.
4. The embedded broker: cold start to ready, RSS, and compaction latency (last update to
   superseded records gone) with the teaching topic settings.
5. The notebook suite (``pytest --nbval notebooks``): wall time.
6. Many instances (bench/instances.py): the latency Kafka-Min-Position adds to a read on
   another instance, and the pause a rebalance of the partitioned design makes.
7. Views (bench/views.py): `kafka-crud log --format json`, the whole-topic summary and
   `log_frame` on the largest N, beside kcat printing every record.

A full run also refreshes the results section of docs/benchmarks.md. Every request loop is
bounded in count and time, and all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
GO_PEER = BENCH / "go-user-service"
HTTPLOAD = BENCH / "httpload"
VENV_BIN = Path(sys.executable).parent

# Targets from the issue.
REBUILD_VS_KCAT = 1.5
PUT_P99_MS = 5.0
PUT_SCALING = 4.0  # PUT/s with 8 clients at least this many times one client's
PUT_P99_GROWTH = 3.0  # PUT p99 with 8 clients at most this many times one client's
BROKER_READY_S = 5.0
BROKER_RSS_MB = 400.0

USER_EMAIL = "user{:07d}@example.com"
USER_EMAIL_GO = "user%07d@example.com"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- set-up: packages, binaries, the machine --------------------------------------------------
def ensure_requirements() -> None:
    """Install bench/requirements.txt into this interpreter's environment when something is missing."""
    missing = []
    for dist in ("ktables", "py-spy"):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        log(f"Installing {', '.join(missing)} (bench/requirements.txt) into {VENV_BIN.parent}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(BENCH / "requirements.txt")],
            check=True, timeout=600,
        )


def go_build(module: Path, name: str) -> tuple[Path | None, str | None]:
    """Build a Go module into <module>/bin/<name> unless the binary is newer than every source."""
    out = module / "bin" / name
    go = shutil.which("go")
    if go is None:
        return None, "no Go toolchain on PATH (install Go 1.26+ from go.dev or your package manager)"
    sources = [p for p in module.rglob("*") if p.suffix in (".go", ".mod", ".sum") and "bin" not in p.parts]
    if out.exists() and all(p.stat().st_mtime <= out.stat().st_mtime for p in sources):
        return out, None
    log(f"go build {module.relative_to(ROOT)}")
    result = subprocess.run(
        [go, "build", "-o", str(out), "."], cwd=module, capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        return None, f"go build failed: {(result.stderr or result.stdout).strip()[-500:]}"
    return out, None


def _first_line(command: Sequence[str]) -> str | None:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0] if text else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    import confluent_kafka

    from kafka_crud.config import KAFKA_VERSION
    from kafka_crud.jvm import find_java

    cpu = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else platform.processor() or "unknown"
    ram_gb = None
    with contextlib.suppress(OSError, AttributeError):
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        ram_gb = round(int(match.group(1)) / 1024 / 1024, 1) if match else None
    java = find_java()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "os": platform.platform(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "java": _first_line([str(java.executable), "-version"]) or str(java.version),
        "kafka": KAFKA_VERSION,
        "confluent_kafka": f"{_version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]})",
        "kcat": _kcat_version(),
        "go": _first_line(["go", "version"]) if shutil.which("go") else None,
        "ktables": _version("ktables"),
        "aiokafka": _version("aiokafka"),
        "loadavg_start": _loadavg(),
    }


def _kcat_version() -> str | None:
    if not shutil.which("kcat"):
        return None
    try:
        text = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = re.search(r"Version (\S+)", text)
    librdkafka = re.search(r"librdkafka (\S+)", text)
    return f"kcat {version.group(1) if version else '?'} (librdkafka {librdkafka.group(1) if librdkafka else '?'})"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def proc_status_mb(pid: int, field: str) -> float | None:
    """VmRSS (resident now) or VmHWM (peak resident) of a live process, in MB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s*(\d+) kB", text, re.M)
    return round(int(match.group(1)) / 1024, 1) if match else None


def proc_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) a live process has used: contention on a shared machine
    stretches wall times, much less this."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


# -- data ---------------------------------------------------------------------------------------
def user_value(i: int) -> bytes:
    """User i as kafka_crud writes it: compact JSON, 62 bytes."""
    email = USER_EMAIL.format(i)
    return f'{{"email":"{email}","name":"Benchmark {i:07d}"}}'.encode()


def load_users(servers: str, topic: str, n: int) -> dict[str, Any]:
    """Create a 3-partition compacted topic (teaching settings) and write users 0..n-1, fast."""
    from confluent_kafka import KafkaException, Producer

    from kafka_crud.connection import Kafka
    from kafka_crud.records import User

    assert user_value(7) == User(USER_EMAIL.format(7), "Benchmark 0000007").to_json()
    kafka = Kafka(servers)
    kafka.create_topic(topic, partitions=3)
    errors: list[str] = []
    producer = Producer({
        "bootstrap.servers": servers,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "compression.type": "none",
        # The kit's partitioner (Java's murmur2): a key lands where kafka-crud would write it.
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "error_cb": lambda err: errors.append(str(err)),
    })
    started = time.monotonic()
    for i in range(n):
        key, value = USER_EMAIL.format(i).encode(), user_value(i)
        for _ in range(1000):
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        else:
            raise RuntimeError("The producer queue stayed full for 50 s: is the broker healthy?")
        if i % 50_000 == 0:
            producer.poll(0)
    left = producer.flush(300)
    seconds = time.monotonic() - started
    if left:
        raise RuntimeError(f"{left} records not delivered after 300 s")
    offsets = kafka.watermarks(topic)
    total = sum(high - low for low, high in offsets.values())
    if total != n:
        raise KafkaException(f"Loaded {total} records into {topic}, expected {n}: {errors[:3]}")
    return {"topic": topic, "users": n, "value_bytes": len(user_value(n - 1)), "seconds": round(seconds, 2),
            "records_per_s": round(n / seconds), "partitions": {str(p): hi for p, (lo, hi) in offsets.items()}}


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    from kafka_crud.broker import free_port as _free

    return _free()


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    """A user service in a subprocess (kafka-crud serve or the Go peer)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> float:
        """Poll GET /readyz every 10 ms; return seconds from process start to the first 200."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                status, _ = http_get(self.port, "/readyz", timeout=1.0)
                if status == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"{self.name} not ready within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(kind: str, servers: str, topic: str, workdir: Path, go_bin: Path | None) -> Server:
    port = free_port()
    log_path = workdir / f"{kind}-{port}.log"
    if kind == "kafka-crud":
        command = [str(VENV_BIN / "kafka-crud"), "serve", "--port", str(port),
                   "--bootstrap-servers", servers, "--topic", topic]
    else:
        assert go_bin is not None
        command = [str(go_bin), "-bootstrap", servers, "-topic", topic, "-addr", f"127.0.0.1:{port}"]
    with log_path.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Server(kind, process, port, log_path, started)


@contextlib.contextmanager
def running(kind: str, servers: str, topic: str, workdir: Path, go_bin: Path | None,
            timeout: float) -> Iterator[Server]:
    server = start_server(kind, servers, topic, workdir, go_bin)
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()


# -- 1. rebuild ---------------------------------------------------------------------------------
# kcat's librdkafka learns it has reached the end of a partition from a fetch that comes back
# empty, which the broker holds for fetch.wait.max.ms (500 ms by default) before answering: the
# baseline is kcat with that wait cut to 10 ms, its defaults are shown beside it.
KCAT_ARGS = {"kcat": ["-X", "fetch.wait.max.ms=10"], "kcat-defaults": []}


def rebuild_kcat(servers: str, topic: str, n: int, timeout: float, args: Sequence[str]) -> dict[str, Any]:
    kcat = shutil.which("kcat")
    if kcat is None:
        return {"error": "kcat is not installed: run `bash scripts/system-deps` (apt-get install kcat)"}
    started = time.monotonic()
    process = subprocess.Popen([kcat, "-C", "-b", servers, "-t", topic, "-o", "beginning", "-e", "-q", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            seconds = time.monotonic() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise TimeoutError(f"kcat did not reach the end of {topic} within {timeout:.0f} s")
        time.sleep(0.002)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"kcat exited with {process.returncode}: {stderr.strip()[-300:]}")
    return {"seconds": seconds, "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def rebuild_server(kind: str, servers: str, topic: str, n: int, timeout: float, workdir: Path,
                   go_bin: Path | None) -> dict[str, Any]:
    server = start_server(kind, servers, topic, workdir, go_bin)
    try:
        seconds = server.wait_ready(timeout)
        cpu = proc_cpu_s(server.process.pid)
        peak = proc_status_mb(server.process.pid, "VmHWM")
        for i in (0, n - 1):
            status, body = http_get(server.port, f"/user?email={USER_EMAIL.format(i)}", timeout=10)
            if status != 200 or USER_EMAIL.format(i).encode() not in body:
                raise RuntimeError(f"{kind} is ready but GET user {i} gave {status} {body[:80]!r}")
        return {"seconds": seconds, "cpu_s": cpu, "peak_rss_mb": peak}
    finally:
        server.stop()


def rebuild_ktables(servers: str, topic: str, n: int, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, str(BENCH / "ktables_peer.py"), servers, topic, str(timeout)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    try:
        reader.start()
        reader.join(timeout + 30)  # bounded: the peer itself gives up after `timeout`
        seconds = time.monotonic() - started
        line = lines[0].strip() if lines else ""
        cpu = proc_cpu_s(process.pid)
        peak = proc_status_mb(process.pid, "VmHWM")
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if not line.startswith("ready "):
        err = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"ktables did not report ready (exit {process.returncode}): {err.strip()[-400:]}")
    _, count, status, inner = line.split()
    if status != "caught_up" or int(count) != n:
        raise RuntimeError(f"ktables ended {status} with {count} of {n} users")
    return {"seconds": seconds, "cpu_s": cpu, "peak_rss_mb": peak, "ktables_catch_up_s": float(inner)}


def bench_rebuild(servers: str, topics: dict[int, str], repeats: int, workdir: Path, go_bin: Path | None,
                  go_error: str | None, broker_pid: int | None) -> dict[str, Any]:
    peers = ["kcat", "kcat-defaults", "kafka-crud", "go-franz", "ktables"]
    out: dict[str, Any] = {}
    for n, topic in topics.items():
        timeout = 60 + n / 5_000  # bounded: 260 s for a million
        samples: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
        errors: dict[str, str] = {}
        if go_bin is None:
            errors["go-franz"] = go_error or "not built"
        for r in range(repeats):
            order = peers[r % len(peers):] + peers[:r % len(peers)]  # rotate, so no peer always goes first
            for peer in order:
                if peer in errors:
                    continue
                broker_cpu = proc_cpu_s(broker_pid)
                try:
                    if peer in KCAT_ARGS:
                        sample = rebuild_kcat(servers, topic, n, timeout, KCAT_ARGS[peer])
                        if "error" in sample:
                            errors[peer] = sample["error"]
                            continue
                    elif peer == "ktables":
                        sample = rebuild_ktables(servers, topic, n, timeout)
                    else:
                        kind = "kafka-crud" if peer == "kafka-crud" else "go"
                        sample = rebuild_server(kind, servers, topic, n, timeout, workdir, go_bin)
                except Exception as exc:  # noqa: BLE001 - recorded in the results, the run goes on
                    errors[peer] = f"{type(exc).__name__}: {exc}"
                    log(f"rebuild {peer} N={n}: {errors[peer]}")
                    continue
                after = proc_cpu_s(broker_pid)
                if broker_cpu is not None and after is not None:
                    sample["broker_cpu_s"] = round(after - broker_cpu, 2)
                log(f"rebuild N={n:,} {peer}: {sample['seconds']:.2f} s, {sample.get('cpu_s')} s CPU")
                samples[peer].append(sample)
        rows: dict[str, Any] = {}
        for peer in peers:
            if samples[peer]:
                seconds = statistics.median(s["seconds"] for s in samples[peer])
                rss = [s["peak_rss_mb"] for s in samples[peer] if s.get("peak_rss_mb") is not None]
                cpu = [s["cpu_s"] for s in samples[peer] if s.get("cpu_s") is not None]
                broker_cpu_s = [s["broker_cpu_s"] for s in samples[peer] if "broker_cpu_s" in s]
                rows[peer] = {
                    "seconds": round(seconds, 3),
                    "samples": [round(s["seconds"], 3) for s in samples[peer]],
                    "records_per_s": round(n / seconds),
                    "cpu_s": statistics.median(cpu) if cpu else None,
                    "broker_cpu_s": statistics.median(broker_cpu_s) if broker_cpu_s else None,
                    "peak_rss_mb": max(rss) if rss else None,
                }
            else:
                rows[peer] = {"error": errors.get(peer, "no sample")}
        kcat = rows.get("kcat", {}).get("seconds")
        for row in rows.values():
            if kcat and "seconds" in row:
                row["x_kcat"] = round(row["seconds"] / kcat, 2)
        out[str(n)] = {"topic": topic, "loadavg": _loadavg(), "peers": rows}
    return out


# -- 2 and 3. writes and reads ------------------------------------------------------------------
def httpload(binary: Path, *args: str, timeout: float) -> dict[str, Any]:
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"httpload {' '.join(args)} failed: {result.stderr.strip()[-300:]}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def put_rounds(load_bin: Path, url: str, prefix: str, writes: int, rounds: int) -> dict[str, Any]:
    """PUT with 1 and with 8 clients, interleaved, ``rounds`` times: per client count, the median
    PUT/s and percentiles over the rounds (each round's figures in ``runs``)."""
    runs: dict[int, list[dict[str, Any]]] = {1: [], 8: []}
    for r in range(rounds):
        for clients in (1, 8):
            runs[clients].append(httpload(
                load_bin, "-mode", "put", "-url", url, "-key-prefix", f"{prefix}-r{r}p{clients}",
                "-c", str(clients), "-n", str(writes), "-max-time", "120s", timeout=180))
    out: dict[str, Any] = {}
    for clients, samples in runs.items():
        done = [s for s in samples if s.get("count")] or samples
        row: dict[str, Any] = {k: statistics.median(s.get(k, 0) for s in done)
                               for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")}
        row.update(clients=clients, count=sum(s.get("count", 0) for s in samples),
                   errors=sum(s.get("errors", 0) for s in samples),
                   runs=[{k: s.get(k) for k in ("rps", "p50_ms", "p99_ms", "errors")} for s in samples])
        out[f"put_c{clients}"] = row
    return out


def bench_http(servers: str, topic: str, n: int, quick: bool, workdir: Path, go_bin: Path | None,
               load_bin: Path) -> dict[str, Any]:
    writes = 300 if quick else 2000
    get_seconds = 3 if quick else 10
    out: dict[str, Any] = {}
    for kind, label in (("kafka-crud", "kafka-crud"), ("go", "go-franz")):
        if kind == "go" and go_bin is None:
            out[label] = {"error": "the Go peer was not built"}
            continue
        rows: dict[str, Any] = {}
        try:
            with running(kind, servers, topic, workdir, go_bin, 300) as a, \
                    running(kind, servers, topic, workdir, go_bin, 300) as b:
                prefix = f"{label}-{uuid.uuid4().hex[:6]}"
                rows.update(put_rounds(load_bin, a.url, prefix, writes, 1 if quick else 3))
                for clients in (1, 8):
                    common = ["-c", str(clients), "-n", str(writes), "-max-time", "120s"]
                    rows[f"visible_c{clients}"] = httpload(
                        load_bin, "-mode", "visible", "-url", a.url, "-read-url", b.url,
                        "-key-prefix", f"{prefix}-v{clients}", *common, timeout=180)
                    rows[f"get_c{clients}"] = httpload(
                        load_bin, "-mode", "get", "-url", a.url, "-c", str(clients), "-d", f"{get_seconds}s",
                        "-users", str(n), "-user-format", USER_EMAIL_GO, timeout=get_seconds + 60)
                    log(f"http {label} c={clients}: PUT p50/p99 {rows[f'put_c{clients}']['p50_ms']}/"
                        f"{rows[f'put_c{clients}']['p99_ms']} ms, visible p50/p99 "
                        f"{rows[f'visible_c{clients}']['p50_ms']}/{rows[f'visible_c{clients}']['p99_ms']} ms, "
                        f"GET {rows[f'get_c{clients}']['rps']:.0f}/s")
                rows["peak_rss_mb"] = proc_status_mb(a.process.pid, "VmHWM")
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            rows["error"] = f"{type(exc).__name__}: {exc}"
            log(f"http {label}: {rows['error']}")
        out[label] = rows
    out["loadavg"] = _loadavg()
    return out


# -- 4. the broker --------------------------------------------------------------------------------
class RssSampler:
    """Samples a process's resident memory every 0.5 s, for its peak over the run."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = proc_status_mb(self.pid, "VmRSS")
            if rss:
                self.peak = max(self.peak, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def broker_cold_starts(count: int) -> list[dict[str, Any]]:
    """Start and stop LocalKafka ``count`` times: seconds to ready (jars cached) and RSS once ready."""
    from kafka_crud.broker import LocalKafka

    samples = []
    for _ in range(count):
        kafka = LocalKafka()
        started = time.monotonic()
        try:
            kafka.start()
            seconds = time.monotonic() - started
            assert kafka.pid is not None
            samples.append({"seconds": round(seconds, 2), "cpu_s": proc_cpu_s(kafka.pid),
                            "rss_mb": proc_status_mb(kafka.pid, "VmRSS"),
                            "class_sharing": getattr(kafka, "class_sharing", None)})
        finally:
            kafka.stop()
        log(f"broker cold start: {samples[-1]['seconds']:.2f} s, RSS {samples[-1]['rss_mb']} MB")
    return samples


def measure_compaction(servers: str, *, label: str, config: dict[str, str], bound: float,
                       poll: float) -> dict[str, Any]:
    """Seconds from the last update of some keys to the moment no superseded record of them is left.

    Keeps a trickle of one record per partition per second on its own keys meanwhile: Kafka
    rolls a segment (and so lets the cleaner at its records) only when a record is appended.
    """
    from confluent_kafka import Producer

    from kafka_crud.connection import TEACHING_TOPIC_CONFIG, Kafka
    from kafka_crud.producer import UserProducer
    from kafka_crud.records import User, classify

    kafka = Kafka(servers)
    topic = f"bench-compaction-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=3, config=config)
    keys = [f"c{k:03d}@example.com" for k in range(30)]
    ticker = Producer({"bootstrap.servers": servers, "linger.ms": 0})
    try:
        with UserProducer(kafka, topic=topic) as producer:
            for version in range(5):
                for key in keys:
                    producer.put(User(key, f"version {version}"))
        last_update = time.monotonic()
        next_tick = last_update
        while True:
            now = time.monotonic()
            if now >= next_tick:
                for partition in range(3):
                    ticker.produce(topic, b'{"email":"tick@example.com","name":"tick"}',
                                   f"tick-{partition}@example.com", partition=partition)
                ticker.poll(0)
                next_tick = now + 1.0
            records = [r for r in kafka.read_log(topic) if r.key and r.key.startswith(b"c")]
            superseded = sum(1 for status, _ in classify(records) if status == "superseded")
            elapsed = time.monotonic() - last_update
            if superseded == 0:
                return {"label": label, "seconds": round(elapsed, 2), "config": config}
            if elapsed > bound:
                return {"label": label, "seconds": None, "bound_s": bound, "superseded_left": superseded,
                        "config": config,
                        "note": f"superseded records still there after {bound:.0f} s "
                                f"(segment.ms={config.get('segment.ms', TEACHING_TOPIC_CONFIG['segment.ms'])})"}
            time.sleep(poll)
    finally:
        ticker.flush(10)
        with contextlib.suppress(Exception):
            kafka.delete_topic(topic)


class Background:
    """Runs one measurement in a thread, keeping its result or error."""

    def __init__(self, fn: Callable[[], dict[str, Any]]) -> None:
        self.result: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            self.result = fn()
        except Exception as exc:  # noqa: BLE001 - recorded in the results
            self.result = {"error": f"{type(exc).__name__}: {exc}"}

    def join(self, timeout: float) -> dict[str, Any]:
        self._thread.join(timeout)
        return self.result or {"error": f"not finished within {timeout:.0f} s"}


# -- 5. notebooks ---------------------------------------------------------------------------------
def bench_notebooks(servers: str, timeout: float) -> dict[str, Any]:
    notebooks = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        return {"seconds": None, "note": "n/a (no notebooks yet)"}
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": servers}
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "notebooks", "-q", "-p", "no:cacheprovider"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "notebooks": len(notebooks), "note": f"not finished within {timeout:.0f} s"}
    seconds = time.monotonic() - started
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    return {"seconds": round(seconds, 1), "notebooks": len(notebooks), "exit_code": result.returncode,
            "summary": lines[-1] if lines else ""}


# -- profiling ------------------------------------------------------------------------------------
def profile_rebuild(servers: str, topic: str, workdir: Path, seconds: float = 60) -> dict[str, Any]:
    """Where a kafka-crud rebuild spends its time: py-spy's top functions by own time."""
    py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if py_spy is None:
        return {"error": "py-spy not installed"}
    raw = workdir / "rebuild.folded"
    server = start_server("kafka-crud", servers, topic, workdir, None)
    spy = subprocess.Popen([py_spy, "record", "--pid", str(server.process.pid), "--rate", "250", "--threads",
                            "--format", "raw", "--output", str(raw), "--duration", str(int(seconds)), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        server.wait_ready(300)
    finally:
        spy.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
        server.stop()
    if not raw.exists():
        return {"error": "py-spy wrote no profile: " + (spy.stderr.read().decode()[-300:] if spy.stderr else "")}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "kafka-crud-consumer" not in stack:
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:12]
    return {"consumer_thread_samples": total,
            "top_own_time": [{"frame": frame, "share": round(c / total, 3)} for frame, c in top] if total else []}


def _rebuild_missed(results: dict[str, Any]) -> bool:
    rebuild = results.get("rebuild", {})
    if not rebuild:
        return False
    ours = rebuild[max(rebuild, key=int)]["peers"].get("kafka-crud", {})
    return bool(ours.get("x_kcat") and ours["x_kcat"] > REBUILD_VS_KCAT)


# -- report ---------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for n, block in results.get("rebuild", {}).items():
        peers = block["peers"]
        ours = peers.get("kafka-crud", {})
        if "seconds" not in ours:
            continue
        ratio = ours.get("x_kcat")
        rows.append({"target": f"rebuild N={int(n):,} within {REBUILD_VS_KCAT}x of kcat",
                     "measured": f"{ratio}x" if ratio else "n/a",
                     "met": None if ratio is None else ratio <= REBUILD_VS_KCAT})
        for peer, name in (("go-franz", "the Go peer"), ("ktables", "ktables")):
            theirs = peers.get(peer, {}).get("seconds")
            rows.append({"target": f"rebuild N={int(n):,} faster than {name}",
                         "measured": f"{ours['seconds']:.2f} s vs {_fmt(theirs)} s",
                         "met": None if theirs is None else ours["seconds"] < theirs})
    kit = results.get("http", {}).get("kafka-crud", {})
    for clients in (1, 8):
        put = kit.get(f"put_c{clients}")
        if put and put.get("count"):
            rows.append({"target": f"PUT p99 <= {PUT_P99_MS:g} ms ({clients} client{'s' if clients > 1 else ''})",
                         "measured": f"{put['p99_ms']:.2f} ms", "met": put["p99_ms"] <= PUT_P99_MS})
    one, eight = kit.get("put_c1"), kit.get("put_c8")
    if one and eight and one.get("count") and eight.get("count"):
        scaling, growth = eight["rps"] / one["rps"], eight["p99_ms"] / one["p99_ms"]
        rows.append({"target": f"PUT/s with 8 clients >= {PUT_SCALING:g}x 1 client's",
                     "measured": f"{scaling:.2f}x ({one['rps']:.0f} -> {eight['rps']:.0f} PUT/s)",
                     "met": scaling >= PUT_SCALING})
        rows.append({"target": f"PUT p99 with 8 clients <= {PUT_P99_GROWTH:g}x 1 client's",
                     "measured": f"{growth:.2f}x ({one['p99_ms']:.2f} -> {eight['p99_ms']:.2f} ms)",
                     "met": growth <= PUT_P99_GROWTH})
    broker = results.get("broker", {})
    if broker.get("cold_start_s") is not None:
        rows.append({"target": f"broker ready within {BROKER_READY_S:g} s",
                     "measured": f"{broker['cold_start_s']:.2f} s (median)",
                     "met": broker["cold_start_s"] <= BROKER_READY_S})
    if broker.get("peak_rss_mb") is not None:
        rows.append({"target": f"broker RSS <= {BROKER_RSS_MB:g} MB",
                     "measured": f"{broker['rss_after_start_mb']} MB after start, {broker['peak_rss_mb']} MB peak",
                     "met": broker["peak_rss_mb"] <= BROKER_RSS_MB})
    if results.get("snapshot"):
        from snapshot import targets as snapshot_targets

        rows += snapshot_targets(results["snapshot"])
    if results.get("views"):
        from views import targets as views_targets

        rows += views_targets(results["views"])
    return rows


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [f"Run {m['date']} ({'quick' if results['quick'] else 'full'} run) on {m['nproc']} CPU cores "
           f"({m['cpu']}), {m['ram_gb']} GB RAM, {m['os']}; Python {m['python']}, {m['java']}, "
           f"Apache Kafka {m['kafka']}, confluent-kafka {m['confluent_kafka']}, {m['kcat'] or 'no kcat'}, "
           f"{m['go'] or 'no Go'}, ktables {m['ktables']} (aiokafka {m['aiokafka']}). "
           f"Load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}.", ""]

    out += ["### Rebuild: process start to ready", "",
            "| users | implementation | seconds (median) | records/s | × kcat | CPU s | broker CPU s "
            "| peak RSS MB | runs (s) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for n, block in results.get("rebuild", {}).items():
        for peer, row in block["peers"].items():
            if "seconds" in row:
                out.append(f"| {int(n):,} | {peer} | {row['seconds']:.3f} | {row['records_per_s']:,} | "
                           f"{_fmt(row.get('x_kcat'))} | {_fmt(row.get('cpu_s'))} | {_fmt(row.get('broker_cpu_s'))} | "
                           f"{_fmt(row.get('peak_rss_mb'), 0)} | {', '.join(f'{s:.2f}' for s in row['samples'])} |")
            else:
                out.append(f"| {int(n):,} | {peer} | n/a | | | | | | {row['error']} |")
    out.append("")

    http = results.get("http")
    if http:
        out += [f"### Writes and reads ({http.get('users', 0):,} users loaded)", "",
                "| implementation | clients | PUT p50 ms | PUT p99 ms | PUT/s | PUT-to-visible p50 ms "
                "| PUT-to-visible p99 ms | GET/s | GET p50 ms | GET p99 ms |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label in ("kafka-crud", "go-franz"):
            rows = http.get(label, {})
            if "error" in rows:
                out.append(f"| {label} | | {rows['error']} | | | | | | | |")
            for clients in (1, 8):
                put, vis, get = (rows.get(f"{k}_c{clients}") for k in ("put", "visible", "get"))
                if not put:
                    continue
                errors = sum(x.get("errors", 0) for x in (put, vis, get) if x)
                out.append(
                    f"| {label} | {clients} | {_fmt(put['p50_ms'])} | {_fmt(put['p99_ms'])} | {_fmt(put['rps'], 0)} | "
                    f"{_fmt(vis and vis['p50_ms'])} | {_fmt(vis and vis['p99_ms'])} | {_fmt(get and get['rps'], 0)} | "
                    f"{_fmt(get and get['p50_ms'])} | {_fmt(get and get['p99_ms'])} |"
                    + (f" {errors} errors" if errors else ""))
        out.append("")

    broker = results.get("broker", {})
    if broker:
        out += ["### The embedded broker", "", "| measure | value |", "|---|---|",
                f"| cold start to ready (jars cached), median of {len(broker.get('cold_starts', []))} | "
                f"{_fmt(broker.get('cold_start_s'))} s (runs: {', '.join(str(s['seconds']) for s in broker.get('cold_starts', []))} s; "
                f"JVM CPU at ready: {', '.join(str(s.get('cpu_s')) for s in broker.get('cold_starts', []))} s; "
                f"class-data-sharing archive mapped: "
                f"{', '.join({True: 'yes', False: 'no'}.get(s.get('class_sharing'), '?') for s in broker.get('cold_starts', []))}) |",
                f"| RSS once ready | {_fmt(broker.get('rss_after_start_mb'), 0)} MB |",
                f"| peak RSS over the whole run | {_fmt(broker.get('peak_rss_mb'), 0)} MB |"]
        for c in broker.get("compaction", []):
            value = f"{c['seconds']:.1f} s" if c.get("seconds") is not None else c.get("note") or c.get("error", "n/a")
            out.append(f"| compaction latency, {c.get('label', '?')} | {value} |")
        out.append("")

    profile = results.get("profile")
    if profile and profile.get("top_own_time"):
        out += [f"### Where a kafka-crud rebuild of {profile['users']:,} users spends its consumer thread (py-spy)", "",
                "| own time | frame |", "|---:|---|"]
        out += [f"| {row['share']:.0%} | `{row['frame']}` |" for row in profile["top_own_time"][:8]]
        out.append("")
    elif profile:
        out += [f"Profiling the rebuild: {profile.get('error', 'no samples')}", ""]

    nb = results.get("notebooks", {})
    out += ["### Notebook suite", "",
            f"`pytest --nbval notebooks`: {_fmt(nb.get('seconds'), 1, ' s') if nb.get('seconds') else nb.get('note', 'n/a')}"
            + (f" ({nb['notebooks']} notebooks, {nb.get('summary', '')})" if nb.get("notebooks") else ""), ""]

    if results.get("instances"):
        from instances import render

        out += render(results["instances"])
    if results.get("views"):
        from views import render as render_views

        out += render_views(results["views"])

    if results.get("snapshot"):
        from snapshot import render as render_snapshot

        out += render_snapshot(results["snapshot"])

    out += ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in results.get("targets", []):
        out.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'n/a' if t['met'] is None else 'NO'} |")
    out.append("")
    return "\n".join(out)


def update_doc(markdown: str) -> None:
    start, end = "<!-- bench-results:start -->", "<!-- bench-results:end -->"
    if not DOC.exists():
        return
    text = DOC.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        DOC.write_text(f"{head}{start}\n{markdown}\n{end}{tail}")


# -- main -----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N=10,000, one repetition, short bounds")
    parser.add_argument("--sizes", default=None, help="comma-separated user counts (default 100000,1000000)")
    parser.add_argument("--repeats", type=int, default=None, help="rebuilds per implementation (default 3)")
    parser.add_argument("--only", default="rebuild,http,broker,notebooks,instances,snapshot,views",
                        help="comma-separated parts to run: rebuild, http, broker, notebooks, instances, snapshot, views")
    parser.add_argument("--profile", action="store_true", help="also profile a kafka-crud rebuild with py-spy")
    parser.add_argument("--bootstrap-servers", default=None,
                        help="use this broker instead of starting one (broker figures are then skipped)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write results.{json,md} (default bench/results, bench/results/quick for --quick)")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10_000] if quick else [100_000, 1_000_000])
    repeats = args.repeats or (1 if quick else 3)
    parts = set(args.only.split(","))
    args.out = args.out or (RESULTS / "quick" if quick else RESULTS)
    args.out.mkdir(parents=True, exist_ok=True)

    ensure_requirements()
    # Kit processes start from bytecode, as after a pip install (which compiles the package).
    # Where PYTHONDONTWRITEBYTECODE is set, every start of the source tree would compile the kit
    # again. (A tree that cannot be written to is measured as it is.)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "kafka_crud")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=120)
    sys.path.insert(0, str(ROOT))
    from kafka_crud.broker import LocalKafka

    go_bin, go_error = go_build(GO_PEER, "go-user-service")
    load_bin, load_error = go_build(HTTPLOAD, "httpload")
    if shutil.which("kcat") is None:
        log("kcat is not installed: the rebuild table will lack its baseline. "
            "Install it with `bash scripts/system-deps` (Debian/Ubuntu: apt-get install kcat).")
    results: dict[str, Any] = {"quick": quick, "sizes": sizes, "repeats": repeats, "machine": machine_info()}
    workdir = Path(tempfile.mkdtemp(prefix="kafka-crud-bench-"))
    kafka = None
    sampler = None
    compaction_bg = None
    try:
        broker: dict[str, Any] = {}
        if args.bootstrap_servers:
            servers = args.bootstrap_servers
        else:
            if "broker" in parts:
                broker["cold_starts"] = broker_cold_starts(1 if quick else 2)
            kafka = LocalKafka()
            started = time.monotonic()
            kafka.start()
            servers = kafka.bootstrap_servers
            assert kafka.pid is not None
            if "broker" in parts:
                broker["cold_starts"].append({"seconds": round(time.monotonic() - started, 2),
                                              "cpu_s": proc_cpu_s(kafka.pid),
                                              "rss_mb": proc_status_mb(kafka.pid, "VmRSS"),
                                              "class_sharing": getattr(kafka, "class_sharing", None)})
                broker["cold_start_s"] = statistics.median(s["seconds"] for s in broker["cold_starts"])
                broker["rss_after_start_mb"] = broker["cold_starts"][-1]["rss_mb"]
                sampler = RssSampler(kafka.pid)
                # The teaching settings as they are: runs beside the rest (it mostly waits).
                compaction_bound = 30 if quick else 720
                compaction_bg = Background(lambda: measure_compaction(
                    servers, label="teaching settings", config={}, bound=compaction_bound, poll=2.0))
        log(f"broker at {servers}")

        topics: dict[int, str] = {}
        if parts & {"rebuild", "http"}:
            results["load"] = []
            for n in sizes:
                topic = f"bench-users-{n}-{uuid.uuid4().hex[:6]}"
                log(f"loading {n:,} users into {topic}")
                results["load"].append(load_users(servers, topic, n))
                log(f"loaded at {results['load'][-1]['records_per_s']:,} records/s")
                topics[n] = topic

        if "rebuild" in parts:
            results["rebuild"] = bench_rebuild(servers, topics, repeats, workdir, go_bin, go_error,
                                               kafka.pid if kafka else None)
        if topics and (args.profile or _rebuild_missed(results)):
            n = max(topics)
            log(f"profiling a kafka-crud rebuild of {n:,} users with py-spy")
            results["profile"] = {"users": n, **profile_rebuild(servers, topics[n], workdir)}
        if "http" in parts:
            if load_bin is None:
                results["http"] = {"error": load_error}
            else:
                n = min(topics)
                results["http"] = {"users": n, **bench_http(servers, topics[n], n, quick, workdir, go_bin, load_bin)}
        if "broker" in parts and kafka is not None:
            broker["compaction"] = [measure_compaction(
                servers, label="teaching settings with segment.ms=1000", config={"segment.ms": "1000"},
                bound=60, poll=0.25)]
        if "notebooks" in parts:
            results["notebooks"] = bench_notebooks(servers, timeout=600 if quick else 1800)
        if "instances" in parts:
            from instances import bench_instances

            results["instances"] = bench_instances(servers, quick, workdir, load_users)
        if "snapshot" in parts:
            from snapshot import bench_snapshot

            results["snapshot"] = bench_snapshot(servers, quick, workdir, load_users)
        if "views" in parts:
            from views import bench_views

            results["views"] = bench_views(servers, max(sizes), repeats, load_users)
        if compaction_bg is not None:
            log("waiting for the compaction measurement with the teaching settings")
            teaching = compaction_bg.join(compaction_bound + 180)
            broker.setdefault("compaction", []).insert(0, {"label": "teaching settings", **teaching})
        if kafka is not None and sampler is not None:
            sampler.stop()
            hwm = proc_status_mb(kafka.pid, "VmHWM") if kafka.pid else None
            broker["peak_rss_mb"] = max(x for x in (sampler.peak, hwm or 0.0))
        if broker:
            results["broker"] = broker
    except Exception:  # noqa: BLE001 - whatever broke, the partial results and the traceback are written
        results["error"] = traceback.format_exc()
        log(results["error"])
    finally:
        if kafka is not None:
            kafka.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    results["machine"]["loadavg_end"] = _loadavg()
    results["targets"] = targets(results)
    markdown = render_markdown(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown + "\n")
    if not quick and args.out == RESULTS and parts == {"rebuild", "http", "broker", "notebooks", "instances", "snapshot", "views"}:
        update_doc(markdown)
    print(markdown)
    return 1 if "error" in results else 0


if __name__ == "__main__":
    sys.exit(main())
