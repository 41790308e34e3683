"""A secured listener for the embedded broker: a login (SASL PLAIN) or TLS with a throwaway CA.

    with LocalKafka(security="SASL_PLAINTEXT") as kafka:   # or "SSL"
        kafka.client_config      # {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", ...}
        kafka.client_properties  # the same as a .properties text, for KAFKA_CRUD_CLIENT_CONFIG

It exists so that the path a real cluster takes (``KAFKA_CRUD_CLIENT_CONFIG`` with
``security.protocol``, ``sasl.*``, ``ssl.*``) is tried end to end against a real broker, and
so that a refused login or a failed TLS handshake can be seen. It is not a recipe for
securing a production cluster: the password is in the broker's config file, the CA's key
sits beside it, and both live only as long as the data dir.

- ``SASL_PLAINTEXT``: SASL PLAIN on a plain TCP listener; one user (``username``, and a
  random password unless one is given), which the broker also uses for itself.
- ``SSL``: ``keytool`` (it ships with every JDK) makes a CA, and a broker certificate for
  127.0.0.1 signed by it; clients trust the CA's PEM file (``ssl.ca.location``).

The controller listener stays plain TCP on loopback.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BrokerStartError, ConfigError
from .jvm import Java

__all__ = ["SECURITY_PROTOCOLS", "ListenerSecurity", "listener_security", "make_tls_material"]

#: What ``LocalKafka(security=...)`` accepts.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL")


@dataclass
class ListenerSecurity:
    """The client listener's security: the broker's settings and what a client must set."""

    protocol: str
    """``PLAINTEXT``, ``SASL_PLAINTEXT`` or ``SSL``."""
    folder: Path
    """Where the key and trust stores go (``SSL``)."""
    username: str = ""
    password: str = ""
    broker_config: dict[str, str] = field(default_factory=dict)
    """Settings for the broker's server.properties."""
    client_config: dict[str, str] = field(default_factory=dict)
    """librdkafka settings a client needs (besides ``bootstrap.servers``)."""

    @property
    def listener(self) -> str:
        """The client listener's name (the protocol's own)."""
        return self.protocol

    @property
    def client_properties(self) -> str:
        """:attr:`client_config` as ``key=value`` lines, for a file ``KAFKA_CRUD_CLIENT_CONFIG`` names."""
        return "".join(f"{key}={value}\n" for key, value in self.client_config.items())

    def prepare(self, java: Java) -> None:
        """Make what the listener needs before the broker starts (the TLS stores, once)."""
        if self.protocol != "SSL":
            return
        tls = make_tls_material(self.folder, java, self.password)
        self.broker_config.update({
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls.keystore),
            "ssl.keystore.password": self.password,
            "ssl.key.password": self.password,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(tls.truststore),
            "ssl.truststore.password": self.password,
        })
        self.client_config.update({"security.protocol": "SSL", "ssl.ca.location": str(tls.ca_pem)})


def listener_security(
    protocol: str, folder: Path, *, username: str = "kafka-crud", password: str | None = None,
) -> ListenerSecurity:
    """The settings for a client listener speaking ``protocol`` (one of :data:`SECURITY_PROTOCOLS`)."""
    protocol = protocol.upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"security={protocol!r}: the embedded broker offers {', '.join(SECURITY_PROTOCOLS)}")
    secret = password or ("" if protocol == "PLAINTEXT" else _saved_password(folder))
    result = ListenerSecurity(protocol, folder, username, secret)
    if protocol == "SASL_PLAINTEXT":
        if '"' in username + secret or "\\" in username + secret:
            raise ConfigError("The SASL username and password may not contain quotes or backslashes")
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{username}" password="{secret}" user_{username}="{secret}";'
        )
        result.broker_config.update({
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            f"listener.name.{protocol.lower()}.plain.sasl.jaas.config": jaas,
        })
        result.client_config.update({
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": username, "sasl.password": secret,
        })
    return result


def _saved_password(folder: Path) -> str:
    # A broker restarted on the same data dir keeps its password (and its stores keep theirs).
    path = folder / "password"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(18)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(secret, encoding="utf-8")
    path.chmod(0o600)
    return secret


@dataclass(frozen=True)
class TLSMaterial:
    """A CA and a broker certificate for 127.0.0.1 signed by it."""

    keystore: Path
    """PKCS12: the broker's key and certificate chain."""
    truststore: Path
    """PKCS12: the CA's certificate (the broker trusts it as a client of itself)."""
    ca_pem: Path
    """The CA's certificate in PEM, for a client's ``ssl.ca.location``."""


def _keytool(java: Java) -> str:
    beside = Path(java.executable).resolve().parent / "keytool"
    found = str(beside) if beside.exists() else shutil.which("keytool")
    if not found:
        raise BrokerStartError(
            f"No keytool beside {java.executable} nor on PATH: a TLS listener needs it to make a CA "
            "(it ships with the JDK: apt-get install openjdk-17-jre-headless)"
        )
    return found


def make_tls_material(folder: Path, java: Java, password: str) -> TLSMaterial:
    """Make (once) a throwaway CA and a broker certificate for 127.0.0.1 in ``folder``, with keytool."""
    folder.mkdir(parents=True, exist_ok=True)
    tls = TLSMaterial(folder / "broker.p12", folder / "truststore.p12", folder / "ca.pem")
    if tls.keystore.exists() and tls.truststore.exists() and tls.ca_pem.exists():
        return tls
    keytool = _keytool(java)
    ca_store, request, signed = folder / "ca.p12", folder / "broker.csr", folder / "broker.pem"
    for path in (ca_store, tls.keystore, tls.truststore):
        path.unlink(missing_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", password, "-keypass", password]
    steps = [
        ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "30",
         "-dname", "CN=kafka-crud throwaway CA", "-ext", "bc:c", "-keystore", str(ca_store), *store],
        ["-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), "-file", str(tls.ca_pem), *store],
        ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "30",
         "-dname", "CN=127.0.0.1", "-keystore", str(tls.keystore), *store],
        ["-certreq", "-alias", "broker", "-keystore", str(tls.keystore), "-file", str(request), *store],
        ["-gencert", "-alias", "ca", "-keystore", str(ca_store), "-infile", str(request), "-outfile", str(signed),
         "-rfc", "-validity", "30", "-ext", "SAN=IP:127.0.0.1,DNS:localhost", *store],
        ["-importcert", "-noprompt", "-alias", "ca", "-keystore", str(tls.keystore), "-file", str(tls.ca_pem), *store],
        ["-importcert", "-noprompt", "-alias", "broker", "-keystore", str(tls.keystore), "-file", str(signed), *store],
        ["-importcert", "-noprompt", "-alias", "ca", "-keystore", str(tls.truststore), "-file", str(tls.ca_pem),
         *store],
    ]
    for step in steps:
        result = subprocess.run([keytool, *step], capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise BrokerStartError(
                f"keytool {step[0]} failed (exit {result.returncode}) making the broker's TLS material in {folder}",
                log_tail=(result.stdout + result.stderr)[-2000:],
            )
    return tls
