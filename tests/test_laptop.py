"""A participant's laptop: `make lab` with only Python, as a user who is not root and has no sudo.

The repository is copied for a non-root user with a fresh HOME and a PATH without kcat, Chromium,
sudo or apt-get (the test tools and the means to install them), then `make lab` runs there with
Jupyter's own options passed through LAB_ARGS. It must set up a venv, fetch the jars and serve
JupyterLab with a broker. `make test`'s system-deps, on the same machine, must say exactly what to
run instead.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from workshop.image import chown_tree, copy_repository, network_settings, notebook_user
from workshop.jupyter import JupyterProcess, User

from kafka_crud.broker import free_port

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.image]

HIDDEN = {"kcat", "chromium", "chromium-browser", "sudo", "apt-get", "apt", "dpkg"}


@pytest.fixture(scope="module")
def laptop() -> Iterator[tuple[Path, User, dict[str, str]]]:
    """The repository in a fresh HOME of a non-root user, and its environment (PATH without the test tools)."""
    user = notebook_user()
    root = Path(tempfile.mkdtemp(prefix="kafka-crud-laptop-", dir="/tmp"))
    root.chmod(0o755)
    home, repo, bin_dir = root / "home", root / "home" / "kafka_crud", root / "bin"
    repo.mkdir(parents=True)
    bin_dir.mkdir()
    copy_repository(repo)
    for folder in (Path("/usr/sbin"), Path("/usr/bin")):
        for tool in folder.iterdir():
            if tool.name not in HIDDEN and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    chown_tree(root, user)
    env = {**network_settings(), "HOME": str(home), "PATH": str(bin_dir), "USER": "participant", "SHELL": "/bin/bash"}
    try:
        yield repo, user, env
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _python() -> str:
    # The system's Python: another user may not reach this one's (one in a private home directory, say).
    return "/usr/bin/python3.11" if Path("/usr/bin/python3.11").exists() else "python3"


@pytest.mark.timeout(1200)
def test_make_lab_needs_neither_kcat_nor_chromium_nor_root(laptop: tuple[Path, User, dict[str, str]]) -> None:
    repo, user, env = laptop
    for tool in ("kcat", "chromium", "sudo"):
        assert shutil.which(tool, path=env["PATH"]) is None
    port, token = free_port(), secrets.token_hex(16)
    lab_args = f"--no-browser --port {port} --IdentityProvider.token={token} --ServerApp.port_retries=0"
    command = ["make", "lab", f"PYTHON={_python()}", f"LAB_ARGS={lab_args}"]
    with JupyterProcess.start(command, env=env, cwd=repo, port=port, token=token, user=user, group=True,
                              log_path=repo.parent.parent / "make-lab.log") as lab:
        lab.wait_until_serving(900)  # a fresh venv from PyPI and the jars from Maven Central first
        _, _, body = lab.request("/lab/api/settings/@jupyterlab/apputils-extension:notification")
        assert json.loads(body)["schema"]["properties"]["fetchNews"]["default"] == "false"  # no news question
        deadline = time.monotonic() + 120  # the broker starts beside JupyterLab
        while not re.search(r"Kafka ready at 127\.0\.0\.1:\d+", lab.output()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "Kafka ready at" in lab.output(), lab.output_tail()
        assert "system-deps" not in lab.output()
    installed = subprocess.run([str(repo / ".venv" / "bin" / "pip"), "list"], capture_output=True, text=True,
                               check=False).stdout.lower()
    assert "jupyterlab" in installed
    assert "playwright" not in installed, "make lab installed the test tools"


@pytest.mark.timeout(120)
def test_make_test_says_exactly_what_to_run_for_the_test_tools(laptop: tuple[Path, User, dict[str, str]]) -> None:
    repo, user, env = laptop
    # Debian's apt-get exists on such a machine, but this user may not use it: keep it on PATH.
    apt_bin = Path(env["HOME"]).parent / "bin-with-apt"
    shutil.copytree(Path(env["PATH"]), apt_bin, symlinks=True, dirs_exist_ok=True)
    if Path("/usr/bin/apt-get").exists():
        (apt_bin / "apt-get").symlink_to("/usr/bin/apt-get")
    chown_tree(apt_bin, user)
    out = subprocess.run(["bash", "scripts/system-deps"], env={**env, "PATH": str(apt_bin)}, cwd=repo,
                         capture_output=True, text=True, timeout=60, check=False, user=user.uid, group=user.gid)
    assert out.returncode == 1
    assert "make lab does not" in out.stderr
    if Path("/usr/bin/apt-get").exists():
        assert "sudo apt-get install -y --no-install-recommends kcat chromium" in out.stderr, out.stderr
