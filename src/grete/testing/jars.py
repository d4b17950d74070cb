"""Fetch Apache Kafka's jars (broker, tools, logging) from Maven Central.

Kafka is not on PyPI, and its release tarballs are large and version-specific; Maven
gives us exactly the runtime classpath for any release with one command and its own
local cache (~/.m2). The pom is generated here, so an installed grete needs nothing
from the source tree; ``dev/kafka/pom.xml`` is a verbatim copy of :data:`POM_XML`
for people who want to run Maven by hand (a unit test keeps the two identical).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "MARKER_NAME",
    "POM_XML",
    "HarnessSetupError",
    "default_jars_dir",
    "ensure_kafka_jars",
    "find_java",
    "find_maven",
    "java_major_version",
]

DEFAULT_KAFKA_VERSION = "4.1.1"
MIN_JAVA_MAJOR = 17
MARKER_NAME = ".grete-complete"

# The version is a Maven property rather than baked in, so the same text serves every
# Kafka release (`-Dkafka.version=3.9.1`) and the checked-in copy never drifts.
# slf4j-reload4j is excluded because 3.x brokers drag it in as a second slf4j binding;
# slf4j 2 would ignore it, but only after printing a confusing warning.
POM_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Fetches Apache Kafka's jars from Maven Central for the grete test harness.
     Generated from grete.testing.jars.POM_XML: edit that, not this copy.
     mvn -q -B -f dev/kafka/pom.xml dependency:copy-dependencies \\
         -DoutputDirectory=DIR -DincludeScope=runtime
     Pass -Dkafka.version=3.9.1 for a compatibility broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.grete</groupId>
  <artifactId>kafka-harness</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <properties>
    <kafka.version>4.1.1</kafka.version>
    <slf4j.version>2.0.17</slf4j.version>
    <log4j.version>2.24.3</log4j.version>
  </properties>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${kafka.version}</version>
      <exclusions>
        <exclusion>
          <groupId>org.slf4j</groupId>
          <artifactId>slf4j-reload4j</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>${kafka.version}</version>
      <exclusions>
        <exclusion>
          <groupId>org.slf4j</groupId>
          <artifactId>slf4j-reload4j</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>${slf4j.version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>${log4j.version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>${log4j.version}</version>
    </dependency>
  </dependencies>
</project>
"""

_VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(?:[-.][A-Za-z0-9.]+)?$")


class HarnessSetupError(RuntimeError):
    """The machine lacks something the Kafka test cluster needs (Java, Maven, network)."""


def _source_checkout() -> Path | None:
    """The repository root when grete runs from a source checkout, else None."""
    root = Path(__file__).resolve().parents[3]
    if (root / "dev" / "kafka" / "pom.xml").is_file() and (root / "pyproject.toml").is_file():
        return root
    return None


def default_jars_dir(version: str = DEFAULT_KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` live unless the caller says otherwise.

    ``$GRETE_KAFKA_JARS`` is a cache root shared by all versions (``<root>/kafka-<version>``);
    a source checkout keeps them next to the pom (git-ignored); otherwise the XDG cache.
    """
    env = os.environ.get("GRETE_KAFKA_JARS")
    if env:
        return Path(env).expanduser() / f"kafka-{version}"
    repo = _source_checkout()
    if repo is not None:
        return repo / "dev" / "kafka" / f"jars-{version}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "grete" / f"kafka-{version}"


def java_major_version(java: str) -> int:
    """Run ``java -version`` and return the feature release (8, 11, 17, 21, ...)."""
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessSetupError(f"could not run {java} -version: {exc}") from exc
    # `java -version` prints to stderr, e.g. `openjdk version "17.0.15" 2025-04-15`
    # or `java version "1.8.0_402"` for the old numbering scheme.
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        raise HarnessSetupError(f"cannot parse the output of {java} -version: {proc.stderr!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def find_java() -> str:
    """Path of a ``java`` executable of at least version 17, or a HarnessSetupError."""
    candidates: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    if not candidates:
        raise HarnessSetupError(
            f"Java {MIN_JAVA_MAJOR}+ is required to run the Kafka test cluster, but no `java` "
            "was found on PATH or in $JAVA_HOME. Install a JRE, e.g. "
            "`apt-get install openjdk-17-jre-headless`, `brew install openjdk@17`, "
            "or https://adoptium.net/, then retry."
        )
    found: list[str] = []
    for java in candidates:
        if not os.access(java, os.X_OK):
            continue
        major = java_major_version(java)
        if major >= MIN_JAVA_MAJOR:
            return java
        found.append(f"{java} (Java {major})")
    raise HarnessSetupError(
        f"Kafka 4 needs Java {MIN_JAVA_MAJOR} or newer; found only "
        f"{', '.join(found) or candidates}. "
        "Install e.g. `apt-get install openjdk-17-jre-headless` and put it first on PATH "
        "or set JAVA_HOME."
    )


def find_maven() -> str:
    """Path of ``mvn``, or a HarnessSetupError explaining how to get it or avoid it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise HarnessSetupError(
            "Apache Maven (`mvn`) is needed once to download Kafka's jars from Maven "
            "Central, but it is not on PATH. Install it (`apt-get install maven`, "
            "`brew install maven`, https://maven.apache.org/download.cgi), or set "
            "GRETE_KAFKA_JARS to a cache root already holding kafka-<version>/ jars."
        )
    return mvn


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise downloads between processes (e.g. pytest-xdist workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_jars(
    version: str = DEFAULT_KAFKA_VERSION,
    dest: Path | str | None = None,
    *,
    timeout: float = 900.0,
) -> Path:
    """Make sure Kafka ``version``'s runtime jars are in ``dest``; return that directory.

    Idempotent: a marker file is written only after Maven succeeded, so an interrupted
    download is redone instead of half-used. Java is checked first because a cache
    without a usable JVM would only fail later, and more obscurely.
    """
    if not _VERSION_RE.match(version):
        raise ValueError(f"not a Kafka version: {version!r}")
    find_java()
    target = Path(dest).expanduser() if dest is not None else default_jars_dir(version)
    marker = target / MARKER_NAME
    if marker.is_file():
        return target
    with _locked(target.parent / f".{target.name}.lock"):
        if marker.is_file():  # another process finished while we waited for the lock
            return target
        mvn = find_maven()
        # Download into a sibling temp dir and rename, so `target` is never partial.
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            pom = staging / "pom.xml"
            pom.write_text(POM_XML)
            jars = staging / "jars"
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-Dkafka.version={version}",
                f"-DoutputDirectory={jars}",
                "-DincludeScope=runtime",
            ]
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise HarnessSetupError(
                    f"Maven did not fetch Kafka {version} within {timeout:.0f}s: {cmd}"
                ) from exc
            if proc.returncode != 0 or not any(jars.glob(f"kafka_2.13-{version}.jar")):
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
                raise HarnessSetupError(
                    f"Maven failed to fetch Kafka {version} (exit {proc.returncode}); is the "
                    f"version right and Maven Central reachable?\n$ {' '.join(cmd)}\n{tail}"
                )
            names = sorted(p.name for p in jars.glob("*.jar"))
            (jars / MARKER_NAME).write_text(f"kafka {version}\n" + "\n".join(names) + "\n")
            if target.exists():  # a stale, unmarked attempt
                shutil.rmtree(target)
            jars.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
