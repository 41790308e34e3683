"""The whole pod's memory while the course runs: `kafka-crud lab`, then every notebook in order.

    python bench/pod_memory.py [--keep-kernels | --shut-down-each] [--prelude FILE] [-- JUPYTER OPTIONS]

Starts ``kafka-crud lab`` (JupyterLab with the embedded broker beside it), opens each course
notebook as a participant does (a session, so a kernel whose working directory is the notebook's)
and runs its code cells in order through that kernel. Meanwhile it sums the resident memory (RSS,
from /proc) of every process of the lab: kafka-crud, the broker's JVM, JupyterLab, the kernels.
``--keep-kernels`` (the default) leaves each notebook's kernel running, as a participant who never
shuts one down; ``--shut-down-each`` shuts it down after its notebook. ``--prelude`` runs a file's
code in each kernel first. Prints a table and writes bench/results/pod-memory.json. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "pod-memory.json"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree(pid: int) -> dict[int, tuple[str, int]]:
    """pid -> (command line, RSS bytes) for ``pid`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rfind(")") + 2:].split()[1])
    family, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in family:
                family.add(child)
                todo.append(child)
    result = {}
    for each in family:
        try:
            rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{each}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            command = Path(f"/proc/{each}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, StopIteration):
            continue
        result[each] = (command, rss)
    return result


def _kind(command: str) -> str:
    if "kafka.Kafka" in command:
        return "broker"
    if "ipykernel" in command:
        return "kernels"
    if "jupyter" in command and "lab" in command:
        return "jupyterlab"
    return "kafka-crud and watchdogs"


class Sampler(threading.Thread):
    """Samples the lab's process tree every 0.5 s; keeps the peak total and the peak per kind."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop_event = pid, threading.Event()
        self.peak_total, self.peak_by_kind, self.last_by_kind = 0, {}, {}  # type: ignore[var-annotated]

    def sample(self) -> dict[str, int]:
        by_kind: dict[str, int] = {}
        for command, rss in _tree(self.pid).values():
            by_kind[_kind(command)] = by_kind.get(_kind(command), 0) + rss
        total = sum(by_kind.values())
        if total > self.peak_total:
            self.peak_total, self.peak_by_kind = total, dict(by_kind)
        self.last_by_kind = by_kind
        return by_kind

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            self.sample()


def _request(base: str, token: str, path: str, method: str = "GET", body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Authorization": f"token {token}"})
    with _NO_PROXY.open(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def _run_notebook(base: str, token: str, runtime: Path, notebook: Path, prelude: str) -> tuple[str, int]:
    """Open ``notebook`` in a session and run its code cells; its kernel id and how many cells failed."""
    from jupyter_client.blocking.client import BlockingKernelClient

    path = str(notebook.relative_to(ROOT / "notebooks"))
    session = _request(base, token, "/api/sessions", "POST",
                       {"path": path, "name": notebook.name, "type": "notebook", "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]
    connection = runtime / f"kernel-{kernel}.json"
    while not connection.exists():
        time.sleep(0.2)
    client = BlockingKernelClient()
    client.load_connection_file(str(connection))
    client.start_channels(hb=False)  # under load a late heartbeat reads as a dead kernel
    failed = 0
    try:
        client.wait_for_ready(timeout=120)
        cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
        sources = ([prelude] if prelude else []) + ["".join(c["source"]) for c in cells]
        for source in sources:
            reply = client.execute_interactive(source, timeout=600, output_hook=lambda message: None)
            failed += reply["content"]["status"] != "ok"
    finally:
        client.stop_channels()
        client.context.destroy(linger=0)
    return kernel, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shut-down-each", action="store_true", help="shut each notebook's kernel down after it")
    parser.add_argument("--keep-kernels", action="store_true", help="keep every kernel running (the default)")
    parser.add_argument("--prelude", type=Path, help="code to run in each kernel before a notebook's cells")
    parser.add_argument("jupyter", nargs=argparse.REMAINDER, help="options for JupyterLab, after --")
    args = parser.parse_args()
    prelude = args.prelude.read_text() if args.prelude else ""
    port, token = _free_port(), secrets.token_hex(16)
    work = ROOT / "bench" / "results" / "pod-memory"
    runtime = work / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    extra = [a for a in args.jupyter if a != "--"]
    command = [str(Path(sys.executable).with_name("kafka-crud")), "lab", "--notebook-dir", str(ROOT / "notebooks"),
               "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}", *extra]
    log = (work / "lab.log").open("wb")
    lab = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    sampler = Sampler(lab.pid)
    rows: list[dict[str, Any]] = []
    try:
        while True:
            try:
                _request(base, token, "/api/status")
                break
            except OSError:
                time.sleep(0.5)
        while not re.search(r"Kafka ready at", (work / "lab.log").read_text(errors="replace")):
            time.sleep(0.5)
        sampler.start()
        rows.append({"step": "lab and broker started", **sampler.sample()})
        for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
            began = time.monotonic()
            kernel, failed = _run_notebook(base, token, runtime, notebook, prelude)
            rows.append({"step": notebook.stem, "failed cells": failed, "s": round(time.monotonic() - began),
                         **sampler.sample()})
            if args.shut_down_each:
                _request(base, token, f"/api/kernels/{kernel}", "DELETE")
    finally:
        sampler.stop_event.set()
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(60)
    mb = 1024 * 1024
    kinds = ["broker", "jupyterlab", "kernels", "kafka-crud and watchdogs"]
    print(f"{'step':28} " + " ".join(f"{k[:12]:>12}" for k in kinds) + f" {'total MB':>9}")
    for row in rows:
        print(f"{row['step']:28} " + " ".join(f"{row.get(k, 0) / mb:12.0f}" for k in kinds)
              + f" {sum(row.get(k, 0) for k in kinds) / mb:9.0f}")
    peak = {k: round(v / mb) for k, v in sampler.peak_by_kind.items()}
    print(f"peak total: {sampler.peak_total / mb:.0f} MB {peak}")
    RESULTS.write_text(json.dumps({"mode": "shut-down-each" if args.shut_down_each else "keep-kernels",
                                   "jupyter": extra, "heap": os.environ.get("KAFKA_CRUD_HEAP", "384m"),
                                   "rows": rows, "peak_total": sampler.peak_total,
                                   "peak_by_kind": sampler.peak_by_kind}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
