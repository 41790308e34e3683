"""A Jupyter server started as a workshop starts it, code run in its kernels, and what it leaves behind.

    with JupyterProcess.start(command, env=env, user=user, cwd=home, port=port, token=token) as lab:
        lab.wait_until_serving(60)
        out = lab.run_in_kernel("print(1)")        # a kernel of that server, as a notebook's
        lab.get("/proxy/8081/users")               # logged in (the token), through the server
    # stopping sends SIGTERM, as Binder and JupyterHub do, and checks that nothing is left

Kernels are started through the server's REST API and driven with jupyter_client over the
connection file the server wrote, so the code runs exactly where a notebook's would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processes import cmdline, descendants
from processes import identity as _identity

__all__ = ["JupyterProcess", "User", "descendants", "listening", "rss_of_tree"]

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 302 itself is the answer (to the login page, say)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@dataclass(frozen=True)
class User:
    """Who runs the server: a uid/gid (None: this process's own user)."""

    uid: int | None = None
    gid: int | None = None


# -- processes (Linux /proc) ---------------------------------------------------------------------
def rss_of_tree(pid: int) -> dict[int, int]:
    """Resident memory (bytes) of ``pid`` and every process below it, by pid."""
    result: dict[int, int] = {}
    for each in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    result[each] = int(line.split()[1]) * 1024
        except OSError:
            continue
    return result


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- the server ----------------------------------------------------------------------------------
@dataclass
class JupyterProcess:
    """A running Jupyter server command (an entrypoint, a start script, ``kafka-crud lab``)."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    log_path: Path
    runtime_dir: Path
    group: bool = False
    """Stop the whole process group (a command run from a terminal, e.g. make), not just the process."""
    _family: dict[int, str] = field(default_factory=dict)

    @classmethod
    @contextmanager
    def start(cls, command: Sequence[str], *, env: dict[str, str], cwd: Path, port: int, token: str,
              log_path: Path, user: User = User(), group: bool = False) -> Iterator[JupyterProcess]:
        """Run ``command`` until the block ends; then stop it and fail if it left anything running."""
        runtime = Path(env.get("JUPYTER_RUNTIME_DIR") or Path(env["HOME"]) / ".local/share/jupyter/runtime")
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                list(command), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, user=user.uid, group=user.gid,
                extra_groups=[] if user.uid is not None else None, start_new_session=True,
            )
        lab = cls(process, port, token, log_path, runtime, group)
        try:
            yield lab
        finally:
            problems = lab.stop()
        if problems:
            raise AssertionError("Stopping the server left things behind:\n  " + "\n  ".join(problems)
                                 + f"\nIts output ends with:\n{lab.output_tail()}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:]) or "(no output)"

    def request(self, path: str, *, method: str = "GET", body: object = None, token: bool = True,
                timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        """An HTTP request to the server (with its token unless ``token=False``): status, headers, body."""
        headers = {"Authorization": f"token {self.token}"} if token else {}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with _NO_PROXY.open(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def wait_until_serving(self, timeout: float) -> float:
        """Seconds until ``/api/status`` answers; fails with the server's output if it does not."""
        began = time.monotonic()
        while True:
            try:
                if self.request("/api/status", timeout=5)[0] == 200:
                    self._family = descendants(self.process.pid)
                    return time.monotonic() - began
            except OSError:
                pass
            code = self.process.poll()
            if code is not None:
                raise AssertionError(f"The server exited with code {code} before answering:\n{self.output_tail()}")
            if time.monotonic() - began > timeout:
                raise AssertionError(f"The server did not answer within {timeout:.0f} s:\n{self.output_tail()}")
            time.sleep(0.3)

    def start_kernel(self, notebook: str = "notebooks/00-setup.ipynb") -> str:
        """A kernel for ``notebook``, as opening it does (its working directory is the notebook's)."""
        session = {"path": notebook, "name": Path(notebook).name, "type": "notebook", "kernel": {"name": "python3"}}
        status, _, body = self.request("/api/sessions", method="POST", body=session)
        assert status == 201, body[:500]
        kernel_id: str = json.loads(body)["kernel"]["id"]
        return kernel_id

    def run_in_kernel(self, code: str, *, kernel_id: str | None = None, timeout: float = 180) -> str:
        """Run ``code`` in a kernel of this server (notebook 00's, shut down after, unless given); its stdout."""
        from jupyter_client.blocking.client import BlockingKernelClient

        own = kernel_id is None
        kid = self.start_kernel() if kernel_id is None else kernel_id
        connection = self.runtime_dir / f"kernel-{kid}.json"
        deadline = time.monotonic() + 60
        while not connection.exists():
            assert time.monotonic() < deadline, f"no connection file {connection}:\n{self.output_tail()}"
            time.sleep(0.2)
        client = BlockingKernelClient()
        client.load_connection_file(str(connection))
        client.start_channels(hb=False)  # under load a late heartbeat reads as a dead kernel
        out: list[str] = []
        errors: list[str] = []

        def collect(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else errors).append(content["text"])
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        try:
            client.wait_for_ready(timeout=60)
            reply = client.execute_interactive(code, timeout=timeout, output_hook=collect)
        finally:
            client.stop_channels()
            client.context.destroy(linger=0)
            if own:
                self.request(f"/api/kernels/{kid}", method="DELETE")
        if reply["content"]["status"] != "ok":
            raise AssertionError("The cell failed:\n" + "".join(errors)[-4000:])
        return "".join(out)

    def family(self) -> dict[int, str]:
        """Every process below the command now (and those seen when it started serving)."""
        return {**self._family, **descendants(self.process.pid)}

    def stop(self, timeout: float = 60.0) -> list[str]:
        """SIGTERM, as a hub stops a server (to the whole process group with ``self.group``, as Ctrl-C
        in a terminal); what did not stop within 30 s more is killed and reported."""
        problems: list[str] = []
        family = self.family()
        if self.process.poll() is not None:
            problems.append(f"the server had already exited (code {self.process.returncode})")
        else:
            if self.group:
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"the server did not stop within {timeout:.0f} s of SIGTERM; killed it")
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        deadline = time.monotonic() + 30
        left = family
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {pid: ident for pid, ident in left.items() if _identity(pid) == ident}
        for pid in left:
            problems.append(f"pid {pid} still ran after the server stopped: {cmdline(pid)[:200]}")
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return problems
