"""Binder's image as repo2docker builds it, on this machine, without Docker.

repo2docker renders a Dockerfile (``repo2docker --no-build --debug``); we read what matters from
it and do the same steps here, as a non-root user:

1. the base environment: repo2docker's Python 3.11 environment, at the versions of its lock file
   (conda-forge's packages, installed here from PyPI at the same versions into a venv standing in
   for ``/srv/conda/envs/notebook``), owned by the notebook user;
2. the apt packages of ``binder/apt.txt``: checked to be installed (they are, on this machine, from
   Debian instead of Ubuntu 24.04);
3. the repository copied to the notebook user's HOME (``REPO_DIR``), ``binder/postBuild`` run there
   as that user, HOME = the repository, the environment first on PATH;
4. the container's start: repo2docker's own entrypoint, with ``R2D_ENTRYPOINT=binder/start``.

What is not the same: the base OS (Debian 12 here) and conda's builds of the packages.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from .jupyter import User

__all__ = ["ROOT", "Image", "apt_packages", "base_lock", "build_image", "chown_tree", "copy_repository",
           "network_settings", "notebook_user", "r2d_file", "render_dockerfile"]

ROOT = Path(__file__).resolve().parents[2]
USER_NAME = "jovyan"
#: What repo2docker's Python 3.11 environment lists at the top (environment.py-3.11.yml), as PyPI names.
BASE_TOP_LEVEL = ("notebook", "jupyterlab", "jupyter-server", "jupyterhub", "ipywidgets", "ipykernel",
                  "jupyter-resource-usage", "jupyter-offlinenotebook", "pip")


def r2d_file(*parts: str) -> Path:
    """A file of the installed repo2docker package."""
    import repo2docker

    return Path(repo2docker.__file__).parent.joinpath(*parts)


def render_dockerfile(repo: Path, *, user_id: int = 1000, user_name: str = USER_NAME) -> str:
    """The Dockerfile repo2docker would build for ``repo`` (no Docker needed)."""
    command = [str(Path(sys.executable).with_name("repo2docker")), "--no-build", "--debug",
               "--user-id", str(user_id), "--user-name", user_name, str(repo)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FROM " in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_lock(python: str = "3.11") -> dict[str, str]:
    """Package name (normalized) -> version, from repo2docker's lock of its base environment."""
    lock = r2d_file("buildpacks", "conda", f"environment.py-{python}-linux-64.lock").read_text()
    found: dict[str, str] = {}
    for line in lock.splitlines():
        if line.startswith("https://"):
            file = re.sub(r"\.(conda|tar\.bz2)$", "", line.split("#")[0].rsplit("/", 1)[1])
            name, version, _build = file.rsplit("-", 2)
            found[_norm(name)] = version
    found.setdefault("jupyterhub", found.get("jupyterhub-base", ""))
    return found


def constraints() -> dict[str, str]:
    """The kit's pins, normalized name -> version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def notebook_user() -> User:
    """A non-root user to build and run as: ``jovyan`` (created when we are root), or ourselves."""
    if os.geteuid() != 0:
        return User()
    try:
        entry = pwd.getpwnam(USER_NAME)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/bash", "--user-group", USER_NAME],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(USER_NAME)
    return User(entry.pw_uid, entry.pw_gid)


@dataclass
class Image:
    """The built image's parts on this machine."""

    root: Path
    """Holds everything (removed by :meth:`remove`)."""
    prefix: Path
    """``NB_PYTHON_PREFIX``: the environment."""
    home: Path
    """``HOME`` = ``REPO_DIR``: the repository."""
    user: User
    build_log: str
    build_seconds: float

    def env(self, home: Path | None = None, path: str | None = None) -> dict[str, str]:
        """The container's environment (the Dockerfile's ENV lines that matter), HOME replaceable."""
        home = home or self.home
        keep = network_settings()
        system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return {
            **keep, "HOME": str(home), "USER": USER_NAME, "SHELL": "/bin/bash",
            "NB_PYTHON_PREFIX": str(self.prefix), "KERNEL_PYTHON_PREFIX": str(self.prefix),
            "CONDA_DEFAULT_ENV": str(self.prefix), "REPO_DIR": str(home), "PYTHONUNBUFFERED": "1",
            "PATH": f"{home}/.local/bin:{self.prefix}/bin:{path or system_path}",
        }

    def run(self, command: list[str], *, env: dict[str, str], cwd: Path,
            timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              check=False, user=self.user.uid, group=self.user.gid,
                              extra_groups=[] if self.user.uid is not None else None)

    def remove(self, keep_logs: Path | None = None) -> None:
        """Remove everything; the servers' logs are copied to ``keep_logs`` first."""
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.root.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
            (keep_logs / "build.log").write_text(self.build_log)
        shutil.rmtree(self.root, ignore_errors=True)


def network_settings() -> dict[str, str]:
    """This machine's settings for reaching package registries (certificate bundles, proxies, pip's), and the locale.

    Not the image's business, but its build fetches packages and jars as this machine must.
    """
    wanted = re.compile(r"(CA_BUNDLE|SSL_CERT|CA_CERTS|^PIP_|_PROXY$|^NO_PROXY$|^LANG$|^LC_ALL$|^TZ$)", re.I)
    return {k: v for k, v in os.environ.items() if wanted.search(k)}


def chown_tree(path: Path, user: User) -> None:
    if user.uid is not None:
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(path)], check=True)


def copy_repository(target: Path) -> None:
    """What repo2docker copies: the repository's files (tracked and untracked), not its venv or .git."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def apt_packages() -> list[str]:
    """The packages ``binder/apt.txt`` asks for (comments and blank lines left out)."""
    lines = (ROOT / "binder" / "apt.txt").read_text().splitlines()
    return [name for line in lines if (name := line.split("#")[0].strip())]


def check_apt_packages() -> None:
    """The image's apt packages, installed here (from Debian, where the image has Ubuntu's)."""
    missing = []
    for package in apt_packages():
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True,
                             check=False)
        if "install ok installed" not in out.stdout:
            missing.append(package)
    assert not missing, f"binder/apt.txt's packages are not installed here: apt-get install {' '.join(missing)}"


def build_base_environment(prefix: Path) -> str:
    """repo2docker's base environment at its lock's versions, from PyPI; returns pip check's baseline."""
    # The system's Python 3.11 (conda's in the image): a user other than ours may not reach our own.
    python = "/usr/bin/python3.11" if Path("/usr/bin/python3.11").exists() else sys.executable
    subprocess.run([python, "-m", "venv", str(prefix)], check=True, timeout=120)
    lock = base_lock()
    pins = []
    for name, version in lock.items():
        try:
            Version(version)
        except InvalidVersion:
            continue
        if re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
            pins.append(f"{name}=={version}")
    constraints_file = prefix / "base-constraints.txt"
    constraints_file.write_text("\n".join(pins) + "\n")
    top = [f"{name}=={lock[name]}" for name in BASE_TOP_LEVEL if lock.get(name)]
    out = subprocess.run([str(prefix / "bin" / "pip"), "install", "--quiet", "-c", str(constraints_file), *top],
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    constraints_file.unlink()
    check = subprocess.run([str(prefix / "bin" / "pip"), "check"], capture_output=True, text=True, check=False)
    return check.stdout


def build_image(*, timeout: float = 1200) -> Image:
    """Steps 1 to 3 of the module's docstring; the image's parts, not yet started."""
    check_apt_packages()
    user = notebook_user()
    root = Path(tempfile.mkdtemp(prefix="kafka-crud-image-", dir="/tmp"))
    root.chmod(0o755)
    prefix, home = root / "srv" / "conda" / "envs" / "notebook", root / "home" / USER_NAME
    home.mkdir(parents=True)
    began = time.monotonic()
    try:
        baseline = build_base_environment(prefix)
        copy_repository(home)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    chown_tree(root, user)
    image = Image(root, prefix, home, user, "", 0.0)
    try:
        out = image.run(["bash", "binder/postBuild"], env=image.env(), cwd=home, timeout=timeout)
        image.build_log = f"pip check before postBuild:\n{baseline}\n--- postBuild ---\n{out.stdout}\n{out.stderr}"
        image.build_seconds = time.monotonic() - began
        assert out.returncode == 0, f"postBuild failed (exit {out.returncode}):\n{image.build_log[-6000:]}"
    except BaseException:
        image.remove()
        raise
    return image
