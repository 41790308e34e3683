"""Errors in bounded time: a Kafka that cannot be reached, a refused login, a failed TLS handshake.

Each gives, within 10 s, one line that names the address and the likely cause: as a kit error
(:class:`~kafka_crud.KafkaUnavailableError`) from Python, and from every CLI command that talks
to Kafka, without a traceback. The secured brokers are real ones (``LocalKafka(security=...)``:
SASL PLAIN, and TLS with a CA keytool made), reached the way a real cluster is: through
``KAFKA_BOOTSTRAP_SERVERS`` and ``KAFKA_CRUD_CLIENT_CONFIG``, so that path is tried end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_crud.broker import LocalKafka, free_port
from kafka_crud.config import BOOTSTRAP_ENV, CLIENT_CONFIG_ENV
from kafka_crud.connection import Kafka
from kafka_crud.errors import KafkaUnavailableError
from kafka_crud.producer import UserProducer
from kafka_crud.records import User

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

BOUND = 10.0
#: Every CLI command that talks to Kafka.
COMMANDS = [["log"], ["serve", "--port", "0"]]


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[LocalKafka]:
    with LocalKafka(security="SASL_PLAINTEXT") as broker:
        yield broker


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[LocalKafka]:
    with LocalKafka(security="SSL") as broker:
        yield broker


def _properties(tmp_path: Path, config: dict[str, str]) -> Path:
    path = tmp_path / f"client-{uuid.uuid4().hex[:6]}.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    return path


def _env(servers: str, properties: Path | None) -> dict[str, str]:
    env = {**os.environ, BOOTSTRAP_ENV: servers}
    env.pop(CLIENT_CONFIG_ENV, None)
    if properties is not None:
        env[CLIENT_CONFIG_ENV] = str(properties)
    return env


def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str, float]:
    started = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).with_name("kafka-crud")), *args], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    return out.returncode, out.stdout, out.stderr, time.monotonic() - started


def _python_error(servers: str, monkeypatch: pytest.MonkeyPatch, properties: Path | None) -> tuple[str, float]:
    monkeypatch.setenv(BOOTSTRAP_ENV, servers)
    if properties is None:
        monkeypatch.delenv(CLIENT_CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(CLIENT_CONFIG_ENV, str(properties))
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as info:
        Kafka().ensure_topic("never-created")
    return str(info.value), time.monotonic() - started


def assert_fails_plainly(servers: str, properties: Path | None, monkeypatch: pytest.MonkeyPatch,
                         *expected: str) -> None:
    """From Python and from each CLI command: one line naming ``servers`` and ``expected``, within 10 s."""
    message, seconds = _python_error(servers, monkeypatch, properties)
    assert seconds < BOUND, f"{seconds:.1f} s: {message}"
    assert servers in message
    assert "\n" not in message
    for text in expected:
        assert text in message, message
    for command in COMMANDS:
        code, stdout, stderr, seconds = _cli(command, _env(servers, properties))
        assert code == 1, (command, stdout, stderr)
        assert seconds < BOUND, f"{command}: {seconds:.1f} s"
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (command, stderr)
        assert lines[0].startswith("kafka-crud: ")
        assert servers in lines[0]
        assert "Traceback" not in stderr
        for text in expected:
            assert text in lines[0], (command, lines[0])


# -- nothing listening ---------------------------------------------------------------------------------
def test_an_address_where_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    servers = f"127.0.0.1:{free_port()}"
    assert_fails_plainly(servers, None, monkeypatch, "Cannot reach Kafka", "Connection refused",
                         "is the broker running")


# -- SASL ----------------------------------------------------------------------------------------------
def test_the_sasl_broker_serves_with_the_right_login(
    sasl_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = sasl_broker.client_config
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanism"] == "PLAIN"
    properties = tmp_path / "client.properties"
    properties.write_text(sasl_broker.client_properties)
    monkeypatch.setenv(BOOTSTRAP_ENV, sasl_broker.bootstrap_servers)
    monkeypatch.setenv(CLIENT_CONFIG_ENV, str(properties))
    kafka = Kafka()  # KAFKA_BOOTSTRAP_SERVERS and KAFKA_CRUD_CLIENT_CONFIG, as for a real cluster
    kafka.ensure_topic("secured")
    with UserProducer(kafka, topic="secured") as producer:
        producer.put(User("ada@example.com", "Ada"))
    assert [r.key for r in kafka.read_log("secured")] == [b"ada@example.com"]
    code, stdout, stderr, _ = _cli(["log", "--topic", "secured"], _env(sasl_broker.bootstrap_servers, properties))
    assert code == 0, stderr
    assert "ada@example.com" in stdout


def test_a_wrong_password_is_a_refused_login(
    sasl_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = _properties(tmp_path, {**sasl_broker.client_config, "sasl.password": "not-the-password"})
    assert_fails_plainly(sasl_broker.bootstrap_servers, wrong, monkeypatch, "refused the login",
                         "Invalid username or password", "sasl.password")


def test_a_mechanism_the_broker_does_not_offer_is_a_refused_login(
    sasl_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    scram = _properties(tmp_path, {**sasl_broker.client_config, "sasl.mechanism": "SCRAM-SHA-256"})
    assert_fails_plainly(sasl_broker.bootstrap_servers, scram, monkeypatch, "refused the login",
                         "Unsupported SASL mechanism", "sasl.mechanism")


# -- TLS -----------------------------------------------------------------------------------------------
def test_the_tls_broker_serves_clients_that_trust_its_ca(
    tls_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tls_broker.client_config
    assert config["security.protocol"] == "SSL"
    assert Path(config["ssl.ca.location"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    properties = _properties(tmp_path, config)
    monkeypatch.setenv(BOOTSTRAP_ENV, tls_broker.bootstrap_servers)
    monkeypatch.setenv(CLIENT_CONFIG_ENV, str(properties))
    kafka = Kafka()
    kafka.ensure_topic("encrypted")
    with UserProducer(kafka, topic="encrypted") as producer:
        producer.put(User("grace@example.com", "Grace"))
    code, stdout, stderr, _ = _cli(["log", "--topic", "encrypted"], _env(tls_broker.bootstrap_servers, properties))
    assert code == 0, stderr
    assert "grace@example.com" in stdout


def test_a_certificate_no_trusted_ca_signed_fails_the_handshake(
    tls_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    untrusting = _properties(tmp_path, {"security.protocol": "SSL"})  # the system's CAs only
    assert_fails_plainly(tls_broker.bootstrap_servers, untrusting, monkeypatch, "TLS handshake",
                         "certificate verify failed", "ssl.ca.location")


def test_a_plaintext_client_on_the_tls_port_is_told_to_check_the_protocol(
    tls_broker: LocalKafka, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert_fails_plainly(tls_broker.bootstrap_servers, None, monkeypatch, "security.protocol=PLAINTEXT",
                         "TLS port")
