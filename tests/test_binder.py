"""Binder and JupyterHub: the Dockerfile repo2docker renders, and its image built and started here.

Without a Docker daemon, the image is built as tests/workshop/image.py says: repo2docker's base
environment at its lock's versions, ``binder/postBuild`` as a non-root user with HOME = the
repository, then repo2docker's own entrypoint running ``binder/start``. Each start is checked as
a participant meets it: JupyterLab answers, a kernel's preflight passes (or, without Java, says
what is missing), and the endpoint a notebook starts answers through jupyter-server-proxy,
behind Jupyter's login. Figures (build time, time to JupyterLab, the broker's start with the
baked class-data-sharing archive) go to test-artifacts/workshop/figures.json.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from workshop.image import ROOT, Image, apt_packages, base_lock, build_image, constraints, r2d_file, render_dockerfile
from workshop.jupyter import JupyterProcess, listening

from kafka_crud.broker import free_port

pytestmark = pytest.mark.image

FIGURES = ROOT / "test-artifacts" / "workshop" / "figures.json"
ENTRYPOINT = r2d_file("buildpacks", "repo2docker-entrypoint")

# What a notebook does first: notebook 00's check, then the endpoint of notebook 01, left running.
_CHECK = """
import json, kafka_crud
from kafka_crud import UserClient, serve_in_thread
from kafka_crud.course import preflight, success_line
from kafka_crud.lab import lab_status
checks = preflight()
line = success_line(checks)
result = {"line": line, "module": kafka_crud.__file__, "checks": checks.to_dict("records")}
if line.startswith("✅"):
    server = serve_in_thread(topic="binder-check")
    UserClient(server.url).put("ada@example.com", "Ada Lovelace")
    status = lab_status()
    result.update(port=server.port, browser_url=server.browser_url, html=server._repr_html_(),
                  broker_seconds=status.seconds, class_sharing=status.class_sharing)
print(json.dumps(result))
"""


def _record(name: str, value: object) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = value
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")


# -- the Dockerfile ------------------------------------------------------------------------------
def test_repo2docker_builds_the_image_we_expect() -> None:
    """Base image, apt packages, postBuild as the notebook user, the start script as entrypoint."""
    dockerfile = render_dockerfile(ROOT)
    assert "FROM docker.io/library/buildpack-deps:24.04" in dockerfile
    # conda's Python 3.11 environment (repo2docker escapes the file's name: "." is -2e, "-" is -2d)
    assert "environment-2epy-2d3-2e11-2dlinux-2d64-2elock" in dockerfile
    installs = re.findall(r"apt-get install --yes --no-install-recommends ([^&\n]+?) &&", dockerfile)
    wanted = set(apt_packages())
    assert {"openjdk-17-jre-headless", "kcat"} <= wanted
    assert any(set(packages.split()) == wanted for packages in installs), installs
    post_build = dockerfile.index("RUN ./binder/postBuild")
    users = re.findall(r"^USER (.+)$", dockerfile[:post_build], re.M)
    assert users[-1] == "${NB_USER}", users
    assert "HOME=/home/${NB_USER}" in dockerfile
    assert "ARG REPO_DIR=${HOME}" in dockerfile
    assert 'ENV R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in dockerfile
    assert 'ENTRYPOINT ["/usr/local/bin/repo2docker-entrypoint"]' in dockerfile


def test_pins_agree_with_repo2dockers_base_environment() -> None:
    """Every package both list has one version: postBuild changes nothing the base ships.

    (notebook 7.4.7 there requires jupyterlab<4.5: a newer pin would be installed over it.)
    """
    lock, pins = base_lock(), constraints()
    differ = {name: (lock[name], pins[name]) for name in sorted(set(lock) & set(pins)) if lock[name] != pins[name]}
    assert not differ, f"base environment vs constraints.txt: {differ}"
    assert pins["notebook"] == lock["notebook"]
    assert pins["jupyterlab"] == lock["jupyterlab"]
    assert "jupyter-server-proxy" in pins


# -- the image, built and started ----------------------------------------------------------------
@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    built = build_image()
    _record("image build (base environment + postBuild), s", round(built.build_seconds, 1))
    try:
        yield built
    finally:
        built.remove(keep_logs=FIGURES.parent / "logs")


def _start(image: Image, command: list[str], env: dict[str, str], cwd: Path, name: str) -> Any:
    port, token = free_port(), secrets.token_hex(16)
    jupyter = ["--ip=127.0.0.1", f"--port={port}", "--no-browser", f"--IdentityProvider.token={token}",
               "--ServerApp.port_retries=0"]
    full = [str(image.prefix / "bin" / "python"), str(ENTRYPOINT), *command, *jupyter]
    log = image.root / f"{name}.log"
    return JupyterProcess.start(full, env=env, cwd=cwd, port=port, token=token, log_path=log, user=image.user)


def _check_participant_view(lab: JupyterProcess, image: Image, what: str) -> dict[str, Any]:
    """JupyterLab, the broker and the endpoint, as a participant meets them; returns the kernel's findings."""
    _record(f"{what}: JupyterLab answers after, s", round(lab.wait_until_serving(90), 1))
    status, _, body = lab.request("/lab/api/settings/@jupyterlab/apputils-extension:notification")
    assert status == 200
    assert json.loads(body)["schema"]["properties"]["fetchNews"]["default"] == "false"  # no news question
    kernel = lab.start_kernel()
    seen: dict[str, Any] = json.loads(lab.run_in_kernel(_CHECK, kernel_id=kernel).strip().splitlines()[-1])
    assert seen["line"].startswith("✅"), seen
    assert Path(seen["module"]).is_relative_to(image.prefix), seen["module"]  # installed, not from HOME
    assert seen["class_sharing"] is True, "the broker did not map the archive postBuild baked"
    _record(f"{what}: broker ready with the baked class-data-sharing archive, s", seen["broker_seconds"])
    port = seen["port"]
    assert seen["browser_url"] == f"{lab.base_url}/proxy/{port}/"
    assert f'href="{seen["browser_url"]}"' in seen["html"]
    # The endpoint in the participant's browser: through jupyter-server-proxy, logged in.
    status, headers, body = lab.request(f"/proxy/{port}/users")
    assert status == 200, body[:300]
    assert json.loads(body) == [{"email": "ada@example.com", "name": "Ada Lovelace"}]
    status, headers, body = lab.request(f"/proxy/{port}/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "ada@example.com" in body.decode()
    status, headers, _ = lab.request(f"/proxy/{port}/users", token=False)
    assert status in (302, 401, 403), f"the proxy answered {status} without Jupyter's login"
    lab.request(f"/api/kernels/{kernel}", method="DELETE")
    return seen


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(1800)
def test_postbuild_installs_the_kit_outside_home_and_leaves_nothing_redundant(image: Image) -> None:
    env = image.env()
    after = image.run([str(image.prefix / "bin" / "pip"), "check"], env=env, cwd=image.home, timeout=120).stdout
    before = image.build_log.split("--- postBuild ---")[0]
    new = [line for line in after.splitlines() if line and line not in before and "No broken" not in line]
    assert not new, f"postBuild broke requirements of the base environment: {new}"
    listed = image.run([str(image.prefix / "bin" / "pip"), "list", "--format=json"], env=env, cwd=image.home,
                       timeout=120).stdout
    versions = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}
    lock = base_lock()
    for name in ("notebook", "jupyterlab", "jupyter-server", "ipykernel", "tornado"):
        assert versions[name] == lock[name], f"postBuild changed {name} of the base environment"
    site = next((image.prefix / "lib").glob("python3*/site-packages"))
    direct_url = json.loads(next(site.glob("kafka_crud-*.dist-info/direct_url.json")).read_text())
    assert not direct_url.get("dir_info", {}).get("editable"), "an editable install points into HOME"
    share = image.prefix / "share" / "kafka_crud"
    assert (share / "kafka_2.13-4.4.0" / "libs" / ".complete").exists()
    assert list((share / "cds").glob("*.jsa")), "no class-data-sharing archive was baked"
    assert sorted(str(p.relative_to(share / "notebooks")) for p in (share / "notebooks").rglob("*.ipynb")) == sorted(
        str(p.relative_to(ROOT / "notebooks")) for p in (ROOT / "notebooks").rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts)
    assert (image.prefix / "share/jupyter/lab/settings/overrides.d/kafka-crud.json").exists()
    leftovers = [p for p in (image.home / ".m2", image.home / ".cache", image.home / "build", share / "jgo")
                 if p.exists()] + list(image.home.glob("*.egg-info"))
    assert not leftovers, f"the image would carry these for nothing: {leftovers}"
    _record("image: jars + archive + notebooks in share/kafka_crud, MB",
            round(sum(f.stat().st_size for f in share.rglob("*") if f.is_file()) / 1e6, 1))


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(900)
def test_binder_start_serves_jupyterlab_the_broker_and_the_endpoint(image: Image) -> None:
    env = {**image.env(), "R2D_ENTRYPOINT": str(image.home / "binder" / "start")}
    with _start(image, ["jupyter", "notebook"], env, image.home, "binder") as lab:
        _check_participant_view(lab, image, "Binder")
        broker = re.search(r"Kafka ready at 127\.0\.0\.1:(\d+)", lab.output())
        assert broker, lab.output_tail()
    assert not listening(int(broker.group(1))), "the broker outlived Jupyter"


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(900)
def test_jupyterhub_with_an_empty_home_volume_finds_the_kit_its_jars_and_notebooks(image: Image) -> None:
    """HOME replaced by an empty volume after the build: the repository (and binder/start) are hidden.

    The hub runs the README's recipe: R2D_ENTRYPOINT emptied, `kafka-crud notebooks` then
    `kafka-crud with-broker --background -- <the hub's command>`.
    """
    volume = image.root / "volume"
    volume.mkdir()
    subprocess.run(["chown", f"{image.user.uid}:{image.user.gid}", str(volume)], check=image.user.uid is not None)
    image.home.chmod(0o000)  # the build's HOME, as hidden under the volume as a mount would hide it
    try:
        env = {**image.env(home=volume), "R2D_ENTRYPOINT": ""}
        copied = image.run(["kafka-crud", "notebooks", "--to", str(volume / "notebooks")], env=env, cwd=volume,
                           timeout=60)
        assert copied.returncode == 0, copied.stderr
        assert (volume / "notebooks" / "00-setup.ipynb").exists()
        assert (volume / "notebooks" / "solutions" / "06-solutions.ipynb").exists()
        command = ["kafka-crud", "with-broker", "--background", "--", "jupyter", "lab"]
        with _start(image, command, env, volume, "jupyterhub") as lab:
            _check_participant_view(lab, image, "JupyterHub, empty home")
        assert not (volume / ".cache" / "kafka_crud").exists(), "the jars were fetched again into HOME"
    finally:
        image.home.chmod(0o755)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_binder_without_java_still_opens_jupyterlab_and_preflight_says_what_is_missing(image: Image) -> None:
    bin_dir = image.root / "no-java-bin"  # the system's commands, java left out
    bin_dir.mkdir(exist_ok=True)
    for folder in (Path("/usr/sbin"), Path("/usr/bin")):
        for tool in folder.iterdir():
            if tool.name != "java" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    env = {**image.env(path=str(bin_dir)), "R2D_ENTRYPOINT": str(image.home / "binder" / "start")}
    with _start(image, ["jupyter", "lab"], env, image.home, "no-java") as lab:
        lab.wait_until_serving(90)
        seen = json.loads(lab.run_in_kernel(_CHECK).strip().splitlines()[-1])
        line = seen["line"]
        assert line.startswith("❌ the lab's broker started: No Java 17+ found"), line
        assert "restart_broker()" in line
        assert "kafka-crud broker --port" in line
        assert "the broker did not start: No Java 17+" in lab.output()
