"""The project's contracts: exports, connection settings, the compose file and Binder's start script."""

from __future__ import annotations

import base64
import importlib.metadata
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kafka_crud
from kafka_crud.broker import BROKER_SETTINGS
from kafka_crud.config import BOOTSTRAP_ENV, CLIENT_CONFIG_ENV, KAFKA_VERSION, client_config
from kafka_crud.errors import ConfigError
from kafka_crud.process import HEAP_ENV, JVM_OPTS, heap_options
from kafka_crud.topics import EMBEDDED_CLUSTER_PREFIX

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kafka_crud"
MAX_MODULE_LINES = 400


def test_all_is_exactly_what_the_package_exports() -> None:
    public = {
        name for name, value in vars(kafka_crud).items()
        if not name.startswith("_") and not isinstance(value, type(sys)) and name != "annotations"
    }
    assert set(kafka_crud.__all__) == public
    assert len(kafka_crud.__all__) == len(set(kafka_crud.__all__))


def test_version_is_the_installed_distributions() -> None:
    assert kafka_crud.__version__ == importlib.metadata.version("kafka-crud")


@pytest.mark.parametrize(
    "module", [pytest.param(path, id=str(path.relative_to(PACKAGE))) for path in sorted(PACKAGE.rglob("*.py"))],
)
def test_no_module_is_over_400_lines(module: Path) -> None:
    lines = len(module.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module.relative_to(ROOT)} has {lines} lines"


def _broker_jvms() -> list[int]:
    """Kafka broker JVMs that are children of this process (the embedded broker is one)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"kafka.Kafka" in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from Linux's /proc")
def test_the_session_broker_starts_only_once_a_test_that_needs_it_has_run(
    request: pytest.FixtureRequest, session_broker: str | None
) -> None:
    items = request.session.items
    earlier = items[: items.index(request.node)]
    needed = any(i.get_closest_marker("broker") or i.path.suffix == ".ipynb" for i in earlier)
    if not needed:  # `pytest -m "not broker"`, or no broker test ran before this one
        assert not _broker_jvms(), "a Kafka broker runs though no test so far needed one"
        if session_broker is None:  # none configured from outside either
            assert BOOTSTRAP_ENV not in os.environ
    else:
        assert session_broker is not None
        host, port = session_broker.split(",")[0].rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=5).close()


def test_no_kit_setting_of_the_developers_reaches_a_test() -> None:
    assert [name for name in os.environ if name.startswith("KAFKA_CRUD_")] == []
    assert kafka_crud.Kafka("broker-a:9092").client_config()["bootstrap.servers"] == "broker-a:9092"
    assert "security.protocol" not in kafka_crud.Kafka("broker-a:9092").client_config()


def test_client_config_uses_the_environment_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "broker-a:9092,broker-b:9092")
    monkeypatch.delenv(CLIENT_CONFIG_ENV, raising=False)
    assert client_config() == {"bootstrap.servers": "broker-a:9092,broker-b:9092"}


def test_client_config_adds_settings_for_a_secured_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "kafka.example:9093")
    monkeypatch.setenv(CLIENT_CONFIG_ENV, "security.protocol=SASL_SSL,sasl.mechanism=PLAIN")
    assert client_config()["security.protocol"] == "SASL_SSL"
    props = tmp_path / "client.properties"
    props.write_text("# a comment\nsasl.username = alice\nsasl.password=s3cr=t\n")
    monkeypatch.setenv(CLIENT_CONFIG_ENV, str(props))
    assert client_config(acks="all") == {
        "bootstrap.servers": "kafka.example:9093", "sasl.username": "alice", "sasl.password": "s3cr=t", "acks": "all",
    }


def test_missing_connection_settings_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    with pytest.raises(ConfigError, match="kafka-crud broker"):
        client_config()
    monkeypatch.setenv(BOOTSTRAP_ENV, "x:1")
    monkeypatch.setenv(CLIENT_CONFIG_ENV, "no-such-file")
    with pytest.raises(ConfigError, match="key=value"):
        client_config()


def test_compose_runs_the_pinned_kafka_as_the_embedded_broker_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same teaching settings, JVM options and heap; a kit cluster id; the log dir shared read-only."""
    monkeypatch.delenv(HEAP_ENV, raising=False)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    for key, value in BROKER_SETTINGS.items():
        assert env.get("KAFKA_" + key.upper().replace(".", "_")) == value, key
    # apache/kafka's launch script hands these to the JVM (kafka-run-class.sh) and keeps them out of
    # the broker's properties.
    assert env["KAFKA_JVM_PERFORMANCE_OPTS"].split() == JVM_OPTS
    assert env["KAFKA_HEAP_OPTS"].split() == heap_options()
    assert env["CLUSTER_ID"].startswith(EMBEDDED_CLUSTER_PREFIX)
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    lab = compose["services"]["lab"]
    assert lab["environment"][BOOTSTRAP_ENV] == "kafka:19092"
    # Notebook 03's segment tables read the broker's files: the lab sees its log dir at the same path.
    log_dir = env["KAFKA_LOG_DIRS"]
    volume = next(v for v in kafka["volumes"] if v.endswith(":" + log_dir))
    assert f"{volume}:ro" in lab["volumes"], lab["volumes"]
    assert volume.split(":")[0] in compose["volumes"]


def test_the_lab_image_runs_kafka_crud_lab_from_a_plain_install() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt '.[lab]'" in dockerfile  # not editable: the data files (lab settings) come along
    assert 'CMD ["kafka-crud", "lab"' in dockerfile


def test_binder_installs_from_the_same_pins_as_make_setup() -> None:
    post_build = (ROOT / "binder" / "postBuild").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in post_build
    assert "-c constraints.txt" in makefile
    assert not (ROOT / "binder" / "requirements.txt").exists(), "one list of pins, not two"


@pytest.mark.broker
def test_binder_start_runs_the_command_with_a_broker_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop(BOOTSTRAP_ENV, None)  # Binder has no broker of its own: start must start one
    probe = (
        "import os\n"
        "from confluent_kafka.admin import AdminClient\n"
        f"servers = os.environ[{BOOTSTRAP_ENV!r}]\n"
        "md = AdminClient({'bootstrap.servers': servers}).list_topics(timeout=30)\n"
        "print(servers, len(md.brokers))\n"
    )
    out = subprocess.run([str(ROOT / "binder" / "start"), sys.executable, "-c", probe],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    servers, brokers = out.stdout.split()
    assert servers.startswith("127.0.0.1:")
    assert brokers == "1"
    host, port = servers.split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()


@pytest.mark.broker
def test_the_readmes_ten_lines_run_and_print_what_they_say() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Ten lines\n\n```python\n(.*?)```", readme, re.S)
    assert match, "README.md has a '## Ten lines' section with a python block"
    out = subprocess.run([sys.executable, "-c", match.group(1)], capture_output=True, text=True, timeout=180,
                         check=True, env={k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")})
    lines = out.stdout.splitlines()
    assert lines[0] == "404"
    assert [line.split()[2] for line in lines[1:]] == ["put", "put", "tombstone"]
