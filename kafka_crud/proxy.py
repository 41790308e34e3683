"""Where a participant's browser reaches a port the kit serves: through Jupyter when it runs there.

On Binder, JupyterHub or any remote Jupyter, ``http://127.0.0.1:<port>`` names the participant's
own machine, not the pod. jupyter-server-proxy (in the kit's ``lab`` extra) serves a pod's port
at ``<Jupyter base URL>proxy/<port>/``, behind Jupyter's login. :func:`browser_url` gives that
address when the code runs under a Jupyter server with jupyter-server-proxy installed:

- under JupyterHub (Binder too), ``$JUPYTERHUB_SERVICE_PREFIX/proxy/<port>/``: a path, which a
  link in a notebook resolves against the hub's address;
- under a plain Jupyter server, its URL (from its ``jpserver-<pid>.json`` runtime file, found by
  the pid of a parent process: a kernel's, or a terminal shell's) followed by ``proxy/<port>/``;
- elsewhere, the direct ``http://<host>:<port>/``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

__all__ = ["browser_url", "jupyter_server_url"]

log = logging.getLogger(__name__)


def _ancestors(limit: int = 8) -> list[int]:
    """The pids of this process's parent, grandparent, ... (Linux /proc; else the parent only)."""
    pids = [os.getppid()]
    while len(pids) < limit:
        try:
            stat = Path(f"/proc/{pids[-1]}/stat").read_text()
        except OSError:
            break
        parent = int(stat[stat.rfind(")") + 2:].split()[1])
        if parent <= 1:
            break
        pids.append(parent)
    return pids


def _runtime_dir() -> Path | None:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    return Path(jupyter_runtime_dir())


def jupyter_server_url() -> str | None:
    """The URL (base URL included) of the Jupyter server this process runs under, if any."""
    runtime = _runtime_dir()
    if runtime is None or not runtime.is_dir():
        return None
    servers: dict[int, str] = {}
    for path in runtime.glob("jpserver-*.json"):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            servers[int(info["pid"])] = str(info["url"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for pid in _ancestors():
        if pid in servers:
            return servers[pid] if servers[pid].endswith("/") else servers[pid] + "/"
    return None


def _proxy_installed() -> bool:
    return importlib.util.find_spec("jupyter_server_proxy") is not None


def browser_url(port: int, host: str = "127.0.0.1") -> str:
    """The address of ``port`` for the participant's browser (see the module's docstring)."""
    direct = f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}/"
    if not _proxy_installed():
        return direct
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "").strip()
    if prefix:
        return f"/{prefix.strip('/')}/proxy/{port}/"
    server = jupyter_server_url()
    if server:
        return f"{server}proxy/{port}/"
    return direct
