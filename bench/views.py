"""`make bench`, views: `kafka-crud log` and the whole-topic summary beside kcat, on N records.

Every command is a child process reading one topic of N users (62-byte JSON values, 3
partitions, one record per key) to the end; its output goes to /dev/null. Runs are interleaved
(kcat, then each of ours, repeated), the medians compared. Peak memory is the child's VmHWM from
/proc, polled while it runs, and its rusage maximum at exit (the larger of the two).

- kcat: ``kcat -C -o beginning -e -f '%p %o %k %S\\n' -X fetch.wait.max.ms=10``: partition,
  offset, key and size of every record (librdkafka, no classification).
- ``kafka-crud log --format json``: every record as a JSON line, classified (two passes).
- ``kafka-crud log --summary``: per partition, records, live keys, superseded, tombstones (one pass).
- ``kafka-crud log --last 20``: the tail of each partition, classified.
- ``log_frame``: the whole topic as a DataFrame, in a Python child (no target: the frame holds
  every row by design; shown for its memory).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
JSON_VS_KCAT = 3.0
JSON_RSS_MB = 300.0
SUMMARY_VS_KCAT = 2.0


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _hwm_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmHWM:\s*(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def run_child(command: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``command`` with stdout to /dev/null: wall seconds, CPU seconds, peak RSS (MB)."""
    started = time.monotonic()
    with open(os.devnull, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE)
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            seconds = time.monotonic() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        peak = max(peak, _hwm_mb(process.pid))
        if time.monotonic() - started > timeout:
            process.kill()
            process.wait()
            raise TimeoutError(f"{command[0]} did not finish within {timeout:.0f} s")
        time.sleep(0.005)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} exited with {process.returncode}: {stderr.strip()[-300:]}")
    return {"seconds": seconds, "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(max(peak, usage.ru_maxrss / 1024), 1)}


def commands(servers: str, topic: str) -> dict[str, list[str] | None]:
    kit = [str(VENV_BIN / "kafka-crud"), "log", "--bootstrap-servers", servers, "--topic", topic]
    kcat = shutil.which("kcat")
    frame = ("import sys; from kafka_crud import log_frame; "
             "f = log_frame(sys.argv[1], sys.argv[2]); print(len(f))")
    return {
        "kcat": None if kcat is None else [kcat, "-C", "-b", servers, "-t", topic, "-o", "beginning", "-e", "-q",
                                           "-X", "fetch.wait.max.ms=10", "-f", "%p %o %k %S\n"],
        "log --format json": [*kit, "--format", "json"],
        "log --summary": [*kit, "--summary"],
        "log --last 20": [*kit, "--last", "20"],
        "log_frame": [sys.executable, "-c", frame, servers, topic],
    }


def bench_views(servers: str, n: int, repeats: int, load_users: Callable[[str, str, int], dict[str, Any]],
                timeout: float = 300.0) -> dict[str, Any]:
    """Load ``n`` users into a new topic, then time each command ``repeats`` times, interleaved."""
    topic = f"bench-views-{n}-{uuid.uuid4().hex[:6]}"
    _log(f"views: loading {n:,} users into {topic}")
    load = load_users(servers, topic, n)
    runs: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    todo = {name: cmd for name, cmd in commands(servers, topic).items() if cmd is not None}
    if "kcat" not in todo:
        errors["kcat"] = "kcat is not installed: run `bash scripts/system-deps` (apt-get install kcat)"
    for round_ in range(repeats):
        for name, command in todo.items():
            if name in errors:
                continue
            try:
                runs.setdefault(name, []).append(run_child(command, timeout))
            except (RuntimeError, TimeoutError, OSError) as exc:
                errors[name] = str(exc)
        _log(f"views: round {round_ + 1} of {repeats}: "
             + ", ".join(f"{k} {v[-1]['seconds']:.2f} s" for k, v in runs.items() if v))
    rows: dict[str, dict[str, Any]] = {}
    for name, samples in runs.items():
        rows[name] = {
            "seconds": round(statistics.median(s["seconds"] for s in samples), 3),
            "cpu_s": round(statistics.median(s["cpu_s"] for s in samples), 2),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in samples),
            "samples": [round(s["seconds"], 2) for s in samples],
        }
    kcat = rows.get("kcat", {}).get("seconds")
    for row in rows.values():
        row["x_kcat"] = round(row["seconds"] / kcat, 2) if kcat else None
    return {"records": n, "topic": topic, "load": load, "repeats": repeats, "peers": rows, "errors": errors,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def render(results: dict[str, Any]) -> list[str]:
    """The views table, as markdown lines."""
    if not results:
        return []
    out = ["### Views: reading a whole topic", "",
           f"{results['records']:,} records (one per key, 62-byte JSON values, 3 partitions), output to "
           f"/dev/null, medians of {results['repeats']} interleaved runs. Load average after: {results['loadavg']}.",
           "",
           "| command | seconds (median) | × kcat | CPU s | peak RSS MB | runs (s) |",
           "|---|---:|---:|---:|---:|---|"]
    for name, row in results["peers"].items():
        ratio = "n/a" if row.get("x_kcat") is None else f"{row['x_kcat']:.2f}"
        out.append(f"| {name} | {row['seconds']:.2f} | {ratio} | {row['cpu_s']:.2f} | {row['peak_rss_mb']:.0f} | "
                   f"{', '.join(f'{s:.2f}' for s in row['samples'])} |")
    for name, error in results.get("errors", {}).items():
        out.append(f"| {name} | failed: {error} | | | | |")
    out.append("")
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The views' targets: `log --format json` within 3x of kcat and under 300 MB; the summary within 2x."""
    if not results:
        return []
    peers, n = results["peers"], f"{results['records']:,}"
    rows = []
    json_row, summary = peers.get("log --format json", {}), peers.get("log --summary", {})
    ratio = json_row.get("x_kcat")
    rows.append({"target": f"`kafka-crud log --format json` on {n} records within {JSON_VS_KCAT:g}x of kcat",
                 "measured": f"{ratio}x" if ratio else "n/a", "met": None if ratio is None else ratio <= JSON_VS_KCAT})
    rss = json_row.get("peak_rss_mb")
    rows.append({"target": f"`kafka-crud log --format json` on {n} records under {JSON_RSS_MB:g} MB",
                 "measured": f"{rss} MB peak" if rss else "n/a", "met": None if rss is None else rss < JSON_RSS_MB})
    ratio = summary.get("x_kcat")
    rows.append({"target": f"whole-topic summary on {n} records within {SUMMARY_VS_KCAT:g}x of kcat",
                 "measured": f"{ratio}x" if ratio else "n/a",
                 "met": None if ratio is None else ratio <= SUMMARY_VS_KCAT})
    return rows


if __name__ == "__main__":  # a run of its own against a running broker: views.py SERVERS [N] [REPEATS]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from run import load_users

    result = bench_views(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000,
                         int(sys.argv[3]) if len(sys.argv) > 3 else 3, load_users)
    print("\n".join(render(result)))
    for row in targets(result):
        print(row)
